"""A training run's folder: an exclusive lock, ``checkpoint.pt`` and ``metrics.jsonl``.

The checkpoint is written atomically after every epoch (temp file, fsync, rename), then the
epoch's metrics line is appended, so the metrics never run ahead of the checkpoint. A
checkpoint holds tensors and primitives only and loads with ``weights_only=True``. The RNG
states are stored so a resumed run continues the same random streams.
"""
from __future__ import annotations

import json
import logging
import math
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import RESUME_FREE, TrainConfig
from .errors import CheckpointError, RunFolderError
from .results import atomic_write, write_text_atomic

__all__ = ["CHECKPOINT", "METRICS", "RunDir", "load_checkpoint", "rng_state", "set_rng_state"]

logger = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"


def rng_state() -> dict[str, Any]:
    """RNG states as tensors and primitives (loadable with ``weights_only=True``)."""
    version, mt, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
        "python": {"version": version, "state": torch.tensor(mt, dtype=torch.int64), "gauss": gauss},
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state((npy["kind"], npy["keys"].numpy().astype(np.uint32), npy["pos"],
                         npy["has_gauss"], npy["cached"]))


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
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(_json_row(row), allow_nan=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """Read a run's ``checkpoint.pt`` (tensors and primitives only: ``weights_only=True``).

    ``path`` is the file or its run folder. Keys: model, optimizer, scheduler, epoch,
    history, rng, config.

    Raises:
        CheckpointError: the file is missing, empty, truncated or not a tspike_lab checkpoint.
    """
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        ckpt = torch.load(path, weights_only=True, map_location=map_location)
    except Exception as exc:  # torch raises RuntimeError, EOFError, OSError or UnpicklingError for a bad file
        raise CheckpointError(f"checkpoint {str(path)!r} cannot be read ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else 'no detail'}); it is empty, truncated "
                              f"or not a tspike_lab checkpoint: delete it to start the run afresh") from None
    missing = [k for k in ("epoch", "model", "optimizer", "history", "rng", "config") if not isinstance(ckpt, dict)
               or k not in ckpt]
    if missing:
        raise CheckpointError(f"checkpoint {str(path)!r} lacks {missing}: not a tspike_lab training checkpoint")
    return ckpt


def _config_diff(saved: dict[str, Any], config: TrainConfig) -> list[str]:
    now = config.to_dict()
    keys = (set(saved) | set(now)) - set(RESUME_FREE)
    return [f"{k}: checkpoint {saved.get(k, '<missing>')!r} != config {now.get(k, '<missing>')!r}"
            for k in sorted(keys) if saved.get(k, "<missing>") != now.get(k, "<missing>")]


class RunDir:
    """The run folder: an exclusive lock, the checkpoint and metrics.jsonl (written by rank 0)."""

    def __init__(self, path: Path | None, main: bool = True):
        self.path, self.main = path, main
        self._lock = None

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
            raise RunFolderError(f"out_dir {str(self.path)!r} is a file, not a folder; give a folder path "
                                 f"(it is created if missing)")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self._lock = open(self.path / ".lock", "a+")
        except OSError as exc:
            raise RunFolderError(f"out_dir {str(self.path)!r} cannot be used: {exc.strerror or exc}") from None
        try:
            import fcntl

            fcntl.flock(self._lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # no fcntl (Windows): no cross-process guard
            pass
        except BlockingIOError:
            self._lock.close()
            self._lock = None
            raise RunFolderError(f"another process is training in out_dir {self.path}; refusing to share it") from None
        except OSError as e:  # a file system without locks: carry on unguarded
            logger.warning("cannot lock %s (%s); not guarding against a concurrent run", self.path, e)
        # temp files of a process killed while saving (we hold the lock: nobody else writes here)
        for name in (CHECKPOINT, METRICS):
            for stale in self.path.glob(f".{name}.*.tmp"):
                stale.unlink(missing_ok=True)

    def close(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def existing(self, config: TrainConfig) -> dict[str, Any] | None:
        """The checkpoint to resume, after checking it belongs to this config; None for a fresh run."""
        if self.path is None:
            return None
        if not self.checkpoint.exists():
            if self.metrics.exists() and self.metrics.stat().st_size > 0:
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
            write_text_atomic(self.metrics, "".join(json.dumps(_json_row(row), allow_nan=False) + "\n"
                                                    for row in history))

    def save(self, state: dict[str, Any], row: dict[str, Any]) -> None:
        """Write the epoch's checkpoint, then its metrics line; a failed write (a full disk) leaves the last ones whole."""
        if self.path is None or not self.main:
            return
        try:
            _save_atomic(state, self.checkpoint)  # checkpoint first: metrics never run ahead of it
            _append_line(self.metrics, row)
        except (OSError, RuntimeError) as exc:  # torch.save reports a full disk as RuntimeError
            detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).splitlines()[0]
            raise RunFolderError(f"cannot write epoch {state.get('epoch')} to {str(self.path)!r}: {detail}; the "
                                 f"checkpoint of the epoch before is intact: free space and resume") from None
