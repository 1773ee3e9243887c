"""Every exercise can be done on its own, in any order, after the notebook's set-up cells.

A learner (or an instructor who assigns one exercise) runs the set-up cells and then jumps to any exercise. So the
code of an exercise may use only what the set-up cells define and what the exercise itself defines: a name that
only an earlier exercise imports or defines (say ``format_prompt``, imported in exercise 1's cell) raises a
``NameError`` for everyone who starts elsewhere. For the template (``exercises.ipynb``) and the worked solutions
(``exercise-solutions.ipynb``) of every folder, the code of each ``## Exercise`` section is analysed with Python's
``symtable``: every global name it reads must be a builtin, be bound by the set-up cells of the template (what a
learner starts from), or be bound by the section itself.
"""

import builtins
import symtable

import nbformat
import pytest

from course_files import ROOT, course_files

HEADING = "## Exercise"


def code(cell):
    """A code cell's Python, without IPython's magics and shell escapes."""
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in cell.source.splitlines())


def sections(notebook):
    """(set-up code cells, {exercise heading: its code cells}); the set-up is everything before the first exercise."""
    setup, exercises, current = [], {}, None
    for cell in notebook.cells:
        if cell.cell_type == "markdown" and cell.source.lstrip().startswith(HEADING):
            current = cell.source.lstrip().splitlines()[0].lstrip("# ").strip()
            exercises[current] = []
        elif cell.cell_type == "code":
            (setup if current is None else exercises[current]).append(code(cell))
    return setup, exercises


def bound_and_read(source):
    """(names the code binds at module level, global names it reads anywhere), by Python's own symbol tables."""
    table = symtable.symtable(source, "<cell>", "exec")
    bound = {s.get_name() for s in table.get_symbols() if s.is_assigned() or s.is_imported()}
    read, stack = set(), [table]
    while stack:
        scope = stack.pop()
        stack += scope.get_children()
        for symbol in scope.get_symbols():
            is_module_level = scope.get_type() == "module"
            if symbol.is_referenced() and (is_module_level or symbol.is_global()):
                read.add(symbol.get_name())
    return bound, read


def missing_names(notebook, setup_notebook=None):
    """{exercise: names it reads that neither the set-up cells, the exercise itself nor Python define}.

    The set-up cells are those of ``setup_notebook`` if given (the template a learner starts from), else the
    notebook's own.
    """
    setup, exercises = sections(notebook)
    if setup_notebook is not None:
        setup = sections(setup_notebook)[0]
    available = set(dir(builtins)) | bound_and_read("\n\n".join(setup))[0]
    found = {}
    for exercise, cells in exercises.items():
        bound, read = bound_and_read("\n\n".join(cells))
        missing = sorted(read - bound - available)
        if missing:
            found[exercise] = missing
    return found


TEMPLATES = course_files("exercises.ipynb")


@pytest.mark.parametrize("template", TEMPLATES, ids=[str(p.parent.relative_to(ROOT)) for p in TEMPLATES])
@pytest.mark.parametrize("name", ["exercises.ipynb", "exercise-solutions.ipynb"])
def test_every_exercise_needs_only_the_setup_cells(template, name):
    """The template's exercises, and the worked solutions, run after the template's set-up cells alone."""
    setup_notebook = nbformat.read(template, as_version=4)
    notebook = nbformat.read(template.with_name(name), as_version=4)
    assert sections(notebook)[1], f"{name} has no '{HEADING}' sections"
    assert missing_names(notebook, setup_notebook) == {}, \
        (f"{template.parent.relative_to(ROOT)}/{name}: exercises use names that only other exercises define "
         "(import them in the set-up cells of exercises.ipynb and exercise-solutions.ipynb)")


def test_a_name_from_another_exercise_is_found():
    notebook = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("import json\nfrom pathlib import Path"),
        nbformat.v4.new_markdown_cell("## Exercise 1.1: a"),
        nbformat.v4.new_code_cell("from text import tokenize\n\ndef count(s):\n    return len(tokenize(s))"),
        nbformat.v4.new_markdown_cell("## Exercise 1.2: b"),
        nbformat.v4.new_code_cell("%time x = 1\ndef words(s):\n    n = len(s)\n    return tokenize(s), json.dumps(n)"),
        nbformat.v4.new_code_cell("print(words(Path('a').name), [w for w in 'ab'])"),
    ])
    assert missing_names(notebook) == {"Exercise 1.2: b": ["tokenize"]}
    template = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import json")])
    assert missing_names(notebook, template) == {"Exercise 1.2: b": ["Path", "tokenize"]}
