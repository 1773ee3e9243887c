"""tools/grade_exercises.py grades a class of adversarial chapter 4 submissions and cannot be fooled by them.

One class, graded through the command line (``grade_exercises.py SUBMISSIONS_DIR --out gradebook.csv``), holds the
worked solutions, the blank template and one notebook per way to cheat or break the grader:

* redefining a check function or patching the ``exercise_checks`` module in the kernel (the issue's one-line bypass
  among them), editing a check cell to print "Correct" or "PASS", deleting a check cell;
* an answer object whose ``__eq__`` always agrees, builtins the check uses replaced, a check made to raise
  ``SystemExit``;
* writing into the chapter folder (appending a check to ``exercise_checks.py``, emptying ``gpt.py``, a new file),
  and a process left running when the notebook ends;
* a loop of subprocesses and an endless loop (the per-cell timeout), an endless loop that ignores the interrupt
  (the notebook's wall clock);
* a 2 GB allocation (the memory limit), ``sys.exit``, a kernel killed by SIGKILL;
* a notebook of another chapter, a corrupt .ipynb, an empty file.

The expected gradebook is asserted cell by cell, with the message of each verdict; the chapter folder is
byte-identical before and after; no process the submissions started survives; a second run grades only the
notebook that changed. The submissions run in parallel (two at a time) with short limits: 30 s per cell, 90 s per
notebook, 2 GB of private memory per process (a chapter 4 kernel needs under 1 GB).
"""

import csv
import hashlib
import json
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import grade_exercises  # noqa: E402  (tools/ is not a package)

CH04 = ROOT / "ch04"
TIMEOUT, WALL_CLOCK, MEMORY_GB = 30, 90, 2
SLEEPER = "1234.5"  # the argument of the `sleep` processes a submission starts: none may survive the grading


def cell_index(cells, start):
    found = [i for i, c in enumerate(cells) if c.cell_type == "code" and c.source.startswith(start)]
    assert len(found) == 1, f"expected one cell starting with {start!r}, found {len(found)}: update this test"
    return found[0]


def code(source):
    return nbformat.v4.new_code_cell(source)


def redefines_check(cells):
    i = cell_index(cells, "torch.manual_seed(123)\nblock = ")  # the bypass, word for word
    cells[i].source = "ff_params = 1\natt_params = 2\ncheck_exercise_4_1 = lambda *a, **k: None"
    i = cell_index(cells, "gpt2_sizes = {}")
    cells[i].source += ("\ngpt2_sizes = {name: (1, 1.0) for name in gpt2_sizes}\n"
                        "import sys\nimport exercise_checks\n\n"
                        "def fake(*args):\n    print('Correct')\n\n\n"
                        "exercise_checks.check_exercise_4_2 = fake\n"
                        "sys.modules['exercise_checks'].check_exercise_4_2 = fake\n"
                        "check_exercise_4_2 = fake")
    i = cell_index(cells, "@dataclass(frozen=True)")
    cells[i].source += ("\nconfig_class, model_class = GPTConfig, GPTModel\n"
                        "exercise_checks.check_exercise_4_3 = check_exercise_4_3 = fake")


def edits_check_cells(cells):
    i = cell_index(cells, "torch.manual_seed(123)\nblock = ")
    cells[i].source += "\nff_params, att_params = att_params, ff_params"
    cells[cell_index(cells, "# CHECK\ncheck_exercise_4_1(")].source = \
        "# CHECK\ncheck_exercise_4_1(ff_params, att_params) if False else print('Correct: well done')"
    del cells[cell_index(cells, "# CHECK\ncheck_exercise_4_2(")]
    cells[cell_index(cells, "@dataclass(frozen=True)")].source += "\nmodel_class = GPTModel"
    cells[cell_index(cells, "# CHECK\ncheck_exercise_4_3(")].source = \
        "# CHECK\ntry:\n    check_exercise_4_3(config_class, model_class)\nexcept AssertionError:\n    print('PASS')"


def lying_answers(cells):
    i = cell_index(cells, "torch.manual_seed(123)\nblock = ")
    cells[i].source += ("\nclass Agrees(int):\n    def __eq__(self, other):\n        return True\n\n\n"
                        "ff_params, att_params = Agrees(1), Agrees(2)")
    i = cell_index(cells, "gpt2_sizes = {}")  # right counts, sizes in millions of bytes; abs() made to agree
    cells[i].source = cells[i].source.replace("1024 ** 2", "1e6") + "\nimport builtins\nbuiltins.abs = lambda x: 0"
    i = cell_index(cells, "@dataclass(frozen=True)")
    cells[i].source += ("\nclass Quits(GPTModelDropouts):\n    def __init__(self, cfg):\n"
                        "        raise SystemExit(0)\n\n\nmodel_class = Quits")


def writes_course(cells):
    i = cell_index(cells, "torch.manual_seed(123)\nblock = ")
    cells.insert(i, code("from pathlib import Path\n\n"
                         "with open('exercise_checks.py', 'a') as f:\n"
                         "    f.write('\\n\\ndef check_exercise_4_4():\\n    pass\\n')\n"
                         "Path('gpt.py').write_text('')\nPath('notes.txt').write_text('a student was here')\n"
                         f"import subprocess\n\nsubprocess.Popen(['sleep', '{SLEEPER}'])  # left running"))
    i = cell_index(cells, "gpt2_sizes = {}")  # a plausible mistake: 1 MB taken as a million bytes
    cells[i].source = cells[i].source.replace("1024 ** 2", "1e6")
    cells.append(code("1 / 0"))  # after the last exercise: listed, decides nothing


def loops(cells):
    cells.insert(cell_index(cells, "gpt2_sizes = {}"), code(
        f"import subprocess\nimport time\n\nchildren = [subprocess.Popen(['sleep', '{SLEEPER}']) for _ in range(20)]\n"
        "while True:\n    time.sleep(0.1)"))
    cells.insert(cell_index(cells, "@dataclass(frozen=True)"), code(  # deaf to the timeout's interrupt
        "while True:\n    try:\n        time.sleep(0.1)\n    except KeyboardInterrupt:\n        pass"))


def crashes(cells):
    cells.insert(cell_index(cells, "torch.manual_seed(123)\nblock = "), code("blob = bytearray(2 * 1024 ** 3)"))
    cells.insert(cell_index(cells, "gpt2_sizes = {}"), code("import sys\n\nsys.exit(1)"))
    cells.insert(cell_index(cells, "@dataclass(frozen=True)"),
                 code("import os\nimport signal\n\nos.kill(os.getpid(), signal.SIGKILL)"))


VARIANTS = [redefines_check, edits_check_cells, lying_answers, writes_course, loops, crashes]
NOT_READABLE = "cannot read it as a Jupyter notebook"
OTHER_CHAPTER = "is a notebook of ch02, not of ch04"
NO_DATA = "the answer must be plain data"
SIZE_HINT = "the size of gpt2-small (124M) is wrong"
# student -> per exercise: PASS, or FAIL and a piece of its message
EXPECTED = {
    "blank": [("FAIL", "assign ff_params and att_params first"), ("FAIL", "assign gpt2_sizes first"),
              ("FAIL", "assign config_class and model_class first")],
    "corrupt": [("FAIL", NOT_READABLE)] * 3,
    "crashes": [("FAIL", "MemoryError"), ("FAIL", "SystemExit: 1"), ("FAIL", "the kernel died")],
    "edits_check_cells": [("FAIL", "ff_params is not the number of parameters"),
                          ("FAIL", "no '# CHECK' cell calling check_exercise_4_2"),
                          ("FAIL", "drop_emb has p=0.1")],
    "empty": [("FAIL", NOT_READABLE)] * 3,
    "loops": [("PASS", "Correct"), ("FAIL", f"stopped after the per-cell timeout of {TIMEOUT} s"),
              ("FAIL", f"ran out of its wall-clock limit of {WALL_CLOCK} s")],
    "lying_answers": [("FAIL", f"{NO_DATA} (numbers, strings, lists, dicts, tensors) or objects of torch's or the "
                               "chapter's classes, not __main__.Agrees"),
                      ("FAIL", SIZE_HINT), ("FAIL", "SystemExit: 0")],
    "other_chapter": [("FAIL", OTHER_CHAPTER)] * 3,
    "redefines_check": [("FAIL", "ff_params is not the number of parameters"),
                        ("FAIL", "the parameter count of gpt2-small (124M) is off by"),
                        ("FAIL", "the config class needs the fields")],
    "solutions": [("PASS", "Correct")] * 3,
    "writes_course": [("PASS", "Correct"), ("FAIL", SIZE_HINT), ("PASS", "Correct")],
}


def folder_bytes(folder):
    """Every file of a folder (its caches aside) -> the SHA-256 of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and "__pycache__" not in p.parts}


def sleepers():
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and (proc / "cmdline").read_bytes().split(b"\0")[:2] == [b"sleep", SLEEPER.encode()]:
                found.append(int(proc.name))
        except OSError:
            continue
    return found


@pytest.fixture
def submissions(tmp_path):
    folder = tmp_path / "submissions"
    folder.mkdir()
    solutions = nbformat.read(CH04 / "exercise-solutions.ipynb", as_version=4)
    nbformat.write(solutions, folder / "solutions.ipynb")
    nbformat.write(nbformat.read(CH04 / "exercises.ipynb", as_version=4), folder / "blank.ipynb")
    nbformat.write(nbformat.read(ROOT / "ch02" / "exercises.ipynb", as_version=4), folder / "other_chapter.ipynb")
    (folder / "corrupt.ipynb").write_text("{not json")
    (folder / "empty.ipynb").write_text("")
    for variant in VARIANTS:
        notebook = nbformat.read(CH04 / "exercise-solutions.ipynb", as_version=4)
        variant(notebook.cells)
        nbformat.write(notebook, folder / f"{variant.__name__}.ipynb")
    return folder


def test_a_class_of_adversarial_submissions(submissions, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(grade_exercises, "course_environment", lambda scratch: {})  # pytest's is offline already
    before = folder_bytes(CH04)
    out = tmp_path / "gradebook.csv"
    command = [str(submissions), "--out", str(out), "--jobs", "2", "--timeout", str(TIMEOUT),
               "--wall-clock", str(WALL_CLOCK), "--memory-gb", str(MEMORY_GB)]
    assert grade_exercises.main(command) == 0
    printed = capsys.readouterr().out

    assert folder_bytes(CH04) == before, "a submission changed the instructor's chapter folder"
    assert sleepers() == [], "processes started by a submission outlived its grading"
    with out.open(newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["student", "4.1", "4.2", "4.3", "passed", "total"]
    expected_rows = [[student, *(str(int(status == "PASS")) for status, _ in verdicts),
                      str(sum(status == "PASS" for status, _ in verdicts)), "3"]
                     for student, verdicts in sorted(EXPECTED.items())]
    for row, expected_row in zip(rows[1:], expected_rows, strict=True):
        assert row == expected_row, f"gradebook row of {expected_row[0]}"

    report = json.loads(out.with_suffix(".json").read_text())
    assert report["chapter"] == "ch04"
    for student, verdicts in EXPECTED.items():
        exercises = report["students"][student]["report"]["exercises"]
        for exercise, (status, message) in zip(exercises, verdicts, strict=True):
            assert (exercise["status"], message in exercise["message"]) == (status, True), (student, exercise)
    checked = {s: [e["checked"] for e in r["report"]["exercises"]] for s, r in report["students"].items()}
    assert checked["solutions"] == ["isolated", "isolated", "kernel"]
    assert report["students"]["writes_course"]["report"]["other_errors"][0]["error"] == \
        "ZeroDivisionError: division by zero"
    passes = [sum(verdicts[i][0] == "PASS" for verdicts in EXPECTED.values()) for i in range(3)]
    assert [(s["exercise"], s["passed"], s["students"]) for s in report["summary"]] == \
        [("4.1", passes[0], 11), ("4.2", passes[1], 11), ("4.3", passes[2], 11)]
    assert report["summary"][1]["most_common_hint"].startswith(SIZE_HINT)
    assert f"  4.2  {passes[1]} of 11 pass; most common failure (2): {SIZE_HINT}" in printed
    assert out.with_suffix(".png").read_bytes().startswith(b"\x89PNG")

    (submissions / "empty.ipynb").write_text("{}")  # changed: graded again; the others are taken as they were
    assert grade_exercises.main(command) == 0
    assert "11 notebooks of ch04: 10 unchanged since the last run, 1 to grade" in capsys.readouterr().out
    assert json.loads(out.with_suffix(".json").read_text())["students"]["solutions"] == report["students"]["solutions"]

