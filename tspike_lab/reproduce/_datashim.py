"""PROVISIONAL: the data-set description the reproduction needs, until tspike_lab.data provides it.

describe(dataset, data_dir) -> DataPlan (no pixels read); probe(plan, num_steps) loads once;
input_shape / split_sizes give what an estimate needs. To move into tspike_lab.data.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from .plan import PLUMBING_DATASET

_DATASET_LABELS = MappingProxyType({
    "cifar10": "CIFAR-10",
    "cifar100": "CIFAR-100",
    "imagenet": "ImageNet (ILSVRC-2012)",
    "cifar10-dvs": "CIFAR10-DVS",
    "digits": "digits (embedded UCI 8x8, plumbing stand-in)",
})
_SHAPES = {"digits": (1, 8, 8), "cifar10": (3, 32, 32), "cifar100": (3, 32, 32), "imagenet": (3, 224, 224),
           "cifar10-dvs": (2, 48, 48)}
_SIZES = {"digits": (1437, 360), "cifar10": (50000, 10000), "cifar100": (50000, 10000),
          "imagenet": (1281167, 50000), "cifar10-dvs": (9000, 1000)}


def input_shape(dataset: str, num_steps: int) -> tuple:
    shape = _SHAPES[dataset]
    return (num_steps, *shape) if dataset == "cifar10-dvs" else shape


def split_sizes(dataset: str) -> tuple[int, int]:
    return _SIZES[dataset]


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
    from ..data.archive import iter_files

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
    from ..data.archive import archive_kind

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


def describe(dataset: str, data_dir: str | None) -> DataPlan:
    """Decide the data source for ``dataset``: an image-folder copy of CIFAR is read as ``imagefolder``.

    ``data_dir`` holding ``cifar-10-batches-py`` / ``cifar-10-python.tar.gz`` (or the CIFAR-100
    ones) is read by the CIFAR source; one holding ``train/<class>/`` and ``test/<class>/``
    images (a folder or an archive such as a JPEG copy) by the image-folder source, with the
    CIFAR augmentation recipe. Touches no pixels (lists at most a few archive members).
    """
    label = _DATASET_LABELS.get(dataset, dataset)
    if dataset == PLUMBING_DATASET:
        return DataPlan(dataset, dataset, None, label, "digits", MappingProxyType({}))
    if dataset in _CIFAR_LAYOUT:
        if data_dir is not None and _cifar_layout(dataset, Path(data_dir).expanduser()) == "imagefolder":
            names = _first_files(Path(data_dir).expanduser(), 8)
            jpeg = any(n.lower().endswith((".jpg", ".jpeg")) for n in names)
            copy = "JPEG copy" if jpeg else "image-folder copy"
            return DataPlan(dataset, "imagefolder", data_dir, f"{label} ({copy})",
                            "cifar",
                            _CIFAR_AUGMENT)
        return DataPlan(dataset, dataset, data_dir, label, "cifar", MappingProxyType({}))
    if dataset == "imagenet":
        return DataPlan(dataset, dataset, data_dir, label, "imagenet", MappingProxyType({}))
    if dataset == "cifar10-dvs":
        return DataPlan(dataset, dataset, data_dir, label, "cifar10-dvs", MappingProxyType({}))
    raise ValueError(f"dataset must be one of {sorted(_DATASET_LABELS)}, got {dataset!r}")


def probe(plan: DataPlan, num_steps: int) -> None:
    """Load the data once before any folder is made: a missing data set fails here, naming the URL or folder."""
    from .. import data

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



