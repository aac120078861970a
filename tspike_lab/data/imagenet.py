"""ImageNet: ``train/<wnid>/*`` and ``val/<wnid>/*`` read lazily with PIL, the standard transforms, no torchvision."""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ..errors import ConfigError, DataIntegrityError, DataUnavailableError
from ..results import open_regular
from .imagefolder import IMAGE_SUFFIXES, MAX_IMAGE_BYTES, check_image_size
from .sources import FINGERPRINT_CHARS, DataSource

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ImageFolderDataset",
    "load_imagenet",
    "eval_transform",
    "train_transform",
    "random_resized_crop_box",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _uniform(lo: float, hi: float, generator: torch.Generator | None) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=generator))


def _randint(lo: int, hi: int, generator: torch.Generator | None) -> int:
    """Uniform int in [lo, hi] inclusive."""
    return int(torch.randint(lo, hi + 1, (), generator=generator))


def random_resized_crop_box(
    width: int,
    height: int,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    generator: torch.Generator | None = None,
) -> tuple[int, int, int, int]:
    """Pick a RandomResizedCrop box as torchvision does (10 tries, then a central fallback).

    Returns:
        ``(left, top, w, h)`` in pixels.
    """
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * _uniform(scale[0], scale[1], generator)
        aspect = math.exp(_uniform(log_ratio[0], log_ratio[1], generator))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = _randint(0, height - h, generator)
            left = _randint(0, width - w, generator)
            return left, top, w, h
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def to_normalized_tensor(img, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """PIL RGB image -> float32 ``[3, H, W]`` in [0, 1], then ``(x - mean) / std``."""
    arr = torch.from_numpy(np.array(img, dtype=np.uint8, copy=True)).permute(2, 0, 1).float().div_(255.0)
    m = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
    return arr.sub_(m).div_(s)


def train_transform(img, crop: int = 224, generator: torch.Generator | None = None):
    """RandomResizedCrop(crop, scale=(0.08, 1), ratio=(3/4, 4/3)) then a horizontal flip with p=0.5."""
    left, top, w, h = random_resized_crop_box(img.width, img.height, generator=generator)
    out = img.resize((crop, crop), Image.BILINEAR, box=(left, top, left + w, top + h))
    if float(torch.rand((), generator=generator)) < 0.5:
        out = out.transpose(Image.FLIP_LEFT_RIGHT)
    return out


def eval_transform(img, crop: int = 224, resize: int = 256):
    """Resize the shorter side to ``resize`` (aspect kept), then CenterCrop(``crop``)."""
    w, h = img.size
    if w <= h:
        nw, nh = resize, int(resize * h / w)
    else:
        nw, nh = int(resize * w / h), resize
    img = img.resize((nw, nh), Image.BILINEAR)
    top = int(round((nh - crop) / 2.0))
    left = int(round((nw - crop) / 2.0))
    return img.crop((left, top, left + crop, top + crop))


def _walk_files(top: str) -> Iterator[os.DirEntry]:
    """The entries under ``top`` that are not folders, in ``os.walk`` order (top-down, names sorted).

    Symlinked folders are not followed (no loops); an entry's type comes from the directory listing,
    so a regular file costs no ``stat`` (ImageNet: 1.28 M of them); unreadable folders are skipped,
    as ``os.walk`` skips them.
    """
    stack = [top]
    while stack:
        try:
            with os.scandir(stack.pop()) as listing:
                entries = sorted(listing, key=lambda e: e.name)
        except OSError:
            continue
        folders = []
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                folders.append(entry.path)
            elif not entry.is_dir():  # a symlinked folder is neither walked nor a file
                yield entry
        stack.extend(reversed(folders))


class ImageFolderDataset(Dataset):
    """``<root>/<class>/<image>`` files read with PIL and transformed for ImageNet-style training.

    Args:
        root: folder with one sub-folder per class.
        train: RandomResizedCrop + flip when True; Resize + CenterCrop otherwise.
        crop: output side.
        resize: shorter side before the center crop (test only).
        classes: class names to use (default: the sorted sub-folder names); the test split
            passes the train classes so labels agree.
        mean, std: normalization in [0, 1] units.

    Shape:
        item: ``(x float32 [3, crop, crop], label int)``.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        train: bool,
        crop: int = 224,
        resize: int = 256,
        classes: Sequence[str] | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        if not isinstance(crop, int) or crop < 1:
            raise ConfigError.bad("", "crop", crop, "a positive int")
        if not isinstance(resize, int) or resize < crop:
            raise ConfigError.bad("", "resize", resize, f"an int >= crop ({crop})")
        self.root = Path(root)
        if not self.root.is_dir():
            raise ConfigError(
                f"root {os.fspath(root)!r} is not a folder; give the folder holding <class>/<image>",
                field="root",
                value=os.fspath(root),
                allowed="a folder",
            )
        found = sorted(d.name for d in self.root.iterdir() if d.is_dir() and not d.name.startswith("."))
        self.classes = list(classes) if classes is not None else found
        index = {c: i for i, c in enumerate(self.classes)}
        unknown = [c for c in found if c not in index]
        if unknown:
            raise DataIntegrityError(
                f"root {str(self.root)!r} has class folders {unknown[:5]} not among the given classes"
            )
        self.samples: list[tuple[str, int]] = []
        for c in found:
            for entry in _walk_files(os.path.join(self.root, c)):
                if entry.name.lower().endswith(IMAGE_SUFFIXES) and not entry.name.startswith("."):
                    if not entry.is_file():  # a FIFO, socket or device named like an image
                        raise DataIntegrityError(f"image {entry.path!r} is not a regular file; refusing to read it")
                    self.samples.append((entry.path, index[c]))
        if not self.samples:
            raise DataIntegrityError(f"root {str(self.root)!r} holds no images under <class>/ folders")
        self.train = bool(train)
        self.crop = crop
        self.resize = resize
        self.mean = tuple(mean)
        self.std = tuple(std)
        self._fingerprint: str | None = None

    @property
    def fingerprint(self) -> str:
        """Short stable hash of the class names and each sample's path (relative to root) and label.

        Identifies the file list, not the pixels: hashing every ImageNet image at each load is too slow.
        """
        if self._fingerprint is None:
            cut = len(os.path.join(self.root, ""))  # every sample path starts with root/
            listing = "\n".join(f"{path[cut:]}\t{label}" for path, label in self.samples)
            text = "|".join(self.classes) + "\n" + listing
            self._fingerprint = hashlib.sha256(text.encode()).hexdigest()[:FINGERPRINT_CHARS]
        return self._fingerprint

    @property
    def targets(self) -> list[int]:
        """Labels of all samples, in order."""
        return [y for _, y in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def get(self, index: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, int]:
        """Load sample ``index``; random transforms draw from ``generator`` (global RNG when None)."""
        path, label = self.samples[index]
        try:
            with open_regular(path, "rb", max_bytes=MAX_IMAGE_BYTES) as f, Image.open(f) as raw:
                check_image_size(path, *raw.size)  # from the header, before any pixel is decoded
                img = raw.convert("RGB")
        except DataIntegrityError:
            raise
        except Exception as exc:  # a special or oversized file, Pillow's bomb check, any parse failure
            detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise DataIntegrityError(f"image {path!r} cannot be read: {detail}") from None
        if self.train:
            img = train_transform(img, self.crop, generator)
        else:
            img = eval_transform(img, self.crop, self.resize)
        return to_normalized_tensor(img, self.mean, self.std), label

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.get(index)


def load_imagenet(root: str | os.PathLike | None, download: bool, crop: int = 224, resize: int = 256) -> DataSource:
    """ImageNet (or any ``train/<wnid>/*`` + ``val/<wnid>/*`` tree) read lazily with PIL.

    Args:
        root: folder with ``train/`` and ``val/``.
        download: unused (ImageNet cannot be downloaded automatically).
        crop: output side (RandomResizedCrop for train, CenterCrop for test).
        resize: shorter side before the test center crop.
    """
    if root is None:
        raise ConfigError(
            "root is required for imagenet: a folder holding train/<wnid>/*.JPEG and val/<wnid>/*.JPEG; got None",
            field="root",
            value=None,
            allowed="a folder with train/ and val/",
        )
    base = Path(root).expanduser()
    for sub in ("train", "val"):
        if not (base / sub).is_dir():
            raise DataUnavailableError(
                f"ImageNet is not downloadable automatically: root {str(base)!r} has no {sub}/ folder; "
                f"put the ILSVRC-2012 images there as train/<wnid>/*.JPEG and val/<wnid>/*.JPEG"
            )
    train_set = ImageFolderDataset(base / "train", train=True, crop=crop, resize=resize)
    test_set = ImageFolderDataset(base / "val", train=False, crop=crop, resize=resize, classes=train_set.classes)
    return DataSource(
        name="imagenet",
        num_classes=len(train_set.classes),
        in_channels=3,
        image_size=(crop, crop),
        classes=list(train_set.classes),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        train_set=train_set,
        test_set=test_set,
    )
