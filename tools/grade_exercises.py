"""Grade a student's exercises notebook: run it and report, per exercise, whether its check passes (for instructors).

    python tools/grade_exercises.py STUDENT.ipynb [--json REPORT.json] [--timeout SECONDS]

The chapter is recognised from the check functions the notebook calls (``check_exercise_5_1`` belongs to ch05), so
the file may have any name and sit anywhere. It runs in a fresh kernel in that chapter's folder (where the
chapter's modules and ``exercise_checks.py`` import), offline, in the environment of tools/execute_notebook.py.

The exercises are those the chapter defines: one per ``check_exercise_*`` function of its ``exercise_checks.py``.
Cells run one at a time and the run continues after an error, so every exercise gets a verdict:

* PASS: its ``# CHECK`` cell ran without error and none of the exercise's own cells (those after the previous
  ``# CHECK`` cell) raised an error;
* FAIL otherwise, with the check's hint, the error a cell raised, a cell that exceeded the per-cell timeout, or a
  check cell missing from the notebook or never reached (the kernel died).

A check cell runs the source of the chapter's template, not the student's copy, so an edited check cell does not
count. The student's code runs unsandboxed, as it would in Jupyter: grade only notebooks you would run yourself.
Errors in cells outside every exercise (the set-up cells, extra cells at the end) are listed but decide nothing:
the exercises that depend on them fail on their own. The exit status is 1 if any exercise fails.
"""

import argparse
import ast
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import DeadKernelError

from execute_notebook import ROOT, course_environment

CHECK_MARK = "# CHECK"
CHECK_PREFIX = "check_exercise_"
CHECK_CALL = re.compile(r"\b(" + CHECK_PREFIX + r"\w+)\s*\(")
EXERCISE_HEADING = "## Exercise"


def chapter_checks(folder):
    """The names of the check functions a chapter's exercise_checks.py defines, in order."""
    tree = ast.parse((folder / "exercise_checks.py").read_text(encoding="utf-8"))
    return [node.name for node in tree.body
            if isinstance(node, ast.FunctionDef) and node.name.startswith(CHECK_PREFIX)]


def exercise_id(check):
    """'check_exercise_5_1' -> '5.1'."""
    return check.removeprefix(CHECK_PREFIX).replace("_", ".")


def is_check_cell(cell):
    return cell.cell_type == "code" and cell.source.lstrip().startswith(CHECK_MARK + "\n")


def called_check(cell):
    """The check function a ``# CHECK`` cell calls (None for any other cell)."""
    found = CHECK_CALL.findall(cell.source) if is_check_cell(cell) else []
    return found[0] if found else None


def read_notebook(path):
    try:
        return nbformat.read(path, as_version=4)
    except (OSError, ValueError, nbformat.ValidationError) as error:
        raise SystemExit(f"{path}: cannot read it as a Jupyter notebook ({error})") from None


def find_chapter(path, notebook):
    """The chapter folder whose check functions the notebook's check cells call."""
    called = {called_check(cell) for cell in notebook.cells} - {None}
    for folder in sorted(p.parent for p in ROOT.glob("*/exercise_checks.py")):
        if called & set(chapter_checks(folder)):
            return folder
    raise SystemExit(f"{path} is not an exercises notebook of this course: none of its '{CHECK_MARK}' cells calls "
                     f"a {CHECK_PREFIX}* function of a chapter's exercise_checks.py")


def template_check_sources(folder):
    """Check function name -> the source of the template's check cell that calls it."""
    template = read_notebook(folder / "exercises.ipynb")
    return {called_check(cell): cell.source for cell in template.cells if called_check(cell)}


def error_text(output):
    """An error output in one line: a failed check's hint as it is, any other error with its exception name."""
    message = " ".join(output.evalue.split())
    if output.ename == "AssertionError" and message:
        return message
    return f"{output.ename}: {message}" if message else output.ename


def run_cells(notebook, folder, timeout, env):
    """Execute the code cells in order, continuing after errors; cell index -> error text or None (ran cleanly).

    Cells missing from the result were never run (the kernel died before them).
    """
    client = NotebookClient(notebook, timeout=timeout, interrupt_on_timeout=True, allow_errors=True,
                            kernel_name="python3", resources={"metadata": {"path": str(folder)}})
    outcomes = {}
    with client.setup_kernel(env={**os.environ, **env}):
        for index, cell in enumerate(notebook.cells):
            if cell.cell_type != "code":
                continue
            start = time.monotonic()
            try:
                client.execute_cell(cell, index)
            except DeadKernelError:
                outcomes[index] = "the kernel died while running this cell (out of memory?)"
                break
            errors = [o for o in cell.outputs if o.output_type == "error"]
            if errors and time.monotonic() - start >= timeout:
                outcomes[index] = f"stopped after the per-cell timeout of {timeout:g} s"
            else:
                outcomes[index] = error_text(errors[0]) if errors else None
    return outcomes


def printed_text(cell):
    return "".join(o.text for o in cell.outputs if o.output_type == "stream" and o.name == "stdout").strip()


def grade(path, timeout=900, env=None):
    """Run the notebook at ``path`` and return the report (see ``format_report`` and the JSON written by main)."""
    path = Path(path)
    notebook = read_notebook(path)
    folder = find_chapter(path, notebook)
    checks = chapter_checks(folder)
    canonical = template_check_sources(folder)
    check_cells = {}  # check name -> index of the student's check cell
    for index, cell in enumerate(notebook.cells):
        check = called_check(cell)
        if check in canonical and check not in check_cells:
            cell.source = canonical[check]
            check_cells[check] = index
    outcomes = run_cells(notebook, folder, timeout, env or {})

    exercise_of = {}  # cell index -> check name, for the cells of each exercise (after the previous check cell)
    headings = [i for i, c in enumerate(notebook.cells)
                if c.cell_type == "markdown" and c.source.lstrip().startswith(EXERCISE_HEADING)]
    start = headings[0] if headings else 0
    for check, index in sorted(check_cells.items(), key=lambda item: item[1]):
        exercise_of.update({i: check for i in range(start, index + 1)})
        start = index + 1

    exercises = []
    for check in checks:
        index = check_cells.get(check)
        own_errors = [f"cell {i + 1}: {outcomes[i]}" for i in sorted(exercise_of)
                      if exercise_of[i] == check and i != index and outcomes.get(i)]
        if index is None:
            message = f"the notebook has no '{CHECK_MARK}' cell calling {check} (the template's check cells " \
                      "must stay in place)"
        elif index not in outcomes:
            message = "never run: the kernel died before this exercise's check cell"
        else:
            problems = list(own_errors)
            if outcomes[index]:
                problems.append(f"check: {outcomes[index]}" if own_errors else outcomes[index])
            message = "; ".join(problems) or printed_text(notebook.cells[index])
        passed = index in outcomes and not outcomes[index] and not own_errors
        exercises.append({"exercise": exercise_id(check), "check": check, "status": "PASS" if passed else "FAIL",
                          "message": message})
    other_errors = [{"cell": i + 1, "error": error} for i, error in sorted(outcomes.items())
                    if error and i not in exercise_of]
    return {"notebook": str(path), "chapter": folder.name, "passed": sum(e["status"] == "PASS" for e in exercises),
            "total": len(exercises), "exercises": exercises, "other_errors": other_errors}


def format_report(report):
    lines = [f"{report['notebook']} (chapter {report['chapter']}): "
             f"{report['passed']} of {report['total']} exercises pass"]
    width = max(len(e["exercise"]) for e in report["exercises"])
    lines += [f"  {e['exercise']:<{width}}  {e['status']}  {e['message']}".rstrip() for e in report["exercises"]]
    lines += [f"  error outside the exercises, cell {e['cell']}: {e['error']}" for e in report["other_errors"]]
    return "\n".join(lines)


def write_json(report, path):
    """Write the report as JSON, atomically (a temporary file renamed into place)."""
    path = Path(path)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".part", delete=False, encoding="utf-8") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    os.replace(f.name, path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("notebook", type=Path, help="a student's exercises notebook (any chapter)")
    parser.add_argument("--json", type=Path, help="also write the report to this JSON file")
    parser.add_argument("--timeout", type=int, default=900, help="seconds each cell may run (default: 900)")
    args = parser.parse_args(argv)
    if args.notebook.suffix != ".ipynb" or not args.notebook.is_file():
        parser.error(f"{args.notebook} is not a notebook file (.ipynb)")
    find_chapter(args.notebook, read_notebook(args.notebook))  # a clear error before any set-up work
    with tempfile.TemporaryDirectory(prefix="llm-course-grade-") as scratch:
        report = grade(args.notebook, args.timeout, course_environment(scratch))
    print(format_report(report))
    if args.json:
        write_json(report, args.json)
    return 0 if report["passed"] == report["total"] else 1


if __name__ == "__main__":
    sys.exit(main())
