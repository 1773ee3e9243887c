"""benchmark.py runs in its quick mode and prints what a README needs to quote its figures (never the timings)."""

import os
import re
import subprocess
import sys
from pathlib import Path

FOLDER = Path(__file__).resolve().parents[1]


def run_benchmark(*args):
    return subprocess.run([sys.executable, "benchmark.py", *args], cwd=FOLDER, capture_output=True, text=True,
                          timeout=300, env=os.environ)


def test_quick_run_prints_its_header_and_ratios_of_medians():
    result = run_benchmark("--tiny", "--repeats", "3")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert re.search(r"^date: \d{4}-\d\d-\d\d \d\d:\d\d UTC$", out, re.M), out
    assert re.search(r"^CPU: .+, \d+ cores, load average [\d.]+ at the start", out, re.M), out
    assert re.search(r"^software: Python [\d.]+, tiktoken [\d.]+", out, re.M), out
    assert re.search(r"^command: python benchmark.py --tiny --repeats 3$", out, re.M), out
    assert "median of 3 rounds" in out and "ids identical" in out, out
    for name in ["first pass (cold cache)", "repeated (warm cache)"]:
        assert re.search(rf"^ratio of median times, from scratch, {re.escape(name)} / tiktoken: \d+\.\d\d$", out,
                         re.M), out


def test_fewer_than_three_repeats_are_refused():
    result = run_benchmark("--tiny", "--repeats", "2")
    assert result.returncode == 2 and "--repeats must be at least 3" in result.stderr, result.stderr
