"""Pretrain a GPT on token shards (see shards.py) with one process or many, on CPUs or GPUs.

The same script runs unchanged as one process or as a DistributedDataParallel (DDP) job started by torchrun::

    python train.py --data data/python-docs --out runs/demo
    torchrun --nproc_per_node=8 train.py --data data/python-docs --out runs/demo

torchrun starts one process per GPU (a "rank") and tells each, through environment variables (RANK, LOCAL_RANK,
WORLD_SIZE, MASTER_ADDR, MASTER_PORT), who it is and where to meet the others. Every rank holds a full copy of the
model; after the backward pass DDP averages the gradients over the ranks, so every copy takes the same step.
Processes talk through NCCL on GPUs and gloo on CPUs.

What one optimizer step sees does not depend on the number of processes: ``--batch-tokens`` fixes the global batch,
split into windows of ``context_length`` tokens; each rank takes its share of the step's windows and goes through it
in micro-batches of ``--micro-batch`` windows, accumulating gradients (DDP's ``no_sync`` skips the averaging until
the last micro-batch). The learning rate warms up linearly and decays along a cosine (AdamW, gradient clipping);
GPUs that support bfloat16 compute in it under autocast.

Rank 0 writes ``checkpoint.pt`` (model, optimizer, scheduler, the step, which fixes the data position, and the RNG
states of every rank) atomically every ``--checkpoint-every`` steps, ``log.json`` (losses, learning rate,
tokens/s, MFU, samples) and at the end ``loss.png``. ``--resume`` continues from the checkpoint exactly where the
run stopped; ``--stop-at STEP`` ends a run early at a checkpoint, as an interruption would.

If a process dies, the others' next collective operation fails (or times out after ``--timeout`` seconds): they
print what happened and exit with status 1 instead of waiting forever.
"""

import argparse
import importlib.util
import json
import os
import platform
import sys
import time
from contextlib import nullcontext
from datetime import datetime, timedelta, timezone
from pathlib import Path

import tiktoken
import torch
import torch.distributed as dist
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from previous_chapters import GPTConfig, GPTModel, generate, learning_rate
from shards import CorpusError, TokenWindows, atomic_path

HERE = Path(__file__).resolve().parent
TOKENIZER = "gpt2"
# Model sizes: (emb_dim, n_layers, n_heads, context_length). gpt2-124m and gpt2-355m are GPT-2's small and medium.
SIZES = {"tiny": (32, 2, 2, 32), "small": (128, 4, 4, 128), "medium": (384, 6, 6, 256),
         "gpt2-124m": (768, 12, 12, 1024), "gpt2-355m": (1024, 24, 16, 1024)}
# Peak dense bfloat16 tensor-core throughput in TFLOP/s from NVIDIA's A100 and H100 (SXM) datasheets, for MFU.
PEAK_TFLOPS = {"A100": 312.0, "H100": 989.0}
# Settings a resumed run must share with the checkpoint (the process count and micro-batch may change).
RUN_SETTINGS = ("data", "model", "size", "drop_rate", "batch_tokens", "steps", "warmup_steps", "lr", "min_lr",
                "weight_decay", "grad_clip", "seed", "eval_windows")


class RunError(Exception):
    """Settings that cannot work together; the message says which and what to do."""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Pretrain a GPT on token shards, on one or many processes.")
    parser.add_argument("--data", required=True, help="folder written by shards.py")
    parser.add_argument("--out", required=True, help="folder for checkpoint.pt, log.json and loss.png")
    parser.add_argument("--model", choices=["gpt", "faster"], default="gpt",
                        help="chapter 4's GPTModel, or FasterGPT from ../bonus-faster-gpt (tied output head)")
    parser.add_argument("--size", choices=SIZES, default="small")
    parser.add_argument("--drop-rate", type=float, default=0.0)
    parser.add_argument("--batch-tokens", type=int, default=2 ** 14, help="tokens per optimizer step, all ranks")
    parser.add_argument("--micro-batch", type=int, default=8, help="windows per forward pass on one rank")
    parser.add_argument("--steps", type=int, default=1000, help="optimizer steps of the whole run")
    parser.add_argument("--warmup-steps", type=int, default=50)
    parser.add_argument("--lr", type=float, default=1e-3, help="peak learning rate")
    parser.add_argument("--min-lr", type=float, default=1e-4, help="learning rate at the end of the cosine")
    parser.add_argument("--weight-decay", type=float, default=0.1)
    parser.add_argument("--grad-clip", type=float, default=1.0, help="largest gradient norm")
    parser.add_argument("--seed", type=int, default=123)
    parser.add_argument("--eval-every", type=int, default=100, help="steps between validation loss and a sample")
    parser.add_argument("--eval-windows", type=int, default=64, help="validation windows, all ranks together")
    parser.add_argument("--prompt", default="The", help="start of the text sampled at each evaluation")
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--checkpoint-every", type=int, default=100)
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    parser.add_argument("--stop-at", type=int, default=None, help="end this run after this step (checkpointed)")
    parser.add_argument("--device", default=None, help="cpu, cuda or mps (default: the best available)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="one device's peak, for MFU")
    parser.add_argument("--timeout", type=float, default=300, help="seconds to wait for another process")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args.command_line = " ".join(argv)  # for the log
    return args


def join_processes(args):
    """Return (rank, world_size, device); under torchrun, join the process group it describes in the environment."""
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if args.device:
        device = torch.device(args.device)
    elif torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
    elif torch.backends.mps.is_available() and "RANK" not in os.environ:
        device = torch.device("mps")
    else:
        device = torch.device("cpu")
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if "RANK" not in os.environ:
        return 0, 1, device
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timedelta(seconds=args.timeout))
    return dist.get_rank(), dist.get_world_size(), device


def build_model(args):
    emb_dim, n_layers, n_heads, context_length = SIZES[args.size]
    cfg = GPTConfig(vocab_size=tiktoken.get_encoding(TOKENIZER).n_vocab, context_length=context_length,
                    emb_dim=emb_dim, n_heads=n_heads, n_layers=n_layers, drop_rate=args.drop_rate,
                    tie_embeddings=args.model == "faster")
    torch.manual_seed(args.seed)  # the same initial weights on every rank
    if args.model == "gpt":
        return GPTModel(cfg)
    path = HERE.parent / "bonus-faster-gpt" / "faster_gpt.py"
    if not path.exists():
        raise RunError(f"--model faster needs {path} (the faster-GPT bonus folder beside this one)")
    spec = importlib.util.spec_from_file_location("faster_gpt", path)
    faster_gpt = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(faster_gpt)
    return faster_gpt.FasterGPT(cfg, sparse_grad=False)  # DDP needs dense gradients


def flops_per_token(model):
    """Training FLOPs per token: 6 per weight of every matrix multiplication (forward 2, backward 4), plus
    attention's scores and weighted sums (the estimate of the PaLM paper, Chowdhery et al. 2022, appendix B)."""
    cfg = model.cfg
    matmul_weights = sum(p.numel() for p in model.parameters()) - model.pos_emb.weight.numel()
    if not cfg.tie_embeddings:
        matmul_weights -= model.tok_emb.weight.numel()  # a lookup, not a multiplication (a tied head does multiply)
    return 6 * matmul_weights + 12 * cfg.n_layers * cfg.emb_dim * cfg.context_length


def make_optimizer(model, args):
    """AdamW with weight decay on the matrices only (not on biases and norm parameters), and the schedule."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": args.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.95))
    scheduler = torch.optim.lr_scheduler.LambdaLR(  # a factor of the peak lr; step s trains with the lr of s + 1
        optimizer, lambda s: learning_rate(s + 1, args.lr, args.warmup_steps, args.steps, min_lr=args.min_lr) / args.lr)
    return optimizer, scheduler


def rng_state(device):
    return {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def set_rng_state(state, device):
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None:
        torch.cuda.set_rng_state(state["cuda"], device)


def cpu_model():
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def load_average():
    """The 1-minute load average (None where the system has none, as on Windows)."""
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def describe_machine(args, world_size, device):
    """What a tokens/s figure depends on: the processor, the processes, the load when this run started."""
    return {"cpu": cpu_model(), "cpus": os.cpu_count(), "device": str(device), "processes": world_size,
            "started": f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC", "load_average_at_start": load_average(),
            "nice": os.nice(0) if hasattr(os, "nice") else None, "torch": torch.__version__,
            "arguments": args.command_line}


def save_checkpoint(path, model, optimizer, scheduler, step, rank, world_size, device, history, settings, machine):
    """Every rank sends its RNG states to rank 0, which writes the checkpoint under a temporary name, then renames."""
    states = [None] * world_size
    if world_size > 1:
        dist.all_gather_object(states, rng_state(device))
    else:
        states[0] = rng_state(device)
    if rank == 0:
        checkpoint = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                      "scheduler": scheduler.state_dict(), "step": step, "rng": states, "history": history,
                      "settings": settings}
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)
        write_log(path.parent, history, settings, machine)


def write_log(folder, history, settings, machine):
    """log.json: the settings, the machine of this run (of its last part, after a resume) and every record."""
    machine = machine | {"load_average_at_end": load_average()}
    with atomic_path(folder / "log.json") as tmp:
        tmp.write_text(json.dumps({"settings": settings, "machine": machine, "history": history}, indent=1),
                       encoding="utf-8")


def batches(windows, micro_batch, device):
    """Split this rank's windows of a step into (inputs, targets) micro-batches on ``device``."""
    tokens = torch.from_numpy(windows)
    for start in range(0, len(tokens), micro_batch):
        chunk = tokens[start:start + micro_batch].to(device)
        yield chunk[:, :-1], chunk[:, 1:]  # targets: the inputs shifted by one token


def mean_over_ranks(values, world_size, device):
    """Sum each value over all ranks (one all_reduce) and return the sums as floats."""
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if world_size > 1:
        dist.all_reduce(t)
    return t.tolist()


def validation_loss(model, val, args, rank, world_size, device, autocast):
    model.eval()
    total = count = 0.0
    with torch.no_grad(), autocast:
        for inputs, targets in batches(val.sample(args.seed, 0, args.eval_windows, rank, world_size),
                                       args.micro_batch, device):
            logits = model(inputs)
            total += F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="sum").item()
            count += targets.numel()
    model.train()
    total, count = mean_over_ranks([total, count], world_size, device)
    return total / count


def sample_text(model, args, device):
    """A continuation of ``--prompt`` (temperature 0.8, top 40) drawn with its own seeded RNG, so that sampling
    leaves the training RNG untouched."""
    tokenizer = tiktoken.get_encoding(TOKENIZER)
    ids = torch.tensor([tokenizer.encode(args.prompt, allowed_special={"<|endoftext|>"})], device=device)
    model.eval()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(args.seed)
        out = generate(model, ids, 60, model.cfg.context_length, temperature=0.8, top_k=40)
    model.train()
    return tokenizer.decode(out[0].tolist())


def plot_losses(history, path=None):
    """Training and validation loss against tokens seen; saved to ``path`` if given. A plain matplotlib Figure
    (no pyplot), so that it neither needs nor changes a display backend."""
    fig = Figure(figsize=(6, 3.5))
    ax = fig.subplots()
    train = [r for r in history if "train_loss" in r]
    val = [r for r in history if "val_loss" in r]
    ax.plot([r["tokens"] / 1e6 for r in train], [r["train_loss"] for r in train], label="training (running mean)")
    ax.plot([r["tokens"] / 1e6 for r in val], [r["val_loss"] for r in val], "o-", label="validation")
    ax.set_xlabel("tokens seen (millions)")
    ax.set_ylabel("cross-entropy loss")
    ax.legend()
    if path is not None:
        fig.savefig(path, dpi=100, bbox_inches="tight")
    return fig


def train(args, rank, world_size, device):
    emb_dim, n_layers, n_heads, context_length = SIZES[args.size]
    windows_per_step = args.batch_tokens // context_length
    if args.batch_tokens % context_length or windows_per_step % (args.micro_batch * world_size):
        raise RunError(f"--batch-tokens {args.batch_tokens} must be a whole number of windows of "
                          f"{context_length} tokens that splits evenly into micro-batches of {args.micro_batch} "
                          f"windows on {world_size} process(es); try a multiple of "
                          f"{context_length * args.micro_batch * world_size}")
    if not 0 <= args.warmup_steps <= args.steps:
        raise RunError(f"--warmup-steps {args.warmup_steps} must lie between 0 and --steps {args.steps}")
    accumulation = windows_per_step // (args.micro_batch * world_size)
    train_windows = TokenWindows(args.data, "train", context_length, TOKENIZER)
    val_windows = TokenWindows(args.data, "val", context_length, TOKENIZER)
    out = Path(args.out)
    checkpoint_path = out / "checkpoint.pt"
    settings = {name: getattr(args, name) for name in RUN_SETTINGS}
    machine = describe_machine(args, world_size, device)

    model = build_model(args).to(device)
    optimizer, scheduler = make_optimizer(model, args)
    torch.manual_seed(args.seed + 1 + rank)  # each rank its own dropout masks
    step, history = 0, []
    if checkpoint_path.exists() and not args.resume:
        raise RunError(f"{checkpoint_path} exists: pass --resume to continue that run, or choose another --out")
    if args.resume:
        if not checkpoint_path.exists():
            raise RunError(f"--resume: no checkpoint at {checkpoint_path}")
        checkpoint = torch.load(checkpoint_path, map_location=device, weights_only=True)
        if checkpoint["settings"] != settings:
            changed = [k for k in RUN_SETTINGS if checkpoint["settings"][k] != settings[k]]
            raise RunError(f"--resume: the checkpoint was made with other settings: {changed}")
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        step, history = checkpoint["step"], checkpoint["history"]
        if len(checkpoint["rng"]) == world_size:
            set_rng_state(checkpoint["rng"][rank], device)
        elif rank == 0:
            print(f"resuming on {world_size} processes instead of {len(checkpoint['rng'])}: the same data, "
                  "but other dropout masks", file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)

    raw_model = model
    if world_size > 1:
        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    use_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if use_bf16 else nullcontext()
    peak = args.peak_tflops or next((v for k, v in PEAK_TFLOPS.items()
                                     if device.type == "cuda" and k in torch.cuda.get_device_name(device)), None)
    flops = flops_per_token(raw_model)
    last_step = min(args.steps, args.stop_at or args.steps)
    if rank == 0:
        params = sum(p.numel() for p in raw_model.parameters())
        print(f"{params / 1e6:.1f}M parameters, {world_size} process(es) on {device.type}, {accumulation} "
              f"micro-batch(es) of {args.micro_batch} x {context_length} tokens per rank per step; train "
              f"{train_windows.tokens:,} tokens, validation {val_windows.tokens:,}", flush=True)
    bar = tqdm(total=args.steps, initial=step, unit="step", disable=rank != 0 or args.no_progress)
    elapsed = next((r["elapsed"] for r in reversed(history) if "elapsed" in r), 0.0)  # training seconds so far
    seconds, losses = 0.0, []  # since the last log line (evaluation and checkpoints do not count)
    while step < last_step:
        start = time.perf_counter()
        step_windows = train_windows.sample(args.seed, step, windows_per_step, rank, world_size)
        loss_sum = 0.0
        for micro, (inputs, targets) in enumerate(batches(step_windows, args.micro_batch, device)):
            last = micro == accumulation - 1
            with (nullcontext() if last or world_size == 1 else model.no_sync()), autocast:
                logits = model(inputs)
                loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())
            (loss / accumulation).backward()  # DDP averages over ranks on the last micro-batch's backward
            loss_sum += loss.item()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip).item()
        lr = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        losses.append(mean_over_ranks([loss_sum / accumulation], world_size, device)[0] / world_size)
        seconds += time.perf_counter() - start
        bar.update()
        if step % args.log_every == 0 or step == last_step:
            elapsed += seconds
            tokens_per_s = len(losses) * args.batch_tokens / seconds
            history.append({"step": step, "tokens": step * args.batch_tokens, "train_loss": sum(losses) / len(losses),
                            "lr": lr, "grad_norm": grad_norm, "tokens_per_s": tokens_per_s,
                            "mfu": None if peak is None else flops * tokens_per_s / (world_size * peak * 1e12),
                            "elapsed": elapsed})
            bar.set_postfix(loss=f"{history[-1]['train_loss']:.3f}", tok_s=f"{tokens_per_s:,.0f}")
            seconds, losses = 0.0, []
        if step % args.eval_every == 0 or step == args.steps:
            record = {"step": step, "tokens": step * args.batch_tokens,
                      "val_loss": validation_loss(model, val_windows, args, rank, world_size, device, autocast)}
            if rank == 0:
                record["sample"] = sample_text(raw_model, args, device)
                bar.write(f"step {step}: validation loss {record['val_loss']:.3f}; sample: {record['sample']!r}")
            history.append(record)
        if step % args.checkpoint_every == 0 or step == last_step:
            save_checkpoint(checkpoint_path, raw_model, optimizer, scheduler, step, rank, world_size, device,
                            history, settings, machine)
    bar.close()
    if rank == 0 and step == args.steps:
        plot_losses(history, out / "loss.png")
        print(f"done: {out / 'log.json'}, {out / 'loss.png'}, {checkpoint_path}")


def main(argv=None):
    args = parse_args(argv)
    rank, world_size, device = join_processes(args)
    try:
        train(args, rank, world_size, device)
    except (CorpusError, RunError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except RuntimeError as error:
        if world_size == 1:
            raise
        print(f"[rank {rank}] stopping: {str(error).splitlines()[0]}\n[rank {rank}] an exchange with the other "
              f"processes failed: one of them has probably died or has not answered within --timeout "
              f"{args.timeout:g} s", file=sys.stderr, flush=True)
        os._exit(1)  # a process group with a dead member cannot be shut down cleanly
    if world_size > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
