"""Data sets and batch iterators: ``load`` a DataSource, then ``make_loader`` for (x, y) batches.

Tensors are batch-first here (``[B, C, H, W]`` images, ``[B, T, C, H, W]`` DVS sequences);
the training code converts to the library's time-first layout.
"""

from .archive import DataUnavailableError, safe_extract
from .augment import Augment
from .imagenet import ImageFolderDataset
from .loader import make_loader
from .sources import DATASETS, DataSource, cache_dir, load

__all__ = [
    "DATASETS",
    "Augment",
    "DataSource",
    "DataUnavailableError",
    "ImageFolderDataset",
    "cache_dir",
    "load",
    "make_loader",
    "safe_extract",
]
