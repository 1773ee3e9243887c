"""Time the six multi-head attention implementations of efficient_attention.py against the chapter's layer.

    python benchmark.py              # GPT-2 small shapes: batch 8, 1024 tokens, 768 dims, 12 heads
    python benchmark.py --batch 2    # a smaller batch for a slow machine

On the CPU, and on a CUDA GPU when there is one, it measures a forward pass (eval mode, no gradients) and a
forward plus backward pass (training mode), dropout off. Every implementation gets the chapter layer's weights,
and the implementations take turns within each repetition, so that changes in machine load hit all of them alike.
It prints the median times and each one as a ratio to the chapter's MultiHeadAttention (below 1 means faster),
and saves a bar plot of the ratios (benchmark.png next to this script unless --plot says otherwise).
"""

import argparse
import statistics
import time
from pathlib import Path

import torch
from matplotlib.figure import Figure

from efficient_attention import IMPLEMENTATIONS, REFERENCE, MultiHeadAttention, from_chapter

PASSES = ("forward", "forward+backward")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8, help="sequences per batch (default: 8)")
    parser.add_argument("--tokens", type=int, default=1024, help="tokens per sequence (default: 1024)")
    parser.add_argument("--emb-dim", type=int, default=768, help="d_in = d_out (default: 768)")
    parser.add_argument("--heads", type=int, default=12, help="attention heads (default: 12)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per measurement; median (default: 5)")
    parser.add_argument("--plot", type=Path, default=Path(__file__).with_name("benchmark.png"),
                        help="where to save the bar plot (default: benchmark.png beside this script)")
    args = parser.parse_args(argv)
    for name in ["batch", "tokens", "emb_dim", "heads", "repeats"]:
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    return args


def devices():
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def run_pass(layer, x, pass_name):
    """One timed unit of work; returns its duration in seconds."""
    layer.train(pass_name == "forward+backward")
    layer.zero_grad(set_to_none=True)
    if x.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    if pass_name == "forward":
        with torch.no_grad():
            layer(x)
    else:
        layer(x).sum().backward()
    if x.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def measure(layers, x, repeats):
    """Median seconds for every (pass, implementation), after one untimed warm-up run each."""
    times = {}
    for pass_name in PASSES:
        for layer in layers.values():
            run_pass(layer, x, pass_name)
        runs = {name: [] for name in layers}
        for _ in range(repeats):
            for name, layer in layers.items():
                runs[name].append(run_pass(layer, x, pass_name))
        times.update({(pass_name, name): statistics.median(seconds) for name, seconds in runs.items()})
    return times


def print_table(device, times):
    print(f"\n{device}: median time, and ratio to the {REFERENCE} (< 1 = faster)")
    print(f"{'implementation':30s}" + "".join(f"{pass_name:>26s}" for pass_name in PASSES))
    for name in IMPLEMENTATIONS:
        cells = [f"{times[p, name] * 1000:12.1f} ms {times[p, name] / times[p, REFERENCE]:8.2f}x" for p in PASSES]
        print(f"{name:30s}" + "".join(f"{cell:>26s}" for cell in cells))


def plot_ratios(results, title, path):
    fig = Figure(figsize=(8, 1.2 + 0.9 * len(IMPLEMENTATIONS) * len(results)))
    axes = fig.subplots(len(results), 1, squeeze=False)[:, 0]
    rows = range(len(IMPLEMENTATIONS))
    for ax, (device, times) in zip(axes, results.items()):
        for offset, pass_name in zip([-0.2, 0.2], PASSES):
            ratios = [times[pass_name, name] / times[pass_name, REFERENCE] for name in IMPLEMENTATIONS]
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
    args = parse_args(argv)
    shape = f"batch {args.batch} x {args.tokens} tokens, d={args.emb_dim}, {args.heads} heads"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads; {shape}; "
          f"median of {args.repeats} runs")
    torch.manual_seed(123)
    reference = MultiHeadAttention(args.emb_dim, args.emb_dim, args.tokens, dropout=0.0, num_heads=args.heads)
    results = {}
    for device in devices():
        layers = {name: from_chapter(cls, reference).to(device) for name, cls in IMPLEMENTATIONS.items()}
        x = torch.randn(args.batch, args.tokens, args.emb_dim, device=device)
        results[device] = measure(layers, x, args.repeats)
        print_table(device, results[device])
    plot_ratios(results, f"Multi-head attention, {shape}", args.plot)
    print(f"\nsaved the plot to {args.plot}")


if __name__ == "__main__":
    main()
