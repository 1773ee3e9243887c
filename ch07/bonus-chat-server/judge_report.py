"""How a judge's scores relate to the reference-based metrics, from the scores files of evaluate_responses.py.

    python judge_report.py results/*-scores.json

For each scores file (chapter 7's ``evaluate_responses.py`` run with ``--metric rouge-l token-f1 judge``): how many
of the judge's replies held a usable score (the parse rate), the mean judge score, and the Pearson and Spearman
correlations of the judge's scores with ROUGE-L and token F1 over the entries the judge scored. It prints a table
and, with ``--output``, writes the numbers as JSON.
"""

import argparse
import json
import os
import tempfile
from pathlib import Path

import pandas as pd

METRICS = ("rouge-l", "token-f1")


def judge_summary(scores_file):
    """Parse rate, mean judge score and correlations of one scores file (a dict of plain numbers)."""
    data = json.loads(Path(scores_file).read_text(encoding="utf-8"))
    try:
        table = pd.DataFrame([entry["scores"] for entry in data["entries"]])
    except (KeyError, TypeError) as e:
        raise ValueError(f"{scores_file} is not a scores file of evaluate_responses.py (missing {e})") from e
    missing = {"judge", *METRICS} - set(table.columns)
    if missing:
        raise ValueError(f"{scores_file} has no {sorted(missing)} scores: run evaluate_responses.py with "
                         "--metric rouge-l token-f1 judge")
    scored = table.dropna(subset=["judge"]).astype(float)
    summary = {"file": Path(scores_file).name, "judge": data.get("judge"), "entries": len(table),
               "parsed": len(scored), "parse_rate": len(scored) / len(table),
               "mean_judge_score": scored["judge"].mean() if len(scored) else None}
    # Spearman's correlation is Pearson's on the ranks (ties get their mean rank).
    for method, values in [("pearson", scored), ("spearman", scored.rank())]:
        correlations = values.corr()["judge"] if len(scored) > 2 else {}
        for metric in METRICS:
            value = correlations.get(metric, float("nan"))
            summary[f"{method}_{metric}"] = None if pd.isna(value) else round(float(value), 4)
    return summary


def format_report(summaries):
    header = (f"{'scores file':<46} {'parsed':>9} {'mean':>6} " +
              " ".join(f"{m + ' ' + c:>18}" for m in METRICS for c in ("Pearson", "Spearman")))
    rows = [header]
    for s in summaries:
        mean = "n/a" if s["mean_judge_score"] is None else f"{s['mean_judge_score']:.1f}"
        cells = [f"{'n/a' if s[f'{c}_{m}'] is None else format(s[f'{c}_{m}'], '.3f'):>18}"
                 for m in METRICS for c in ("pearson", "spearman")]
        rows.append(f"{s['file']:<46} {s['parsed']:>4}/{s['entries']:<4} {mean:>6} " + " ".join(cells))
    return "\n".join(rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("scores_files", nargs="+", type=Path, help="scores files written by evaluate_responses.py")
    parser.add_argument("--output", type=Path, help="write the numbers to this JSON file too")
    args = parser.parse_args(argv)
    try:
        summaries = [judge_summary(path) for path in args.scores_files]
    except FileNotFoundError as e:
        parser.exit(1, f"error: no such file: {e.filename}\n")
    except ValueError as e:  # json.JSONDecodeError is a ValueError too
        parser.exit(1, f"error: {e}\n")
    print(format_report(summaries))
    if args.output:
        fd, partial = tempfile.mkstemp(dir=args.output.parent, prefix=f".{args.output.name}.", suffix=".part")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(summaries, f, indent=2)
        os.chmod(partial, 0o644)
        os.replace(partial, args.output)


if __name__ == "__main__":
    main()
