"""The committed diagrams are what tools/diagrams.py draws, every one is used, and the notebooks carry the same PNG.

A diagram is redrawn and compared with the committed PNG in two ways, to catch a figure edited by hand or whose code
changed without `python tools/diagrams.py` being run:

* what it shows (``diagrams.describe``: every text, box, line and arrow with its position, stored in the PNG), on
  every matplotlib version: a version that draws glyphs differently draws the same diagram;
* its pixels (not bytes: PNG encoders and zlib versions differ), only where matplotlib is the version the committed
  file was drawn with, since pixels differ between versions.

The toy numbers the diagrams compute with must still be the ones the notebooks use.
"""

import base64
import importlib.util
import json
import os
import re

import matplotlib
import pytest
from matplotlib.patches import FancyBboxPatch
from matplotlib.testing.compare import compare_images
from matplotlib.text import Text

from course_files import ROOT, course_files

spec = importlib.util.spec_from_file_location("diagrams", ROOT / "tools" / "diagrams.py")
diagrams = importlib.util.module_from_spec(spec)
spec.loader.exec_module(diagrams)

FIGURES = diagrams.FIGURES
IDS = [f"{f.folder}/{f.name}" for f in FIGURES]
TOLERANCE = 0.3  # RMS difference (0-255 scale): room for anti-aliasing noise, not for a changed label or bar
DATA_URI = re.compile(r"\(data:image/png;base64,([A-Za-z0-9+/=]+)\)")


def notebook_cells(figure):
    return json.loads((ROOT / figure.folder / figure.notebook).read_text(encoding="utf-8"))["cells"]


def first_difference(committed, drawn):
    """The first element that differs between two ``describe()`` lists, as a message; None if they are equal."""
    for index, (old, new) in enumerate(zip(committed, drawn)):
        if old != new:
            return f"element {index}: committed {old}, drawn now {new}"
    if len(committed) != len(drawn):
        return f"the committed file shows {len(committed)} elements, the code draws {len(drawn)}"
    return None


def differences(committed_path, drawn_path):
    """What differs between a committed diagram and a fresh drawing: a list of messages, empty if nothing does."""
    committed_version, committed = diagrams.recorded(committed_path)
    version, drawn = diagrams.recorded(drawn_path)
    if committed is None:
        return ["the committed file holds no description of what it shows"]
    found = [first_difference(committed, drawn)]
    if committed_version == version:  # same rasterizer: the pixels must agree too
        found.append(compare_images(str(committed_path), str(drawn_path), tol=TOLERANCE))
    return [problem for problem in found if problem]


@pytest.mark.parametrize("figure", FIGURES, ids=IDS)
def test_committed_figure_is_what_the_code_draws(figure, tmp_path):
    drawn = tmp_path / f"{figure.name}.png"
    diagrams.render(figure, drawn)
    assert figure.path.is_file(), f"{figure.path.relative_to(ROOT)} missing: run python tools/diagrams.py"
    problems = differences(figure.path, drawn)
    assert not problems, f"{figure.path.relative_to(ROOT)} differs from its code, run tools/diagrams.py: {problems}"


MULTI_HEAD = next(f for f in FIGURES if f.name == "multi-head")


def edited(change):
    """The multi-head diagram with ``change(fig)`` applied after drawing it."""
    def draw():
        fig = MULTI_HEAD.draw()
        change(fig)
        return fig
    return diagrams.Figure(MULTI_HEAD.name, MULTI_HEAD.folder, draw, MULTI_HEAD.caption)


def relabel(fig):
    text = next(t for t in fig.findobj(Text) if "12 heads" in t.get_text())
    text.set_text(text.get_text().replace("12 heads", "16 heads"))


def move_box(fig):
    patch = fig.findobj(FancyBboxPatch)[0]
    patch.set_x(patch.get_x() + 0.1)


def renumber(fig):
    text = next(t for t in fig.findobj(Text) if t.get_text() == "(batch, 12, tokens, 64)")
    text.set_text("(batch, 12, tokens, 65)")


@pytest.mark.parametrize("change", [relabel, move_box, renumber])
def test_an_edited_diagram_differs_on_every_matplotlib_version(change, tmp_path):
    """A changed label, a moved box or a changed number is found by the description alone, whatever the version."""
    drawn = tmp_path / "edited.png"
    diagrams.render(edited(change), drawn)
    _, committed = diagrams.recorded(MULTI_HEAD.path)
    assert first_difference(committed, diagrams.recorded(drawn)[1]) is not None
    assert differences(MULTI_HEAD.path, drawn)


def test_another_rasterizer_draws_the_same_diagram(tmp_path):
    """Glyphs drawn differently (as another matplotlib or FreeType version does) change pixels, not the description.

    Hinting and anti-aliasing settings stand in for a version change here; the course was also checked by running
    this file with matplotlib 3.10 (Python 3.10) against files drawn with 3.11.
    """
    drawn = tmp_path / "other.png"
    with matplotlib.rc_context({"text.hinting": "none", "text.antialiased": False}):
        diagrams.render(MULTI_HEAD, drawn)
    assert compare_images(str(MULTI_HEAD.path), str(drawn), tol=TOLERANCE) is not None  # the pixels differ
    assert first_difference(diagrams.recorded(MULTI_HEAD.path)[1], diagrams.recorded(drawn)[1]) is None


@pytest.mark.parametrize("figure", [f for f in FIGURES if f.notebook], ids=[i for f, i in zip(FIGURES, IDS)
                                                                             if f.notebook])
def test_notebook_shows_the_committed_file(figure):
    cells = [c for c in notebook_cells(figure) if c.get("id") == diagrams.cell_id(figure)]
    assert len(cells) == 1, f"{figure.notebook} has {len(cells)} cells with id {diagrams.cell_id(figure)}"
    source = "".join(cells[0]["source"])
    embedded = DATA_URI.findall(source)
    assert len(embedded) == 1, f"{figure.notebook}: the figure cell should hold exactly one PNG data URI"
    assert base64.b64decode(embedded[0]) == figure.path.read_bytes(), (
        f"{figure.notebook} shows an older {figure.path.name}: run python tools/diagrams.py")


def test_every_figure_file_is_used():
    known = {f.path for f in FIGURES}
    committed = {p for p in course_files("*.png") if p.parent.name == "figures"}
    assert committed - known == set(), f"figure files no diagram draws: {sorted(committed - known)}"
    markdown = {p: p.read_text(encoding="utf-8") for p in course_files("*.md")}
    for figure in FIGURES:
        if figure.notebook:
            continue  # its cell is checked above
        readers = [p for p, text in markdown.items()
                   if f"({os.path.relpath(figure.path, p.parent)})".replace(os.sep, "/") in text]
        assert readers, f"{figure.path.relative_to(ROOT)} is shown by no notebook and no markdown file"


def test_toy_numbers_are_the_notebooks():
    ch05 = "".join("".join(c["source"]) for c in json.loads((ROOT / "ch05/ch05.ipynb").read_text())["cells"])
    assert f"toy_logits = torch.tensor({diagrams.CH05_LOGITS})" in ch05
    assert f"toy_vocab = {diagrams.CH05_VOCAB}".replace("'", '"') in ch05
    ch06 = (ROOT / "ch06/ch06.ipynb").read_text(encoding="utf-8")
    assert f'tokenizer.encode(\\"{diagrams.CH06_MESSAGE}\\")' in ch06
    ch02 = (ROOT / "ch02/ch02.ipynb").read_text(encoding="utf-8")
    assert all(word.strip() in ch02 for word in diagrams.CH02_BPE_WORDS)
    ch04 = "".join("".join(c["source"]) for c in json.loads((ROOT / "ch04/ch04.ipynb").read_text())["cells"])
    assert f'prompt = "{diagrams.CH04_PROMPT}"' in ch04
    assert "torch.manual_seed(123)\nexamples = torch.randn(2, 5)" in ch04  # the layer-norm example's inputs
    assert "nn.Sequential(nn.Linear(5, 6), nn.ReLU())" in ch04
    ch05_code = "".join("".join(c["source"]) for c in json.loads((ROOT / "ch05/ch05.ipynb").read_text())["cells"])
    assert f"sentences = {diagrams.CH05_SENTENCES}".replace("'", '"') in ch05_code
    appendix = "".join("".join(c["source"]) for c in
                       json.loads((ROOT / "appendix-A/appendix-A.ipynb").read_text())["cells"])
    assert f"labels = torch.tensor({diagrams.APPENDIX_A_LABELS})" in appendix
    assert "DataLoader(tiny, batch_size=2, shuffle=True, drop_last=drop_last," in appendix
    ch03 = "".join("".join(c["source"]) for c in json.loads((ROOT / "ch03/ch03.ipynb").read_text())["cells"])
    for word, row in zip(diagrams.CH03_WORDS, diagrams.CH03_INPUTS):
        assert re.search(re.escape(f"[{row[0]:.2f}, {row[1]:.2f}, {row[2]:.2f}]") + r"\]?,?\s+# " + word, ch03), word


MAIN_NOTEBOOKS = ["appendix-A/appendix-A.ipynb"] + [f"ch0{n}/ch0{n}.ipynb" for n in range(2, 8)]
MIN_DIAGRAMS = 6
MARKDOWN_IMAGE = re.compile(r"!\[[^\]]*\]\((?:data:image/|[^)\s]+\.(?:png|svg|jpe?g|gif)\b)")


def diagrams_shown(cells):
    """Figures a reader sees: image outputs of code cells and images embedded in markdown cells."""
    outputs = sum(1 for c in cells if c["cell_type"] == "code" for o in c.get("outputs", [])
                  if {"image/png", "image/svg+xml", "image/jpeg"} & set(o.get("data", {})))
    embedded = sum(len(MARKDOWN_IMAGE.findall("".join(c["source"]))) for c in cells if c["cell_type"] == "markdown")
    return outputs + embedded


@pytest.mark.parametrize("notebook", MAIN_NOTEBOOKS)
def test_every_main_notebook_shows_enough_diagrams(notebook):
    cells = json.loads((ROOT / notebook).read_text(encoding="utf-8"))["cells"]
    assert diagrams_shown(cells) >= MIN_DIAGRAMS, (
        f"{notebook} shows {diagrams_shown(cells)} diagrams (figure outputs and embedded images); a main notebook "
        f"needs at least {MIN_DIAGRAMS}: add one to tools/diagrams.py")


def test_diagram_count_sees_outputs_and_embedded_images():
    cells = [{"cell_type": "code", "outputs": [{"data": {"image/png": "x", "text/plain": "<Figure>"}},
                                               {"text": "a printed line"}]},
             {"cell_type": "markdown", "source": ["![a](data:image/png;base64,AAAA)\n", "![b](figures/b.png) ",
                                                  "[a link](page.md)"]},
             {"cell_type": "code", "outputs": []}]
    assert diagrams_shown(cells) == 3


def test_placing_a_figure_needs_an_unambiguous_anchor(tmp_path, monkeypatch):
    notebook = tmp_path / "nb.ipynb"
    notebook.write_text(json.dumps({"cells": [{"cell_type": "markdown", "id": "a", "metadata": {},
                                               "source": ["## 1.1 Start\n", "text"]}], "metadata": {},
                                    "nbformat": 4, "nbformat_minor": 5}))
    monkeypatch.setattr(diagrams, "ROOT", tmp_path)
    figure = diagrams.Figure("demo", ".", None, "A demo", "nb.ipynb", "## 1.1 Start")
    assert diagrams.place(figure, b"png")  # inserted after the anchor
    assert not diagrams.place(figure, b"png")  # a second run changes nothing
    cells = json.loads(notebook.read_text())["cells"]
    assert [c["id"] for c in cells] == ["a", "figure-demo"]
    with pytest.raises(ValueError, match="0 markdown cells have a line starting with '## 9.9'"):
        diagrams.place(diagrams.Figure("other", ".", None, "x", "nb.ipynb", "## 9.9"), b"png")
