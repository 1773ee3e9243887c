"""Timing helpers shared by the course's benchmark scripts, so that every published figure says how it was made.

Each folder with a benchmark carries an identical copy of this file (tests/test_consistency.py keeps the copies
in step), so the folder still works when copied elsewhere.
"""

import json
import os
import platform
import shlex
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path


def describe_run(script, argv, software):
    """Print when, on which machine and with which command this run happened, for a README to quote verbatim."""
    cpu = cpu_name()
    load = f"{os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else "unknown"
    print(f"date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC")
    print(f"CPU: {cpu}, {os.cpu_count()} cores, load average {load} at the start (publish only from an idle machine)")
    print(f"software: Python {platform.python_version()}, {software}")
    print(f"command: {shlex.join(['python', Path(script).name, *argv])}")


def cpu_name():
    """The processor's model name (from /proc/cpuinfo on Linux)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            return next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def time_alternately(contenders, repeats):
    """Run the contenders in turn (A B C A B C ...) for ``repeats`` rounds, so that a change in the machine's load
    hits all of them alike. Returns each contender's list of wall-clock seconds and its last result."""
    seconds, results = {name: [] for name in contenders}, {}
    for _ in range(repeats):
        for name, run in contenders.items():
            start = time.perf_counter()
            results[name] = run()
            seconds[name].append(time.perf_counter() - start)
    return seconds, results


def result_rows(benchmark, seconds, reference):
    """Each contender's median and spread from ``time_alternately``'s seconds, as rows for ``save_results``;
    ``reference`` names the contender the others are compared with."""
    if reference not in seconds:
        raise ValueError(f"the reference {reference!r} is not among the contenders {list(seconds)}")
    return [{"benchmark": benchmark, "contender": name, "reference": reference, "median_s": statistics.median(runs),
             "min_s": min(runs), "max_s": max(runs), "rounds": len(runs)} for name, runs in seconds.items()]


def save_results(path, rows):
    """Write the rows as JSON to ``path`` (a script's ``--json`` option; ch05/bonus-faster-gpt/benchmark_all.py
    collects them)."""
    write_atomically(path, json.dumps(rows, indent=1))


def write_atomically(path, text):
    """Write ``text`` to a temporary file beside ``path``, then rename it: a failed run never leaves half a file."""
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    partial.replace(path)
