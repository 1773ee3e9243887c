"""Give every pytest run (tests and notebooks) a mirror of synthetic GPT-2 checkpoints.

The real GPT-2 weights cannot be downloaded on the machines this course is tested on, yet chapter 5 onwards load
them with ``load_gpt2``, and nbval runs those notebooks. So at start-up this file writes small synthetic
checkpoints of all four sizes, in OpenAI's and Hugging Face's exact formats and at their canonical mirror paths
(``ch05/synthetic_gpt2.py``), into a temporary folder that is deleted when pytest ends.

The folder is *appended* to ``LLM_COURSE_MIRROR`` in ``os.environ`` rather than passed to any function, because
the notebook kernels nbval starts are separate processes that only inherit the environment. Appended, it is
consulted last: a mirror that holds the real weights (or files already downloaded) still wins. Loaders print a
"stand-in" warning whenever they load one of these checkpoints, and tests/test_notebooks_clean.py keeps such
output out of committed notebooks.

``synthetic_gpt2.py`` is imported by file path with its folder on ``sys.path`` only for the duration of the
build; the modules that import brings in are forgotten afterwards, because chapter folders reuse module names
(each has its own ``download.py`` and ``previous_chapters.py``).

Cost, measured on the 2-core development machine: about 5 s of CPU time per pytest run (importing TensorFlow,
needed to write OpenAI's format, 3.3 s; importing torch 1.2 s; writing all eight checkpoints 0.9 s).
"""

import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

CH05 = Path(__file__).resolve().parent / "ch05"
MIRROR_ENV = "LLM_COURSE_MIRROR"


def build_synthetic_gpt2_mirror(root):
    before = set(sys.modules)
    sys.path.insert(0, str(CH05))
    try:
        spec = importlib.util.spec_from_file_location("synthetic_gpt2", CH05 / "synthetic_gpt2.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.build_mirror(root)
    finally:
        sys.path.remove(str(CH05))
        for name in {p.stem for p in CH05.glob("*.py")} & (set(sys.modules) - before):
            del sys.modules[name]


def pytest_configure(config):
    root = tempfile.mkdtemp(prefix="llm-course-synthetic-gpt2-")
    config.add_cleanup(lambda: shutil.rmtree(root, ignore_errors=True))
    try:
        build_synthetic_gpt2_mirror(root)
    except Exception as e:
        raise pytest.UsageError(f"could not build the synthetic GPT-2 mirror (see conftest.py): {e!r}") from e
    environment = pytest.MonkeyPatch()
    environment.setenv(MIRROR_ENV, os.pathsep.join(filter(None, [os.environ.get(MIRROR_ENV), root])))
    config.add_cleanup(environment.undo)
