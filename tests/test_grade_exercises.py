"""tools/grade_exercises.py gives each exercise the verdict its check gives, and blames the right exercise.

* Every chapter's blank template FAILs every exercise: tests/test_exercises.py grades them with this tool.
* The worked solutions: every exercise PASSes. SOLVED_CHAPTERS lists the chapters whose solutions are graded here:
  all but chapters 5 and 7, whose solutions take longest (about 2 min and 50 s on the busy 2-core development
  machine, against 10 to 35 s for the others), and chapter 4, whose solutions are graded in the class of
  tests/test_grade_class.py (with the ways to cheat and to break the grader). Chapter 6 stands for the chapters
  that load GPT-2. nbval runs every chapter's exercise-solutions.ipynb in the suite, with the template's check
  cells (tests/test_exercises.py keeps them identical), so a check that fails on a solution fails the suite there.
  A solution that passes here also proves that the grader can take its answers from the kernel: as data for the
  isolated checks, or in the kernel for the checks of code (``CODE_CHECKS``); a check missing from that table
  fails its solution with "the answer must be plain data".
* A solution notebook with one plausible wrong answer, through the command line: exactly that exercise FAILs, with
  the check's hint; the JSON report is written and the exit status is 1.

The notebooks run with the root conftest's offline environment (the chapter 5-7 ones load the synthetic GPT-2
stand-ins and run their quick versions), as nbval runs them.
"""

import json
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import grade_exercises  # noqa: E402  (tools/ is not a package)

pytestmark = pytest.mark.synthetic_gpt2  # chapters 5-7 load GPT-2 (the root conftest's stand-ins)

CHAPTERS = sorted(p.parent.name for p in ROOT.glob("*/exercise_checks.py"))
SOLVED_CHAPTERS = ["appendix-A", "ch02", "ch03", "ch06"]  # ch04, ch05 and ch07: see the docstring
TIMEOUT = 300


def statuses(report):
    return {e["exercise"]: e["status"] for e in report["exercises"]}


def messages(report):
    return {e["exercise"]: e["message"] for e in report["exercises"]}


def write_variant(tmp_path, chapter, edit):
    """A copy of a chapter's solutions, changed by ``edit(cells)``, saved outside the course (a student's file)."""
    notebook = nbformat.read(ROOT / chapter / "exercise-solutions.ipynb", as_version=4)
    edit(notebook.cells)
    path = tmp_path / "student.ipynb"
    nbformat.write(notebook, path)
    return path


def cell_index(cells, start):
    """The index of the one code cell whose source starts with ``start``."""
    found = [i for i, c in enumerate(cells) if c.cell_type == "code" and c.source.startswith(start)]
    assert len(found) == 1, f"expected one cell starting with {start!r}, found {len(found)}: update this test"
    return found[0]


def test_chapters_found():
    assert CHAPTERS == ["appendix-A", "ch02", "ch03", "ch04", "ch05", "ch06", "ch07"]
    assert grade_exercises.chapter_checks(ROOT / "ch04") == [f"check_exercise_4_{i}" for i in (1, 2, 3)]
    every_check = {c for chapter in CHAPTERS for c in grade_exercises.chapter_checks(ROOT / chapter)}
    assert grade_exercises.CODE_CHECKS < every_check, "CODE_CHECKS names a check no chapter defines"


@pytest.mark.parametrize("chapter", SOLVED_CHAPTERS)
def test_solutions_pass_every_exercise(chapter):
    report = grade_exercises.grade(ROOT / chapter / "exercise-solutions.ipynb", TIMEOUT)
    assert set(statuses(report).values()) == {"PASS"}, messages(report)
    assert report["passed"] == report["total"] == len(grade_exercises.chapter_checks(ROOT / chapter))
    assert all(m.startswith("Correct") for m in messages(report).values()), messages(report)
    checked = {e["check"]: e["checked"] for e in report["exercises"]}
    assert checked == {c: "kernel" if c in grade_exercises.CODE_CHECKS else "isolated" for c in checked}


def test_one_wrong_answer_fails_exactly_that_exercise(tmp_path, monkeypatch, capsys):
    def two_dimensions_per_head(cells):  # the wrapper concatenates the heads: 2 heads of d_out=2 give 4 dimensions
        i = cell_index(cells, "torch.manual_seed(123)\nmha_2d = ")
        cells[i].source = cells[i].source.replace("d_out=1", "d_out=2")

    monkeypatch.setattr(grade_exercises, "course_environment", lambda scratch: {})  # pytest's is offline already
    out = tmp_path / "report.json"
    status = grade_exercises.main([str(write_variant(tmp_path, "ch03", two_dimensions_per_head)), "--json", str(out)])
    report = json.loads(out.read_text())
    assert status == 1
    assert report["chapter"] == "ch03" and (report["passed"], report["total"]) == (4, 5)
    assert statuses(report) == {"3.1": "PASS", "3.2": "FAIL", "3.3": "PASS", "3.4": "PASS", "3.5": "PASS"}
    assert "output shape is (2, 6, 4), expected (2, 6, 2)" in messages(report)["3.2"]
    assert "what must each head's d_out be?" in messages(report)["3.2"]
    printed = capsys.readouterr().out
    assert "(chapter ch03): 4 of 5 exercises pass" in printed
    assert "  3.2  FAIL  output shape is (2, 6, 4)" in printed and "  3.1  PASS  Correct: " in printed


@pytest.mark.parametrize("name, content, error", [
    ("notes.txt", "hello", "is not a notebook file"),
    ("broken.ipynb", "{not json", "cannot read it as a Jupyter notebook"),
    ("chapter.ipynb", None, "is not an exercises notebook of this course"),
])
def test_not_an_exercises_notebook_is_a_clear_error(tmp_path, capsys, name, content, error):
    path = tmp_path / name
    if content is None:
        nbformat.write(nbformat.read(ROOT / "ch04" / "ch04.ipynb", as_version=4), path)
    else:
        path.write_text(content)
    with pytest.raises(SystemExit) as raised:
        grade_exercises.main([str(path)])
    assert error in f"{raised.value.code} {capsys.readouterr().err}"


@pytest.mark.parametrize("out", [None, "gradebook.json", "missing/gradebook.csv"])
def test_a_class_needs_a_csv_gradebook_in_an_existing_folder(tmp_path, capsys, out):
    with pytest.raises(SystemExit):
        grade_exercises.main([str(tmp_path)] + (["--out", str(tmp_path / out)] if out else []))
    assert "needs --out GRADEBOOK.csv in an existing folder" in capsys.readouterr().err


class Agrees(int):
    """An answer of a learner's own class: not data, whatever it claims."""

    def __eq__(self, other):
        return True


def test_answers_load_as_data_only(tmp_path):
    """The isolated checks load a model with its optimizer as the chapter's and torch's classes; anything else, a
    class of the learner's or an object of torch's outside modules, optimizers and data (whose loading could run
    code), is refused with a clear message."""
    import torch

    sys.path.insert(0, str(ROOT / "ch04"))
    try:
        import gpt
    finally:
        sys.path.remove(str(ROOT / "ch04"))
    model = gpt.GPTModel(gpt.GPTConfig(vocab_size=11, context_length=4, emb_dim=8, n_heads=2, n_layers=1))
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.tensor([[1, 2]])).sum().backward()
    optimizer.step()
    path = tmp_path / "answers.pt"
    exec(grade_exercises.save_answers_code(["model", "optimizer", "{'n': 3}"], path), {"model": model,
                                                                                      "optimizer": optimizer})
    loaded, state, plain = grade_exercises.load_answers(path, ROOT / "ch04")
    assert type(loaded).__name__ == "GPTModel" and type(loaded).__module__ == "gpt" and plain == {"n": 3}
    assert state.param_groups[0]["params"][0] is next(loaded.parameters()) and len(state.state) > 0
    for answer, refused in [(Agrees(1), "test_grade_exercises.Agrees"), (torch.fx.Graph(), "torch.fx.graph.Graph")]:
        torch.save([answer], path)
        with pytest.raises(AssertionError, match=f"the answer must be plain data .* not .*{refused}"):
            grade_exercises.load_answers(path, ROOT / "ch04")
