"""Speed and memory of each variant at equal parameters: tokens per second of cached greedy generation, cache bytes.

    python benchmark.py                       # a small GPT, 3 alternating rounds (a few minutes)
    python benchmark.py --json results.json   # also save the table, for the notebook to show
    python benchmark.py --tiny                # a tiny model, a smoke run

Every variant is chapter 4's GPT (6 blocks of width 256 with 8 heads, a 4,096-token vocabulary, tied output head,
random weights; small, so that a run takes minutes on a laptop's CPU) with one change. To compare them at equal
parameters, each variant's feed-forward hidden size (the chapter's is 4 · 256 = 1,024) is chosen so that the
parameters one token uses come within 0.5% of the multi-head model's: the attention variants with fewer parameters
get a wider feed-forward network. For the mixture of experts the parameters used per token (the router and its
``top_k`` experts) are matched, so its total, with all experts, stays several times larger; both counts are shown.
The variants take turns within each round and the median round counts; the time of a round covers the prompt and
the generated tokens. The cache bytes are measured on the caches after generation.
"""

import argparse
import json
import os
import statistics
import sys
from dataclasses import replace
from datetime import datetime, timezone

import torch

from attention_variants import MoEFeedForward, VariantConfig, VariantGPT, generate_greedy_cached
from benchmarking import cpu_name, describe_run, time_alternately, write_atomically

CHANGES = {
    "multi-head (8 key/value heads)": {},
    "grouped-query (2 key/value heads)": {"n_kv_groups": 2},
    "multi-query (1 key/value head)": {"n_kv_groups": 1},
    "latent (MLA, 64-value latent)": {"latent_dim": 64},
    "sliding window of 64 tokens": {"window": 64},
    "mixture of experts (4, top-1)": {"n_experts": 4, "top_k": 1},
}
SMALL = VariantConfig(vocab_size=4096, context_length=512, emb_dim=256, n_heads=8, n_layers=6, drop_rate=0.0,
                      tie_embeddings=True)
TINY = replace(SMALL, vocab_size=100, context_length=64, emb_dim=48, n_layers=2)
TOLERANCE = 0.005  # largest relative difference from the multi-head model's parameters used per token


def parameter_counts(model):
    """All parameters, and those one token uses (a mixture of experts uses top_k of its experts)."""
    total = sum(p.numel() for p in model.parameters())
    idle = sum((len(block.ff.experts) - block.ff.top_k) * sum(p.numel() for p in block.ff.experts[0].parameters())
               for block in model.trf_blocks if isinstance(block.ff, MoEFeedForward))
    return total, total - idle


def used_per_token(cfg):
    """The parameters one token uses in a ``VariantGPT`` of ``cfg`` (built on the meta device: no memory, no time)."""
    with torch.device("meta"):
        return parameter_counts(VariantGPT(cfg))[1]


def equal_parameter_configs(base):
    """Each variant of ``CHANGES`` made from ``base``, with the feed-forward hidden size that brings the parameters
    one token uses closest to those of ``base`` itself (the multi-head model, with the chapter's 4 · emb_dim)."""
    target, chapter_hidden = used_per_token(base), 4 * base.emb_dim
    configs = {}
    for name, change in CHANGES.items():
        cfg = replace(base, **change, ff_hidden_dim=chapter_hidden)
        at_chapter_hidden = used_per_token(cfg)
        per_hidden_unit = used_per_token(replace(cfg, ff_hidden_dim=chapter_hidden + 1)) - at_chapter_hidden
        cfg = replace(cfg, ff_hidden_dim=chapter_hidden + round((target - at_chapter_hidden) / per_hidden_unit))
        if abs(used_per_token(cfg) - target) > TOLERANCE * target:
            raise ValueError(f"{name}: no feed-forward hidden size brings its parameters within {TOLERANCE:.1%} of "
                             f"the multi-head model's {target:,}")
        configs[name] = cfg
    return configs


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="alternating rounds; the median counts")
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1,
                        help="PyTorch threads (default 1: on a shared machine more threads than idle cores slow "
                             "everything down)")
    parser.add_argument("--tiny", action="store_true", help="a tiny model and short sequences (a smoke run)")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    base = TINY if args.tiny else SMALL
    prompt_tokens, new_tokens = (8, 8) if args.tiny else (args.prompt_tokens, args.new_tokens)
    if prompt_tokens + new_tokens > base.context_length:
        raise SystemExit(f"prompt + new tokens ({prompt_tokens + new_tokens}) exceed the context "
                         f"({base.context_length})")
    torch.set_num_threads(args.threads)
    describe_run(__file__, argv, f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    load_at_start = os.getloadavg()[0]

    torch.manual_seed(123)
    models = {name: VariantGPT(cfg).eval() for name, cfg in equal_parameter_configs(base).items()}
    prompt = torch.randint(base.vocab_size, (1, prompt_tokens))
    contenders = {name: (lambda m=model: generate_greedy_cached(m, prompt, new_tokens)) for name, model in
                  models.items()}
    seconds, results = time_alternately(contenders, args.repeats)
    load_at_end = os.getloadavg()[0]

    rows = []
    for name, model in models.items():
        total, active = parameter_counts(model)
        _, caches = results[name]
        rows.append({"variant": name, "tokens_per_s": new_tokens / statistics.median(seconds[name]),
                     "slowest_tokens_per_s": new_tokens / max(seconds[name]),
                     "fastest_tokens_per_s": new_tokens / min(seconds[name]),
                     "cache_bytes": sum(cache.nbytes() for cache in caches),
                     "ff_hidden_dim": model.cfg.ff_hidden_dim, "parameters": total, "active_parameters": active})
    print(f"{prompt_tokens}-token prompt + {new_tokens} generated tokens, batch 1, float32; median of "
          f"{args.repeats} alternating rounds; load average {load_at_start:.2f} at the start, "
          f"{load_at_end:.2f} at the end")
    print("| variant | tokens/s (median) | slowest-fastest | KV cache | feed-forward hidden | parameters | "
          "used per token |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['variant']} | {row['tokens_per_s']:.1f} | {row['slowest_tokens_per_s']:.1f}-"
              f"{row['fastest_tokens_per_s']:.1f} | {row['cache_bytes'] / 2**20:.2f} MiB | {row['ff_hidden_dim']:,} | "
              f"{row['parameters']:,} | {row['active_parameters']:,} |")
    if args.json:
        run = {"date": f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC", "cpu": cpu_name(),
               "cores": os.cpu_count(), "load_at_start": load_at_start, "load_at_end": load_at_end,
               "command": " ".join(["python", "benchmark.py", *argv]), "torch": torch.__version__,
               "threads": torch.get_num_threads(), "prompt_tokens": prompt_tokens, "new_tokens": new_tokens,
               "repeats": args.repeats}
        write_atomically(args.json, json.dumps({"run": run, "rows": rows}, indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
