"""A training run's folder: an exclusive lock, ``checkpoint.pt`` and ``metrics.jsonl``.

The checkpoint is written atomically after every epoch (temp file, fsync, rename), then the
epoch's metrics line is appended, so the metrics never run ahead of the checkpoint. A
checkpoint holds tensors and primitives only and loads with ``weights_only=True``. The RNG
states are stored so a resumed run continues the same random streams.

A checkpoint is checked field by field before anything of it is restored: its types and
ranges when it is read (:func:`load_checkpoint`), its tensors' shapes against the model and
optimizer that will take them (:func:`check_resumable`). Only regular files are read or
appended to: a FIFO or device named ``checkpoint.pt`` or ``metrics.jsonl`` is refused, never
waited on.
"""

from __future__ import annotations

import json
import math
import os
import random
import stat
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .config import RESUME_FREE, TrainConfig
from .errors import CheckpointError, ConfigError, RunFolderError
from .results import atomic_write, file_kind, lock_folder, open_regular, write_text_atomic

__all__ = [
    "CHECKPOINT",
    "METRICS",
    "CHECKPOINT_FORMAT",
    "RunDir",
    "load_checkpoint",
    "check_checkpoint",
    "check_resumable",
    "check_model_state",
    "rng_state",
    "set_rng_state",
]

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"
# The layout of a checkpoint's dict, written as its "format" and checked on reading (absent in the first checkpoints)
CHECKPOINT_FORMAT = 1


def rng_state() -> dict[str, Any]:
    """RNG states as tensors and primitives (loadable with ``weights_only=True``)."""
    version, mt, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
        "python": {"version": version, "state": torch.tensor(mt, dtype=torch.int64), "gauss": gauss},
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state(
        (npy["kind"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"], npy["cached"])
    )


def _save_atomic(obj: Any, path: Path) -> None:
    """torch.save through :func:`tspike_lab.results.atomic_write`: never a torn file."""
    atomic_write(path, lambda f: torch.save(obj, f))


def _json_row(row: dict[str, Any]) -> dict[str, Any]:
    """A metrics row strict JSON readers accept: a non-finite float becomes null, listed under "nonfinite"."""
    bad: list[str] = []

    def clean(x: Any, key: str) -> Any:
        if isinstance(x, float) and not math.isfinite(x):
            bad.append(key)
            return None
        if isinstance(x, dict):
            return {k: clean(v, f"{key}.{k}" if key else k) for k, v in x.items()}
        return x

    out = clean(row, "")
    if bad:
        out["nonfinite"] = bad
    return out


def _append_line(path: Path, row: dict[str, Any]) -> None:
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags, 0o666)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise OSError(f"{str(path)!r} is a {file_kind(mode)}, not a regular file")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "a", encoding="utf-8") as f:
        f.write(json.dumps(_json_row(row), allow_nan=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """Read a run's ``checkpoint.pt`` (tensors and primitives only: ``weights_only=True``), checked field by field.

    ``path`` is the file or its run folder. Keys: model, optimizer, scheduler, epoch,
    history, rng, config, and data_fingerprint (None or absent in checkpoints written before
    fingerprints). Every field's type and range is checked (:func:`check_checkpoint`) before
    the dict is returned.

    Raises:
        CheckpointError: the file is missing, not a regular file, empty, truncated, not a tspike_lab
            checkpoint, or holds a field of the wrong type or out of range (the message names it).
    """
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT
    try:
        f = open_regular(path, "rb")
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist") from None
    except OSError as exc:  # a FIFO or device (SpecialFileError), unreadable, a symlink loop
        raise CheckpointError(f"checkpoint {str(path)!r} cannot be opened: {exc.strerror or exc}") from None
    try:
        with f:
            ckpt = torch.load(f, weights_only=True, map_location=map_location)
    except Exception as exc:  # torch raises RuntimeError, EOFError, OSError or UnpicklingError for a bad file
        raise CheckpointError(
            f"checkpoint {str(path)!r} cannot be read ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else 'no detail'}); it is empty, truncated "
            f"or not a tspike_lab checkpoint: delete it to start the run afresh"
        ) from None
    check_checkpoint(ckpt, path)
    return ckpt


_REQUIRED = ("epoch", "model", "optimizer", "scheduler", "history", "rng", "config")
_PY_STATE_LEN = 625  # random.getstate()[1]: 624 words of MT19937 and the position
_NP_KEYS_LEN = 624


def _bad(path: Path, what: str) -> CheckpointError:
    return CheckpointError(
        f"checkpoint {str(path)!r} is damaged or not a tspike_lab training checkpoint: {what}; "
        f"delete it to start the run afresh, or choose a new out_dir"
    )


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _kind(v: Any) -> str:
    if isinstance(v, torch.Tensor):
        return f"a {v.dtype} tensor of shape {tuple(v.shape)}"
    text = repr(v)
    return f"{type(v).__name__} {text[:40] + '...' if len(text) > 40 else text}"


def _int_tensor(t: Any, n: int, lo: int, hi: int) -> bool:
    if not (isinstance(t, torch.Tensor) and t.dtype == torch.int64 and tuple(t.shape) == (n,)):
        return False
    return n == 0 or (int(t.min()) >= lo and int(t.max()) <= hi)


def _check_rng(rng: Any, path: Path) -> None:
    if not isinstance(rng, dict) or not {"torch", "cuda", "python", "numpy"} <= set(rng):
        raise _bad(path, f"rng must be a dict with torch, cuda, python and numpy states, got {_kind(rng)}")
    size = torch.get_rng_state().numel()
    t = rng["torch"]
    if not (isinstance(t, torch.Tensor) and t.dtype == torch.uint8 and tuple(t.shape) == (size,)):
        raise _bad(path, f"rng['torch'] must be a uint8 tensor of {size} bytes, got {_kind(t)}")
    cuda = rng["cuda"]
    if not isinstance(cuda, list) or not all(
        isinstance(c, torch.Tensor) and c.dtype == torch.uint8 and c.dim() == 1 for c in cuda
    ):
        raise _bad(path, f"rng['cuda'] must be a list of uint8 tensors, got {_kind(cuda)}")
    py = rng["python"]
    if not (
        isinstance(py, dict)
        and _is_int(py.get("version"))
        and py.get("version") == 3
        and _int_tensor(py.get("state"), _PY_STATE_LEN, 0, 2**32 - 1)
        and int(py["state"][-1]) <= _NP_KEYS_LEN
        and (py.get("gauss") is None or isinstance(py.get("gauss"), float))
    ):
        raise _bad(
            path,
            "rng['python'] must hold version 3, a state of 625 int64 words in [0, 2**32) and gauss None or a float",
        )
    npy = rng["numpy"]
    if not (
        isinstance(npy, dict)
        and npy.get("kind") == "MT19937"
        and _int_tensor(npy.get("keys"), _NP_KEYS_LEN, 0, 2**32 - 1)
        and _is_int(npy.get("pos"))
        and 0 <= npy["pos"] <= _NP_KEYS_LEN
        and npy.get("has_gauss") in (0, 1)
        and _is_int(npy.get("has_gauss"))
        and isinstance(npy.get("cached"), float)
    ):
        raise _bad(
            path,
            "rng['numpy'] must hold kind 'MT19937', 624 int64 keys in [0, 2**32), pos in [0, 624], "
            "has_gauss 0 or 1 and cached a float",
        )


def _check_history(history: Any, epoch: int, path: Path) -> None:
    if not isinstance(history, list):
        raise _bad(path, f"history must be a list of per-epoch dicts, got {_kind(history)}")
    if len(history) != epoch:
        raise _bad(path, f"history holds {len(history)} epochs but epoch is {epoch}")
    for i, row in enumerate(history):
        if not isinstance(row, dict) or not all(isinstance(k, str) for k in row):
            raise _bad(path, f"history[{i}] must be a dict of metrics, got {_kind(row)}")
        if row.get("epoch") != i + 1 or not _is_int(row.get("epoch")):
            raise _bad(path, f"history[{i}]['epoch'] must be {i + 1}, got {row.get('epoch')!r}")
        try:
            json.dumps(_json_row(row), allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise _bad(path, f"history[{i}] holds a value that is not a number, string, list or dict ({exc})") from None


def check_checkpoint(ckpt: Any, path: str | os.PathLike = CHECKPOINT) -> dict[str, Any]:
    """Check every field of a loaded checkpoint for its type and range; raise CheckpointError naming the first bad one.

    Checks: the seven keys exist; ``epoch`` an int >= 1; ``model`` a dict of tensors;
    ``optimizer`` a state dict (``state``, ``param_groups``); ``scheduler`` non-negative step
    counts; ``history`` a list of ``epoch`` metric dicts numbered 1..epoch; the RNG states of
    the sizes torch, Python and numpy use; ``config`` a valid TrainConfig; ``scaler`` absent or a
    GradScaler state; ``data_fingerprint`` None or a string. Shapes against a model: :func:`check_resumable`.

    Returns:
        ``ckpt`` unchanged.
    """
    path = Path(path)
    if not isinstance(ckpt, dict):
        raise _bad(path, f"it holds {_kind(ckpt)}, not a dict")
    missing = [k for k in _REQUIRED if k not in ckpt]
    if missing:
        raise CheckpointError(f"checkpoint {str(path)!r} lacks {missing}: not a tspike_lab training checkpoint")
    if "format" in ckpt and ckpt["format"] != CHECKPOINT_FORMAT:
        raise _bad(path, f"format must be {CHECKPOINT_FORMAT}, got {ckpt['format']!r}")
    epoch = ckpt["epoch"]
    if not _is_int(epoch) or epoch < 1:
        raise _bad(path, f"epoch must be an int >= 1, got {_kind(epoch)}")
    model = ckpt["model"]
    if (
        not isinstance(model, dict)
        or not model
        or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in model.items())
    ):
        raise _bad(path, f"model must be a non-empty dict of named tensors, got {_kind(model)}")
    opt = ckpt["optimizer"]
    groups = opt.get("param_groups") if isinstance(opt, dict) else None
    if not (
        isinstance(opt, dict)
        and isinstance(opt.get("state"), dict)
        and isinstance(groups, list)
        and all(
            isinstance(g, dict) and isinstance(g.get("params"), list) and all(_is_int(i) for i in g["params"])
            for g in groups
        )
        and all(
            _is_int(k) and isinstance(v, dict) and all(isinstance(t, torch.Tensor) for t in v.values())
            for k, v in opt["state"].items()
        )
    ):
        raise _bad(
            path,
            "optimizer must be an optimizer state dict (state: index -> tensors, param_groups: "
            "dicts listing parameter indices)",
        )
    sched = ckpt["scheduler"]
    fields = ("step", "steps_per_epoch", "total_steps", "warmup_steps")
    if not (isinstance(sched, dict) and all(_is_int(sched.get(k)) and sched[k] >= 0 for k in fields)):
        raise _bad(path, f"scheduler must hold {list(fields)} as ints >= 0, got {_kind(sched)}")
    _check_history(ckpt["history"], epoch, path)
    _check_rng(ckpt["rng"], path)
    config = ckpt["config"]
    if not isinstance(config, dict):
        raise _bad(path, f"config must be a dict of TrainConfig fields, got {_kind(config)}")
    try:
        saved = TrainConfig.from_dict(config)
    except (ConfigError, TypeError) as exc:
        raise _bad(path, f"its config is not a valid TrainConfig ({exc})") from None
    if epoch > saved.epochs:
        raise _bad(path, f"epoch {epoch} is beyond its config's epochs={saved.epochs}")
    scaler = ckpt.get("scaler")  # a GradScaler's state (float16 autocast on CUDA), absent otherwise
    if scaler is not None and not (
        isinstance(scaler, dict)
        and all(isinstance(k, str) for k in scaler)
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in scaler.values())
        and isinstance(scaler.get("scale"), (int, float))
        and scaler["scale"] > 0
    ):
        raise _bad(
            path, f"scaler must be a GradScaler state dict of finite numbers with a scale > 0, got {_kind(scaler)}"
        )
    fp = ckpt.get("data_fingerprint")
    if fp is not None and not (isinstance(fp, str) and 0 < len(fp) <= 128):
        raise _bad(path, f"data_fingerprint must be None or a short string, got {_kind(fp)}")
    return ckpt


def check_model_state(state: dict[str, torch.Tensor], model: nn.Module, path: str | os.PathLike) -> None:
    """Raise CheckpointError unless ``state`` has exactly ``model``'s tensors, names, shapes and dtypes, all finite."""
    path = Path(path)
    want = model.state_dict()
    missing, extra = sorted(set(want) - set(state)), sorted(set(state) - set(want))
    if missing or extra:
        raise CheckpointError(
            f"checkpoint {str(path)!r} does not hold this run's model: "
            + "; ".join(
                x
                for x in (f"missing {missing[:3]}" if missing else "", f"unexpected {extra[:3]}" if extra else "")
                if x
            )
            + "; delete it or choose a new out_dir"
        )
    for name, ref in want.items():
        t = state[name]
        if tuple(t.shape) != tuple(ref.shape) or t.dtype != ref.dtype:
            raise CheckpointError(
                f"checkpoint {str(path)!r} does not hold this run's model: model[{name!r}] is "
                f"{t.dtype} {tuple(t.shape)}, the model's is {ref.dtype} {tuple(ref.shape)}; "
                f"delete it or choose a new out_dir"
            )
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise CheckpointError(
                f"checkpoint {str(path)!r} holds non-finite values in model[{name!r}]; delete it "
                f"or choose a new out_dir"
            )


def check_resumable(
    ckpt: dict[str, Any],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    schedule: dict[str, int],
    path: str | os.PathLike,
) -> None:
    """Check a loaded checkpoint against the run that will take it, before anything is restored.

    The model's tensors (names, shapes, dtypes, finite), the optimizer's parameter groups and
    per-parameter state shapes, and the schedule (``schedule``: this run's ``steps_per_epoch``,
    ``total_steps``, ``warmup_steps``; the saved step must be ``epoch * steps_per_epoch``).

    Raises:
        CheckpointError naming the first field that does not fit.
    """
    path = Path(path)
    check_model_state(ckpt["model"], model, path)
    saved = ckpt["optimizer"]
    ours = optimizer.state_dict()
    sizes = [len(g["params"]) for g in ours["param_groups"]]
    saved_sizes = [len(g["params"]) for g in saved["param_groups"]]
    if sizes != saved_sizes:
        raise CheckpointError(
            f"checkpoint {str(path)!r} holds an optimizer for parameter groups of sizes "
            f"{saved_sizes}, this run's are {sizes}; delete it or choose a new out_dir"
        )
    params = [p for g in optimizer.param_groups for p in g["params"]]
    index = [i for g in saved["param_groups"] for i in g["params"]]
    if sorted(index) != list(range(len(params))):
        raise CheckpointError(
            f"checkpoint {str(path)!r} numbers its optimizer's parameters {sorted(index)[:5]}..., "
            f"expected 0..{len(params) - 1}; delete it or choose a new out_dir"
        )
    position = {i: k for k, i in enumerate(index)}
    for i, state in saved["state"].items():
        if i not in position:
            raise CheckpointError(
                f"checkpoint {str(path)!r} holds optimizer state for parameter {i}, which does not "
                f"exist; delete it or choose a new out_dir"
            )
        p = params[position[i]]
        for key, t in state.items():
            if t.dim() and (tuple(t.shape) != tuple(p.shape) or not t.is_floating_point()):
                raise CheckpointError(
                    f"checkpoint {str(path)!r} holds optimizer state {key!r} of parameter {i} as "
                    f"{t.dtype} {tuple(t.shape)}, the parameter is {tuple(p.shape)}; delete it "
                    f"or choose a new out_dir"
                )
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                raise CheckpointError(
                    f"checkpoint {str(path)!r} holds non-finite optimizer state {key!r} of "
                    f"parameter {i}; delete it or choose a new out_dir"
                )
    sched, epoch = ckpt["scheduler"], ckpt["epoch"]
    want = {k: schedule[k] for k in ("steps_per_epoch", "total_steps", "warmup_steps")}
    want["step"] = epoch * schedule["steps_per_epoch"]
    differ = [f"{k} {sched.get(k)!r} (this run: {v})" for k, v in want.items() if sched.get(k) != v]
    if differ:
        raise CheckpointError(
            f"checkpoint {str(path)!r} holds a schedule this run does not follow after epoch "
            f"{epoch}: {', '.join(differ)}; delete it or choose a new out_dir"
        )


def _config_diff(saved: dict[str, Any], config: TrainConfig) -> list[str]:
    now = config.to_dict()
    keys = (set(saved) | set(now)) - set(RESUME_FREE)
    return [
        f"{k}: checkpoint {saved.get(k, '<missing>')!r} != config {now.get(k, '<missing>')!r}"
        for k in sorted(keys)
        if saved.get(k, "<missing>") != now.get(k, "<missing>")
    ]


class RunDir:
    """The run folder: an exclusive lock, the checkpoint and metrics.jsonl (written by rank 0)."""

    def __init__(self, path: Path | None, main: bool = True):
        self.path, self.main = path, main
        self._lock = None
        self._created = False  # this RunDir made the folder (removed again if the run leaves nothing in it)

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT

    @property
    def metrics(self) -> Path:
        return self.path / METRICS

    def open(self) -> None:
        if self.path is None or not self.main:
            return
        if self.path.exists() and not self.path.is_dir():
            raise RunFolderError(
                f"out_dir {str(self.path)!r} is a file, not a folder; give a folder path (it is created if missing)"
            )
        for name in (CHECKPOINT, METRICS, ".lock"):
            try:
                mode = os.lstat(self.path / name).st_mode
            except OSError:
                continue
            if not stat.S_ISREG(mode):
                raise RunFolderError(
                    f"{str(self.path / name)!r} is a {file_kind(mode)}, not a regular file; a run "
                    f"folder holds only files it wrote: remove it or choose a new out_dir"
                )
        try:
            self._created = not self.path.exists()
            self.path.mkdir(parents=True, exist_ok=True)
            self._lock = lock_folder(self.path)
        except BlockingIOError:
            raise RunFolderError(f"another process is training in out_dir {self.path}; refusing to share it") from None
        except OSError as exc:
            raise RunFolderError(f"out_dir {str(self.path)!r} cannot be used: {exc.strerror or exc}") from None
        # temp files of a process killed while saving (we hold the lock: nobody else writes here)
        for name in (CHECKPOINT, METRICS):
            for stale in self.path.glob(f".{name}.*.tmp"):
                stale.unlink(missing_ok=True)

    def close(self, failed: bool = False) -> None:
        """Release the lock; after a failed run that wrote nothing, also remove ``.lock`` and a folder made here.

        A folder holding only our ``.lock`` after a failure (bad data, a run that cannot fit) is
        no run: it is left as it was found (removed if this RunDir created it).
        """
        if self._lock is None:
            return
        try:
            if failed and self.path is not None and self._empty():
                (self.path / ".lock").unlink(missing_ok=True)
                if self._created:
                    try:
                        self.path.rmdir()  # only if empty
                    except OSError:
                        pass
        finally:
            self._lock.close()
            self._lock = None

    def _empty(self) -> bool:
        """True when the folder holds nothing but ``.lock`` (and an empty metrics file)."""
        try:
            names = {p.name for p in self.path.iterdir()}
        except OSError:
            return False
        if names - {".lock", METRICS}:
            return False
        return METRICS not in names or os.lstat(self.metrics).st_size == 0

    def existing(self, config: TrainConfig) -> dict[str, Any] | None:
        """The checkpoint to resume, after checking it belongs to this config; None for a fresh run."""
        if self.path is None:
            return None
        if not os.path.lexists(self.checkpoint):
            if os.path.lexists(self.metrics) and os.lstat(self.metrics).st_size > 0:
                raise RunFolderError(
                    f"out_dir {self.path} holds {METRICS} but no {CHECKPOINT}: it is another run's folder; "
                    f"choose a new out_dir (tspike_lab.results.new_run_dir)"
                )
            return None
        ckpt = load_checkpoint(self.checkpoint, map_location="cpu")
        if not config.resume:
            raise RunFolderError(
                f"out_dir {self.path} already holds a checkpoint (epoch {ckpt['epoch']}) and resume=False; "
                f"pass resume=True to continue it or choose a new out_dir (tspike_lab.results.new_run_dir)"
            )
        diff = _config_diff(ckpt["config"], config)
        if diff:
            raise RunFolderError(
                f"out_dir {self.path} holds a checkpoint of a different config; refusing to overwrite it. "
                f"Differing fields: {'; '.join(diff)}"
            )
        return ckpt

    def rewrite_metrics(self, history: list[dict[str, Any]]) -> None:
        """metrics.jsonl = the checkpoint's history (drops a line of an epoch never checkpointed)."""
        if self.path is not None and self.main:
            write_text_atomic(
                self.metrics, "".join(json.dumps(_json_row(row), allow_nan=False) + "\n" for row in history)
            )

    def save(self, state: dict[str, Any], row: dict[str, Any]) -> None:
        """Write the checkpoint, then its metrics line; a failed write (full disk) keeps the last ones whole."""
        if self.path is None or not self.main:
            return
        epoch = state.get("epoch")
        saved = None  # the epoch the checkpoint on disk holds after a failure
        try:
            _save_atomic(state, self.checkpoint)  # checkpoint first: metrics never run ahead of it
            saved = epoch
            _append_line(self.metrics, row)
        except (OSError, RuntimeError) as exc:  # torch.save reports a full disk as RuntimeError
            detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).splitlines()[0]
            if saved is None and isinstance(state.get("history"), list) and len(state["history"]) > 1:
                saved = epoch - 1  # an atomic write failed: the file is the one before (written or resumed)
            if saved is None or not os.path.lexists(self.checkpoint):
                kept = "no checkpoint was written yet: free space and start the run again"
            else:
                kept = f"the checkpoint of epoch {saved} is intact: free space and resume"
            raise RunFolderError(f"cannot write epoch {epoch} to {str(self.path)!r}: {detail}; {kept}") from None
