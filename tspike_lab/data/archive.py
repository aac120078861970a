"""Archive helpers: md5 checks, atomic downloads, safe extraction and member reading."""

from __future__ import annotations

import gzip
import hashlib
import logging
import lzma
import os
import posixpath
import shutil
import stat
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath

from ..errors import DataIntegrityError
from ..results import SpecialFileError, atomic_write, file_kind, open_regular

logger = logging.getLogger(__name__)

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
ZIP_SUFFIXES = (".zip",)
# What reading a truncated or damaged archive raises (a failed write raises a plain OSError instead).
_DAMAGED = (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, lzma.LZMAError, gzip.BadGzipFile)


def _damaged(archive: str, exc: BaseException) -> DataIntegrityError:
    return DataIntegrityError(
        f"archive {archive!r} is truncated or damaged ({type(exc).__name__}: {exc}); delete it and fetch it again"
    )


def archive_kind(path: str | os.PathLike) -> str | None:
    """Return ``"tar"``, ``"zip"`` or None from a file name's suffix.

    Args:
        path: file name or path.

    Returns:
        The archive kind, or None when the name has no known archive suffix.
    """
    name = os.fspath(path).lower()
    if name.endswith(ZIP_SUFFIXES):
        return "zip"
    if name.endswith(TAR_SUFFIXES):
        return "tar"
    return None


def md5_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Return the hex md5 digest of a file, read in chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with open_regular(path, "rb") as f:  # a FIFO or device is refused, never read forever
        for block in iter(lambda: f.read(chunk_size), b""):
            digest.update(block)
    return digest.hexdigest()


def check_md5(path: str | os.PathLike, expected: str) -> None:
    """Raise DataIntegrityError naming the file and both digests when ``path``'s md5 is not ``expected``."""
    actual = md5_file(path)
    if actual != expected.lower():
        raise DataIntegrityError(
            f"archive {os.fspath(path)!r} is corrupted or not the expected file: md5 is {actual}, "
            f"expected {expected.lower()}; delete it and download it again"
        )


def download(url: str, dest: str | os.PathLike, md5: str | None = None, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` through a temporary file, check its md5, then rename it into place.

    Args:
        url: address to fetch.
        dest: final file path; its folder is created when missing.
        md5: expected hex digest, or None to skip the check.
        timeout: socket timeout in seconds.

    Returns:
        ``dest`` as a Path.

    Raises:
        OSError / urllib.error.URLError: on network failure (callers turn it into DataUnavailableError).
        DataIntegrityError: when the downloaded file's md5 differs from ``md5``.
    """
    dest = Path(dest)

    def fetch(out) -> None:
        digest = hashlib.md5(usedforsecurity=False)
        total = 0
        with urllib.request.urlopen(url, timeout=timeout) as response:
            for block in iter(lambda: response.read(1 << 20), b""):
                out.write(block)
                digest.update(block)
                total += len(block)
        logger.info("downloaded %s (%d bytes)", url, total)
        if md5 is not None and digest.hexdigest() != md5.lower():
            raise DataIntegrityError(
                f"download of {url} gave a file whose md5 is {digest.hexdigest()}, expected {md5.lower()} "
                f"(file {dest.name!r}); try again or fetch it by hand"
            )

    return atomic_write(dest, fetch)  # a failed or wrong download leaves no file behind


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _check_name(name: str, archive: str) -> PurePosixPath:
    """Reject absolute names and ``..`` components; return the normalized relative path."""
    if not name:
        raise DataIntegrityError(f"archive {archive!r} has a member with an empty name; refusing to extract")
    unix = name.replace("\\", "/")
    if unix.startswith("/") or (len(unix) > 1 and unix[1] == ":"):
        raise DataIntegrityError(f"archive {archive!r} member {name!r} has an absolute path; refusing to extract")
    parts = PurePosixPath(unix).parts
    if ".." in parts:
        raise DataIntegrityError(f"archive {archive!r} member {name!r} has a '..' component; refusing to extract")
    return PurePosixPath(*[p for p in parts if p != "."]) if parts else PurePosixPath(".")


def _check_target(rel: PurePosixPath, dest: str, name: str, archive: str) -> None:
    target = os.path.realpath(os.path.join(dest, *rel.parts))
    if not _inside(target, dest):
        raise DataIntegrityError(
            f"archive {archive!r} member {name!r} would be written outside {dest!r}; refusing to extract"
        )


def _check_link(link: str, base: str, dest: str, name: str, archive: str) -> None:
    """Reject a link target that is absolute or resolves outside ``dest`` (``base`` is where it is resolved)."""
    if not link or link.startswith("/") or os.path.isabs(link):
        raise DataIntegrityError(
            f"archive {archive!r} member {name!r} is a link to {link!r}, outside the destination; refusing to extract"
        )
    resolved = os.path.realpath(os.path.join(dest, base, link))
    if not _inside(resolved, dest):
        raise DataIntegrityError(
            f"archive {archive!r} member {name!r} is a link to {link!r}, outside the destination; refusing to extract"
        )


def safe_extract(archive_path: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Extract a tar (any compression) or zip archive into ``dest``, refusing unsafe members.

    Every member is checked before anything is written: absolute paths, ``..`` components,
    symbolic or hard links that resolve outside ``dest``, links that point at or through another
    link of the archive (a link chain), members that lie under a link or share a link's name,
    and device or fifo files raise DataIntegrityError naming the member, as does a truncated or
    damaged archive. These checks alone make extraction safe on every Python tspike_lab admits;
    tar archives are also extracted with the standard library's ``data`` filter where it exists.

    Args:
        archive_path: a ``.tar``, ``.tar.gz``/``.tgz``, ``.tar.bz2``, ``.tar.xz`` or ``.zip`` file.
        dest: destination folder (created when missing).

    Returns:
        ``dest`` as a Path.
    """
    archive = os.fspath(archive_path)
    _check_archive_file(archive)
    dest_path = Path(dest)
    dest_path.mkdir(parents=True, exist_ok=True)
    try:
        _safe_extract(archive, os.path.realpath(dest_path))
    except _DAMAGED as exc:
        raise _damaged(archive, exc) from None
    return dest_path


def _check_archive_file(archive: str) -> None:
    """Raise DataIntegrityError unless ``archive`` is a regular file (a FIFO would block every reader)."""
    try:
        mode = os.stat(archive).st_mode
    except OSError as exc:
        raise DataIntegrityError(f"archive {archive!r} cannot be read: {exc.strerror or exc}") from None
    if not stat.S_ISREG(mode):
        raise DataIntegrityError(f"archive {archive!r} is a {file_kind(mode)}, not a regular file; refusing to read it")


def _check_links(members: list[tuple[PurePosixPath, str, str | None, bool]], archive: str) -> None:
    """Refuse link chains: ``members`` are (normalized path, original name, link target or None, is a symlink).

    A link target is walked component by component (relative to the link's folder for a
    symbolic link, to the root for a hard link): it must stay inside the root and never pass
    through, or end at, another link of the archive. No member may lie under a link, nor share
    its name with a link.
    """
    links = {str(rel): name for rel, name, target, _ in members if target is not None}
    seen: dict[str, int] = {}
    for rel, *_ in members:
        seen[str(rel)] = seen.get(str(rel), 0) + 1
    for rel, name, target, symbolic in members:
        for parent in rel.parents:
            if str(parent) in links:
                raise DataIntegrityError(
                    f"archive {archive!r} member {name!r} lies under the link {links[str(parent)]!r}; "
                    f"refusing to extract (a link chain)"
                )
        if str(rel) in links and seen[str(rel)] > 1:
            raise DataIntegrityError(
                f"archive {archive!r} has the link {name!r} and another member of the same name; refusing to extract"
            )
        if target is None:
            continue
        stack = list(rel.parent.parts) if symbolic else []  # a hard link's target is relative to the root
        for part in target.replace("\\", "/").split("/"):
            if part in ("", "."):
                continue
            if part == "..":
                if not stack:
                    raise DataIntegrityError(
                        f"archive {archive!r} member {name!r} is a link to {target!r}, outside the "
                        f"destination; refusing to extract"
                    )
                stack.pop()
                continue
            stack.append(part)
            if "/".join(stack) in links:
                raise DataIntegrityError(
                    f"archive {archive!r} member {name!r} is a link to {target!r}, through the "
                    f"link {links['/'.join(stack)]!r}; refusing to extract (a link chain)"
                )


def _safe_extract(archive: str, root: str) -> None:
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            for info in infos:
                rel = _check_name(info.filename, archive)
                mode = info.external_attr >> 16
                if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
                    raise DataIntegrityError(
                        f"archive {archive!r} member {info.filename!r} is a device or special file; refusing to extract"
                    )
                if stat.S_ISLNK(mode):
                    link = zf.read(info).decode("utf-8", "replace")
                    _check_link(link, posixpath.dirname(str(rel)), root, info.filename, archive)
                _check_target(rel, root, info.filename, archive)
            # zipfile writes symlink members as small regular files, never as links.
            zf.extractall(root, members=infos)
        return
    try:
        tf = tarfile.open(archive, "r:*")
    except _DAMAGED as exc:
        raise DataIntegrityError(
            f"archive_path {archive!r} is neither a zip nor a readable tar archive (truncated or damaged?): {exc}"
        ) from None
    with tf:
        members = tf.getmembers()
        checked: list[tuple[PurePosixPath, str, str | None, bool]] = []
        for m in members:
            rel = _check_name(m.name, archive)
            if m.isdev() or not (m.isfile() or m.isdir() or m.issym() or m.islnk()):
                raise DataIntegrityError(
                    f"archive {archive!r} member {m.name!r} is a device or special file; refusing to extract"
                )
            if m.issym():
                _check_link(m.linkname, posixpath.dirname(str(rel)), root, m.name, archive)
            elif m.islnk():
                _check_link(m.linkname, "", root, m.name, archive)
            _check_target(rel, root, m.name, archive)
            checked.append((rel, m.name, m.linkname if (m.issym() or m.islnk()) else None, m.issym()))
        _check_links(checked, archive)
        if hasattr(tarfile, "data_filter"):
            tf.extractall(root, members=members, filter="data")
        else:  # Python without extraction filters (3.10.0-3.10.11, 3.11.0-3.11.3): the checks above, and what
            # the data filter also does: no setuid/setgid/sticky or group/other write bits, no change of owner
            for m in members:
                if m.mode is not None:
                    m.mode &= 0o755
            tf.chown = lambda *args, **kwargs: None
            tf.extractall(root, members=members)


def extract_atomically(archive_path: str | os.PathLike, dest: str | os.PathLike, folder: str) -> Path:
    """Safely extract an archive whose content is one top folder ``folder`` into ``dest/folder``.

    Extraction goes to a temporary folder inside ``dest`` and is renamed in place at the end,
    so an interrupted extraction never leaves a half-filled ``dest/folder``.

    Returns:
        The path of ``dest/folder``.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    final = dest / folder
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder}.", dir=dest))
    try:
        safe_extract(archive_path, tmp)
        if not (tmp / folder).is_dir():
            raise DataIntegrityError(
                f"archive {os.fspath(archive_path)!r} does not contain the expected top folder {folder!r}"
            )
        try:
            os.replace(tmp / folder, final)
        except OSError:
            if not final.is_dir():
                raise
            logger.info("%s was extracted concurrently by another process; using it", final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def iter_files(
    source: str | os.PathLike, accept: Callable[[str], bool] | None = None, max_bytes: int | None = None
) -> Iterator[tuple[str, bytes]]:
    """Yield ``(relative posix path, bytes)`` for each regular file of a folder, tar or zip archive.

    Archives are read member by member without extracting anything; links, devices
    and names with ``..`` or absolute paths are skipped. A truncated or damaged archive
    raises DataIntegrityError naming it.

    Args:
        source: a folder or an archive.
        accept: called with each relative path before its file is opened or its member read; a
            file it declines is never read (e.g. a 2 GiB README beside the images). None: all.
        max_bytes: the most bytes one accepted file may hold: a larger one (by its declared size,
            and by what reading yields) raises DataIntegrityError naming it and the cap.
    Raises:
        DataIntegrityError: a damaged archive, an accepted file above ``max_bytes``, or an accepted
            name in a folder that is not a regular file (a FIFO, device, socket) or cannot be read.
    """
    src = os.fspath(source)
    if os.path.isdir(src):
        yield from _iter_folder(src, accept, max_bytes)
        return
    _check_archive_file(src)
    try:
        yield from _iter_archive(src, accept, max_bytes)
    except _DAMAGED as exc:
        raise _damaged(src, exc) from None


def first_names(source: str | os.PathLike, n: int = 8) -> list[str]:
    """The first ``n`` file names (relative, posix) of a folder (sorted walk) or an archive (member order).

    Lists names only: a folder's files are not opened; an archive's members are not read.
    """
    src = os.fspath(source)
    names: list[str] = []
    if os.path.isdir(src):
        for dirpath, dirnames, filenames in os.walk(src):
            dirnames.sort()
            names.extend(os.path.relpath(os.path.join(dirpath, f), src).replace(os.sep, "/") for f in sorted(filenames))
            if len(names) >= n:
                break
        return names[:n]
    _check_archive_file(src)
    try:
        for rel in _iter_names(src):
            names.append(rel)
            if len(names) >= n:
                break
    except _DAMAGED as exc:
        raise _damaged(src, exc) from None
    return names


def _iter_names(src: str) -> Iterator[str]:
    """The relative paths of an archive's regular-file members, in member order, without reading their data."""
    for rel, _ in _iter_archive(src, accept=None, max_bytes=None, names_only=True):
        yield rel


def _too_large(where: str, size: int, max_bytes: int) -> DataIntegrityError:
    return DataIntegrityError(
        f"file {where!r} holds {size} bytes, more than the {max_bytes} allowed for one file "
        f"(max_bytes); refusing to read it"
    )


def _iter_folder(src: str, accept, max_bytes) -> Iterator[tuple[str, bytes]]:
    for dirpath, dirnames, filenames in os.walk(src):  # symlinked folders are not followed: no loops
        dirnames.sort()
        for fn in sorted(filenames):
            full = os.path.join(dirpath, fn)
            rel = os.path.relpath(full, src).replace(os.sep, "/")
            if accept is not None and not accept(rel):
                continue
            try:
                with open_regular(full, "rb") as f:
                    size = os.fstat(f.fileno()).st_size
                    if max_bytes is not None and size > max_bytes:
                        raise _too_large(full, size, max_bytes)
                    data = f.read() if max_bytes is None else f.read(max_bytes + 1)
            except SpecialFileError as exc:
                raise DataIntegrityError(f"{exc}; refusing to read it") from None
            except OSError as exc:
                raise DataIntegrityError(f"file {full!r} cannot be read: {exc.strerror or exc}") from None
            if max_bytes is not None and len(data) > max_bytes:
                raise _too_large(full, len(data), max_bytes)
            yield rel, data


def _iter_archive(src: str, accept, max_bytes, names_only: bool = False) -> Iterator[tuple[str, bytes]]:
    kind = archive_kind(src)
    if kind == "zip" or (kind is None and zipfile.is_zipfile(src)):
        with zipfile.ZipFile(src) as zf:
            for info in zf.infolist():
                mode = info.external_attr >> 16
                if info.is_dir() or stat.S_IFMT(mode) not in (0, stat.S_IFREG):  # links, devices: not data
                    continue
                try:
                    rel = _check_name(info.filename, src)
                except ValueError:
                    logger.warning("skipping unsafe member %r of %s", info.filename, src)
                    continue
                if names_only:
                    yield str(rel), b""
                    continue
                if accept is not None and not accept(str(rel)):
                    continue
                where = f"{src}:{info.filename}"
                if max_bytes is not None and info.file_size > max_bytes:
                    raise _too_large(where, info.file_size, max_bytes)
                with zf.open(info) as f:
                    data = f.read() if max_bytes is None else f.read(max_bytes + 1)
                if max_bytes is not None and len(data) > max_bytes:
                    raise _too_large(where, len(data), max_bytes)
                yield str(rel), data
        return
    with tarfile.open(src, "r:*") as tf:
        for m in tf:
            if not m.isfile():
                continue
            try:
                rel = _check_name(m.name, src)
            except ValueError:
                logger.warning("skipping unsafe member %r of %s", m.name, src)
                continue
            if names_only:
                yield str(rel), b""
                continue
            if accept is not None and not accept(str(rel)):
                continue
            if max_bytes is not None and m.size > max_bytes:
                raise _too_large(f"{src}:{m.name}", m.size, max_bytes)
            f = tf.extractfile(m)
            if f is not None:
                yield str(rel), f.read()
