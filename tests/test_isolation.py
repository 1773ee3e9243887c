"""Every test and notebook uses its own folder's modules, also when one pytest process runs all of them.

Course folders reuse module names: each chapter and bonus folder has its own ``previous_chapters.py``. Each folder's
conftest.py (a copy of setup/conftest.py) makes the folder's own modules the ones its tests import. Checked here:

* the course modules every test module of this process reaches (through its globals, the functions and classes it
  imported, and the modules those came from) all lie in the test's folder: the folder of the nearest
  ``conftest.py`` above it;
* that check passes when pytest collects bonus folders and their chapter together, bonus folder first;
* a notebook kernel started in a folder, as nbval and tools/execute_notebook.py start it, imports that folder's
  modules.
"""

import ast
import subprocess
import sys
import types
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from course_files import ROOT, course_files, in_course_folder

# A bonus folder and its chapter define modules of the same name, and pytest collects the bonus folder first.
CLASHING_TEST_FILES = ["ch04/bonus-kv-cache/tests/test_kv_cache.py", "ch04/tests/test_gpt.py",
                       "ch05/bonus-training-extras/tests/test_training_extras.py", "ch05/tests/test_pretraining.py"]


def folder_of(test_file):
    return next(d for d in Path(test_file).resolve().parents if (d / "conftest.py").is_file())


def namespaces(value, seen):
    """The module namespaces a value leads to: a module's own, or those its functions and methods were defined in."""
    if id(value) in seen:
        return []
    seen.add(id(value))
    if isinstance(value, types.ModuleType):
        return [vars(value)]
    if isinstance(value, (staticmethod, classmethod)):
        value = value.__func__
    if isinstance(value, types.FunctionType):
        return [value.__globals__]
    if isinstance(value, type):
        return [ns for attribute in vars(value).values() for ns in namespaces(attribute, seen)]
    if isinstance(value, (list, tuple, set, frozenset)):
        return [ns for element in value for ns in namespaces(element, seen)]
    if isinstance(value, dict):
        return [ns for element in value.values() for ns in namespaces(element, seen)]
    return namespaces(type(value), seen)


def course_modules_reached(module):
    """Files of the course modules that ``module`` reaches through its globals, directly or via other ones."""
    found, seen, pending = set(), set(), [vars(module)]
    while pending:
        namespace = pending.pop()
        if id(namespace) in seen:
            continue
        seen.add(id(namespace))
        if namespace is not vars(module):
            file = namespace.get("__file__")
            if not file or not in_course_folder(Path(file).resolve()):
                continue
            found.add(Path(file).resolve())
        for value in list(namespace.values()):
            pending += namespaces(value, seen)
    return found


def imported_test_modules():
    """Test modules of course folders. The repository-wide tests in tests/ are left out: they load several folders'
    modules on purpose (tests/test_exercise_checks.py imports each folder's checks in isolation)."""
    return [m for m in list(sys.modules.values()) if Path(getattr(m, "__file__", None) or "").name.startswith("test_")
            and Path(m.__file__).resolve().is_relative_to(ROOT)
            and not Path(m.__file__).resolve().is_relative_to(ROOT / "tests")]


def test_every_test_module_uses_its_own_folders_modules():
    problems = {}
    for module in imported_test_modules():
        folder = folder_of(module.__file__)
        foreign = sorted(str(f.relative_to(ROOT)) for f in course_modules_reached(module) if f.parent != folder)
        if foreign:
            problems[str(Path(module.__file__).resolve().relative_to(ROOT))] = foreign
    assert not problems, f"test modules that use modules of another folder: {problems}"


def test_folders_collected_together_keep_their_own_modules():
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", *CLASHING_TEST_FILES,
                             str(Path(__file__).relative_to(ROOT)), "-k", "uses_its_own_folders_modules"],
                            cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0 and "1 passed" in result.stdout, result.stdout[-4000:] + result.stderr[-2000:]


NOTEBOOK_FOLDERS = sorted({nb.parent for nb in course_files("*.ipynb")
                           if any(p.name != "conftest.py" for p in nb.parent.glob("*.py"))})


@pytest.mark.parametrize("folder", NOTEBOOK_FOLDERS, ids=[str(f.relative_to(ROOT)) for f in NOTEBOOK_FOLDERS])
def test_notebook_kernels_import_their_folders_modules(folder):
    names = sorted(p.stem for p in folder.glob("*.py") if p.name != "conftest.py")
    code = (f"import importlib.util\n"
            f"print({{name: getattr(importlib.util.find_spec(name), 'origin', None) for name in {names!r}}})")
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(folder)}}).execute()
    origins = ast.literal_eval(notebook.cells[0].outputs[0].text)
    foreign = {name: origin for name, origin in origins.items()
               if origin is None or Path(origin).resolve().parent != folder}
    assert not foreign, f"a notebook kernel in {folder.relative_to(ROOT)} imports modules of another folder: {foreign}"
