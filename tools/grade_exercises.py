"""Grade students' exercises notebooks, one or a whole class, with checks the notebooks cannot bypass (for instructors).

    python tools/grade_exercises.py STUDENT.ipynb [--json REPORT.json]
    python tools/grade_exercises.py SUBMISSIONS_DIR --out gradebook.csv [--chapter chNN] [--jobs N]
    common options: [--timeout SECONDS] [--wall-clock SECONDS] [--memory-gb GB]

The chapter is recognised from the check functions the notebook's ``# CHECK`` cells call (``check_exercise_5_1``
belongs to ch05), so a file may have any name and sit anywhere. The exercises are those the chapter defines: one
per ``check_exercise_*`` function of its ``exercise_checks.py``.

How a notebook is graded:

* It runs in a fresh kernel, offline (the environment of tools/execute_notebook.py), in its own temporary copy of
  the chapter folder: what it writes lands in that copy, which is deleted afterwards.
* The grading of one notebook runs in a child process (and the kernel under it) with a limit on each process's
  private memory (``--memory-gb``, RLIMIT_DATA) and on the wall-clock time of the whole notebook
  (``--wall-clock``); past it the kernel's and the child's process groups are killed. Each cell may run
  ``--timeout`` seconds. Cells run one at a time and the run continues after an error.
* The student's ``# CHECK`` cells never run. In their place the grader takes the check's arguments from the
  kernel, as the template's check cell names them, saved with ``torch.save`` (plain Python values, tensors, and
  objects of torch's and the chapter's own classes), and calls the check itself in a separate process that
  imports a pristine ``exercise_checks.py`` from the course folder and loads the answers with
  ``torch.load(weights_only=True)``, allowing only torch's and the chapter's classes: no code of the student's runs
  there. Redefining or patching a check, the module or builtins in the kernel, or printing "Correct", changes
  nothing. An answer that is not such data (a class defined in the notebook) fails.
* The exercises whose answer is code the student writes (CODE_CHECKS: a function or a class) cannot be checked
  without running that code; their check runs in the kernel, after the exercise's cells, from a fresh import of
  the course's ``exercise_checks.py`` (not the notebook's), and the verdict comes from the kernel's reply, not from
  what the cell prints. A student who patches the kernel itself could still fake these; the report marks them
  ``"checked": "kernel"`` against ``"isolated"``.

An exercise passes when its check passes and none of its own cells (those after the previous check cell) raised
an error. It fails with the check's hint, the error a cell raised, a cell past its timeout, a check cell missing
from the notebook, or a kernel that died or a notebook that ran out of time before the check. Errors outside every
exercise (the set-up cells, extra cells at the end) are listed but decide nothing. With one notebook the exit
status is 1 if any exercise fails.

A class: every ``*.ipynb`` file in SUBMISSIONS_DIR is a student (the file name without ``.ipynb`` is the id), graded
in parallel (``--jobs``, default the number of cores) into a CSV gradebook (one row per student, 1 or 0 per
exercise, the totals), a JSON report beside it (every message, the errors outside the exercises) and a bar chart of
the pass rate per exercise (``.png`` beside it); a summary per exercise (pass rate, most common hint) is printed.
The class's chapter is ``--chapter`` or the one most notebooks belong to; a notebook of another chapter, or one
that cannot be read, fails every exercise. Running the command again grades only the notebooks that changed (by
their SHA-256) or were graded with other settings, checks or grader.
"""

import argparse
import ast
import collections
import concurrent.futures
import contextlib
import csv
import hashlib
import importlib
import io
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, DeadKernelError

from execute_notebook import ROOT, course_environment

CHECK_MARK = "# CHECK"
CHECK_PREFIX = "check_exercise_"
CHECK_CALL = re.compile(r"\b(" + CHECK_PREFIX + r"\w+)\s*\(")
EXERCISE_HEADING = "## Exercise"
CODE_CHECKS = {  # checks whose answer includes a function or class the student writes: they run in the kernel
    "check_exercise_A_3", "check_exercise_2_4", "check_exercise_3_5", "check_exercise_4_3", "check_exercise_6_3",
    "check_exercise_7_1", "check_exercise_7_2"}
GRADER = Path(__file__).resolve()
WALL_CLOCK = 3600
MEMORY_GB = 6
CELL_TIMEOUT = 900


class NotGradable(Exception):
    """A file that is not an exercises notebook of this course (or of the class's chapter)."""


def chapter_checks(folder):
    """The names of the check functions a chapter's exercise_checks.py defines, in order."""
    tree = ast.parse((folder / "exercise_checks.py").read_text(encoding="utf-8"))
    return [node.name for node in tree.body
            if isinstance(node, ast.FunctionDef) and node.name.startswith(CHECK_PREFIX)]


def exercise_id(check):
    """'check_exercise_5_1' -> '5.1'."""
    return check.removeprefix(CHECK_PREFIX).replace("_", ".")


def is_check_cell(cell):
    return cell.cell_type == "code" and cell.source.lstrip().startswith(CHECK_MARK + "\n")


def called_check(cell):
    """The check function a ``# CHECK`` cell calls (None for any other cell)."""
    found = CHECK_CALL.findall(cell.source) if is_check_cell(cell) else []
    return found[0] if found else None


def read_notebook(path):
    try:
        return nbformat.read(path, as_version=4)
    except (OSError, ValueError, AttributeError, nbformat.ValidationError) as error:
        raise NotGradable(f"{path}: cannot read it as a Jupyter notebook ({error or type(error).__name__})") from None


def chapters():
    return sorted(p.parent for p in ROOT.glob("*/exercise_checks.py"))


def find_chapter(path, notebook):
    """The chapter folder whose check functions the notebook's check cells call."""
    called = {called_check(cell) for cell in notebook.cells} - {None}
    for folder in chapters():
        if called & set(chapter_checks(folder)):
            return folder
    raise NotGradable(f"{path} is not an exercises notebook of this course: none of its '{CHECK_MARK}' cells calls "
                      f"a {CHECK_PREFIX}* function of a chapter's exercise_checks.py")


def check_arguments(folder):
    """Check function name -> the source of each argument of the template's check cell that calls it."""
    template = read_notebook(folder / "exercises.ipynb")
    arguments = {}
    for cell in template.cells:
        if called_check(cell):
            call = next(node for node in ast.walk(ast.parse(cell.source)) if isinstance(node, ast.Call))
            arguments[called_check(cell)] = [ast.unparse(argument) for argument in call.args]
    return arguments


def error_text(ename, evalue):
    """An error in one line: a failed check's hint as it is, any other error with its exception name."""
    message = " ".join(str(evalue).split())
    if ename == "AssertionError" and message:
        return message
    return f"{ename}: {message}" if message else ename


def printed_text(cell):
    return "".join(o.text for o in cell.outputs if o.output_type == "stream" and o.name == "stdout").strip()


# The isolated checks: a process that imports the pristine checks and loads answers as data only.

SAFE_GLOBALS = {"collections.defaultdict", "builtins.dict", "builtins.list", "builtins.set", "builtins.frozenset",
                "builtins.tuple", "builtins.int", "builtins.float", "builtins.bool", "builtins.str", "builtins.slice"}


def torch_answer_types():
    """The kinds of torch objects an answer may hold: modules, optimizers, datasets and their loaders."""
    import torch

    data = torch.utils.data
    return torch.nn.Module, torch.optim.Optimizer, data.Dataset, data.DataLoader, data.Sampler, torch.Generator


def allowed_global(name, folder):
    """What ``module.name`` in an answer file may stand for: a class of the chapter's modules, one of torch's
    modules, optimizers, datasets, samplers or loaders, a DataLoader's collate function from torch.utils.data, or a
    plain container type (None if not allowed)."""
    module_name, _, attribute = name.rpartition(".")
    top = module_name.split(".")[0]
    if name not in SAFE_GLOBALS and top != "torch" and not (folder / f"{top}.py").is_file():
        return None
    try:
        found = getattr(importlib.import_module(module_name), attribute, None)
    except ImportError:
        return None
    if name in SAFE_GLOBALS:
        return found
    if isinstance(found, type) and found.__module__ == module_name:
        return found if top != "torch" or issubclass(found, torch_answer_types()) else None
    collate = module_name.startswith("torch.utils.data.") and callable(found)
    return found if collate and getattr(found, "__module__", None) == module_name else None


def load_answers(path, folder):
    """The answers saved by the kernel, loaded with weights_only=True and only torch's and the chapter's classes."""
    import torch

    unknown = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    allowed = [allowed_global(name, folder) for name in unknown]
    refused = [name for name, found in zip(unknown, allowed) if found is None]
    if refused:
        raise AssertionError("the answer must be plain data (numbers, strings, lists, dicts, tensors) or objects of "
                             f"torch's or the chapter's classes, not {', '.join(refused)}")
    with torch.serialization.safe_globals(allowed):
        answers = torch.load(path, weights_only=True)
    for answer in answers:
        if isinstance(answer, torch.optim.Optimizer):  # its state was saved as a dict
            answer.state = collections.defaultdict(dict, answer.state)
    return answers


def checker_main(folder):
    """Answer check requests, one JSON line each on stdin: {"check", "answers"} -> {"status", "message"}."""
    folder = Path(folder)
    sys.path.insert(0, str(folder))
    checks = importlib.import_module("exercise_checks")
    assert Path(checks.__file__).parent == folder
    replies = sys.stdout
    for line in sys.stdin:
        request = json.loads(line)
        printed = io.StringIO()
        try:
            with contextlib.redirect_stdout(printed):
                getattr(checks, request["check"])(*load_answers(request["answers"], folder))
            reply = {"status": "PASS", "message": printed.getvalue().strip()}
        except Exception as error:  # noqa: BLE001  (every error is the check's verdict)
            reply = {"status": "FAIL", "message": error_text(type(error).__name__, error)}
        replies.write(json.dumps(reply) + "\n")
        replies.flush()


class Checker:
    """The isolated check process of one notebook: fresh Python, pristine checks, working folder the copy."""

    def __init__(self, folder, copy, timeout):
        code = (f"import sys; sys.path.insert(0, {str(GRADER.parent)!r}); import grade_exercises; "
                f"grade_exercises.checker_main({str(folder)!r})")
        # -P: the working folder (the student's copy) is not on sys.path; -B: no __pycache__ in the course folder
        self.errors = Path(copy).with_name("checker-errors.txt")
        with self.errors.open("w") as errors:
            self.process = subprocess.Popen([sys.executable, "-B", "-P", "-c", code], cwd=copy, text=True,
                                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors)
        self.timeout = timeout

    def check(self, check, answers):
        self.process.stdin.write(json.dumps({"check": check, "answers": str(answers)}) + "\n")
        self.process.stdin.flush()
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            try:
                line = pool.submit(self.process.stdout.readline).result(self.timeout)
            except concurrent.futures.TimeoutError:
                self.process.kill()
                return "FAIL", f"the check did not finish within {self.timeout:g} s"
        if not line:
            error = self.errors.read_text(errors="replace").strip().splitlines()
            return "FAIL", "the check process stopped: " + (error[-1] if error else "no message")
        reply = json.loads(line)
        return reply["status"], reply["message"]

    def close(self):
        self.process.stdin.close()
        self.process.kill()
        self.process.wait()


# One notebook, in a child process with limits: the kernel runs the student's cells, the grader runs the checks.

def save_answers_code(arguments, path):
    """Kernel code saving the check's arguments with torch.save; a defaultdict (an optimizer's state) as a dict,
    which torch.load(weights_only=True) can load."""
    return "\n".join([
        "def _grader_save(answers, path):",
        "    import collections, copyreg, pickle, types, torch",
        "    class Pickler(pickle.Pickler):",
        "        dispatch_table = {**copyreg.dispatch_table, collections.defaultdict: lambda d: (dict, (dict(d),))}",
        "    torch.save(answers, path, pickle_module=types.SimpleNamespace(__name__='pickle', Pickler=Pickler))",
        "try:",
        f"    _grader_save([{', '.join(arguments)}], {str(path)!r})",
        "finally:",
        "    del _grader_save",
    ])


def kernel_check_code(folder, check, arguments):
    """A check run in the kernel from the course's exercise_checks.py, compiled afresh from the source the grader
    read (no file the notebook could have changed), leaving no names behind."""
    path = folder / "exercise_checks.py"
    return "\n".join([
        "def _grader_check():",
        "    import types",
        "    module = types.ModuleType('pristine_exercise_checks')",
        f"    module.__file__ = {str(path)!r}",
        f"    exec(compile({path.read_text(encoding='utf-8')!r}, module.__file__, 'exec'), module.__dict__)",
        f"    return module.{check}",
        "try:",
        f"    _grader_check()({', '.join(arguments)})",
        "finally:",
        "    del _grader_check",
    ])


class Kernel:
    """Runs cells in the notebook's kernel; each run returns an error text or None."""

    def __init__(self, notebook, copy, timeout):
        self.client = NotebookClient(notebook, timeout=timeout, interrupt_on_timeout=True, allow_errors=False,
                                     kernel_name="python3", resources={"metadata": {"path": str(copy)}})
        self.timeout = timeout

    def run(self, cell, index):
        start = time.monotonic()
        try:
            self.client.execute_cell(cell, index)
        except CellExecutionError as error:
            if time.monotonic() - start >= self.timeout:
                return f"stopped after the per-cell timeout of {self.timeout:g} s"
            return error_text(error.ename, error.evalue)
        return None


def exercise_cells(notebook, check_cells):
    """Cell index -> the check whose exercise it belongs to (the cells after the previous check cell)."""
    exercise_of = {}
    headings = [i for i, c in enumerate(notebook.cells)
                if c.cell_type == "markdown" and c.source.lstrip().startswith(EXERCISE_HEADING)]
    start = headings[0] if headings else 0
    for check, index in sorted(check_cells.items(), key=lambda item: item[1]):
        exercise_of.update({i: check for i in range(start, index + 1)})
        start = index + 1
    return exercise_of


def grade_in_child(path, folder, timeout, progress):
    """Grade the notebook; the report, written to ``progress`` after every exercise (read if this is killed)."""
    notebook = read_notebook(path)
    checks = chapter_checks(folder)
    arguments = check_arguments(folder)
    check_cells = {}  # check name -> index of the student's check cell
    for index, cell in enumerate(notebook.cells):
        if called_check(cell) in arguments and called_check(cell) not in check_cells:
            check_cells[called_check(cell)] = index
    exercise_of = exercise_cells(notebook, check_cells)
    report = {"notebook": str(path), "chapter": folder.name, "exercises": [], "other_errors": []}
    outcomes = {}  # cell index -> error text or None, for the cells that ran
    verdicts = {}  # check -> (status, message, where it was checked)

    def record(check=None, status=None, message=None, where=None):
        if check:
            verdicts[check] = status, message, where
        report["exercises"] = [{"exercise": exercise_id(c), "check": c, "status": verdicts[c][0],
                                "message": verdicts[c][1], "checked": verdicts[c][2]} for c in checks if c in verdicts]
        report["other_errors"] = [{"cell": i + 1, "error": error} for i, error in sorted(outcomes.items())
                                  if error and i not in exercise_of]
        write_json(report, progress)

    with tempfile.TemporaryDirectory(prefix="llm-course-grade-") as work:
        copy = Path(work, folder.name)
        shutil.copytree(folder, copy, ignore=shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints"))
        checker = Checker(folder, copy, timeout)
        kernel = Kernel(notebook, copy, timeout)
        try:
            with kernel.client.setup_kernel():
                report["kernel_pid"] = kernel.client.km.provisioner.pid
                write_json(report, progress)
                for index, cell in enumerate(notebook.cells):
                    if cell.cell_type != "code":
                        continue
                    check = called_check(cell) if check_cells.get(called_check(cell)) == index else None
                    if check is None:
                        outcomes[index] = kernel.run(cell, index)
                        continue
                    own = [f"cell {i + 1}: {outcomes[i]}" for i in sorted(exercise_of)
                           if exercise_of[i] == check and outcomes.get(i)]
                    status, message, where = grade_exercise(kernel, checker, folder, check, arguments[check],
                                                            index, Path(work, f"{check}.pt"))
                    if own:
                        status, message = "FAIL", "; ".join(own + ([f"check: {message}"] if status == "FAIL" else []))
                    record(check, status, message, where)
        except DeadKernelError:
            report["kernel_died"] = True
        finally:
            checker.close()
    record()  # the errors after the last exercise
    for check in checks:
        if check not in verdicts:
            record(check, "FAIL", f"the notebook has no '{CHECK_MARK}' cell calling {check} (the template's check "
                   "cells must stay in place)" if check not in check_cells
                   else "never run: the kernel died before this exercise's check", None)
    return report


def grade_exercise(kernel, checker, folder, check, arguments, index, answers):
    """(status, message, where it was checked) for one exercise, after its cells ran."""
    if check in CODE_CHECKS:
        cell = nbformat.v4.new_code_cell(kernel_check_code(folder, check, arguments))
        error = kernel.run(cell, index)
        return ("FAIL", error, "kernel") if error else ("PASS", printed_text(cell), "kernel")
    error = kernel.run(nbformat.v4.new_code_cell(save_answers_code(arguments, answers)), index)
    if error:
        return "FAIL", f"the answers could not be taken from the notebook: {error}", "isolated"
    try:
        return (*checker.check(check, answers), "isolated")
    finally:
        answers.unlink(missing_ok=True)  # a model can take GBs


def limit_memory(memory_gb):
    limit = int(memory_gb * 2 ** 30)
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def child_main(argv):
    """The child process of ``grade``: ``--child NOTEBOOK CHAPTER_FOLDER PROGRESS TIMEOUT MEMORY_GB``."""
    path, folder, progress, timeout, memory_gb = argv
    limit_memory(float(memory_gb))
    grade_in_child(Path(path), Path(folder), float(timeout), Path(progress))


def kill_group(pid):
    with contextlib.suppress(ProcessLookupError, PermissionError, TypeError):
        os.killpg(pid, signal.SIGKILL)


def grade(path, timeout=CELL_TIMEOUT, env=None, wall_clock=WALL_CLOCK, memory_gb=MEMORY_GB, chapter=None):
    """Grade the notebook at ``path`` in a child process with limits; the report (see ``format_report``).

    A file that is not an exercises notebook (of ``chapter``, when given) raises NotGradable.
    """
    path, start = Path(path), time.monotonic()
    folder = find_chapter(path, read_notebook(path))
    if chapter is not None and folder != chapter:
        raise NotGradable(f"{path} is a notebook of {folder.name}, not of {chapter.name}")
    with tempfile.TemporaryDirectory(prefix="llm-course-grading-") as work:
        progress = Path(work, "report.json")
        stderr = Path(work, "stderr.txt")
        command = [sys.executable, str(GRADER), "--child", str(path.resolve()), str(folder), str(progress),
                   str(timeout), str(memory_gb)]
        with stderr.open("w") as errors:
            child = subprocess.Popen(command, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL,
                                     stderr=errors, start_new_session=True)
            try:
                child.wait(wall_clock)
                stopped = None if child.returncode == 0 else f"the grading stopped (exit status {child.returncode})"
            except subprocess.TimeoutExpired:
                stopped = f"the notebook ran out of its wall-clock limit of {wall_clock:g} s"
                kill_group(child.pid)  # before it is reaped, while the id is still the child's
            finally:
                child.kill()
                child.wait()
        report = json.loads(progress.read_text()) if progress.is_file() else {}
        if stopped:  # the child did not end the kernel: its process group (and what it started) goes too
            kill_group(report.get("kernel_pid"))
        if stopped and child.returncode not in (0, -signal.SIGKILL):
            last = stderr.read_text(errors="replace").strip().splitlines()
            stopped += f": {last[-1]}" if last else ""
    return {**complete_report(report, path, folder, stopped), "seconds": round(time.monotonic() - start, 1)}


def complete_report(report, path, folder, stopped):
    """The child's report with every exercise it did not reach failed with the reason it stopped."""
    done = {e["check"]: e for e in report.get("exercises", [])}
    exercises = [done.get(check) or {"exercise": exercise_id(check), "check": check, "status": "FAIL",
                                     "message": f"never checked: {stopped}", "checked": None}
                 for check in chapter_checks(folder)]
    return {"notebook": str(path), "chapter": folder.name,
            "passed": sum(e["status"] == "PASS" for e in exercises), "total": len(exercises),
            "exercises": exercises, "other_errors": report.get("other_errors", []),
            **({"stopped": stopped} if stopped else {})}


def format_report(report):
    lines = [f"{report['notebook']} (chapter {report['chapter']}): "
             f"{report['passed']} of {report['total']} exercises pass"]
    width = max(len(e["exercise"]) for e in report["exercises"])
    lines += [f"  {e['exercise']:<{width}}  {e['status']}  {e['message']}".rstrip() for e in report["exercises"]]
    lines += [f"  error outside the exercises, cell {e['cell']}: {e['error']}" for e in report["other_errors"]]
    return "\n".join(lines)


@contextlib.contextmanager
def atomic_file(path, mode="w"):
    """A file written beside ``path`` and renamed into place only when complete."""
    path = Path(path)
    with tempfile.NamedTemporaryFile(mode, dir=path.parent, suffix=".part", delete=False,
                                     **({"encoding": "utf-8", "newline": ""} if "b" not in mode else {})) as f:
        try:
            yield f
        except BaseException:
            f.close()
            os.unlink(f.name)
            raise
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(f.name, 0o666 & ~umask)  # as an ordinary new file, not the temporary file's private mode
    os.replace(f.name, path)


def write_json(report, path):
    with atomic_file(path) as f:
        json.dump(report, f, indent=2)
        f.write("\n")


# A class: a folder of notebooks into a gradebook.

def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def grader_fingerprint(folder, settings):
    """What a grade depends on besides the notebook: the grader, the chapter's checks and template, the settings."""
    files = [GRADER, folder / "exercise_checks.py", folder / "exercises.ipynb"]
    return hashlib.sha256(json.dumps([[sha256(f) for f in files], settings]).encode()).hexdigest()


def class_chapter(notebooks, chapter):
    """The chapter folder named by ``chapter``, or the one most readable notebooks belong to."""
    if chapter:
        folder = ROOT / chapter
        if not (folder / "exercise_checks.py").is_file():
            raise SystemExit(f"{chapter} is not a chapter with exercises: {[f.name for f in chapters()]}")
        return folder
    found = collections.Counter()
    for path in notebooks:
        with contextlib.suppress(NotGradable):
            found[find_chapter(path, read_notebook(path))] += 1
    if not found:
        raise SystemExit("no exercises notebook of this course among the submissions")
    return found.most_common(1)[0][0]


def failed_report(path, folder, reason):
    report = complete_report({}, path, folder, None)
    for exercise in report["exercises"]:
        exercise["message"] = reason
    return {**report, "stopped": reason}


def grade_class(submissions, out, chapter=None, jobs=None, timeout=CELL_TIMEOUT, wall_clock=WALL_CLOCK,
                memory_gb=MEMORY_GB, env=None, log=print):
    """Grade every notebook of ``submissions`` into ``out`` (CSV), its JSON report and chart; the JSON report."""
    submissions, out = Path(submissions), Path(out)
    notebooks = sorted(p for p in submissions.glob("*.ipynb") if p.is_file())
    if not notebooks:
        raise SystemExit(f"{submissions} holds no .ipynb files")
    folder = class_chapter(notebooks, chapter)
    fingerprint = grader_fingerprint(folder, [timeout, wall_clock, memory_gb])
    json_path = out.with_suffix(".json")
    previous = json.loads(json_path.read_text()) if json_path.is_file() else {}
    earlier = previous.get("students", {}) if previous.get("fingerprint") == fingerprint else {}
    students, to_grade = {}, []
    for path in notebooks:
        entry = earlier.get(path.stem)
        if entry and entry["sha256"] == sha256(path):
            students[path.stem] = entry
        else:
            to_grade.append(path)
    log(f"{len(notebooks)} notebooks of {folder.name}: {len(notebooks) - len(to_grade)} unchanged since the last "
        f"run, {len(to_grade)} to grade")

    def grade_one(path):
        digest = sha256(path)
        try:
            report = grade(path, timeout, env, wall_clock, memory_gb, chapter=folder)
        except NotGradable as error:
            report = failed_report(path, folder, str(error))
        return path.stem, {"sha256": digest, "report": report}

    jobs = jobs or os.cpu_count() or 1
    with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
        for student, entry in pool.map(grade_one, to_grade):
            students[student] = entry
            log(f"  {student}: {entry['report']['passed']} of {entry['report']['total']}")
    students = dict(sorted(students.items()))
    exercises = [exercise_id(c) for c in chapter_checks(folder)]
    summary = class_summary(students, exercises)
    result = {"chapter": folder.name, "fingerprint": fingerprint, "summary": summary, "students": students}
    write_gradebook(students, exercises, out)
    write_json(result, json_path)
    plot_summary(summary, folder.name, out.with_suffix(".png"))
    log(format_summary(summary))
    return result


def write_gradebook(students, exercises, out):
    with atomic_file(out) as f:
        writer = csv.writer(f)
        writer.writerow(["student", *exercises, "passed", "total"])
        for student, entry in students.items():
            report = entry["report"]
            writer.writerow([student, *(int(e["status"] == "PASS") for e in report["exercises"]),
                             report["passed"], report["total"]])


def class_summary(students, exercises):
    """Per exercise: how many passed, out of how many, and the most common message of those that failed."""
    summary = []
    for i, exercise in enumerate(exercises):
        results = [entry["report"]["exercises"][i] for entry in students.values()]
        hints = collections.Counter(r["message"] for r in results if r["status"] == "FAIL")
        hint, count = hints.most_common(1)[0] if hints else ("", 0)
        summary.append({"exercise": exercise, "passed": sum(r["status"] == "PASS" for r in results),
                        "students": len(results), "most_common_hint": hint, "hint_count": count})
    return summary


def format_summary(summary):
    lines = ["per exercise: the students who pass, and the most common failure (how many students got it)"]
    for s in summary:
        hint = f"; most common failure ({s['hint_count']}): {s['most_common_hint']}" if s["hint_count"] else ""
        lines.append(f"  {s['exercise']}  {s['passed']} of {s['students']} pass{hint}")
    return "\n".join(lines)


def plot_summary(summary, chapter, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.2 + 0.8 * len(summary), 3.2))
    rates = [100 * s["passed"] / s["students"] for s in summary]
    ax.bar([s["exercise"] for s in summary], rates, color="tab:blue")
    ax.set_ylim(0, 100)
    ax.set_xlabel("exercise")
    ax.set_ylabel("students who pass (%)")
    ax.set_title(f"{chapter}: {summary[0]['students']} students")
    fig.tight_layout()
    with atomic_file(path, "wb") as f:
        fig.savefig(f, format="png")
    plt.close(fig)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        return child_main(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("path", type=Path, help="a student's exercises notebook, or a folder of them (a class)")
    parser.add_argument("--json", type=Path, help="one notebook: also write the report to this JSON file")
    parser.add_argument("--out", type=Path, help="a class: the CSV gradebook to write (JSON and PNG beside it)")
    parser.add_argument("--chapter", help="a class: the chapter of its exercises (default: that of most notebooks)")
    parser.add_argument("--jobs", type=int, help="a class: notebooks graded at once (default: the number of cores)")
    parser.add_argument("--timeout", type=float, default=CELL_TIMEOUT, help="seconds each cell may run (900)")
    parser.add_argument("--wall-clock", type=float, default=WALL_CLOCK, help="seconds a notebook may run (3600)")
    parser.add_argument("--memory-gb", type=float, default=MEMORY_GB,
                        help="private memory of each process grading a notebook, in GB (6)")
    args = parser.parse_args(argv)
    limits = {"timeout": args.timeout, "wall_clock": args.wall_clock, "memory_gb": args.memory_gb}
    if args.path.is_dir():
        if not args.out or args.out.suffix != ".csv" or not args.out.parent.is_dir():
            parser.error("grading a folder (a class) needs --out GRADEBOOK.csv in an existing folder")
        with tempfile.TemporaryDirectory(prefix="llm-course-grade-") as scratch:
            grade_class(args.path, args.out, args.chapter, args.jobs, env=course_environment(scratch), **limits)
        return 0
    if args.path.suffix != ".ipynb" or not args.path.is_file():
        parser.error(f"{args.path} is not a notebook file (.ipynb) or a folder of them")
    try:
        find_chapter(args.path, read_notebook(args.path))  # a clear error before any set-up work
        with tempfile.TemporaryDirectory(prefix="llm-course-grade-") as scratch:
            report = grade(args.path, env=course_environment(scratch), **limits)
    except NotGradable as error:
        raise SystemExit(str(error)) from None
    print(format_report(report))
    if args.json:
        write_json(report, args.json)
    return 0 if report["passed"] == report["total"] else 1


if __name__ == "__main__":
    sys.exit(main())
