"""Time the six multi-head attention implementations of efficient_attention.py against the chapter's layer.

    python benchmark.py              # GPT-2 small shapes: batch 8, 1024 tokens, 768 dims, 12 heads
    python benchmark.py --batch 2    # a smaller batch for a slow machine
    python benchmark.py --tiny       # batch 1, 32 tokens, 48 dims, 4 heads: a run of seconds that checks the script

On the CPU, and on a CUDA GPU when there is one, it measures a forward pass (eval mode, no gradients) and a
forward plus backward pass (training mode), dropout off. Every implementation gets the chapter layer's weights,
and the implementations take turns within each round (A B C ... A B C ...), so that changes in machine load hit
all of them alike. It prints a header saying when, where and how it ran, then the median time of each
implementation with its spread (fastest and slowest round) and its ratio to the chapter's MultiHeadAttention,
computed from the medians (below 1 means faster), and saves a bar plot of those ratios (benchmark.png next to
this script unless --plot says otherwise).
"""

import argparse
import statistics
import sys
from functools import partial
from pathlib import Path

import torch
from matplotlib.figure import Figure

from benchmarking import describe_run, result_rows, save_results, time_alternately
from efficient_attention import IMPLEMENTATIONS, REFERENCE, MultiHeadAttention, from_chapter

PASSES = ("forward", "forward+backward")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8, help="sequences per batch (default: 8)")
    parser.add_argument("--tokens", type=int, default=1024, help="tokens per sequence (default: 1024)")
    parser.add_argument("--emb-dim", type=int, default=768, help="d_in = d_out (default: 768)")
    parser.add_argument("--heads", type=int, default=12, help="attention heads (default: 12)")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds, at least 3 (default: 5)")
    parser.add_argument("--tiny", action="store_true", help="batch 1, 32 tokens, 48 dims, 4 heads (overrides those)")
    parser.add_argument("--plot", type=Path, default=Path(__file__).with_name("benchmark.png"),
                        help="where to save the bar plot (default: benchmark.png beside this script)")
    parser.add_argument("--json", type=Path, help="also save the timings there as JSON (for benchmark_all.py)")
    args = parser.parse_args(argv)
    for name in ["batch", "tokens", "emb_dim", "heads"]:
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.repeats < 3:
        parser.error(f"--repeats must be at least 3 (a median of fewer runs says little), got {args.repeats}")
    if args.tiny:
        args.batch, args.tokens, args.emb_dim, args.heads = 1, 32, 48, 4
    return args


def devices():
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def run_pass(layer, x, pass_name):
    """One unit of work to time: a forward pass without gradients, or a forward and a backward pass."""
    layer.train(pass_name == "forward+backward")
    layer.zero_grad(set_to_none=True)
    if pass_name == "forward":
        with torch.no_grad():
            layer(x)
    else:
        layer(x).sum().backward()
    if x.device.type == "cuda":
        torch.cuda.synchronize()


def measure(layers, x, repeats):
    """Seconds of every round for every (pass, implementation), after one untimed warm-up run each."""
    times = {}
    for pass_name in PASSES:
        for layer in layers.values():
            run_pass(layer, x, pass_name)
        contenders = {name: partial(run_pass, layer, x, pass_name) for name, layer in layers.items()}
        seconds, _ = time_alternately(contenders, repeats)
        times.update({(pass_name, name): runs for name, runs in seconds.items()})
    return times


def ratio(times, pass_name, name):
    """Median time of ``name`` over the median time of the reference, for one pass."""
    return statistics.median(times[pass_name, name]) / statistics.median(times[pass_name, REFERENCE])


def print_table(device, times):
    for pass_name in PASSES:
        print(f"\n{device}, {pass_name}: median time (fastest-slowest round), and the ratio of the medians to the "
              f"{REFERENCE}'s (< 1 = faster)")
        for name in IMPLEMENTATIONS:
            runs = [seconds * 1000 for seconds in times[pass_name, name]]
            spread = f"({min(runs):.1f}-{max(runs):.1f} ms)"
            print(f"{name:30s}{statistics.median(runs):10.1f} ms {spread:>24s}   "
                  f"ratio {ratio(times, pass_name, name):.2f}")


def plot_ratios(results, title, path):
    fig = Figure(figsize=(8, 1.2 + 0.9 * len(IMPLEMENTATIONS) * len(results)))
    axes = fig.subplots(len(results), 1, squeeze=False)[:, 0]
    rows = range(len(IMPLEMENTATIONS))
    for ax, (device, times) in zip(axes, results.items()):
        for offset, pass_name in zip([-0.2, 0.2], PASSES):
            ratios = [ratio(times, pass_name, name) for name in IMPLEMENTATIONS]
            bars = ax.barh([row + offset for row in rows], ratios, height=0.4, label=pass_name)
            ax.bar_label(bars, fmt="%.2f", padding=3, fontsize=8)
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.set_yticks(rows, list(IMPLEMENTATIONS))
        ax.invert_yaxis()
        ax.set_xlabel(f"time relative to the {REFERENCE} on {device} (lower is faster)")
        ax.margins(x=0.15)
        ax.legend(loc="lower right", fontsize=8)
    axes[0].set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    gpu = f", GPU: {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    describe_run(__file__, argv, f"torch {torch.__version__} with {torch.get_num_threads()} CPU threads{gpu}")
    shape = f"batch {args.batch} x {args.tokens} tokens, d={args.emb_dim}, {args.heads} heads"
    print(f"{shape}; median of {args.repeats} rounds")
    torch.manual_seed(123)
    reference = MultiHeadAttention(args.emb_dim, args.emb_dim, args.tokens, dropout=0.0, num_heads=args.heads)
    results = {}
    for device in devices():
        layers = {name: from_chapter(cls, reference).to(device) for name, cls in IMPLEMENTATIONS.items()}
        x = torch.randn(args.batch, args.tokens, args.emb_dim, device=device)
        results[device] = measure(layers, x, args.repeats)
        print_table(device, results[device])
    plot_ratios(results, f"Multi-head attention, {shape}", args.plot)
    if args.json:
        save_results(args.json, [row for device, times in results.items() for pass_name in PASSES
                                 for row in result_rows(f"attention {pass_name} ({device}, {shape})",
                                                        {name: times[pass_name, name] for name in IMPLEMENTATIONS},
                                                        REFERENCE)])
    print(f"\nsaved the plot to {args.plot}")


if __name__ == "__main__":
    main()
