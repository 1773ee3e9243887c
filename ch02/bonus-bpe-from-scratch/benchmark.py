"""Encoding speed of the from-scratch GPT-2 tokenizer next to tiktoken, on the same text in the same run.

    python benchmark.py [--repeat N]

The text is The Verdict followed by the instruction data file (about 224 kB). The from-scratch tokenizer is timed
twice: on its first pass, when every distinct pre-token still has to be merged byte by byte, and on later passes,
when its cache answers the words it has seen. tiktoken (Rust) is timed on single-threaded ``encode``.
Each figure is the best of ``--repeat`` runs. Offline, tiktoken needs TIKTOKEN_CACHE_DIR (see README.md).
"""

import argparse
import time
from pathlib import Path

import tiktoken

from bpe import load_gpt2_tokenizer, sample_text

DATA = Path(__file__).resolve().parent / "data"


def best_time(function, repeat):
    """The shortest of ``repeat`` wall-clock times of ``function()``, in seconds, and its last result."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return min(times), result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per measurement; the best counts (default 5)")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error(f"--repeat must be at least 1, got {args.repeat}")

    text = sample_text("the-verdict.txt", DATA) + sample_text("instruction-data.json", DATA)
    megabytes = len(text.encode("utf-8")) / 1e6
    load_seconds, scratch = best_time(lambda: load_gpt2_tokenizer(DATA), 1)
    reference = tiktoken.get_encoding("gpt2")

    def encode_cold():
        scratch.cache.clear()
        return scratch.encode(text)

    cold_seconds, ids = best_time(encode_cold, args.repeat)
    warm_seconds, warm_ids = best_time(lambda: scratch.encode(text), args.repeat)
    reference_seconds, reference_ids = best_time(lambda: reference.encode(text), args.repeat)
    if not ids == warm_ids == reference_ids:
        raise SystemExit("the from-scratch tokenizer and tiktoken disagree on the benchmark text")

    print(f"text: {megabytes * 1e3:.0f} kB, {len(text):,} characters, {len(ids):,} GPT-2 tokens (ids identical)")
    print(f"loading GPT-2's files into the from-scratch tokenizer: {load_seconds:.2f} s")
    print(f"{'encoder':<36}{'seconds':>9}{'MB/s':>9}{'tokens/s':>12}{'vs tiktoken':>13}")
    for name, seconds in [("from scratch, first pass (cold cache)", cold_seconds),
                          ("from scratch, repeated (warm cache)", warm_seconds),
                          ("tiktoken", reference_seconds)]:
        print(f"{name:<36}{seconds:>9.4f}{megabytes / seconds:>9.2f}{len(ids) / seconds:>12,.0f}"
              f"{reference_seconds / seconds:>12.3f}x")


if __name__ == "__main__":
    main()
