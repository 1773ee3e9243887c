"""benchmark_all.py runs end to end on tiny models and writes its table and plot; no timing is asserted."""

import json
from dataclasses import replace

import pytest

import benchmark_all
from benchmarking import result_rows, save_results
from previous_chapters import GPT_CONFIG_124M


def test_tiny_run_writes_the_table_and_the_plot(tmp_path):
    benchmark_all.main(["--tiny", "--no-compile", "--repeats", "3", "--out", str(tmp_path)])
    table = (tmp_path / "benchmark-results.md").read_text()
    for expected in ["training step, tiny model, batch 2 x 32, float32", "bfloat16 autocast",
                     "+ scaled_dot_product_attention", "+ fused AdamW", "+ dropout masks from random bits",
                     benchmark_all.FASTER,
                     "greedy generation with KV cache", "model FLOPs utilisation", "memory bandwidth allows at most",
                     "CPU:", "threads", "generated the same tokens as transformers in float32: True"]:
        assert expected in table
    # The other folders' rows, when those folders are there (a copied-out folder runs without them).
    for folder, row in [("ch03/bonus-efficient-attention", "attention forward+backward"),
                        ("ch02/bonus-bpe-from-scratch", "BPE encoding"),
                        ("ch04/bonus-kv-cache", "chapter 4 + KV cache")]:
        assert (row in table) == (benchmark_all.COURSE / folder / "benchmark.py").exists()
    assert "torch.compile" not in table.split("| benchmark |")[1]  # --no-compile was honoured
    assert (tmp_path / "benchmark-results.png").stat().st_size > 10_000
    assert not list(tmp_path.glob("*.partial*"))


def test_too_many_new_tokens_are_refused(capsys):
    with pytest.raises(SystemExit):
        benchmark_all.main(["--tiny", "--new-tokens", "247"])
    assert "--new-tokens must be between 1 and 246" in capsys.readouterr().err


def test_training_flops_is_six_per_parameter_and_token_plus_attention():
    cfg = replace(GPT_CONFIG_124M, context_length=256)
    matrices = 12 * (12 * 768 ** 2) + 50257 * 768  # the blocks' weight matrices and the (tied) output head
    tokens = 2 * 256
    assert benchmark_all.training_flops(cfg, 2) == 6 * matrices * tokens + 3 * tokens * 12 * 4 * 256 * 768


def test_result_rows_need_the_reference_and_save_results_writes_whole_files(tmp_path):
    seconds = {"a": [1.0, 3.0, 2.0], "b": [4.0, 4.0, 5.0]}
    rows = result_rows("demo", seconds, reference="a")
    assert rows[0] == {"benchmark": "demo", "contender": "a", "reference": "a", "median_s": 2.0, "min_s": 1.0,
                       "max_s": 3.0, "rounds": 3}
    with pytest.raises(ValueError, match="reference 'c' is not among"):
        result_rows("demo", seconds, reference="c")
    save_results(tmp_path / "out.json", rows)
    assert json.loads((tmp_path / "out.json").read_text()) == rows
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]
