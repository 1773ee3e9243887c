"""The exercise convention, checked for every folder that has exercises.

A folder's ``exercises.ipynb`` is the student template: answer cells left blank and check cells whose first
line is ``# CHECK``. Its ``exercise-solutions.ipynb`` has the same check cells, in the same order, with the
answers filled in (nbval runs it like every other notebook, so a failing check there fails the suite).
Here we prove the checks can fail: executing the blank template must make every check cell raise
``AssertionError``. tests/test_exercise_checks.py goes further: every check must reject plausible wrong answers with
its hint and accept a correct one.
"""

import nbformat
import pytest
from nbclient import NotebookClient

from course_files import ROOT, course_files

TEMPLATES = course_files("exercises.ipynb")
CHECK_MARK = "# CHECK"


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
    NotebookClient(notebook, timeout=900, allow_errors=True,
                   resources={"metadata": {"path": str(template.parent)}}).execute()
    for cell in check_cells(notebook):
        errors = [o for o in cell.outputs if o.output_type == "error"]
        first_line = cell.source.splitlines()[1] if len(cell.source.splitlines()) > 1 else cell.source
        assert errors, f"check passed on the blank template: {first_line!r}"
        assert errors[0].ename == "AssertionError", \
            f"check {first_line!r} failed with {errors[0].ename}: {errors[0].evalue} (expected AssertionError)"
