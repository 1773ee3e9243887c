"""Tokens per second of greedy generation: chapter 4 without a cache, with the cache, and transformers' generate.

All three run in this process on the same weights: a GPT-2 small-sized GPT2LMHeadModel with random weights
(nothing is downloaded), copied into the course's GPTModel with load_gpt2_params. Every run generates the same
number of new tokens from the same prompt and must produce the same tokens. The three take turns in every round
(A B C A B C ...), so that a change in the machine's load hits all of them alike. The script prints a header
saying when, where and how it ran, each method's median speed with its spread (slowest and fastest round), and
time ratios computed from the medians.

    python benchmark.py                      # 124M configuration, 200 new tokens, 3 rounds
    python benchmark.py --tiny --new-tokens 5   # a run of seconds on a tiny model that checks the script
"""

import argparse
import statistics
import sys
import warnings
from functools import partial
from pathlib import Path

import torch
from tqdm import TqdmWarning

from benchmarking import describe_run, result_rows, save_results, time_alternately
from kv_cache import generate_greedy_cached
from previous_chapters import GPT_CONFIG_124M, GPTConfig, GPTModel, generate_greedy, load_gpt2_params

warnings.filterwarnings("ignore", category=TqdmWarning)  # transformers' optional notebook progress bars
import transformers  # noqa: E402
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


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--new-tokens", type=int, default=200, help="tokens each generation adds (default: 200)")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds, at least 3 (default: 3)")
    parser.add_argument("--tiny", action="store_true", help="a 2-block model of width 64 instead of GPT-2 small")
    parser.add_argument("--json", type=Path, help="also save the timings there as JSON (for benchmark_all.py)")
    args = parser.parse_args(argv)
    if args.new_tokens < 1:
        parser.error(f"--new-tokens must be at least 1, got {args.new_tokens}")
    if args.repeats < 3:
        parser.error(f"--repeats must be at least 3 (a median of fewer runs says little), got {args.repeats}")

    describe_run(__file__, argv, f"torch {torch.__version__} with {torch.get_num_threads()} threads, "
                       f"transformers {transformers.__version__}")
    torch.manual_seed(123)
    cfg = TINY if args.tiny else GPT_CONFIG_124M
    hf_model, model = build_models(cfg)
    prompt = torch.randint(0, cfg.vocab_size, (1, 10))
    methods = {
        "chapter 4, no cache": lambda n: generate_greedy(model, prompt, n, cfg.context_length),
        "chapter 4 + KV cache": lambda n: generate_greedy_cached(model, prompt, n, cfg.context_length),
        "transformers generate": lambda n: hf_model.generate(
            prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=n, do_sample=False, use_cache=True),
    }
    print(f"model: {sum(p.numel() for p in model.parameters()):,} parameters, {cfg.n_layers} blocks, "
          f"width {cfg.emb_dim}; prompt of {prompt.shape[1]} tokens, {args.new_tokens} new tokens; "
          f"median of {args.repeats} rounds")

    with torch.no_grad():
        for generate in methods.values():  # warm-up
            generate(2)
        seconds, outputs = time_alternately({name: partial(generate, args.new_tokens)
                                             for name, generate in methods.items()}, args.repeats)

    median = {name: statistics.median(runs) for name, runs in seconds.items()}
    for name, runs in seconds.items():
        same = torch.equal(outputs[name], outputs["chapter 4, no cache"])
        spread = f"({args.new_tokens / max(runs):.2f}-{args.new_tokens / min(runs):.2f})"
        print(f"{name:22} {args.new_tokens / median[name]:8.2f} tokens/s {spread:>16}   "
              f"same tokens as without cache: {same}")
    print(f"ratio of median times, chapter 4, no cache / chapter 4 + KV cache: "
          f"{median['chapter 4, no cache'] / median['chapter 4 + KV cache']:.2f} (the speed-up of the cache)")
    print(f"ratio of median times, chapter 4 + KV cache / transformers generate: "
          f"{median['chapter 4 + KV cache'] / median['transformers generate']:.2f} (below 1: the course's is faster)")
    if args.json:
        save_results(args.json, result_rows(f"greedy generation, {args.new_tokens} new tokens, "
                                            f"{'tiny model' if args.tiny else 'GPT-2 small'}", seconds,
                                            "transformers generate"))


if __name__ == "__main__":
    main()
