"""Score a file of model responses: reference-based metrics always, an LLM judge when a local server runs.

    python evaluate_responses.py instruction-data-with-response.json
    python evaluate_responses.py eval-example-data.json --response-key "model 2 response"
    python evaluate_responses.py responses.json --metric rouge-l judge --model llama3
    python evaluate_responses.py responses.json --metric judge --api openai --url http://localhost:8080 --model m

The responses file is a JSON list of entries with the keys ``instruction``, ``input``, ``output`` (the reference
answer) and the response (``model_response`` unless ``--response-key`` names another). The scores file (default:
``<responses>-scores.json`` beside it) holds the summary and every entry with its scores (and the judge's reply);
it is written only when everything is scored, in one step (a temporary file renamed), so a failure leaves no
partial file. The summary is also printed.
"""

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path

from download import download
from llm_judge import APIS, DEFAULT_MODEL, DEFAULT_URL, Judge, JudgeError, judge_entries
from metrics import METRICS, score_responses

TEXT_KEYS = ("instruction", "input", "output")
BOOK_REPOSITORY = "https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/main/ch07/"
# Real responses to score, published in the repository of S. Raschka's book "Build a Large Language Model (From
# Scratch)": the book's finetuned GPT-2 medium on the 110 test entries, and two finetuned models on 100 instructions.
EXAMPLE_FILES = {
    "instruction-data-with-response.json": (
        BOOK_REPOSITORY + "01_main-chapter-code/instruction-data-with-response.json",
        "aced320504c77c98d957316eb9f3460945256226c36b5e9752bf7d49585eb943"),
    "eval-example-data.json": (
        BOOK_REPOSITORY + "03_model-evaluation/eval-example-data.json",
        "90e9ceb4f1184f6b307fd76d0dd1e8b15bd3da200b1fc69ee897107394a775e0"),
}


def download_example(name, folder="."):
    """Download one of EXAMPLE_FILES into ``folder`` (from a local mirror if there is one, sha256 checked)."""
    url, sha256 = EXAMPLE_FILES[name]
    return download(url, Path(folder) / name, sha256=sha256)


class ResponsesFileError(ValueError):
    """A responses file that is not a JSON list of entries with the expected string values."""


def load_entries(path, response_key="model_response"):
    """The entries of a responses file, checked: each an object whose instruction, input, output and response are
    strings. Problems raise ResponsesFileError naming the file, the entry (0-based index) and the key."""
    path = Path(path)
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ResponsesFileError(f"{path} is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}") from e
    except UnicodeDecodeError as e:
        raise ResponsesFileError(f"{path} is not UTF-8 text: {e.reason} at byte {e.start}") from e
    if not isinstance(entries, list) or not entries:
        raise ResponsesFileError(f"{path} must hold a non-empty JSON list of entries, not {describe(entries)}")
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ResponsesFileError(f"{path}, entry {i}: expected an object (dict), found {describe(entry)}")
        for key in (*TEXT_KEYS, response_key):
            if key not in entry:
                raise ResponsesFileError(f"{path}, entry {i}: missing key {key!r} (its keys: {sorted(entry)})")
            if not isinstance(entry[key], str):
                raise ResponsesFileError(f"{path}, entry {i}: {key!r} must be a string, found {describe(entry[key])}")
    return entries


def describe(value):
    return f"{type(value).__name__} {json.dumps(value)[:60]}"


def summarize(scores):
    """Mean of each metric's scores over the entries that have one (a judge reply may hold no score)."""
    summary = {}
    for metric, values in scores.items():
        scored = [v for v in values if v is not None]
        summary[metric] = {"mean": statistics.fmean(scored) if scored else None, "scored": len(scored),
                           "unscored": len(values) - len(scored)}
    return summary


def evaluate(entries, metrics, response_key="model_response", judge=None):
    """Per-entry scores and their summary; the judge's replies are kept with its scores."""
    scores = {m: score_responses(entries, m, response_key) for m in metrics if m != "judge"}
    replies = None
    if "judge" in metrics:
        records = judge_entries(entries, judge, response_key)
        scores["judge"] = [r["score"] for r in records]
        replies = [r["reply"] for r in records]
    scored_entries = []
    for i, entry in enumerate(entries):
        scored = {**entry, "scores": {m: values[i] for m, values in scores.items()}}
        if replies is not None:
            scored["judge_reply"] = replies[i]
        scored_entries.append(scored)
    return {"summary": summarize(scores), "entries": scored_entries}


def compare(responses_by_model, metrics, judge=None, response_key="model_response"):
    """{model: summary} for several models' responses to the same entries, each scored by ``evaluate``.

    Scores are comparable only on the same instructions and reference answers, so every model's entries must match
    the first model's, in order; otherwise a ValueError names the model and the first entry that differs.
    """
    if not responses_by_model:
        raise ValueError("no models to compare")
    (first, reference), *others = responses_by_model.items()
    for name, entries in others:
        if len(entries) != len(reference):
            raise ValueError(f"{name!r} has {len(entries)} responses and {first!r} {len(reference)}: compare "
                             "responses to the same entries")
        for i, (entry, expected) in enumerate(zip(entries, reference)):
            differing = [key for key in TEXT_KEYS if entry[key] != expected[key]]
            if differing:
                raise ValueError(f"entry {i} of {name!r} differs from entry {i} of {first!r} in {differing}: "
                                 "compare responses to the same entries, in the same order")
    return {name: evaluate(entries, metrics, response_key, judge)["summary"]
            for name, entries in responses_by_model.items()}


def format_comparison(summaries, judge_model=None):
    """A table of ``compare``'s summaries: one row per model, each metric's mean in a column (n/a if none)."""
    metrics = list(next(iter(summaries.values())))
    headers = [f"judge ({judge_model})" if metric == "judge" else metric for metric in metrics]
    widths = [max(11, len(header)) for header in headers]
    name_width = max(len("model"), *(len(name) for name in summaries))
    rows = [["model", *headers]]
    for name, summary in summaries.items():
        means = [summary[metric]["mean"] for metric in metrics]
        rows.append([name, *("n/a" if mean is None else f"{mean:.1f}" if metric == "judge" else f"{mean:.3f}"
                             for metric, mean in zip(metrics, means))])
    return "\n".join("  ".join([f"{name:<{name_width}}", *(f"{cell:>{width}}" for cell, width in zip(cells, widths))])
                     for name, *cells in rows)


def write_json_atomically(data, path):
    """Write ``data`` as JSON to a temporary file beside ``path``, then rename it: ``path`` is never half-written."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, ensure_ascii=False)
        os.chmod(tmp, 0o644)  # mkstemp makes owner-only files
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def format_summary(summary, judge_model=None):
    """One line per metric: its mean (0-1 for the reference-based metrics, 0-100 for the judge) and counts."""
    lines = []
    for metric, result in summary.items():
        judged = metric == "judge"
        if result["mean"] is None:
            mean = "n/a"
        elif judged:
            mean = f"{result['mean']:.1f} / 100"
        else:
            mean = f"{result['mean']:.3f}"
        unscored = f", {result['unscored']} unscored (replies kept in the scores file)" if result["unscored"] else ""
        name = f"judge ({judge_model})" if judged else metric
        lines.append(f"{name:<20} mean {mean} over {result['scored']} entries{unscored}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("responses", type=Path, help="JSON list of entries with the responses to score")
    parser.add_argument("--output", type=Path, help="scores file to write (default: RESPONSES-scores.json)")
    parser.add_argument("--response-key", default="model_response", help="the key holding each response")
    parser.add_argument("--metric", nargs="+", choices=[*METRICS, "judge"], default=list(METRICS),
                        help="what to compute (default: the three reference-based metrics)")
    parser.add_argument("--api", choices=list(APIS), default="ollama", help="the judge server's API")
    parser.add_argument("--url", default=DEFAULT_URL, help="the judge server's root URL")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="the judge model's name on the server")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the judge server")
    parser.add_argument("--seed", type=int, default=123, help="the judge's sampling seed")
    parser.add_argument("--no-stream", action="store_true", help="ask the judge server for whole replies")
    args = parser.parse_args(argv)
    output = args.output or args.responses.with_name(f"{args.responses.stem}-scores.json")
    if not output.parent.is_dir():
        parser.error(f"the folder for the scores file does not exist: {output.parent}")
    try:
        judge = None
        if "judge" in args.metric:
            judge = Judge(model=args.model, api=args.api, url=args.url, timeout=args.timeout, seed=args.seed,
                          stream=not args.no_stream)
        entries = load_entries(args.responses, args.response_key)
        result = evaluate(entries, args.metric, args.response_key, judge)
    except FileNotFoundError as e:
        parser.exit(1, f"error: no such file: {e.filename}\n")
    except (ValueError, JudgeError) as e:  # ResponsesFileError is a ValueError
        parser.exit(1, f"error: {e}\n")
    judge_settings = None if judge is None else {"api": judge.api, "url": judge.url, "model": judge.model}
    write_json_atomically({"responses_file": args.responses.name, "response_key": args.response_key,
                           "judge": judge_settings, **result}, output)
    print(format_summary(result["summary"], args.model))
    print(f"scores of {len(entries)} entries written to {output}")


if __name__ == "__main__":
    main()
