"""Deliberate copies must never drift, and no copy needs to be listed anywhere to be checked.

Chapter folders are self-contained, so they carry copies of earlier code. The copies are found by walking the
course's files (tests/course_files.py skips virtual environments, hidden and build folders) and checked:

* whole files copied unchanged into the folders that need them (``download.py``, ``conftest.py`` and
  ``benchmarking.py`` from ``setup/``, chapter 5's GPT-2 loader, chapter 6's LoRA module, the GPT-to-Llama bonus's
  ``llama.py``, the KV-cache bonus's ``kv_cache.py``): each is byte-identical to its source, listed in
  IDENTICAL_FILES (the sources themselves are course modules like any other);
* ``previous_chapters.py`` files: each definition is AST-identical to the definition of the same name in a course
  module of another folder (found by name), and is used by its own folder: a copy carries only what its folder
  needs;
* a standalone module and a notebook of its folder (not the exercise notebooks) that define a name in common are
  a pair: every definition in the module is AST-identical to the last definition of the same name in the notebook,
  or the notebook imports it from the module, or something it imports needs it (plumbing a notebook uses without
  developing it lives in the module only);
* any other function or class defined identically in two course modules is an unregistered copy, which nothing
  would keep from drifting, and fails the suite.
"""

import ast
import json
from collections import defaultdict

import pytest

from course_files import ROOT, course_files, in_course_folder

# Files that are copied unchanged into course folders, and their canonical source.
IDENTICAL_FILES = {
    "download.py": ROOT / "setup" / "download.py",
    "conftest.py": ROOT / "setup" / "conftest.py",
    "benchmarking.py": ROOT / "setup" / "benchmarking.py",
    "gpt_download.py": ROOT / "ch05" / "gpt_download.py",
    "tf_checkpoint.py": ROOT / "ch05" / "tf_checkpoint.py",
    "lora.py": ROOT / "ch06" / "bonus-lora" / "lora.py",
    "llama.py": ROOT / "ch05" / "bonus-gpt-to-llama" / "llama.py",
    "kv_cache.py": ROOT / "ch04" / "bonus-kv-cache" / "kv_cache.py",
    "metrics.py": ROOT / "ch07" / "metrics.py",
    "llm_judge.py": ROOT / "ch07" / "llm_judge.py",
}
COPY_FILE = "previous_chapters.py"
EXERCISE_NOTEBOOKS = {"exercises.ipynb", "exercise-solutions.ipynb"}


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


def notebook_code(path):
    """The code cells of a notebook as one Python source, without IPython-only lines (magics, shell escapes)."""
    cells = [cell for cell in json.loads(path.read_text(encoding="utf-8"))["cells"] if cell["cell_type"] == "code"]
    return "\n".join(line for cell in cells for line in "".join(cell["source"]).splitlines()
                     if not line.lstrip().startswith(("%", "!")))


def file_definitions(path):
    code = notebook_code(path) if path.suffix == ".ipynb" else path.read_text(encoding="utf-8")
    return definitions(code, path)


def course_modules(root=ROOT):
    """Course code that is nobody's copy: modules in course folders, without tests, copies and copied files."""
    return [p for p in course_files("*.py", root) if in_course_folder(p, root) and not p.name.startswith("test_")
            and p.name != COPY_FILE and IDENTICAL_FILES.get(p.name, p) == p]


def label(path, root=ROOT):
    return str(path.relative_to(root))


def copy_problems(copy, modules, root=ROOT):
    """Definitions of ``copy`` that match no same-named definition in a module of another folder."""
    elsewhere = {label(m, root): file_definitions(m) for m in modules if m.parent != copy.parent}
    found = []
    for name, dump in file_definitions(copy).items():
        sources = {module: defined[name] for module, defined in elsewhere.items() if name in defined}
        if not sources:
            found.append(f"{name} is not defined in any course module of another folder")
        elif dump not in sources.values():
            found.append(f"{name} differs from its source in {' / '.join(sources)}")
    return found


def users_of(copy):
    """The files of the copy's own folder that may use it: its modules, notebooks and tests."""
    folder = copy.parent
    return [p for pattern in ["*.py", "*.ipynb"] for p in [*folder.glob(pattern), *folder.glob(f"tests/{pattern}")]
            if p != copy]


def unused_definitions(copy):
    """Definitions of ``copy`` that no file of its folder imports, directly or through another definition."""
    module_name = copy.stem
    wanted = set()
    for path in users_of(copy):
        code = notebook_code(path) if path.suffix == ".ipynb" else path.read_text(encoding="utf-8")
        for node in ast.walk(ast.parse(code, filename=str(path))):
            if isinstance(node, ast.ImportFrom) and node.module == module_name:
                wanted |= {alias.name for alias in node.names}
            elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                  and node.value.id == module_name):
                wanted.add(node.attr)
    return sorted(set(file_definitions(copy)) - needed_definitions(copy, wanted))


def needed_definitions(module, names):
    """The top-level definitions of ``module`` that ``names`` need: themselves and what they use, transitively."""
    nodes = {}
    for node in ast.parse(module.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            nodes[node.name] = node
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in (node.targets if isinstance(node, ast.Assign) else [node.target]):
                if isinstance(target, ast.Name):
                    nodes[target.id] = node
    used, pending = set(), [name for name in names if name in nodes]
    while pending:
        name = pending.pop()
        if name not in used:
            used.add(name)
            pending += [n.id for n in ast.walk(nodes[name]) if isinstance(n, ast.Name) and n.id in nodes]
    return used


def module_notebook_pairs(modules, notebooks):
    """(module, notebook) pairs in one folder that define at least one name in common."""
    return [(m, nb) for nb in notebooks if nb.name not in EXERCISE_NOTEBOOKS
            for m in modules if m.parent == nb.parent and set(file_definitions(m)) & set(file_definitions(nb))]


def imported_from(module, notebook):
    """The names ``notebook`` imports from ``module`` (``from module import name``)."""
    tree = ast.parse(notebook_code(notebook), filename=str(notebook))
    return {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module == module.stem
            for alias in node.names}


def pair_problems(module, notebook):
    in_notebook = file_definitions(notebook)
    imported = needed_definitions(module, imported_from(module, notebook))
    return [f"{name} is not defined in {notebook.name}" if name not in in_notebook
            else f"{name} differs from its last definition in {notebook.name}"
            for name, dump in file_definitions(module).items()
            if in_notebook.get(name) != dump and not (name in imported and name not in in_notebook)]


def unregistered_copies(modules, root=ROOT):
    """Functions and classes defined identically in more than one course module."""
    places = defaultdict(list)
    for module in modules:
        tree = ast.parse(module.read_text(encoding="utf-8"), filename=str(module))
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                places[node.name, ast.dump(node)].append(label(module, root))
    return [f"{name} is defined identically in {' and '.join(where)}: keep one, or move the copy into a "
            f"{COPY_FILE} so that a test keeps it identical" for (name, _), where in places.items() if len(where) > 1]


MODULES = course_modules()
COPIES = [p for p in course_files(COPY_FILE) if in_course_folder(p)]
PAIRS = module_notebook_pairs(MODULES, course_files("*.ipynb"))


@pytest.mark.parametrize("name", sorted(IDENTICAL_FILES))
def test_identical_file_copies(name):
    source = IDENTICAL_FILES[name]
    copies = [p for p in course_files(name) if in_course_folder(p) and p != source]
    assert copies, f"no copies of {name} found"
    drifted = [label(p) for p in copies if p.read_bytes() != source.read_bytes()]
    assert not drifted, f"these copies differ from {label(source)}: {drifted}"


@pytest.mark.parametrize("copy", COPIES, ids=[label(p) for p in COPIES])
def test_copied_definitions_match_their_source(copy):
    problems = copy_problems(copy, MODULES)
    assert not problems, f"{label(copy)}: {problems}"


@pytest.mark.parametrize("copy", COPIES, ids=[label(p) for p in COPIES])
def test_copies_hold_only_what_their_folder_uses(copy):
    unused = unused_definitions(copy)
    assert not unused, f"{label(copy)}: nothing in {label(copy.parent)}/ uses {unused}; remove them"


@pytest.mark.parametrize("module, notebook", PAIRS, ids=[f"{label(m)}-{nb.name}" for m, nb in PAIRS])
def test_module_matches_notebook(module, notebook):
    problems = pair_problems(module, notebook)
    assert not problems, f"{label(module)}: {problems}"


def test_no_unregistered_copies():
    problems = unregistered_copies(MODULES)
    assert not problems, problems


def test_checker_detects_drift():
    """The comparison is sensitive to a one-token change and blind to comments and formatting."""
    original = "def f(x):\n    return x + 1\n"
    assert definitions(original, "a") == definitions("def f(x):  # note\n    return (x + 1)\n", "b")
    assert definitions(original, "a") != definitions("def f(x):\n    return x + 2\n", "c")


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def notebook(*sources):
    return json.dumps({"cells": [{"cell_type": "code", "source": [s], "outputs": []} for s in sources]})


def test_copies_and_pairs_are_found_without_a_list(tmp_path):
    """A course laid out in a temporary folder: every kind of copy is found, and each kind of mistake reported."""
    write(tmp_path / "ch01" / "text.py", "def tokenize(s):\n    return s.split()\n\n\ndef count(s):\n    return 0\n"
          "\n\nURL = 'https://example.com'\n\n\ndef fetch():\n    return URL\n")
    write(tmp_path / "ch01" / "ch01.ipynb",
          notebook("from text import fetch\n\n\ndef tokenize(s):\n    return s.split()\n"))  # fetch, URL: imported
    write(tmp_path / "ch01" / "exercise-solutions.ipynb", notebook("def count(s):\n    return 1\n"))
    copy = write(tmp_path / "ch02" / COPY_FILE, "def tokenize(s):\n    return s.split(' ')\n\n\n"
                 "def count(s):\n    return 0\n\n\ndef extra():\n    pass\n")
    write(tmp_path / "ch02" / "model.py", "from previous_chapters import tokenize\n")
    write(tmp_path / "ch02" / "ch02.ipynb", notebook("import previous_chapters\nprevious_chapters.count('')\n"))
    write(tmp_path / "ch03" / "helpers.py", "def count(s):\n    return 0\n")
    write(tmp_path / ".venv" / "lib" / "text.py", "def count(s):\n    return 0\n")
    write(tmp_path / ".venv" / "pyvenv.cfg", "")

    modules = course_modules(tmp_path)
    assert [label(m, tmp_path) for m in modules] == ["ch01/text.py", "ch02/model.py", "ch03/helpers.py"]
    assert copy_problems(copy, modules, tmp_path) == [
        "tokenize differs from its source in ch01/text.py",
        "extra is not defined in any course module of another folder"]
    assert unused_definitions(copy) == ["extra"]
    pairs = module_notebook_pairs(modules, course_files("*.ipynb", tmp_path))
    assert [(label(m, tmp_path), nb.name) for m, nb in pairs] == [("ch01/text.py", "ch01.ipynb")]
    assert pair_problems(*pairs[0]) == ["count is not defined in ch01.ipynb"]
    assert unregistered_copies(modules, tmp_path) == [
        f"count is defined identically in ch01/text.py and ch03/helpers.py: keep one, or move the copy into a "
        f"{COPY_FILE} so that a test keeps it identical"]
