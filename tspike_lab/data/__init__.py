"""Data sets and batch iterators: ``load`` a DataSource, then ``make_loader`` for (x, y) batches.

``DATASETS`` maps each name to a :class:`DatasetSpec` (display label, loader, training
augmentation, image size); ``describe``/``probe`` decide and check which source reads a
data folder. One module per source: ``digits``, ``cifar``, ``imagefolder``, ``dvs``,
``imagenet``; ``sources`` holds what they share (DataSource, cache folder, fingerprints).

Tensors are batch-first here (``[B, C, H, W]`` images, ``[B, T, C, H, W]`` DVS sequences);
the training code converts to the library's time-first layout.
"""

from ..errors import DataError, DataIntegrityError, DataUnavailableError
from .archive import safe_extract
from .augment import Augment
from .imagenet import ImageFolderDataset
from .loader import make_loader, time_first
from .registry import DATASETS, DataPlan, DatasetSpec, describe, load, probe
from .sources import DataSource, cache_dir, check_split_name

__all__ = [
    "DATASETS",
    "Augment",
    "DataError",
    "DataIntegrityError",
    "DataPlan",
    "DataSource",
    "DataUnavailableError",
    "DatasetSpec",
    "ImageFolderDataset",
    "cache_dir",
    "check_split_name",
    "describe",
    "load",
    "make_loader",
    "probe",
    "safe_extract",
    "time_first",
]
