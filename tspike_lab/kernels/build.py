"""Compile small C libraries with the system compiler and load them only from folders this user owns.

A compiled library is cached in the first usable folder of:

1. ``$TSPIKE_KERNEL_CACHE``, default ``$XDG_CACHE_HOME/tspike_lab/kernels`` (``~/.cache/...``);
2. ``<tempdir>/tspike_lab-kernels-<uid>``, a predictable name any user could create first.

A folder is usable only if it is a directory (not a symlink) owned by the current user and not
writable by group or others; an absent one is created 0700. Every library written there gets a
sidecar ``<name>.sha256`` holding the hash of its bytes, and a cached library is loaded only if
it is a regular file of ours that no one else can write and that matches its sidecar; anything
else is rebuilt over. Where no folder is usable, the library is built in a fresh private folder
(``tempfile.mkdtemp``), loaded, and the folder removed. Only the folder itself is checked, not its
parents: a cache under a parent that others can rename is not protected.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = [
    "KernelUnavailable",
    "cache_folders",
    "folder_problem",
    "library_problem",
    "cpu_id",
    "find_compiler",
    "library_key",
    "compile_library",
    "load_library",
]

log = logging.getLogger(__name__)


class KernelUnavailable(RuntimeError):
    """A C kernel could not be built or loaded on this machine."""


def folder_problem(folder: Path) -> str | None:
    """None if ``folder`` is a directory of ours that no one else can write, else what is wrong with it."""
    try:
        st = os.lstat(folder)
    except OSError as e:
        return f"{folder} cannot be read: {e}"
    if stat.S_ISLNK(st.st_mode):
        return f"{folder} is a symlink"
    if not stat.S_ISDIR(st.st_mode):
        return f"{folder} is not a directory"
    if st.st_uid != os.getuid():
        return f"{folder} is owned by uid {st.st_uid}, not by this user (uid {os.getuid()})"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"{folder} is writable by group or others (mode {stat.S_IMODE(st.st_mode):o})"
    return None


def _private_folder(folder: Path) -> str | None:
    """Create ``folder`` 0700 where absent; None if it is usable, else why not."""
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        folder.mkdir(mode=0o700)
    except FileExistsError:
        pass
    except OSError as e:
        return f"{folder} cannot be created: {e}"
    return folder_problem(folder)


def _candidates() -> list[Path]:
    root = os.environ.get("TSPIKE_KERNEL_CACHE")
    if not root:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(base, "tspike_lab", "kernels")
    return [Path(root), Path(tempfile.gettempdir()) / f"tspike_lab-kernels-{os.getuid()}"]


def cache_folders(problems: list[str] | None = None) -> list[Path]:
    """The usable cache folders, in order of preference (created where absent).

    Args:
        problems: if given, why each refused folder was refused is appended to it.
    """
    if not hasattr(os, "getuid"):
        if problems is not None:
            problems.append("folder ownership cannot be checked on this platform")
        return []
    usable = []
    for folder in _candidates():
        problem = _private_folder(folder)
        if problem is None:
            usable.append(folder)
        else:
            log.info("kernel cache folder refused: %s", problem)
            if problems is not None:
                problems.append(problem)
    return usable


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def library_problem(path: Path) -> str | None:
    """None if ``path`` is a library we wrote (ours, no one else can write it, equal to its sidecar hash)."""
    try:
        st = os.lstat(path)
        expected = _sidecar(path).read_text().strip()
    except OSError as e:
        return f"{path} or its sidecar cannot be read: {e}"
    if not stat.S_ISREG(st.st_mode):
        return f"{path} is not a regular file"
    if st.st_uid != os.getuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"{path} is not ours alone (uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):o})"
    if _digest(path) != expected:
        return f"{path} does not match its sidecar hash"
    return None


def cpu_id() -> str:
    """The CPU's model and flags (part of a cache key: -march=native builds for this CPU)."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = [ln for ln in f if ln.startswith(("model name", "flags"))][:2]
        return "".join(lines)
    except OSError:
        return platform.processor() or platform.machine()


def find_compiler() -> tuple[str, str]:
    """``(cc, its --version output)``: ``$CC``, else the first of cc, gcc, clang on the PATH."""
    if platform.system() == "Windows":
        raise KernelUnavailable("the C kernels are built for Linux/macOS only")
    cc = os.environ.get("CC")
    if cc and shutil.which(cc) is None:
        raise KernelUnavailable(f"the C compiler CC={cc!r} is not found")
    cc = cc or next((c for c in ("cc", "gcc", "clang") if shutil.which(c)), None)
    if cc is None:
        raise KernelUnavailable("no C compiler found (tried cc, gcc, clang; set CC)")
    try:
        version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as e:
        raise KernelUnavailable(f"C compiler {cc!r} does not run: {e}") from e
    return cc, version


def library_key(sources: Mapping[str, bytes], flags: Sequence[str], compiler_version: str) -> str:
    """16 hex digits naming one build: every source file's name and content, the flags, the compiler, the CPU."""
    h = hashlib.sha256()
    for name, text in sources.items():
        h.update(name.encode() + b"\0" + hashlib.sha256(text).digest())
    h.update("\0".join([*flags, compiler_version, cpu_id()]).encode())
    return h.hexdigest()[:16]


def compile_library(cc: str, flags: Sequence[str], sources: Mapping[str, bytes], out: Path) -> None:
    """Compile ``sources`` (the first is the translation unit, the others files it includes) into ``out``
    and write its sidecar hash; both are published with atomic renames."""
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        for name, text in sources.items():
            (Path(tmp) / name).write_bytes(text)
        so = Path(tmp) / out.name
        main = Path(tmp) / next(iter(sources))
        proc = subprocess.run(
            [cc, *flags, str(main), "-o", str(so), "-lm"], capture_output=True, text=True, timeout=300
        )
        if proc.returncode != 0:
            raise KernelUnavailable(f"{cc} failed ({' '.join(flags)}): {proc.stderr.strip()[-2000:]}")
        so.chmod(0o755)  # whatever the umask: a group-writable library would be refused
        sidecar = Path(tmp) / _sidecar(out).name
        sidecar.write_text(_digest(so) + "\n")
        os.replace(so, out)  # a concurrent builder may publish between these two: the loader then
        os.replace(sidecar, _sidecar(out))  # sees a mismatch and rebuilds, never loads unchecked


def _open(path: Path) -> ctypes.CDLL:
    return ctypes.CDLL(str(path))


def _load_cached(cc: str, flags: Sequence[str], sources: Mapping[str, bytes], path: Path) -> ctypes.CDLL:
    problem = library_problem(path) if path.exists() else "absent"
    if problem is not None:
        if problem != "absent":
            log.info("rebuilding the kernel library: %s", problem)
        compile_library(cc, flags, sources, path)
        problem = library_problem(path)
        if problem is not None:
            raise KernelUnavailable(f"the library just built fails its check: {problem}")
    return _open(path)


def load_library(prefix: str, sources: Mapping[str, bytes], flag_sets: Sequence[Sequence[str]]) -> ctypes.CDLL:
    """Build (once per machine) and load ``sources``: the first of ``flag_sets`` that compiles.

    Raises :class:`KernelUnavailable` naming every failure.
    """
    cc, version = find_compiler()
    errors: list[str] = []
    folders = cache_folders(errors)
    for flags in flag_sets:
        name = f"{prefix}_{library_key(sources, flags, version)}.so"
        for folder in [*folders, None]:
            private = folder is None
            if private:
                folder = Path(tempfile.mkdtemp(prefix="tspike_lab-kernels-"))  # 0700, ours, fresh
            try:
                return _load_cached(cc, flags, sources, folder / name)  # a mapping outlives its file
            except (KernelUnavailable, subprocess.SubprocessError) as e:
                errors.append(str(e))
                break  # the compiler refused these flags: the next set, not the next folder
            except OSError as e:
                errors.append(str(e))  # this folder: unwritable, full, or a library that does not open
            finally:
                if private:
                    shutil.rmtree(folder, ignore_errors=True)
    raise KernelUnavailable("; ".join(errors))
