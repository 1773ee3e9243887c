"""The committed diagrams are what tools/diagrams.py draws, every one is used, and the notebooks carry the same PNG.

Redrawing a diagram and comparing pixels (not bytes: PNG encoders and zlib versions differ) catches a figure that
was edited by hand or whose code changed without `python tools/diagrams.py` being run. The toy numbers the diagrams
compute with must still be the ones the notebooks use.
"""

import base64
import importlib.util
import json
import os
import re

import pytest
from matplotlib.testing.compare import compare_images

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


@pytest.mark.parametrize("figure", FIGURES, ids=IDS)
def test_committed_figure_is_what_the_code_draws(figure, tmp_path):
    drawn = tmp_path / f"{figure.name}.png"
    diagrams.render(figure, drawn)
    assert figure.path.is_file(), f"{figure.path.relative_to(ROOT)} missing: run python tools/diagrams.py"
    problem = compare_images(str(figure.path), str(drawn), tol=TOLERANCE)
    assert problem is None, f"{figure.path.relative_to(ROOT)} differs from its code, run tools/diagrams.py: {problem}"


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
