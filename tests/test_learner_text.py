"""What learners read speaks of the course only, not of how it was made.

Every Markdown file of the repository (READMEs, INTRODUCTION, setup guides) and every Markdown cell of every notebook
is searched for words that belong to the course's making rather than to its subject: tracker references ("issue
14"), work sessions, the people who built it ("the lead", "engineers"), and claims backed only by a private
experiment ("a probe made while planning this folder"). A number in learner-facing text is either shown by the
notebook it is in or credited to a public source; these words are the usual sign that it is neither.

A cited link to another project's tracker (``[owner/repo#123](https://github.com/owner/repo/issues/123)``) is a
legitimate source and is not searched: external Markdown links are removed before searching.
"""

import json
import re

import pytest

from course_files import ROOT, course_files

PROCESS_WORDS = {
    "a tracker reference": r"\b(?:issue|ticket|PR)s?\s+#?\d+|\b(?:issue|ticket)s?\s+that\s+planned\b",
    "a work session": r"\b(?:this|that|earlier|previous|later|next)\s+sessions?\b",
    "the people who built the course": r"\bthe\s+lead\b|\blead's\b|\bengineers?\b|\bworktrees?\b",
    "a private experiment": r"\bprobes?\s+(?:made|run|done)\b|\bwhile\s+planning\b|\bplann(?:ed|ing)\s+this\b",
    "who measured what": r"\bwe\s+measured\b",
}
PATTERN = re.compile("|".join(f"(?P<g{i}>{p})" for i, p in enumerate(PROCESS_WORDS.values())), re.IGNORECASE)
EXTERNAL_LINK = re.compile(r"\[[^\]]*\]\(https?://[^)\s]*\)")
LEARNER_FILES = course_files("*.md") + course_files("*.ipynb")


def process_words(text):
    """(kind, matched words, line number) for every process word in ``text``, external links left out."""
    text = EXTERNAL_LINK.sub(lambda link: re.sub(r"[^\n]", " ", link.group()), text)  # keeps line numbers
    kinds = list(PROCESS_WORDS)
    return [(kinds[int(m.lastgroup[1:])], " ".join(m.group().split()), text.count("\n", 0, m.start()) + 1)
            for m in PATTERN.finditer(text)]


def problems(path):
    """Process words in a Markdown file, or in a notebook's Markdown cells, each with where it is."""
    if path.suffix == ".md":
        return [f"line {line}: {kind} ({words!r})" for kind, words, line in process_words(path.read_text("utf-8"))]
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return [f"cell {i}: {kind} ({words!r})" for i, cell in enumerate(cells) if cell["cell_type"] == "markdown"
            for kind, words, _ in process_words("".join(cell["source"]))]


@pytest.mark.parametrize("path", LEARNER_FILES, ids=[str(p.relative_to(ROOT)) for p in LEARNER_FILES])
def test_learner_text_speaks_of_the_course_only(path):
    found = problems(path)
    assert not found, f"{path.relative_to(ROOT)}: {found}"


def test_checker_finds_process_words_and_spares_citations(tmp_path):
    notebook = tmp_path / "nb.ipynb"
    notebook.write_text(json.dumps({"cells": [
        {"cell_type": "markdown", "source": ["The real figures will come later; the course's issue 14 tracks it."]},
        {"cell_type": "code", "source": ["probe = make_model()  # code is not searched\n"], "outputs": []},
        {"cell_type": "markdown", "source": ["A probe made while planning this folder reached 98 %,\n",
                                             "with several engineers' jobs running, for the lead's measurements."]},
        {"cell_type": "markdown", "source": ["See [pytorch/pytorch#1234](https://github.com/pytorch/pytorch/issues/1234)"
                                             " and a linear probe of the frozen features; the issue is the padding."]},
    ]}))
    assert problems(notebook) == [
        "cell 0: a tracker reference ('issue 14')",
        "cell 2: a private experiment ('probe made')",
        "cell 2: a private experiment ('while planning')",
        "cell 2: the people who built the course ('engineers')",
        "cell 2: the people who built the course ('the lead')"]
    readme = tmp_path / "README.md"
    readme.write_text("Files in `/content` exist only for the session.\nTimes from an earlier\nsession; we measured"
                      " them.\n", encoding="utf-8")
    assert problems(readme) == ["line 2: a work session ('earlier session')",
                                "line 3: who measured what ('we measured')"]
