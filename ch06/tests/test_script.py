"""gpt_class_finetune.py: its --test mode once as a user runs it (a subprocess), its argument checks in-process."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import gpt_class_finetune
from classification import SPLITS, load_classifier

HERE = Path(__file__).resolve().parents[1]


def run_script(*args, cwd):
    return subprocess.run([sys.executable, str(HERE / "gpt_class_finetune.py"), *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("options", [[], ["--token", "mean", "--lora-rank", "2"]], ids=["default", "mean-lora"])
def test_test_mode_writes_model_metrics_and_plots(tmp_path, options):
    result = run_script("--test", "--device", "cpu", "--data-dir", tmp_path / "data", "--output-dir",
                        tmp_path / "out", *options, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "validation accuracy" in result.stdout
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text(encoding="utf-8"))
    assert set(metrics["accuracy"]) == set(SPLITS) and all(0 <= a <= 1 for a in metrics["accuracy"].values())
    assert metrics["history"]["evaluations"]["step"] == [1, 3, 5, 7]  # 64 messages: 8 steps, evaluated every 2
    assert 0 < metrics["trainable_parameters"] < metrics["total_parameters"]
    for plot in ("loss.png", "accuracy.png"):
        assert (tmp_path / "out" / plot).read_bytes().startswith(b"\x89PNG")
    model, max_length, token = load_classifier(tmp_path / "out" / "model.pth")
    assert model.out_head.weight.shape == (2, 16) and max_length == metrics["max_length"]
    assert token == (options[1] if options else "last")
    with torch.no_grad():
        assert model(torch.zeros(1, max_length, dtype=torch.long)).shape == (1, max_length, 2)
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == [
        "SMSSpamCollection", "sms_spam_collection.zip", "test.csv", "train.csv", "validation.csv"]


@pytest.mark.parametrize("args, message", [
    (["--trainable", "some"], "expected 'all' or a number of blocks"),
    (["--trainable", "3"], "trainable_blocks must be 'all' or a number from 0 to 2"),
    (["--trainable", "all", "--lora-rank", "4"], "exclude each other"),
    (["--epochs", "0"], "--epochs must be at least 1"),
    (["--token", "middle"], "invalid choice"),
])
def test_bad_arguments_are_explained(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit):
        gpt_class_finetune.main(["--test", "--device", "cpu", "--data-dir", str(tmp_path / "data"),
                                 "--output-dir", str(tmp_path / "out"), *args])
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_malformed_data_file_stops_the_script(tmp_path, capsys, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    (data / "SMSSpamCollection").write_text("ham\tfine\nspam without a tab\n", encoding="utf-8")
    monkeypatch.setattr(gpt_class_finetune, "download_sms_spam", lambda folder: folder / "SMSSpamCollection")
    with pytest.raises(SystemExit):
        gpt_class_finetune.main(["--test", "--device", "cpu", "--data-dir", str(data), "--output-dir",
                                 str(tmp_path / "out")])
    assert "line 2: no tab" in capsys.readouterr().err
    assert sorted(p.name for p in data.iterdir()) == ["SMSSpamCollection"]
