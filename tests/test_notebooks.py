"""Static checks of notebooks/*.ipynb (running them is `pytest --nbval`, from the repository root).

Committed stripped (no outputs, no execution counts, no saved widget state), a title, at
least one assert, the `python3` kernel, thin (no class definitions, no .show()), every figure
drawn from the notebook's own data (plot defaults run in tests/test_viz.py), and every figure
or widget with prose before it (what to look at) and after it (what it shows).
"""

import ast
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from tspike_lab import viz

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
EXPECTED = [
    "01_information_loss",
    "02_ternary_neuron",
    "03_training",
    "04_membrane_distributions",
    "05_reparameterization",
    "06_results",
]


def _code(nb) -> list[str]:
    return [c.source for c in nb.cells if c.cell_type == "code"]


def _read(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    return nb


def test_the_series_has_its_six_notebooks():
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
        shows = [
            n
            for n in ast.walk(tree)
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "show"
        ]
        assert not shows, "call .show(): let the cell display the figure"


def _viz_calls(src: str) -> list[ast.Call]:
    return [
        n
        for n in ast.walk(ast.parse(src))
        if isinstance(n, ast.Call)
        and isinstance(n.func, ast.Attribute)
        and isinstance(n.func.value, ast.Name)
        and n.func.value.id == "viz"
        and n.func.attr.startswith("plot_")
    ]


def _shows_something(src: str) -> bool:
    """A cell that draws a figure (viz.plot_*) or builds a widget panel (widgets.*_panel, train_live)."""
    return bool(_viz_calls(src)) or bool(re.search(r"\bwidgets\.(\w+_panel|train_live)\(", src))


def test_every_figure_shows_the_notebooks_own_data_never_a_plot_default(notebook):
    _, nb = notebook
    calls = [c for src in _code(nb) for c in _viz_calls(src)]
    assert calls, "no viz.plot_* figure"
    assert {c.func.attr for c in calls} <= set(viz.__all__), sorted({c.func.attr for c in calls} - set(viz.__all__))
    defaults = [f"viz.{c.func.attr}()" for c in calls if not c.args and not c.keywords]
    assert not defaults, f"figures drawn from defaults (exercise those in tests/test_viz.py): {defaults}"


def test_every_figure_and_widget_has_prose_before_it_and_after_it(notebook):
    _, nb = notebook
    cells = nb.cells
    lonely = []
    for i, cell in enumerate(cells):
        if cell.cell_type != "code" or not _shows_something(cell.source):
            continue
        before = i > 0 and cells[i - 1].cell_type == "markdown"
        after = i + 1 < len(cells) and cells[i + 1].cell_type == "markdown"
        if not (before and after):
            lonely.append(
                f"cell {i} ({cell.source.strip().splitlines()[-1][:60]}): "
                f"{'' if before else 'no markdown before'}{'' if before or after else ', '}"
                f"{'' if after else 'no markdown after'}"
            )
    assert not lonely, lonely


def test_every_section_ends_with_asserts_on_what_it_teaches(notebook):
    _, nb = notebook
    sections, title = {}, None
    for cell in nb.cells:
        if cell.cell_type == "markdown" and cell.source.startswith("## "):
            title = cell.source.splitlines()[0]
        elif cell.cell_type == "code" and title:
            sections.setdefault(title, []).append(cell.source)
    assert sections, "no '## ' section"
    unchecked = [
        t for t, srcs in sections.items() if not any(isinstance(n, ast.Assert) for n in ast.walk(ast.parse(srcs[-1])))
    ]
    assert not unchecked, f"sections whose last code cell asserts nothing: {unchecked}"


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


def _collected(*args: str) -> list[str]:
    """Node ids pytest collects from the repository root with these arguments (no test runs)."""
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return [line.strip() for line in out.stdout.splitlines() if "::" in line]


@pytest.mark.slow  # two pytest collections in subprocesses
def test_pytest_nbval_from_the_root_runs_every_learning_notebook_and_no_reproduction_notebook():
    # `pytest --nbval`, the design card's command: testpaths names tests and notebooks
    # (test modules skipped here only to spare importing them all; tests/ holds no notebook)
    notebooks = {node.split("::")[0] for node in _collected("--nbval", "--ignore-glob=tests/*") if ".ipynb::" in node}
    assert notebooks == {f"notebooks/{p.name}" for p in NOTEBOOKS}  # reproduce/*.ipynb: papermill tests instead
    # plain `pytest` from the root collects, so executes, no notebook
    assert not [node for node in _collected("--ignore-glob=tests/*") if ".ipynb" in node]


# --------------------------------------------------------------------------- measured numbers in prose
# Constants of the lessons, the only decimals, percentages and approximate numbers markdown may quote
# (what is measured is printed or displayed by a code cell, so it is true on every machine).
LESSON_CONSTANTS = {
    "*": {  # the whole series: the neuron (beta, threshold), the paper's recipe, log2(3)
        "0.25",
        "0.5",
        "0.9",
        "1.585",
        "0.585",
    },
    "01_information_loss": {"1.5"},  # a trainable amplitude the reader may set
    "02_ternary_neuron": {"0.6", "0.45", "0.4", "0.3", "1.5", "1.7", "0.025"},  # currents, a, one reset worked by hand
    "03_training": set(),
    "04_membrane_distributions": set(),
    "05_reparameterization": {
        "4.6",
        "0.9",
        "12.5",
        "0.077",
        "3.7",
        "3.54",
        "71.20",
        "79.21",
        "0.11",
        "0.23",
        "50.14",
        "51.20",
    },  # 45 nm prices; Table 5's printed columns and its prices
    "06_results": set(),
}
_NUMBER = r"\d+(?:,\d{3})*(?:\.\d+)?"
_QUOTED = re.compile(
    rf"(?<![\w.])(?:"
    rf"(?:about|roughly|around|nearly|almost|approximately|~|≈|\\approx)\s*\$?\s*[-−+±]?\s*(?P<approx>{_NUMBER})"  # ~5
    rf"|(?P<decimal>\d+\.\d+)"  # 0.82
    rf"|(?P<share>{_NUMBER})(?:\s*(?:-|–|to)\s*(?P<share_to>{_NUMBER}))?\s*(?:\\?%|percent\b|pp\b|points?\b)"  # 65-95%
    rf")"
)


def _quoted_numbers(text: str) -> list[str]:
    """The numbers a markdown text quotes as results: decimals, percentages or accuracy points, approximations."""
    text = re.sub(r"(?m)^(?: {4}|\t).*$", "", text)  # indented code blocks (commands)
    found = []
    for m in _QUOTED.finditer(text):
        found += [v for k, v in m.groupdict().items() if v is not None]
    return found


def test_quoted_numbers_are_recognised_in_prose():
    text = "about 5, ±0.82 and 25 to 46 points, 65-95% used, 3 % more, ~7; Eq. 13-14, 360 images, T = 2, 8×8"
    assert _quoted_numbers(text) == ["5", "0.82", "25", "46", "65", "95", "3", "7"]
    assert _quoted_numbers("    papermill x.ipynb -p lr 0.1\nthe threshold 0.5") == ["0.5"]


def test_markdown_quotes_no_measured_number(notebook):
    """No markdown cell types in a number a run measures; prose that quotes a result prints it from the run.

    A markdown cell may quote a decimal number (``0.82``), a share or accuracy gap (``65-95%``,
    ``3 pp``, ``6 to 10 points``) or an approximate number (``about 5``, ``~7``, ``≈ 0.6``) only if
    it is one of the lesson's constants in ``LESSON_CONSTANTS`` (the series-wide ones under "*",
    then the notebook's own: parameters, prices, the paper's printed values). Anything else is
    a measurement: it belongs in a code cell's printed sentence or ``IPython.display.Markdown``
    output, computed from the run, so it stays true on every CPU, thread count and torch.
    Integers without a unit (360 images, Eq. 13-14, T = 2) are not checked: counts and names.
    """
    path, nb = notebook
    allowed = LESSON_CONSTANTS["*"] | LESSON_CONSTANTS.get(path.stem, set())
    typed = [
        (i, n)
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "markdown"
        for n in _quoted_numbers(cell.source)
        if n.replace(",", "") not in {a.replace(",", "") for a in allowed}
    ]
    assert not typed, f"measured numbers typed into markdown (cell, number): {typed}"
