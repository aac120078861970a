"""The reproduction pipeline: parameters, data-source choice, table runs, metrics.json, aggregation, notebooks.

Tests named ``test_papermill_*`` execute the notebooks of reproduce/ in a kernel (a few seconds each).
"""
import ast
import io
import json
import re
import tarfile
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch

from tspike_lab import cli, reproduce
from tspike_lab.data import DataUnavailableError
from tspike_lab.train import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = {t: ROOT / "reproduce" / f"{t}.ipynb" for t in ("table1", "table2", "table3", "table4")}
AGGREGATE_NB = ROOT / "reproduce" / "aggregate.ipynb"
# a digits table run of a second or two: 2 neurons x 2 seeds, 2 optimizer steps each
TINY = dict(profile="smoke", dataset="digits", neurons=["binary", "ternary"], seeds=[0, 1], max_steps_per_epoch=2)


@pytest.fixture(autouse=True)
def one_thread_and_private_cache(monkeypatch, tmp_path):
    # OpenMP spin-waiting makes two threads crawl when another process holds a core.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setenv("TSPIKE_DATA", str(tmp_path / "data-cache"))
    yield
    torch.set_num_threads(before)


def _folders(out_dir: Path) -> list[Path]:
    return sorted(p for p in out_dir.iterdir() if p.is_dir()) if out_dir.exists() else []


# --------------------------------------------------------------------------- parameters


@pytest.mark.parametrize("table", list(reproduce.TABLES))
def test_every_profile_of_every_table_resolves_to_valid_train_configs(table):
    for profile in reproduce.PROFILES[table]:
        p = reproduce.validate_params(table, profile=profile)
        assert set(p) == set(reproduce.PARAMS)
        assert p["profile"] == profile and p["epochs"] >= 1 and p["seeds"] and p["archs"] and p["neurons"]


@pytest.mark.parametrize("name, value, allowed", [
    ("dataset", "mnist", r"dataset must be one of \['cifar10', 'cifar100', 'digits'\]"),
    ("archs", ["resnet50"], r"archs must be a list drawn from \[.*'resnet19'.*\] \(unknown arch 'resnet50'\)"),
    ("epochs", -3, r"epochs must be None \(the profile's value\) or an int >= 1, got -3"),
    ("profile", "full", r"profile must be one of \['paper', 'quick', 'smoke'\], got 'full'"),
    ("neurons", ["lif"], r"neurons must be a list drawn from \['binary', 'ternary', 'trainable_binary', "
                         r"'trainable_ternary'\]"),
    ("seeds", [0, 0], r"seeds must be a list without repeats"),
    ("num_steps", [0], r"num_steps must be None or a list of ints >= 1"),
    ("lr", -0.1, r"lr must be None \(the profile's value\) or a finite number > 0"),
    ("widths", [4], r"widths must be None unless archs include 'small'"),
    ("data_dir", "/no/such/folder", r"data_dir must be None or an existing folder or archive"),
    ("train_options", {"epochs": 3}, r"train_options must be a dict of TrainConfig fields other than"),
])
def test_a_bad_parameter_fails_naming_it_the_value_and_what_is_allowed(name, value, allowed):
    params = {"dataset": "cifar10", "archs": ["resnet19"]}
    params[name] = value
    with pytest.raises(ValueError, match=r"^table2: parameter " + allowed):
        reproduce.validate_params("table2", **params)


def test_an_unknown_parameter_or_table_is_refused_with_the_allowed_names():
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['epoch'\]; allowed: \['profile', 'dataset'"):
        reproduce.validate_params("table1", epoch=3)
    with pytest.raises(ValueError, match=r"table must be one of \['table1', 'table2', 'table3', 'table4'\]"):
        reproduce.validate_params("table5")


def test_parameters_left_none_take_the_profile_and_digits_swaps_in_the_small_network():
    paper = reproduce.validate_params("table2", dataset="cifar100")
    assert (paper["archs"], paper["num_steps"], paper["epochs"], paper["batch_size"]) == (["resnet19"], [2], 300, 128)
    smoke = reproduce.validate_params("table2", profile="smoke")
    assert smoke["dataset"] == "digits" and smoke["archs"] == ["small"]
    assert smoke["epochs"] == 1 and smoke["max_steps_per_epoch"] == 2
    real = reproduce.validate_params("table2", profile="smoke", dataset="cifar10")
    assert real["archs"] == ["resnet19"]  # smoke on the real data set keeps the paper's network
    imagenet = reproduce.validate_params("table3")
    assert imagenet["archs"] == ["resnet34"] and imagenet["num_steps"] == [4] and imagenet["seeds"] == [1000]
    assert imagenet["train_options"]["sync_bn"] is True


def test_list_parameters_accept_what_papermill_passes():
    p = reproduce.validate_params("table1", profile="smoke", seeds="0,1,2", num_steps=4, archs="small",
                                  widths="[1, 2]", neurons="ternary,binary", lr=1)
    assert (p["seeds"], p["num_steps"], p["archs"], p["widths"]) == ([0, 1, 2], [4], ["small"], [1, 2])
    assert p["neurons"] == ["ternary", "binary"] and p["lr"] == 1.0 and isinstance(p["lr"], float)
    with pytest.raises(ValueError, match="seeds must be None, a list of int or a comma-separated string"):
        reproduce.validate_params("table1", seeds="zero")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_a_cuda_device_is_refused_early_where_there_is_none():
    with pytest.raises(ValueError, match=r"device must be .*CUDA is not available on this machine, got 'cuda'"):
        reproduce.validate_params("table1", device="cuda")


# --------------------------------------------------------------------------- data sources


def _jpeg(seed: int) -> bytes:
    from PIL import Image

    arr = np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG")
    return buf.getvalue()


def _image_copy(root: Path, classes: int = 10, per_class: int = 2) -> Path:
    for split in ("train", "test"):
        for c in range(classes):
            d = root / split / f"class{c:02d}"
            d.mkdir(parents=True)
            for i in range(per_class):
                (d / f"{i}.jpg").write_bytes(_jpeg(c * 100 + i))
    return root


def test_a_cifar_layout_is_read_as_cifar_and_a_class_folder_copy_as_an_image_folder(tmp_path):
    canonical = tmp_path / "canon" / "cifar-10-batches-py"
    canonical.mkdir(parents=True)
    assert reproduce.resolve_data("cifar10", str(canonical.parent)).source == "cifar10"
    assert reproduce.resolve_data("cifar10", str(canonical)).source == "cifar10"
    archive = tmp_path / "dl" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    archive.write_bytes(b"")
    assert reproduce.resolve_data("cifar10", str(archive)).source == "cifar10"
    assert reproduce.resolve_data("cifar10", None).source == "cifar10"

    folder = _image_copy(tmp_path / "jpeg", classes=2, per_class=1)
    plan = reproduce.resolve_data("cifar10", str(folder))
    assert (plan.source, plan.label) == ("imagefolder", "CIFAR-10 (JPEG copy)")
    assert dict(plan.options) == dict(crop_padding=4, flip=True, autoaugment=True, cutout=16)  # the CIFAR recipe
    packed = tmp_path / "copy.tar.xz"
    with tarfile.open(packed, "w:xz") as tar:
        tar.add(folder / "train", arcname="train")
        tar.add(folder / "test", arcname="test")
    plan = reproduce.resolve_data("cifar100", str(packed))
    assert (plan.source, plan.label) == ("imagefolder", "CIFAR-100 (JPEG copy)")

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=r"table2: parameter data_dir '.*empty' is neither a CIFAR layout "
                                         r"\(cifar-10-batches-py/, cifar-10-python.tar.gz\) nor an image folder"):
        reproduce.validate_params("table2", dataset="cifar10", data_dir=str(empty))


def test_missing_cifar_fails_before_any_folder_naming_the_url_and_data_dir(tmp_path, monkeypatch):
    from tspike_lab.data import sources

    def offline(url, dest, md5=None, timeout=60.0):
        raise OSError("offline")

    monkeypatch.setattr(sources, "_download", offline)
    with pytest.raises(DataUnavailableError, match=r"https://www\.cs\.toronto\.edu/~kriz/cifar-10-python\.tar\.gz"
                                                   r".*data_dir"):
        reproduce.run_table("table2", dataset="cifar10", out_dir=str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_an_image_folder_copy_of_cifar10_trains_resnet19_and_sits_beside_the_paper(tmp_path):
    folder = _image_copy(tmp_path / "jpeg")
    run = reproduce.run_table("table2", profile="smoke", dataset="cifar10", data_dir=str(folder),
                              neurons=["trainable_ternary"], batch_size=4, max_steps_per_epoch=1,
                              max_eval_steps=1, out_dir=str(tmp_path / "out"))
    record = reproduce.load_run(run)
    assert record["data_source"] == "imagefolder" and record["dataset_label"] == "CIFAR-10 (JPEG copy)"
    assert record["train_config"]["autoaugment"] is True and record["train_config"]["cutout"] == 16
    [row] = reproduce.aggregate(run)
    assert (row["arch"], row["num_steps"], row["neuron"], row["n_seeds"]) == ("resnet19", 2, "trainable_ternary", 1)
    assert row["paper"] == 95.80 and row["paper_provenance"] == "secondary, confidence medium"
    assert row["diff"] == pytest.approx(row["mean"] - 95.80)
    assert row["std"] is None  # one seed: the spread is unknown, not 0
    text = reproduce.paper_table([row])
    assert "CIFAR-10 (JPEG copy)" in text and "95.80" in text and "smoke profile: plumbing only" in text


# --------------------------------------------------------------------------- table runs


def test_two_runs_into_one_out_dir_make_two_folders_that_aggregate_reads(tmp_path):
    out = tmp_path / "out"
    first = reproduce.run_table("table1", out_dir=str(out), **TINY)
    second = reproduce.run_table("table1", out_dir=str(out), **TINY)
    assert first != second and _folders(out) == sorted([first, second])
    for run in (first, second):
        record = reproduce.load_run(run)
        assert record["status"] == "complete" and record["planned"] == 4 and len(record["runs"]) == 4
        assert sorted(p.name for p in (run / "runs").iterdir()) == [
            "small-w8-binary-T2-s0", "small-w8-binary-T2-s1", "small-w8-ternary-T2-s0", "small-w8-ternary-T2-s1"]
        for r in record["runs"]:
            assert (run / r["run_dir"] / "metrics.jsonl").is_file() and (run / r["run_dir"] / "checkpoint.pt").is_file()
        env = record["environment"]
        assert env["torch"] == torch.__version__ and "git_commit" in env and "git_dirty" in env
        assert record["started_at"].endswith("+00:00") and record["wall_time_s"] > 0
    rows = reproduce.aggregate(out)
    assert len(rows) == 4 and {r["run"] for r in rows} == {first.name, second.name}
    for r in rows:
        assert r["n_seeds"] == 2 and r["seeds"] == [0, 1] and r["std"] is not None
        runs = [x["top1"] for x in reproduce.load_run(r["run_dir"])["runs"] if x["neuron"] == r["neuron"]]
        assert r["mean"] == pytest.approx(sum(runs) / 2)
        assert r["paper"] is None and r["paper_provenance"] is None  # table1's numbers are unknown: empty
    assert reproduce.aggregate([first]) == [r for r in rows if r["run"] == first.name]


def test_the_metrics_file_records_each_finished_run_and_a_killed_table_resumes(tmp_path, monkeypatch):
    calls = []
    real = reproduce._train_in_process

    def dies_on_the_third(config):
        calls.append(Path(config.out_dir).name)
        if len(calls) == 3:
            raise RuntimeError("killed")
        return real(config)

    monkeypatch.setattr(reproduce, "_train_in_process", dies_on_the_third)
    with pytest.raises(RuntimeError, match="killed"):
        reproduce.run_table("table1", out_dir=str(tmp_path), **TINY)
    [run] = _folders(tmp_path)
    partial = reproduce.load_run(run)
    assert partial["status"] == "failed" and partial["error"] == "RuntimeError: killed"
    assert [r["key"] for r in partial["runs"]] == ["small-w8-binary-T2-s0", "small-w8-ternary-T2-s0"]
    assert all(r["n_seeds"] == 1 for r in partial["aggregate"])  # seeds outermost: every row has n=1 already

    with pytest.raises(ValueError, match=r"resume: parameter\(s\) \['epochs'\] differ"):
        reproduce.run_table("table1", resume=run, epochs=5)
    calls.clear()
    assert reproduce.run_table("table1", resume=run) == run
    assert calls == ["small-w8-binary-T2-s1", "small-w8-ternary-T2-s1"]  # finished runs are not trained again
    done = reproduce.load_run(run)
    assert done["status"] == "complete" and len(done["runs"]) == 4 and "error" not in done
    assert done["started_at"] == partial["started_at"] and done["wall_time_s"] > partial["wall_time_s"]
    assert _folders(tmp_path) == [run]


def test_validate_metrics_names_what_is_missing_or_mistyped(tmp_path):
    run = reproduce.run_table("table1", out_dir=str(tmp_path), **{**TINY, "seeds": [0], "neurons": ["ternary"]})
    record = json.loads((run / "metrics.json").read_text())
    assert reproduce.validate_metrics(record) is record
    del record["environment"]["git_commit"]
    record["runs"][0]["top1"] = "high"
    record.pop("wall_time_s")
    with pytest.raises(ValueError) as err:
        reproduce.validate_metrics(record)
    msg = str(err.value)
    assert "metrics lacks 'wall_time_s'" in msg
    record["wall_time_s"] = 1.0
    with pytest.raises(ValueError) as err:
        reproduce.validate_metrics(record)
    msg = str(err.value)
    assert "metrics['environment'] lacks 'git_commit'" in msg
    assert "metrics['runs'][0]['top1'] must be int or float or NoneType, got str" in msg


def _record_like(run: Path, **changes) -> Path:
    """A copy of a table run whose record claims another table/data set/arch (to exercise the paper lookup)."""
    record = reproduce.load_run(run)
    record.update({k: v for k, v in changes.items() if k in ("table", "dataset", "dataset_label")})
    for r in record["runs"]:
        r.update({k: v for k, v in changes.items() if k in ("arch", "num_steps", "width")})
    dest = run.parent / f"{run.name}-as-{changes['dataset']}"
    dest.mkdir()
    (dest / "metrics.json").write_text(json.dumps(record))
    return dest


def test_aggregate_puts_the_paper_number_its_provenance_and_the_difference_beside_ours(tmp_path):
    run = reproduce.run_table("table4", out_dir=str(tmp_path), **{**TINY, "neurons": ["trainable_ternary"]})
    dvs = _record_like(run, table="table4", dataset="cifar10-dvs", dataset_label="CIFAR10-DVS", arch="resnet19",
                       num_steps=10, width=None)
    [row] = [r for r in reproduce.aggregate(tmp_path) if r["run"] == dvs.name]
    assert row["paper"] == 79.84 and row["paper_provenance"] == "secondary, confidence low"
    assert "architecture is unclear" in row["paper_note"] and "also reported: 80.30" in row["paper_note"]
    assert row["diff"] == pytest.approx(row["mean"] - 79.84)
    text = reproduce.paper_table([row])
    assert "79.84 [1]" in text and "[1] citing papers disagree" in text and "secondary, confidence low" in text
    # the plain ternary rows of table2: the note says the variant is uncertain
    assert "variant" in reproduce.paper_number("table2", "cifar10", "resnet19", 2, "ternary")["note"]
    assert reproduce.paper_number("table2", "cifar10", "resnet19", 4, "ternary") is None  # unknown: never invented
    assert reproduce.paper_number("table1", "cifar10", "resnet20", 2, "ternary") is None


def test_paper_numbers_are_all_secondary_with_a_confidence_and_a_source():
    entries = reproduce.paper_numbers()["entries"]
    assert entries and all(e["provenance"] == "secondary" and e["confidence"] and e["source"] for e in entries)
    assert "| table2 | CIFAR-10 | resnet19 | 2 | trainable_ternary | 95.80 | secondary | medium |" in \
        reproduce.paper_numbers_markdown("table2")
    assert "No paper number is known for table1" in reproduce.paper_numbers_markdown("table1")


def test_plot_table_draws_a_width_sweep_as_lines_and_a_table_as_bars_beside_the_paper():
    base = dict(table="table1", dataset="digits", dataset_label="digits", arch="small", num_steps=1, n_seeds=3,
                std=1.0, paper=None, hardware="cpu", profile="cpu", run="r")
    sweep = [dict(base, width=w, neuron=n, mean=50.0 + w) for w in (1, 2, 4) for n in ("binary", "ternary")]
    fig = reproduce.plot_table(sweep)
    assert [t.type for t in fig.data] == ["scatter", "scatter"] and list(fig.data[0].x) == [1, 2, 4]
    bars = [dict(base, width=None, neuron="ternary", mean=94.0, paper=95.6)]
    fig = reproduce.plot_table(bars)
    assert [(t.type, t.name, list(t.y)) for t in fig.data] == [("bar", "ours", [94.0]),
                                                              ("bar", "paper (secondary)", [95.6])]


def test_train_cli_args_rebuild_the_same_config_for_torchrun():
    parser = cli.build_parser()
    for config in (TrainConfig(), TrainConfig(dataset="imagenet", data_dir="/data/in1k", arch="resnet34",
                                              num_steps=4, seed=1000, batch_size=40, sync_bn=True, amp=False,
                                              lr=0.1, weight_decay=1e-4, max_steps_per_epoch=5, out_dir="runs/x")):
        args = reproduce.train_cli_args(config)
        assert cli.config_from_args(parser.parse_args(["train", *args])) == config


@pytest.mark.slow
def test_table3_trains_through_torchrun_when_given_several_processes(tmp_path):
    run = reproduce.run_table("table3", profile="smoke", device="cpu", nproc_per_node=2,
                              out_dir=str(tmp_path), max_steps_per_epoch=2)
    record = reproduce.load_run(run)
    assert record["launcher"] == "torchrun --nproc_per_node 2" and "torchrun 2 processes" in record["hardware"]
    [r] = record["runs"]
    assert r["status"] == "complete" and r["epochs"] == 1 and r["top1"] is not None
    rows = [json.loads(x) for x in (run / r["run_dir"] / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 2 and r["top1"] == pytest.approx(100 * rows[-1]["test_acc"])


def test_the_aggregate_command_prints_every_run(tmp_path, capsys):
    reproduce.run_table("table1", out_dir=str(tmp_path), **{**TINY, "seeds": [0]})
    assert reproduce.main(["aggregate", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("**table1** · digits") and "| small | 8 | 2 | binary | 1 |" in out


# --------------------------------------------------------------------------- notebooks


def _params_cell(nb):
    [cell] = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    return cell


@pytest.mark.parametrize("path", [*NOTEBOOKS.values(), AGGREGATE_NB], ids=lambda p: p.stem)
def test_reproduction_notebook_is_a_stripped_titled_record_with_one_commented_parameters_cell(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    assert nb.cells[0].cell_type == "markdown" and re.match(r"# \S", nb.cells[0].source)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None
    assignments = [line for line in _params_cell(nb).source.splitlines()
                   if re.match(r"^\w+\s*:", line)]
    assert assignments and all(re.search(r"=.*\S\s+#\s*\S", line) for line in assignments), assignments
    tree = ast.parse(_params_cell(nb).source)
    for node in tree.body:
        if isinstance(node, ast.AnnAssign):
            ast.literal_eval(node.value)  # typed literals only


@pytest.mark.parametrize("table", list(NOTEBOOKS))
def test_table_notebook_names_the_paper_table_and_validates_before_its_one_library_call(table):
    nb = nbformat.read(NOTEBOOKS[table], as_version=4)
    assert f"# Table {table[-1]}" in nb.cells[0].source and "Guo et al." in nb.cells[0].source
    code = [c for c in nb.cells if c.cell_type == "code"]
    validate = [i for i, c in enumerate(code) if "validate" in c.metadata.get("tags", [])]
    runs = [i for i, c in enumerate(code) if "reproduce.run_table(" in c.source]
    assert len(validate) == 1 and len(runs) == 1 and validate[0] < runs[0]
    names = {n.target.id for n in ast.parse(_params_cell(nb).source).body if isinstance(n, ast.AnnAssign)}
    assert {"dataset", "data_dir", "archs", "neurons", "num_steps", "seeds", "epochs", "batch_size", "lr",
            "profile", "out_dir", "device"} <= names
    assert names <= set(reproduce.PARAMS)


def _execute(path, out_dir, tmp_path, **parameters):
    import papermill

    output = tmp_path / f"out-{path.stem}.ipynb"
    papermill.execute_notebook(str(path), str(output), parameters=dict(out_dir=str(out_dir), **parameters),
                               kernel_name="python3", cwd=str(tmp_path), progress_bar=False)
    return nbformat.read(output, as_version=4)


@pytest.mark.slow
@pytest.mark.parametrize("table", list(NOTEBOOKS))
def test_papermill_smoke_run_of_each_table_notebook_writes_a_valid_metrics_json(table, tmp_path):
    out = tmp_path / "results"
    nb = _execute(NOTEBOOKS[table], out, tmp_path, profile="smoke", dataset="digits")
    [run] = _folders(out)
    record = reproduce.load_run(run)  # validates against METRICS_SCHEMA
    assert record["table"] == table and record["status"] == "complete" and record["profile"] == "smoke"
    assert record["dataset"] == "digits" and len(record["runs"]) == record["planned"] >= 1
    shown = "".join(o.get("data", {}).get("text/markdown", "") for c in nb.cells if c.cell_type == "code"
                    for o in c.outputs)
    assert f"**{table}** · digits" in shown and "ours top-1 % (mean ± std)" in shown


@pytest.mark.slow
@pytest.mark.parametrize("name, value, message", [
    ("dataset", "mnist", "dataset must be one of ['cifar10', 'cifar100', 'digits']"),
    ("archs", ["resnet50"], "archs must be a list drawn from"),
    ("epochs", -1, "epochs must be None (the profile's value) or an int >= 1, got -1"),
])
def test_papermill_bad_parameter_stops_in_the_validation_cell_before_any_training(name, value, message, tmp_path):
    import papermill

    out = tmp_path / "results"
    with pytest.raises(papermill.PapermillExecutionError) as err:
        _execute(NOTEBOOKS["table2"], out, tmp_path, profile="smoke", **{name: value})
    assert err.value.ename == "ValueError" and message in err.value.evalue
    assert "reproduce.validate_params(" in err.value.source and "run_table" not in err.value.source
    assert not out.exists()  # no run folder: nothing was trained


@pytest.mark.slow
def test_papermill_aggregate_notebook_shows_every_run_under_out_dir(tmp_path):
    out = tmp_path / "results"
    reproduce.run_table("table1", out_dir=str(out / "table1"), **{**TINY, "seeds": [0]})
    reproduce.run_table("table2", out_dir=str(out / "table2"), profile="smoke", seeds=[0])
    nb = _execute(AGGREGATE_NB, out, tmp_path)
    shown = "".join(o.get("data", {}).get("text/markdown", "") for c in nb.cells if c.cell_type == "code"
                    for o in c.outputs)
    assert "**table1** · digits" in shown and "**table2** · digits" in shown
