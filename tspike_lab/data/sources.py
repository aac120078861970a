"""What every data source shares: :class:`DataSource`, the data folder, fingerprints, the optional caches.

One module per source reads its data (``digits``, ``cifar``, ``imagefolder``, ``dvs``,
``imagenet``); :mod:`tspike_lab.data.registry` names them and dispatches ``load``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from ..errors import ConfigError
from ..results import atomic_write, file_kind, open_regular
from .archive import download

__all__ = ["DataSource", "cache_dir", "check_split_name", "tensor_fingerprint", "read_cache", "write_cache"]

logger = logging.getLogger(__name__)

# The one network fetch of every source, looked up here at call time so that tests replace it in one place.
_download = download

FINGERPRINT_CHARS = 16  # 64 bits of sha256: tells data sets apart, short enough to print


def _digest(parts: Iterable[Any]) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
    return h.hexdigest()[:FINGERPRINT_CHARS]


def tensor_fingerprint(classes: Iterable[str], *tensors: torch.Tensor) -> str:
    """Short stable hash of class names and tensors (dtype, shape and bytes), for resident sources.

    Returns:
        ``FINGERPRINT_CHARS`` hex digits of sha256.
    """

    def parts():
        yield json.dumps(list(classes))
        for t in tensors:
            t = t.detach().cpu().contiguous()
            yield f"|{t.dtype}|{tuple(t.shape)}|"
            if t.numel():
                yield t.reshape(-1).view(torch.uint8).numpy()  # hashed in place, no copy

    return _digest(parts())


def checksum_fingerprint(kind: str, checksums: dict[str, str]) -> str:
    """Short stable hash of a source's files, from their checksums (``{file name: hex digest}``)."""
    return _digest([kind, *(f"|{name}={checksums[name]}" for name in sorted(checksums))])


def check_split_name(split: str) -> None:
    """Raise ConfigError unless ``split`` is "train" or "test"."""
    if split not in ("train", "test"):
        raise ConfigError(
            f"split must be 'train' or 'test', got {split!r}", field="split", value=split, allowed="'train' or 'test'"
        )


@dataclass(eq=False)
class DataSource:
    """A loaded data set: tensors kept in memory (resident) or torch Datasets (loader-based).

    Args:
        name: data set name, one of ``DATASETS``.
        num_classes: number of classes.
        in_channels: image channels C.
        image_size: (H, W) of a sample.
        classes: class names, index = label.
        mean: per-channel mean in [0, 1] pixel units (used to normalize resident images).
        std: per-channel standard deviation in [0, 1] pixel units.
        train_x, train_y, test_x, test_y: resident tensors or None.
        train_set, test_set: torch Datasets for loader-based sources, else None.
        is_sequence: True when each sample is a T-step sequence (DVS).
        num_steps: T for sequences, else None.
        fingerprint: short stable hash identifying the data (equal data, equal fingerprint).
            None: computed from the tensors (resident), or from the Datasets' own ``fingerprint``
            attributes (loader-based; stays None when they have none).

    Shape:
        images: x uint8 ``[N, C, H, W]``; sequences: x float32 ``[N, T, C, H, W]``; y int64 ``[N]``.
    """

    name: str
    num_classes: int
    in_channels: int
    image_size: tuple[int, int]
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    train_x: torch.Tensor | None = field(default=None, repr=False)
    train_y: torch.Tensor | None = field(default=None, repr=False)
    test_x: torch.Tensor | None = field(default=None, repr=False)
    test_y: torch.Tensor | None = field(default=None, repr=False)
    train_set: Dataset | None = field(default=None, repr=False)
    test_set: Dataset | None = field(default=None, repr=False)
    is_sequence: bool = False
    num_steps: int | None = None
    fingerprint: str | None = None
    _device_copies: dict = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self.image_size = tuple(int(s) for s in self.image_size)
        self.mean = tuple(float(m) for m in self.mean)
        self.std = tuple(float(s) for s in self.std)
        self.classes = list(self.classes)
        if len(self.classes) != self.num_classes:
            raise ValueError(f"classes has {len(self.classes)} names but num_classes is {self.num_classes}")
        if len(self.mean) != self.in_channels or len(self.std) != self.in_channels:
            raise ValueError(f"mean {self.mean} and std {self.std} must have in_channels={self.in_channels} entries")
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std must be positive, got {self.std}")
        tensors = (self.train_x, self.train_y, self.test_x, self.test_y)
        if any(t is not None for t in tensors):
            if any(t is None for t in tensors):
                raise ValueError("train_x, train_y, test_x and test_y must be given together")
            for split in ("train", "test"):
                self._check_split(split)
        elif self.train_set is None or self.test_set is None:
            raise ValueError(f"data source {self.name!r} needs either the four tensors or train_set and test_set")
        if self.is_sequence and (self.num_steps is None or self.num_steps < 1):
            raise ValueError(f"num_steps must be a positive int for a sequence source, got {self.num_steps}")
        if self.fingerprint is None:
            if self.resident:
                self.fingerprint = tensor_fingerprint(self.classes, *tensors)
            else:
                prints = [getattr(s, "fingerprint", None) for s in (self.train_set, self.test_set)]
                if all(isinstance(p, str) for p in prints):
                    self.fingerprint = _digest(["datasets", *(f"|{p}" for p in prints)])

    def _check_split(self, split: str) -> None:
        x, y = getattr(self, f"{split}_x"), getattr(self, f"{split}_y")
        if y.dtype != torch.int64 or y.dim() != 1 or y.shape[0] != x.shape[0]:
            raise ValueError(f"{split}_y must be int64 [N] matching {split}_x, got {y.dtype} {tuple(y.shape)}")
        if self.is_sequence:
            want = (self.num_steps, self.in_channels, *self.image_size)
            if x.dim() != 5 or tuple(x.shape[1:]) != want or not x.is_floating_point():
                raise ValueError(f"{split}_x must be float [N, *{want}], got {x.dtype} {tuple(x.shape)}")
        else:
            want = (self.in_channels, *self.image_size)
            if x.dim() != 4 or tuple(x.shape[1:]) != want or x.dtype != torch.uint8:
                raise ValueError(f"{split}_x must be uint8 [N, *{want}], got {x.dtype} {tuple(x.shape)}")
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
            raise ValueError(
                f"{split}_y labels must lie in [0, {self.num_classes}), got {int(y.min())}..{int(y.max())}"
            )

    @property
    def resident(self) -> bool:
        """True when the data are held as tensors (no Dataset/DataLoader needed)."""
        return self.train_x is not None

    def tensors(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(x, y)`` of a split of a resident source on the CPU."""
        check_split_name(split)
        if not self.resident:
            raise ValueError(f"data source {self.name!r} is not resident; use train_set/test_set")
        return getattr(self, f"{split}_x"), getattr(self, f"{split}_y")

    def on_device(self, split: str, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(x, y)`` of a split on ``device``, copying it there once and caching the copy."""
        x, y = self.tensors(split)
        dev = torch.device(device)
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        key = (split, str(dev))
        if key not in self._device_copies:
            if x.device == dev:
                self._device_copies[key] = (x, y)
            else:
                self._device_copies[key] = (x.to(dev), y.to(dev))
        return self._device_copies[key]

    def __repr__(self) -> str:
        if self.resident:
            sizes = f"train={self.train_x.shape[0]}, test={self.test_x.shape[0]}"
        else:
            sizes = f"train={len(self.train_set)}, test={len(self.test_set)}"
        seq = f", sequence T={self.num_steps}" if self.is_sequence else ""
        return (
            f"DataSource({self.name!r}, {sizes}, classes={self.num_classes}, "
            f"shape=({self.in_channels}, {self.image_size[0]}, {self.image_size[1]}){seq})"
        )


def cache_dir(root: str | os.PathLike | None = None) -> Path:
    """Return the data folder: ``root`` if given, else ``$TSPIKE_DATA``, else ``~/.cache/tspike_lab``.

    Raises:
        ConfigError: ``$TSPIKE_DATA`` names something that exists but is not a folder.
    """
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get("TSPIKE_DATA")
    if env:
        path = Path(env).expanduser()
        try:
            mode = path.stat().st_mode
        except OSError:
            return path  # missing: created when first written
        if not stat.S_ISDIR(mode):
            raise ConfigError(
                f"environment variable TSPIKE_DATA is {env!r}, a {file_kind(mode)}, not a folder; point "
                f"it at the data folder (created if missing) or unset it",
                field="TSPIKE_DATA",
                value=env,
                allowed="a folder",
            )
        return path
    return Path.home() / ".cache" / "tspike_lab"


def mean_std(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 ``[N, C, H, W]`` images in [0, 1] units (exact, via histograms)."""
    levels = torch.arange(256, dtype=torch.float64) / 255.0
    means, stds = [], []
    for c in range(x.shape[1]):
        counts = torch.bincount(x[:, c].reshape(-1), minlength=256).to(torch.float64)
        n = counts.sum()
        mean = (counts * levels).sum() / n
        var = (counts * (levels - mean).square()).sum() / n
        means.append(float(mean))
        stds.append(max(float(var.sqrt()), 1e-6))
    return tuple(means), tuple(stds)


def read_cache(path: Path, keys: Iterable[str] = ()) -> dict | None:
    """The dict a decoded-data cache file holds, or None when there is none or it cannot be read.

    Caches are optional: an unreadable one (truncated, another format, missing one of ``keys``)
    is logged and ignored, so the caller decodes again. ``weights_only`` loading runs no code
    from the file.
    """
    if not path.is_file():
        return None
    try:
        with open_regular(path, "rb") as f:  # a FIFO put in its place is refused, not waited on
            data = torch.load(f, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as exc:
        logger.warning("ignoring unreadable cache %s (%s); decoding again", path, exc)
        return None
    if not isinstance(data, dict):
        logger.warning("ignoring cache %s: it holds a %s, not a dict; decoding again", path, type(data).__name__)
        return None
    missing = [k for k in keys if k not in data]
    if missing:
        logger.warning("ignoring cache %s: it lacks %s; decoding again", path, missing)
        return None
    return data


def write_cache(obj: dict[str, Any], path: Path) -> bool:
    """Write a decoded-data cache atomically; on failure (disk full, read-only) log a warning and go on.

    Returns:
        True when the cache was written.
    """
    try:
        atomic_write(path, lambda f: torch.save(obj, f))
    except (OSError, RuntimeError) as exc:  # torch.save reports a failed write as RuntimeError
        logger.warning("could not write the optional cache %s (%s); carrying on without it", path, exc)
        return False
    return True
