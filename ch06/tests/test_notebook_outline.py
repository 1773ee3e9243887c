"""The chapter notebook reaches its machine learning early: plumbing lives in classification.py.

Downloading, checksums, atomic writes and line-by-line validation are imported from the module, so the notebook's
first half is about the data and the model's change. Measured in lines of cell source from the first section on (the
title, the generated Colab cell and the imports left out; an embedded diagram counts as one line), section 6.5,
where the model gets its classification head, must begin within the first 40 % of the chapter; with the plumbing
developed in the notebook it began at 42 %.
"""

from pathlib import Path

import nbformat
import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "ch06.ipynb"
FIRST_SECTION = "## "
MODEL_CHANGE = "## 6.5 "
PLUMBING = ["replace_atomically", "download_sms_spam", "read_sms_collection"]


def cell_lines(cell):
    return 1 if cell.source.startswith("![") else len(cell.source.splitlines())


def heading_index(cells, heading):
    return next(i for i, c in enumerate(cells) if c.cell_type == "markdown" and c.source.startswith(heading))


def share_before(cells, heading):
    """The share of the chapter's source lines (from its first section on) that come before ``heading``."""
    first, index = heading_index(cells, FIRST_SECTION), heading_index(cells, heading)
    return sum(map(cell_lines, cells[first:index])) / sum(map(cell_lines, cells[first:]))


def test_the_model_change_comes_in_the_first_half():
    assert share_before(nbformat.read(NOTEBOOK, as_version=4).cells, MODEL_CHANGE) <= 0.40


@pytest.mark.parametrize("name", PLUMBING)
def test_plumbing_is_imported_not_developed(name):
    code = [c.source for c in nbformat.read(NOTEBOOK, as_version=4).cells if c.cell_type == "code"]
    assert not any(f"def {name}(" in source for source in code), f"ch06.ipynb defines {name}: import it instead"
    assert any("from classification import" in source and name in source for source in code)


def test_share_counts_lines_and_diagrams_as_one():
    cells = [nbformat.v4.new_markdown_cell("# Title\n\nWhat it builds."), nbformat.v4.new_code_cell("import os"),
             nbformat.v4.new_markdown_cell("## 6.4 x\n" + "text\n" * 8), nbformat.v4.new_markdown_cell("![d](data:x)"),
             nbformat.v4.new_markdown_cell("## 6.5 y"), nbformat.v4.new_code_cell("a = 1\nb = 2\nc = 3\nd = 4\ne = 5")]
    assert share_before(cells, MODEL_CHANGE) == 10 / 16
