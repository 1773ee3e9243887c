"""Tests of ch07/evaluate_responses.py: the command line as a user runs it, the scores file, the LLM judge through the
canned server, bad input files (a clear error naming the entry and key, and no scores file written), and the
comparison of several models' responses to the same entries (the notebook's "your model beside the book's")."""

import json
import re
import socket
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from rouge_score import rouge_scorer

from canned_judge_server import CannedJudgeServer
from evaluate_responses import (
    ResponsesFileError,
    compare,
    download_example,
    evaluate,
    format_comparison,
    load_entries,
    main,
)
from llm_judge import Judge
from metrics import rouge_l_f1, token_f1

HERE = Path(__file__).resolve().parents[1]
ENTRIES = [
    {"instruction": "Name the author of 'Pride and Prejudice'.", "input": "", "output": "Jane Austen.",
     "model_response": "The author of 'Pride and Prejudice' is Jane Austen."},
    {"instruction": "What is the periodic symbol for chlorine?", "input": "", "output": "The symbol is Cl.",
     "model_response": "The symbol is C."},
    {"instruction": "Convert to passive voice.", "input": "The cat chased the mouse.",
     "output": "The mouse was chased by the cat.", "model_response": "The mouse was chased by the cat."},
]


def write_entries(path, entries):
    path.write_text(json.dumps(entries), encoding="utf-8")
    return path


@pytest.fixture
def responses(tmp_path):
    return write_entries(tmp_path / "responses.json", ENTRIES)


def canned_reply(prompt):
    """Scores 90 and 20 for the first two answers; a reply without a score for the third."""
    answer = prompt.split("Assistant's answer:\n")[-1].split("\n\n")[0]
    return {ENTRIES[0]["model_response"]: "90", ENTRIES[1]["model_response"]: "Score: 20/100"}.get(answer, "Hmm.")


def test_script_scores_a_file_as_a_user_runs_it(responses):
    result = subprocess.run([sys.executable, str(HERE / "evaluate_responses.py"), str(responses)],
                            cwd=responses.parent, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    scores = json.loads((responses.parent / "responses-scores.json").read_text(encoding="utf-8"))
    expected = statistics.fmean(rouge_l_f1(e["model_response"], e["output"]) for e in ENTRIES)
    assert scores["summary"]["rouge-l"] == {"mean": pytest.approx(expected), "scored": 3, "unscored": 0}
    assert scores["summary"]["exact-match"]["mean"] == pytest.approx(1 / 3)
    assert [e["scores"]["token-f1"] for e in scores["entries"]] == [
        pytest.approx(token_f1(e["model_response"], e["output"])) for e in ENTRIES]
    assert scores["entries"][2]["instruction"] == ENTRIES[2]["instruction"] and scores["judge"] is None
    rouge_line = next(line for line in result.stdout.splitlines() if line.startswith("rouge-l "))
    assert rouge_line.endswith(f"mean {expected:.3f} over 3 entries")


@pytest.mark.parametrize("api, extra", [("ollama", []), ("openai", ["--no-stream"])])
def test_judge_scores_are_saved_and_averaged_over_parseable_replies(responses, tmp_path, capsys, api, extra):
    output = tmp_path / "judged.json"
    with CannedJudgeServer(canned_reply) as server:
        main([str(responses), "--metric", "judge", "rouge-l", "--api", api, "--url", server.url, "--model", "judge-x",
              "--output", str(output), *extra])
    scores = json.loads(output.read_text(encoding="utf-8"))
    assert [e["scores"]["judge"] for e in scores["entries"]] == [90, 20, None]
    assert [e["judge_reply"] for e in scores["entries"]] == ["90", "Score: 20/100", "Hmm."]
    assert scores["summary"]["judge"] == {"mean": 55.0, "scored": 2, "unscored": 1}
    assert scores["judge"] == {"api": api, "url": server.url, "model": "judge-x"}
    assert server.requests[0][1]["stream"] is ("--no-stream" not in extra)
    judge_line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("judge (judge-x)"))
    assert judge_line.endswith("mean 55.0 / 100 over 2 entries, 1 unscored (replies kept in the scores file)")


def test_judge_failure_leaves_an_existing_scores_file_untouched(responses, tmp_path, capsys):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
    output = tmp_path / "scores.json"
    output.write_text("earlier scores", encoding="utf-8")
    with pytest.raises(SystemExit) as exit_info:
        main([str(responses), "--metric", "rouge-l", "judge", "--url", url, "--output", str(output)])
    assert exit_info.value.code == 1
    error = capsys.readouterr().err
    assert "No judge server answers" in error and "ollama serve" in error
    assert output.read_text(encoding="utf-8") == "earlier scores"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["responses.json", "scores.json"]  # no temporary file left


BAD_FILES = [  # (file content, words the error must contain)
    ("[{'instruction': 1}]", ["is not valid JSON", "line 1, column 3"]),
    (b"\xff\xfe[]", ["is not UTF-8 text", "at byte 0"]),
    (json.dumps({"entries": ENTRIES}), ["must hold a non-empty JSON list", "dict"]),
    ("[]", ["must hold a non-empty JSON list"]),
    (json.dumps([ENTRIES[0], "The mouse was chased."]), ["entry 1", "expected an object", "str"]),
    (json.dumps([ENTRIES[0], {k: v for k, v in ENTRIES[1].items() if k != "output"}]),
     ["entry 1", "missing key 'output'", "model_response"]),
    (json.dumps(ENTRIES[:2] + [{**ENTRIES[2], "model_response": None}]),
     ["entry 2", "'model_response' must be a string", "NoneType"]),
    (json.dumps([{**ENTRIES[0], "input": ["a", "list"]}]), ["entry 0", "'input' must be a string", "list"]),
]


@pytest.mark.parametrize("content, expected", BAD_FILES)
def test_bad_input_files_are_refused_with_the_entry_and_key(tmp_path, capsys, content, expected):
    bad = tmp_path / "bad.json"
    bad.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    with pytest.raises(ResponsesFileError) as error:
        load_entries(bad)
    for text in [str(bad), *expected]:
        assert text in str(error.value)
    with pytest.raises(SystemExit):
        main([str(bad)])
    assert str(error.value) in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["bad.json"]  # no scores file


def test_other_response_keys_and_command_line_mistakes(responses, tmp_path, capsys):
    renamed = write_entries(tmp_path / "two.json", [
        {"model 2 response" if key == "model_response" else key: value for key, value in e.items()} for e in ENTRIES])
    main([str(renamed), "--response-key", "model 2 response", "--metric", "exact-match"])
    summary = json.loads((tmp_path / "two-scores.json").read_text())["summary"]
    assert summary == {"exact-match": {"mean": pytest.approx(1 / 3), "scored": 3, "unscored": 0}}
    with pytest.raises(SystemExit):
        main([str(renamed)])  # the default key, model_response, is not in this file
    assert "entry 0: missing key 'model_response'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(tmp_path / "nope.json")])
    assert "no such file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(responses), "--output", str(tmp_path / "no" / "such" / "folder.json")])
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(responses), "--metric", "bleu"])
    assert "invalid choice: 'bleu'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(responses), "--metric", "judge", "--url", "localhost:11434"])
    assert "url must start with http" in capsys.readouterr().err


def test_real_responses_rouge_l_mean_equals_rouge_score(tmp_path, capsys):
    """The book's GPT-2 medium responses from the mirror: the command line's mean ROUGE-L is rouge-score's."""
    path = download_example("instruction-data-with-response.json", tmp_path)
    main([str(path), "--metric", "rouge-l"])
    summary = json.loads((tmp_path / "instruction-data-with-response-scores.json").read_text())["summary"]
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    expected = statistics.fmean(scorer.score(e["output"], e["model_response"])["rougeL"].fmeasure
                                for e in load_entries(path))
    assert summary["rouge-l"] == {"mean": pytest.approx(expected, abs=1e-12), "scored": 110, "unscored": 0}


def other_model(entries):
    """The same entries answered by another "model": each reference answer, word for word."""
    return [{**entry, "model_response": entry["output"]} for entry in entries]


def test_compare_scores_each_model_as_evaluate_does_and_tabulates_the_means():
    models = {"your model": other_model(ENTRIES), "the book's model": ENTRIES}
    summaries = compare(models, ["rouge-l", "exact-match"])
    for name, entries in models.items():
        assert summaries[name] == evaluate(entries, ["rouge-l", "exact-match"])["summary"]
    assert summaries["your model"]["exact-match"]["mean"] == 1.0
    lines = format_comparison(summaries).splitlines()
    assert lines[0].split() == ["model", "rouge-l", "exact-match"]
    book_rouge = statistics.fmean(rouge_l_f1(e["model_response"], e["output"]) for e in ENTRIES)
    assert lines[1].split()[-2:] == ["1.000", "1.000"]
    assert lines[2].startswith("the book's model") and lines[2].split()[-2:] == [f"{book_rouge:.3f}", "0.333"]


def test_compare_judges_every_model_with_the_same_judge():
    models = {"book": ENTRIES, "copies the input": [{**e, "model_response": e["input"]} for e in ENTRIES]}
    with CannedJudgeServer(canned_reply) as server:
        summaries = compare(models, ["token-f1", "judge"], Judge(model="judge-x", url=server.url))
        assert len(server.requests) == 2 * len(ENTRIES)
    assert summaries["book"]["judge"] == {"mean": 55.0, "scored": 2, "unscored": 1}
    assert summaries["copies the input"]["judge"] == {"mean": None, "scored": 0, "unscored": 3}
    table = format_comparison(summaries, "judge-x").splitlines()
    assert table[0].split()[-2:] == ["judge", "(judge-x)"]
    assert table[1].endswith("55.0") and table[2].endswith("n/a")


@pytest.mark.parametrize("change, expected", [
    (lambda entries: entries[:2], "'other' has 2 responses and 'book' 3"),
    (lambda entries: entries[::-1], "entry 0 of 'other' differs from entry 0 of 'book' in ['instruction', 'input', "
                                    "'output']"),
    (lambda entries: [entries[0], {**entries[1], "output": "Cl."}, entries[2]],
     "entry 1 of 'other' differs from entry 1 of 'book' in ['output']"),
])
def test_compare_refuses_responses_to_other_entries(change, expected):
    with pytest.raises(ValueError, match=re.escape(expected)):
        compare({"book": ENTRIES, "other": change(other_model(ENTRIES))}, ["rouge-l"])
    with pytest.raises(ValueError, match="no models to compare"):
        compare({}, ["rouge-l"])
