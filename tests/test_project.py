"""The project set-up stays consistent: environment.yml vs pyproject.toml, CI, Makefile."""
import re
import subprocess
import sys
from pathlib import Path

import pytest
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
    low = tuple(int(v) for v in re.search(r">=\s*([\d.]+)", PYPROJECT["project"]["requires-python"]).group(1).split("."))
    assert version >= low


def test_the_pinned_torch_of_environment_and_makefile_is_inside_the_pyproject_range():
    from packaging.specifiers import SpecifierSet

    torch_req = next(r for r in PYPROJECT["project"]["dependencies"] if _name(r) == "torch")
    spec = SpecifierSet(torch_req[len("torch"):])
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
    code = ("import sys; sys.modules['torchvision'] = None; import tspike_lab, tspike_lab.data, "
            "tspike_lab.models; print('ok')")
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
    for spec in (SpecifierSet(torch_req[len("torch"):]), SpecifierSet(PYPROJECT["project"]["requires-python"])):
        assert {s.operator for s in spec} == {">=", "<"}, spec
    assert "2.11.0" in SpecifierSet(torch_req[len("torch"):])  # the GPU image's torch (Python 3.12)
