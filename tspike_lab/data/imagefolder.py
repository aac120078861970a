"""Image folders: ``train/<class>/*`` and ``test/<class>/*`` of a folder or archive, decoded once and cached.

Limits hold before the work: only members named like images are read (a 2 GiB README beside
them is never opened), each at most :data:`MAX_IMAGE_BYTES`; each image's declared size is read
from its header and refused above :data:`MAX_IMAGE_PIXELS` (a decompression bomb) or when it
differs from the first image's, before its pixels are decoded. The decoded tensors are cached
under a key computed from the content: the archive's bytes, or every image file's name and bytes.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import logging
import multiprocessing
import os
import signal
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..errors import ConfigError, DataIntegrityError, ResourceError
from ..hardware import available_memory
from ..results import open_regular
from .archive import archive_kind, iter_files
from .sources import DataSource, cache_dir, mean_std, read_cache, tensor_fingerprint, write_cache

__all__ = ["IMAGE_SUFFIXES", "MAX_IMAGE_PIXELS", "MAX_IMAGE_BYTES", "load_imagefolder", "check_image_size"]

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")  # also what the ImageNet reader accepts
MAX_IMAGE_PIXELS = 2**26  # 67,108,864 (8192 x 8192): the largest image decoded; more is refused as a decompression bomb
MAX_IMAGE_BYTES = 64 * 2**20  # the largest image file read (encoded)
_CACHE_VERSION = 2  # 2: keyed by content
_DECODE_CHUNK = 2048
_CACHE_KEYS = ("classes", "train_x", "train_y", "test_x", "test_y", "mean", "std", "fingerprint")


def check_image_size(name: str, width: int, height: int, limit: int | None = None) -> None:
    """Raise DataIntegrityError when an image declares more than ``limit`` pixels (default :data:`MAX_IMAGE_PIXELS`).

    Called on the size in the image's header, before its pixels are decoded.
    """
    limit = MAX_IMAGE_PIXELS if limit is None else limit
    if width * height > limit:
        raise DataIntegrityError(
            f"image file {name!r} declares {width}x{height} = {width * height} pixels, above the decoded-size limit "
            f"of {limit} pixels (tspike_lab.data.imagefolder.MAX_IMAGE_PIXELS); refusing to decode it (a "
            f"decompression bomb?)"
        )


def _is_image_name(rel: str) -> bool:
    """An image folder reads these members only: an image suffix, no hidden or __MACOSX component."""
    parts = PurePosixPath(rel).parts
    if any(p.startswith(".") or p == "__MACOSX" for p in parts):
        return False
    return rel.lower().endswith(IMAGE_SUFFIXES)


def _decode_chunk(items: list[tuple[str, bytes]], channels: int) -> np.ndarray:
    """Decode ``(name, bytes)`` images with Pillow into uint8 ``[n, H, W, C]``; all must share one size.

    Each image's size is checked from its header (the pixel cap, the first image's size) before it is decoded.
    """
    mode = "RGB" if channels == 3 else "L"
    out: np.ndarray | None = None
    first: tuple[int, int] | None = None
    for i, (name, data) in enumerate(items):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(io.BytesIO(data)) as img:
                    check_image_size(name, *img.size)
                    if first is None:
                        first = img.size
                    elif img.size != first:
                        raise DataIntegrityError(
                            f"image file {name!r} is {img.size[0]}x{img.size[1]} but {items[0][0]!r} is "
                            f"{first[0]}x{first[1]}; all images of an image folder must have one size"
                        )
                    arr = np.asarray(img.convert(mode))
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:  # Pillow's own, stricter check
            raise DataIntegrityError(
                f"image file {name!r} is above the decoded-size limit of {MAX_IMAGE_PIXELS} pixels "
                f"(tspike_lab.data.imagefolder.MAX_IMAGE_PIXELS; Pillow: {exc}); refusing to decode it (a "
                f"decompression bomb?)"
            ) from None
        except DataIntegrityError:
            raise
        except Exception as exc:  # any parse failure of untrusted bytes: OSError, SyntaxError, struct.error, ...
            detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise DataIntegrityError(f"image file {name!r} cannot be decoded: {detail}") from None
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


def _ignore_sigint() -> None:
    """Decoding workers leave Ctrl-C to the main process (which stops them), instead of each printing a traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _decoded_budget() -> tuple[int, str] | None:
    """The memory decoded images may take: what is available now (:func:`tspike_lab.hardware.available_memory`)."""
    return available_memory(torch.device("cpu"))


def _content_key(src: Path, channels: int) -> str:
    """The cache key: a hash of the content the images are decoded from, whatever the files' times say.

    An archive: its bytes (every member it holds). A folder: the name and bytes of every file
    read as an image. Changing a pixel changes the key, with or without a new size or mtime.
    """
    h = hashlib.sha256()
    h.update(f"v{_CACHE_VERSION}|channels={channels}|".encode())
    if src.is_dir():
        for rel, data in iter_files(src, accept=_is_image_name, max_bytes=MAX_IMAGE_BYTES):
            h.update(f"|{rel}|{len(data)}|".encode())
            h.update(data)
    else:
        with open_regular(src, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:20]


def _image_members(src: Path) -> Iterator[tuple[str, str, str, bytes]]:
    """Yield ``(split, class, path-inside-split, bytes)`` for the images of an image folder source.

    Members are filtered by name before they are read: only image files, each at most
    :data:`MAX_IMAGE_BYTES`.
    """
    prefix: tuple[str, ...] | None = None
    skipped = 0

    def wanted(rel: str) -> bool:
        nonlocal skipped
        if _is_image_name(rel):
            return True
        if not any(p.startswith(".") or p == "__MACOSX" for p in PurePosixPath(rel).parts):
            skipped += 1
        return False

    for rel, data in iter_files(src, accept=wanted, max_bytes=MAX_IMAGE_BYTES):
        parts = PurePosixPath(rel).parts
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
                pool = multiprocessing.get_context("fork").Pool(workers, initializer=_ignore_sigint)
        except (OSError, AssertionError) as exc:  # e.g. inside a daemonic DataLoader worker
            logger.info("decoding in this process: no worker pool (%s)", exc)
    budget = _decoded_budget()
    arrays: list[np.ndarray] = []
    decoded = [0, 0]  # bytes, images

    def keep(a: np.ndarray) -> None:
        # the decoded images are held twice at the peak: the chunks while they are joined, then the
        # joined tensor while each split is gathered from it
        arrays.append(a)
        decoded[0] += a.nbytes
        decoded[1] += a.shape[0]
        if budget is not None and 2 * decoded[0] > budget[0]:
            raise ResourceError(
                f"image folder {str(src)!r} decodes to more than {decoded[0] / 2**30:.1f} GiB after "
                f"{decoded[1]} images of {a.shape[2]}x{a.shape[1]}, held twice while the splits are made: more "
                f"than the {budget[0] / 2**30:.1f} GiB available ({budget[1]}); use smaller images"
            )

    if pool is None:
        for c in itertools.chain(head, chunks):
            keep(_decode_chunk(c, channels))
    else:
        # Forked workers decode while this process keeps decompressing the archive.
        with pool:
            jobs = ((c, channels) for c in itertools.chain(head, chunks))
            for a in pool.imap(_decode_chunk_star, jobs):
                keep(a)
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
    arrays.clear()  # the chunks go before the splits are gathered
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
            field="root",
            value=None,
            allowed="a folder or archive",
        )
    if channels not in (1, 3):
        raise ConfigError.bad("", "channels", channels, "1 or 3")
    if workers is None:
        workers = min(2, os.cpu_count() or 1)
    if not isinstance(workers, int) or workers < 1:
        raise ConfigError.bad("", "workers", workers, "a positive int")
    src = Path(root).expanduser()
    if not src.exists():
        raise ConfigError(
            f"root {os.fspath(root)!r} does not exist; give the folder or archive holding "
            f"train/<class>/<image> and test/<class>/<image>",
            field="root",
            value=os.fspath(root),
            allowed="an existing folder or archive",
        )
    if src.is_file() and archive_kind(src) is None:
        raise ConfigError(
            f"root {os.fspath(root)!r} is a file, not an archive tspike_lab can read "
            f"(.zip/.tar/.tar.gz/.tgz/.tar.bz2/.tar.xz); give that archive or the folder holding train/ and test/",
            field="root",
            value=os.fspath(root),
            allowed="a folder or archive",
        )
    if not (src.is_dir() or src.is_file()):  # a FIFO, socket or device would block or never end
        raise ConfigError(
            f"root {os.fspath(root)!r} is neither a folder nor a regular file",
            field="root",
            value=os.fspath(root),
            allowed="a folder or archive",
        )
    data = None
    if cache:
        try:
            cache_file = cache_dir() / "imagefolder" / f"{src.name}-{_content_key(src, channels)}.pt"
        except OSError as exc:
            raise DataIntegrityError(f"root {str(src)!r} cannot be read: {exc.strerror or exc}") from None
        data = _checked(read_cache(cache_file, _CACHE_KEYS), cache_file)
        if data is not None:
            logger.info("image folder %s: loaded decoded tensors from %s", src, cache_file)
    if data is None:
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
        fingerprint=data["fingerprint"],
    )


def _checked(data: dict | None, path: Path) -> dict | None:
    """A cache's content if its tensors are well formed and match the fingerprint stored beside them, else None."""
    if data is None:
        return None
    try:
        classes = data["classes"]
        tensors = [data[k] for k in ("train_x", "train_y", "test_x", "test_y")]
        ok = (
            isinstance(classes, list)
            and all(isinstance(c, str) for c in classes)
            and all(isinstance(t, torch.Tensor) for t in tensors)
            and tensors[0].dtype == tensors[2].dtype == torch.uint8
            and tensors[0].dim() == tensors[2].dim() == 4
            and tensors[1].dtype == tensors[3].dtype == torch.int64
            and data["fingerprint"] == tensor_fingerprint(classes, *tensors)
        )
    except (TypeError, ValueError, RuntimeError, AttributeError):
        ok = False
    if not ok:
        logger.warning("ignoring cache %s: its tensors do not match its fingerprint; decoding again", path)
        return None
    return data
