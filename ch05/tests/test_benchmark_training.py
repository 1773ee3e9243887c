"""benchmark_training.py runs in its quick mode and prints what a README needs to quote its figures (never the
timings themselves)."""

import os
import re
import subprocess
import sys
from pathlib import Path

FOLDER = Path(__file__).resolve().parents[1]


def test_quick_run_prints_its_header_and_ratios_of_medians():
    args = ["--tiny", "--warmup", "1", "--steps", "3"]
    result = subprocess.run([sys.executable, "benchmark_training.py", *args], cwd=FOLDER, capture_output=True,
                            text=True, timeout=600, env=os.environ)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert re.search(r"^date: \d{4}-\d\d-\d\d \d\d:\d\d UTC$", out, re.M), out
    assert re.search(r"^CPU: .+, \d+ cores, load average [\d.]+ at the start", out, re.M), out
    assert re.search(r"^software: Python [\d.]+, torch \S+ with \d+ threads, transformers \S+$", out, re.M), out
    assert re.search(rf"^command: python benchmark_training.py {' '.join(args)}$", out, re.M), out
    assert "median of 3 rounds" in out, out
    losses = re.findall(r"^(?:course|hf-sdpa|hf-eager) .* loss before training ([\d.]+)$", out, re.M)
    assert len(losses) == 3 and len(set(losses)) == 1, out  # the same starting weights
    for name in ["course", "hf-sdpa", "hf-eager"]:
        assert re.search(rf"^{name} +median step +[\d.]+ s +\(fastest-slowest [\d.]+-[\d.]+ s\)$", out, re.M), out
    for reference in ["hf-sdpa", "hf-eager"]:
        assert re.search(rf"^ratio of median times, course / {reference}: \d+\.\d\d$", out, re.M), out

