"""The data sets by name: ``DATASETS`` (name -> :class:`DatasetSpec`), ``load``, and ``describe``/``probe``.

``describe(dataset, data_dir)`` decides, from names alone, which source reads a data folder
(a JPEG copy of CIFAR-10 is read by ``imagefolder`` and labelled "CIFAR-10 (JPEG copy)");
``probe(plan)`` loads it once so a missing or wrong data set fails before any run starts.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ..errors import ConfigError, DataIntegrityError
from . import cifar
from .archive import archive_kind, first_names
from .cifar import load_cifar10, load_cifar100
from .digits import load_digits
from .dvs import load_cifar10_dvs
from .imagefolder import load_imagefolder
from .imagenet import load_imagenet
from .sources import DataSource

__all__ = ["DATASETS", "DatasetSpec", "DataPlan", "load", "describe", "probe"]


@dataclass(frozen=True)
class DatasetSpec:
    """One data set: its loader, display name, training augmentation and what it yields.

    Attributes:
        name: the registry key (``TrainConfig.dataset``).
        label: display name for tables and plots, e.g. "ImageNet (ILSVRC-2012)".
        load: the loader, ``load(root, download, **options) -> DataSource`` (prefer
            :func:`tspike_lab.data.load`, which checks the options).
        augment: training augmentation as TrainConfig fields (crop_padding, flip, autoaugment,
            cutout, roll), used where the config leaves a field None; None: the source's
            Dataset transforms its samples itself (ImageNet).
        image_size: (H, W) of a sample with the default options; None: known only after loading.
        in_channels: channels C of a sample; None: known only after loading.
        num_classes: None: known only after loading.
        split_sizes: (train, test) sample counts of the canonical data; None: known only after loading.
        data_dir: "none" (embedded), "optional" (downloadable to the default folder) or "required".
        is_sequence: samples are T-step sequences (event frames).
    """

    name: str
    label: str
    load: Callable[..., DataSource]
    augment: Mapping[str, Any] | None
    image_size: tuple[int, int] | None
    in_channels: int | None
    num_classes: int | None
    split_sizes: tuple[int, int] | None
    data_dir: str
    is_sequence: bool = False

    @property
    def options(self) -> tuple[str, ...]:
        """The keyword options ``load`` takes besides root and download."""
        return tuple(p for p in inspect.signature(self.load).parameters if p not in ("root", "download"))


def _augment(crop_padding: int, flip: bool, autoaugment: bool, cutout: int, roll: int) -> Mapping[str, Any]:
    return MappingProxyType(
        dict(crop_padding=crop_padding, flip=flip, autoaugment=autoaugment, cutout=cutout, roll=roll)
    )


# CIFAR follows the authors' CIFAR recipe (crop 4 + flip + AutoAugment + Cutout 16; an assumption,
# no CIFAR script was released); CIFAR10-DVS the released loader (flip + roll up to 5 px); 8x8
# digits are not mirror-symmetric (no flip) and too small to crop (a 1-pixel crop costs ~5 points
# of test accuracy after 10 epochs). ImageNet's Dataset does its own transforms.
_CIFAR_AUGMENT = _augment(crop_padding=4, flip=True, autoaugment=True, cutout=16, roll=0)

DATASETS: Mapping[str, DatasetSpec] = MappingProxyType(
    {
        spec.name: spec
        for spec in (
            DatasetSpec(
                "digits",
                "digits (embedded UCI 8x8)",
                load_digits,
                _augment(crop_padding=0, flip=False, autoaugment=False, cutout=0, roll=0),
                image_size=(8, 8),
                in_channels=1,
                num_classes=10,
                split_sizes=(1437, 360),
                data_dir="none",
            ),
            DatasetSpec(
                "cifar10",
                cifar.CIFAR["cifar10"].label,
                load_cifar10,
                _CIFAR_AUGMENT,
                image_size=(32, 32),
                in_channels=3,
                num_classes=10,
                split_sizes=(50000, 10000),
                data_dir="optional",
            ),
            DatasetSpec(
                "cifar100",
                cifar.CIFAR["cifar100"].label,
                load_cifar100,
                _CIFAR_AUGMENT,
                image_size=(32, 32),
                in_channels=3,
                num_classes=100,
                split_sizes=(50000, 10000),
                data_dir="optional",
            ),
            DatasetSpec(
                "imagefolder",
                "image folder",
                load_imagefolder,
                _augment(crop_padding=4, flip=True, autoaugment=False, cutout=0, roll=0),
                image_size=None,
                in_channels=None,
                num_classes=None,
                split_sizes=None,
                data_dir="required",
            ),
            DatasetSpec(
                "cifar10-dvs",
                "CIFAR10-DVS",
                load_cifar10_dvs,
                _augment(crop_padding=0, flip=True, autoaugment=False, cutout=0, roll=5),
                image_size=(48, 48),
                in_channels=2,
                num_classes=10,
                split_sizes=(9000, 1000),
                data_dir="optional",
                is_sequence=True,
            ),
            DatasetSpec(
                "imagenet",
                "ImageNet (ILSVRC-2012)",
                load_imagenet,
                None,
                image_size=(224, 224),
                in_channels=3,
                num_classes=1000,
                split_sizes=(1281167, 50000),
                data_dir="required",
            ),
        )
    }
)


def _spec(name: str, field: str = "name") -> DatasetSpec:
    if not isinstance(name, str) or name not in DATASETS:
        raise ConfigError(
            f"{field} must be one of {list(DATASETS)}, got {name!r}",
            field=field,
            value=name,
            allowed=f"one of {list(DATASETS)}",
        )
    return DATASETS[name]


def load(
    name: str = "digits", *, root: str | os.PathLike | None = None, download: bool = True, **options: Any
) -> DataSource:
    """Load a data set by name.

    Args:
        name: one of ``DATASETS``.
        root: data folder or archive (meaning depends on the data set; default ``$TSPIKE_DATA`` or
            ``~/.cache/tspike_lab``); must be None for digits.
        download: fetch the canonical archive when it is missing (CIFAR, CIFAR10-DVS).
        **options: data-set specific options (``md5`` for CIFAR; ``channels``, ``workers``, ``cache``
            for imagefolder; ``num_steps``, ``size`` for cifar10-dvs; ``crop``, ``resize`` for imagenet).

    Returns:
        A DataSource.

    Raises:
        ConfigError: unknown name or option, bad option value, a root the data set cannot take.
        DataUnavailableError: the data are not on disk and cannot be downloaded.
        DataIntegrityError: data on disk that is damaged, unsafe or not the data set's files.
    """
    spec = _spec(name)
    allowed = list(spec.options)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ConfigError(
            f"unknown option(s) {unknown} for data set {name!r}; allowed: {allowed}",
            field=unknown[0],
            value=options[unknown[0]],
            allowed=f"one of {allowed}",
        )
    return spec.load(root, bool(download), **options)


# --------------------------------------------------------------------------- plans


@dataclass(frozen=True)
class DataPlan:
    """Which source reads a data set's folder, and how results name it.

    Attributes:
        dataset: the data set asked for (a ``DATASETS`` name).
        source: the ``DATASETS`` entry that reads the folder: ``dataset`` itself, or "imagefolder"
            for an image-folder copy of CIFAR (``train/<class>/`` and ``test/<class>/``).
        root: the folder or archive (None: the source's default).
        label: display name, e.g. "CIFAR-10" or "CIFAR-10 (JPEG copy)".
        options: TrainConfig fields a run on ``source`` needs to train as ``dataset`` does: the
            data set's augmentation recipe for a copy, else empty.
    """

    dataset: str
    source: str
    root: str | None
    label: str
    options: Mapping[str, Any]

    @property
    def copy(self) -> bool:
        """True when ``source`` reads an image copy of ``dataset``."""
        return self.source != self.dataset


def describe(dataset: str, data_dir: str | os.PathLike | None) -> DataPlan:
    """Decide which source reads ``data_dir`` for ``dataset``, from names alone (no pixels read).

    For cifar10/cifar100, a ``data_dir`` holding the python batches (``cifar-10-batches-py/``,
    ``cifar-10-python.tar.gz``, or the CIFAR-100 ones) is read by the CIFAR source; one holding
    ``train/<class>/`` and ``test/<class>/`` images, as a folder or an archive, by ``imagefolder``
    with the CIFAR augmentation (labelled "(JPEG copy)" when its first files are JPEGs). Lists
    at most a few archive members.

    Raises:
        ConfigError: unknown ``dataset``; ``data_dir`` given for digits, missing where required,
            not existing, or a file that is not an archive; a CIFAR ``data_dir`` of neither layout.
    """
    spec = _spec(dataset, "dataset")
    if data_dir is not None and (not isinstance(data_dir, (str, os.PathLike)) or os.fspath(data_dir) == ""):
        raise ConfigError.bad("", "data_dir", data_dir, "None or a non-empty path")
    empty: Mapping[str, Any] = MappingProxyType({})
    if spec.data_dir == "none":
        if data_dir is not None:
            raise ConfigError(
                f"data set {dataset!r} is embedded in tspike_lab and takes no data_dir, got {os.fspath(data_dir)!r}; "
                f"leave data_dir unset",
                field="data_dir",
                value=os.fspath(data_dir),
                allowed=f"None for {dataset!r}",
            )
        return DataPlan(dataset, dataset, None, spec.label, empty)
    if data_dir is None:
        if spec.data_dir == "required":
            raise ConfigError(
                f"data_dir is required for {dataset!r} ({spec.label}): the folder holding its images",
                field="data_dir",
                value=None,
                allowed="an existing folder or archive",
            )
        return DataPlan(dataset, dataset, None, spec.label, empty)
    root = os.fspath(data_dir)
    path = Path(root).expanduser()
    if not path.exists():
        raise ConfigError(
            f"data_dir {root!r} does not exist; give an existing folder or archive holding {spec.label}"
            + (", or leave data_dir unset to use the default data folder" if spec.data_dir == "optional" else ""),
            field="data_dir",
            value=root,
            allowed="an existing folder or archive",
        )
    if not (path.is_dir() or path.is_file()):  # a FIFO, socket or device: reading it would block or never end
        raise ConfigError(
            f"data_dir {root!r} is neither a folder nor a regular file; give the folder that holds {spec.label}, "
            f"or its archive",
            field="data_dir",
            value=root,
            allowed="a folder or a regular (archive) file, not a special file",
        )
    if path.is_file() and archive_kind(path) is None:
        raise ConfigError(
            f"data_dir {root!r} is a file, not an archive tspike_lab can read (.tar.gz, .tgz, .tar, .tar.xz, .zip); "
            f"give the folder that holds {spec.label}, or the archive itself",
            field="data_dir",
            value=root,
            allowed="a folder or an archive",
        )
    if dataset in cifar.CIFAR and cifar.layout(dataset, path) == "imagefolder":
        jpeg = any(n.lower().endswith((".jpg", ".jpeg")) for n in first_names(path, 8))
        label = f"{spec.label} ({'JPEG copy' if jpeg else 'image-folder copy'})"
        return DataPlan(dataset, "imagefolder", root, label, spec.augment)
    return DataPlan(dataset, dataset, root, spec.label, empty)


def probe(plan: DataPlan, num_steps: int | None = None, **options: Any) -> DataSource:
    """Load ``plan``'s data once, so a missing or wrong data set fails before any run starts.

    Args:
        plan: from :func:`describe`.
        num_steps: T, for cifar10-dvs (the number of event frames); ignored by other sources.
        **options: further ``load`` options of the plan's source.

    Returns:
        The loaded DataSource (reuse it rather than loading again); a copy of CIFAR carries
        CIFAR's normalisation constants.

    Raises:
        DataUnavailableError, DataIntegrityError, ConfigError: as :func:`load`; DataIntegrityError
        also when an image copy does not have the data set's classes or image size.
    """
    if plan.source == "cifar10-dvs" and num_steps is not None:
        options = {"num_steps": num_steps, **options}
    source = load(plan.source, root=plan.root, **options)
    if plan.copy and plan.dataset in cifar.CIFAR:
        # a copy of CIFAR is normalised as CIFAR is (the released constants), not by its own pixel statistics
        source = dataclasses.replace(source, mean=cifar.CIFAR[plan.dataset].mean, std=cifar.CIFAR[plan.dataset].std)
    if plan.copy:
        want = DATASETS[plan.dataset]
        found = (source.num_classes, source.in_channels, source.image_size)
        if found != (want.num_classes, want.in_channels, want.image_size):
            raise DataIntegrityError(
                f"data_dir {plan.root!r} holds {source.num_classes} classes of {source.in_channels}x"
                f"{source.image_size[0]}x{source.image_size[1]} images, but {want.label} has {want.num_classes} "
                f"classes of {want.in_channels}x{want.image_size[0]}x{want.image_size[1]}; give a copy of "
                f"{want.label} or use dataset 'imagefolder'"
            )
    return source
