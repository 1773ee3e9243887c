"""train.py on 1, 2 and 3 CPU processes (gloo): the same global batch gives the same model whatever the process
count, a stopped and resumed run ends where an uninterrupted one does, and a dead process stops the others."""

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import train
from shards import build_shards

HERE = Path(__file__).resolve().parents[1]
# The tiny model (context 32): 6 windows per step, micro-batches of 1, so 1, 2 and 3 processes all divide them.
RUN = ["--size", "tiny", "--batch-tokens", "192", "--micro-batch", "1", "--warmup-steps", "1", "--lr", "1e-3",
       "--eval-every", "2", "--eval-windows", "6", "--log-every", "1", "--checkpoint-every", "2", "--device", "cpu",
       "--no-progress"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    words = "the model reads every token of the text and learns which one comes next".split()
    for i in range(40):
        (folder / f"{i}.txt").write_text(" ".join(words[(i + j) % len(words)] for j in range(50 + i)))
    build_shards([folder], folder / "shards", val_fraction=0.2, workers=1, progress=False)
    return folder / "shards"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_ranks(world_size, args):
    """Start ``world_size`` processes of train.py with the variables torchrun would set (one thread each)."""
    port = free_port()
    processes = []
    for rank in range(world_size):
        env = dict(os.environ, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size),
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
        processes.append(subprocess.Popen([sys.executable, "train.py", *args], cwd=HERE, env=env, text=True,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    return processes


def finish(processes, timeout=120):
    outputs = [p.communicate(timeout=timeout) for p in processes]
    for p, (_, err) in zip(processes, outputs):
        assert p.returncode == 0, err
    return outputs


def start_torchrun(world_size, args):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={world_size}",
               "train.py", *args]
    return subprocess.Popen(command, cwd=HERE, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def weights(folder):
    return torch.load(folder / "checkpoint.pt", weights_only=True)["model"]


def max_difference(a, b):
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a if a[k].is_floating_point())  # not the causal masks


def test_bad_settings_are_explained(data, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        train.main(["--data", str(data), "--out", str(tmp_path), *RUN, "--steps", "3", "--batch-tokens", "100"])
    assert stop.value.code == 2
    assert "--batch-tokens 100 must be a whole number of windows of 32 tokens" in capsys.readouterr().err


def test_two_and_three_processes_train_the_model_that_one_process_trains(data, tmp_path):
    args = ["--data", str(data), *RUN, "--steps", "3"]
    two = start_torchrun(2, [*args, "--out", str(tmp_path / "two")])  # once through torchrun itself
    three = start_ranks(3, [*args, "--out", str(tmp_path / "three")])  # (the runs overlap, to save time)
    train.main([*args, "--out", str(tmp_path / "one")])
    finish([two, *three])
    one = weights(tmp_path / "one")
    assert max_difference(one, train.build_model(train.parse_args(args + ["--out", "x"])).state_dict()) > 1e-4
    differences = [max_difference(one, weights(tmp_path / f)) for f in ("two", "three")]
    print("largest difference from one process, 2 and 3 processes:", differences)
    assert max(differences) <= 1e-5


def test_a_stopped_and_resumed_run_ends_where_an_uninterrupted_one_does(data, tmp_path):
    args = ["--data", str(data), *RUN, "--steps", "4", "--drop-rate", "0.1"]  # dropout: every rank's RNG matters
    finish([*start_ranks(2, [*args, "--out", str(tmp_path / "whole")]),
            *start_ranks(2, [*args, "--out", str(tmp_path / "parts"), "--stop-at", "2"])])
    assert torch.load(tmp_path / "parts" / "checkpoint.pt", weights_only=True)["step"] == 2
    finish(start_ranks(2, [*args, "--out", str(tmp_path / "parts"), "--resume"]))
    difference = max_difference(weights(tmp_path / "whole"), weights(tmp_path / "parts"))
    print("largest difference, resumed vs uninterrupted:", difference)
    assert difference <= 1e-6
    whole, parts = (json.loads((tmp_path / f / "log.json").read_text())["history"] for f in ("whole", "parts"))
    assert [r.get("val_loss") for r in whole] == [r.get("val_loss") for r in parts]


def test_when_a_process_dies_the_others_stop_with_a_clear_message(data, tmp_path):
    processes = start_ranks(3, ["--data", str(data), *RUN, "--steps", "100000", "--checkpoint-every", "1",
                                "--timeout", "30", "--out", str(tmp_path)])
    deadline = time.monotonic() + 60
    while not (tmp_path / "checkpoint.pt").exists():  # training has begun on all three
        assert time.monotonic() < deadline and all(p.poll() is None for p in processes)
        time.sleep(0.2)
    processes[2].send_signal(signal.SIGKILL)
    started = time.monotonic()
    for rank in (0, 1):
        _, err = processes[rank].communicate(timeout=60)
        assert processes[rank].returncode == 1
        assert f"[rank {rank}] an exchange with the other processes failed: one of them has probably died" in err
    assert time.monotonic() - started < 60
    processes[2].communicate()


def test_the_faster_model_of_the_faster_gpt_bonus_trains_too(data, tmp_path):
    train.main(["--data", str(data), *RUN, "--steps", "2", "--model", "faster", "--out", str(tmp_path)])
    log = json.loads((tmp_path / "log.json").read_text())
    history = log["history"]
    # the log says where its tokens/s figures come from
    machine = log["machine"]
    assert machine["processes"] == 1 and machine["cpu"] and "--model faster" in machine["arguments"]
    assert "tok_emb.weight" in weights(tmp_path) and "out_head.weight" not in weights(tmp_path)  # tied head
    assert all(math.isfinite(r["train_loss"]) for r in history if "train_loss" in r)
