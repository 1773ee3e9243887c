"""Give the pytest runs that need GPT-2 weights a mirror of synthetic checkpoints, and keep them out of the course.

The real GPT-2 weights cannot be downloaded on the machines this course is tested on, yet chapter 5 onwards load
them with ``load_gpt2``, and nbval runs those notebooks. So when the collected tests include a folder that loads
GPT-2 (one holding ``gpt_download.py``) or a test marked ``synthetic_gpt2``, this file writes small synthetic
checkpoints of all four sizes, in OpenAI's and Hugging Face's exact formats and at their canonical mirror paths
(``ch05/synthetic_gpt2.py``), into a temporary folder that is deleted when pytest ends. Other runs
(``python -m pytest ch02/``) skip this.

The folder is *appended* to ``LLM_COURSE_MIRROR`` in ``os.environ`` rather than passed to any function, because
the notebook kernels nbval starts are separate processes that only inherit the environment. Appended, it is
consulted last: a mirror that holds the real weights still wins. ``LLM_COURSE_GPT2_DIR`` points the loaders'
download folder at a temporary folder as well, so no stand-in checkpoint is ever copied to where a learner's real
download goes (``chNN/gpt2/``); at the end of the run any checkpoint marked as synthetic found in the course
folders fails the run. Loaders print a "stand-in" warning whenever they load a synthetic checkpoint, and
tests/test_notebooks_clean.py keeps such output out of committed notebooks.

The checkpoints are written by a child process (``synthetic_gpt2.py --mirror``): OpenAI's format is written by
TensorFlow, which must never be imported into this process (TensorFlow loaded before PyTorch's compiler stack
crashes it).
"""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent
CH05 = ROOT / "ch05"
MIRROR_ENV = "LLM_COURSE_MIRROR"
MODELS_DIR_ENV = "LLM_COURSE_GPT2_DIR"
QUICK_RUN_ENV = "LLM_COURSE_QUICK_RUN"
STAND_IN_KEY = "synthetic_stand_in"
SKIPPED_DIRS = {".git", ".venv", "venv", "site-packages", "node_modules", "build", "dist"}
LEAKED = pytest.StashKey()


def loads_gpt2(path):
    """Whether ``path`` lies in a course folder that loads GPT-2 weights (it or a parent holds gpt_download.py)."""
    folder = Path(path).resolve().parent
    while folder != ROOT and ROOT in folder.parents:
        if (folder / "gpt_download.py").is_file():
            return True
        folder = folder.parent
    return False


def stand_in_checkpoints(root=ROOT):
    """Checkpoint metadata files marked as synthetic anywhere in the course folders."""
    found = []
    for directory, subdirectories, files in os.walk(root):
        subdirectories[:] = [d for d in subdirectories if d not in SKIPPED_DIRS]
        for name in set(files) & {"hparams.json", "config.json"}:
            path = Path(directory, name)
            if STAND_IN_KEY in path.read_text(encoding="utf-8", errors="replace"):
                found.append(path)
    return found


def pytest_configure(config):
    config.addinivalue_line("markers", "synthetic_gpt2: the test loads GPT-2 weights (synthetic stand-ins here)")
    # Notebooks whose full run is too long for the suite (finetuning, generating many responses) read this and
    # run a documented shorter version; their committed outputs come from the full run (tools/execute_notebook.py).
    environment = pytest.MonkeyPatch()
    environment.setenv(QUICK_RUN_ENV, "1")
    config.add_cleanup(environment.undo)


def pytest_collection_modifyitems(session, config, items):
    if not any(loads_gpt2(item.path) or item.get_closest_marker("synthetic_gpt2") for item in items):
        return
    scratch = tempfile.mkdtemp(prefix="llm-course-synthetic-gpt2-")
    config.add_cleanup(lambda: shutil.rmtree(scratch, ignore_errors=True))
    mirror = Path(scratch, "mirror")
    result = subprocess.run([sys.executable, str(CH05 / "synthetic_gpt2.py"), "--mirror", str(mirror)],
                            cwd=CH05, capture_output=True, text=True)
    if result.returncode != 0:
        raise pytest.UsageError(f"could not build the synthetic GPT-2 mirror (see conftest.py):\n{result.stderr}")
    environment = pytest.MonkeyPatch()
    environment.setenv(MIRROR_ENV, os.pathsep.join(filter(None, [os.environ.get(MIRROR_ENV), str(mirror)])))
    environment.setenv(MODELS_DIR_ENV, str(Path(scratch, "downloads")))
    config.add_cleanup(environment.undo)


def pytest_sessionfinish(session, exitstatus):
    leaked = stand_in_checkpoints()
    if leaked:
        session.config.stash[LEAKED] = leaked
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    leaked = config.stash.get(LEAKED, [])
    if leaked:
        terminalreporter.write_line("Synthetic stand-in GPT-2 checkpoints were left in course folders, where a "
                                    f"learner's real download would find them: {[str(p) for p in leaked]}", red=True)

