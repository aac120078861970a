"""CIFAR-10 and CIFAR-100 from the canonical python archives: located, verified file by file, read safely.

Every file of an extracted ``cifar-10-batches-py/`` or ``cifar-100-python/`` folder is
md5-checked against the canonical sums (torchvision's list) before it is unpickled, and the
unpickler admits only what a CIFAR batch holds (numpy arrays, lists, bytes): a pickle that asks
for anything else is refused, so a crafted batch file cannot run code. An archive named as
``root`` is md5-checked at every load.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, DataIntegrityError, DataUnavailableError
from ..results import atomic_write, open_regular, read_regular
from . import sources
from .archive import archive_kind, check_md5, extract_atomically, first_names, md5_file
from .sources import DataSource, cache_dir, checksum_fingerprint

__all__ = [
    "CIFAR",
    "CIFAR10_MD5",
    "CIFAR100_MD5",
    "FILE_MD5",
    "CifarSpec",
    "layout",
    "load_cifar10",
    "load_cifar100",
    "read_batch",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CifarSpec:
    """The layout of one CIFAR archive: its URL, top folder, batch files and pickle keys."""

    name: str
    label: str
    url: str
    filename: str  # the archive
    folder: str  # its one top folder
    train: tuple[str, ...]
    test: tuple[str, ...]
    meta: str
    label_key: bytes
    names_key: bytes
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @property
    def files(self) -> tuple[str, ...]:
        """Every file the loader reads, in reading order."""
        return (self.meta, *self.train, *self.test)


CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR100_MD5 = "eb9058c3a382ffc7106e4ba0bf5c7b1a"

CIFAR = MappingProxyType(
    {
        "cifar10": CifarSpec(
            name="cifar10",
            label="CIFAR-10",
            url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
            filename="cifar-10-python.tar.gz",
            folder="cifar-10-batches-py",
            train=tuple(f"data_batch_{i}" for i in range(1, 6)),
            test=("test_batch",),
            meta="batches.meta",
            label_key=b"labels",
            names_key=b"label_names",
            num_classes=10,
            # the released CIFAR script's constants (yfguo91/MPBN main_train.py): its std is the widely
            # copied (0.2023, 0.1994, 0.2010), not the pixels' (0.2470, 0.2435, 0.2616)
            mean=(0.4914, 0.4822, 0.4465),
            std=(0.2023, 0.1994, 0.2010),
        ),
        "cifar100": CifarSpec(
            name="cifar100",
            label="CIFAR-100",
            url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
            filename="cifar-100-python.tar.gz",
            folder="cifar-100-python",
            train=("train",),
            test=("test",),
            meta="meta",
            label_key=b"fine_labels",
            names_key=b"fine_label_names",
            num_classes=100,
            mean=(0.5071, 0.4867, 0.4408),  # the released CIFAR script's constants
            std=(0.2675, 0.2565, 0.2761),
        ),
    }
)

# The canonical md5 of every file of the extracted archives, as torchvision lists them
# (torchvision/datasets/cifar.py: train_list, test_list, meta).
FILE_MD5 = MappingProxyType(
    {
        "cifar10": MappingProxyType(
            {
                "data_batch_1": "c99cafc152244af753f735de768cd75f",
                "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
                "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
                "data_batch_4": "634d18415352ddfa80567beed471001a",
                "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
                "test_batch": "40351d587109b95175f43aff81a1287e",
                "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
            }
        ),
        "cifar100": MappingProxyType(
            {
                "train": "16019d7e3df5f24257cddd939b257f8d",
                "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
                "meta": "7973b15100ade9c7d40fb424638fde48",
            }
        ),
    }
)


# --------------------------------------------------------------------------- safe reading


def _numpy_reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


def _numpy_frombuffer():
    try:
        from numpy._core.numeric import _frombuffer  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.numeric import _frombuffer
    return _frombuffer


# (module, name) -> the object; the pickles of CIFAR hold dicts, lists, ints, bytes and uint8
# arrays. Arrays are rebuilt by _reconstruct (protocol < 5) or _frombuffer (protocol 5), under
# numpy 1's or numpy 2's module name. Python 2 pickles name "__builtin__", which the unpickler
# maps to "builtins"; Python 3 pickles of protocol < 3 build bytes through _codecs.encode and
# builtins.bytes.
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _numpy_frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _numpy_frombuffer,
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
    ("_codecs", "encode"): lambda: __import__("codecs").encode,
    ("builtins", "bytes"): lambda: bytes,
}


class _CifarUnpickler(pickle.Unpickler):
    """An Unpickler that builds only numpy arrays and plain containers; anything else is refused."""

    def __init__(self, file, path: Path) -> None:
        super().__init__(file, encoding="bytes")
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        module = "builtins" if module == "__builtin__" else module  # Python 2's name (fix_imports is bypassed here)
        make = _ALLOWED.get((module, name))
        if make is None:
            raise DataIntegrityError(
                f"CIFAR file {str(self._path)!r} asks to load {module}.{name} while unpickling; a CIFAR batch "
                f"holds only numpy arrays, lists and bytes, so it is not CIFAR data: refusing to read it "
                f"(delete it and fetch the canonical archive)"
            )
        return make()


def read_batch(path: str | os.PathLike) -> Any:
    """Unpickle one CIFAR file with the restricted unpickler.

    Raises:
        DataIntegrityError: the file asks for anything but numpy arrays and containers, or is
            truncated or damaged (names the file).
    """
    path = Path(path)
    try:
        with open_regular(path, "rb") as f:
            return _CifarUnpickler(f, path).load()
    except DataIntegrityError:
        raise
    except OSError as exc:
        raise DataIntegrityError(f"CIFAR file {str(path)!r} cannot be read: {exc}") from None
    except Exception as exc:  # any parse failure of untrusted bytes: EOFError, UnpicklingError, ValueError, ...
        raise DataIntegrityError(
            f"CIFAR file {str(path)!r} is truncated or damaged ({type(exc).__name__}: {exc}); delete its folder "
            f"{str(path.parent)!r} and load again to extract or download it afresh"
        ) from None


def _batch_arrays(batch: Any, path: Path, spec: CifarSpec) -> tuple[np.ndarray, np.ndarray]:
    """``(x uint8 [n, 3, 32, 32], y int64 [n])`` of an unpickled batch, checked."""
    if not isinstance(batch, dict) or b"data" not in batch or spec.label_key not in batch:
        raise DataIntegrityError(
            f"CIFAR batch {str(path)!r} lacks b'data' or {spec.label_key!r}; is it the python version of {spec.label}?"
        )
    data, labels = batch[b"data"], batch[spec.label_key]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        found = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataIntegrityError(f"CIFAR batch {str(path)!r} holds b'data' as {found}, expected uint8 [N, 3072]")
    try:
        y = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        y = None
    if y is None or y.shape != (data.shape[0],) or (y.size and (y.min() < 0 or y.max() >= spec.num_classes)):
        raise DataIntegrityError(
            f"CIFAR batch {str(path)!r} holds {spec.label_key!r} that are not {data.shape[0]} labels in "
            f"[0, {spec.num_classes})"
        )
    return data.reshape(-1, 3, 32, 32), y


def _class_names(meta: Any, path: Path, spec: CifarSpec) -> list[str]:
    names = meta.get(spec.names_key) if isinstance(meta, dict) else None
    if (
        not isinstance(names, list)
        or len(names) != spec.num_classes
        or not all(isinstance(n, (bytes, str)) for n in names)
    ):
        raise DataIntegrityError(
            f"CIFAR file {str(path)!r} does not hold {spec.num_classes} class names under {spec.names_key!r}"
        )
    return [n.decode() if isinstance(n, bytes) else n for n in names]


# --------------------------------------------------------------------------- verification


def _record_path(folder: Path) -> Path:
    key = hashlib.sha256(os.fsencode(os.path.realpath(folder))).hexdigest()[:20]
    return cache_dir() / "verified" / f"{folder.name}-{key}.json"


def _read_record(folder: Path) -> dict[str, str] | None:
    """The md5s recorded when this library extracted ``folder`` from an archive you vouched for."""
    path = _record_path(folder)
    try:
        record = json.loads(read_regular(path, max_bytes=2**20).decode("utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(record, dict) or record.get("folder") != os.path.realpath(folder):
        return None
    files = record.get("files")
    return dict(files) if isinstance(files, dict) else None


def _write_record(folder: Path, sums: dict[str, str], archive: Path, archive_md5: str) -> None:
    record = {
        "folder": os.path.realpath(folder),
        "archive": os.path.realpath(archive),
        "archive_md5": archive_md5,
        "files": sums,
    }
    try:
        atomic_write(_record_path(folder), json.dumps(record, indent=1) + "\n")
    except OSError as exc:
        logger.warning(
            "could not record the checksums of %s (%s); later loads of that folder alone will refuse "
            "its non-canonical files",
            folder,
            exc,
        )


def _verify(folder: Path, spec: CifarSpec, vouched: tuple[Path, str] | None) -> dict[str, str]:
    """md5 every file of ``folder``; return the sums when they are the canonical ones or recorded ones.

    ``vouched``: ``(archive, md5)`` when ``folder`` was just extracted from that archive, whose
    md5 matched the one asked for; its sums are then accepted and recorded for later loads.
    """
    sums = {name: md5_file(folder / name) for name in spec.files}
    canonical = dict(FILE_MD5[spec.name])
    if sums == canonical:
        return sums
    if vouched is not None:
        _write_record(folder, sums, *vouched)
        return sums
    record = _read_record(folder)
    if record is not None and record == sums:
        return sums
    reference = canonical if record is None else record
    name = next(n for n in spec.files if sums[n] != reference.get(n))
    expected = f"{canonical[name]} (canonical)"
    if record is not None:
        expected += f" or {record.get(name)} (recorded when tspike_lab extracted it)"
    raise DataIntegrityError(
        f"CIFAR file {str(folder / name)!r} is damaged or not the {spec.label} file: md5 is {sums[name]}, expected "
        f"{expected}; delete the folder {str(folder)!r} and load again to extract or download it afresh"
    )


# --------------------------------------------------------------------------- locating


def _is_cifar_folder(path: Path, spec: CifarSpec) -> bool:
    return path.is_dir() and all((path / f).is_file() for f in spec.files)


def _unavailable(spec: CifarSpec, md5: str, folder: Path, reason: str) -> DataUnavailableError:
    return DataUnavailableError(
        f"{spec.label} is not on disk and could not be downloaded ({reason}). "
        f"Fetch {spec.url} by hand (file {spec.filename}, md5 {md5}) and put it in {folder}, "
        f"or pass root= pointing at that archive or at an extracted {spec.folder}/ folder."
    )


def _writable_dir(path: Path) -> bool:
    return path.is_dir() and os.access(path, os.W_OK | os.X_OK)


def _extract(archive: Path, dest: Path, spec: CifarSpec) -> Path:
    logger.info("extracting %s into %s", archive, dest)
    try:
        return extract_atomically(archive, dest, spec.folder)
    except OSError as exc:
        raise DataUnavailableError(
            f"{spec.label} archive {str(archive)!r} cannot be extracted into {str(dest)!r} ({exc}); make that "
            f"folder writable, or extract the archive by hand and pass root= the extracted {spec.folder}/ folder"
        ) from None


def _locate(spec: CifarSpec, root: str | os.PathLike | None, download: bool, md5: str):
    """Return ``(folder, vouched)``: the extracted folder, and ``(archive, md5)`` when it was just extracted."""
    if root is not None and archive_kind(root) is not None:
        archive = Path(root).expanduser()
        if archive.exists() and not archive.is_file():
            raise ConfigError(
                f"root {os.fspath(root)!r} is not a regular file; give the path of {spec.filename}",
                field="root",
                value=os.fspath(root),
                allowed="an archive file or a folder",
            )
        if not archive.is_file():
            raise DataUnavailableError(
                f"root {os.fspath(root)!r} names an archive that does not exist; give the path of "
                f"{spec.filename} (md5 {md5}), or its folder to download it there"
            )
        check_md5(archive, md5)  # always: a folder beside it must not hide a damaged or other archive
        for candidate in (archive.parent / spec.folder, cache_dir() / spec.folder):
            if _is_cifar_folder(candidate, spec):
                return candidate, None
        dest = archive.parent if _writable_dir(archive.parent) else cache_dir()
        return _extract(archive, dest, spec), (archive, md5)
    base = cache_dir(root)
    if base.exists() and not base.is_dir():
        raise ConfigError(
            f"root {str(base)!r} is a file, not an archive tspike_lab can read (.tar.gz, .tgz, .tar, .tar.xz, .zip); "
            f"give the folder that holds {spec.folder}/ or {spec.filename}, or the archive itself",
            field="root",
            value=os.fspath(base),
            allowed="a folder or a CIFAR archive",
        )
    for candidate in (base, base / spec.folder):
        if _is_cifar_folder(candidate, spec):
            return candidate, None
    archive = base / spec.filename
    if not archive.is_file():
        if not download:
            raise _unavailable(spec, md5, base, "download=False")
        logger.info("downloading %s to %s", spec.url, archive)
        try:
            sources._download(spec.url, archive, md5=md5)
        except OSError as exc:  # URLError, HTTPError, timeouts, unwritable folder
            raise _unavailable(spec, md5, base, f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}") from None
    else:
        check_md5(archive, md5)
    return _extract(archive, base, spec), (archive, md5)


def layout(name: str, root: str | os.PathLike) -> str:
    """What a CIFAR ``root`` holds, from names only: "cifar" (python batches or archive) or "imagefolder".

    "imagefolder" is ``train/<class>/`` and ``test/<class>/`` images as a folder or an archive
    (e.g. a JPEG copy). Reads no pixels (lists at most four archive members).

    Raises:
        ConfigError: ``root`` is neither.
    """
    spec = CIFAR[name]
    root = Path(root).expanduser()
    if root.is_dir():
        if (
            root.name == spec.folder
            or (root / spec.folder).is_dir()
            or (root / spec.filename).is_file()
            or (root / spec.train[0]).is_file()
        ):
            return "cifar"
        if (root / "train").is_dir() and (root / "test").is_dir():
            return "imagefolder"
        nested = [p for p in root.iterdir() if p.is_dir() and (p / "train").is_dir() and (p / "test").is_dir()]
        if len(nested) == 1:
            return "imagefolder"
    elif root.is_file():
        if root.name == spec.filename:
            return "cifar"
        if archive_kind(root) is not None:
            names = first_names(root, 4)
            return "cifar" if any(n.startswith(spec.folder + "/") for n in names) else "imagefolder"
    raise ConfigError(
        f"data_dir {str(root)!r} is neither a CIFAR layout ({spec.folder}/, {spec.filename}) nor an image folder "
        f"(train/<class>/<image> and test/<class>/<image>, as a folder or an archive)",
        field="data_dir",
        value=str(root),
        allowed=f"{spec.folder}/, {spec.filename} or an image folder",
    )


# --------------------------------------------------------------------------- loading


def _load(name: str, root: str | os.PathLike | None, download: bool, md5: str | None) -> DataSource:
    spec = CIFAR[name]
    if md5 is None:
        md5 = CIFAR10_MD5 if name == "cifar10" else CIFAR100_MD5
    elif not (isinstance(md5, str) and len(md5) == 32 and all(c in "0123456789abcdefABCDEF" for c in md5)):
        raise ConfigError(
            f"md5 must be a 32-digit hex string, got {md5!r}", field="md5", value=md5, allowed="a 32-digit hex string"
        )
    folder, vouched = _locate(spec, root, download, md5)
    sums = _verify(folder, spec, vouched)
    classes = _class_names(read_batch(folder / spec.meta), folder / spec.meta, spec)

    def read(files: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        arrays = [_batch_arrays(read_batch(folder / f), folder / f, spec) for f in files]
        return (
            torch.from_numpy(np.concatenate([x for x, _ in arrays])),
            torch.from_numpy(np.concatenate([y for _, y in arrays])),
        )

    train_x, train_y = read(spec.train)
    test_x, test_y = read(spec.test)
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
        fingerprint=checksum_fingerprint(name, sums),
    )


def load_cifar10(root: str | os.PathLike | None, download: bool, md5: str | None = None) -> DataSource:
    """CIFAR-10 from the canonical python archive (``md5``: the archive's, default the canonical one)."""
    return _load("cifar10", root, download, md5)


def load_cifar100(root: str | os.PathLike | None, download: bool, md5: str | None = None) -> DataSource:
    """CIFAR-100 (fine labels) from the canonical python archive (``md5``: the archive's)."""
    return _load("cifar100", root, download, md5)
