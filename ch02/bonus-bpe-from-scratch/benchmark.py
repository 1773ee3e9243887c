"""Encoding speed of the from-scratch GPT-2 tokenizer next to tiktoken, on the same text in the same run.

    python benchmark.py                # The Verdict + the instruction data file (about 224 kB), 5 rounds
    python benchmark.py --tiny         # The Verdict only (20 kB): a run of a few seconds that checks the script

Three contenders take turns in every round: the from-scratch tokenizer on a first pass (its cache of merged
pre-tokens emptied, so every distinct pre-token is merged byte by byte), the same tokenizer on a repeated pass
(its cache answers the words it has seen), and tiktoken's single-threaded ``encode`` (Rust). The script prints
the median time of each, the spread (fastest and slowest round), and time ratios computed from the medians.
The header says when, where and how it ran. Offline, tiktoken needs TIKTOKEN_CACHE_DIR (see README.md).
"""

import argparse
import statistics
import sys
import time
from importlib.metadata import version
from pathlib import Path

import tiktoken

from benchmarking import describe_run, result_rows, save_results, time_alternately
from bpe import load_gpt2_tokenizer, sample_text

DATA = Path(__file__).resolve().parent / "data"


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="rounds; the median counts (default 5, at least 3)")
    parser.add_argument("--tiny", action="store_true", help="The Verdict alone instead of both texts")
    parser.add_argument("--json", type=Path, help="also save the timings there as JSON (for benchmark_all.py)")
    args = parser.parse_args(argv)
    if args.repeats < 3:
        parser.error(f"--repeats must be at least 3 (a median of fewer runs says little), got {args.repeats}")

    describe_run(__file__, argv, f"tiktoken {version('tiktoken')} (single-threaded encode)")
    text = sample_text("the-verdict.txt", DATA)
    if not args.tiny:
        text += sample_text("instruction-data.json", DATA)
    megabytes = len(text.encode("utf-8")) / 1e6
    start = time.perf_counter()
    scratch = load_gpt2_tokenizer(DATA)
    load_seconds = time.perf_counter() - start
    reference = tiktoken.get_encoding("gpt2")

    def encode_cold():
        scratch.cache.clear()
        return scratch.encode(text)

    seconds, ids = time_alternately({"from scratch, first pass (cold cache)": encode_cold,
                                     "from scratch, repeated (warm cache)": lambda: scratch.encode(text),
                                     "tiktoken": lambda: reference.encode(text)}, args.repeats)
    if any(token_ids != ids["tiktoken"] for token_ids in ids.values()):
        raise SystemExit("the from-scratch tokenizer and tiktoken disagree on the benchmark text")
    tokens = len(ids["tiktoken"])
    median = {name: statistics.median(runs) for name, runs in seconds.items()}

    print(f"text: {megabytes * 1e3:.0f} kB, {len(text):,} characters, {tokens:,} GPT-2 tokens (ids identical)")
    print(f"loading GPT-2's files into the from-scratch tokenizer (once): {load_seconds:.2f} s")
    print(f"median of {args.repeats} rounds, fastest-slowest round in brackets")
    print(f"{'encoder':<38}{'median s':>10}{'(min-max s)':>20}{'MB/s':>8}{'tokens/s':>12}")
    for name, runs in seconds.items():
        print(f"{name:<38}{median[name]:>10.4f}{f'({min(runs):.4f}-{max(runs):.4f})':>20}"
              f"{megabytes / median[name]:>8.2f}{tokens / median[name]:>12,.0f}")
    for name in list(seconds)[:2]:
        print(f"ratio of median times, {name} / tiktoken: {median[name] / median['tiktoken']:.2f}")
    if args.json:
        save_results(args.json, result_rows(f"BPE encoding, {megabytes * 1e3:.0f} kB of text", seconds, "tiktoken"))


if __name__ == "__main__":
    main()
