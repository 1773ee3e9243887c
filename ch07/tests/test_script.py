"""gpt_instruction_finetuning.py: its --test mode run as a user runs it, and its argument and data errors."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

import gpt_instruction_finetuning
from instruction_finetuning import ENTRY_KEYS, load_instruction_data
from previous_chapters import load_checkpoint

HERE = Path(__file__).resolve().parents[1]


def test_test_mode_writes_responses_model_and_plot(tmp_path):
    data = tmp_path / "instruction-data.json"
    load_instruction_data(data)  # the course's data set, downloaded here rather than into the course folder
    result = subprocess.run([sys.executable, str(HERE / "gpt_instruction_finetuning.py"), "--test", "--device", "cpu",
                             "--data", str(data), "--output-dir", str(tmp_path / "out")],
                            cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "16 training, 8 validation and 3 test entries" in result.stdout
    assert "before finetuning" in result.stdout and "val loss" in result.stdout
    out = tmp_path / "out"
    responses = json.loads((out / "model-responses.json").read_text(encoding="utf-8"))
    assert len(responses) == 3
    assert all(set(r) == {*ENTRY_KEYS, "model_response"} for r in responses)
    assert load_checkpoint(out / "gpt2-test-sft.pth").cfg == gpt_instruction_finetuning.TEST_CONFIG
    assert (out / "loss.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize("args, data, message", [
    (["--epochs", "0"], None, "--epochs must be at least 1"),
    (["--size", "7B"], None, "invalid choice: '7B'"),
    ([], "missing", "--data: no such file"),
    ([], [{"instruction": "x", "input": 3, "output": "y"}], "entry 0, key 'input': expected a string, got int"),
    ([], [{"instruction": "x", "input": "", "output": "y"}] * 9, "too few entries (9)"),
])
def test_bad_arguments_and_data(args, data, message, tmp_path, capsys):
    if data is not None:
        args += ["--data", str(tmp_path / "data.json")]
        if data != "missing":
            (tmp_path / "data.json").write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(SystemExit):
        gpt_instruction_finetuning.main(["--test", "--output-dir", str(tmp_path / "out"), *args])
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
