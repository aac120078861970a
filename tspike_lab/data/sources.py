"""Data sources: digits, CIFAR-10/100, image folders, CIFAR10-DVS and ImageNet behind one ``load``."""

from __future__ import annotations

import gzip
import hashlib
import importlib.resources
import inspect
import io
import itertools
import logging
import multiprocessing
import os
import pickle
import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from .archive import DataUnavailableError, archive_kind, check_md5, extract_atomically, iter_files
from .archive import download as _download

logger = logging.getLogger(__name__)

DATASETS = ("digits", "cifar10", "cifar100", "imagefolder", "cifar10-dvs", "imagenet")

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
_CACHE_VERSION = 1
_DECODE_CHUNK = 2048


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
        _check_split_name(split)
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


def _check_split_name(split: str) -> None:
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")


def cache_dir(root: str | os.PathLike | None = None) -> Path:
    """Return the data folder: ``root`` if given, else ``$TSPIKE_DATA``, else ``~/.cache/tspike_lab``."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get("TSPIKE_DATA")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "tspike_lab"


def _mean_std(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
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


def _atomic_torch_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# --------------------------------------------------------------------------- digits


def _load_digits(root: str | os.PathLike | None, download: bool) -> DataSource:
    """UCI handwritten digits, 1797 8x8 images, fixed seed-0 split 1437 / 360."""
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
    mean, std = _mean_std(train_x)
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


# --------------------------------------------------------------------------- CIFAR


@dataclass(frozen=True)
class _CifarSpec:
    label: str
    url: str
    filename: str
    folder: str
    train: tuple[str, ...]
    test: tuple[str, ...]
    label_key: bytes
    meta: str
    names_key: bytes
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR100_MD5 = "eb9058c3a382ffc7106e4ba0bf5c7b1a"

_CIFAR = MappingProxyType(
    {
        "cifar10": _CifarSpec(
            label="CIFAR-10",
            url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
            filename="cifar-10-python.tar.gz",
            folder="cifar-10-batches-py",
            train=tuple(f"data_batch_{i}" for i in range(1, 6)),
            test=("test_batch",),
            label_key=b"labels",
            meta="batches.meta",
            names_key=b"label_names",
            mean=(0.4914, 0.4822, 0.4465),
            std=(0.2470, 0.2435, 0.2616),
        ),
        "cifar100": _CifarSpec(
            label="CIFAR-100",
            url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
            filename="cifar-100-python.tar.gz",
            folder="cifar-100-python",
            train=("train",),
            test=("test",),
            label_key=b"fine_labels",
            meta="meta",
            names_key=b"fine_label_names",
            mean=(0.5071, 0.4865, 0.4409),
            std=(0.2673, 0.2564, 0.2762),
        ),
    }
)


def _is_cifar_folder(path: Path, spec: _CifarSpec) -> bool:
    return path.is_dir() and all((path / f).is_file() for f in (*spec.train, *spec.test, spec.meta))


def _unpickle(path: Path) -> dict:
    with open(path, "rb") as f:
        # The archives are md5-checked (or placed by the user) before their pickles are read.
        return pickle.load(f, encoding="bytes")


def _read_cifar_folder(folder: Path, spec: _CifarSpec) -> tuple:
    def read(files: Iterable[str]) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = [], []
        for name in files:
            batch = _unpickle(folder / name)
            if b"data" not in batch or spec.label_key not in batch:
                raise ValueError(
                    f"CIFAR batch {str(folder / name)!r} lacks b'data' or {spec.label_key!r}; is it the python version?"
                )
            xs.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys.append(np.asarray(batch[spec.label_key], dtype=np.int64))
        return torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys))

    meta = _unpickle(folder / spec.meta)
    classes = [n.decode() if isinstance(n, bytes) else str(n) for n in meta[spec.names_key]]
    train_x, train_y = read(spec.train)
    test_x, test_y = read(spec.test)
    return classes, train_x, train_y, test_x, test_y


def _unavailable(spec: _CifarSpec, md5: str, folder: Path, reason: str) -> DataUnavailableError:
    return DataUnavailableError(
        f"{spec.label} is not on disk and could not be downloaded ({reason}). "
        f"Fetch {spec.url} by hand (file {spec.filename}, md5 {md5}) and put it in {folder}, "
        f"or pass root= pointing at that archive or at an extracted {spec.folder}/ folder."
    )


def _writable_dir(path: Path) -> bool:
    return path.is_dir() and os.access(path, os.W_OK | os.X_OK)


def _locate_cifar(spec: _CifarSpec, root: str | os.PathLike | None, download: bool, md5: str) -> Path:
    """Return the extracted CIFAR folder, extracting or downloading the archive as needed."""
    if root is not None and archive_kind(root) is not None:
        archive = Path(root).expanduser()
        if not archive.is_file():
            raise ValueError(f"root {os.fspath(root)!r} names an archive that does not exist")
        base = archive.parent
        for candidate in (base / spec.folder, cache_dir() / spec.folder):
            if _is_cifar_folder(candidate, spec):
                return candidate
        check_md5(archive, md5)
        dest = base if _writable_dir(base) else cache_dir()
        logger.info("extracting %s into %s", archive, dest)
        return extract_atomically(archive, dest, spec.folder)
    base = cache_dir(root)
    for candidate in (base, base / spec.folder):
        if _is_cifar_folder(candidate, spec):
            return candidate
    archive = base / spec.filename
    if not archive.is_file():
        if not download:
            raise _unavailable(spec, md5, base, "download=False")
        logger.info("downloading %s to %s", spec.url, archive)
        try:
            _download(spec.url, archive, md5=md5)
        except OSError as exc:  # URLError, HTTPError, timeouts, unwritable folder
            raise _unavailable(spec, md5, base, f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}") from None
    else:
        check_md5(archive, md5)
    logger.info("extracting %s into %s", archive, base)
    return extract_atomically(archive, base, spec.folder)


def _load_cifar(name: str, root: str | os.PathLike | None, download: bool, md5: str | None = None) -> DataSource:
    spec = _CIFAR[name]
    if md5 is None:
        md5 = CIFAR10_MD5 if name == "cifar10" else CIFAR100_MD5
    elif not (isinstance(md5, str) and len(md5) == 32 and all(c in "0123456789abcdefABCDEF" for c in md5)):
        raise ValueError(f"md5 must be a 32-digit hex string, got {md5!r}")
    folder = _locate_cifar(spec, root, download, md5)
    classes, train_x, train_y, test_x, test_y = _read_cifar_folder(folder, spec)
    return DataSource(
        name=name,
        num_classes=len(classes),
        in_channels=3,
        image_size=(32, 32),
        classes=classes,
        mean=spec.mean,
        std=spec.std,
        train_x=train_x,
        train_y=train_y,
        test_x=test_x,
        test_y=test_y,
    )


def _load_cifar10(root, download, md5: str | None = None) -> DataSource:
    """CIFAR-10 from the canonical python archive."""
    return _load_cifar("cifar10", root, download, md5)


def _load_cifar100(root, download, md5: str | None = None) -> DataSource:
    """CIFAR-100 (fine labels) from the canonical python archive."""
    return _load_cifar("cifar100", root, download, md5)


# --------------------------------------------------------------------------- image folders


def _decode_chunk(items: list[tuple[str, bytes]], channels: int) -> np.ndarray:
    """Decode ``(name, bytes)`` images with Pillow into uint8 ``[n, H, W, C]``; all must share one size."""
    from PIL import Image, UnidentifiedImageError

    mode = "RGB" if channels == 3 else "L"
    out: np.ndarray | None = None
    for i, (name, data) in enumerate(items):
        try:
            with Image.open(io.BytesIO(data)) as img:
                arr = np.asarray(img.convert(mode))
        except (UnidentifiedImageError, OSError) as exc:
            raise ValueError(f"image file {name!r} cannot be decoded: {exc}") from None
        if arr.ndim == 2:
            arr = arr[:, :, None]
        if out is None:
            out = np.empty((len(items), *arr.shape), dtype=np.uint8)
        elif arr.shape != out.shape[1:]:
            raise ValueError(
                f"image file {name!r} is {arr.shape[1]}x{arr.shape[0]} but {items[0][0]!r} is "
                f"{out.shape[2]}x{out.shape[1]}; all images of an image folder must have one size"
            )
        out[i] = arr
    if out is None:
        return np.empty((0, 0, 0, channels), dtype=np.uint8)
    return out


def _decode_chunk_star(args: tuple[list[tuple[str, bytes]], int]) -> np.ndarray:
    return _decode_chunk(*args)


def _folder_key(src: Path, channels: int) -> str:
    h = hashlib.sha256()
    h.update(f"v{_CACHE_VERSION}|channels={channels}|{src.resolve()}".encode())
    if src.is_dir():
        for dirpath, dirnames, filenames in os.walk(src):
            dirnames.sort()
            for fn in sorted(filenames):
                st = os.stat(os.path.join(dirpath, fn))
                rel = os.path.relpath(os.path.join(dirpath, fn), src)
                h.update(f"|{rel}|{st.st_size}|{st.st_mtime_ns}".encode())
    else:
        st = src.stat()
        h.update(f"|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:20]


def _image_members(src: Path) -> Iterator[tuple[str, str, str, bytes]]:
    """Yield ``(split, class, path-inside-split, bytes)`` for the images of an image folder source."""
    prefix: tuple[str, ...] | None = None
    skipped = 0
    for rel, data in iter_files(src):
        parts = PurePosixPath(rel).parts
        if any(p.startswith(".") or p == "__MACOSX" for p in parts):
            continue
        if not rel.lower().endswith(IMAGE_SUFFIXES):
            skipped += 1
            continue
        if len(parts) < 3 or parts[-3] not in ("train", "test"):
            skipped += 1
            continue
        here = parts[:-3]
        if prefix is None:
            if len(here) > 1:
                raise ValueError(
                    f"image {rel!r} in root {str(src)!r} is nested too deep: expected train/<class>/<file> "
                    f"or <folder>/train/<class>/<file>"
                )
            prefix = here
        elif here != prefix:
            raise ValueError(
                f"image {rel!r} in root {str(src)!r} lies under {'/'.join(here) or '.'!r} but others lie under "
                f"{'/'.join(prefix) or '.'!r}; expected one train/ and test/ pair"
            )
        yield parts[-3], parts[-2], "/".join(parts[-3:]), data
    if skipped:
        logger.info("image folder %s: skipped %d files that are not train/<class>/<image>", src, skipped)


def _chunks(it: Iterable, size: int) -> Iterator[list]:
    it = iter(it)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


def _decode_image_folder(src: Path, channels: int, workers: int) -> dict:
    """Read and decode every image of ``src``; return the cache dict (tensors, classes, mean, std)."""
    meta: list[tuple[str, str, str]] = []

    def stream() -> Iterator[list[tuple[str, bytes]]]:
        for chunk in _chunks(_image_members(src), _DECODE_CHUNK):
            meta.extend((s, c, p) for s, c, p, _ in chunk)
            yield [(f"{src}:{p}", d) for _, _, p, d in chunk]

    chunks = stream()
    head = list(itertools.islice(chunks, 2))
    pool = None
    if len(head) == 2 and workers > 1 and "fork" in multiprocessing.get_all_start_methods():
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*fork.*", category=DeprecationWarning)
                pool = multiprocessing.get_context("fork").Pool(workers)
        except (OSError, AssertionError) as exc:  # e.g. inside a daemonic DataLoader worker
            logger.info("decoding in this process: no worker pool (%s)", exc)
    if pool is None:
        arrays = [_decode_chunk(c, channels) for c in itertools.chain(head, chunks)]
    else:
        # Forked workers decode while this process keeps decompressing the archive.
        with pool:
            jobs = ((c, channels) for c in itertools.chain(head, chunks))
            arrays = list(pool.imap(_decode_chunk_star, jobs))
    if not meta:
        raise ValueError(
            f"root {str(src)!r} holds no images laid out as train/<class>/<image> and test/<class>/<image> "
            f"(PNG or JPEG)"
        )
    shape = next(a.shape[1:] for a in arrays if a.shape[0])
    start = 0
    for a in arrays:
        if a.shape[1:] != shape:
            name = meta[start][2]
            raise ValueError(
                f"image file {src}:{name} is {a.shape[2]}x{a.shape[1]} but the first image is "
                f"{shape[1]}x{shape[0]}; all images of an image folder must have one size"
            )
        start += a.shape[0]
    images = torch.from_numpy(np.concatenate(arrays)).permute(0, 3, 1, 2)
    splits = {s: [i for i, m in enumerate(meta) if m[0] == s] for s in ("train", "test")}
    for s, idx in splits.items():
        if not idx:
            raise ValueError(f"root {str(src)!r} has no images under {s}/<class>/")
    classes = sorted({meta[i][1] for i in splits["train"]})
    missing = sorted({meta[i][1] for i in splits["test"]} - set(classes))
    if missing:
        raise ValueError(f"root {str(src)!r} has test classes {missing} that have no train images")
    index = {c: k for k, c in enumerate(classes)}
    out: dict[str, Any] = {"version": _CACHE_VERSION, "classes": classes}
    for s, idx in splits.items():
        idx.sort(key=lambda i: meta[i][2])
        order = torch.tensor(idx, dtype=torch.int64)
        out[f"{s}_x"] = images[order].contiguous()
        out[f"{s}_y"] = torch.tensor([index[meta[i][1]] for i in idx], dtype=torch.int64)
    mean, std = _mean_std(out["train_x"])
    out["mean"], out["std"] = list(mean), list(std)
    return out


def _load_imagefolder(
    root: str | os.PathLike | None,
    download: bool,
    channels: int = 3,
    workers: int | None = None,
    cache: bool = True,
) -> DataSource:
    """Images under ``train/<class>/*`` and ``test/<class>/*`` of a folder or archive, decoded once and cached.

    Args:
        root: a folder, or a ``.zip``/``.tar``/``.tar.gz``/``.tgz``/``.tar.xz`` archive (read without extracting).
        download: unused (image folders are local).
        channels: 3 (RGB) or 1 (grayscale).
        workers: decoding processes (default ``min(2, cpu count)``; 1 decodes in this process).
        cache: keep the decoded uint8 tensors in ``<cache folder>/imagefolder/*.pt``.
    """
    if root is None:
        raise ValueError(
            "root is required for imagefolder: a folder or .zip/.tar/.tar.gz/.tgz/.tar.xz archive "
            "holding train/<class>/<image> and test/<class>/<image>; got None"
        )
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")
    if workers is None:
        workers = min(2, os.cpu_count() or 1)
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive int, got {workers!r}")
    src = Path(root).expanduser()
    if not src.exists():
        raise ValueError(f"root {os.fspath(root)!r} does not exist")
    if src.is_file() and archive_kind(src) is None:
        raise ValueError(
            f"root {os.fspath(root)!r} is a file but not a .zip/.tar/.tar.gz/.tgz/.tar.bz2/.tar.xz archive"
        )
    cache_file = cache_dir() / "imagefolder" / f"{src.name}-{_folder_key(src, channels)}.pt"
    data = None
    if cache and cache_file.is_file():
        try:
            data = torch.load(cache_file, map_location="cpu", weights_only=True)
            logger.info("image folder %s: loaded decoded tensors from %s", src, cache_file)
        except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as exc:  # unreadable cache: rebuild it
            logger.warning("ignoring unreadable cache %s (%s); decoding again", cache_file, exc)
            data = None
    if data is None:
        data = _decode_image_folder(src, channels, workers)
        if cache:
            _atomic_torch_save(data, cache_file)
            logger.info("image folder %s: cached decoded tensors in %s", src, cache_file)
    train_x = data["train_x"]
    return DataSource(
        name="imagefolder",
        num_classes=len(data["classes"]),
        in_channels=int(train_x.shape[1]),
        image_size=tuple(train_x.shape[2:]),
        classes=list(data["classes"]),
        mean=tuple(data["mean"]),
        std=tuple(data["std"]),
        train_x=train_x,
        train_y=data["train_y"],
        test_x=data["test_x"],
        test_y=data["test_y"],
    )


# --------------------------------------------------------------------------- CIFAR10-DVS

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


def _load_cifar10_dvs(
    root: str | os.PathLike | None, download: bool, num_steps: int = 10, size: int = 48
) -> DataSource:
    """CIFAR10-DVS through tonic: ``num_steps`` event frames per sample, resized to ``size``x``size``.

    Args:
        root: folder for tonic's download and the frame cache (default ``<cache folder>/cifar10-dvs``).
        download: let tonic download the recordings when missing.
        num_steps: T, the number of time bins (tonic ``ToFrame(n_time_bins=T)``).
        size: output side after bilinear resizing (48 as in the literature).
    """
    if not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive int, got {num_steps!r}")
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive int, got {size!r}")
    base = cache_dir(root) if root is not None else cache_dir() / "cifar10-dvs"
    cache_file = base / f"frames-T{num_steps}-{size}px.pt"
    if cache_file.is_file():
        data = torch.load(cache_file, map_location="cpu", weights_only=True)
        frames, labels = data["frames"], data["labels"]
    else:
        try:
            import tonic
        except ImportError:
            raise ImportError("cifar10-dvs needs the optional dependency tonic: pip install tspike_lab[dvs]") from None
        frames, labels = _build_dvs_frames(tonic, base, download, num_steps, size)
        _atomic_torch_save({"frames": frames, "labels": labels}, cache_file)
        logger.info("cached CIFAR10-DVS frames in %s", cache_file)
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
    )


def _build_dvs_frames(
    tonic: Any, base: Path, download: bool, num_steps: int, size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Turn every CIFAR10-DVS recording into ``[T, 2, size, size]`` float16 frames, ordered by file path."""
    import torch.nn.functional as F

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


# --------------------------------------------------------------------------- ImageNet


def _load_imagenet(root: str | os.PathLike | None, download: bool, crop: int = 224, resize: int = 256) -> DataSource:
    """ImageNet (or any ``train/<wnid>/*`` + ``val/<wnid>/*`` tree) read lazily with PIL.

    Args:
        root: folder with ``train/`` and ``val/``.
        download: unused (ImageNet cannot be downloaded automatically).
        crop: output side (RandomResizedCrop for train, CenterCrop for test).
        resize: shorter side before the test center crop.
    """
    from .imagenet import IMAGENET_MEAN, IMAGENET_STD, ImageFolderDataset

    if root is None:
        raise ValueError(
            "root is required for imagenet: a folder holding train/<wnid>/*.JPEG and val/<wnid>/*.JPEG; got None"
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


# --------------------------------------------------------------------------- entry point

_LOADERS: MappingProxyType[str, Callable[..., DataSource]] = MappingProxyType(
    {
        "digits": _load_digits,
        "cifar10": _load_cifar10,
        "cifar100": _load_cifar100,
        "imagefolder": _load_imagefolder,
        "cifar10-dvs": _load_cifar10_dvs,
        "imagenet": _load_imagenet,
    }
)


def load(
    name: str = "digits", *, root: str | os.PathLike | None = None, download: bool = True, **options: Any
) -> DataSource:
    """Load a data set by name.

    Args:
        name: one of ``DATASETS``.
        root: data folder or archive (meaning depends on the data set; default ``$TSPIKE_DATA`` or
            ``~/.cache/tspike_lab``).
        download: fetch the canonical archive when it is missing (CIFAR, CIFAR10-DVS).
        **options: data-set specific options (``md5`` for CIFAR; ``channels``, ``workers``, ``cache``
            for imagefolder; ``num_steps``, ``size`` for cifar10-dvs; ``crop``, ``resize`` for imagenet).

    Returns:
        A DataSource.

    Raises:
        ValueError: unknown name or option, bad option value, corrupted archive.
        DataUnavailableError: the data are not on disk and cannot be downloaded.
    """
    if name not in _LOADERS:
        raise ValueError(f"name must be one of {DATASETS}, got {name!r}")
    fn = _LOADERS[name]
    allowed = [p for p in inspect.signature(fn).parameters if p not in ("root", "download")]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for data set {name!r}; allowed: {allowed}")
    return fn(root, bool(download), **options)
