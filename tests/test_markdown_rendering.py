"""Commands in the course's markdown render as code blocks that a reader can copy.

Every markdown file of the repository and every markdown cell of its notebooks is rendered with ``markdown-it-py``
(a CommonMark parser, the standard GitHub and JupyterLab follow; it comes with Jupyter) and the result is checked:

* a line that is a shell command (``python …``, ``pip install``, ``cd …``, ``export X=…``) must not end up in a
  paragraph, where it renders as running prose. This happens when a command block is not separated from the text
  before it, or when only some of its lines are indented;
* command blocks are fenced (```` ```bash ````), not indented by four spaces: an indented block silently turns into
  prose as soon as one of its lines loses its indentation, and it carries no language for highlighting;
* every code fence is closed: an unclosed fence swallows the rest of the document.
"""

import json
import re

import pytest
from markdown_it import MarkdownIt

from course_files import ROOT, course_files

COMMAND_WORDS = r"python3?|pip3?|cd|git|jupyter|export|uv|conda|bash|source|ollama|pytest|torchrun|docker|wget|curl"
# A command word at the start of a line (after optional VAR=value settings), and the word that follows it.
COMMAND = re.compile(rf"^\s*(?:[A-Z_][A-Z0-9_]*=\S*\s+)*(?:{COMMAND_WORDS})\s+(\S+)")
SUBCOMMANDS = {"install", "lab", "notebook", "nbconvert", "clone", "pull", "serve", "run", "activate", "create", "env",
               "sync", "venv", "checkout", "init", "list"}
MARKDOWN = MarkdownIt("commonmark").enable("table")


def is_command(line):
    """True for a line that reads as a shell command, not as prose that happens to start with "python" or "conda".

    The word after the command must look like an argument (an option, a path, a file, a setting) or be one of the
    usual subcommands: "python -m pytest" and "conda create" are commands, "conda environments are" is prose.
    """
    match = COMMAND.match(line)
    return bool(match) and (re.search(r"[-./=~$]", match.group(1)) is not None or match.group(1) in SUBCOMMANDS)


def rendering_problems(text):
    """(line number, problem) for every command that does not render as a fenced code block, and unclosed fences."""
    lines = text.split("\n")
    found = []
    for token in MARKDOWN.parse(text):
        if token.map is None:
            continue
        first = token.map[0] + 1
        if token.type == "inline":
            found += [(first + k, f"a command renders as prose: {line.strip()!r}")
                      for k, line in enumerate(token.content.split("\n")) if is_command(line)]
        elif token.type == "code_block" and any(is_command(line) for line in token.content.split("\n")):
            found.append((first, "a command block indented by four spaces: fence it with ```bash ... ```"))
        elif token.type == "fence":
            closing = lines[token.map[1] - 1].strip() if token.map[1] - 1 < len(lines) else ""
            if token.map[1] - token.map[0] < 2 or not closing.startswith(token.markup[0] * len(token.markup)):
                found.append((first, "a code fence that is never closed: it swallows the rest of the text"))
    return found


def markdown_texts():
    """(label, text) for every markdown file and every markdown cell of every notebook of the repository."""
    for path in course_files("*.md"):
        yield str(path.relative_to(ROOT)), path.read_text(encoding="utf-8")
    for path in course_files("*.ipynb"):
        for i, cell in enumerate(json.loads(path.read_text(encoding="utf-8"))["cells"]):
            if cell["cell_type"] == "markdown":
                yield f"{path.relative_to(ROOT)}, cell {i}", "".join(cell["source"])


def test_commands_render_as_fenced_code_blocks():
    problems = [f"{label}, line {line}: {problem}"
                for label, text in markdown_texts() for line, problem in rendering_problems(text)]
    assert not problems, "markdown that renders badly:\n" + "\n".join(problems)


@pytest.mark.parametrize("text, expected", [
    # the mistake this test was written for: the first line of an indented block lost its indentation
    ("**Evaluating.**\n\npython evaluate.py a.json\n    python evaluate.py b.json\n",
     ["a command renders as prose", "a command renders as prose"]),
    ("Run it:\n    python -m pytest ch07/\n", ["a command renders as prose"]),  # an indented block needs a blank line
    ("From the root:\n\n    python -m pytest ch07/\n", ["indented by four spaces"]),
    ("```bash\ncd ch07\npython -m pytest tests\n", ["never closed"]),
    ("```bash\ncd ch07 && python -m pytest tests\n```\n\nThen `pip install x` inline is fine.\n", []),
    ("A conda environment is the supported route; python code reads top to bottom.\n", []),
    ("| command | what |\n|---|---|\n| `python x.py` | runs x |\n", []),
])
def test_rendering_problems_are_found(text, expected):
    found = [problem for _, problem in rendering_problems(text)]
    assert len(found) == len(expected) and all(e in f for e, f in zip(expected, found)), found
