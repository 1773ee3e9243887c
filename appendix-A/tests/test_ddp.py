"""Run ddp_train.py as two real processes on the CPU (gloo backend) and check that DDP kept them in step.

The ranks are started exactly as torchrun starts them: one process per rank with RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR and MASTER_PORT set, connecting to a rendezvous store that the launcher hosts. We host that store
here rather than calling torchrun, because torchrun's store listens on all network interfaces and test
servers must bind 127.0.0.1 only (GLOO_SOCKET_IFNAME=lo keeps gloo's own sockets on the loopback too).
"""

import os
import re
import socket
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from ddp_train import fingerprint
from pytorch_basics import NUM_CLASSES, NUM_FEATURES, NeuralNetwork

SCRIPT = Path(__file__).resolve().parents[1] / "ddp_train.py"
WORLD_SIZE = 2
EPOCHS = 4
TIMEOUT_SECONDS = 180


def run_ranks(output, epochs):
    """Start WORLD_SIZE ranks of the script on the CPU, wait for all; returns each rank's stdout."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    # The store takes over the listening socket and closes it when it is garbage-collected, after this function.
    store = dist.TCPStore("127.0.0.1", port, is_master=True, master_listen_fd=listener.detach(),  # noqa: F841
                          wait_for_workers=False, timeout=timedelta(seconds=TIMEOUT_SECONDS))
    processes = []
    for rank in range(WORLD_SIZE):
        env = dict(os.environ, RANK=str(rank), WORLD_SIZE=str(WORLD_SIZE), LOCAL_RANK=str(rank),
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), TORCHELASTIC_USE_AGENT_STORE="True",
                   GLOO_SOCKET_IFNAME="lo", CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
        processes.append(subprocess.Popen(
            [sys.executable, str(SCRIPT), "--epochs", str(epochs), "--output", str(output)],
            env=env, cwd=SCRIPT.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    try:
        results = [process.communicate(timeout=TIMEOUT_SECONDS) for process in processes]
    except subprocess.TimeoutExpired:
        for process in processes:
            process.kill()
            process.wait()
        pytest.fail(f"the ranks did not finish within {TIMEOUT_SECONDS} s")
    for rank, (process, (stdout, stderr)) in enumerate(zip(processes, results)):
        assert process.returncode == 0, f"rank {rank} exited with {process.returncode}:\n{stdout}\n{stderr}"
    return [stdout for stdout, _ in results]


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    output = tmp_path_factory.mktemp("ddp") / "model.pth"
    return run_ranks(output, EPOCHS), output


def test_every_rank_trains_on_its_half_of_the_data(ddp_run):
    stdouts, _ = ddp_run
    for rank, stdout in enumerate(stdouts):
        assert f"[rank {rank}/{WORLD_SIZE}] gloo on cpu: 400 of 800 training examples" in stdout, stdout
        losses = [float(x) for x in re.findall(rf"\[rank {rank}\] epoch \d+/{EPOCHS} train loss ([\d.]+)", stdout)]
        assert len(losses) == EPOCHS, stdout
        assert losses[-1] < 0.5 * losses[0], f"rank {rank}: the loss did not go down: {losses}"
        test_acc = re.search(rf"\[rank {rank}\] train acc [\d.]+% test acc ([\d.]+)%", stdout)
        assert test_acc and float(test_acc.group(1)) >= 90, stdout


def test_ranks_agree_and_rank_0_saves_their_parameters(ddp_run):
    stdouts, output = ddp_run
    prints = [re.search(rf"\[rank {rank}\] fingerprint (.+)", stdout).group(1) for rank, stdout in enumerate(stdouts)]
    assert len(set(prints)) == 1, f"the ranks ended with different parameters: {prints}"

    state_dict = torch.load(output, weights_only=True)
    assert fingerprint(state_dict) == prints[0]
    model = NeuralNetwork(NUM_FEATURES, NUM_CLASSES)
    model.load_state_dict(state_dict)

    torch.manual_seed(123)
    assert fingerprint(NeuralNetwork(NUM_FEATURES, NUM_CLASSES).state_dict()) != prints[0], "nothing was trained"
    assert not list(output.parent.glob("*.part")), "a temporary file was left behind"


def test_without_the_torchrun_environment_the_script_says_how_to_start_it():
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    result = subprocess.run([sys.executable, str(SCRIPT), "--epochs", "1"], env=env, cwd=SCRIPT.parent,
                            capture_output=True, text=True, timeout=TIMEOUT_SECONDS)
    assert result.returncode != 0
    assert "RANK" in result.stderr and "torchrun --nproc_per_node" in result.stderr, result.stderr
