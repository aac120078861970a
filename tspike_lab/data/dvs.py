"""CIFAR10-DVS through tonic: event recordings binned into T frames, resized, cached as float16."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError, DataUnavailableError, MissingPackageError
from .sources import DataSource, cache_dir, read_cache, tensor_fingerprint, write_cache

__all__ = ["CIFAR10_CLASSES", "dvs_split", "load_cifar10_dvs"]

logger = logging.getLogger(__name__)

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def dvs_split(labels: torch.Tensor, train_fraction: float = 0.9, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class seeded split: shuffle each class's indices (seed) and put the first 90% in train.

    Args:
        labels: int64 ``[N]``.
        train_fraction: share of each class that goes to train.
        seed: shuffle seed.

    Returns:
        Sorted train indices and sorted test indices.
    """
    g = torch.Generator().manual_seed(seed)
    train, test = [], []
    for c in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(idx.numel(), generator=g)]
        cut = int(round(train_fraction * idx.numel()))
        train.append(idx[:cut])
        test.append(idx[cut:])
    return torch.cat(train).sort().values, torch.cat(test).sort().values


def load_cifar10_dvs(root: str | os.PathLike | None, download: bool, num_steps: int = 10, size: int = 48) -> DataSource:
    """CIFAR10-DVS through tonic: ``num_steps`` event frames per sample, resized to ``size``x``size``.

    Args:
        root: folder for tonic's download and the frame cache (default ``<cache folder>/cifar10-dvs``).
        download: let tonic download the recordings when missing.
        num_steps: T, the number of time bins (tonic ``ToFrame(n_time_bins=T)``).
        size: output side after bilinear resizing (48 as in the literature).
    """
    if not isinstance(num_steps, int) or isinstance(num_steps, bool) or num_steps < 1:
        raise ConfigError.bad("", "num_steps", num_steps, "a positive int")
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ConfigError.bad("", "size", size, "a positive int")
    base = cache_dir(root) if root is not None else cache_dir() / "cifar10-dvs"
    if base.exists() and not base.is_dir():
        raise ConfigError(
            f"root {str(base)!r} is a file; cifar10-dvs needs a folder (tonic's download and the "
            f"frame cache); give its folder",
            field="root",
            value=str(base),
            allowed="a folder",
        )
    cache_file = base / f"frames-T{num_steps}-{size}px.pt"
    data = read_cache(cache_file, ("frames", "labels"))
    if data is None:
        try:
            import tonic
        except ImportError:
            raise MissingPackageError(
                f"dataset 'cifar10-dvs' needs the optional package tonic, which is not "
                f"installed (and there is no frame cache {str(cache_file)!r}): "
                f"pip install tspike_lab[dvs]"
            ) from None
        frames, labels = _build_dvs_frames(tonic, base, download, num_steps, size)
        data = {"frames": frames, "labels": labels, "fingerprint": tensor_fingerprint(CIFAR10_CLASSES, frames, labels)}
        if write_cache(data, cache_file):
            logger.info("cached CIFAR10-DVS frames in %s", cache_file)
    frames, labels = data["frames"], data["labels"]
    fingerprint = data.get("fingerprint") or tensor_fingerprint(CIFAR10_CLASSES, frames, labels)
    train_idx, test_idx = dvs_split(labels)
    return DataSource(
        name="cifar10-dvs",
        num_classes=10,
        in_channels=2,
        image_size=(size, size),
        classes=list(CIFAR10_CLASSES),
        mean=(0.0, 0.0),
        std=(1.0, 1.0),
        train_x=frames[train_idx].float(),  # frames are stored as float16 (counts after resizing)
        train_y=labels[train_idx],
        test_x=frames[test_idx].float(),
        test_y=labels[test_idx],
        is_sequence=True,
        num_steps=num_steps,
        fingerprint=fingerprint,
    )


def _build_dvs_frames(
    tonic: Any, base: Path, download: bool, num_steps: int, size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Turn every CIFAR10-DVS recording into ``[T, 2, size, size]`` float16 frames, ordered by file path."""
    folder = base / "CIFAR10DVS"
    if not download and not any(folder.rglob("*.aedat4")):
        raise DataUnavailableError(
            f"CIFAR10-DVS recordings are not in {folder} and download=False; run once with download=True "
            f"(tonic fetches them) or put tonic's extracted CIFAR10DVS/<class>/*.aedat4 there"
        )
    sensor_size = tonic.datasets.CIFAR10DVS.sensor_size
    to_frame = tonic.transforms.ToFrame(sensor_size=sensor_size, n_time_bins=num_steps)
    try:
        ds = tonic.datasets.CIFAR10DVS(save_to=str(base), transform=to_frame)
    except OSError as exc:
        raise DataUnavailableError(
            f"CIFAR10-DVS could not be downloaded by tonic into {base} ({type(exc).__name__}: {exc}); "
            f"fetch {getattr(tonic.datasets.CIFAR10DVS, 'url', 'the CIFAR10DVS.zip archive')} by hand and put it there"
        ) from None
    n = len(ds)
    order = sorted(range(n), key=lambda i: str(ds.data[i])) if hasattr(ds, "data") else list(range(n))
    frames = torch.empty((n, num_steps, 2, size, size), dtype=torch.float16)
    labels = torch.empty(n, dtype=torch.int64)
    for k, i in enumerate(order):
        events_frames, target = ds[i]
        f = torch.from_numpy(np.asarray(events_frames, dtype=np.float32))  # [T, 2, 128, 128]
        frames[k] = F.interpolate(f, size=(size, size), mode="bilinear", align_corners=True)
        labels[k] = int(target)
        if (k + 1) % 1000 == 0:
            logger.info("CIFAR10-DVS: framed %d / %d recordings", k + 1, n)
    return frames, labels
