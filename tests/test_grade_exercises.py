"""tools/grade_exercises.py gives each exercise the verdict its check gives, and blames the right exercise.

* Every chapter's blank template FAILs every exercise: tests/test_exercises.py grades them with this tool.
* The worked solutions: every exercise PASSes. SOLVED_CHAPTERS lists the chapters whose solutions are graded here:
  all but chapters 5 and 7, whose solutions take longest (about 2 min and 50 s on the busy 2-core development
  machine, against 10 to 35 s for the others). Chapter 6 stands for the chapters that load GPT-2. nbval runs every
  chapter's exercise-solutions.ipynb in the suite, with the template's check cells (tests/test_exercises.py keeps
  them identical), so a check that fails on a solution fails the suite there.
* A solution notebook with one plausible wrong answer: exactly that exercise FAILs, with the check's hint (through
  the command line, which also writes the JSON report and exits with status 1).
* A student's own mistakes: a cell that raises, a cell that runs past the timeout, an edited check cell, a deleted
  check cell. Each FAILs its own exercise and no other, and the grader itself does not stop; an error after the
  last exercise is listed and decides nothing.

The notebooks run in their chapter folders with the root conftest's offline environment (the chapter 5-7 ones load
the synthetic GPT-2 stand-ins and run their quick versions), as nbval runs them.
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
SOLVED_CHAPTERS = ["appendix-A", "ch02", "ch03", "ch04", "ch06"]  # ch05 and ch07: see the docstring
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


@pytest.mark.parametrize("chapter", SOLVED_CHAPTERS)
def test_solutions_pass_every_exercise(chapter):
    report = grade_exercises.grade(ROOT / chapter / "exercise-solutions.ipynb", TIMEOUT)
    assert set(statuses(report).values()) == {"PASS"}, messages(report)
    assert report["passed"] == report["total"] == len(grade_exercises.chapter_checks(ROOT / chapter))
    assert all(m.startswith("Correct") for m in messages(report).values()), messages(report)


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


def test_student_mistakes_fail_their_own_exercise_only(tmp_path):
    short_timeout = 20

    def mistakes(cells):
        # 3.1: the student "fixes" the check cell instead of the answer: the template's check runs regardless
        answer = cell_index(cells, "sa_v2 = SelfAttentionV2(")
        cells[answer].source = cells[answer].source.replace("sa_v1.W_query.T", "sa_v1.W_query.T * 2")
        check = cell_index(cells, "# CHECK\ncheck_exercise_3_1(")
        cells[check].source = "# CHECK\n# check_exercise_3_1(sa_v2, sa_v1, inputs)\nprint('Correct')"
        # 3.3: a cell of the answer raises after the answer is assigned; the check alone would pass
        answer = cell_index(cells, "gpt2_attention = ")
        cells.insert(answer + 1, nbformat.v4.new_code_cell("gpt2_attention.num_params()"))
        # 3.4: a cell runs past the per-cell timeout (an endless loop); it is interrupted and grading goes on
        answer = cell_index(cells, "with_bias = ")
        cells.insert(answer, nbformat.v4.new_code_cell("import time\n\nwhile True:\n    time.sleep(0.1)"))
        # 3.5: the check cell is deleted
        del cells[cell_index(cells, "# CHECK\ncheck_exercise_3_5(")]
        # after the last exercise: an error there is listed, and decides nothing
        cells.append(nbformat.v4.new_code_cell("1 / 0"))

    student = write_variant(tmp_path, "ch03", mistakes)
    report = grade_exercises.grade(student, short_timeout)
    assert statuses(report) == {"3.1": "FAIL", "3.2": "PASS", "3.3": "FAIL", "3.4": "FAIL", "3.5": "FAIL"}
    found = messages(report)
    assert "the two modules still give different outputs" in found["3.1"]
    assert "AttributeError" in found["3.3"] and "num_params" in found["3.3"]
    assert f"timeout of {short_timeout} s" in found["3.4"]
    assert "no '# CHECK' cell calling check_exercise_3_5" in found["3.5"]
    assert report["other_errors"] == [{"cell": len(nbformat.read(student, as_version=4).cells),
                                       "error": "ZeroDivisionError: division by zero"}]


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
