"""Smoke tests of the command-line scripts: once as a user runs them (a subprocess), the rest in-process."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

import gpt_generate
import gpt_train
from pretraining import load_checkpoint

HERE = Path(__file__).resolve().parents[1]
PROMPT = "Every effort moves you"


def run_script(name, *args, cwd):
    return subprocess.run([sys.executable, str(HERE / name), *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """gpt_train.py --test-mode on The Verdict (from the mirror or the network)."""
    out = tmp_path_factory.mktemp("run")
    result = run_script("gpt_train.py", "--test-mode", "--output-dir", out / "output", "--device", "cpu", cwd=out)
    assert result.returncode == 0, result.stderr
    return out / "output", result.stdout


def test_train_test_mode_writes_model_and_plot(trained):
    output, stdout = trained
    assert "val loss" in stdout and PROMPT in stdout
    assert (output / "loss.png").read_bytes().startswith(b"\x89PNG")
    model = load_checkpoint(output / "model.pth")
    assert model.cfg.emb_dim == 16 and model.cfg.context_length == 128
    assert "optimizer" in torch.load(output / "model.pth", weights_only=True)


def test_generate_script_from_saved_checkpoint(trained, tmp_path):
    output, _ = trained
    result = run_script("gpt_generate.py", "--checkpoint", output / "model.pth", "--prompt", PROMPT,
                        "--max-new-tokens", 8, "--device", "cpu", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(PROMPT) and len(result.stdout.strip()) > len(PROMPT)


def test_train_rejects_missing_or_too_short_text(tmp_path, capsys):
    with pytest.raises(SystemExit):
        gpt_train.main(["--test-mode", "--text", str(tmp_path / "nope.txt"), "--output-dir", str(tmp_path / "out")])
    assert "no such file" in capsys.readouterr().err
    (tmp_path / "short.txt").write_text("Far too short to fill a window.", encoding="utf-8")
    with pytest.raises(SystemExit):
        gpt_train.main(["--test-mode", "--text", str(tmp_path / "short.txt"), "--output-dir", str(tmp_path / "out")])
    assert "too short" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def generated(capsys, *args):
    gpt_generate.main([*map(str, args), "--device", "cpu"])
    return capsys.readouterr().out


def test_greedy_generation_is_deterministic_and_sampling_depends_on_seed(trained, capsys):
    checkpoint = trained[0] / "model.pth"
    greedy = generated(capsys, "--checkpoint", checkpoint, "--max-new-tokens", 10, "--seed", 1)
    assert greedy == generated(capsys, "--checkpoint", checkpoint, "--max-new-tokens", 10, "--seed", 2)
    sampled = [generated(capsys, "--checkpoint", checkpoint, "--max-new-tokens", 20, "--temperature", 2.0,
                         "--seed", seed) for seed in (1, 1, 2)]
    assert sampled[0] == sampled[1] != sampled[2]


def test_generate_rejects_bad_arguments(trained, tmp_path, capsys):
    with pytest.raises(SystemExit):
        gpt_generate.main(["--checkpoint", str(tmp_path / "missing.pth")])
    assert "no such file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        gpt_generate.main(["--checkpoint", str(trained[0] / "model.pth"), "--top-k", "0"])
    assert "--top-k" in capsys.readouterr().err
