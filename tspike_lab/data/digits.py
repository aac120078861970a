"""The embedded digits: UCI handwritten digits, 1797 8x8 images, a fixed seed-0 split 1437 / 360."""

from __future__ import annotations

import gzip
import importlib.resources
import os

import numpy as np
import torch

from ..errors import ConfigError
from .sources import DataSource, mean_std

__all__ = ["load_digits"]


def load_digits(root: str | os.PathLike | None, download: bool) -> DataSource:
    """UCI handwritten digits, embedded in the package: no files, no download.

    Args:
        root: must be None (the digits ship with tspike_lab).
        download: unused.
    """
    if root is not None:
        raise ConfigError(
            f"data set 'digits' is embedded in tspike_lab and takes no data_dir/root, got {os.fspath(root)!r}; "
            f"leave it unset",
            field="data_dir",
            value=os.fspath(root),
            allowed="None for 'digits'",
        )
    # digits.csv.gz is copied unchanged from scikit-learn (BSD-3-Clause),
    # sklearn/datasets/data/digits.csv.gz: the test set of the UCI "Optical Recognition of
    # Handwritten Digits" data set (E. Alpaydin, C. Kaynak, 1998; UCI ML repository).
    # 65 comma-separated integers per row: 64 pixels in 0..16, then the label.
    ref = importlib.resources.files(__package__).joinpath("digits.csv.gz")
    with ref.open("rb") as raw, gzip.open(raw, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    pixels = (table[:, :64] * 255 // 16).astype(np.uint8).reshape(-1, 1, 8, 8)
    labels = table[:, 64]
    order = np.random.default_rng(0).permutation(len(labels))
    train_idx, test_idx = np.sort(order[:1437]), np.sort(order[1437:])
    x = torch.from_numpy(pixels)
    y = torch.from_numpy(labels)
    train_x = x[torch.from_numpy(train_idx)].contiguous()
    mean, std = mean_std(train_x)
    return DataSource(
        name="digits",
        num_classes=10,
        in_channels=1,
        image_size=(8, 8),
        classes=[str(d) for d in range(10)],
        mean=mean,
        std=std,
        train_x=train_x,
        train_y=y[torch.from_numpy(train_idx)].contiguous(),
        test_x=x[torch.from_numpy(test_idx)].contiguous(),
        test_y=y[torch.from_numpy(test_idx)].contiguous(),
    )
