"""The exercise convention, checked for every folder that has exercises.

A folder's ``exercises.ipynb`` is the student template: answer cells left blank and check cells whose first
line is ``# CHECK``. Its ``exercise-solutions.ipynb`` has the same check cells, in the same order, with the
answers filled in (nbval runs it like every other notebook, so a failing check there fails the suite).
Here we prove the checks can fail: graded by tools/grade_exercises.py, the blank template must fail every exercise
with its check's hint (an ``AssertionError``'s message, not another error). tests/test_exercise_checks.py goes
further: every check must reject plausible wrong answers with its hint and accept a correct one.
"""

import re
import sys

import nbformat
import pytest

from course_files import ROOT, course_files

sys.path.insert(0, str(ROOT / "tools"))
import grade_exercises  # noqa: E402  (tools/ is not a package)

TEMPLATES = course_files("exercises.ipynb")
CHECK_MARK = "# CHECK"
CRASH = re.compile(r"\w+(Error|Exception|Interrupt): ")  # how the grader reports an error that is not a check's hint


def check_cells(notebook):
    return [cell for cell in notebook.cells if cell.cell_type == "code"
            and cell.source.lstrip().startswith(CHECK_MARK + "\n")]


def ids(paths):
    return [str(p.parent.relative_to(ROOT)) for p in paths]


@pytest.mark.parametrize("template", TEMPLATES, ids=ids(TEMPLATES))
def test_check_cells_match_solutions(template):
    solutions = template.with_name("exercise-solutions.ipynb")
    assert solutions.is_file(), f"{template} has no exercise-solutions.ipynb beside it"
    expected = [c.source for c in check_cells(nbformat.read(template, as_version=4))]
    actual = [c.source for c in check_cells(nbformat.read(solutions, as_version=4))]
    assert expected, f"{template} has no '{CHECK_MARK}' cells"
    assert actual == expected, f"the check cells of {solutions.name} differ from those of {template.name}"


@pytest.mark.parametrize("template", TEMPLATES, ids=ids(TEMPLATES))
def test_every_check_fails_on_the_blank_template(template):
    notebook = nbformat.read(template, as_version=4)
    assert not any(cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), \
        f"{template} is a student template and must be committed without outputs"
    report = grade_exercises.grade(template, timeout=900)
    expected = [grade_exercises.exercise_id(c) for c in grade_exercises.chapter_checks(template.parent)]
    assert [e["exercise"] for e in report["exercises"]] == expected
    for exercise in report["exercises"]:
        assert exercise["status"] == "FAIL", f"check {exercise['check']} passed on the blank template"
        assert exercise["message"] and not CRASH.match(exercise["message"]), \
            f"check {exercise['check']} failed with an error instead of a hint: {exercise['message']}"
    assert report["other_errors"] == [], f"the set-up cells of {template} raise errors: {report['other_errors']}"
