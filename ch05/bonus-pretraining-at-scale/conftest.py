"""Let this folder's tests import its modules by plain name (``from gpt import GPTModel``), and only its own.

Every course folder with modules and tests has an identical copy of this file. Folders reuse module names (each
chapter and bonus folder has its own ``previous_chapters.py``), and Python caches a module by name in
``sys.modules``: in one pytest process the first folder to import ``previous_chapters`` would serve all the others.

So this folder's modules can be imported only during this folder's turn: while pytest imports one of its test
modules (collection) and while it runs one of its tests. For that turn the folder goes first on ``sys.path`` and
its modules (imported once, kept here between turns) go into ``sys.modules``; afterwards both are taken out again,
so no other folder can pick them up. A test file belongs to the folder of the nearest ``conftest.py`` above it.
Notebooks need none of this: their kernels start in the notebook's folder.
"""

import sys
from contextlib import contextmanager
from functools import cache
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
MODULE_NAMES = {p.stem for p in HERE.glob("*.py")} - {"conftest"}
modules_between_turns = {}


@cache
def belongs_here(test_file):
    folder = next((d for d in Path(test_file).resolve().parents if (d / "conftest.py").is_file()), None)
    return folder == HERE


@contextmanager
def this_folders_turn():
    for name in MODULE_NAMES:
        sys.modules.pop(name, None)
    sys.modules.update(modules_between_turns)
    sys.path.insert(0, str(HERE))
    try:
        yield
    finally:
        sys.path.remove(str(HERE))
        for name in MODULE_NAMES:
            module = sys.modules.pop(name, None)
            if module is not None and Path(getattr(module, "__file__", None) or "").parent == HERE:
                modules_between_turns[name] = module


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector):
    if isinstance(collector, pytest.Module) and belongs_here(collector.path):
        with this_folders_turn():
            return (yield)
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item):
    if isinstance(item, pytest.Function) and belongs_here(item.path):
        with this_folders_turn():
            return (yield)
    return (yield)
