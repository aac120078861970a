"""Profiles and plans: which training runs a table's profile trains, each a TrainConfig.

A profile says how to train (seeds, epochs, batch, learning rate) and which of the table's
rows to train. :func:`plan` turns a table, a profile and any overrides into the list of
training runs, one :class:`PlannedRun` (the table, the profile and the run's
:class:`~tspike_lab.config.TrainConfig`) each: every value is checked once, by TrainConfig,
and a refusal is reported in the notebook's terms (``archs``, ``seeds``, ...).
:func:`validate_params` checks a notebook's parameters against the same plan and the data
folders they name, before anything is read or made.

Profiles:

- ``paper``: every row of the paper's table, every variant plus our binary control, the released
  networks (``step_bn``, ``init="released"``) and the released recipe where it is known
  (``RECIPES``; reproduce/README.md gives the source of every value and marks the assumptions);
  3 seeds for every table the paper prints with ± (it does not say over how many runs).
- ``quick``: the rows that fit one GPU in about 10 minutes (CIFAR-10 ResNet19 T=2, one seed,
  a few epochs; ImageNet: one truncated epoch, a throughput check that cannot show an ordering).
- ``smoke``: seconds on a CPU, plumbing only: the embedded digits unless a data set is named.
- ``cpu`` (Table 2 and our capacity experiment): real data on 2 CPU cores (Table 2: 5 seeds, about an hour).
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .. import data
from ..config import TrainConfig
from ..errors import ConfigError
from ..hardware import resolve_device
from .paper import TABLES, Row

__all__ = [
    "PROFILES",
    "RECIPES",
    "RELEASED_NETWORK",
    "TABLE_RECIPE",
    "LATER_PARAMS",
    "CPU_MAX_HOURS",
    "PARAMS",
    "PARAM_FIELDS",
    "PARAM_HELP",
    "PLUMBING_DATASET",
    "PlannedRun",
    "plan",
    "validate_params",
    "run_key",
    "params_from",
    "repository_root",
    "default_out_dir",
    "shipped_results",
]

PLUMBING_DATASET = "digits"

# Every parameter of a table notebook (its `parameters` cell), in that order.
PARAMS = (
    "profile",
    "dataset",
    "data_dir",
    "archs",
    "widths",
    "neurons",
    "num_steps",
    "seeds",
    "epochs",
    "batch_size",
    "lr",
    "out_dir",
    "device",
    "max_steps_per_epoch",
    "max_eval_steps",
    "train_options",
    "workers",
    "max_hours",
)
# Parameters added after runs were first recorded: a metrics.json may lack them (they then take their None)
LATER_PARAMS = ("max_hours",)
# The longest a table may train on a CPU when max_hours is None (on a GPU: no limit)
CPU_MAX_HOURS = 24.0
# TrainConfig fields a table's parameters set; train_options may set the others.
_OWNED_FIELDS = (
    "dataset",
    "data_dir",
    "arch",
    "width",
    "neuron",
    "num_steps",
    "seed",
    "epochs",
    "batch_size",
    "lr",
    "device",
    "out_dir",
    "resume",
    "max_steps_per_epoch",
    "max_eval_steps",
    "progress",
)
# The TrainConfig field each table parameter sets; a list parameter trains one run per value.
PARAM_FIELDS = MappingProxyType(
    {
        "dataset": "dataset",
        "data_dir": "data_dir",
        "archs": "arch",
        "widths": "width",
        "neurons": "neuron",
        "num_steps": "num_steps",
        "seeds": "seed",
        "epochs": "epochs",
        "batch_size": "batch_size",
        "lr": "lr",
        "device": "device",
        "max_steps_per_epoch": "max_steps_per_epoch",
        "max_eval_steps": "max_eval_steps",
    }
)
_LIST_PARAMS = ("archs", "widths", "neurons", "num_steps", "seeds")
_PARAM_OF = {field: name for name, field in PARAM_FIELDS.items()}
_FIELD_HELP = {f.name: f.metadata["help"] for f in dataclasses.fields(TrainConfig)}
# What each table parameter means: the TrainConfig field's own help where it sets one, else the pipeline's.
PARAM_HELP: Mapping[str, str] = MappingProxyType(
    {
        "profile": "how to train and which rows: one of the table's PROFILES (paper, quick, smoke, cpu)",
        **{
            name: ("a list, one training run per value: " if name in _LIST_PARAMS else "")
            + _FIELD_HELP[field]
            + " (None: the profile's)"
            for name, field in PARAM_FIELDS.items()
        },
        "out_dir": "each table run makes a new folder under it (None: runs/<table> of this checkout)",
        "train_options": "other TrainConfig fields, over the profile's (a dict)",
        "workers": "training runs side by side on a CPU, each with cpu_count // workers threads (None: the profile's)",
        "max_hours": f"refuse to train when the estimate exceeds it (None: {CPU_MAX_HOURS:g} h on a CPU, no limit on "
        f"a GPU)",
    }
)

# The released networks (every paper profile): BatchNorm per time step outside the residual blocks and the
# released initialisation (yfguo91/Ternary-Spike models/spike_model.py, resnet.py, vggcifar.py).
RELEASED_NETWORK = MappingProxyType({"step_bn": True, "init": "released"})

RECIPES = MappingProxyType(
    {
        "cifar": (
            "The paper does not spell out its CIFAR recipe; the same authors' released CIFAR script "
            "(yfguo91/MPBN main_train.py; that it is the paper's recipe is an assumption): SGD lr 0.1, momentum "
            "0.9, weight decay 1e-4 (BatchNorm and biases exempt), CosineAnnealingLR(T_max=400) stepped per "
            "epoch, 400 epochs, batch 128, fp32, RandomCrop(32, 4) + flip + AutoAugment (CIFAR10Policy) + "
            "Cutout (1 hole, 16 px, before Normalize), Normalize mean (0.4914, 0.4822, 0.4465) std (0.2023, "
            "0.1994, 0.2010), cross-entropy on T-averaged logits; the released networks (per-step BN outside "
            "residual blocks, released init). Best-epoch test accuracy, as the script's best_acc. "
            "Ours, not the script's: 3 seeds (it fixes seed 3407)."
        ),
        "imagenet": (
            "The released Train.py: SGD lr 0.1, momentum 0.9, weight decay 1e-4 on conv/linear weights only, "
            "CosineAnnealingLR(T_max=320) stepped per epoch, 320 epochs, batch 40 per GPU x 8 GPUs, fp16 "
            "autocast + GradScaler, SyncBN, seed 1000, T=4, the released networks; RandomResizedCrop(224) + "
            "flip; test Resize(256) + CenterCrop(224); best-epoch accuracy (best_acc). Ours, not the "
            "script's: a new shuffle every epoch (the script calls set_epoch with a constant)."
        ),
        "cifar10-dvs": (
            "The released CIFAR10-DVS loader: 48x48 frames, flip + random roll of up to 5 pixels, T=10. "
            "No DVS training script was released: optimizer, schedule, fp32 and the best-epoch convention as "
            "the authors' CIFAR script (SGD lr 0.1, momentum 0.9, weight decay 1e-4, cosine per epoch; "
            "assumptions); 300 epochs, batch 64 and 3 seeds are ours."
        ),
        "digits": (
            "Plumbing stand-in: the embedded 8x8 UCI digits (1437 train / 360 test), no augmentation, the "
            "CIFAR optimizer recipe (SGD, momentum 0.9, weight decay 1e-4, cosine). Static images repeated "
            "T times stand in for ImageNet or DVS inputs. Not a paper number."
        ),
        "cpu": (
            "Not the paper's protocol: a narrow network (arch 'small') where capacity binds, a few epochs on "
            "2 CPU cores, crop + flip only (no AutoAugment, no Cutout: they slow a short schedule down), "
            "PyTorch's default initialisation, BatchNorm over T*B, cosine per step (a 3-epoch schedule stepped "
            "per epoch would be a staircase). Optimizer and normalisation as the authors' CIFAR script (SGD lr "
            "0.1, momentum 0.9, weight decay 1e-4)."
        ),
    }
)

# The recipe each table trains with (its data set's), by key of RECIPES; the digits stand-in has its own.
TABLE_RECIPE = MappingProxyType(
    {"table1": "imagenet", "table2": "cifar", "table3": "imagenet", "table4": "cifar10-dvs", "capacity": "digits"}
)

# smoke runs the paper profiles' code paths (released networks, per-epoch cosine) in seconds
_SMOKE = dict(
    epochs=1,
    seeds=(0,),
    max_steps_per_epoch=3,
    max_eval_steps=2,
    batch_size=32,
    lr=0.1,
    train_options={**RELEASED_NETWORK, "schedule": "cosine_epoch"},
)
# the released Train.py; Table 1 prints no std (one seed, the script's), Table 3 prints ± (three seeds)
_IMAGENET_OPTIONS = {
    **RELEASED_NETWORK,
    "schedule": "cosine_epoch",
    "sync_bn": True,
    "amp": True,
    "amp_dtype": "float16",
    "num_workers": 8,
}
_IMAGENET = dict(seeds=(1000,), epochs=320, batch_size=40, lr=0.1, train_options=_IMAGENET_OPTIONS)
# the released CIFAR script (yfguo91/MPBN main_train.py): fp32, per-epoch cosine, 400 epochs
_CIFAR_OPTIONS = {**RELEASED_NETWORK, "schedule": "cosine_epoch", "amp": False}

# Per table and profile: the value of every parameter left None. "rows" picks the table's rows
# (None: all of them); on the digits stand-in the paper's networks become arch "small".
PROFILES: Mapping[str, Mapping[str, Mapping[str, Any]]] = MappingProxyType(
    {
        "table1": {
            "paper": dict(_IMAGENET),
            # ImageNet cannot show an ordering in 10 minutes: one truncated epoch per variant.
            "quick": dict(
                rows=(Row("imagenet", "resnet18", 2),),
                seeds=(1000,),
                epochs=1,
                batch_size=64,
                lr=0.1,
                max_steps_per_epoch=300,
                max_eval_steps=50,
                train_options=_IMAGENET_OPTIONS,
            ),
            "smoke": dict(_SMOKE, rows=(Row("imagenet", "resnet18", 2),), widths=(8,)),
        },
        "table2": {
            "paper": dict(seeds=(0, 1, 2), epochs=400, batch_size=128, lr=0.1, train_options=_CIFAR_OPTIONS),
            # one GPU, ~10 minutes: CIFAR-10 ResNet19 T=2, the three variants, one seed, a short schedule
            "quick": dict(
                rows=(Row("cifar10", "resnet19", 2),),
                seeds=(0,),
                epochs=4,
                batch_size=128,
                lr=0.1,
                train_options=_CIFAR_OPTIONS,
            ),
            # ResNet19 on a CPU: 2 steps of 16 take ~10 s per run
            "smoke": dict(_SMOKE, rows=(Row("cifar10", "resnet19", 2),), batch_size=16, max_steps_per_epoch=2),
            # real CIFAR-10 on 2 CPU cores in about an hour: a narrow network where capacity binds, 5 seeds
            "cpu": dict(
                rows=(Row("cifar10", "small", 1), Row("cifar10", "small", 2)),
                widths=(8,),
                seeds=(0, 1, 2, 3, 4),
                epochs=3,
                batch_size=64,
                lr=0.1,
                workers=2,
                recipe="cpu",
                train_options={"autoaugment": False, "cutout": 0, "num_workers": 0},
            ),
        },
        "table3": {
            "paper": dict(_IMAGENET, seeds=(1000, 1001, 1002)),
            "quick": dict(
                rows=(Row("imagenet", "resnet18", 4),),
                seeds=(1000,),
                epochs=1,
                batch_size=64,
                lr=0.1,
                max_steps_per_epoch=300,
                max_eval_steps=50,
                train_options=_IMAGENET_OPTIONS,
            ),
            "smoke": dict(_SMOKE, rows=(Row("imagenet", "resnet34", 4),), neurons=("trainable_ternary",)),
        },
        "table4": {
            # no DVS script was released: seeds, epochs and batch are our assumptions, the rest the CIFAR script's
            "paper": dict(seeds=(0, 1, 2), epochs=300, batch_size=64, lr=0.1, train_options=_CIFAR_OPTIONS),
            "quick": dict(
                rows=(Row("cifar10-dvs", "resnet20", 10),),
                seeds=(0,),
                epochs=5,
                batch_size=64,
                lr=0.1,
                train_options=_CIFAR_OPTIONS,
            ),
            # digits stand in for DVS sequences: static images repeated T times (plumbing only)
            "smoke": dict(_SMOKE, rows=(Row("cifar10-dvs", "resnet19", 10),)),
        },
        "capacity": {
            # make demo: capacity made visible by sweeping the width of arch "small" (2 cores, ~1 min)
            "cpu": dict(
                widths=(1, 2, 4, 8, 16),
                seeds=(0, 1, 2),
                epochs=8,
                batch_size=64,
                lr=0.1,
                workers=2,
                train_options={"eval_every": 1000},
            ),  # test after the last epoch only
            "smoke": dict(_SMOKE, rows=(Row("digits", "small", 2),), widths=(8,), train_options={}),  # ours, as cpu
        },
    }
)


@dataclass(frozen=True)
class PlannedRun:
    """One training run of a table: the table, the profile, and the run's TrainConfig.

    The config names the table's data set (``cifar10``) and ``data_dir`` as given;
    :meth:`for_data` derives the config that trains from the source found in that folder.
    """

    table: str
    profile: str
    config: TrainConfig

    @property
    def key(self) -> str:
        """The run's folder name inside its table run (:func:`run_key`)."""
        return run_key(self.config)

    def for_data(self, plan: data.DataPlan, out_dir: str | None) -> TrainConfig:
        """The config that trains this run from ``plan``'s source into ``out_dir``.

        An image-folder copy of CIFAR-10 trains as dataset "imagefolder" with CIFAR's augmentation
        (``plan.options``) wherever the config leaves an augmentation field to the recipe (None).
        """
        c = self.config
        recipe = {k: v for k, v in plan.options.items() if getattr(c, k) is None}
        return dataclasses.replace(c, dataset=plan.source, data_dir=plan.root, out_dir=out_dir, **recipe)


def run_key(run: PlannedRun | TrainConfig | Mapping[str, Any]) -> str:
    """``<arch>[-w<width>]-<neuron>-T<T>-s<seed>``: a training run's folder name inside a table run.

    ``run``: a planned run, its config, or a ``runs`` entry of ``metrics.json``.
    """
    if isinstance(run, PlannedRun):
        run = run.config
    get = run.get if isinstance(run, Mapping) else lambda name: getattr(run, name)
    width = f"-w{get('width')}" if get("width") is not None else ""
    return f"{get('arch')}{width}-{get('neuron')}-T{get('num_steps')}-s{get('seed')}"


def _fail(table: str, name: str, value: Any, allowed: str):
    raise ConfigError(
        f"{table}: parameter {name} must be {allowed}, got {value!r}", field=name, value=value, allowed=allowed
    )


def _as_list(table: str, name: str, value: Any, kind: type) -> list | None:
    """A list parameter from a list, a scalar, or text ("0,1,2" or "[0, 1, 2]", as papermill -p passes)."""
    if value is None:
        return None
    allowed = f"None, a list of {kind.__name__} or a comma-separated string"
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
    elif kind is int and isinstance(value, int) and not isinstance(value, bool):
        items = [value]
    else:
        _fail(table, name, value, allowed)
    if not items:
        _fail(table, name, value, f"a non-empty list ({allowed})")
    if not all(isinstance(i, kind) and not isinstance(i, bool) for i in items):
        _fail(table, name, value, allowed)
    if len(set(items)) != len(items):
        _fail(table, name, value, "a list without repeats")
    return items


def _rows(
    table: str, prof: Mapping[str, Any], dataset: str | None, archs: list | None, num_steps: list | None
) -> list[Row]:
    """The rows a profile trains on ``dataset``, after the ``archs`` / ``num_steps`` overrides."""
    t = TABLES[table]
    rows = list(prof.get("rows") or t.rows)
    if dataset is not None:
        chosen = [r for r in rows if r.dataset == dataset]
        if not chosen:  # another of the table's data sets, or the digits stand-in: same networks and T
            first = [r for r in rows if r.dataset == rows[0].dataset]
            arch = (lambda a: "small") if dataset == PLUMBING_DATASET else (lambda a: a)
            chosen = list(dict.fromkeys(Row(dataset, arch(r.arch), r.num_steps) for r in first))
        rows = chosen
    if archs is None and num_steps is None:
        return rows
    datasets = list(dict.fromkeys(r.dataset for r in rows))
    out = []
    for ds in datasets:
        mine = [r for r in rows if r.dataset == ds]
        for arch in archs or list(dict.fromkeys(r.arch for r in mine)):
            steps = (
                num_steps
                or [r.num_steps for r in mine if r.arch == arch]
                or list(dict.fromkeys(r.num_steps for r in mine))
            )
            out.extend(Row(ds, arch, t_) for t_ in steps)
    return list(dict.fromkeys(out))


def _resolve(table: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """Every parameter resolved against the profile: the table's own rules and the parameters' shapes.

    What a value of a TrainConfig field may be is left to TrainConfig (:func:`_runs`).
    """
    if table not in TABLES:
        raise ConfigError(
            f"table must be one of {list(TABLES)}, got {table!r}",
            field="table",
            value=table,
            allowed=f"one of {list(TABLES)}",
        )
    unknown = sorted(set(params) - set(PARAMS))
    if unknown:
        raise ConfigError(f"{table}: unknown parameter(s) {unknown}; allowed: {list(PARAMS)}")
    profiles = PROFILES[table]
    profile = params.get("profile")
    profile = next(iter(profiles)) if profile is None else profile
    if profile not in profiles:
        _fail(table, "profile", profile, f"one of {list(profiles)}")
    prof = profiles[profile]
    out: dict[str, Any] = {"profile": profile}

    allowed_datasets = list(TABLES[table].datasets) + (
        [PLUMBING_DATASET] if PLUMBING_DATASET not in TABLES[table].datasets else []
    )
    dataset = params.get("dataset")
    if dataset is None and profile == "smoke":
        dataset = PLUMBING_DATASET
    if dataset is not None and dataset not in allowed_datasets:
        _fail(
            table,
            "dataset",
            dataset,
            f"None or one of {allowed_datasets} ({PLUMBING_DATASET!r}: the embedded plumbing stand-in)",
        )
    out["dataset"] = dataset
    data_dir = params.get("data_dir")
    out["data_dir"] = os.fspath(data_dir) if isinstance(data_dir, os.PathLike) else data_dir

    for name, kind in (("archs", str), ("neurons", str), ("num_steps", int), ("seeds", int), ("widths", int)):
        out[name] = _as_list(table, name, params.get(name), kind)
    if out["neurons"] is None:
        out["neurons"] = list(prof.get("neurons", TABLES[table].neurons))
    if out["seeds"] is None:
        out["seeds"] = list(prof["seeds"])

    for name in ("epochs", "batch_size", "lr", "max_steps_per_epoch", "max_eval_steps"):
        value = params.get(name)
        out[name] = prof.get(name) if value is None else value
    if isinstance(out["lr"], int) and not isinstance(out["lr"], bool):
        out["lr"] = float(out["lr"])  # papermill passes -p lr 1 as an int

    workers = params.get("workers")
    workers = prof.get("workers", 1) if workers is None else workers
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        _fail(
            table,
            "workers",
            workers,
            "None (the profile's value) or an int >= 1 (training runs side by side on the CPU)",
        )
    out["workers"] = workers

    max_hours = params.get("max_hours")
    if max_hours is not None and (
        not isinstance(max_hours, (int, float)) or isinstance(max_hours, bool) or not 0 < max_hours < float("inf")
    ):
        _fail(table, "max_hours", max_hours, f"None ({CPU_MAX_HOURS:g} h on a CPU, no limit on a GPU) or a number > 0")
    out["max_hours"] = None if max_hours is None else float(max_hours)

    out_dir = params.get("out_dir")
    out_dir = default_out_dir(table) if out_dir is None else out_dir
    if not isinstance(out_dir, (str, os.PathLike)) or str(out_dir) == "":
        _fail(table, "out_dir", out_dir, "a folder path (each run makes a new sub-folder)")
    if Path(out_dir).exists() and not Path(out_dir).is_dir():
        _fail(table, "out_dir", str(out_dir), "a folder path (this path is a file)")
    out["out_dir"] = str(out_dir)
    device = params.get("device")
    out["device"] = "auto" if device is None else device

    options = dict(prof.get("train_options") or {})
    given = params.get("train_options")
    if given is not None:
        if not isinstance(given, Mapping):
            _fail(table, "train_options", given, "None or a dict of TrainConfig fields")
        options.update(given)
    free = sorted(set(_FIELD_HELP) - set(_OWNED_FIELDS))
    bad = sorted(set(options) - set(free))
    if bad:
        _fail(
            table,
            "train_options",
            options,
            f"a dict of TrainConfig fields other than the table's own parameters; not allowed: {bad}; allowed: {free}",
        )
    out["train_options"] = options
    return out


def _in_notebook_terms(table: str, exc: ConfigError, p: Mapping[str, Any]) -> ConfigError:
    """TrainConfig's refusal of a planned run, naming the table parameter that set the field and its value."""
    field, allowed = exc.field, exc.allowed
    if allowed is None or field is None:
        return ConfigError(f"{table}: {exc}", field=field, value=exc.value, allowed=allowed)
    if field not in _PARAM_OF:
        if field in p["train_options"]:
            name = f"train_options[{field!r}]"
            return ConfigError(
                f"{table}: parameter {name} must be {allowed}, got {exc.value!r}",
                field=field,
                value=exc.value,
                allowed=allowed,
            )
        return ConfigError(f"{table}: {exc}", field=field, value=exc.value, allowed=allowed)
    name = _PARAM_OF[field]
    value = exc.value
    if name in _LIST_PARAMS:
        value = p[name] if p.get(name) is not None else [exc.value]
        if allowed.startswith("one of "):
            allowed = f"a list drawn from {allowed[len('one of ') :]} (unknown {field} {exc.value!r})"
        elif allowed.startswith(("an int ", "None or an int ")):
            allowed = "None or a list of ints " + allowed.split("an int ", 1)[1]
    return ConfigError(
        f"{table}: parameter {name} must be {allowed}, got {value!r}", field=name, value=value, allowed=allowed
    )


def _runs(table: str, p: Mapping[str, Any]) -> list[PlannedRun]:
    prof = PROFILES[table][p["profile"]]
    rows = _rows(table, prof, p["dataset"], p["archs"], p["num_steps"])
    runs = []
    for seed in p["seeds"]:  # seeds outermost: a killed table has n=1 of every row first
        for row in rows:
            widths = (p["widths"] or prof.get("widths") or (8,)) if row.arch == "small" else (None,)
            for width in widths:
                for neuron in p["neurons"]:
                    try:
                        config = TrainConfig(
                            dataset=row.dataset,
                            data_dir=p["data_dir"],
                            arch=row.arch,
                            width=width,
                            neuron=neuron,
                            num_steps=row.num_steps,
                            seed=seed,
                            epochs=p["epochs"],
                            batch_size=p["batch_size"],
                            lr=p["lr"],
                            device=p["device"],
                            out_dir=None,
                            resume=True,
                            max_steps_per_epoch=p["max_steps_per_epoch"],
                            max_eval_steps=p["max_eval_steps"],
                            progress=False,
                            **p["train_options"],
                        )
                    except ConfigError as exc:
                        raise _in_notebook_terms(table, exc, p) from None
                    runs.append(PlannedRun(table, p["profile"], config))
    if p["widths"] and not any(r.config.arch == "small" for r in runs):
        for width in p["widths"]:  # given but used by no run (no arch "small"): still refused by the same rule
            try:
                TrainConfig(arch="small", width=width)
            except ConfigError as exc:
                raise _in_notebook_terms(table, exc, p) from None
    return runs


def plan(table: str, profile: str | None = None, **overrides: Any) -> list[PlannedRun]:
    """The training runs a table's profile trains, one :class:`PlannedRun` per run, seeds outermost.

    Args:
        table: one of ``TABLES`` (table1-table4, or our ``capacity`` experiment).
        profile: one of ``PROFILES[table]`` (None: the table's first, ``paper`` for the paper's tables).
        **overrides: any of ``PARAMS``. ``dataset`` keeps the rows of that data set (another data
            set of the table, or ``digits``, takes the first data set's networks and T; arch
            ``small`` on digits); ``archs`` and ``num_steps`` replace the networks and T
            (given without the other, each arch keeps its T from the table); ``neurons``,
            ``seeds``, ``widths`` (arch small), ``epochs``, ``batch_size``, ``lr`` ... replace the
            profile's value.
    Returns:
        PlannedRuns; ``run.config`` holds the dataset, arch, width, neuron, num_steps, seed, epochs,
        batch_size, lr, the truncations and the profile's ``train_options``.
    Raises:
        ConfigError naming a bad parameter, the value and what is allowed (:func:`validate_params`
        also checks the data folders and the device).
    """
    return _runs(table, _resolve(table, {**overrides, "profile": profile}))


def validate_params(table: str, **params: Any) -> dict[str, Any]:
    """Check a table's parameters and fill those left None from the profile.

    Every planned run's TrainConfig checks itself (the one owner of what a run may be) and its
    complaint is reported in the notebook's terms; then the data folders are described
    (:func:`tspike_lab.data.describe`: names only, no pixels read), the configs the runs will
    train with derived from them, and the device looked for. No folder is made.

    Returns:
        The resolved parameters: every key of ``PARAMS``, lists as lists.
    Raises:
        ConfigError naming the parameter, the value and what is allowed.
    """
    p = _resolve(table, params)
    runs = _runs(table, p)
    plans = {}
    for ds in dict.fromkeys(r.config.dataset for r in runs):
        try:
            plans[ds] = data.describe(ds, p["data_dir"])
        except ConfigError as exc:
            if exc.field == "data_dir" and exc.allowed:
                default = data.DATASETS[ds].data_dir == "optional" and not exc.allowed.startswith("None")
                _fail(table, "data_dir", exc.value, f"None or {exc.allowed}" if default else exc.allowed)
            raise ConfigError(f"{table}: {exc}", field=exc.field, value=exc.value, allowed=exc.allowed) from None
    for run in runs:
        try:
            run.for_data(plans[run.config.dataset], None)
        except ConfigError as exc:
            raise _in_notebook_terms(table, exc, p) from None
    if p["device"] != "auto":
        try:
            resolve_device(p["device"])
        except ConfigError as exc:
            _fail(table, "device", p["device"], exc.allowed)
    return {k: p[k] for k in PARAMS}


def params_from(namespace: Mapping[str, Any], table: str) -> dict[str, Any]:
    """The table parameters in a notebook's namespace (``globals()``), refusing one papermill injected by mistake.

    papermill injects ``-p name value`` as an assignment in a cell headed "# Parameters",
    whatever the name; a typo (``-p seed 5`` for ``seeds``) would be ignored and the profile's
    value trained. Every injected name that is not one of ``PARAMS`` is refused here, naming it.
    """
    injected: list[str] = []
    for source in namespace.get("In") or []:
        if isinstance(source, str) and source.lstrip().startswith("# Parameters"):
            try:
                tree = ast.parse(source)
            except SyntaxError:
                continue
            injected += [
                t.id
                for node in tree.body
                if isinstance(node, ast.Assign)
                for t in node.targets
                if isinstance(t, ast.Name)
            ]
    extra = sorted(set(injected) - set(PARAMS))
    if extra:
        hints = [
            f"{k!r} (did you mean {m[0]!r}?)" if (m := difflib.get_close_matches(k, PARAMS, 1)) else repr(k)
            for k in extra
        ]
        raise ConfigError(f"{table}: unknown parameter(s) {', '.join(hints)}; allowed: {list(PARAMS)}")
    return {k: namespace[k] for k in PARAMS if k in namespace}


def repository_root() -> Path | None:
    """The checkout this package runs from (a folder with pyproject.toml beside tspike_lab/), else None."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").is_file() and (root / "tspike_lab").is_dir() else None


def default_out_dir(table: str) -> str:
    """Where a table run goes when out_dir is None: ``<checkout>/runs/<table>`` (git-ignored), else ``runs/<table>``."""
    root = repository_root()
    return str((root / "runs" / table) if root else Path("runs") / table)


def shipped_results() -> Path | None:
    """The results committed with the repository (``<checkout>/results``), or None outside a checkout."""
    root = repository_root()
    return root / "results" if root and (root / "results").is_dir() else None
