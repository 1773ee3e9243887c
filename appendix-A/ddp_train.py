"""Train the Appendix A toy classifier on several processes with DistributedDataParallel (DDP).

Each process (a "rank") holds a full copy of the model and trains on its own share of every epoch's
batches; after each backward pass DDP averages the gradients across all ranks, so every copy takes the
same optimizer step and the copies stay identical. Each rank prints a fingerprint of its final
parameters so you can see that they agree; rank 0 saves the state dict.

Run it with torchrun, which starts the processes and sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and
MASTER_PORT for each of them::

    torchrun --nproc_per_node=2 ddp_train.py --epochs 10 --output ddp_model.pth

``--nproc_per_node`` is usually the number of GPUs in the machine (one process per GPU, NCCL backend).
Without GPUs the script falls back to the gloo backend on the CPU, so the same command works on a laptop;
``python -m torch.distributed.run`` is the same as ``torchrun``. Across several machines, add
``--nnodes``, ``--node_rank``, ``--master_addr`` and ``--master_port`` (see the torchrun documentation).
"""

import argparse
import hashlib
import os
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from pytorch_basics import (
    NUM_CLASSES,
    NUM_FEATURES,
    NeuralNetwork,
    compute_accuracy,
    make_toy_datasets,
    train_one_epoch,
)

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def parse_args():
    parser = argparse.ArgumentParser(description="DistributedDataParallel training of the Appendix A toy model.")
    parser.add_argument("--epochs", type=int, default=10, help="number of passes over the training data")
    parser.add_argument("--batch-size", type=int, default=16, help="examples per batch on each rank")
    parser.add_argument("--output", type=Path, default=Path("ddp_model.pth"),
                        help="where rank 0 saves the trained state dict")
    args = parser.parse_args()
    if args.epochs < 1:
        parser.error(f"--epochs must be at least 1, got {args.epochs}")
    return args


def setup_process_group():
    """Join the process group described by torchrun's environment variables; returns (rank, world size, device)."""
    missing = [name for name in TORCHRUN_VARIABLES if name not in os.environ]
    if missing:
        raise SystemExit(f"environment variables {', '.join(missing)} are not set: start this script with "
                         "torchrun, e.g. `torchrun --nproc_per_node=2 ddp_train.py`")
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))  # one GPU per process on this machine
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        device = torch.device("cpu")
        backend = "gloo"
    dist.init_process_group(backend=backend)  # reads MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE
    return rank, world_size, device


def fingerprint(state_dict):
    """A short hash of all parameter values (in state-dict order) and their sum, for comparing model copies."""
    digest = hashlib.sha256()
    total = 0.0
    for tensor in state_dict.values():
        values = tensor.detach().cpu().contiguous()
        digest.update(values.numpy().tobytes())
        total += values.double().sum().item()
    return f"sha256 {digest.hexdigest()[:16]} sum {total:.6f}"


def save_atomically(state_dict, path):
    """Write to a temporary file beside ``path`` and rename it, so no half-written file is ever left."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".part")
    torch.save(state_dict, temporary)
    temporary.replace(path)


def main():
    args = parse_args()
    rank, world_size, device = setup_process_group()
    try:
        torch.manual_seed(123)  # same initial weights on every rank (DDP also broadcasts rank 0's at start-up)
        train_dataset, test_dataset = make_toy_datasets()
        sampler = DistributedSampler(train_dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=123)
        train_loader = DataLoader(train_dataset, batch_size=args.batch_size, sampler=sampler, drop_last=True)
        test_loader = DataLoader(test_dataset, batch_size=64)

        model = NeuralNetwork(NUM_FEATURES, NUM_CLASSES).to(device)
        ddp_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        optimizer = torch.optim.SGD(ddp_model.parameters(), lr=0.1)
        print(f"[rank {rank}/{world_size}] {dist.get_backend()} on {device}: "
              f"{len(sampler)} of {len(train_dataset)} training examples per epoch")

        for epoch in range(args.epochs):
            sampler.set_epoch(epoch)  # a different shuffle each epoch, agreed by all ranks
            loss = train_one_epoch(ddp_model, train_loader, optimizer, device)
            print(f"[rank {rank}] epoch {epoch + 1}/{args.epochs} train loss {loss:.4f}", flush=True)

        # Every rank holds the same weights, so each can evaluate the whole (small) data sets by itself.
        train_acc = compute_accuracy(model, DataLoader(train_dataset, batch_size=64), device)
        test_acc = compute_accuracy(model, test_loader, device)
        print(f"[rank {rank}] train acc {train_acc:.2%} test acc {test_acc:.2%}", flush=True)
        print(f"[rank {rank}] fingerprint {fingerprint(model.state_dict())}", flush=True)
        if rank == 0:
            save_atomically(model.state_dict(), args.output)
            print(f"[rank 0] saved the state dict to {args.output}", flush=True)
        dist.barrier()  # no rank leaves before the file is written
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
