"""Deliberate copies must never drift.

Chapter folders are self-contained, so they carry copies of earlier code. Three kinds of copy are checked:

* whole files that every folder carries unchanged (``download.py``, ``conftest.py``): byte-identical to ``setup/``;
* ``previous_chapters.py``-style files: each definition is AST-identical to the definition of the same name in
  one of its source modules;
* a chapter's standalone module and its notebook: each definition in the module is AST-identical to the last
  definition of the same name in the notebook.

Chapters register their files in the tables below as they land.
"""

import ast
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Files that are copied unchanged into course folders, and their canonical source.
IDENTICAL_FILES = {
    "download.py": "setup/download.py",
    "conftest.py": "setup/conftest.py",
}

# copy file -> the source modules its definitions come from
COPIES = {
    "ch04/previous_chapters.py": ["ch03/attention.py"],
    "ch05/previous_chapters.py": ["ch02/text_data.py", "ch03/attention.py", "ch04/gpt.py"],
    "ch03/bonus-efficient-attention/previous_chapters.py": ["ch03/attention.py"],
    "ch04/bonus-kv-cache/previous_chapters.py": ["ch03/attention.py", "ch04/gpt.py"],
    "ch04/bonus-flops/previous_chapters.py": ["ch03/attention.py", "ch04/gpt.py"],
    "ch05/bonus-training-extras/previous_chapters.py": ["ch02/text_data.py", "ch03/attention.py", "ch04/gpt.py",
                                                        "ch05/pretraining.py"],
}

# standalone module -> the notebook whose code it collects
MODULE_NOTEBOOKS = {
    "ch02/text_data.py": "ch02/ch02.ipynb",
    "ch03/attention.py": "ch03/ch03.ipynb",
    "ch04/gpt.py": "ch04/ch04.ipynb",
    "appendix-A/pytorch_basics.py": "appendix-A/appendix-A.ipynb",
    "ch02/bonus-bpe-from-scratch/bpe.py": "ch02/bonus-bpe-from-scratch/bpe-from-scratch.ipynb",
    "ch05/pretraining.py": "ch05/ch05.ipynb",
    "ch05/bonus-training-extras/training_extras.py": "ch05/bonus-training-extras/training-extras.ipynb",
}


def definitions(source, origin):
    """Map each top-level function/class/assignment name in ``source`` to its AST dump (later ones win)."""
    tree = ast.parse(source, filename=str(origin))
    found = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            found[node.name] = ast.dump(node)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Name) and target.id.isupper():
                    found[target.id] = ast.dump(node.value)
    return found


def module_definitions(path):
    return definitions(path.read_text(encoding="utf-8"), path)


def notebook_definitions(path):
    """Definitions in a notebook's code cells, skipping IPython-only lines (magics, shell escapes)."""
    found = {}
    for i, cell in enumerate(json.loads(path.read_text(encoding="utf-8"))["cells"]):
        if cell["cell_type"] != "code":
            continue
        lines = "".join(cell["source"]).splitlines()
        code = "\n".join(line for line in lines if not line.lstrip().startswith(("%", "!")))
        found.update(definitions(code, f"{path} cell {i}"))
    return found


def test_registered_files_exist():
    missing = [p for p in [*COPIES, *MODULE_NOTEBOOKS, *sum(COPIES.values(), []), *MODULE_NOTEBOOKS.values()]
               if not (ROOT / p).is_file()]
    assert not missing, f"registered in tests/test_consistency.py but missing: {missing}"


@pytest.mark.parametrize("name", sorted(IDENTICAL_FILES))
def test_identical_file_copies(name):
    source = ROOT / IDENTICAL_FILES[name]
    copies = [p for p in ROOT.rglob(name) if p != source and ".ipynb_checkpoints" not in p.parts
              and p.parent != ROOT]
    drifted = [str(p.relative_to(ROOT)) for p in copies if p.read_bytes() != source.read_bytes()]
    assert not drifted, f"these copies differ from {IDENTICAL_FILES[name]}: {drifted}"


@pytest.mark.parametrize("copy", sorted(COPIES))
def test_copied_definitions_match_their_source(copy):
    sources = {}
    for source in COPIES[copy]:
        sources.update({name: (source, dump) for name, dump in module_definitions(ROOT / source).items()})
    for name, dump in module_definitions(ROOT / copy).items():
        assert name in sources, f"{copy}: {name} is not defined in any of {COPIES[copy]}"
        assert dump == sources[name][1], f"{copy}: {name} differs from its source in {sources[name][0]}"


@pytest.mark.parametrize("module", sorted(MODULE_NOTEBOOKS))
def test_module_matches_notebook(module):
    notebook = MODULE_NOTEBOOKS[module]
    in_notebook = notebook_definitions(ROOT / notebook)
    for name, dump in module_definitions(ROOT / module).items():
        assert name in in_notebook, f"{module}: {name} is not defined in {notebook}"
        assert dump == in_notebook[name], f"{module}: {name} differs from its last definition in {notebook}"


def test_checker_detects_drift():
    """The comparison is sensitive to a one-token change and blind to comments and formatting."""
    original = "def f(x):\n    return x + 1\n"
    assert definitions(original, "a") == definitions("def f(x):  # note\n    return (x + 1)\n", "b")
    assert definitions(original, "a") != definitions("def f(x):\n    return x + 2\n", "c")
