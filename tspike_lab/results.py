"""Run folders, JSON results written atomically, environment capture, mean ± std.

Every result should say how many runs, mean ± std, the hardware and the code version:
``environment()`` gives the last two, ``mean_std`` the first.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import secrets
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any, BinaryIO

import torch

from .errors import RunFolderError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks
    fcntl = None

__all__ = [
    "new_run_dir",
    "environment",
    "atomic_write",
    "write_text_atomic",
    "write_json_atomic",
    "fsync_dir",
    "read_jsonl",
    "mean_std",
    "json_safe",
    "SpecialFileError",
    "open_regular",
    "read_regular",
    "file_kind",
    "lock_folder",
]

logger = logging.getLogger(__name__)


class SpecialFileError(OSError):
    """A path that is not a regular file (a FIFO, socket, device or folder), or a file above a size cap.

    An OSError, so code that handles unreadable files handles these too; the message names the path.
    """


def file_kind(mode: int) -> str:
    """What ``st_mode`` describes, in words: "regular file", "FIFO", "socket", "folder", ..."""
    for test, name in (
        (stat.S_ISREG, "regular file"),
        (stat.S_ISDIR, "folder"),
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISLNK, "symbolic link"),
    ):
        if test(mode):
            return name
    return "special file"


def open_regular(
    path: str | os.PathLike, mode: str = "rb", *, max_bytes: int | None = None, encoding: str | None = None
):
    """Open ``path`` for reading if it is a regular file (symlinks followed; a loop fails), never blocking.

    The file is opened with ``O_NONBLOCK`` and checked with ``fstat`` on the open descriptor, so a
    FIFO, socket or device named like a data file is refused at once instead of blocking or
    streaming forever; the check and the read see the same file.

    Args:
        path: the file.
        mode: "rb" or "r" (text, ``encoding`` default UTF-8).
        max_bytes: refuse a file larger than this (None: any size).

    Raises:
        SpecialFileError: not a regular file, or larger than ``max_bytes``.
        OSError: missing, unreadable, a symlink loop.
    """
    if mode not in ("rb", "r"):
        raise ValueError(f"mode must be 'rb' or 'r', got {mode!r}")
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise SpecialFileError(f"{os.fspath(path)!r} is a {file_kind(st.st_mode)}, not a regular file")
        if max_bytes is not None and st.st_size > max_bytes:
            raise SpecialFileError(
                f"{os.fspath(path)!r} holds {st.st_size} bytes, more than the {max_bytes} allowed for it"
            )
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        if mode == "r":
            return os.fdopen(fd, "r", encoding=encoding or "utf-8")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: str | os.PathLike, max_bytes: int | None = None) -> bytes:
    """The bytes of a regular file (:func:`open_regular`), at most ``max_bytes`` even if it grows meanwhile."""
    with open_regular(path, "rb", max_bytes=max_bytes) as f:
        data = f.read() if max_bytes is None else f.read(max_bytes + 1)
    if max_bytes is not None and len(data) > max_bytes:
        raise SpecialFileError(f"{os.fspath(path)!r} holds more than the {max_bytes} bytes allowed for it")
    return data


def new_run_dir(out_dir: str | os.PathLike, name: str = "run", *, attempts: int = 100) -> Path:
    """Create and return a new, empty folder ``out_dir/<name>-<YYYYmmdd-HHMMSS>-<6 hex>``.

    The folder is made with ``exist_ok=False``, so two runs never share one; a collision
    (same second, same random suffix) retries with a fresh suffix.

    Args:
        out_dir: parent folder (created if missing).
        name: prefix naming the experiment; no path separators.
        attempts: collisions tolerated before giving up.
    Returns:
        The new folder's path.

    Raises:
        RunFolderError: ``out_dir`` is a file, or cannot be created or written.
    """
    name = str(name)
    if not name or os.sep in name or (os.altsep and os.altsep in name) or name in (".", ".."):
        raise ValueError(f"name must be a non-empty folder name without path separators, got {name!r}")
    parent = Path(out_dir)
    if parent.exists() and not parent.is_dir():
        raise RunFolderError(
            f"{str(parent)!r} is a file, not a folder; give the folder to create run folders in "
            f"(it is created if missing)"
        )
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunFolderError(f"cannot create run folders in {str(parent)!r}: {exc.strerror or exc}") from None
    for _ in range(attempts):
        path = parent / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
        try:
            os.makedirs(path, exist_ok=False)
        except FileExistsError:
            continue
        except OSError as exc:
            raise RunFolderError(f"cannot create a run folder in {str(parent)!r}: {exc.strerror or exc}") from None
        return path
    raise FileExistsError(f"could not create a unique run folder under {parent} after {attempts} attempts")


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def _version(module: str) -> str | None:
    try:
        return __import__(module).__version__
    except Exception:  # not installed, or broken on import: report as missing
        return None


def environment() -> dict[str, Any]:
    """Where and with what code a result was computed.

    Returns:
        A JSON-serializable dict: ``python``, ``platform``, ``cpu_count``, ``torch``,
        ``snntorch``, ``numpy``, ``tspike_lab`` versions, ``cuda_available``, ``cuda_version``,
        ``device_name`` (GPU name or CPU architecture), ``gpu_count``, ``git_commit`` and
        ``git_dirty`` (None where the package is not inside a git work tree).
    """
    cuda = torch.cuda.is_available()
    repo = Path(__file__).resolve().parent.parent
    commit = _git(["rev-parse", "HEAD"], repo)
    status = _git(["status", "--porcelain"], repo) if commit is not None else None
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "snntorch": _version("snntorch"),
        "numpy": _version("numpy"),
        "tspike_lab": _version("tspike_lab"),
        "cuda_available": cuda,
        "cuda_version": torch.version.cuda,
        "gpu_count": torch.cuda.device_count() if cuda else 0,
        "device_name": torch.cuda.get_device_name(0) if cuda else (platform.processor() or platform.machine()),
        "git_commit": commit.strip() if commit else None,
        "git_dirty": bool(status.strip()) if status is not None else None,
        "argv": list(sys.argv),
    }


def fsync_dir(path: str | os.PathLike) -> None:
    """Flush a folder's entries (a rename into it) to disk; a no-op where folders cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open folders
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def lock_folder(folder: str | os.PathLike) -> IO[str]:
    """Hold an exclusive lock on ``folder/.lock`` (``fcntl.flock``) until the returned file is closed.

    Never waits: a lock held by another process raises BlockingIOError at once. Where locks do
    not exist (Windows; a file system without them, with a warning logged) the file is returned
    unlocked: the folder is then not guarded against a second process.

    Raises:
        BlockingIOError: another process holds the lock.
        OSError: ``.lock`` cannot be opened.
    """
    f = open(Path(folder) / ".lock", "a+")
    if fcntl is None:
        return f
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise
    except OSError as exc:  # a file system without locks: carry on unguarded
        logger.warning("cannot lock %s (%s); not guarding against a concurrent process", folder, exc)
    return f


def _umask() -> int:
    """The process umask, read without changing it (``os.umask`` would, for every thread)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # no /proc (macOS, Windows, old kernels): read by setting it back at once
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, data: bytes | str | Callable[[BinaryIO], Any]) -> Path:
    """Write ``path`` so that a reader sees the old file or the whole new one, never a torn one.

    The content goes to a temp file in the same folder, which is fsynced, renamed over ``path``
    (``os.replace``), and the folder fsynced. The file gets the mode a plain ``open`` would give
    (0o666 less the umask), not ``mkstemp``'s 0o600. On any error the temp file is removed and
    ``path`` is left as it was.

    Args:
        path: the file to write; its folder is created when missing.
        data: bytes, str (written as UTF-8), or a callable that writes into a binary file
            object, e.g. ``lambda f: torch.save(obj, f)``.

    Returns:
        ``path`` as a Path.
    """
    if not (isinstance(data, (bytes, bytearray, memoryview, str)) or callable(data)):
        raise TypeError(f"data must be bytes, str or a callable writing into a binary file, got {type(data).__name__}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if isinstance(data, str):
                f.write(data.encode("utf-8"))
            elif callable(data):
                data(f)
            else:
                f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically: :func:`atomic_write` of a str."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    return atomic_write(path, text)


def write_json_atomic(path: str | os.PathLike, obj: Any, *, indent: int | None = 2) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically: a reader sees the old file or the new one.

    Non-finite floats are written as ``NaN``/``Infinity`` (Python's json dialect).
    """
    return write_text_atomic(path, json.dumps(obj, indent=indent, sort_keys=False) + "\n")


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read a JSON-lines file (e.g. ``metrics.jsonl``); a torn last line is ignored.

    Regular files only (:func:`open_regular`): a FIFO of that name raises SpecialFileError, never blocks.
    """
    rows = []
    with open_regular(path, "r") as f:
        lines = f.read().splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break
            raise
    return rows


def json_safe(obj: Any) -> Any:
    """``obj`` with every non-finite float (NaN, inf) replaced by None, recursively: strict JSON readers accept it."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def mean_std(values: Iterable[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1) of repeated runs.

    With one value the spread is unknown, so std is NaN (not 0, which would claim
    certainty). An empty input raises ValueError.

    Returns:
        ``(mean, std)`` as floats.
    """
    xs = [float(v) for v in values]
    if not xs:
        raise ValueError("mean_std needs at least one value, got none")
    mean = math.fsum(xs) / len(xs)
    if len(xs) == 1:
        return mean, math.nan
    var = math.fsum((x - mean) ** 2 for x in xs) / (len(xs) - 1)
    return mean, math.sqrt(var)
