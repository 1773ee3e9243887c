"""Under every cell committed without output, the reader learns what it shows when it runs.

A cell whose output would come from the synthetic stand-in weights (tagged ``stand-in``, see
tools/execute_notebook.py) is committed blank. A reader on GitHub then sees an empty cell, so the Markdown cell right
after it (after a run of such cells) must say what the cell shows with the real weights: it must exist, must not
open the next section (a heading), and must speak of the real run (the real weights, what the cell prints or what
you will see, or the book's published figures). Whether the description is right is for a reader to judge; this
test catches the blank cell that nothing explains.

The notebooks listed in ``DESCRIBED`` follow the rule; a notebook joins the list once every blank cell of it is
described.
"""

import json
import re

import pytest

from course_files import ROOT

DESCRIBED = ["ch05/ch05.ipynb", "ch05/exercise-solutions.ipynb", "ch06/ch06.ipynb", "ch06/exercise-solutions.ipynb",
             "ch06/bonus-lora/lora.ipynb", "ch07/ch07.ipynb", "ch07/exercise-solutions.ipynb",
             "ch07/bonus-dpo/dpo.ipynb"]
STAND_IN_TAG = "stand-in"
SPEAKS_OF_THE_REAL_RUN = re.compile(r"real weights|with the real|you will see|prints|the book", re.IGNORECASE)


def is_stand_in(cell):
    return cell["cell_type"] == "code" and STAND_IN_TAG in cell.get("metadata", {}).get("tags", [])


def undescribed(cells):
    """(first, last) indices of each run of stand-in cells that no describing Markdown cell follows."""
    found, i = [], 0
    while i < len(cells):
        if not is_stand_in(cells[i]):
            i += 1
            continue
        last = i
        while last + 1 < len(cells) and is_stand_in(cells[last + 1]):
            last += 1
        after = cells[last + 1] if last + 1 < len(cells) else None
        text = "".join(after["source"]) if after is not None and after["cell_type"] == "markdown" else ""
        if text.lstrip().startswith("#") or not SPEAKS_OF_THE_REAL_RUN.search(text):
            found.append((i, last))
        i = last + 1
    return found


@pytest.mark.parametrize("name", DESCRIBED)
def test_every_blank_cell_is_described(name):
    cells = json.loads((ROOT / name).read_text(encoding="utf-8"))["cells"]
    assert any(is_stand_in(cell) for cell in cells), f"{name} has no stand-in cells: take it off the list"
    assert undescribed(cells) == [], f"{name}: cells committed without output that nothing below describes"


def test_undescribed_cells_are_found():
    def code(tagged=True):
        return {"cell_type": "code", "source": ["x"], "metadata": {"tags": [STAND_IN_TAG] if tagged else []}}

    def markdown(text):
        return {"cell_type": "markdown", "source": [text]}

    cells = [code(), markdown("With the real weights this prints 354,823,168."),  # described
             code(), code(), markdown("The book reports a loss of 3.8."),  # a run of two, described
             code(), markdown("## 7.6 Finetuning"),  # the next section starts right away
             code(), markdown("Finally, the model is saved."),  # says what comes next, not what was shown
             code(False), code()]  # the notebook ends
    assert undescribed(cells) == [(5, 5), (7, 7), (10, 10)]
