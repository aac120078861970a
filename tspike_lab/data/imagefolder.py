"""Image folders: ``train/<class>/*`` and ``test/<class>/*`` of a folder or archive, decoded once and cached."""

from __future__ import annotations

import hashlib
import io
import itertools
import logging
import multiprocessing
import os
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, DataIntegrityError
from .archive import archive_kind, iter_files
from .sources import DataSource, cache_dir, mean_std, read_cache, tensor_fingerprint, write_cache

__all__ = ["IMAGE_SUFFIXES", "load_imagefolder"]

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")  # also what the ImageNet reader accepts
_CACHE_VERSION = 1
_DECODE_CHUNK = 2048
_CACHE_KEYS = ("classes", "train_x", "train_y", "test_x", "test_y", "mean", "std")


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
            raise DataIntegrityError(f"image file {name!r} cannot be decoded: {exc}") from None
        if arr.ndim == 2:
            arr = arr[:, :, None]
        if out is None:
            out = np.empty((len(items), *arr.shape), dtype=np.uint8)
        elif arr.shape != out.shape[1:]:
            raise DataIntegrityError(
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
                raise DataIntegrityError(
                    f"image {rel!r} in root {str(src)!r} is nested too deep: expected train/<class>/<file> "
                    f"or <folder>/train/<class>/<file>"
                )
            prefix = here
        elif here != prefix:
            raise DataIntegrityError(
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
        raise DataIntegrityError(
            f"root {str(src)!r} holds no images laid out as train/<class>/<image> and test/<class>/<image> "
            f"(PNG or JPEG)"
        )
    shape = next(a.shape[1:] for a in arrays if a.shape[0])
    start = 0
    for a in arrays:
        if a.shape[1:] != shape:
            name = meta[start][2]
            raise DataIntegrityError(
                f"image file {src}:{name} is {a.shape[2]}x{a.shape[1]} but the first image is "
                f"{shape[1]}x{shape[0]}; all images of an image folder must have one size"
            )
        start += a.shape[0]
    images = torch.from_numpy(np.concatenate(arrays)).permute(0, 3, 1, 2)
    splits = {s: [i for i, m in enumerate(meta) if m[0] == s] for s in ("train", "test")}
    for s, idx in splits.items():
        if not idx:
            raise DataIntegrityError(f"root {str(src)!r} has no images under {s}/<class>/")
    classes = sorted({meta[i][1] for i in splits["train"]})
    missing = sorted({meta[i][1] for i in splits["test"]} - set(classes))
    if missing:
        raise DataIntegrityError(f"root {str(src)!r} has test classes {missing} that have no train images")
    index = {c: k for k, c in enumerate(classes)}
    out: dict[str, Any] = {"version": _CACHE_VERSION, "classes": classes}
    for s, idx in splits.items():
        idx.sort(key=lambda i: meta[i][2])
        order = torch.tensor(idx, dtype=torch.int64)
        out[f"{s}_x"] = images[order].contiguous()
        out[f"{s}_y"] = torch.tensor([index[meta[i][1]] for i in idx], dtype=torch.int64)
    mean, std = mean_std(out["train_x"])
    out["mean"], out["std"] = list(mean), list(std)
    out["fingerprint"] = tensor_fingerprint(classes, out["train_x"], out["train_y"], out["test_x"], out["test_y"])
    return out


def load_imagefolder(
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
        cache: keep the decoded uint8 tensors in ``<cache folder>/imagefolder/*.pt`` (optional:
            a cache that cannot be written is logged and skipped).
    """
    if root is None:
        raise ConfigError(
            "root is required for imagefolder: a folder or .zip/.tar/.tar.gz/.tgz/.tar.xz archive "
            "holding train/<class>/<image> and test/<class>/<image>; got None",
            field="root", value=None, allowed="a folder or archive",
        )
    if channels not in (1, 3):
        raise ConfigError.bad("", "channels", channels, "1 or 3")
    if workers is None:
        workers = min(2, os.cpu_count() or 1)
    if not isinstance(workers, int) or workers < 1:
        raise ConfigError.bad("", "workers", workers, "a positive int")
    src = Path(root).expanduser()
    if not src.exists():
        raise ConfigError(f"root {os.fspath(root)!r} does not exist; give the folder or archive holding "
                          f"train/<class>/<image> and test/<class>/<image>",
                          field="root", value=os.fspath(root), allowed="an existing folder or archive")
    if src.is_file() and archive_kind(src) is None:
        raise ConfigError(
            f"root {os.fspath(root)!r} is a file, not an archive tspike_lab can read "
            f"(.zip/.tar/.tar.gz/.tgz/.tar.bz2/.tar.xz); give that archive or the folder holding train/ and test/",
            field="root", value=os.fspath(root), allowed="a folder or archive",
        )
    cache_file = cache_dir() / "imagefolder" / f"{src.name}-{_folder_key(src, channels)}.pt"
    data = read_cache(cache_file, _CACHE_KEYS) if cache else None
    if data is not None:
        logger.info("image folder %s: loaded decoded tensors from %s", src, cache_file)
    else:
        data = _decode_image_folder(src, channels, workers)
        if cache and write_cache(data, cache_file):
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
        fingerprint=data.get("fingerprint"),  # caches written before fingerprints: computed from the tensors
    )
