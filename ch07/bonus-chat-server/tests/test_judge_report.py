"""judge_report.py on small hand-made scores files whose numbers are known."""

import json

import pytest

from judge_report import judge_summary, main


def scores_file(tmp_path, judge, rouge, f1):
    entries = [{"scores": {"judge": j, "rouge-l": r, "token-f1": f}} for j, r, f in zip(judge, rouge, f1)]
    path = tmp_path / "x-scores.json"
    path.write_text(json.dumps({"judge": {"model": "m"}, "entries": entries}), encoding="utf-8")
    return path


def test_parse_rate_mean_and_correlations(tmp_path):
    # Unscored replies (None) are left out; on the rest rouge-l rises with the judge (but not linearly: Pearson
    # below 1, Spearman exactly 1) and token F1 falls as the judge's score rises (both -1).
    path = scores_file(tmp_path, [10, None, 20, 30, None, 40], [0.1, 0.9, 0.2, 0.3, 0.5, 0.9],
                       [0.8, 0.1, 0.6, 0.4, 0.3, 0.2])
    summary = judge_summary(path)
    assert (summary["entries"], summary["parsed"], summary["parse_rate"]) == (6, 4, 4 / 6)
    assert summary["mean_judge_score"] == 25
    assert summary["spearman_rouge-l"] == 1 and 0.8 < summary["pearson_rouge-l"] < 0.95
    assert summary["spearman_token-f1"] == summary["pearson_token-f1"] == -1


def test_a_file_without_judge_scores_is_refused(tmp_path, capsys):
    path = tmp_path / "x-scores.json"
    path.write_text(json.dumps({"entries": [{"scores": {"rouge-l": 0.5, "token-f1": 0.5}}]}), encoding="utf-8")
    with pytest.raises(SystemExit):
        main([str(path)])
    assert "--metric rouge-l token-f1 judge" in capsys.readouterr().err
