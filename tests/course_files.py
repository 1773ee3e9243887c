"""Which files are the course's, for the tests that check every notebook, module or copy.

The repository is walked, skipping folders that may sit inside it without being course material: virtual
environments (setup/python-setup.md creates ``.venv`` in the repository root; any folder holding ``pyvenv.cfg`` or
``conda-meta/history`` is one, whatever its name), hidden folders (``.git``, ``.ipynb_checkpoints``), build output
and caches. ``tests/`` and ``tools/`` hold the repository's own checks and tools: they are walked, but they are not
course folders.
"""

import os
from fnmatch import fnmatch
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIPPED_FOLDERS = ["build", "dist", "site-packages", "node_modules", "__pycache__", "*.egg-info"]
NOT_COURSE_FOLDERS = {"tests", "tools"}


def is_skipped(folder):
    """True for folders that are not course material: hidden, build output, caches, virtual environments."""
    return (folder.name.startswith(".") or any(fnmatch(folder.name, pattern) for pattern in SKIPPED_FOLDERS)
            or (folder / "pyvenv.cfg").is_file() or (folder / "conda-meta" / "history").is_file())


def course_files(pattern, root=ROOT):
    """Every file under ``root`` whose name matches the glob ``pattern`` (e.g. ``"*.ipynb"``), sorted."""
    found = []
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = [name for name in subfolders if not is_skipped(Path(folder, name))]
        found += [Path(folder, name) for name in files if fnmatch(name, pattern)]
    return sorted(found)


def in_course_folder(path, root=ROOT):
    """True for files inside a course folder (a chapter, appendix-A, setup, or a folder below one of those)."""
    if not Path(path).is_relative_to(root):
        return False
    parts = Path(path).relative_to(root).parts
    return (len(parts) > 1 and parts[0] not in NOT_COURSE_FOLDERS
            and not any(is_skipped(root.joinpath(*parts[:i])) for i in range(1, len(parts))))
