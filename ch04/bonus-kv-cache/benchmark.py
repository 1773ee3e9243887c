"""Tokens per second of greedy generation: chapter 4 without a cache, with the cache, and transformers' generate.

All three run in this process on the same weights: a GPT-2 small-sized GPT2LMHeadModel with random weights
(nothing is downloaded), copied into the course's GPTModel with load_gpt2_params. Every run generates the same
number of new tokens from the same prompt and must produce the same tokens. The cached generation and
transformers are timed ``--repeats`` times in alternating order and the median is reported; the uncached
generation is much slower and timed once.

    python benchmark.py                      # 124M configuration, 200 new tokens
    python benchmark.py --new-tokens 20 --repeats 1 --tiny   # a quick smoke run on a tiny model
"""

import argparse
import os
import statistics
import time
import warnings

import torch
from tqdm import TqdmWarning

from kv_cache import generate_greedy_cached
from previous_chapters import GPT_CONFIG_124M, GPTConfig, GPTModel, generate_greedy, load_gpt2_params

warnings.filterwarnings("ignore", category=TqdmWarning)  # transformers' optional notebook progress bars
from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402

TINY = GPTConfig(vocab_size=50257, context_length=256, emb_dim=64, n_heads=4, n_layers=2)


def build_models(cfg):
    """A randomly initialised GPT2LMHeadModel shaped like ``cfg`` and a GPTModel holding the same weights."""
    hf_config = GPT2Config(vocab_size=cfg.vocab_size, n_positions=cfg.context_length, n_embd=cfg.emb_dim,
                           n_layer=cfg.n_layers, n_head=cfg.n_heads, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    hf_model = GPT2LMHeadModel(hf_config).eval()
    hf_model.generation_config.eos_token_id = None  # random weights: never stop early at <|endoftext|>
    hf_model.generation_config.pad_token_id = 0
    course_cfg = GPTConfig(vocab_size=cfg.vocab_size, context_length=cfg.context_length, emb_dim=cfg.emb_dim,
                           n_heads=cfg.n_heads, n_layers=cfg.n_layers, drop_rate=0.0, qkv_bias=True,
                           tie_embeddings=True)  # GPT-2's checkpoints have qkv biases and a tied head
    course_model = load_gpt2_params(GPTModel(course_cfg), hf_model.state_dict()).eval()
    return hf_model, course_model


def tokens_per_second(generate, prompt, new_tokens):
    """Time one generation; return its speed and its tokens."""
    start = time.perf_counter()
    output = generate(prompt, new_tokens)
    return new_tokens / (time.perf_counter() - start), output


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--new-tokens", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of the cached and transformers generation")
    parser.add_argument("--tiny", action="store_true", help="a 2-block model of width 64 instead of GPT-2 small")
    args = parser.parse_args()

    torch.manual_seed(123)
    cfg = TINY if args.tiny else GPT_CONFIG_124M
    hf_model, model = build_models(cfg)
    prompt = torch.randint(0, cfg.vocab_size, (1, 10))
    methods = {
        "chapter 4, no cache": lambda ids, n: generate_greedy(model, ids, n, cfg.context_length),
        "chapter 4 + KV cache": lambda ids, n: generate_greedy_cached(model, ids, n, cfg.context_length),
        "transformers generate": lambda ids, n: hf_model.generate(
            ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False, use_cache=True),
    }
    print(f"model: {sum(p.numel() for p in model.parameters()):,} parameters, {cfg.n_layers} blocks, "
          f"width {cfg.emb_dim}; prompt of {prompt.shape[1]} tokens, {args.new_tokens} new tokens")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} CPUs, load average before: {os.getloadavg()[0]:.1f}")

    speeds = {name: [] for name in methods}
    outputs = {}
    with torch.no_grad():
        for generate in methods.values():  # warm-up
            generate(prompt, 2)
        runs = ["chapter 4, no cache"]
        for repeat in range(args.repeats):
            pair = ["chapter 4 + KV cache", "transformers generate"]
            runs += pair if repeat % 2 == 0 else pair[::-1]
        for name in runs:
            speed, outputs[name] = tokens_per_second(methods[name], prompt, args.new_tokens)
            speeds[name].append(speed)
    print(f"load average after: {os.getloadavg()[0]:.1f}")

    median = {name: statistics.median(runs) for name, runs in speeds.items()}
    for name, runs in speeds.items():
        same = torch.equal(outputs[name], outputs["chapter 4, no cache"])
        print(f"{name:22} {median[name]:8.2f} tokens/s (median of {', '.join(f'{s:.2f}' for s in runs)})"
              f"   same tokens as without cache: {same}")
    print(f"cache speed-up over no cache: {median['chapter 4 + KV cache'] / median['chapter 4, no cache']:.1f}x")
    print(f"time of chapter 4 + KV cache relative to transformers generate: "
          f"{median['transformers generate'] / median['chapter 4 + KV cache']:.2f} (below 1.0: faster)")


if __name__ == "__main__":
    main()
