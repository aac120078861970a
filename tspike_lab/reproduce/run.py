"""Train a table: every planned run once, in this process, side by side on the CPU, or under torchrun.

``run_table`` makes a new folder ``<out_dir>/<table>-<time>-<hex>/`` (never another run's),
trains every planned run into ``runs/<key>/`` and rewrites ``metrics.json`` atomically after
each one, so a killed table keeps what it finished and ``run_table(table, resume=folder)``
continues it. The folder is locked while a process trains in it.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import logging
import math
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import data
from ..config import TrainConfig
from ..energy import conv_macs, count_ops, linear_macs
from ..errors import ConfigError, RunFolderError, TrainingDiverged
from ..hardware import resolve_device
from ..results import environment, json_safe, lock_folder, new_run_dir, write_json_atomic
from ..train import best_epoch, param_groups, read_metrics, train
from .paper import TABLES
from .plan import (
    CPU_MAX_HOURS,
    PARAMS,
    PLUMBING_DATASET,
    PROFILES,
    RECIPES,
    TABLE_RECIPE,
    PlannedRun,
    plan,
    validate_params,
)
from .records import METRICS_FILE, SCHEMA_VERSION, fmt_duration, load_run, rows_from_record

__all__ = ["run_table", "probe_data", "estimate", "check_cost", "estimate_from_flops", "test_batch"]

logger = logging.getLogger(__name__)


def _pct(x: Any) -> float | None:
    return None if x is None or not math.isfinite(float(x)) else 100.0 * float(x)


def _identity(run: PlannedRun) -> dict[str, Any]:
    """What a ``runs`` entry of metrics.json names its run by (the table's data set, not the source read)."""
    c = run.config
    return {
        "key": run.key,
        "dataset": c.dataset,
        "arch": c.arch,
        "width": c.width,
        "neuron": c.neuron,
        "num_steps": c.num_steps,
        "seed": c.seed,
    }


def _run_record(run: PlannedRun, epochs: list[dict[str, Any]], wall: float) -> dict[str, Any]:
    final = epochs[-1] if epochs else {}
    best = best_epoch(epochs)
    speeds = [
        e["images_per_s"] for e in epochs if e.get("images_per_s") is not None and math.isfinite(e["images_per_s"])
    ]
    return json_safe(
        {
            **_identity(run),
            "run_dir": f"runs/{run.key}",
            "status": "complete",
            "epochs": len(epochs),
            "top1": _pct(final.get("test_acc")),
            "best_top1": _pct(best["best_test_acc"]),
            "best_epoch": best["best_epoch"],
            "train_top1": _pct(final.get("train_acc")),
            "test_loss": final.get("test_loss"),
            "firing_rate": final.get("firing_rate"),
            "amplitudes": final.get("amplitudes"),
            "images_per_s": sum(speeds) / len(speeds) if speeds else None,
            "epoch_time_s": sum(e.get("epoch_time_s") or 0.0 for e in epochs),
            "wall_time_s": float(wall),
        }
    )


def _failed_record(run: PlannedRun, status: str, error: str) -> dict[str, Any]:
    return {**_run_record(run, [], 0.0), "status": status, "error": error}


def _train_in_process(config: TrainConfig) -> tuple[list[dict[str, Any]], float]:
    t0 = time.perf_counter()
    history = train(config)
    return history.epochs, time.perf_counter() - t0


def _train_in_worker(config_dict: dict[str, Any]) -> tuple[list[dict[str, Any]], float]:
    return _train_in_process(TrainConfig.from_dict(config_dict))


def _worker_init(threads: int) -> None:
    torch.set_num_threads(threads)


def torchrun_command(config_file: str | os.PathLike, nproc: int) -> list[str]:
    """``torchrun --standalone --nproc_per_node N -m tspike_lab train --config FILE``, as an argument list.

    ``config_file`` holds the run's ``TrainConfig.to_dict()`` as JSON: every process rebuilds the
    same config from it (:func:`tspike_lab.cli.config_from_args`).
    """
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        str(nproc),
        "-m",
        "tspike_lab",
        "train",
        "--config",
        os.fspath(config_file),
    ]


def _train_torchrun(config: TrainConfig, nproc: int) -> tuple[list[dict[str, Any]], float]:
    """One training run under torchrun, the config passed as a JSON file (:func:`torchrun_command`)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    }
    env.setdefault("PYTHONFAULTHANDLER", "1")  # a worker that dies on a signal prints where it was
    if resolve_device(config.device).type == "cpu":
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    with tempfile.TemporaryDirectory(prefix="tspike-torchrun-") as tmp:
        config_file = Path(tmp) / "config.json"
        config_file.write_text(json.dumps(config.to_dict()), encoding="utf-8")
        cmd = torchrun_command(config_file, nproc)
        logger.info("launching %s (config %s)", " ".join(cmd), json.dumps(config.to_dict()))
        t0 = time.perf_counter()
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
    last = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ""
    if done.returncode == 3:
        raise TrainingDiverged(last or "diverged")
    if done.returncode != 0:
        raise RuntimeError(f"torchrun exited with status {done.returncode}: {' '.join(cmd)}\n{done.stderr[-4000:]}")
    return read_metrics(config.out_dir), wall


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), None)
    except OSError:
        return None


def _hardware(env: Mapping[str, Any], device: str, nproc: int, workers: int) -> str:
    if device.startswith("cuda"):
        return f"{nproc}x {env.get('device_name')}" + (" (torchrun/DDP)" if nproc > 1 else "")
    extra = f", {workers} worker processes" if workers > 1 else ""
    extra += f", torchrun {nproc} processes" if nproc > 1 else ""
    return f"CPU {_cpu_model() or env.get('device_name')} ({env.get('cpu_count')} cores{extra})"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _lock(folder: Path):
    """An exclusive lock on a table run folder (closing the returned file releases it): a second process refuses
    before writing anything."""
    try:
        return lock_folder(folder)
    except BlockingIOError:
        raise RunFolderError(
            f"another process is running table run {str(folder)!r}; refusing to touch it "
            f"(wait for it, or resume it later)"
        ) from None


def _data_plans(runs: list[PlannedRun], data_dir: str | None) -> dict[str, Any]:
    return {ds: data.describe(ds, data_dir) for ds in dict.fromkeys(r.config.dataset for r in runs)}


def _nproc(table: str, device: str, nproc_per_node: int | None) -> int:
    if nproc_per_node is not None:
        return nproc_per_node
    if TABLES[table].ddp and device.startswith("cuda") and ":" not in device:
        return max(1, torch.cuda.device_count())
    return 1


def _new_record(table: str, p: dict[str, Any], plans: dict, runs: list, device: str, nproc: int) -> dict[str, Any]:
    env = environment()
    shared = runs[0].for_data(plans[runs[0].config.dataset], None).to_dict()
    for name in ("dataset", "data_dir", "arch", "width", "neuron", "num_steps", "seed", "out_dir"):
        shared.pop(name)
    recipe = PROFILES[table][p["profile"]].get("recipe")
    recipe_text = " ".join(
        dict.fromkeys(RECIPES[recipe or ("digits" if ds == PLUMBING_DATASET else TABLE_RECIPE[table])] for ds in plans)
    )
    workers = p["workers"]
    return {
        "schema": SCHEMA_VERSION,
        "table": table,
        "title": TABLES[table].title,
        "status": "running",
        "profile": p["profile"],
        "params": p,
        "datasets": {
            ds: {"label": _label(table, dp), "source": dp.source, "root": dp.root} for ds, dp in plans.items()
        },
        "recipe": recipe_text,
        "train_config": shared,
        "launcher": (
            f"torchrun --nproc_per_node {nproc}" if nproc > 1 else f"workers={workers}" if workers > 1 else "in-process"
        ),
        "environment": env,
        "hardware": _hardware(env, device, nproc, workers),
        "started_at": _now(),
        "wall_time_s": 0.0,
        "planned": len(runs),
        "runs": [],
        "aggregate": [],
    }


def _label(table: str, dp) -> str:
    """The data set's display label; the digits standing in for a paper's data set say so."""
    if dp.dataset == PLUMBING_DATASET and TABLES[table].paper:
        return f"{dp.label}, plumbing stand-in"
    return dp.label


def _resume_params(table: str, resume, params: Mapping[str, Any]) -> tuple[dict, dict]:
    previous = load_run(resume)
    if previous["table"] != table:
        raise RunFolderError(f"resume folder {str(resume)!r} holds {previous['table']}, not {table}")
    p = validate_params(table, **{k: previous["params"].get(k) for k in PARAMS})
    given = {k: v for k, v in params.items() if v is not None}
    if given:
        q = validate_params(table, **{**p, **given})
        differ = sorted(k for k in given if q[k] != p[k])
        if differ:
            raise ConfigError(
                f"resume: parameter(s) {differ} differ from the stored run's "
                f"({', '.join(f'{k}={p[k]!r}' for k in differ)}); omit them to resume"
            )
    return p, previous


def run_table(
    table: str,
    *,
    resume: str | os.PathLike | None = None,
    nproc_per_node: int | None = None,
    **params: Any,
) -> Path:
    """Train every planned run of a table once; return the table run's folder.

    Args:
        table: one of ``TABLES``.
        resume: an existing table run folder: finished runs are kept, unfinished ones resume from
            their checkpoints (the stored parameters are used; any given must agree with them).
        nproc_per_node: processes per training run under torchrun (DDP). None: for the ImageNet
            tables, every GPU when more than one is present, else 1. ``batch_size`` is per process.
        **params: see :func:`~tspike_lab.reproduce.plan.validate_params` (``workers``: training runs
            side by side on the CPU, each with ``cpu_count // workers`` threads).
    Raises:
        ConfigError: bad parameters (before anything is made). DataError: no data (before any
        folder is made). RunFolderError: the folder is in use. TrainingDiverged: after the
        table finished, if any of its runs diverged (the table is saved with status "diverged").
    """
    if resume is not None:
        p, record = _resume_params(table, resume, params)
    else:
        p, record = validate_params(table, **params), None
    if nproc_per_node is not None and (not isinstance(nproc_per_node, int) or nproc_per_node < 1):
        raise ConfigError(f"nproc_per_node must be None or an int >= 1, got {nproc_per_node!r}")
    device = str(resolve_device(p["device"]))
    nproc = _nproc(table, device, nproc_per_node)
    workers = p["workers"]
    if workers > 1 and (not device.startswith("cpu") or nproc > 1):
        workers = 1  # side-by-side runs are a CPU affair; GPUs take one run at a time
    runs = plan(table, **{k: v for k, v in p.items()})
    plans = _data_plans(runs, p["data_dir"])
    _probe(runs, plans)  # a missing data set fails here, before any folder is made

    if record is None:
        run_dir = new_run_dir(p["out_dir"], table)
        lock = _lock(run_dir)
        record = _new_record(table, p, plans, runs, device, nproc)
        done: dict[str, dict] = {}
    else:
        run_dir = Path(resume)
        lock = _lock(run_dir)
        record = load_run(run_dir)  # re-read under the lock
        done = {r["key"]: r for r in record["runs"] if r["status"] == "complete"}
    try:
        return _train_all(table, record, run_dir, runs, plans, done, workers, nproc)
    finally:
        lock.close()


def _train_all(table, record, run_dir: Path, runs, plans, done, workers: int, nproc: int) -> Path:
    base_wall = float(record["wall_time_s"])
    t0 = time.perf_counter()
    order = {r.key: i for i, r in enumerate(runs)}
    results: dict[str, dict[str, Any]] = dict(done)

    def save(status: str, error: str | None = None) -> None:
        record["runs"] = sorted(results.values(), key=lambda r: order.get(r["key"], len(order)))
        record["status"] = status  # before the rows: each row carries the table's status
        record["aggregate"] = rows_from_record(record, run_dir)
        record["wall_time_s"] = base_wall + (time.perf_counter() - t0)
        record.pop("error", None)
        if error is not None:
            record["error"] = error
        write_json_atomic(run_dir / METRICS_FILE, json_safe(record))

    def config(run: PlannedRun) -> TrainConfig:
        return run.for_data(plans[run.config.dataset], str(run_dir / "runs" / run.key))

    def finish(run: PlannedRun, outcome) -> None:
        key = run.key
        if isinstance(outcome, TrainingDiverged):
            results[key] = _failed_record(run, "diverged", str(outcome))
        else:
            results[key] = _run_record(run, *outcome)
        r = results[key]
        logger.info(
            "%s: %d/%d %s top-1 %s",
            table,
            len(results),
            len(runs),
            key,
            "-" if r["top1"] is None else f"{r['top1']:.2f}%",
        )
        save("running")

    todo = [r for r in runs if r.key not in done]
    record["status"] = "running"
    save("running")
    try:
        if workers > 1 and len(todo) > 1:
            _train_side_by_side(todo, config, finish, workers)
        else:
            for run in todo:
                try:
                    outcome = _train_torchrun(config(run), nproc) if nproc > 1 else _train_in_process(config(run))
                except TrainingDiverged as exc:
                    outcome = exc
                finish(run, outcome)
    except KeyboardInterrupt:
        save("interrupted", "KeyboardInterrupt")
        raise
    except BaseException as exc:
        save("failed", f"{type(exc).__name__}: {exc}")
        raise
    diverged = [r["key"] for r in record["runs"] if r["status"] == "diverged"]
    if diverged:
        save("diverged", f"{len(diverged)} of {len(runs)} training runs diverged: {diverged}")
        raise TrainingDiverged(
            f"{table}: {len(diverged)} of {len(runs)} training runs diverged ({', '.join(diverged)}); "
            f"the table is saved with status 'diverged' in {run_dir}. Lower lr or set "
            f"train_options={{'grad_clip': ...}}"
        )
    save("complete")
    return run_dir


def _train_side_by_side(todo, config, finish, workers: int) -> None:
    threads = max(1, (os.cpu_count() or 1) // workers)
    with ProcessPoolExecutor(
        max_workers=min(workers, len(todo)),
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_worker_init,
        initargs=(threads,),
    ) as pool:
        futures = {pool.submit(_train_in_worker, config(run).to_dict()): run for run in todo}
        for fut in as_completed(futures):
            try:
                outcome = fut.result()
            except TrainingDiverged as exc:
                outcome = exc
            except BaseException:
                for other in futures:
                    other.cancel()
                raise
            finish(futures[fut], outcome)


def probe_data(table: str, **params: Any) -> dict[str, Any]:
    """Find every data set a table's runs need, before anything is timed or made: ``{dataset: DataSource}``.

    Raises:
        ConfigError: bad parameters. DataUnavailableError (with the notebook's ``-p data_dir`` hint),
        DataIntegrityError: data missing or wrong, before any folder is made.
    """
    p = validate_params(table, **params)
    runs = plan(table, **p)
    return _probe(runs, _data_plans(runs, p["data_dir"]))


def _probe(runs: list[dict[str, Any]], plans: Mapping[str, Any]) -> dict[str, Any]:
    found = {}
    for ds, dp in plans.items():
        try:
            found[ds] = data.probe(dp, num_steps=next(r.config.num_steps for r in runs if r.config.dataset == ds))
        except data.DataUnavailableError as exc:
            raise data.DataUnavailableError(
                f"{exc} In a table notebook that is the parameter data_dir (-p data_dir <folder or archive>)."
            ) from None
    return found


def _input_shape(spec, num_steps: int) -> tuple:
    """One sample's shape: ``(C, H, W)``, or ``(T, C, H, W)`` for event frames."""
    shape = (spec.in_channels, *spec.image_size)
    return (num_steps, *shape) if spec.is_sequence else shape


def _network_key(run: PlannedRun, shape: tuple) -> tuple:
    """What a step's cost depends on: ``(arch, width, T, input shape, step_bn)`` (not the neuron kind)."""
    c = run.config
    return (c.arch, c.width, c.num_steps, shape, c.step_bn)


def _build(run: PlannedRun, shape: tuple, num_classes: int) -> nn.Module:
    return run.config.build_model(num_classes=num_classes, in_channels=shape[-3])


def _dense_macs(run: PlannedRun, shape: tuple, num_classes: int) -> float:
    """Multiply-accumulates of one image through the network as it executes (all T steps, dense)."""
    model = _build(run, shape, num_classes).eval()
    total = [0]

    def hook(module, args, y):
        total[0] += conv_macs(module, y) if isinstance(module, nn.Conv2d) else linear_macs(module, y)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    x = data.time_first(torch.rand(1, *shape))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return float(total[0])


def _time_step(run: PlannedRun, shape: tuple, device, num_classes: int, left_s: float, target_s: float) -> float:
    """Seconds per image of one optimizer step of ``run``'s network on ``device``, within about ``left_s`` seconds.

    A warm-up step at 2 images and a second one, then up to three steps at a batch of at most
    ``min(batch_size, 32)`` chosen to take about ``target_s``; the fastest step per image counts.
    """
    deadline = time.perf_counter() + left_s
    model = _build(run, shape, num_classes).to(device)
    opt = torch.optim.SGD(param_groups(model, 1e-4), lr=0.01, momentum=0.9)

    def step(b: int) -> float:
        x = data.time_first(torch.randn(b, *shape, device=device))
        y = torch.randint(0, num_classes, (b,), device=device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - t

    best = step(2) / 2  # the warm-up: one-off costs (kernels, allocator, oneDNN primitives) included
    if time.perf_counter() + 2 * best < deadline:
        best = min(best, step(2) / 2)
    b = max(2, min(run.config.batch_size, 32, int(target_s / max(best, 1e-9))))
    for _ in range(3):
        if time.perf_counter() + best * b > deadline:
            break
        best = min(best, step(b) / b)
    return best


_GPU_TFLOPS = 100.0  # an assumption: about a tenth of an H100's dense bf16 peak (as estimate_from_flops)


def estimate(table: str, *, budget_s: float = 20.0, **params: Any) -> dict[str, Any]:
    """What a table will cost before it trains: runs, epochs, a wall time timed here, and GPU-hours from FLOPs.

    Each distinct network of the plan (arch, width, T, input shape) is counted first: its dense
    multiply-accumulates per image, from one forward pass of one image. Then networks are timed,
    cheapest first, until about ``budget_s`` seconds of timing are spent: one optimizer step on
    random input of the data's shape at 2 images (a warm-up: kernels, allocator, oneDNN
    primitives) and a second one, then up to three steps at a batch of at most
    ``min(batch_size, 32)`` images chosen to take about a tenth of the budget; the fastest gives seconds per
    image, scaled linearly to ``batch_size``; with ``workers`` runs side by side on a CPU, with the threads each
    will have. A network left untimed is priced at the timed ones' (median) seconds per MAC.
    An epoch costs ``steps_per_epoch`` steps plus a test pass at a third of a step per batch. Data
    loading is not timed: the wall time is a lower bound.

    Returns:
        ``{"runs", "epochs", "device", "per_run": [{"key", "step_s", "epoch_s", "run_s", "timed"}],
        "total_s", "timing_s", "gpu_hours", "gpu_note", "note"}``; ``gpu_hours``: the same runs'
        FLOPs (MACs x 2, backward = 2 x forward) on one GPU at an assumed throughput.
    """
    if not isinstance(budget_s, (int, float)) or isinstance(budget_s, bool) or not budget_s > 0:
        raise ConfigError(f"budget_s must be a number > 0, got {budget_s!r}", field="budget_s", value=budget_s)
    p = validate_params(table, **params)
    runs = plan(table, **p)
    device = resolve_device(p["device"])
    workers = p["workers"] if device.type == "cpu" else 1
    first: dict[tuple, dict] = {}
    for run in runs:
        first.setdefault(_network_key(run, _input_shape(data.DATASETS[run.config.dataset], run.config.num_steps)), run)
    classes = {key: data.DATASETS[run.config.dataset].num_classes or 10 for key, run in first.items()}
    macs = {key: _dense_macs(run, key[3], classes[key]) for key, run in first.items()}
    per_image: dict[tuple, float] = {}
    threads = torch.get_num_threads()
    if workers > 1:  # side by side, each run gets cpu_count // workers threads (run_table's workers)
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
    t0 = time.perf_counter()
    try:
        for key in sorted(first, key=macs.get):
            left = budget_s - (time.perf_counter() - t0)
            # the next network's two 2-image steps, priced at the slowest seconds per MAC so far, must fit
            slowest = max((per_image[k] / macs[k] for k in per_image), default=0.0)
            if left <= 0 or 4 * slowest * macs[key] > left:
                break
            per_image[key] = _time_step(first[key], key[3], device, classes[key], left, budget_s / 10)
    finally:
        torch.set_num_threads(threads)
    timing_s = time.perf_counter() - t0
    s_per_mac = sorted(per_image[k] / macs[k] for k in per_image)[len(per_image) // 2]
    per_run, flops = [], 0.0
    for run in runs:
        c = run.config
        spec = data.DATASETS[c.dataset]
        key = _network_key(run, _input_shape(spec, c.num_steps))
        step = per_image.get(key, s_per_mac * macs[key]) * c.batch_size
        train_n, test_n = spec.split_sizes
        steps = max(1, train_n // c.batch_size)
        if c.max_steps_per_epoch:
            steps = min(steps, c.max_steps_per_epoch)
        test_batches = math.ceil(test_n / c.batch_size)
        if c.max_eval_steps:
            test_batches = min(test_batches, c.max_eval_steps)
        epoch = step * steps + step / 3 * test_batches
        per_run.append(
            {"key": run.key, "step_s": step, "epoch_s": epoch, "run_s": epoch * c.epochs, "timed": key in per_image}
        )
        images = (3 * steps + min(test_batches * c.batch_size, test_n) / c.batch_size) * c.batch_size
        flops += c.epochs * macs[key] * images * 2
    total = sum(r["run_s"] for r in per_run) / max(1, min(workers, len(runs)))
    untimed = len(first) - len(per_image)
    return {
        "runs": len(runs),
        "epochs": sorted({r.config.epochs for r in runs}),
        "device": str(device),
        "per_run": per_run,
        "total_s": total,
        "timing_s": timing_s,
        "gpu_hours": flops / (_GPU_TFLOPS * 1e12) / 3600,
        "gpu_note": f"from FLOPs at an assumed {_GPU_TFLOPS:g} TFLOP/s sustained",
        "note": f"{len(per_image)} of {len(first)} networks timed on {device} in {timing_s:.0f} s"
        + (f", {untimed} priced per MAC" if untimed else "")
        + (f", {workers} runs side by side" if workers > 1 else "")
        + "; data loading not included",
    }


def check_cost(table: str, cost: Mapping[str, Any], max_hours: float | None = None) -> None:
    """Refuse, in one line, a table whose estimate exceeds ``max_hours`` (None: 24 h on a CPU, no limit on a GPU).

    The message gives the estimate here and on one GPU, and the profile that fits a CPU.

    Raises:
        ConfigError naming ``max_hours``.
    """
    limit = max_hours if max_hours is not None else (CPU_MAX_HOURS if cost["device"].startswith("cpu") else None)
    if limit is None or cost["total_s"] <= limit * 3600:
        return
    small = "cpu" if "cpu" in PROFILES[table] else "smoke"
    what = {"cpu": "real CIFAR-10 on 2 CPU cores", "smoke": "seconds, plumbing only"}[small]
    raise ConfigError(
        f"{table}: max_hours is {limit:g} but these runs would take about {fmt_duration(cost['total_s'])} on "
        f"{cost['device']} ({cost['note']}) and about {cost['gpu_hours']:.3g} GPU-hours on one GPU "
        f"({cost['gpu_note']}); run them on a GPU, use -p profile {small} ({what}), or raise -p max_hours",
        field="max_hours",
        value=limit,
        allowed=f"at least {cost['total_s'] / 3600:.3g} for these runs",
    )


def test_batch(run_dir: str | os.PathLike, *, data_dir: str | None = None, num_images: int | None = 500):
    """A class-balanced sample of a table run's test set (or all of it), prepared as the engine feeds it.

    The first ``ceil(num_images / K)`` test images of each of the K classes (in the split's order),
    interleaved class by class and cut to ``num_images``: class counts differ by at most one. The
    first images of a split would not do: an image-folder copy of CIFAR-10 lists its test set class
    by class, so its first 256 are all airplanes. ``num_images=None``: the whole test set. The data
    are read as training read them (:func:`tspike_lab.data.probe`: a copy of CIFAR normalised as CIFAR).

    ``data_dir`` None: the folder the run trained from if it still exists here, else the data
    default (``$TSPIKE_DATA`` or ``~/.cache/tspike_lab``, where CIFAR is downloaded).
    Returns:
        ``(x [N, C, H, W] float, y [N], label)``, label e.g. "CIFAR-10 (JPEG copy)".
    """
    if num_images is not None and (not isinstance(num_images, int) or isinstance(num_images, bool) or num_images < 1):
        raise ConfigError(
            f"num_images must be None (the whole test set) or an int >= 1, got {num_images!r}",
            field="num_images",
            value=num_images,
            allowed="None or an int >= 1",
        )
    record = load_run(run_dir)
    dataset = record["runs"][0]["dataset"] if record["runs"] else next(iter(record["datasets"]))
    root = data_dir if data_dir is not None else record["datasets"][dataset].get("root")
    if data_dir is None and root is not None and not Path(root).exists():
        root = None
    dp = data.describe(dataset, root)
    x, y = balanced_test(data.probe(dp), num_images)
    return x, y, dp.label


def balanced_test(source: data.DataSource, num_images: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)``: the class-balanced sample :func:`test_batch` describes, of a data set held in memory."""
    if source.test_y is None:
        raise ConfigError(
            f"a class-balanced test sample needs a data set held in memory; {source.name} is read from files",
            field="dataset",
            value=source.name,
        )
    y_all = source.test_y
    if num_images is None:
        idx = torch.arange(y_all.numel())
    else:
        per = math.ceil(num_images / source.num_classes)
        picks = [
            (rank, c, int(i))
            for c in range(source.num_classes)
            for rank, i in enumerate(torch.nonzero(y_all == c).flatten()[:per])
        ]
        idx = torch.tensor([i for _, _, i in sorted(picks)][:num_images])
    sample = dataclasses.replace(source, test_x=source.test_x[idx], test_y=y_all[idx], fingerprint=source.fingerprint)
    return next(
        iter(data.make_loader(sample, "test", batch_size=len(idx), device="cpu", shuffle=False, drop_last=False))
    )


def estimate_from_flops(table: str, profile: str | None = None, *, tflops: float = 100.0) -> dict[str, Any]:
    """GPU-hours a table's profile needs, estimated from its arithmetic: no GPU, no data.

    Each distinct network's multiply-accumulates per image (all T steps, dense, as a GPU
    computes them; :func:`tspike_lab.energy.count_ops` on one image) times 3 for forward +
    backward, times the training images and epochs (plus one forward pass over the test set per
    epoch), over ``tflops`` TFLOP/s of sustained throughput (2 FLOPs per MAC). 100 TFLOP/s is an
    assumption (about a tenth of an H100's dense bf16 peak, for small convolutions and
    memory-bound neurons); a measured epoch replaces it.

    Returns:
        ``{"runs", "gpu_hours", "per_network": {key: macs per image}, "assumption"}``.
    """
    runs = plan(table, profile)
    macs: dict[tuple, float] = {}
    total = 0.0
    for run in runs:
        c = run.config
        spec = data.DATASETS[c.dataset]
        shape = _input_shape(spec, c.num_steps)
        key = (c.arch, c.width, c.num_steps, shape)
        if key not in macs:
            model = _build(run, shape, 10).eval()
            x = data.time_first(torch.rand(1, *shape))  # real-valued (an all-zero input would count as spikes)
            ops = count_ops(model, x)
            macs[key] = float(sum(r.dense_macs * r.paper_repeat for r in ops.layers))
        train_n, test_n = spec.split_sizes
        if c.max_steps_per_epoch:
            train_n = min(train_n, c.max_steps_per_epoch * c.batch_size)
        if c.max_eval_steps:
            test_n = min(test_n, c.max_eval_steps * c.batch_size)
        total += c.epochs * macs[key] * (3 * train_n + test_n) * 2  # FLOPs
    return {
        "runs": len(runs),
        "gpu_hours": total / (tflops * 1e12) / 3600,
        "per_network": {f"{a}{'-w' + str(w) if w else ''}-T{t}": m for (a, w, t, _), m in macs.items()},
        "assumption": f"{tflops:g} TFLOP/s sustained, 2 FLOPs per MAC, backward = 2x forward",
    }
