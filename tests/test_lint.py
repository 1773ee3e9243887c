"""The course's code passes its linter: ruff with the repository's ruff.toml (line length, unused imports and
names, undefined names, import order), over modules, tests and notebooks alike."""

import subprocess
import sys

from course_files import ROOT


def ruff(*arguments):
    command = [sys.executable, "-m", "ruff", "check", "--no-cache", "--config", str(ROOT / "ruff.toml"),
               "--output-format", "concise", *map(str, arguments)]
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT)


def test_the_course_passes_ruff():
    result = ruff(ROOT)
    assert result.returncode == 0, f"ruff found problems (fix them, many with `ruff check --fix`):\n{result.stdout}"


def test_ruff_reports_an_unused_import_and_a_long_line(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("import os\n\nx = '" + "a" * 130 + "'\n")
    result = ruff(sample)
    assert result.returncode == 1
    assert "F401" in result.stdout and "E501" in result.stdout
