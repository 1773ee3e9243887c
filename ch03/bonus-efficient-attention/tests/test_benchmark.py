"""benchmark.py runs in its quick mode and prints what a README needs to quote its figures (never the timings)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import benchmark
from efficient_attention import IMPLEMENTATIONS, REFERENCE

FOLDER = Path(__file__).resolve().parents[1]


def test_quick_run_prints_its_header_and_ratios_of_medians_and_draws_its_plot(tmp_path):
    plot = tmp_path / "plot.png"
    result = subprocess.run([sys.executable, "benchmark.py", "--tiny", "--repeats", "3", "--plot", str(plot)],
                            cwd=FOLDER, capture_output=True, text=True, timeout=300, env=os.environ)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert re.search(r"^date: \d{4}-\d\d-\d\d \d\d:\d\d UTC$", out, re.M), out
    assert re.search(r"^CPU: .+, \d+ cores, load average [\d.]+ at the start", out, re.M), out
    assert re.search(r"^software: Python [\d.]+, torch \S+ with \d+ CPU threads", out, re.M), out
    assert re.search(rf"^command: python benchmark.py --tiny --repeats 3 --plot {re.escape(str(plot))}$", out, re.M)
    assert "median of 3 rounds" in out, out
    for pass_name in benchmark.PASSES:
        table = out.split(f"cpu, {pass_name}: ", 1)[1]
        for name in IMPLEMENTATIONS:
            ratio = r"1\.00" if name == REFERENCE else r"\d+\.\d\d"
            assert re.search(rf"^{re.escape(name)} +[\d.]+ ms +\([\d.]+-[\d.]+ ms\) +ratio {ratio}$", table, re.M), out
    assert plot.stat().st_size > 0


def test_fewer_than_three_repeats_are_refused(capsys):
    with pytest.raises(SystemExit):
        benchmark.parse_args(["--repeats", "2"])
    assert "--repeats must be at least 3" in capsys.readouterr().err
