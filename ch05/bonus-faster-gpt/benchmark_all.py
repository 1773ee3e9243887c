"""Every speed benchmark of the course in one run, written to a markdown table and a plot.

    python benchmark_all.py                  # everything at full size (about 18 minutes on 2 CPU cores)
    python benchmark_all.py --tiny           # tiny models and texts: a run of under a minute that checks it all
    python benchmark_all.py --out results/   # where benchmark-results.md and benchmark-results.png go

In this process, on the same weights, with the contenders taking turns in every round (A B C A B C ...):

* the machine: the speed of a large float32 and bfloat16 matrix product (the peak the models can hope for) and
  the memory bandwidth (reading a large tensor), which bound the training step and generation;
* a training step of GPT-2 small (batch 2 x 256 tokens, AdamW), in float32, as an ablation that adds one change
  at a time (chapter 4's model, fused QKV projection, scaled_dot_product_attention, fused LayerNorm and GELU, fused
  AdamW, dropout masks from random bits, a sparse embedding gradient, torch.compile), against Hugging Face's
  GPT2LMHeadModel; then the same under bfloat16 autocast;
* greedy generation of 200 tokens with a key/value cache, against transformers' ``generate``, in float32, and
  with bfloat16 weights.

Then, each in a process of its own (a folder missing from a copied-out course is skipped): the attention variants
of ch03/bonus-efficient-attention, the from-scratch BPE tokenizer against tiktoken (ch02/bonus-bpe-from-scratch)
and chapter 4's KV cache (ch04/bonus-kv-cache), all through their ``--json`` option.

Timing results are never asserted anywhere: the test suite runs ``--tiny`` only to keep the script working.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import warnings
from dataclasses import replace
from datetime import datetime, timezone
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from tqdm import TqdmWarning

from benchmarking import cpu_name, describe_run, result_rows, time_alternately, write_atomically
from faster_gpt import from_gpt_model, generate_faster
from previous_chapters import GPT_CONFIG_124M, GPTModel, load_gpt2_params

warnings.filterwarnings("ignore", category=TqdmWarning)  # transformers' optional notebook progress bars
import transformers  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402

HERE = Path(__file__).resolve().parent
COURSE = HERE.parents[1]
TRAIN_CONFIG = replace(GPT_CONFIG_124M, context_length=256, qkv_bias=True, tie_embeddings=True)  # dropout 0.1
TINY_CONFIG = replace(TRAIN_CONFIG, vocab_size=1000, context_length=32, emb_dim=32, n_heads=2, n_layers=2)
FASTER, COMPILED = "FasterGPT (+ sparse embedding gradient)", "FasterGPT + torch.compile"  # names in the table
# The other benchmarks of the course: folder, then the arguments of a full and of a tiny run ({new_tokens}: this
# run's --new-tokens).
COURSE_BENCHMARKS = {
    "ch03/bonus-efficient-attention": (["--batch", "2"], ["--tiny"]),
    "ch02/bonus-bpe-from-scratch": ([], ["--tiny"]),
    "ch04/bonus-kv-cache": (["--new-tokens", "{new_tokens}"], ["--tiny", "--new-tokens", "5"]),
}
GENERATION_CONTEXT, PROMPT_TOKENS = 256, 10


def hf_gpt2(cfg):
    """Hugging Face's GPT-2 shaped and regularised like ``cfg`` (random weights: nothing is downloaded)."""
    return GPT2LMHeadModel(GPT2Config(
        vocab_size=cfg.vocab_size, n_positions=cfg.context_length, n_embd=cfg.emb_dim, n_layer=cfg.n_layers,
        n_head=cfg.n_heads, resid_pdrop=cfg.drop_rate, embd_pdrop=cfg.drop_rate, attn_pdrop=cfg.drop_rate,
        activation_function="gelu_new", tie_word_embeddings=True, use_cache=False, attn_implementation="sdpa"))


def median_seconds(run, repeats):
    run()  # warm-up
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def machine_limits(tiny, repeats):
    """Matrix-product speed (FLOP/s) in float32 and bfloat16, and memory read bandwidth (bytes/s)."""
    n = 256 if tiny else 2048
    limits = {}
    for dtype in (torch.float32, torch.bfloat16):
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        limits[f"matmul {dtype}"] = 2 * n ** 3 / median_seconds(partial(torch.mm, a, b), repeats)
    big = torch.ones((2 ** 20 if tiny else 2 ** 28) // 4)  # 1 GiB of float32 at full size
    limits["bandwidth"] = big.numel() * 4 / median_seconds(big.sum, repeats)
    return limits


def training_flops(cfg, batch):
    """Floating-point operations of one training step: forward + backward = 3 x the forward's matrix products."""
    tokens = batch * cfg.context_length
    linear = cfg.n_layers * 12 * cfg.emb_dim ** 2 + cfg.vocab_size * cfg.emb_dim  # block matrices + output head
    attention = cfg.n_layers * 2 * 2 * cfg.context_length * cfg.emb_dim  # QK^T and weights @ V, per token
    return 3 * 2 * tokens * linear + 3 * tokens * attention


def training_step(model, optimizer, inputs, targets, autocast, switches=None):
    """One AdamW step on one batch, optionally under bfloat16 autocast. ``switches`` = (FasterGPT, sdpa, fused_ops,
    fast_dropout, sparse_grad): the ablation's variants share one FasterGPT, switched before each step."""
    if switches:
        switches[0].set_switches(*switches[1:])
    model.train()
    optimizer.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        logits = model(inputs)
        logits = logits.logits if hasattr(logits, "logits") else logits
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
    loss.backward()
    optimizer.step()


def benchmark_training(cfg, repeats, autocast, compile_model):
    """Seconds per training step of each contender (see the module docstring) and the step's FLOPs."""
    torch.manual_seed(123)
    hf = hf_gpt2(cfg)
    chapter = load_gpt2_params(GPTModel(cfg), hf.state_dict())
    faster = from_gpt_model(chapter)
    inputs, targets = (torch.randint(0, cfg.vocab_size, (2, cfg.context_length)) for _ in range(2))

    def adamw(model, fused=None):
        return torch.optim.AdamW(model.parameters(), lr=4e-4, weight_decay=0.1, fused=fused)

    def step(model, optimizer, switches=None):
        return partial(training_step, model, optimizer, inputs, targets, autocast, switches)

    plain, fused = adamw(faster), adamw(faster, fused=True)
    contenders = {"transformers GPT2LMHeadModel": step(hf, adamw(hf)),
                  "chapter 4 GPTModel": step(chapter, adamw(chapter))}
    if not autocast:  # the ablation, one change at a time
        contenders["+ fused QKV projection"] = step(faster, plain, (faster, False, False, False, False))
        contenders["+ scaled_dot_product_attention"] = step(faster, plain, (faster, True, False, False, False))
        contenders["+ fused LayerNorm and GELU"] = step(faster, plain, (faster, True, True, False, False))
        contenders["+ fused AdamW"] = step(faster, fused, (faster, True, True, False, False))
        contenders["+ dropout masks from random bits"] = step(faster, fused, (faster, True, True, True, False))
    contenders[FASTER] = step(faster, fused, (faster, True, True, True, True))
    if compile_model:
        contenders[COMPILED] = step(torch.compile(faster), fused, (faster, True, True, True, True))
    start = time.perf_counter()
    for _ in range(2):  # warm-up: memory, kernels and the compilation
        for run in contenders.values():
            run()
    print(f"  warm-up (2 steps each, compilation included) {time.perf_counter() - start:.0f} s")
    seconds, _ = time_alternately(contenders, repeats)
    return seconds


def benchmark_generation(cfg, new_tokens, repeats):
    """Seconds to generate ``new_tokens`` greedily with a cache (FasterGPT and transformers, float32 and bfloat16),
    the bytes of bfloat16 weights read per token, and whether FasterGPT gave transformers' tokens in float32."""
    torch.manual_seed(123)
    hf = hf_gpt2(replace(cfg, drop_rate=0.0)).eval()
    hf.generation_config.eos_token_id = None  # random weights: never stop early
    hf.generation_config.pad_token_id = 0
    faster = from_gpt_model(load_gpt2_params(GPTModel(replace(cfg, drop_rate=0.0)), hf.state_dict())).eval()
    faster_bf16 = from_gpt_model(load_gpt2_params(GPTModel(replace(cfg, drop_rate=0.0)), hf.state_dict()))
    faster_bf16 = faster_bf16.to(torch.bfloat16).eval()
    prompt = torch.randint(0, cfg.vocab_size, (1, PROMPT_TOKENS))
    contenders = {
        "transformers generate": lambda: hf.generate(prompt, attention_mask=torch.ones_like(prompt),
                                                     max_new_tokens=new_tokens, do_sample=False, use_cache=True),
        "FasterGPT": lambda: generate_faster(faster, prompt, new_tokens),
        "FasterGPT, bfloat16 weights": lambda: generate_faster(faster_bf16, prompt, new_tokens),
    }
    with torch.no_grad():
        for run in contenders.values():
            run()
        seconds, outputs = time_alternately(contenders, repeats)
    same = torch.equal(outputs["FasterGPT"], outputs["transformers generate"])
    weight_bytes = sum(p.numel() for name, p in faster_bf16.named_parameters() if name != "pos_emb.weight") * 2
    return seconds, weight_bytes, same


def course_benchmark(folder, args, out_dir):
    """Run another folder's benchmark.py in its own process; its rows, or None when the folder is not there."""
    script = COURSE / folder / "benchmark.py"
    if not script.exists():
        print(f"  skipped: {script} not found (a copied-out folder)")
        return None
    json_path = out_dir / f"{script.parent.name}.json"
    extra = ["--plot", str(out_dir / "attention.png")] if "attention" in folder else []
    command = [sys.executable, script.name, *args, *extra, "--json", str(json_path)]
    print(f"  {' '.join(command[1:])} (in {folder})", flush=True)
    subprocess.run(command, cwd=script.parent, check=True, stdout=subprocess.DEVNULL)
    return json.loads(json_path.read_text())


def markdown(rows, notes, header):
    """A table: each benchmark, its contenders' median and spread, and the ratio to its reference contender."""
    lines = [*header, "", *notes, "", "| benchmark | contender | median | fastest-slowest | ratio to reference |",
             "|---|---|---|---|---|"]
    for row in rows:
        reference = next(r for r in rows if r["benchmark"] == row["benchmark"] and r["contender"] == row["reference"])
        ratio = row["median_s"] / reference["median_s"]
        lines.append(f"| {row['benchmark']} | {row['contender']} | {row['median_s']:.4g} s | "
                     f"{row['min_s']:.4g}-{row['max_s']:.4g} s | {ratio:.2f}"
                     f"{' (reference)' if row['contender'] == row['reference'] else ''} |")
    return "\n".join(lines) + "\n"


def plot(rows, header, path):
    """One panel per benchmark: each contender's time relative to the reference (lower is faster)."""
    benchmarks = list(dict.fromkeys(row["benchmark"] for row in rows))
    sizes = [sum(row["benchmark"] == b for row in rows) for b in benchmarks]
    fig = Figure(figsize=(9, 1.2 + 0.32 * sum(sizes) + 0.9 * len(benchmarks)), layout="constrained")
    axes = fig.subplots(len(benchmarks), 1, squeeze=False, gridspec_kw={"height_ratios": sizes})[:, 0]
    for ax, benchmark in zip(axes, benchmarks):
        mine = [row for row in rows if row["benchmark"] == benchmark]
        reference = next(row["median_s"] for row in mine if row["contender"] == row["reference"])
        bars = ax.barh(range(len(mine)), [row["median_s"] / reference for row in mine], color="#4c72b0")
        ax.bar_label(bars, fmt="%.2f", padding=3, fontsize=8)
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.set_yticks(range(len(mine)), [row["contender"] for row in mine], fontsize=8)
        ax.invert_yaxis()
        ax.margins(x=0.12)
        ax.set_title(textwrap.fill(benchmark, 90), fontsize=9, loc="left")
        ax.set_xlabel(f"time relative to {mine[0]['reference']}", fontsize=8)
    fig.suptitle("\n".join(header), fontsize=8, x=0.01, ha="left")
    partial_path = path.with_name(path.name + ".partial.png")
    fig.savefig(partial_path, dpi=100)
    partial_path.replace(path)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny models and texts: checks the script quickly")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds, at least 3 (default: 5)")
    parser.add_argument("--new-tokens", type=int, help="tokens each generation adds (default: 200; 20 with --tiny)")
    parser.add_argument("--no-compile", action="store_true", help="leave out torch.compile (needs a C++ compiler)")
    parser.add_argument("--out", type=Path, default=HERE, help="folder for benchmark-results.md/.png (default: here)")
    args = parser.parse_args(argv)
    if args.repeats < 3:
        parser.error(f"--repeats must be at least 3 (a median of fewer runs says little), got {args.repeats}")
    if args.new_tokens is None:
        args.new_tokens = 20 if args.tiny else 200
    if not 1 <= args.new_tokens <= GENERATION_CONTEXT - PROMPT_TOKENS:
        parser.error(f"--new-tokens must be between 1 and {GENERATION_CONTEXT - PROMPT_TOKENS} (a "
                     f"{PROMPT_TOKENS}-token prompt in a context of {GENERATION_CONTEXT}), got {args.new_tokens}")
    args.out.mkdir(parents=True, exist_ok=True)

    describe_run(__file__, argv, f"torch {torch.__version__} with {torch.get_num_threads()} threads, "
                       f"transformers {transformers.__version__}")
    cfg = TINY_CONFIG if args.tiny else TRAIN_CONFIG
    new_tokens = args.new_tokens
    size = "tiny model" if args.tiny else "GPT-2 small"
    rows, notes = [], []

    print("machine limits", flush=True)
    limits = machine_limits(args.tiny, args.repeats)
    for dtype in ("float32", "bfloat16"):
        notes.append(f"- matrix product ({'256' if args.tiny else '2048'}²), torch.{dtype}: "
                     f"{limits[f'matmul torch.{dtype}'] / 1e9:.0f} GFLOP/s")
    notes.append(f"- memory read bandwidth (sum of a {'1 MiB' if args.tiny else '1 GiB'} tensor): "
                 f"{limits['bandwidth'] / 1e9:.1f} GB/s")

    for autocast in (False, True):
        precision = "bfloat16 autocast" if autocast else "float32"
        name = f"training step, {size}, batch 2 x {cfg.context_length}, {precision}"
        print(name, flush=True)
        seconds = benchmark_training(cfg, args.repeats, autocast, not args.no_compile)
        rows += result_rows(name, seconds, "transformers GPT2LMHeadModel")
        peak = limits[f"matmul torch.{'bfloat16' if autocast else 'float32'}"]
        for contender in ("transformers GPT2LMHeadModel", FASTER, COMPILED):
            if contender in seconds:
                flops = training_flops(cfg, 2) / statistics.median(seconds[contender])
                notes.append(f"- {name}, {contender}: {flops / 1e9:.0f} GFLOP/s = {flops / peak:.0%} of the "
                             f"{precision.split()[0]} matrix-product speed (model FLOPs utilisation)")

    name = f"greedy generation with KV cache, {size}, {new_tokens} new tokens"
    print(name, flush=True)
    seconds, weight_bytes, same = benchmark_generation(replace(cfg, context_length=GENERATION_CONTEXT), new_tokens,
                                                       args.repeats)
    rows += result_rows(name, seconds, "transformers generate")
    notes.append(f"- {name}: FasterGPT generated the same tokens as transformers in float32: {same}")
    for contender, runs in seconds.items():
        notes.append(f"- {name}, {contender}: {new_tokens / statistics.median(runs):.1f} tokens/s")
    bound = limits["bandwidth"] / weight_bytes
    measured = new_tokens / statistics.median(seconds["FasterGPT, bfloat16 weights"])
    notes.append(f"- bfloat16 weights: {weight_bytes / 1e6:.1f} MB read per token, so the memory bandwidth allows at "
                 f"most {bound:.1f} tokens/s; FasterGPT reaches {measured:.1f} ({measured / bound:.0%} of that bound)")

    with tempfile.TemporaryDirectory() as scratch:
        for folder, (full_args, tiny_args) in COURSE_BENCHMARKS.items():
            print(folder, flush=True)
            folder_args = [arg.format(new_tokens=new_tokens) for arg in (tiny_args if args.tiny else full_args)]
            rows += course_benchmark(folder, folder_args + ["--repeats", str(args.repeats)], Path(scratch)) or []

    header = [f"Course benchmarks, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, "
              f"`python benchmark_all.py{' ' if argv else ''}{' '.join(argv)}`",
              f"CPU: {cpu_name()}, {os.cpu_count()} cores; torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads; transformers {transformers.__version__}; "
              f"median of {args.repeats} alternating rounds"]
    table = markdown(rows, notes, header)
    print("\n" + table)
    md_path = args.out / "benchmark-results.md"
    write_atomically(md_path, table)
    plot(rows, header, args.out / "benchmark-results.png")
    print(f"wrote {md_path} and {args.out / 'benchmark-results.png'}")


if __name__ == "__main__":
    main()
