"""Computation and memory of every GPT-2 size, worked out from the configuration.

Nearly all the work of a GPT model is in its matrix multiplications; the layer norms, GELUs, softmaxes and
additions are a vanishing fraction of it. ``forward_macs`` counts the multiply-adds (MACs) of every matrix
multiplication of one forward pass, part by part; one MAC is two floating-point operations (FLOPs). The memory
estimate counts the weights (from the model's parameter shapes) and the key/value cache of one full-context
sequence (see ../bonus-kv-cache).

Run ``python flops.py`` to print the table for GPT-2 small to XL and draw ``flops.png``.
"""

import argparse
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from previous_chapters import GPT2_SIZES, GPTModel


def forward_macs(cfg, num_tokens):
    """Multiply-adds of the matrix multiplications in one forward pass of ``num_tokens`` tokens, by part.

    The attention computes scores for all num_tokens x num_tokens pairs and masks the future ones afterwards,
    as chapter 3's MultiHeadAttention does, so masked pairs count too.
    """
    d, t = cfg.emb_dim, num_tokens
    return {
        "query/key/value projections": cfg.n_layers * 3 * t * d * d,
        "attention (scores, weighted sum)": cfg.n_layers * 2 * t * t * d,  # all heads together: t*t*head_dim*heads
        "attention output projection": cfg.n_layers * t * d * d,
        "feed-forward": cfg.n_layers * 2 * t * d * 4 * d,  # d -> 4d -> d
        "output head": t * d * cfg.vocab_size,
    }


def forward_flops_per_token(cfg, num_tokens):
    """FLOPs of one forward pass over ``num_tokens`` tokens, divided by the number of tokens."""
    return 2 * sum(forward_macs(cfg, num_tokens).values()) / num_tokens


def parameter_count(cfg):
    """Parameters of GPTModel(cfg), from the shapes of a model on the meta device (no memory is allocated)."""
    with torch.device("meta"):
        model = GPTModel(cfg)
    return sum(p.numel() for p in model.parameters())


def memory_mb(cfg):
    """Megabytes (1024 ** 2 bytes) of the weights in float32 and bfloat16, and of a full-context float32 KV cache."""
    n_params = parameter_count(cfg)
    kv_cache_values = 2 * cfg.n_layers * cfg.context_length * cfg.emb_dim  # keys and values of every block
    return {"weights float32": n_params * 4 / 1024 ** 2, "weights bfloat16": n_params * 2 / 1024 ** 2,
            "KV cache float32": kv_cache_values * 4 / 1024 ** 2}


def plot(path):
    """Forward GFLOPs per token against context length, and memory, for every GPT-2 size."""
    fig, (ax_flops, ax_memory) = plt.subplots(1, 2, figsize=(11, 4))
    lengths = range(1, 1025, 8)
    for name, cfg in GPT2_SIZES.items():
        ax_flops.plot(lengths, [forward_flops_per_token(cfg, t) / 1e9 for t in lengths], label=name)
    ax_flops.set(title="forward pass: GFLOPs per token", xlabel="tokens in the sequence", ylabel="GFLOPs",
                 ylim=(0, 5))  # room for the legend above the lines
    names = [name.split()[0] for name in GPT2_SIZES]
    memory = [memory_mb(cfg) for cfg in GPT2_SIZES.values()]
    width = 0.27
    for i, part in enumerate(memory[0]):
        ax_memory.bar([x + (i - 1) * width for x in range(len(names))], [m[part] / 1024 for m in memory],
                      width, label=part)
    ax_memory.set_xticks(range(len(names)), names)
    ax_memory.set(title="memory", ylabel="GB")
    for ax in (ax_flops, ax_memory):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--plot", type=Path, default=Path(__file__).with_name("flops.png"), help="image to write")
    args = parser.parse_args()
    print("Default configuration (untied output head, no query/key/value bias), a sequence of 1024 tokens.")
    print(f"{'model':20} {'parameters':>14} {'GFLOPs/token':>12} {'2 x params':>10} {'attention':>9} "
          f"{'float32 MB':>10} {'bfloat16 MB':>11} {'KV cache MB':>11}")
    for name, cfg in GPT2_SIZES.items():
        n_params = parameter_count(cfg)
        macs = forward_macs(cfg, cfg.context_length)
        flops = forward_flops_per_token(cfg, cfg.context_length)
        attention_share = macs["attention (scores, weighted sum)"] / sum(macs.values())
        memory = memory_mb(cfg)
        print(f"{name:20} {n_params:14,} {flops / 1e9:12.3f} {2 * n_params / 1e9:10.3f} {attention_share:9.1%} "
              f"{memory['weights float32']:10,.0f} {memory['weights bfloat16']:11,.0f} "
              f"{memory['KV cache float32']:11,.0f}")
    plot(args.plot)
    print(f"plot written to {args.plot.name}")


if __name__ == "__main__":
    main()
