"""The project set-up stays consistent: environment.yml vs pyproject.toml, CI, Makefile."""

import re
import subprocess
import sys
from pathlib import Path

import yaml

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the test extra installs tomli
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
ENV = yaml.safe_load((ROOT / "environment.yml").read_text())


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[ ;]", req, maxsplit=1)[0].strip().lower()


def test_environment_yml_installs_python_pip_and_the_package_through_pip():
    deps = ENV["dependencies"]
    conda = [d for d in deps if isinstance(d, str)]
    pip = next(d["pip"] for d in deps if isinstance(d, dict))
    assert any(d.startswith("python") for d in conda) and "pip" in conda
    editable = [p for p in pip if p.startswith("-e .")]
    assert len(editable) == 1
    extras = set(re.search(r"\[(.*)\]", editable[0]).group(1).split(","))
    assert extras <= set(PYPROJECT["project"]["optional-dependencies"])
    assert {"lab", "reproduce", "test"} <= extras


def test_environment_python_satisfies_requires_python():
    py = next(d for d in ENV["dependencies"] if isinstance(d, str) and d.startswith("python"))
    version = tuple(int(v) for v in py.split("=")[-1].split(".")[:2])
    low = tuple(
        int(v) for v in re.search(r">=\s*([\d.]+)", PYPROJECT["project"]["requires-python"]).group(1).split(".")
    )
    assert version >= low


def test_the_pinned_torch_of_environment_and_makefile_is_inside_the_pyproject_range():
    from packaging.specifiers import SpecifierSet

    torch_req = next(r for r in PYPROJECT["project"]["dependencies"] if _name(r) == "torch")
    spec = SpecifierSet(torch_req[len("torch") :])
    pip = next(d["pip"] for d in ENV["dependencies"] if isinstance(d, dict))
    pinned = [p.split("==")[1] for p in pip if _name(p) == "torch"]
    make_pins = re.findall(r"torch==([\d.]+)", (ROOT / "Makefile").read_text())
    assert pinned == ["2.13.0"] and set(make_pins) == {"2.13.0"}
    assert "2.13.0" in spec


def test_core_dependencies_are_torch_snntorch_numpy_plotly_ipywidgets_tqdm_and_torchvision_is_optional():
    core = {_name(r) for r in PYPROJECT["project"]["dependencies"]}
    assert {"torch", "snntorch", "numpy", "plotly", "ipywidgets", "tqdm"} <= core
    assert "torchvision" not in core
    assert any(_name(r) == "torchvision" for r in PYPROJECT["project"]["optional-dependencies"]["vision"])


def test_importing_the_library_never_imports_torchvision():
    code = (
        "import sys; sys.modules['torchvision'] = None; import tspike_lab, tspike_lab.data, "
        "tspike_lab.models; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, re.M)
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme and "make demo" in readme


def test_the_torch_and_python_ranges_are_closed_above_so_an_untested_release_is_not_admitted():
    from packaging.specifiers import SpecifierSet

    torch_req = next(r for r in PYPROJECT["project"]["dependencies"] if _name(r) == "torch")
    for spec in (SpecifierSet(torch_req[len("torch") :]), SpecifierSet(PYPROJECT["project"]["requires-python"])):
        assert {s.operator for s in spec} == {">=", "<"}, spec
    assert "2.11.0" in SpecifierSet(torch_req[len("torch") :])  # the GPU image's torch (Python 3.12)


# --------------------------------------------------------------------------- the package's structure


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
    """``{module: {tspike_lab modules it imports}}``: every import statement, at module level or inside a
    function (a lazy import that only hides a circle is still a circle), ``TYPE_CHECKING`` blocks excepted."""
    import ast

    files = {_module_name(p): p for p in (ROOT / "tspike_lab").rglob("*.py")}
    graph = {}
    for name, path in files.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        tree, targets = ast.parse(path.read_text(encoding="utf-8")), set()
        skip = {
            id(n)
            for node in ast.walk(tree)
            if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING"
            for n in ast.walk(node)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names if a.name in files}
            elif isinstance(node, ast.ImportFrom) and id(node) not in skip:
                base = (
                    ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
                    if node.level
                    else node.module
                )
                if base in files:
                    targets |= {f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names}
        graph[name] = targets - {name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_import_graph_reader_finds_a_circle_inside_a_package():
    assert _cycles({"p": {"p.a"}, "p.a": {"p.b"}, "p.b": {"p.a"}, "q": set()}) == [["p.a", "p.b"]]
    graph = _import_graph()
    assert "tspike_lab.data.registry" in graph["tspike_lab.data"]  # from .registry import ...
    assert "tspike_lab.models" in graph["tspike_lab.config"]  # from .models import ...


def test_no_import_circle_anywhere_inside_or_across_packages():
    assert _cycles(_import_graph()) == []


def test_the_version_is_pyprojects_read_once_through_importlib_metadata():
    import importlib.metadata

    import tspike_lab

    assert tspike_lab.__version__ == importlib.metadata.version("tspike_lab") == PYPROJECT["project"]["version"]
    assert PYPROJECT["project"]["version"] not in (ROOT / "tspike_lab" / "__init__.py").read_text()


def test_fit_is_the_public_training_call():
    import tspike_lab
    import tspike_lab.train

    assert tspike_lab.fit is tspike_lab.train.train and tspike_lab.TrainConfig is tspike_lab.train.TrainConfig
