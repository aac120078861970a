"""Static checks of notebooks/*.ipynb (running them is `pytest --nbval notebooks`).

Committed stripped (no outputs, no execution counts, no saved widget state), a title, at
least one assert, the `python3` kernel, thin (no class definitions, no .show()), and every
viz.plot_* a notebook uses is also called once with its defaults.
"""
import ast
import re
from pathlib import Path

import nbformat
import pytest

from tspike_lab import viz

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
EXPECTED = ["01_information_loss", "02_ternary_neuron", "03_training", "04_membrane_distributions",
            "05_reparameterization", "06_results"]


def _code(nb) -> list[str]:
    return [c.source for c in nb.cells if c.cell_type == "code"]


def _read(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    return nb


def test_the_notebooks_of_the_issue_exist():
    assert set(EXPECTED) <= {p.stem for p in NOTEBOOKS}


@pytest.fixture(params=NOTEBOOKS, ids=lambda p: p.stem)
def notebook(request):
    return request.param, _read(request.param)


def test_notebook_is_committed_without_outputs_or_execution_counts(notebook):
    _, nb = notebook
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"cell {i} has outputs"
            assert cell.execution_count is None, f"cell {i} has execution_count {cell.execution_count}"
    assert "widgets" not in nb.metadata, "saved widget state in the notebook metadata"


def test_notebook_opens_with_a_title_markdown_cell(notebook):
    _, nb = notebook
    first = nb.cells[0]
    assert first.cell_type == "markdown" and re.match(r"# \S", first.source), first.source[:80]


def test_notebook_asserts_the_numbers_it_teaches(notebook):
    _, nb = notebook
    asserts = [n for src in _code(nb) for n in ast.walk(ast.parse(src)) if isinstance(n, ast.Assert)]
    assert asserts, "no assert in any code cell"


def test_notebook_runs_on_the_python3_kernel(notebook):
    _, nb = notebook
    assert nb.metadata.kernelspec.name == "python3"


def test_notebook_is_thin_no_classes_and_nothing_shown_by_hand(notebook):
    _, nb = notebook
    for src in _code(nb):
        tree = ast.parse(src)
        assert not any(isinstance(n, ast.ClassDef) for n in ast.walk(tree)), "class defined in a notebook"
        shows = [n for n in ast.walk(tree)
                 if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "show"]
        assert not shows, "call .show(): let the cell display the figure"


def _viz_calls(nb) -> list[ast.Call]:
    return [n for src in _code(nb) for n in ast.walk(ast.parse(src))
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
            and isinstance(n.func.value, ast.Name) and n.func.value.id == "viz" and n.func.attr.startswith("plot_")]


def test_every_plot_function_a_notebook_uses_is_called_once_with_defaults(notebook):
    _, nb = notebook
    calls = _viz_calls(nb)
    used = {c.func.attr for c in calls}
    with_defaults = {c.func.attr for c in calls if not c.args and not c.keywords}
    assert used, "no viz.plot_* figure"
    assert used <= set(viz.__all__), sorted(used - set(viz.__all__))
    assert used == with_defaults, f"never called with defaults: {sorted(used - with_defaults)}"


def test_notebook_builds_an_ipywidgets_panel(notebook):
    from tspike_lab import widgets

    _, nb = notebook
    called = {m.group(1) for src in _code(nb) for m in re.finditer(r"\bwidgets\.(\w+)\(", src)}
    panels = called & {n for n in widgets.__all__ if n.endswith("_panel") or n == "train_live"}
    assert panels, "no widgets panel"


def test_notebook_cells_with_a_function_are_short_and_checked_against_the_library(notebook):
    _, nb = notebook
    for src in _code(nb):
        funcs = [n for n in ast.walk(ast.parse(src)) if isinstance(n, ast.FunctionDef)]
        for f in funcs:
            assert f.end_lineno - f.lineno < 15, f"function {f.name} is long: move it into tspike_lab"
            assert "assert" in src, f"function {f.name} is not checked against the library in its cell"
