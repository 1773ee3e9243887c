"""Execute course notebooks in place, the way their committed outputs must be produced (for maintainers).

    python tools/execute_notebook.py ch04/ch04.ipynb [more.ipynb ...]

Each notebook runs top to bottom in a fresh kernel, in its own folder, with:

* Jupyter's inline plotting backend (an inherited ``MPLBACKEND=Agg`` would silently drop every figure);
* the offline data mirror (``../shared/data/mirror`` beside the repository, or ``LLM_COURSE_MIRROR``) plus a
  temporary mirror of synthetic stand-in GPT-2 checkpoints, and a seeded tiktoken cache, so it runs offline;
* afterwards, the outputs of every cell tagged ``stand-in`` (in the cell's metadata) are removed: their output
  would come from the synthetic weights, which the course never commits. A cell whose output mentions
  "stand-in" without that tag stops the tool, so no such output is written by accident;
* Jupyter widgets dropped, their state from the notebook's metadata and their views from the outputs (GitHub cannot
  draw widgets; the course's progress bars are plain text, and a library's widget progress bar says nothing);
* text output tidied as Jupyter shows it: consecutive pieces of one stream joined, carriage returns collapsed as a
  terminal would (a progress bar's last state, not every intermediate one), and pieces left blank dropped.

The notebook file is replaced only after a successful run.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
STAND_IN_TAG = "stand-in"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def course_environment(scratch):
    """Environment variables for an offline run: data mirror, synthetic GPT-2 mirror, tiktoken cache."""
    mirrors = [m for m in os.environ.get("LLM_COURSE_MIRROR", "").split(os.pathsep) if m]
    shared = ROOT.parent / "shared" / "data" / "mirror"
    if not mirrors and shared.is_dir():
        mirrors = [str(shared)]
    synthetic = Path(scratch, "synthetic-mirror")
    subprocess.run([sys.executable, str(ROOT / "ch05" / "synthetic_gpt2.py"), "--mirror", str(synthetic)],
                   check=True, cwd=ROOT / "ch05", env={**os.environ, "LLM_COURSE_MIRROR": os.pathsep.join(mirrors)},
                   stdout=subprocess.DEVNULL)
    env = {"LLM_COURSE_MIRROR": os.pathsep.join([*mirrors, str(synthetic)]),
           "TIKTOKEN_CACHE_DIR": str(Path(scratch, "tiktoken-cache")),
           "LLM_COURSE_GPT2_DIR": str(Path(scratch, "gpt2")),  # stand-ins never land in a course folder
           "TF_CPP_MIN_LOG_LEVEL": "3"}
    subprocess.run([sys.executable, str(ROOT / "setup" / "download.py"), "--seed-tiktoken-cache",
                    env["TIKTOKEN_CACHE_DIR"]], check=True, env={**os.environ, **env}, stdout=subprocess.DEVNULL)
    return env


def collapse_carriage_returns(text):
    """What a terminal shows: on each line, only the last text written after a carriage return."""
    return "\n".join(line.rstrip("\r").rsplit("\r", 1)[-1] for line in text.split("\n"))


def join_streams(outputs):
    """Consecutive outputs of one stream joined into one, carriage returns collapsed, blank ones dropped.

    The kernel sends every write to stdout/stderr as its own output; a plain-text progress bar makes hundreds.
    """
    joined = []
    for output in outputs:
        if (output.output_type == "stream" and joined and joined[-1].output_type == "stream"
                and joined[-1].name == output.name):
            joined[-1].text += output.text
        else:
            joined.append(output)
    for output in joined:
        if output.output_type == "stream":
            output.text = collapse_carriage_returns(output.text)
    return [o for o in joined if o.output_type != "stream" or o.text.strip()]


def tidy_outputs(notebook, path):
    notebook.metadata.pop("widgets", None)  # state of Jupyter widgets; the course's progress bars are plain text
    for i, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        if STAND_IN_TAG in cell.metadata.get("tags", []):
            cell.outputs, cell.execution_count = [], None
            continue
        for output in cell.outputs:
            if "stand-in" in str(output).lower():
                raise SystemExit(f"{path} cell {i}: output mentions stand-in weights but the cell is not tagged "
                                 f"'{STAND_IN_TAG}'; tag it (and the cells that use its result)")
        # A library's own progress bar (transformers loading a model) is a widget view: drop it with the state.
        cell.outputs = [o for o in join_streams(cell.outputs) if WIDGET_VIEW not in o.get("data", {})]


def execute(path, env):
    notebook = nbformat.read(path, as_version=4)
    saved = {name: os.environ.get(name) for name in [*env, "MPLBACKEND"]}
    os.environ.update(env)
    os.environ.pop("MPLBACKEND", None)
    start = time.perf_counter()
    try:
        NotebookClient(notebook, timeout=3600, kernel_name="python3",
                       resources={"metadata": {"path": str(path.parent)}}).execute()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    tidy_outputs(notebook, path)
    nbformat.write(notebook, path)
    print(f"{path}: executed in {time.perf_counter() - start:.0f} s")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="llm-course-execute-") as scratch:
        env = course_environment(scratch)
        for path in args.notebooks:
            execute(path.resolve(), env)


if __name__ == "__main__":
    main()
