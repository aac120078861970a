"""Table runs on disk: the ``metrics.json`` schema, reading runs back, rows over seeds, the paper's layout.

A table run's ``metrics.json`` holds its parameters, per-seed training runs, rows aggregated
over seeds (mean ± std) with the paper's number beside each, the environment, the hardware,
start and wall time, and a status (running | complete | diverged | failed | interrupted).

Two accuracies per training run, both kept: ``top1``, the final epoch's test top-1, and
``best_top1``, the best epoch's (the released scripts print and save this ``best_acc``, so
the paper's numbers are read as best-epoch accuracies). Rows compare the paper with the
best-epoch mean (``COMPARED``). Every ± is the sample standard deviation (ddof=1) over seeds;
the paper does not say what its ± is.

Reading is as strict as the data loaders: a record is read only from a regular file (a FIFO
is refused, never waited on) of at most :data:`MAX_RECORD_BYTES`, parsed with its nesting
bounded, and checked for types, known names (neuron, arch, data set) and ranges (top-1 in
[0, 100], finite); a run listed twice is refused. :func:`aggregate` names every record it could
not read and why (:class:`tspike_lab.errors.RecordError`), follows no symlinked folder (so no
loop), and reads a record reached twice only once.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ..errors import RecordError
from ..models import ARCHS, NEURONS
from ..results import json_safe, mean_std, read_regular
from .paper import ENERGY, TABLES, paper_cell
from .plan import LATER_PARAMS, PARAMS

__all__ = [
    "SCHEMA_VERSION",
    "METRICS_FILE",
    "METRICS_SCHEMA",
    "RUN_SCHEMA",
    "ROW_SCHEMA",
    "STATUSES",
    "COMPARED",
    "STD_CONVENTION",
    "validate_metrics",
    "load_run",
    "find_runs",
    "rows_from_record",
    "aggregate",
    "fmt_mean_std",
    "paper_table",
    "paper_markdown",
    "describe_setup",
    "fmt_duration",
    "fmt_per_class",
]

logger = logging.getLogger(__name__)

SCHEMA_VERSION = "tspike_lab.reproduce/2"
METRICS_FILE = "metrics.json"
STATUSES = ("running", "complete", "diverged", "failed", "interrupted")
MAX_RECORD_BYTES = 64 * 2**20  # a metrics.json larger than this is refused unread
# Which of a run's two accuracies a row compares with the paper: the best epoch's, as the released scripts report
COMPARED = "best epoch"
STD_CONVENTION = "sample std (ddof=1) over seeds"

_NUM = (int, float)
_NONE = type(None)

METRICS_SCHEMA = MappingProxyType(
    {
        "schema": str,
        "table": str,
        "title": str,
        "status": str,  # one of STATUSES
        "profile": str,
        "params": dict,
        "datasets": dict,  # paper's data set name -> {"label", "source", "root"}; label e.g. "CIFAR-10 (JPEG copy)"
        "recipe": str,  # where the recipe comes from (an assumption where the paper is silent)
        "train_config": dict,  # the TrainConfig fields every run shares, as used
        "launcher": str,  # "in-process", "workers=N" or "torchrun --nproc_per_node N"
        "environment": dict,
        "hardware": str,
        "started_at": str,  # ISO 8601, UTC
        "wall_time_s": _NUM,
        "planned": int,
        "runs": list,
        "aggregate": list,
    }
)
RUN_SCHEMA = MappingProxyType(
    {
        "key": str,
        "dataset": str,
        "arch": str,
        "width": (int, _NONE),
        "neuron": str,
        "num_steps": int,
        "seed": int,
        "run_dir": str,
        "status": str,
        "epochs": int,
        "top1": (*_NUM, _NONE),
        "best_top1": (*_NUM, _NONE),
        "train_top1": (*_NUM, _NONE),
        "firing_rate": (*_NUM, _NONE),
        "amplitudes": (dict, _NONE),
        "images_per_s": (*_NUM, _NONE),
        "wall_time_s": _NUM,
    }
)
ROW_SCHEMA = MappingProxyType(
    {
        "table": str,
        "dataset": str,
        "dataset_label": str,
        "arch": str,
        "width": (int, _NONE),
        "neuron": str,
        "num_steps": int,
        "n_seeds": int,
        "seeds": list,
        "mean": (*_NUM, _NONE),
        "std": (*_NUM, _NONE),
        "best_mean": (*_NUM, _NONE),
        "firing_rate": (*_NUM, _NONE),
        "paper": (*_NUM, _NONE),
        "paper_std": (*_NUM, _NONE),
        "paper_source": (str, _NONE),
        "diff": (*_NUM, _NONE),
        "within_2std": (bool, _NONE),
        "ours": bool,
        "hardware": str,
        "profile": str,
        "epochs": int,
        "run": str,
    }
)
_ENV_KEYS = ("python", "torch", "snntorch", "cuda_available", "cuda_version", "device_name", "git_commit", "git_dirty")


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


def _number(v: Any, lo: float, hi: float) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and lo <= v <= hi


_PERCENT = ("top1", "best_top1", "train_top1")


def _check_run_values(run: Mapping[str, Any], where: str, datasets: Mapping[str, Any], problems: list[str]) -> None:
    """Names and ranges of one run entry (its types already checked)."""
    if run["neuron"] not in NEURONS:
        problems.append(f"{where}['neuron'] must be one of {list(NEURONS)}, got {run['neuron']!r}")
    if run["arch"] not in ARCHS:
        problems.append(f"{where}['arch'] must be one of {list(ARCHS)}, got {run['arch']!r}")
    if run["dataset"] not in datasets:
        problems.append(f"{where}['dataset'] {run['dataset']!r} is not among metrics['datasets'] {list(datasets)}")
    if run["status"] not in STATUSES:
        problems.append(f"{where}['status'] must be one of {list(STATUSES)}, got {run['status']!r}")
    for key, ok, allowed in (
        ("num_steps", run["num_steps"] >= 1, ">= 1"),
        ("seed", run["seed"] >= 0, ">= 0"),
        ("epochs", run["epochs"] >= 0, ">= 0"),
        ("width", run["width"] is None or run["width"] >= 1, "None or >= 1"),
        ("wall_time_s", _number(run["wall_time_s"], 0, math.inf), "a finite number >= 0"),
    ):
        if not ok:
            problems.append(f"{where}[{key!r}] must be {allowed}, got {run[key]!r}")
    for key, lo, hi in (*((k, 0, 100) for k in _PERCENT), ("firing_rate", 0, 1), ("images_per_s", 0, math.inf)):
        if run[key] is not None and not _number(run[key], lo, hi):
            problems.append(f"{where}[{key!r}] must be None or a finite number in [{lo}, {hi}], got {run[key]!r}")


def _check_values(obj: Mapping[str, Any], problems: list[str]) -> None:
    """Names, ranges and duplicates of a record whose keys and types are right."""
    for name, info in obj["datasets"].items():
        if not isinstance(info, dict) or not isinstance(info.get("label"), str):
            problems.append(
                f"metrics['datasets'][{name!r}] must be an object with a 'label' string, got {type(info).__name__}"
            )
    for key, value in (("wall_time_s", obj["wall_time_s"]), ("planned", obj["planned"])):
        if not _number(value, 0, math.inf):
            problems.append(f"metrics[{key!r}] must be a finite number >= 0, got {value!r}")
    seen: dict[tuple, int] = {}
    for i, run in enumerate(obj["runs"]):
        where = f"metrics['runs'][{i}]"
        before = len(problems)
        _check_keys(run, RUN_SCHEMA, where, problems)
        if len(problems) > before:
            continue
        _check_run_values(run, where, obj["datasets"], problems)
        key = tuple(run[k] for k in ("dataset", "arch", "width", "num_steps", "neuron", "seed"))
        if key in seen:
            problems.append(
                f"{where} repeats metrics['runs'][{seen[key]}] (dataset, arch, width, T, neuron, seed "
                f"{key}): a run counted twice"
            )
        seen.setdefault(key, i)


def validate_metrics(obj: Any) -> dict:
    """Check a table run's ``metrics.json`` against ``METRICS_SCHEMA`` (and its runs and rows), names and ranges.

    Besides keys and types: each run's neuron, arch and data set are known names, its top-1
    values None or finite in [0, 100], its firing rate in [0, 1], and no (data set, arch,
    width, T, neuron, seed) appears twice.

    Raises:
        RecordError (a ValueError) listing every missing key, wrong type or value out of range.
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
        if obj["status"] not in STATUSES:
            problems.append(f"metrics['status'] must be one of {list(STATUSES)}, got {obj['status']!r}")
        problems += [f"metrics['environment'] lacks {k!r}" for k in _ENV_KEYS if k not in obj["environment"]]
        problems += [
            f"metrics['params'] lacks {k!r}" for k in PARAMS if k not in obj["params"] and k not in LATER_PARAMS
        ]
        _check_values(obj, problems)
        for i, row in enumerate(obj["aggregate"]):
            _check_keys(row, ROW_SCHEMA, f"metrics['aggregate'][{i}]", problems)
        if obj["status"] == "complete" and (
            len(obj["runs"]) != obj["planned"]
            or any(r.get("status") != "complete" for r in obj["runs"] if isinstance(r, dict))
        ):
            problems.append(
                f"status 'complete' but "
                f"{sum(isinstance(r, dict) and r.get('status') == 'complete' for r in obj['runs'])} of "
                f"{obj['planned']} runs completed"
            )
    if problems:
        raise RecordError("metrics.json does not match METRICS_SCHEMA: " + "; ".join(problems))
    return obj


def _read_json(file: Path) -> Any:
    """The JSON a record file holds: regular files only, size-capped, nesting bounded; RecordError naming why not."""
    try:
        raw = read_regular(file, max_bytes=MAX_RECORD_BYTES)
    except FileNotFoundError:
        raise RecordError(f"{str(file)!r} does not exist") from None
    except OSError as exc:  # a FIFO or device (SpecialFileError), too large, unreadable, a symlink loop
        raise RecordError(f"{str(file)!r} cannot be read: {exc.strerror or exc}") from None
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:  # before ValueError, of which it is one
        raise RecordError(f"{str(file)!r} is not UTF-8 text") from None
    except ValueError as exc:  # JSONDecodeError, or an integer too long to convert
        raise RecordError(f"{str(file)!r} is not valid JSON (truncated or damaged?): {exc}") from None
    except RecursionError:
        raise RecordError(f"{str(file)!r} is nested too deeply to be a table run record") from None


def _ours(obj: Any) -> bool:
    return (
        isinstance(obj, dict)
        and isinstance(obj.get("schema"), str)
        and obj["schema"].startswith("tspike_lab.reproduce/")
    )


def load_run(path: str | os.PathLike) -> dict[str, Any]:
    """A table run's ``metrics.json`` (``path``: the run folder or the file), checked against the schema.

    Raises:
        RecordError: no such file, not a regular file, not valid JSON, or not a valid record (names why).
    """
    path = Path(path)
    file = path / METRICS_FILE if path.is_dir() else path
    if not os.path.lexists(file):
        raise RecordError(f"no {METRICS_FILE} in {str(path)!r}: not a table run folder")
    obj = _read_json(file)
    try:
        return validate_metrics(obj)
    except RecordError as exc:
        raise RecordError(f"{str(file)!r}: {exc}") from None


def _scan(base: Path, problems: list[str]) -> list[Path]:
    """Run folders at ``base`` or one or two levels below it (symlinked folders are not followed)."""
    if not base.exists():
        problems.append(f"{str(base)!r} does not exist")
        return []
    if not base.is_dir():
        problems.append(f"{str(base)!r} is not a folder")
        return []
    if os.path.lexists(base / METRICS_FILE):
        return [base]
    found: list[Path] = []

    def subfolders(folder: Path) -> list[Path]:
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            problems.append(f"{str(folder)!r} cannot be listed: {exc.strerror or exc}")
            return []
        out = []
        for e in entries:
            if e.is_symlink():
                if os.path.isdir(e.path):
                    logger.warning("not following the symlinked folder %s (give its target to aggregate it)", e.path)
                continue
            if e.is_dir(follow_symlinks=False):
                out.append(Path(e.path))
        return out

    level1 = subfolders(base)
    found += [f for f in level1 if os.path.lexists(f / METRICS_FILE)]
    for f in level1:
        found += [g for g in subfolders(f) if os.path.lexists(g / METRICS_FILE)]
    return sorted(found)


def find_runs(source: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    """Table run folders: ``source`` itself, or those up to two levels below it (any folder names), or a list of such.

    Symlinked folders below ``source`` are not followed; a ``metrics.json`` that is not a table
    run's (another schema) is skipped with a warning.

    Raises:
        RecordError: a folder that does not exist, or a ``metrics.json`` that cannot be read (names each).
    """
    problems: list[str] = []
    runs = [folder for folder, _ in _collect(source, problems)]
    if problems:
        raise RecordError(_summary(problems))
    return runs


def _summary(problems: list[str]) -> str:
    return f"could not read {len(problems)} table run record(s): " + "; ".join(problems)


def _collect(source, problems: list[str]) -> list[tuple[Path, dict]]:
    """``(run folder, record)`` of every table run under ``source``, each file once; problems appended, named."""
    items = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    out: list[tuple[Path, dict]] = []
    files: set[tuple[int, int]] = set()
    copies: dict[str, Path] = {}
    for item in items:
        for folder in _scan(Path(item), problems):
            file = folder / METRICS_FILE
            try:
                st = os.stat(file)
                identity = (st.st_dev, st.st_ino)
                if identity in files:
                    continue  # the same file reached twice (a folder given twice, or above a run already given)
                files.add(identity)
                obj = _read_json(file)
                if not _ours(obj):
                    logger.warning("skipping %s: not a table run record (no tspike_lab.reproduce schema)", file)
                    continue
                record = validate_metrics(obj)
            except RecordError as exc:
                problems.append(str(exc) if str(file) in str(exc) else f"{str(file)!r}: {exc}")
                continue
            except OSError as exc:
                problems.append(f"{str(file)!r} cannot be read: {exc.strerror or exc}")
                continue
            same = json.dumps([record["table"], record["started_at"], record["runs"]], sort_keys=True)
            if same in copies:
                problems.append(
                    f"{str(file)!r} is a copy of the table run in {str(copies[same])!r} (same start and "
                    f"runs): its seeds would count twice; aggregate one of them"
                )
                continue
            copies[same] = folder
            out.append((folder, record))
    return out


def rows_from_record(record: Mapping[str, Any], run_dir: Path | str) -> list[dict[str, Any]]:
    """One row per (data set, arch, width, T, neuron) of a table run, over seeds, beside the paper's cell."""
    table = TABLES[record["table"]]
    groups: dict[tuple, list[dict]] = {}
    for r in record["runs"]:
        groups.setdefault((r["dataset"], r["arch"], r["width"], r["num_steps"], r["neuron"]), []).append(r)
    rows = []
    for (dataset, arch, width, t, neuron), runs in groups.items():
        ok = [r for r in runs if r["status"] == "complete" and r["top1"] is not None]
        mean = std = best = best_std = rate = None
        if ok:
            mean, std = mean_std([r["top1"] for r in ok])
            bests = [r["best_top1"] for r in ok if r["best_top1"] is not None]
            best, best_std = mean_std(bests) if len(bests) == len(ok) else (None, None)
            rates = [r["firing_rate"] for r in ok if r.get("firing_rate") is not None]
            rate = sum(rates) / len(rates) if rates else None
        paper = paper_cell(record["table"], dataset, arch, t, neuron) if width is None else None
        diff = within = None
        if paper is not None and best is not None:  # the released scripts' convention: the best epoch
            diff = best - paper["top1"]
            within = None if paper["std"] is None else bool(abs(diff) <= 2 * paper["std"])
        info = record["datasets"].get(dataset, {})
        rows.append(
            json_safe(
                {
                    "table": record["table"],
                    "dataset": dataset,
                    "dataset_label": info.get("label", dataset),
                    "arch": arch,
                    "width": width,
                    "neuron": neuron,
                    "num_steps": t,
                    "n_seeds": len(ok),
                    "seeds": [r["seed"] for r in ok],
                    "mean": mean,
                    "std": std,
                    "best_mean": best,
                    "best_std": best_std,
                    "compared": COMPARED,
                    "firing_rate": rate,
                    "paper": paper["top1"] if paper else None,
                    "paper_std": paper["std"] if paper else None,
                    "paper_source": paper["source"] if paper else None,
                    "diff": diff,
                    "within_2std": within,
                    "ours": neuron in table.extra or not table.paper,
                    "hardware": record["hardware"],
                    "profile": record["profile"],
                    "epochs": record["params"]["epochs"],
                    "run": Path(run_dir).name,
                    "run_dir": str(run_dir),
                    "status": record["status"],
                    "failed": len(runs) - len(ok),
                }
            )
        )
    return rows


def _neuron_order(neuron: str) -> int:
    names = list(NEURONS)
    return names.index(neuron) if neuron in names else len(names)


def aggregate(source: str | os.PathLike | Iterable[str | os.PathLike]) -> list[dict[str, Any]]:
    """Rows of the paper's tables from table runs: one per (run, data set, arch, width, T, neuron), over seeds.

    Args:
        source: a folder holding table runs (searched two levels deep, whatever the folders are
            called), one run folder, or a list of such folders.
    Raises:
        RecordError: naming every folder that does not exist and every record that could not be
            read or is invalid (why: not a regular file, not JSON, a field out of range, a run
            listed twice, a copy of another run), after reading all of them.
    Returns:
        Dicts with table, dataset, dataset_label, arch, width, neuron, num_steps, n_seeds, seeds,
        mean, std (final-epoch top-1 %, over seeds; std NaN for one seed), best_mean, best_std
        (best-epoch top-1 %), compared ("best epoch": what diff compares), firing_rate, paper,
        paper_std, paper_source (None where the paper has no such cell), diff (ours best-epoch
        mean - paper), within_2std (|diff| <= 2 paper std), ours (a column of ours, not the
        paper's), hardware, profile, epochs, run, run_dir, status, failed.
    """
    problems: list[str] = []
    rows: list[dict[str, Any]] = []
    for folder, record in _collect(source, problems):
        rows.extend(rows_from_record(record, folder))
    if problems:
        raise RecordError(_summary(problems))
    order = {name: i for i, name in enumerate(TABLES)}
    rows.sort(
        key=lambda r: (
            order.get(r["table"], 99),
            r["dataset"],
            r["run"],
            r["arch"],
            r["width"] or 0,
            r["num_steps"],
            _neuron_order(r["neuron"]),
        )
    )
    return rows


def fmt_mean_std(mean: float | None, std: float | None, n: int | None = None, digits: int = 2) -> str:
    """``"95.12 ± 0.31"``; ``"95.12 (n=1)"`` when the spread is unknown; ``"—"`` when there is no value."""
    if mean is None or not math.isfinite(mean):
        return "—"
    if std is None or not math.isfinite(std):
        return f"{mean:.{digits}f}" + (f" (n={n})" if n is not None else "")
    return f"{mean:.{digits}f} ± {std:.{digits}f}" + (f" (n={n})" if n is not None else "")


def describe_setup(record: Mapping[str, Any]) -> str:
    """The training setup a table run actually used, in one line (epochs, batch, lr, augmentation, truncation)."""
    c, p = record["train_config"], record["params"]
    aug = [
        name
        for name, on in (
            (f"crop {c.get('crop_padding')}", c.get("crop_padding")),
            ("flip", c.get("flip")),
            ("AutoAugment", c.get("autoaugment")),
            (f"Cutout {c.get('cutout')}", c.get("cutout")),
        )
        if on
    ]
    if not c.get("augment", True):
        aug = ["none"]
    parts = [
        f"{p['epochs']} epoch(s)"
        + (f" of at most {p['max_steps_per_epoch']} steps" if p.get("max_steps_per_epoch") else ""),
        f"batch {p['batch_size']}",
        f"{c.get('optimizer', 'sgd').upper()} lr {p['lr']:g}"
        + (f", momentum {c['momentum']:g}" if c.get("optimizer") == "sgd" else ""),
        f"weight decay {c.get('weight_decay', 0):g}",
        f"{c.get('schedule')} schedule",
        "augmentation " + (" + ".join(aug) if aug else "the data set's recipe"),
        f"{len(p['seeds'])} seed(s) {p['seeds']}",
    ]
    if p.get("max_eval_steps"):
        parts.append(f"test on {p['max_eval_steps']} batches")
    return ", ".join(parts)


def _cell(r: Mapping[str, Any] | None) -> str:
    if r is None:
        return "—"
    best = r.get("best_mean")
    ours = (f"best {fmt_mean_std(best, r.get('best_std'))} · final " if best is not None else "final ") + fmt_mean_std(
        r["mean"], r["std"], r["n_seeds"]
    )
    if r["paper"] is None:
        return ours
    paper = fmt_mean_std(r["paper"], r["paper_std"])
    verdict = "" if r["within_2std"] is None else (" ✓" if r["within_2std"] else " ✗")
    diff = "" if r["diff"] is None else f" ({r['diff']:+.2f}{verdict})"
    return f"{ours}<br>paper {paper}{diff}"


def paper_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Markdown in the paper's layout, one table per (table run, data set): rows arch × T, one column per variant.

    Each cell: ours, best-epoch and final-epoch top-1 (mean ± sample std over n seeds), then the
    paper's number (mean ± std), ours (best epoch) − paper and ✓ where that lies within 2 of the
    paper's std. Columns the paper lacks are marked
    "(ours)". The heading names the data set, the profile, the epochs and the hardware.
    """
    if not rows:
        return "_no results_"
    groups: dict[tuple, list] = {}
    for r in rows:
        groups.setdefault((r.get("run_dir", r["run"]), r["dataset"]), []).append(r)
    parts: list[str] = []
    notes: list[str] = []
    for rs in groups.values():
        r0 = rs[0]
        table = TABLES.get(r0["table"])
        status = "" if r0.get("status", "complete") == "complete" else f" · status **{r0['status']}**"
        label = f"{r0['dataset_label']} · profile `{r0['profile']}`"
        if r0["profile"] == "smoke":
            label += " (plumbing only, not comparable with the paper)"
        elif r0["profile"] != "paper":
            label += " (not the paper's protocol)"
        title = table.title if table else r0["table"]
        parts.append(
            f"**{title}** · {label} · {r0.get('epochs', '?')} epoch(s) · {r0['hardware']} · run `{r0['run']}`{status}\n"
        )
        neurons = sorted({r["neuron"] for r in rs}, key=_neuron_order)
        head = ["arch", "T"] + [
            NEURONS[n].label
            + (" (ours)" if any(r["ours"] for r in rs if r["neuron"] == n) and (table is None or table.paper) else "")
            for n in neurons
        ]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        keys = sorted({(r["arch"], r["width"], r["num_steps"]) for r in rs}, key=lambda k: (k[0], k[1] or 0, k[2]))
        for arch, width, t in keys:
            by = {r["neuron"]: r for r in rs if (r["arch"], r["width"], r["num_steps"]) == (arch, width, t)}
            name = arch + (f" (width {width})" if width is not None else "")
            lines.append("| " + " | ".join([name, str(t)] + [_cell(by.get(n)) for n in neurons]) + " |")
        parts.append("\n".join(lines) + "\n")
        for r in rs:
            if r["paper_source"] and r["paper_source"] not in notes:
                notes.append(r["paper_source"])
    footer = [
        'Ours: test top-1 %, mean ± sample std (ddof=1) over n seeds (n=1: spread unknown); "best": the '
        "best epoch's accuracy (the released scripts' best_acc, the convention compared with the paper), "
        '"final": the last epoch\'s.',
        "Paper: "
        + (
            ", ".join(notes) + "; its ± convention is not stated"
            if notes
            else "no cell of the paper matches these rows"
        )
        + ".",
    ]
    if notes:
        footer.append("In brackets: ours (best epoch) − paper; ✓ within 2 of the paper's std, ✗ outside.")
    parts.append("\n\n".join(footer))
    return "\n".join(parts)


def paper_markdown(table: str) -> str:
    """The paper's own table as markdown, in its layout: rows (data set, arch, T), one column per variant."""
    if table == "table5":
        lines = ["| method | #Flops | #Sops | #Sign | energy |", "|---|---|---|---|---|"]
        lines += [
            f"| {NEURONS[e['neuron']].label} spike | {e['flops'] / 1e6:.2f}M | {e['sops'] / 1e6:.2f}M | "
            f"{e['sign'] / 1e6:.2f}M | {e['energy_uj']:.2f} µJ |"
            for e in ENERGY
        ]
        return "\n".join(lines) + "\n\nSource: Guo et al. 2024, Table 5 (network and data set not named)."
    t = TABLES[table]
    if not t.paper:
        return f"_{t.title}: not a table of the paper, so there is no paper number to show._"
    head = ["data set", "arch", "T"] + [NEURONS[n].label for n in t.variants]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in t.rows:
        cells = [fmt_mean_std(*t.cells[(row.dataset, row.arch, row.num_steps, n)]) for n in t.variants]
        lines.append("| " + " | ".join([row.dataset, row.arch, str(row.num_steps)] + cells) + " |")
    return "\n".join(lines) + f'\n\nSource: {t.source} ("{t.title.split(": ", 1)[-1]}"). {t.note}'


def fmt_per_class(counts) -> str:
    """``"100 per class"`` or ``"25-26 per class"``: a sample's class counts (e.g. ``y.bincount()``)."""
    lo, hi = int(min(counts)), int(max(counts))
    return f"{lo} per class" if lo == hi else f"{lo}-{hi} per class"


def fmt_duration(seconds: float) -> str:
    """``"45 s"``, ``"12.5 min"``, ``"3.2 h"``, ``"4.1 days"``: a duration in the unit a person reads."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
