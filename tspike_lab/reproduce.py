"""Reproduce the paper's tables: profiles, one training run per (arch, neuron, T, seed), JSON records.

    >>> from tspike_lab import reproduce
    >>> params = reproduce.validate_params("table1", profile="smoke")     # ValueError lists what is allowed
    >>> run_dir = reproduce.run_table("table1", **params)                 # <out_dir>/table1-<time>-<hex>/
    >>> rows = reproduce.aggregate(params["out_dir"])                      # every run folder under out_dir
    >>> print(reproduce.paper_table(rows))                                 # ours (mean ± std) beside the paper

A table run is a folder made by :func:`tspike_lab.results.new_run_dir` (never shared with another
run) holding ``metrics.json`` (parameters, per-seed and aggregated results, environment, start
and wall time; rewritten atomically after every finished training run, so a killed table keeps
what it finished) and ``runs/<arch>-<neuron>-T<T>-s<seed>/`` (each training run's
``metrics.jsonl`` and ``checkpoint.pt``). ``run_table(table, resume=run_dir)`` continues a killed
table: finished runs are kept, unfinished ones resume from their last epoch.

Profiles: "paper" (the full recipe), "quick" (a short schedule meant for one 10-minute GPU
session), "smoke" (seconds on a CPU, plumbing only; the embedded digits unless a data set is
named) and, for table1, "cpu" (the width sweep of ``make demo``). A parameter left None takes
the profile's value.

Recipe: the paper does not spell out its CIFAR recipe; it is taken from the same authors'
released CIFAR code (an assumption): SGD lr 0.1, momentum 0.9, weight decay 1e-4 (BatchNorm and
biases exempt), cosine schedule, batch 128, RandomCrop(32, 4) + flip + AutoAugment + Cutout(16),
cross-entropy on T-averaged logits. ImageNet follows the released Train.py; CIFAR10-DVS the
released loader (48x48, flip + roll). See ``RECIPES``.

Paper numbers come from ``tspike_lab/paper_numbers.json``: all "secondary" (reported by later
papers), each with its confidence; a cell the file lacks stays empty.
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import datetime as _dt
import importlib.resources
import json
import logging
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from types import MappingProxyType
from typing import Any, Iterable, Mapping, Sequence

from .results import environment, mean_std, new_run_dir, write_json_atomic

__all__ = [
    "TABLES",
    "PROFILES",
    "RECIPES",
    "PARAMS",
    "METRICS_SCHEMA",
    "RUN_SCHEMA",
    "ROW_SCHEMA",
    "validate_params",
    "resolve_data",
    "run_table",
    "load_run",
    "validate_metrics",
    "aggregate",
    "paper_numbers",
    "paper_number",
    "paper_numbers_markdown",
    "paper_table",
    "plot_table",
    "fmt_mean_std",
    "train_cli_args",
    "main",
]

logger = logging.getLogger(__name__)

SCHEMA_VERSION = "tspike_lab.reproduce/1"
METRICS_FILE = "metrics.json"
PLUMBING_DATASET = "digits"

_ALL_NEURONS = ("binary", "ternary", "trainable_ternary", "trainable_binary")


def _frozen(d: Mapping[str, Any]) -> MappingProxyType:
    return MappingProxyType({k: (_frozen(v) if isinstance(v, Mapping) else v) for k, v in d.items()})


TABLES = _frozen({
    "table1": {
        "title": "Table 1: ablation, binary vs ternary vs trainable ternary spikes (same network, same recipe)",
        "datasets": ("cifar10", "cifar100", PLUMBING_DATASET),
        "ddp": False,
    },
    "table2": {
        "title": "Table 2: CIFAR-10 and CIFAR-100 against the state of the art",
        "datasets": ("cifar10", "cifar100", PLUMBING_DATASET),
        "ddp": False,
    },
    "table3": {
        "title": "Table 3: ImageNet",
        "datasets": ("imagenet", PLUMBING_DATASET),
        "ddp": True,  # more than one GPU: every training run goes through torchrun (DDP)
    },
    "table4": {
        "title": "Table 4: CIFAR10-DVS",
        "datasets": ("cifar10-dvs", PLUMBING_DATASET),
        "ddp": False,
    },
})

# The smoke profile's training runs are cut to a few optimizer steps.
_SMOKE = dict(epochs=1, seeds=(0,), max_steps_per_epoch=3, max_eval_steps=2, batch_size=32)

# Per table and profile: the value of every parameter left None. "archs" name the networks for
# the table's own data set; on the digits stand-in they become arch "small" (see validate_params).
PROFILES = _frozen({
    "table1": {
        # The paper's ablation numbers and its exact configuration are unknown here (PAPER.md);
        # ResNet20 at T=2 on CIFAR-10 is our choice. Trainable binary is an extra control.
        "paper": dict(dataset="cifar10", archs=("resnet20",), neurons=_ALL_NEURONS, num_steps=(2,),
                      seeds=(0, 1, 2), epochs=300, batch_size=128, lr=0.1),
        "quick": dict(dataset="cifar10", archs=("resnet20",), neurons=_ALL_NEURONS, num_steps=(2,),
                      seeds=(0,), epochs=5, batch_size=128, lr=0.1),
        "smoke": dict(_SMOKE, dataset=PLUMBING_DATASET, archs=("small",), widths=(8,), neurons=_ALL_NEURONS,
                      num_steps=(2,), lr=0.1),
        # make demo: capacity made visible by sweeping the width of arch "small" (2 cores, ~2 min).
        "cpu": dict(dataset=PLUMBING_DATASET, archs=("small",), widths=(1, 2, 4, 8, 16),
                    neurons=("binary", "ternary", "trainable_ternary"), num_steps=(1, 2), seeds=(0, 1, 2),
                    epochs=8, batch_size=64, lr=0.1, train_options={"eval_every": 1000}),  # test after the last epoch only
    },
    "table2": {
        # 300 epochs: the authors' CIFAR code elsewhere uses 300-400.
        "paper": dict(dataset="cifar10", archs=("resnet19",), neurons=("ternary", "trainable_ternary"),
                      num_steps=(2,), seeds=(0, 1, 2), epochs=300, batch_size=128, lr=0.1),
        "quick": dict(dataset="cifar10", archs=("resnet19",), neurons=("binary", "ternary", "trainable_ternary"),
                      num_steps=(2,), seeds=(0,), epochs=4, batch_size=128, lr=0.1),
        # ResNet19 on a CPU: 2 steps of 16 take ~10 s per run (measured on 2 busy cores).
        "smoke": dict(_SMOKE, dataset=PLUMBING_DATASET, archs=("resnet19",), neurons=("ternary", "trainable_ternary"),
                      num_steps=(2,), batch_size=16, max_steps_per_epoch=2, lr=0.1),
    },
    "table3": {
        # The released Train.py: ResNet34, T=4, batch 40 per GPU x 8 GPUs, 320 epochs, seed 1000,
        # AMP, SyncBN. batch_size is per process (global batch = batch_size x GPUs).
        "paper": dict(dataset="imagenet", archs=("resnet34",), neurons=("trainable_ternary",), num_steps=(4,),
                      seeds=(1000,), epochs=320, batch_size=40, lr=0.1,
                      train_options={"sync_bn": True, "amp": True, "num_workers": 8}),
        # ImageNet cannot show an ordering in 10 minutes: a truncated epoch, a throughput check.
        "quick": dict(dataset="imagenet", archs=("resnet18",), neurons=("trainable_ternary",), num_steps=(4,),
                      seeds=(1000,), epochs=1, batch_size=64, lr=0.1, max_steps_per_epoch=500, max_eval_steps=100,
                      train_options={"amp": True, "num_workers": 8}),
        "smoke": dict(_SMOKE, dataset=PLUMBING_DATASET, archs=("resnet34",), neurons=("trainable_ternary",),
                      num_steps=(4,), lr=0.1),
    },
    "table4": {
        # The paper's DVS network is unclear (PAPER.md): ResNet19 is our assumption, as are
        # the epochs and the batch (no DVS training script was released).
        "paper": dict(dataset="cifar10-dvs", archs=("resnet19",), neurons=("ternary", "trainable_ternary"),
                      num_steps=(10,), seeds=(0, 1, 2), epochs=300, batch_size=64, lr=0.1),
        "quick": dict(dataset="cifar10-dvs", archs=("resnet20",), neurons=("binary", "trainable_ternary"),
                      num_steps=(10,), seeds=(0,), epochs=5, batch_size=64, lr=0.1),
        # digits stand in for DVS sequences: static images repeated T times (plumbing only).
        "smoke": dict(_SMOKE, dataset=PLUMBING_DATASET, archs=("resnet19",), neurons=("ternary", "trainable_ternary"),
                      num_steps=(10,), lr=0.1),
    },
})

RECIPES = _frozen({
    "cifar": ("The paper does not spell out its CIFAR recipe; it is taken from the same authors' released "
              "CIFAR code (an assumption): SGD lr 0.1, momentum 0.9, weight decay 1e-4 (BatchNorm and biases "
              "exempt), cosine schedule, batch 128, RandomCrop(32, 4) + flip + AutoAugment (CIFAR10Policy) + "
              "Cutout (1 hole, 16 px), cross-entropy on T-averaged logits."),
    "imagenet": ("The released Train.py: SGD lr 0.1, momentum 0.9, weight decay 1e-4 on conv/linear weights only, "
                 "cosine over 320 epochs, batch 40 per GPU x 8 GPUs, AMP, SyncBN, seed 1000, ResNet34, T=4; "
                 "RandomResizedCrop(224) + flip; test Resize(256) + CenterCrop(224)."),
    "cifar10-dvs": ("The released CIFAR10-DVS loader: 48x48 frames, flip + random roll of up to 5 pixels, T=10. "
                    "No DVS training script was released: optimizer and schedule as the authors' CIFAR code "
                    "(SGD lr 0.1, momentum 0.9, weight decay 1e-4, cosine; an assumption)."),
    "digits": ("Plumbing stand-in: the embedded 8x8 UCI digits (1437 train / 360 test), no augmentation, the "
               "CIFAR optimizer recipe (SGD, momentum 0.9, weight decay 1e-4, cosine). Static images repeated "
               "T times stand in for ImageNet or DVS inputs. Not a paper number."),
})

_DATASET_LABELS = MappingProxyType({
    "cifar10": "CIFAR-10",
    "cifar100": "CIFAR-100",
    "imagenet": "ImageNet (ILSVRC-2012)",
    "cifar10-dvs": "CIFAR10-DVS",
    "digits": "digits (embedded UCI 8x8, plumbing stand-in)",
})

# Parameters of every table (the notebooks' parameters cell), with the profile keys they take.
PARAMS = ("profile", "dataset", "data_dir", "archs", "widths", "neurons", "num_steps", "seeds", "epochs",
          "batch_size", "lr", "out_dir", "device", "max_steps_per_epoch", "max_eval_steps", "train_options")
# TrainConfig fields that a table's parameters set; train_options may set the others.
_OWNED_FIELDS = ("dataset", "data_dir", "arch", "width", "neuron", "num_steps", "seed", "epochs", "batch_size",
                 "lr", "device", "out_dir", "resume", "max_steps_per_epoch", "max_eval_steps", "progress")
_DEFAULT_OUT_DIR = "results"

# ----------------------------------------------------------------------------- schema

_NUM = (int, float)
_NONE = type(None)

METRICS_SCHEMA = MappingProxyType({
    "schema": str,
    "table": str,
    "title": str,
    "status": str,  # running | complete | failed | interrupted
    "profile": str,
    "params": dict,
    "dataset": str,  # the paper's data set name (cifar10, ...)
    "dataset_label": str,  # e.g. "CIFAR-10 (JPEG copy)"
    "data_source": str,  # the tspike_lab.data source trained on (cifar10, imagefolder, ...)
    "recipe": str,
    "train_config": dict,  # the TrainConfig fields every run shares
    "launcher": str,  # "in-process", "workers=N" or "torchrun --nproc_per_node N"
    "environment": dict,
    "hardware": str,
    "started_at": str,  # ISO 8601, UTC
    "wall_time_s": _NUM,
    "planned": int,
    "runs": list,
    "aggregate": list,
})
RUN_SCHEMA = MappingProxyType({
    "key": str, "arch": str, "width": (int, _NONE), "neuron": str, "num_steps": int, "seed": int,
    "run_dir": str, "status": str, "epochs": int, "top1": (*_NUM, _NONE), "best_top1": (*_NUM, _NONE),
    "train_top1": (*_NUM, _NONE), "firing_rate": (*_NUM, _NONE), "amplitudes": (dict, _NONE),
    "images_per_s": (*_NUM, _NONE), "wall_time_s": _NUM,
})
ROW_SCHEMA = MappingProxyType({
    "table": str, "dataset": str, "dataset_label": str, "arch": str, "width": (int, _NONE), "neuron": str,
    "num_steps": int, "n_seeds": int, "seeds": list, "mean": (*_NUM, _NONE), "std": (*_NUM, _NONE),
    "best_mean": (*_NUM, _NONE), "firing_rate": (*_NUM, _NONE), "paper": (*_NUM, _NONE),
    "paper_provenance": (str, _NONE), "paper_note": (str, _NONE), "diff": (*_NUM, _NONE), "hardware": str,
    "profile": str, "run": str,
})
_ENV_KEYS = ("python", "torch", "snntorch", "cuda_available", "cuda_version", "device_name", "git_commit",
             "git_dirty")


def _type_ok(value: Any, kinds) -> bool:
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    if isinstance(value, bool) and bool not in kinds:
        return False
    return isinstance(value, kinds)


def _check_keys(obj: Any, schema: Mapping[str, Any], where: str, problems: list[str]) -> None:
    if not isinstance(obj, dict):
        problems.append(f"{where} must be an object, got {type(obj).__name__}")
        return
    for key, kinds in schema.items():
        if key not in obj:
            problems.append(f"{where} lacks {key!r}")
        elif not _type_ok(obj[key], kinds):
            names = [k.__name__ for k in (kinds if isinstance(kinds, tuple) else (kinds,))]
            problems.append(f"{where}[{key!r}] must be {' or '.join(names)}, got {type(obj[key]).__name__}")


def validate_metrics(obj: Any) -> dict:
    """Check a table run's ``metrics.json`` against ``METRICS_SCHEMA`` (and its runs and rows).

    Raises:
        ValueError listing every missing key or wrong type.
    Returns:
        ``obj`` unchanged.
    """
    problems: list[str] = []
    _check_keys(obj, METRICS_SCHEMA, "metrics", problems)
    if not problems:
        if obj["schema"] != SCHEMA_VERSION:
            problems.append(f"metrics['schema'] must be {SCHEMA_VERSION!r}, got {obj['schema']!r}")
        if obj["table"] not in TABLES:
            problems.append(f"metrics['table'] must be one of {list(TABLES)}, got {obj['table']!r}")
        for key in _ENV_KEYS:
            if key not in obj["environment"]:
                problems.append(f"metrics['environment'] lacks {key!r}")
        for key in PARAMS:
            if key not in obj["params"]:
                problems.append(f"metrics['params'] lacks {key!r}")
        for i, run in enumerate(obj["runs"]):
            _check_keys(run, RUN_SCHEMA, f"metrics['runs'][{i}]", problems)
        for i, row in enumerate(obj["aggregate"]):
            _check_keys(row, ROW_SCHEMA, f"metrics['aggregate'][{i}]", problems)
        if obj["status"] == "complete" and len(obj["runs"]) != obj["planned"]:
            problems.append(f"status 'complete' but {len(obj['runs'])} of {obj['planned']} runs recorded")
    if problems:
        raise ValueError("metrics.json does not match METRICS_SCHEMA: " + "; ".join(problems))
    return obj


# ----------------------------------------------------------------------------- parameters


def _fail(table: str, name: str, value: Any, allowed: str) -> None:
    raise ValueError(f"{table}: parameter {name} must be {allowed}, got {value!r}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _as_list(table: str, name: str, value: Any, kind: type) -> list | None:
    """A list parameter from a list, a scalar, or text ("0,1,2" or "[0, 1, 2]", as papermill -p passes)."""
    if value is None:
        return None
    allowed = f"None, a list of {kind.__name__} or a comma-separated string"
    items: list
    if isinstance(value, str):
        text = value.strip()
        if text.startswith(("[", "(")):
            try:
                items = list(ast.literal_eval(text))
            except (ValueError, SyntaxError, TypeError):
                _fail(table, name, value, allowed)
        else:
            items = [s.strip() for s in text.split(",") if s.strip()]
            if kind is int:
                try:
                    items = [int(s) for s in items]
                except ValueError:
                    _fail(table, name, value, allowed)
    elif isinstance(value, (list, tuple)):
        items = list(value)
    elif kind is int and _is_int(value):
        items = [value]
    else:
        _fail(table, name, value, allowed)
    if not items:
        _fail(table, name, value, f"a non-empty list ({allowed})")
    for item in items:
        if not (isinstance(item, kind) and not isinstance(item, bool)):
            _fail(table, name, value, allowed)
    if len(set(items)) != len(items):
        _fail(table, name, value, "a list without repeats")
    return items


def validate_params(table: str, **params: Any) -> dict[str, Any]:
    """Check a table's parameters and fill those left None from the profile.

    Args:
        table: one of ``TABLES``.
        **params: any of ``PARAMS``: profile ("paper" | "quick" | "smoke", table1 also "cpu"),
            dataset, data_dir, archs, widths (arch "small" only), neurons, num_steps, seeds, epochs,
            batch_size, lr, out_dir, device, max_steps_per_epoch, max_eval_steps, train_options
            (other TrainConfig fields). Lists may be given as text ("0,1,2").
    Returns:
        The resolved parameters: every key of ``PARAMS``, lists as lists.
    Raises:
        ValueError naming the parameter, the value and what is allowed (before any data is read).
    """
    from .models import ARCHS, NEURONS
    from .train import TrainConfig, validate

    if table not in TABLES:
        raise ValueError(f"table must be one of {list(TABLES)}, got {table!r}")
    unknown = sorted(set(params) - set(PARAMS))
    if unknown:
        raise ValueError(f"{table}: unknown parameter(s) {unknown}; allowed: {list(PARAMS)}")
    profiles = PROFILES[table]
    profile = params.get("profile")
    profile = "paper" if profile is None else profile
    if profile not in profiles:
        _fail(table, "profile", profile, f"one of {list(profiles)}")
    prof = profiles[profile]
    out: dict[str, Any] = {"profile": profile}

    datasets = TABLES[table]["datasets"]
    dataset = params.get("dataset")
    dataset = prof["dataset"] if dataset is None else dataset
    if dataset not in datasets:
        _fail(table, "dataset", dataset, f"one of {list(datasets)} ({PLUMBING_DATASET!r}: the embedded plumbing "
                                         f"stand-in)")
    out["dataset"] = dataset

    data_dir = params.get("data_dir")
    if data_dir is not None:
        if not isinstance(data_dir, (str, os.PathLike)) or str(data_dir) == "":
            _fail(table, "data_dir", data_dir, "None or a path to a folder or archive")
        if not Path(data_dir).expanduser().exists():
            _fail(table, "data_dir", str(data_dir), "None or an existing folder or archive (this path does not exist)")
        data_dir = str(data_dir)
    out["data_dir"] = data_dir

    archs = _as_list(table, "archs", params.get("archs"), str)
    if archs is None:
        archs = list(prof["archs"])
        if dataset == PLUMBING_DATASET and "small" not in archs:
            archs = ["small"]  # the paper's networks on 8x8 digits would be plumbing at 100x the cost
    for arch in archs:
        if arch not in ARCHS:
            _fail(table, "archs", archs, f"a list drawn from {list(ARCHS)} (unknown arch {arch!r})")
    out["archs"] = archs

    widths = _as_list(table, "widths", params.get("widths"), int)
    if widths is None:
        widths = list(prof["widths"]) if prof.get("widths") and "small" in archs else None
    elif "small" not in archs:
        _fail(table, "widths", widths, "None unless archs include 'small' (width applies to arch 'small' only)")
    if widths is not None and any(w < 1 for w in widths):
        _fail(table, "widths", widths, "None or a list of ints >= 1")
    out["widths"] = widths

    neurons = _as_list(table, "neurons", params.get("neurons"), str)
    neurons = list(prof["neurons"]) if neurons is None else neurons
    for neuron in neurons:
        if neuron not in NEURONS:
            _fail(table, "neurons", neurons, f"a list drawn from {list(NEURONS)} (unknown neuron {neuron!r})")
    out["neurons"] = neurons

    for name, low in (("num_steps", 1), ("seeds", 0)):
        values = _as_list(table, name, params.get(name), int)
        values = list(prof[name]) if values is None else values
        if any(v < low for v in values):
            _fail(table, name, values, f"None or a list of ints >= {low}")
        out[name] = values

    for name in ("epochs", "batch_size"):
        value = params.get(name)
        value = prof[name] if value is None else value
        if not _is_int(value) or value < 1:
            _fail(table, name, value, "None (the profile's value) or an int >= 1")
        out[name] = value
    for name in ("max_steps_per_epoch", "max_eval_steps"):
        value = params.get(name)
        value = prof.get(name) if value is None else value
        if value is not None and (not _is_int(value) or value < 1):
            _fail(table, name, value, "None (the profile's value; None there means whole epochs) or an int >= 1")
        out[name] = value

    lr = params.get("lr")
    lr = prof["lr"] if lr is None else lr
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        _fail(table, "lr", lr, "None (the profile's value) or a finite number > 0")
    out["lr"] = float(lr)

    out_dir = params.get("out_dir")
    out_dir = _DEFAULT_OUT_DIR if out_dir is None else out_dir
    if not isinstance(out_dir, (str, os.PathLike)) or str(out_dir) == "":
        _fail(table, "out_dir", out_dir, "a folder path (each run makes a new sub-folder)")
    out["out_dir"] = str(out_dir)

    device = params.get("device")
    device = "auto" if device is None else device
    allowed_devices = "'auto' (CUDA when present), 'cpu', 'cuda' or 'cuda:N'"
    if not isinstance(device, str):
        _fail(table, "device", device, allowed_devices)
    if device != "auto":
        import torch

        try:
            dev = torch.device(device)
        except (RuntimeError, ValueError):
            _fail(table, "device", device, allowed_devices)
        if dev.type == "cuda" and not torch.cuda.is_available():
            _fail(table, "device", device, f"{allowed_devices}; CUDA is not available on this machine")
    out["device"] = device

    options = dict(prof.get("train_options") or {})
    given = params.get("train_options")
    if given is not None:
        if not isinstance(given, Mapping):
            _fail(table, "train_options", given, "None or a dict of TrainConfig fields")
        options.update(given)
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    bad = sorted(set(options) - (fields - set(_OWNED_FIELDS)))
    if bad:
        _fail(table, "train_options", options,
              f"a dict of TrainConfig fields other than the table's own parameters; not allowed: {bad}; "
              f"allowed: {sorted(fields - set(_OWNED_FIELDS))}")
    out["train_options"] = options

    # every training run's TrainConfig, checked now: no data read, no folder made
    try:
        plan = resolve_data(dataset, data_dir)
    except ValueError as exc:
        raise ValueError(f"{table}: parameter {exc}") from None
    for combo in _combos(out):
        try:
            validate(_config(out, plan, combo, out_dir=None))
        except ValueError as exc:
            raise ValueError(f"{table}: {exc}") from None
    return {k: out[k] for k in PARAMS}


# ----------------------------------------------------------------------------- data


@dataclasses.dataclass(frozen=True)
class DataPlan:
    """Which :mod:`tspike_lab.data` source a table trains on, and how to name it in results."""

    dataset: str  # the paper's name: cifar10, cifar100, imagenet, cifar10-dvs, digits
    source: str  # the tspike_lab.data source: the same, or "imagefolder" for an image copy of CIFAR
    root: str | None
    label: str  # e.g. "CIFAR-10 (JPEG copy)"
    recipe: str
    options: Mapping[str, Any]  # TrainConfig fields the source needs (the CIFAR augmentation for an image copy)


_CIFAR_LAYOUT = MappingProxyType({
    "cifar10": ("cifar-10-batches-py", "cifar-10-python.tar.gz", 10),
    "cifar100": ("cifar-100-python", "cifar-100-python.tar.gz", 100),
})
_CIFAR_AUGMENT = MappingProxyType(dict(crop_padding=4, flip=True, autoaugment=True, cutout=16))


def _first_files(root: Path, n: int = 8) -> list[str]:
    from .data.archive import iter_files

    names: list[str] = []
    if root.is_dir():
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            names.extend(os.path.relpath(os.path.join(dirpath, f), root).replace(os.sep, "/")
                         for f in sorted(filenames))
            if len(names) >= n:
                break
        return names[:n]
    for rel, _ in iter_files(root):  # reads members one by one: stops after n
        names.append(rel)
        if len(names) >= n:
            break
    return names


def _cifar_layout(dataset: str, root: Path) -> str:
    """"cifar" (canonical python batches or archive) or "imagefolder" (train/<class>/ and test/<class>/)."""
    from .data.archive import archive_kind

    folder, archive, _ = _CIFAR_LAYOUT[dataset]
    if root.is_dir():
        if root.name == folder or (root / folder).is_dir() or (root / archive).is_file() \
                or (root / "data_batch_1").is_file() or (root / "train").is_file():
            return "cifar"
        if (root / "train").is_dir() and (root / "test").is_dir():
            return "imagefolder"
        nested = [p for p in root.iterdir() if p.is_dir() and (p / "train").is_dir() and (p / "test").is_dir()]
        if len(nested) == 1:
            return "imagefolder"
    elif root.is_file():
        if root.name == archive:
            return "cifar"
        if archive_kind(root) is not None:
            names = _first_files(root, 4)
            if any(n.startswith(folder + "/") for n in names):
                return "cifar"
            return "imagefolder"
    raise ValueError(
        f"data_dir {str(root)!r} is neither a CIFAR layout ({folder}/, {archive}) nor an image folder "
        f"(train/<class>/<image> and test/<class>/<image>, as a folder or an archive)"
    )


def resolve_data(dataset: str, data_dir: str | None) -> DataPlan:
    """Decide the data source for ``dataset``: an image-folder copy of CIFAR is read as ``imagefolder``.

    ``data_dir`` holding ``cifar-10-batches-py`` / ``cifar-10-python.tar.gz`` (or the CIFAR-100
    ones) is read by the CIFAR source; one holding ``train/<class>/`` and ``test/<class>/``
    images (a folder or an archive such as a JPEG copy) by the image-folder source, with the
    CIFAR augmentation recipe. Touches no pixels (lists at most a few archive members).
    """
    label = _DATASET_LABELS.get(dataset, dataset)
    if dataset == PLUMBING_DATASET:
        return DataPlan(dataset, dataset, None, label, RECIPES["digits"], MappingProxyType({}))
    if dataset in _CIFAR_LAYOUT:
        if data_dir is not None and _cifar_layout(dataset, Path(data_dir).expanduser()) == "imagefolder":
            names = _first_files(Path(data_dir).expanduser(), 8)
            jpeg = any(n.lower().endswith((".jpg", ".jpeg")) for n in names)
            copy = "JPEG copy" if jpeg else "image-folder copy"
            return DataPlan(dataset, "imagefolder", data_dir, f"{label} ({copy})",
                            RECIPES["cifar"] + f" Data: an image-folder {copy} of {label} ({data_dir}); lossy "
                                               f"copies train somewhat below the original pixels.",
                            _CIFAR_AUGMENT)
        return DataPlan(dataset, dataset, data_dir, label, RECIPES["cifar"], MappingProxyType({}))
    if dataset == "imagenet":
        return DataPlan(dataset, dataset, data_dir, label, RECIPES["imagenet"], MappingProxyType({}))
    if dataset == "cifar10-dvs":
        return DataPlan(dataset, dataset, data_dir, label, RECIPES["cifar10-dvs"], MappingProxyType({}))
    raise ValueError(f"dataset must be one of {sorted(_DATASET_LABELS)}, got {dataset!r}")


def _probe_data(plan: DataPlan, num_steps: int) -> None:
    """Load the data once before any folder is made: a missing data set fails here, naming the URL or folder."""
    from . import data

    options = {"num_steps": num_steps} if plan.source == "cifar10-dvs" else {}
    try:
        source = data.load(plan.source, root=plan.root, **options)
    except data.DataUnavailableError as exc:
        raise data.DataUnavailableError(f"{exc} (Reproduction parameter data_dir: that folder or archive; "
                                        f"root= above.)") from None
    if plan.source == "imagefolder":
        want = _CIFAR_LAYOUT[plan.dataset][2]
        if source.num_classes != want:
            raise ValueError(f"data_dir {plan.root!r} holds {source.num_classes} classes but {plan.label} has {want}")


# ----------------------------------------------------------------------------- runs


def _combos(p: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every (seed, arch, width, T, neuron), seeds outermost: a killed table has n=1 of every row first."""
    out = []
    for seed in p["seeds"]:
        for arch in p["archs"]:
            for width in (p["widths"] if arch == "small" and p["widths"] else [None]):
                for t in p["num_steps"]:
                    for neuron in p["neurons"]:
                        out.append(dict(arch=arch, width=width, neuron=neuron, num_steps=t, seed=seed))
    return out


def _key(c: Mapping[str, Any]) -> str:
    width = f"-w{c['width']}" if c["width"] is not None else ""
    return f"{c['arch']}{width}-{c['neuron']}-T{c['num_steps']}-s{c['seed']}"


def _config(p: Mapping[str, Any], plan: DataPlan, combo: Mapping[str, Any], out_dir: str | None):
    from .train import TrainConfig

    fields = dict(plan.options)
    fields.update(p["train_options"])
    return TrainConfig(dataset=plan.source, data_dir=plan.root, arch=combo["arch"], width=combo["width"],
                       neuron=combo["neuron"], num_steps=combo["num_steps"], seed=combo["seed"],
                       epochs=p["epochs"], batch_size=p["batch_size"], lr=p["lr"], device=p["device"],
                       out_dir=out_dir, resume=True, max_steps_per_epoch=p["max_steps_per_epoch"],
                       max_eval_steps=p["max_eval_steps"], progress=False, **fields)


def _finite(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


def _pct(x: Any) -> float | None:
    return None if x is None or not math.isfinite(float(x)) else 100.0 * float(x)


def _run_record(combo: Mapping[str, Any], epochs: list[dict[str, Any]], wall: float) -> dict[str, Any]:
    final = epochs[-1] if epochs else {}
    tests = [e["test_acc"] for e in epochs if e.get("test_acc") is not None]
    speeds = [e["images_per_s"] for e in epochs if e.get("images_per_s") is not None
              and math.isfinite(e["images_per_s"])]
    return _finite({
        "key": _key(combo), **combo, "run_dir": f"runs/{_key(combo)}", "status": "complete",
        "epochs": len(epochs),
        "top1": _pct(final.get("test_acc")),
        "best_top1": _pct(max(tests)) if tests else None,
        "train_top1": _pct(final.get("train_acc")),
        "test_loss": final.get("test_loss"),
        "firing_rate": final.get("firing_rate"),
        "amplitudes": final.get("amplitudes"),
        "images_per_s": sum(speeds) / len(speeds) if speeds else None,
        "epoch_time_s": sum(e.get("epoch_time_s") or 0.0 for e in epochs),
        "wall_time_s": float(wall),
    })


def _failed_record(combo: Mapping[str, Any], status: str, error: str, wall: float) -> dict[str, Any]:
    return {"key": _key(combo), **combo, "run_dir": f"runs/{_key(combo)}", "status": status, "epochs": 0,
            "top1": None, "best_top1": None, "train_top1": None, "firing_rate": None, "amplitudes": None,
            "images_per_s": None, "wall_time_s": float(wall), "error": error}


def train_cli_args(config) -> list[str]:
    """``tspike train`` options that rebuild ``config`` (for ``torchrun ... -m tspike_lab.train``)."""
    args: list[str] = []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        flag = "--" + f.name.replace("_", "-")
        if isinstance(value, bool):
            args.append(flag if value else "--no-" + f.name.replace("_", "-"))
        elif value is None:
            if f.default is not None:  # optional booleans (flip, autoaugment) have no "none": their default is None
                args += [flag, "none"]
        else:
            args += [flag, repr(value) if isinstance(value, float) else str(value)]
    return args


def _train_in_process(config) -> tuple[list[dict[str, Any]], float]:
    from .train import train

    t0 = time.perf_counter()
    history = train(config)
    return history.epochs, time.perf_counter() - t0


def _train_in_worker(config_dict: dict[str, Any]) -> tuple[list[dict[str, Any]], float]:
    from .train import TrainConfig

    return _train_in_process(TrainConfig.from_dict(config_dict))


def _worker_init(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _train_torchrun(config, nproc: int) -> tuple[list[dict[str, Any]], float]:
    """One training run as ``torchrun --standalone --nproc_per_node N -m tspike_lab.train ...``."""
    from .train import TrainingDiverged, read_metrics

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           "-m", "tspike_lab.train", *train_cli_args(config)]
    env = {k: v for k, v in os.environ.items()
           if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    if config.device == "cpu" or (config.device == "auto" and not _cuda_available()):
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    logger.info("launching %s", " ".join(cmd))
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode == 3:
        raise TrainingDiverged(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "diverged")
    if done.returncode != 0:
        raise RuntimeError(f"torchrun exited with status {done.returncode}: {' '.join(cmd)}\n"
                           f"{done.stderr[-4000:]}")
    return read_metrics(config.out_dir), wall


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _device_used(device: str) -> str:
    if device == "auto":
        return "cuda" if _cuda_available() else "cpu"
    return device


def _hardware(env: Mapping[str, Any], device: str, nproc: int, workers: int) -> str:
    if device.startswith("cuda"):
        return f"{nproc}x {env.get('device_name')}" + (" (torchrun/DDP)" if nproc > 1 else "")
    cores = env.get("cpu_count")
    extra = f", {workers} worker processes" if workers > 1 else ""
    extra += f", torchrun {nproc} processes" if nproc > 1 else ""
    return f"CPU {env.get('device_name')} ({cores} cores{extra})"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def run_table(
    table: str,
    *,
    resume: str | os.PathLike | None = None,
    workers: int = 1,
    nproc_per_node: int | None = None,
    **params: Any,
) -> Path:
    """Train every (arch, width, neuron, T, seed) of a table once; return the table run's folder.

    Creates ``<out_dir>/<table>-<time>-<hex>/`` (never reusing a folder), trains each combination
    with :func:`tspike_lab.train.train` into ``runs/<key>/`` and rewrites ``metrics.json`` after
    each one (parameters, per-seed runs, aggregated rows with the paper's numbers, environment,
    start and wall time). The data are loaded once before the folder is made, so a data set that
    is missing fails early, naming its URL or folder.

    Args:
        table: one of ``TABLES``.
        resume: an existing table run folder: finished runs are kept, unfinished ones resume from
            their checkpoints (the stored parameters are used; any given must agree with them).
        workers: training runs in parallel on the CPU (each in its own process with
            ``cpu_count // workers`` threads); 1 trains in this process.
        nproc_per_node: processes per training run under torchrun (DDP). None: for table3, every
            GPU when more than one is present, else 1. ``batch_size`` is per process.
        **params: see :func:`validate_params`.
    Returns:
        The table run's folder.
    Raises:
        ValueError: bad parameters (before anything is made). DataUnavailableError: no data.
    """
    if table not in TABLES:
        raise ValueError(f"table must be one of {list(TABLES)}, got {table!r}")
    if not _is_int(workers) or workers < 1:
        raise ValueError(f"workers must be an int >= 1, got {workers!r}")
    if nproc_per_node is not None and (not _is_int(nproc_per_node) or nproc_per_node < 1):
        raise ValueError(f"nproc_per_node must be None or an int >= 1, got {nproc_per_node!r}")
    previous: dict[str, Any] | None = None
    if resume is not None:
        previous = load_run(resume)
        if previous["table"] != table:
            raise ValueError(f"resume folder {str(resume)!r} holds {previous['table']}, not {table}")
        p = validate_params(table, **{k: previous["params"][k] for k in PARAMS})
        given = validate_params(table, **{**p, **{k: v for k, v in params.items() if v is not None}})
        differ = sorted(k for k in PARAMS if given[k] != p[k] and k in params and params[k] is not None)
        if differ:
            raise ValueError(f"resume: parameter(s) {differ} differ from the stored run's "
                             f"({', '.join(f'{k}={p[k]!r}' for k in differ)}); omit them to resume")
    else:
        p = validate_params(table, **params)
    device = _device_used(p["device"])
    if nproc_per_node is None:
        nproc = 1
        if TABLES[table]["ddp"] and device.startswith("cuda") and ":" not in device:
            import torch

            nproc = max(1, torch.cuda.device_count())
    else:
        nproc = nproc_per_node
    if workers > 1 and (device != "cpu" or nproc > 1):
        raise ValueError(f"workers={workers} runs training runs side by side on the CPU only; got device "
                         f"{device!r} and nproc_per_node={nproc}. Use workers=1 on GPUs.")
    plan = resolve_data(p["dataset"], p["data_dir"])
    combos = _combos(p)
    _probe_data(plan, p["num_steps"][0])

    if previous is not None:
        run_dir = Path(resume)
        record = previous
        record["status"] = "running"
        done = {r["key"]: r for r in record["runs"] if r["status"] == "complete"}
    else:
        run_dir = new_run_dir(p["out_dir"], table)
        env = environment()
        launcher = (f"torchrun --nproc_per_node {nproc}" if nproc > 1
                    else f"workers={workers}" if workers > 1 else "in-process")
        shared = _config(p, plan, combos[0], out_dir=None).to_dict()
        for name in ("arch", "width", "neuron", "num_steps", "seed", "out_dir"):
            shared.pop(name)
        record = {
            "schema": SCHEMA_VERSION, "table": table, "title": TABLES[table]["title"], "status": "running",
            "profile": p["profile"], "params": p, "dataset": plan.dataset, "dataset_label": plan.label,
            "data_source": plan.source, "recipe": plan.recipe, "train_config": shared, "launcher": launcher,
            "environment": env, "hardware": _hardware(env, device, nproc, workers), "started_at": _now(),
            "wall_time_s": 0.0, "planned": len(combos), "runs": [], "aggregate": [],
        }
        done = {}
    base_wall = float(record["wall_time_s"])
    t0 = time.perf_counter()
    order = {_key(c): i for i, c in enumerate(combos)}
    results: dict[str, dict[str, Any]] = dict(done)

    def save(status: str, error: str | None = None) -> None:
        record["runs"] = sorted(results.values(), key=lambda r: order.get(r["key"], len(order)))
        record["aggregate"] = _rows_from_record(record, run_dir)
        record["status"] = status
        record["wall_time_s"] = base_wall + (time.perf_counter() - t0)
        if error is not None:
            record["error"] = error
        else:
            record.pop("error", None)
        write_json_atomic(run_dir / METRICS_FILE, _finite(record))

    todo = [c for c in combos if _key(c) not in done]
    save("running")
    from .train import TrainingDiverged

    def finish(combo, outcome) -> None:
        key = _key(combo)
        if isinstance(outcome, TrainingDiverged):
            results[key] = _failed_record(combo, "diverged", str(outcome), 0.0)
        else:
            epochs, wall = outcome
            results[key] = _run_record(combo, epochs, wall)
        r = results[key]
        logger.info("%s: %d/%d %s top-1 %s", table, len(results), len(combos), key,
                    "-" if r["top1"] is None else f"{r['top1']:.2f}%")
        save("running")

    try:
        if workers > 1 and len(todo) > 1:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor, as_completed

            threads = max(1, (os.cpu_count() or 1) // workers)
            with ProcessPoolExecutor(max_workers=min(workers, len(todo)),
                                     mp_context=multiprocessing.get_context("spawn"),
                                     initializer=_worker_init, initargs=(threads,)) as pool:
                futures = {pool.submit(_train_in_worker,
                                       _config(p, plan, c, str(run_dir / "runs" / _key(c))).to_dict()): c
                           for c in todo}
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
        else:
            for c in todo:
                config = _config(p, plan, c, str(run_dir / "runs" / _key(c)))
                try:
                    outcome = _train_torchrun(config, nproc) if nproc > 1 else _train_in_process(config)
                except TrainingDiverged as exc:
                    outcome = exc
                finish(c, outcome)
    except KeyboardInterrupt:
        save("interrupted", "KeyboardInterrupt")
        raise
    except BaseException as exc:
        save("failed", f"{type(exc).__name__}: {exc}")
        raise
    save("complete")
    return run_dir


def load_run(path: str | os.PathLike) -> dict[str, Any]:
    """A table run's ``metrics.json`` (``path``: the run folder or the file), checked against the schema."""
    path = Path(path)
    file = path / METRICS_FILE if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"no {METRICS_FILE} in {str(path)!r}: not a table run folder")
    with open(file, encoding="utf-8") as f:
        return validate_metrics(json.load(f))


# ----------------------------------------------------------------------------- paper numbers


def paper_numbers() -> dict[str, Any]:
    """``tspike_lab/paper_numbers.json``: every number we cite, with provenance and confidence."""
    ref = importlib.resources.files(__package__).joinpath("paper_numbers.json")
    return json.loads(ref.read_text(encoding="utf-8"))


def paper_number(table: str, dataset: str, arch: str, num_steps: int, neuron: str,
                 numbers: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    """The paper's top-1 for one cell, or None where it is unknown (never invented).

    Matches table, dataset, num_steps, neuron and arch (an entry whose arch is null, i.e. unclear,
    matches any arch, with a note saying so).
    Returns:
        ``{"top1", "provenance", "confidence", "note"}`` or None.
    """
    numbers = paper_numbers() if numbers is None else numbers
    for e in numbers["entries"]:
        if (e["table"], e["dataset"], e["num_steps"], e["neuron"]) != (table, dataset, num_steps, neuron):
            continue
        if e.get("arch") is not None and e["arch"] != arch:
            continue
        notes = [e.get("source", "")]
        if e.get("arch") is None:
            notes.append(f"the paper's architecture is unclear; shown beside our {arch}")
        if e.get("alternatives"):
            notes.append("also reported: " + ", ".join(f"{a:.2f}" for a in e["alternatives"]))
        return {"top1": float(e["top1"]), "provenance": e["provenance"], "confidence": e["confidence"],
                "note": "; ".join(n for n in notes if n)}
    return None


def paper_numbers_markdown(table: str | None = None) -> str:
    """The cited numbers (of one table, or all) as a markdown table with provenance and source."""
    entries = [e for e in paper_numbers()["entries"] if table is None or e["table"] == table]
    if not entries:
        return f"_No paper number is known for {table}: its cells stay empty (tspike_lab/paper_numbers.json)._"
    lines = ["| table | dataset | arch | T | neuron | top-1 % | provenance | confidence | source |",
             "|---|---|---|---|---|---|---|---|---|"]
    for e in entries:
        alt = "".join(f" (or {a:.2f})" for a in e.get("alternatives", []))
        lines.append(f"| {e['table']} | {_DATASET_LABELS.get(e['dataset'], e['dataset'])} | "
                     f"{e['arch'] or 'unclear'} | {e['num_steps']} | {e['neuron']} | {e['top1']:.2f}{alt} | "
                     f"{e['provenance']} | {e['confidence']} | {e['source']} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- aggregation


def _rows_from_record(record: Mapping[str, Any], run_dir: Path | str, numbers=None) -> list[dict[str, Any]]:
    numbers = paper_numbers() if numbers is None else numbers
    groups: dict[tuple, list[dict]] = {}
    for r in record["runs"]:
        groups.setdefault((r["arch"], r["width"], r["num_steps"], r["neuron"]), []).append(r)
    rows = []
    for (arch, width, t, neuron), runs in groups.items():
        ok = [r for r in runs if r["status"] == "complete" and r["top1"] is not None]
        mean = std = best = rate = None
        if ok:
            mean, std = mean_std([r["top1"] for r in ok])
            best = mean_std([r["best_top1"] for r in ok if r["best_top1"] is not None] or [math.nan])[0]
            rates = [r["firing_rate"] for r in ok if r.get("firing_rate") is not None]
            rate = sum(rates) / len(rates) if rates else None
        paper = None if record["dataset"] == PLUMBING_DATASET else \
            paper_number(record["table"], record["dataset"], arch, t, neuron, numbers)
        rows.append(_finite({
            "table": record["table"], "dataset": record["dataset"], "dataset_label": record["dataset_label"],
            "arch": arch, "width": width, "neuron": neuron, "num_steps": t,
            "n_seeds": len(ok), "seeds": [r["seed"] for r in ok],
            "mean": mean, "std": std, "best_mean": best, "firing_rate": rate,
            "paper": paper["top1"] if paper else None,
            "paper_provenance": f"{paper['provenance']}, confidence {paper['confidence']}" if paper else None,
            "paper_note": paper["note"] if paper else None,
            "diff": (mean - paper["top1"]) if (paper and mean is not None) else None,
            "hardware": record["hardware"], "profile": record["profile"], "epochs": record["params"]["epochs"],
            "run": Path(run_dir).name, "run_dir": str(run_dir), "status": record["status"],
            "failed": len(runs) - len(ok),
        }))
    return rows


def aggregate(source: str | os.PathLike | Iterable[str | os.PathLike]) -> list[dict[str, Any]]:
    """Rows of the paper's tables from table runs: one per (run, arch, width, neuron, T), over seeds.

    Args:
        source: a folder holding table runs (``<out_dir>``, searched two levels deep), one run
            folder, or a list of run folders.
    Returns:
        Dicts with table, dataset, dataset_label, arch, width, neuron, num_steps, n_seeds, seeds,
        mean, std (top-1 %, over seeds; std None for one seed), best_mean, firing_rate, paper,
        paper_provenance, paper_note, diff (mean - paper), hardware, profile, epochs, run,
        run_dir, status. Unknown paper cells are None.
    """
    if isinstance(source, (str, os.PathLike)):
        base = Path(source)
        if (base / METRICS_FILE).is_file():
            folders = [base]
        else:
            found = sorted(base.glob(f"*/{METRICS_FILE}")) + sorted(base.glob(f"*/*/{METRICS_FILE}"))
            folders = [f.parent for f in found if f.parent.parent.name != "runs"]
    else:
        folders = [Path(s) for s in source]
    numbers = paper_numbers()
    rows: list[dict[str, Any]] = []
    for folder in folders:
        try:
            record = load_run(folder)
        except (ValueError, json.JSONDecodeError) as exc:
            logger.warning("skipping %s: %s", folder, exc)
            continue
        rows.extend(_rows_from_record(record, folder, numbers))
    rows.sort(key=lambda r: (r["table"], r["dataset"], r["run"], r["arch"], r["width"] or 0, r["num_steps"],
                             _ALL_NEURONS.index(r["neuron"]) if r["neuron"] in _ALL_NEURONS else 9))
    return rows


def fmt_mean_std(mean: float | None, std: float | None, n: int | None = None, digits: int = 2) -> str:
    """``"95.12 ± 0.31"``; ``"95.12 (n=1)"`` when the spread is unknown; ``"—"`` when there is no value."""
    if mean is None or not math.isfinite(mean):
        return "—"
    if std is None or not math.isfinite(std):
        return f"{mean:.{digits}f}" + (f" (n={n})" if n is not None else "")
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def paper_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """A markdown table per run: ours (mean ± std over seeds) beside the paper's number and the difference."""
    if not rows:
        return "_no results_"
    parts: list[str] = []
    by_run: dict[str, list] = {}
    for r in rows:
        by_run.setdefault(r["run_dir"] if "run_dir" in r else r["run"], []).append(r)
    notes: list[str] = []
    for rs in by_run.values():
        r0 = rs[0]
        status = "" if r0.get("status", "complete") == "complete" else f" · status **{r0['status']}**"
        if r0["profile"] == "smoke":
            status += " · _smoke profile: plumbing only, not comparable with the paper_"
        parts.append(f"**{r0['table']}** · {r0['dataset_label']} · profile `{r0['profile']}` · "
                     f"{r0.get('epochs', '?')} epoch(s) · {r0['hardware']} · run `{r0['run']}`{status}\n")
        widths = any(r["width"] is not None for r in rs)
        head = ["arch"] + (["width"] if widths else []) + ["T", "neuron", "n", "ours top-1 % (mean ± std)",
                                                           "best-epoch %", "paper %", "ours − paper", "paper provenance"]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in rs:
            paper, note = "", ""
            if r["paper"] is not None:
                if r.get("paper_note"):
                    if r["paper_note"] not in notes:
                        notes.append(r["paper_note"])
                    note = f" [{notes.index(r['paper_note']) + 1}]"
                paper = f"{r['paper']:.2f}{note}"
            diff = "" if r["diff"] is None else f"{r['diff']:+.2f}"
            cells = [r["arch"]] + ([str(r["width"] or "")] if widths else []) + [
                str(r["num_steps"]), r["neuron"], str(r["n_seeds"]), fmt_mean_std(r["mean"], r["std"], r["n_seeds"]),
                fmt_mean_std(r.get("best_mean"), None), paper, diff, r["paper_provenance"] or ""]
            lines.append("| " + " | ".join(cells) + " |")
        parts.append("\n".join(lines) + "\n")
    if notes:
        parts.append("\n".join(f"[{i + 1}] {n}" for i, n in enumerate(notes)) + "\n")
    parts.append("Empty paper cells are unknown (tspike_lab/paper_numbers.json); every paper number is "
                 "secondary: reported by later papers that cite Guo et al. 2024.")
    return "\n".join(parts)


_NEURON_COLORS = MappingProxyType({"binary": "#7f7f7f", "ternary": "#1f77b4", "trainable_ternary": "#d62728",
                                   "trainable_binary": "#bcbd22"})


def plot_table(rows: Sequence[Mapping[str, Any]]):
    """A plotly figure of the rows: top-1 vs width per T (a width sweep), else bars per neuron beside the paper.

    Returns:
        ``plotly.graph_objects.Figure`` (never shown).
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    rows = [r for r in rows if r["mean"] is not None or r["paper"] is not None]
    def err(r):
        return r["std"] if r["std"] is not None else 0.0

    sweep = len({r["width"] for r in rows if r["width"] is not None}) > 1
    if sweep:
        steps = sorted({r["num_steps"] for r in rows})
        fig = make_subplots(rows=1, cols=len(steps), shared_yaxes=True,
                            subplot_titles=[f"T = {t}" for t in steps])
        for col, t in enumerate(steps, start=1):
            for neuron in [n for n in _ALL_NEURONS if any(r["neuron"] == n for r in rows)]:
                rs = sorted((r for r in rows if r["num_steps"] == t and r["neuron"] == neuron
                             and r["mean"] is not None), key=lambda r: r["width"] or 0)
                fig.add_scatter(x=[r["width"] for r in rs], y=[r["mean"] for r in rs],
                                error_y=dict(type="data", array=[err(r) for r in rs]),
                                mode="lines+markers", name=neuron, legendgroup=neuron, showlegend=col == 1,
                                line=dict(color=_NEURON_COLORS.get(neuron)), row=1, col=col)
            fig.update_xaxes(type="log", title="width (channels of the first block)", row=1, col=col,
                             tickvals=sorted({r["width"] for r in rows if r["width"]}))
        fig.update_yaxes(title="test top-1 % (mean ± std over seeds)", row=1, col=1)
        title = f"{rows[0]['table']} · {rows[0]['dataset_label']}: capacity sweep" if rows else "no results"
    else:
        groups: dict[tuple, list] = {}
        for r in rows:
            groups.setdefault((r["dataset_label"], r["arch"], r["num_steps"]), []).append(r)
        keys = list(groups) or [("", "", 0)]
        fig = make_subplots(rows=1, cols=len(keys), shared_yaxes=True,
                            subplot_titles=[f"{d} · {a} · T={t}" for d, a, t in keys])
        for col, key in enumerate(keys, start=1):
            rs = groups.get(key, [])
            fig.add_bar(x=[r["neuron"] for r in rs], y=[r["mean"] for r in rs], name="ours",
                        error_y=dict(type="data", array=[err(r) for r in rs]), marker_color="#1f77b4",
                        legendgroup="ours", showlegend=col == 1, row=1, col=col)
            fig.add_bar(x=[r["neuron"] for r in rs], y=[r["paper"] for r in rs], name="paper (secondary)",
                        marker_color="#ff7f0e", legendgroup="paper", showlegend=col == 1, row=1, col=col)
        fig.update_layout(barmode="group")
        fig.update_yaxes(title="test top-1 %", row=1, col=1)
        title = f"{rows[0]['table']}: ours against the paper" if rows else "no results"
    fig.update_layout(title=title, template="plotly_white", height=420, margin=dict(l=60, r=20, t=70, b=50))
    return fig


# ----------------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tspike_lab.reproduce aggregate DIR [DIR ...]``: print every run's table as markdown."""
    parser = argparse.ArgumentParser(prog="python -m tspike_lab.reproduce",
                                     description="Aggregate table runs into the paper's tables")
    sub = parser.add_subparsers(dest="command", required=True)
    agg = sub.add_parser("aggregate", help="print the tables of every run under the given folders")
    agg.add_argument("folders", nargs="+", help="out_dir folders or table run folders")
    agg.add_argument("--json", action="store_true", help="print the rows as JSON instead")
    ns = parser.parse_args(argv)
    rows = [row for folder in ns.folders for row in aggregate(folder)]
    print(json.dumps(rows, indent=2) if ns.json else paper_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
