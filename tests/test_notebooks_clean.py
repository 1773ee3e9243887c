"""What a reader sees on GitHub must be honest and portable.

Every committed notebook is checked for outputs produced by synthetic stand-in weights (the loaders print a line
containing "stand-in" whenever they load one), committed error outputs, machine-local paths, hot-linked images,
Jupyter widget outputs (GitHub cannot draw them and shows their frozen text instead, e.g. a progress bar stuck at
"0/90"; the course's progress bars are plain-text tqdm) and raw carriage returns in text output (left when a
notebook is executed without tools/execute_notebook.py, which shows a progress bar's last state). Every executed
notebook must have outputs, and every code cell that draws a figure must have an image output.
"""

import ast
import json
import re

import pytest

from course_files import ROOT, course_files

NOTEBOOKS = course_files("*.ipynb")
EXECUTED = [p for p in NOTEBOOKS if p.name != "exercises.ipynb"]  # exercise templates are committed blank
WIDGET = "application/vnd.jupyter.widget-view+json"
FIGURE_CALLS = {"show", "subplots", "figure"}  # plt.<one of these>(...) makes or shows a figure
STAND_IN_TAG = "stand-in"  # cells committed without output, see tools/execute_notebook.py
HOT_LINKED_IMAGE = re.compile(r"<img[^>]+src=[\"']https?://|!\[[^\]]*\]\(https?://")
LOCAL_PATH = re.compile(r"/work/|/tmp/[\w.-]+/|/root/|/home/\w+/|[A-Z]:\\\\Users")


def problems(path):
    notebook = json.loads(path.read_text(encoding="utf-8"))
    found = ["Jupyter widget state in the notebook's metadata"] if "widgets" in notebook.get("metadata", {}) else []
    for i, cell in enumerate(notebook["cells"]):
        source = "".join(cell["source"])
        if cell["cell_type"] == "markdown" and HOT_LINKED_IMAGE.search(source):
            found.append(f"cell {i}: hot-linked image")
        for output in cell.get("outputs", []):
            text = json.dumps(output)
            if "stand-in" in text.lower():
                found.append(f"cell {i}: output produced by synthetic stand-in weights")
            if output["output_type"] == "error":
                found.append(f"cell {i}: error output {output.get('ename')}")
            if LOCAL_PATH.search(text):
                found.append(f"cell {i}: machine-local path in output")
            if WIDGET in output.get("data", {}):
                found.append(f"cell {i}: Jupyter widget output (GitHub shows only its frozen text)")
            if output["output_type"] == "stream" and "\r" in "".join(output["text"]):
                found.append(f"cell {i}: carriage return in text output (execute with tools/execute_notebook.py)")
    return found


def calls_pyplot(node):
    return any(isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr in FIGURE_CALLS
               and isinstance(n.func.value, ast.Name) and n.func.value.id == "plt" for n in ast.walk(node))


def calls_one_of(node, functions):
    return any(isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in functions
               for n in ast.walk(node))


def missing_figures(path):
    """Code cells that draw a figure but have no image output.

    A cell draws a figure if, outside its function and class definitions, it calls ``plt.show``, ``plt.subplots``
    or ``plt.figure``, or a function defined earlier in the notebook that does.
    """
    found, drawing_functions = [], set()
    for i, cell in enumerate(json.loads(path.read_text(encoding="utf-8"))["cells"]):
        if cell["cell_type"] != "code" or STAND_IN_TAG in cell.get("metadata", {}).get("tags", []):
            continue
        lines = "".join(cell["source"]).splitlines()
        tree = ast.parse("\n".join(line for line in lines if not line.lstrip().startswith(("%", "!"))))
        draws = False
        for statement in tree.body:
            if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if calls_pyplot(statement) or calls_one_of(statement, drawing_functions):
                    drawing_functions.add(statement.name)
            elif not isinstance(statement, ast.ClassDef):
                draws = draws or calls_pyplot(statement) or calls_one_of(statement, drawing_functions)
        if draws and not any(key.startswith("image/") for o in cell.get("outputs", []) for key in o.get("data", {})):
            found.append(f"cell {i}: draws a figure but has no image output")
    return found


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[str(p.relative_to(ROOT)) for p in NOTEBOOKS])
def test_notebook_outputs_are_clean(notebook):
    assert not problems(notebook), f"{notebook.relative_to(ROOT)}: {problems(notebook)}"


@pytest.mark.parametrize("notebook", EXECUTED, ids=[str(p.relative_to(ROOT)) for p in EXECUTED])
def test_notebook_is_committed_with_outputs(notebook):
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    assert any(cell.get("outputs") for cell in cells), f"{notebook.relative_to(ROOT)} has no outputs"


def test_checker_finds_stand_in_output(tmp_path):
    bad = tmp_path / "bad.ipynb"
    bad.write_text(json.dumps({"cells": [{"cell_type": "code", "source": ["x"], "outputs": [
        {"output_type": "stream", "name": "stdout", "text": ["Loaded synthetic stand-in weights\n"]}]}]}))
    assert problems(bad) == ["cell 0: output produced by synthetic stand-in weights"]


@pytest.mark.parametrize("notebook", EXECUTED, ids=[str(p.relative_to(ROOT)) for p in EXECUTED])
def test_every_figure_is_committed(notebook):
    missing = missing_figures(notebook)
    assert not missing, (f"{notebook.relative_to(ROOT)}: {missing}; execute it with tools/execute_notebook.py "
                         f"(an inherited MPLBACKEND=Agg draws nothing)")


def code_cell(source, outputs=(), tags=()):
    return {"cell_type": "code", "source": [source], "outputs": list(outputs), "metadata": {"tags": list(tags)}}


def test_checker_finds_frozen_widgets_and_raw_progress_text(tmp_path):
    bad = tmp_path / "bad.ipynb"
    bad.write_text(json.dumps({"metadata": {"widgets": {}}, "cells": [
        code_cell("train()", [{"output_type": "display_data", "metadata": {},
                               "data": {WIDGET: {"model_id": "1"}, "text/plain": ["training:   0%|  | 0/90"]}}]),
        code_cell("train()", [{"output_type": "stream", "name": "stderr",
                               "text": ["\rtraining:  50%|#  | 45/90\rtraining: 100%|## | 90/90"]}])]}))
    assert problems(bad) == ["Jupyter widget state in the notebook's metadata",
                             "cell 0: Jupyter widget output (GitHub shows only its frozen text)",
                             "cell 1: carriage return in text output (execute with tools/execute_notebook.py)"]


def test_checker_finds_figures_without_image(tmp_path):
    image = {"output_type": "display_data", "metadata": {}, "data": {"image/png": "iVBO", "text/plain": ["<Figure>"]}}
    notebook = tmp_path / "figures.ipynb"
    notebook.write_text(json.dumps({"cells": [
        code_cell("import matplotlib.pyplot as plt\n\n\ndef draw(x):\n    fig, ax = plt.subplots()\n"
                  "    ax.plot(x)\n    plt.show()\n"),  # defines a drawing function, draws nothing
        code_cell("draw([1, 2])", [image]),
        code_cell("draw([3, 4])"),  # missing: calls the drawing function
        code_cell("fig, ax = plt.subplots()\nax.plot([1])"),  # missing: makes a figure
        code_cell("%matplotlib inline\nplt.show()", tags=[STAND_IN_TAG]),  # committed without output on purpose
        code_cell("print(len([1, 2]))")]}))
    assert missing_figures(notebook) == ["cell 2: draws a figure but has no image output",
                                         "cell 3: draws a figure but has no image output"]
