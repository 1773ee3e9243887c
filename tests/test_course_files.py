"""The repository-wide tests see the course's files and nothing a learner's set-up puts beside them."""

from course_files import course_files, in_course_folder


def test_virtual_environments_and_build_folders_are_skipped(tmp_path):
    for folder in ["ch01", "ch01/bonus-x", ".venv/lib/site-packages/pip", "venv-any-name/lib", "conda-env/lib",
                   "build/lib", "dist", "pkg.egg-info", "site-packages/pip", ".git", "ch01/.ipynb_checkpoints",
                   "ch01/__pycache__"]:
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)
        (tmp_path / folder / "download.py").write_text("")
    (tmp_path / ".venv" / "pyvenv.cfg").write_text("")
    (tmp_path / "venv-any-name" / "pyvenv.cfg").write_text("")
    (tmp_path / "conda-env" / "conda-meta").mkdir()
    (tmp_path / "conda-env" / "conda-meta" / "history").write_text("")

    found = course_files("download.py", tmp_path)
    assert [str(p.relative_to(tmp_path)) for p in found] == ["ch01/bonus-x/download.py", "ch01/download.py"]


def test_tests_and_tools_are_not_course_folders(tmp_path):
    assert in_course_folder(tmp_path / "ch01" / "gpt.py", tmp_path)
    assert in_course_folder(tmp_path / "setup" / "download.py", tmp_path)
    assert not in_course_folder(tmp_path / "conftest.py", tmp_path)
    assert not in_course_folder(tmp_path / "tests" / "course_files.py", tmp_path)
    assert not in_course_folder(tmp_path / "tools" / "execute_notebook.py", tmp_path)
    (tmp_path / "ch01" / ".venv").mkdir(parents=True)
    (tmp_path / "ch01" / ".venv" / "pyvenv.cfg").write_text("")
    assert not in_course_folder(tmp_path / "ch01" / ".venv" / "lib" / "torch.py", tmp_path)
    assert not in_course_folder(tmp_path.parent / "elsewhere.py", tmp_path)
