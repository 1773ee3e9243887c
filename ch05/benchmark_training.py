"""How fast does the course's GPTModel train, compared with Hugging Face's GPT2LMHeadModel?

Both models get the same configuration (GPT-2 small with the chapter's context length of 256, query/key/value
biases and an untied output head, so the parameter sets match one to one), the same starting weights (copied
from the Hugging Face model with chapter 4's load_gpt2_params), the same batch of 2 x 256 tokens, the same loss
and the same AdamW optimizer. Their training steps are timed alternately in the same run, so a busy machine
slows all alike, and the fastest and the median step times are compared::

    python benchmark_training.py              # 124M, context 256, batch 2
    python benchmark_training.py --steps 3    # quicker, noisier

Hugging Face's model runs attention through PyTorch's fused ``scaled_dot_product_attention`` kernel by default
("sdpa"); it is also timed with its plain-PyTorch ("eager") attention, which does the same arithmetic as our
teaching implementation.
"""

import argparse
import statistics
import time
from dataclasses import replace

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from pretraining import batch_loss
from previous_chapters import GPT_CONFIG_124M, GPTModel, load_gpt2_params

BENCHMARK_CONFIG = replace(GPT_CONFIG_124M, context_length=256, qkv_bias=True)


def hf_model(cfg, attn_implementation):
    """Hugging Face's GPT-2 with the dimensions and dropout of ``cfg``."""
    config = GPT2Config(vocab_size=cfg.vocab_size, n_positions=cfg.context_length, n_embd=cfg.emb_dim,
                        n_layer=cfg.n_layers, n_head=cfg.n_heads, resid_pdrop=cfg.drop_rate,
                        embd_pdrop=cfg.drop_rate, attn_pdrop=cfg.drop_rate, activation_function="gelu_new",
                        tie_word_embeddings=cfg.tie_embeddings, use_cache=False,
                        attn_implementation=attn_implementation)
    return GPT2LMHeadModel(config)


class LogitsOnly(torch.nn.Module):
    """Make a Hugging Face model return the logits tensor, as GPTModel does, so one loss function serves both."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, token_ids):
        return self.model(token_ids).logits


def training_step(model, optimizer, inputs, targets):
    """One optimizer step; returns its wall-clock time in seconds."""
    start = time.perf_counter()
    optimizer.zero_grad()
    batch_loss(inputs, targets, model, "cpu").backward()
    optimizer.step()
    return time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=6, help="timed steps per model (default: 6)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per model first (default: 2)")
    parser.add_argument("--batch-size", type=int, default=2)
    args = parser.parse_args(argv)
    cfg = BENCHMARK_CONFIG

    torch.manual_seed(123)
    hf_sdpa = hf_model(cfg, "sdpa")
    hf_eager = hf_model(cfg, "eager")
    hf_eager.load_state_dict(hf_sdpa.state_dict())
    ours = load_gpt2_params(GPTModel(cfg), hf_sdpa.state_dict())  # same starting weights in all three
    contenders = {"course": ours, "hf-sdpa": LogitsOnly(hf_sdpa), "hf-eager": LogitsOnly(hf_eager)}

    inputs = torch.randint(0, cfg.vocab_size, (args.batch_size, cfg.context_length))
    targets = torch.randint(0, cfg.vocab_size, (args.batch_size, cfg.context_length))
    print(f"configuration: {cfg}")
    print(f"batch {args.batch_size} x {cfg.context_length} tokens, AdamW(lr=4e-4, weight_decay=0.1), "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")
    for name, model in contenders.items():
        with torch.no_grad():
            model.eval()
            loss = batch_loss(inputs, targets, model, "cpu").item()
        print(f"{name:9} {sum(p.numel() for p in model.parameters()):,} parameters, loss before training "
              f"{loss:.6f}")

    optimizers = {name: torch.optim.AdamW(model.parameters(), lr=4e-4, weight_decay=0.1)
                  for name, model in contenders.items()}
    times = {name: [] for name in contenders}
    for step in range(args.warmup + args.steps):
        for name, model in contenders.items():  # alternate, so that load on the machine hits all alike
            model.train()
            seconds = training_step(model, optimizers[name], inputs, targets)
            if step >= args.warmup:
                times[name].append(seconds)

    for name, t in times.items():
        print(f"{name:9} fastest step {min(t):6.2f} s, median {statistics.median(t):6.2f} s   "
              f"(all: {', '.join(f'{s:.2f}' for s in t)})")
    # Other work on the machine only ever adds time, so the fastest step is the best estimate of the model's own
    # cost; the median is shown too.
    for reference in ("hf-sdpa", "hf-eager"):
        fastest = min(times["course"]) / min(times[reference])
        median = statistics.median(times["course"]) / statistics.median(times[reference])
        print(f"course GPTModel / {reference}: {fastest:.2f}x step time (fastest steps), {median:.2f}x (medians)")


if __name__ == "__main__":
    main()
