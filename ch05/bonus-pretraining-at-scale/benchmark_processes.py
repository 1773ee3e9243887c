"""Measure train.py's training throughput (tokens/s) with 1 process and with N processes (torchrun).

The runs alternate (1, N, 1, N, ...) so that a change in the machine's load hits both alike; the result is the
median of each. Every run prints its command, the time and the load average, and the summary names the CPU, so a
figure is never separated from the conditions it was measured in::

    python benchmark_processes.py --data data/python-docs --processes 2 --repeats 3
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from train import cpu_model

HERE = Path(__file__).resolve().parent


def measure(processes, args, out):
    """Tokens/s over the second half of one short run (the first half warms up caches and allocators)."""
    command = ([sys.executable, "train.py"] if processes == 1 else
               [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
                "train.py"])
    command += ["--data", args.data, "--out", str(out), "--size", args.size, "--batch-tokens",
                str(args.batch_tokens), "--steps", str(args.steps), "--warmup-steps", "1", "--log-every",
                str(args.steps // 2), "--eval-every", str(10 * args.steps), "--checkpoint-every", str(10 * args.steps),
                "--device", "cpu", "--no-progress"]
    run = {"time": f"{datetime.now(timezone.utc):%H:%M:%S} UTC", "load_average": round(os.getloadavg()[0], 2),
           "processes": processes, "command": " ".join(["python", *command[1:]])}
    print(f"{run['time']}, load average {run['load_average']:.2f}: {run['command']}", flush=True)
    subprocess.run(command, cwd=HERE, check=True, capture_output=True, text=True)
    history = json.loads((out / "log.json").read_text())["history"]
    return run | {"tokens_per_s": [r for r in history if "tokens_per_s" in r][-1]["tokens_per_s"]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a folder written by shards.py")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", default="small")
    parser.add_argument("--batch-tokens", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    started = datetime.now(timezone.utc)
    runs, results = [], {1: [], args.processes: []}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for processes in results:
                runs.append(measure(processes, args, Path(tmp) / f"{processes}-{repeat}"))
                results[processes].append(runs[-1]["tokens_per_s"])
                print(f"  {processes} process(es): {results[processes][-1]:,.0f} tokens/s", flush=True)
    summary = {"cpu": cpu_model(), "cpus": os.cpu_count(), "started": f"{started:%Y-%m-%d %H:%M} UTC",
               "load_average_at_end": [round(x, 2) for x in os.getloadavg()], "size": args.size,
               "batch_tokens": args.batch_tokens, "steps": args.steps,
               "tokens_per_s": {str(p): v for p, v in results.items()},
               "median_tokens_per_s": {str(p): statistics.median(v) for p, v in results.items()}, "runs": runs}
    print(f"{summary['cpu']} ({summary['cpus']} CPUs), {summary['started']}, load average at the end "
          f"{summary['load_average_at_end']}")
    for processes, median in summary["median_tokens_per_s"].items():
        print(f"{processes} process(es): median {median:,.0f} tokens/s of {len(results[int(processes)])} runs")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
