"""The exercise convention, checked for every folder that has exercises.

A folder's ``exercises.ipynb`` is the student template: answer cells left blank and check cells whose first
line is ``# CHECK``. Its ``exercise-solutions.ipynb`` has the same check cells, in the same order, with the
answers filled in (nbval runs it like every other notebook, so a failing check there fails the suite).
Here we prove the checks can fail: graded by tools/grade_exercises.py, the blank template must fail every exercise
with its check's hint (an ``AssertionError``'s message, not another error). tests/test_exercise_checks.py goes
further: every check must reject plausible wrong answers with its hint and accept a correct one. And every exercise
can be done on its own, in any order: its worked solution uses only names from the set-up cells and its own section.
"""

import re
import subprocess
import sys

import nbformat
import pytest

from course_files import ROOT, course_files

sys.path.insert(0, str(ROOT / "tools"))
import grade_exercises  # noqa: E402  (tools/ is not a package)

TEMPLATES = course_files("exercises.ipynb")
SOLUTIONS = course_files("exercise-solutions.ipynb")
CHECK_MARK = "# CHECK"
EXERCISE_HEADING = "## Exercise"
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


def exercise_programs(solutions):
    """(exercise heading, Python source) per exercise: the set-up cells followed by that exercise's code cells only."""
    setup, exercises = [], []
    for cell in nbformat.read(solutions, as_version=4).cells:
        if cell.cell_type == "markdown" and cell.source.startswith(EXERCISE_HEADING):
            exercises.append((cell.source.splitlines()[0], []))
        elif cell.cell_type == "code":
            code = "\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!")))
            (exercises[-1][1] if exercises else setup).append(code)
    return [(heading, "\n\n".join(setup + cells) + "\n") for heading, cells in exercises]


def undefined_names(programs, folder):
    """ruff's undefined-name findings (F821) in each program, keyed by its index."""
    for i, (_, source) in enumerate(programs):
        (folder / f"exercise_{i}.py").write_text(source, encoding="utf-8")
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--isolated", "--select", "F821",
                             "--output-format", "concise", str(folder)], capture_output=True, text=True)
    found = {}
    for line in result.stdout.splitlines():
        match = re.search(r"exercise_(\d+)\.py:\d+:\d+: F821 (.*)", line)
        if match:
            found.setdefault(int(match.group(1)), []).append(match.group(2))
    return found


@pytest.mark.parametrize("solutions", SOLUTIONS, ids=ids(SOLUTIONS))
def test_every_exercise_can_be_done_on_its_own(solutions, tmp_path):
    programs = exercise_programs(solutions)
    assert programs, f"{solutions} has no '{EXERCISE_HEADING}' headings"
    found = undefined_names(programs, tmp_path)
    assert not found, (f"{solutions.relative_to(ROOT)}: these exercises use names that only another exercise defines "
                       f"(import or define them in the set-up cell or in the exercise itself): "
                       f"{ {programs[i][0]: names for i, names in found.items()} }")


def test_an_exercise_that_needs_another_one_is_found(tmp_path):
    notebook = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("import math"),
        nbformat.v4.new_markdown_cell("## Exercise 1.1: a helper"),
        nbformat.v4.new_code_cell("def helper(x):\n    return math.sqrt(x)\n\n\nanswer_1 = helper(4)"),
        nbformat.v4.new_markdown_cell("## Exercise 1.2: uses it"),
        nbformat.v4.new_code_cell("%matplotlib inline\nanswer_2 = helper(9) + math.pi")])
    path = tmp_path / "exercise-solutions.ipynb"
    nbformat.write(notebook, path)
    programs = exercise_programs(path)
    assert [heading for heading, _ in programs] == ["## Exercise 1.1: a helper", "## Exercise 1.2: uses it"]
    folder = tmp_path / "programs"
    folder.mkdir()
    assert undefined_names(programs, folder) == {1: ["Undefined name `helper`"]}
