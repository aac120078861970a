"""Crafted inputs against every surface: pickles that run code, damaged files, unsafe archives, a full disk,
decompression bombs, special files, crafted checkpoints and results records, bad environment variables, runs
that cannot fit, Ctrl-C.

Each test builds its own tiny synthetic files; none needs the real CIFAR data or the network. A test of
something that could hang runs under a deadline, so it fails instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import pickle
import shutil
import signal
import struct
import subprocess
import sys
import tarfile
import urllib.request
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from test_data import make_cifar_archive

from tspike_lab import cli, frontend, reproduce
from tspike_lab.data import DataIntegrityError, cifar, imagefolder, load, safe_extract
from tspike_lab.data.archive import iter_files
from tspike_lab.errors import CheckpointError, ConfigError, DataError, RecordError, ResourceError, RunFolderError


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """Every test gets its own empty cache folder through $TSPIKE_DATA, and no network."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("TSPIKE_DATA", str(cache))

    def no_network(*args, **kwargs):
        raise AssertionError("the network must not be touched")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    return cache


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _extracted_cifar(tmp_path: Path) -> Path:
    """A synthetic cifar-10-batches-py folder, extracted (and recorded) from its verified archive."""
    archive, md5, _ = make_cifar_archive(tmp_path)
    load("cifar10", root=archive, md5=md5)
    archive.unlink()
    return tmp_path / "cifar-10-batches-py"


def _accept_as_canonical(monkeypatch, folder: Path) -> None:
    """Make the folder's current files the canonical ones: only the restricted unpickler stands guard."""
    sums = {name: _md5(folder / name) for name in cifar.FILE_MD5["cifar10"]}
    monkeypatch.setattr(cifar, "FILE_MD5", {**cifar.FILE_MD5, "cifar10": sums})


# --------------------------------------------------------------------------- pickles that run code


class _Payload:
    """Unpickling this calls ``func(*args)``: what a crafted CIFAR batch would carry."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _payloads(marker: Path) -> dict[str, object]:
    import builtins

    return {
        "os.system": _Payload(os.system, f"touch {marker}"),
        "subprocess.call": _Payload(subprocess.call, ["touch", str(marker)]),
        "builtins.exec": _Payload(builtins.exec, f"open({str(marker)!r}, 'w').close()"),
        "builtins.eval": _Payload(builtins.eval, f"open({str(marker)!r}, 'w').close()"),
        "numpy.save": _Payload(np.save, str(marker), np.zeros(1)),
        "shutil.copy": _Payload(shutil.copy, __file__, str(marker)),
    }


def _batch_with(payload: object, n: int = 2) -> dict:
    """A batch that looks like CIFAR, with the payload hidden one level down."""
    return {
        b"batch_label": b"x",
        b"data": np.zeros((n, 3072), np.uint8),
        b"labels": [0] * n,
        b"filenames": [b"a.png", payload][:n],
    }


@pytest.mark.parametrize("name", sorted(_payloads(Path("m"))))
@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_a_crafted_batch_is_refused_by_the_restricted_unpickler_and_its_payload_never_runs(tmp_path, name, protocol):
    marker = tmp_path / "pwned"
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps(_batch_with(_payloads(marker)[name]), protocol=protocol))
    with pytest.raises(DataIntegrityError) as info:
        cifar.read_batch(path)
    message = str(info.value)
    assert str(path) in message and name.split(".")[-1] in message and "refusing" in message
    assert [p.name for p in tmp_path.iterdir()] == ["data_batch_1"]  # no marker (nor marker.npy) was written


def test_a_python2_style_pickle_asking_for_builtin_eval_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "test_batch"
    # protocol 0, as Python 2 wrote it: "__builtin__" is mapped to builtins on reading
    path.write_bytes(b"c__builtin__\neval\n(V__import__('os').system('touch " + str(marker).encode() + b"')\ntR.")
    with pytest.raises(DataIntegrityError, match=r"builtins\.eval"):
        cifar.read_batch(path)
    assert not marker.exists()


def test_a_malicious_batch_in_a_cifar_folder_is_stopped_by_its_md5_before_unpickling(tmp_path, monkeypatch):
    folder = _extracted_cifar(tmp_path)
    marker = tmp_path / "pwned"
    (folder / "data_batch_2").write_bytes(pickle.dumps(_batch_with(_Payload(os.system, f"touch {marker}")), 2))
    monkeypatch.setattr(cifar, "read_batch", _never("a file was unpickled before its md5 was checked"))
    with pytest.raises(DataIntegrityError) as info:
        load("cifar10", root=folder, download=False)
    message = str(info.value)
    assert str(folder / "data_batch_2") in message and _md5(folder / "data_batch_2") in message
    assert cifar.FILE_MD5["cifar10"]["data_batch_2"] in message  # the canonical sum it should have had
    assert not marker.exists()


def test_a_malicious_batch_whose_md5_is_accepted_is_still_refused_by_the_unpickler(tmp_path, monkeypatch):
    folder = _extracted_cifar(tmp_path)
    marker = tmp_path / "pwned"
    (folder / "test_batch").write_bytes(pickle.dumps(_batch_with(_Payload(os.system, f"touch {marker}")), 2))
    _accept_as_canonical(monkeypatch, folder)
    with pytest.raises(DataIntegrityError, match=r"test_batch.*posix\.system|test_batch.*os\.system"):
        load("cifar10", root=folder, download=False)
    assert not marker.exists()


def test_a_folder_handed_over_with_a_forged_checksum_record_beside_it_is_still_refused(tmp_path):
    archive, _, _ = make_cifar_archive(tmp_path)
    with tarfile.open(archive) as tf:
        tf.extractall(tmp_path / "handed-over", filter="data")  # not through tspike_lab: nothing recorded
    folder = tmp_path / "handed-over" / "cifar-10-batches-py"
    (folder / ".tspike-md5.json").write_text("{}")
    with pytest.raises(DataIntegrityError, match="batches.meta.*md5"):
        load("cifar10", root=folder, download=False)


def _never(message):
    def raiser(*args, **kwargs):
        raise AssertionError(message)

    return raiser


# --------------------------------------------------------------------------- damaged batch files


def test_a_truncated_batch_file_gives_a_data_integrity_error_naming_it(tmp_path):
    folder = _extracted_cifar(tmp_path)
    path = folder / "data_batch_3"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataIntegrityError) as info:
        load("cifar10", root=folder, download=False)
    assert str(path) in str(info.value) and "md5" in str(info.value)


@pytest.mark.parametrize("keep", [0, 1, 40, 3000])
def test_a_truncated_batch_that_passes_the_md5_check_is_reported_as_truncated_not_as_an_unpickling_error(
    tmp_path, monkeypatch, keep
):
    folder = _extracted_cifar(tmp_path)
    path = folder / "data_batch_1"
    path.write_bytes(path.read_bytes()[:keep])
    _accept_as_canonical(monkeypatch, folder)
    with pytest.raises(DataIntegrityError, match="truncated or damaged") as info:
        load("cifar10", root=folder, download=False)
    assert str(path) in str(info.value) and not isinstance(info.value, pickle.UnpicklingError)


def test_a_batch_file_with_one_flipped_byte_fails_its_md5_naming_both_sums(tmp_path):
    folder = _extracted_cifar(tmp_path)
    path = folder / "test_batch"
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(DataIntegrityError) as info:
        load("cifar10", root=folder, download=False)
    message = str(info.value)
    assert str(path) in message and _md5(path) in message and cifar.FILE_MD5["cifar10"]["test_batch"] in message
    assert "delete the folder" in message


def test_a_batch_holding_other_data_than_uint8_images_is_refused_naming_it(tmp_path, monkeypatch):
    folder = _extracted_cifar(tmp_path)
    path = folder / "data_batch_4"
    path.write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.float64), b"labels": [0, 1]}, protocol=2))
    _accept_as_canonical(monkeypatch, folder)
    with pytest.raises(DataIntegrityError, match=r"data_batch_4.*float64"):
        load("cifar10", root=folder, download=False)


# --------------------------------------------------------------------------- unsafe archives


def _cifar_tar_with(path: Path, extra: tarfile.TarInfo, data: bytes = b"x") -> tuple[Path, str]:
    """The synthetic CIFAR archive with one more member; returns (path, md5)."""
    (path.parent.parent / "src").mkdir()
    path.parent.mkdir()
    good, _, _ = make_cifar_archive(path.parent.parent / "src")
    with tarfile.open(good) as src, tarfile.open(path, "w:gz") as dst:
        for m in src.getmembers():
            dst.addfile(m, src.extractfile(m))
        if extra.isfile():
            extra.size = len(data)
            dst.addfile(extra, io.BytesIO(data))
        else:
            dst.addfile(extra)
    return path, _md5(path)


def _member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info


UNSAFE_MEMBERS = {
    "dotdot": _member("../evil"),
    "nested dotdot": _member("cifar-10-batches-py/../../evil"),
    "absolute path": _member("/tmp/tspike-abs-evil"),
    "symlink to /etc": _member("cifar-10-batches-py/etc", tarfile.SYMTYPE, "/etc"),
    "symlink up": _member("cifar-10-batches-py/up", tarfile.SYMTYPE, "../../evil"),
    "hardlink out": _member("cifar-10-batches-py/passwd", tarfile.LNKTYPE, "../../etc/passwd"),
    "device": _member("cifar-10-batches-py/null", tarfile.CHRTYPE),
}


@pytest.mark.parametrize("case", sorted(UNSAFE_MEMBERS))
def test_a_cifar_archive_with_an_unsafe_member_is_refused_and_writes_nothing(tmp_path, case):
    member = UNSAFE_MEMBERS[case]
    archive, md5 = _cifar_tar_with(tmp_path / "dl" / "cifar-10-python.tar.gz", member)
    with pytest.raises(DataIntegrityError, match="refusing to extract") as info:
        load("cifar10", root=archive, md5=md5)
    assert member.name in str(info.value)
    assert sorted(p.name for p in (tmp_path / "dl").iterdir()) == ["cifar-10-python.tar.gz"]
    assert not (tmp_path / "evil").exists() and not Path("/tmp/tspike-abs-evil").exists()


@pytest.mark.parametrize("name", ["../evil", "/tmp/tspike-zip-evil", "cifar-10-batches-py/../../evil", "..\\evil"])
def test_a_zip_slip_archive_is_refused_before_anything_is_written(tmp_path, name):
    archive = tmp_path / "dl" / "cifar.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("cifar-10-batches-py/batches.meta", b"meta")
        zf.writestr(zipfile.ZipInfo(name), b"evil")
    with pytest.raises(DataIntegrityError, match="refusing to extract"):
        load("cifar10", root=archive, md5=_md5(archive))
    assert sorted(p.name for p in archive.parent.iterdir()) == ["cifar.zip"]
    assert not (tmp_path / "evil").exists() and not Path("/tmp/tspike-zip-evil").exists()


def test_a_zip_symlink_member_pointing_outside_is_refused(tmp_path):
    archive = tmp_path / "link.zip"
    info = zipfile.ZipInfo("cifar-10-batches-py/etc")
    info.external_attr = 0o120777 << 16  # a symbolic link
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(info, "/etc")
    with pytest.raises(DataIntegrityError, match="link to '/etc'"):
        safe_extract(archive, tmp_path / "out")


def test_an_image_archive_read_in_place_skips_unsafe_members_and_writes_nothing(tmp_path, caplog):
    archive = tmp_path / "images.tar"
    with tarfile.open(archive, "w") as tf:
        for name in ("train/a/0.png", "../escape.png", "/abs/evil.png", "test/a/0.png"):
            info = tarfile.TarInfo(name)
            info.size = 4
            tf.addfile(info, io.BytesIO(b"data"))
    with caplog.at_level(logging.WARNING):
        names = [rel for rel, _ in iter_files(archive)]
    assert names == ["train/a/0.png", "test/a/0.png"]
    assert "../escape.png" in caplog.text and "/abs/evil.png" in caplog.text
    assert [p.name for p in tmp_path.iterdir()] == ["images.tar"]  # read in place: nothing extracted


# --------------------------------------------------------------------------- damaged archives


def test_a_truncated_archive_beside_an_extracted_folder_is_refused_not_replaced_by_the_folder(tmp_path):
    archive, md5, _ = make_cifar_archive(tmp_path)
    load("cifar10", root=archive, md5=md5)  # extracts cifar-10-batches-py beside it
    archive.write_bytes(archive.read_bytes()[:-200])
    with pytest.raises(DataIntegrityError) as info:
        load("cifar10", root=archive, md5=md5)
    message = str(info.value)
    assert str(archive) in message and md5 in message and _md5(archive) in message


def test_a_truncated_archive_also_fails_where_the_copy_in_the_cache_would_have_hidden_it(tmp_path, isolated_cache):
    (tmp_path / "elsewhere").mkdir()
    archive, md5, _ = make_cifar_archive(tmp_path / "elsewhere")
    shutil.copy(archive, tmp_path / "copy.tar.gz")
    load("cifar10", root=tmp_path / "copy.tar.gz", md5=md5)
    shutil.move(str(tmp_path / "cifar-10-batches-py"), str(isolated_cache / "cifar-10-batches-py"))
    archive.write_bytes(archive.read_bytes()[:100])
    with pytest.raises(DataIntegrityError, match="md5"):
        load("cifar10", root=archive, md5=md5)


@pytest.mark.parametrize("suffix", [".tar.gz", ".tar.xz", ".tar.bz2"])
def test_extracting_a_truncated_archive_gives_a_data_integrity_error_naming_it(tmp_path, suffix):
    archive = tmp_path / f"cut{suffix}"
    mode = {".tar.gz": "w:gz", ".tar.xz": "w:xz", ".tar.bz2": "w:bz2"}[suffix]
    payload = np.random.default_rng(0).integers(0, 256, 200_000, dtype=np.uint8).tobytes()
    with tarfile.open(archive, mode) as tf:
        info = tarfile.TarInfo("top/big.bin")
        info.size = len(payload)
        tf.addfile(info, io.BytesIO(payload))
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(DataIntegrityError, match="truncated or damaged") as info:
        safe_extract(archive, tmp_path / "out")
    assert str(archive) in str(info.value)
    with pytest.raises(DataIntegrityError, match="truncated or damaged"):
        list(iter_files(archive))


# --------------------------------------------------------------------------- a full disk


@pytest.fixture
def tiny_disk(tmp_path):
    """A 64 KiB tmpfs mounted for the test (needs root and mount rights; skipped otherwise)."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
    try:
        yield mount
    finally:
        if subprocess.run(["umount", str(mount)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_full_disk_for_the_optional_image_cache_logs_a_warning_and_loading_carries_on(
    tmp_path, monkeypatch, tiny_disk, caplog
):
    from PIL import Image

    root = tmp_path / "images"
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True)
            for i in range(20):  # 80 images of 32x32x3: ~245 KB decoded, more than the disk holds
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / split / c / f"{i}.png")
    monkeypatch.setenv("TSPIKE_DATA", str(tiny_disk))
    with caplog.at_level(logging.WARNING):
        src = load("imagefolder", root=root, workers=1)
    assert src.train_x.shape == (40, 3, 32, 32) and src.num_classes == 2
    assert "could not write the optional cache" in caplog.text
    leftovers = [p for p in tiny_disk.rglob("*") if p.is_file()]
    assert leftovers == []  # no temp file or torn cache left filling the disk


def test_a_full_disk_for_the_checksum_record_logs_a_warning_and_the_cifar_load_carries_on(
    tmp_path, monkeypatch, tiny_disk, caplog
):
    archive, md5, arrays = make_cifar_archive(tmp_path)
    (tiny_disk / "filler").write_bytes(b"\0" * (64 * 1024 - 4096))
    with pytest.raises(OSError):  # the disk is full indeed
        (tiny_disk / "more").write_bytes(b"\0" * 8192)
    monkeypatch.setenv("TSPIKE_DATA", str(tiny_disk))
    with caplog.at_level(logging.WARNING):
        src = load("cifar10", root=archive, md5=md5)
    assert np.array_equal(src.train_x.numpy(), arrays["train_x"])
    assert "could not record the checksums" in caplog.text


def test_every_crafted_input_error_is_a_data_error_with_one_line(tmp_path):
    folder = _extracted_cifar(tmp_path)
    (folder / "data_batch_5").write_bytes(b"\x80\x02}q\x00(")
    with pytest.raises(DataError) as info:
        load("cifar10", root=folder, download=False)
    assert "\n" not in str(info.value)


# =========================================================================== round 3: the newer surfaces


class Hung(Exception):
    pass


@contextlib.contextmanager
def deadline(seconds: float):
    """Raise Hung in this thread after ``seconds``: a blocking open() or read() is interrupted, the test fails."""

    def expire(signum, frame):
        raise Hung(f"still blocked after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _one_line(err: str) -> str:
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def _cli(capsys, *args) -> tuple[int, str]:
    """``tspike train ARGS`` in this process: (exit status, stderr)."""
    code = cli.main(["train", "--no-progress", "--device", "cpu", "--num-workers", "0", *args])
    return code, capsys.readouterr().err


# A digits run that takes well under a second per epoch.
TINY_RUN = [
    "--dataset",
    "digits",
    "--arch",
    "small",
    "--width",
    "4",
    "--batch-size",
    "32",
    "--epochs",
    "2",
    "--max-steps-per-epoch",
    "2",
    "--max-eval-steps",
    "1",
    "--num-steps",
    "2",
]


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` RGB pixels, with a few bytes of pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _image_folder(root: Path, size=(8, 8), seed=0) -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split in ("train", "test"):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(2):
                Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(
                    root / split / c / f"{i}.png"
                )
    return root


# --------------------------------------------------------------------------- resource limits before the work


@pytest.mark.parametrize("side", [9000, 14000])  # above our cap; 14000 is also above Pillow's own bomb limit
def test_a_decompression_bomb_png_is_refused_from_its_header_naming_the_limit(tmp_path, side):
    root = _image_folder(tmp_path / "images")
    (root / "train" / "a" / "bomb.png").write_bytes(_png_header(side, side))
    with pytest.raises(DataIntegrityError) as info:
        load("imagefolder", root=root, workers=1)
    message = str(info.value)
    assert "bomb.png" in message and "MAX_IMAGE_PIXELS" in message
    assert f"{side}x{side}" in message or str(side * side) in message  # Pillow may refuse it first, saying so
    assert str(imagefolder.MAX_IMAGE_PIXELS) in message and "\n" not in message


def test_a_decompression_bomb_in_an_image_folder_ends_the_cli_in_one_line(tmp_path, capsys):
    root = _image_folder(tmp_path / "images")
    (root / "test" / "b" / "bomb.png").write_bytes(_png_header(14000, 14000))
    code, err = _cli(
        capsys, "--dataset", "imagefolder", "--data-dir", str(root), "--epochs", "1", "--out-dir", str(tmp_path / "run")
    )
    assert code == 2 and "decoded-size limit" in _one_line(err)
    assert not (tmp_path / "run").exists()  # no run folder holding .lock is left behind


def test_an_image_of_another_size_is_refused_from_its_header_before_it_is_decoded(tmp_path, monkeypatch):
    root = _image_folder(tmp_path / "images")
    (root / "train" / "b" / "big.png").write_bytes(_png_header(4000, 4000))  # decoding it would fail: 64 bytes of data
    with pytest.raises(DataIntegrityError, match=r"big\.png' is 4000x4000 but .* is 8x8"):
        load("imagefolder", root=root, workers=1)


def _spy_reads(monkeypatch) -> list[str]:
    """Names of the folder files opened and archive members read by the image-folder loader."""
    from tspike_lab.data import archive

    opened: list[str] = []
    real_open, real_zip_open = archive.open_regular, zipfile.ZipFile.open

    def open_spy(path, *args, **kwargs):
        opened.append(os.fspath(path))
        return real_open(path, *args, **kwargs)

    def zip_spy(self, name, *args, **kwargs):
        opened.append(name if isinstance(name, str) else name.filename)
        return real_zip_open(self, name, *args, **kwargs)

    monkeypatch.setattr(archive, "open_regular", open_spy)
    monkeypatch.setattr(zipfile.ZipFile, "open", zip_spy)
    return opened


def test_a_2gib_readme_beside_the_images_is_never_read_folder_or_zip(tmp_path, monkeypatch):
    root = _image_folder(tmp_path / "images")
    with open(root / "README", "wb") as f:
        f.truncate(2 * 2**30)  # a sparse 2 GiB file: nothing is written to disk
    opened = _spy_reads(monkeypatch)
    src = load("imagefolder", root=root, workers=1, cache=False)
    assert src.train_x.shape == (4, 3, 8, 8)
    assert opened and not any(name.endswith("README") for name in opened)

    archive = tmp_path / "images.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(root.rglob("*.png")):
            zf.write(path, path.relative_to(root).as_posix())
        zf.writestr("README", b"\0" * (64 * 2**20))  # 64 MiB of zeros, 64 KiB compressed
    opened.clear()
    src = load("imagefolder", root=archive, workers=1, cache=False)
    assert src.train_x.shape == (4, 3, 8, 8)
    assert len(opened) == 8 and "README" not in opened


def test_an_image_folder_needing_twice_its_decoded_size_beyond_the_memory_available_is_refused(tmp_path, monkeypatch):
    root = _image_folder(tmp_path / "images")
    decoded = 8 * 8 * 8 * 3  # 8 images of 8x8 RGB
    monkeypatch.setattr(imagefolder, "_decoded_budget", lambda: (2 * decoded - 1, "a test's limit"))
    with pytest.raises(ResourceError, match=r"held twice while the splits are made.*\(a test's limit\)"):
        load("imagefolder", root=root, workers=1, cache=False)
    monkeypatch.setattr(imagefolder, "_decoded_budget", lambda: (2 * decoded, "a test's limit"))
    assert load("imagefolder", root=root, workers=1, cache=False).train_x.shape == (4, 3, 8, 8)


def test_an_image_member_above_the_byte_cap_is_refused_by_its_declared_size_before_it_is_read(tmp_path, monkeypatch):
    root = _image_folder(tmp_path / "images")
    archive = tmp_path / "images.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(root.rglob("*.png")):
            zf.write(path, path.relative_to(root).as_posix())
    monkeypatch.setattr(imagefolder, "MAX_IMAGE_BYTES", 100)  # each PNG of 8x8 random pixels is ~250 bytes
    opened = _spy_reads(monkeypatch)
    with pytest.raises(DataIntegrityError, match=r"holds \d+ bytes, more than the 100 allowed"):
        load("imagefolder", root=archive, workers=1, cache=False)
    assert opened == []  # refused from the zip's directory, nothing decompressed
    with pytest.raises(DataIntegrityError, match=r"0\.png' holds \d+ bytes, more than the 100 allowed"):
        load("imagefolder", root=root, workers=1, cache=False)


@pytest.mark.parametrize(
    "args, words",
    [
        (["--width", "100000"], ["width=100000", "needs at least", "TiB", "lower batch_size, num_steps or width"]),
        (["--num-steps", "1000000"], ["num_steps=1000000", "needs at least", "activations"]),
    ],
)
def test_a_width_or_t_that_cannot_fit_is_refused_in_one_line_before_the_network_is_built(
    tmp_path, capsys, monkeypatch, args, words
):
    from tspike_lab import train as train_mod

    monkeypatch.setattr(train_mod, "_build", _fail_with("the network was built"))
    code, err = _cli(capsys, "--dataset", "digits", "--epochs", "1", *args, "--out-dir", str(tmp_path / "run"))
    assert code == 2 and all(w in _one_line(err) for w in words), err
    assert not (tmp_path / "run").exists()


def test_a_batch_that_cannot_fit_under_a_memory_limit_is_refused_naming_the_limit(tmp_path, capsys, monkeypatch):
    from tspike_lab import hardware

    monkeypatch.setattr(hardware, "available_memory", lambda device: (64 * 2**20, "a 64 MiB test limit"))
    code, err = _cli(
        capsys,
        "--dataset",
        "digits",
        "--width",
        "64",
        "--batch-size",
        "1437",
        "--num-steps",
        "8",
        "--epochs",
        "1",
        "--out-dir",
        str(tmp_path / "run"),
    )
    assert code == 2 and "batch_size=1437" in _one_line(err) and "64.0 MiB is available (a 64 MiB test limit)" in err


def _fail_with(message):
    def raiser(*args, **kwargs):
        raise AssertionError(message)

    return raiser


def test_the_memory_estimate_is_a_lower_bound_of_what_a_step_allocates(tmp_path):
    from tspike_lab.config import TrainConfig, estimate_memory

    config = TrainConfig(width=16, batch_size=64, num_steps=3)
    est = estimate_memory(config, in_channels=1, image_size=(8, 8), num_classes=10)
    from tspike_lab.models import build_model

    model = build_model("small", neuron=config.neuron, num_classes=10, num_steps=3, in_channels=1, width=16)
    assert est["params"] == sum(p.numel() for p in model.parameters())
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(
        lambda t: saved.append(t.numel() * t.element_size()) or t, lambda t: t
    ):
        model(torch.randn(64, 1, 8, 8)).sum()
    assert 0 < est["activations"] <= sum(saved)  # autograd keeps at least what the estimate counts


def test_an_allocation_failure_mid_run_ends_in_one_line_naming_what_to_lower(tmp_path, capsys, monkeypatch):
    from tspike_lab import train as train_mod

    def out_of_memory(*args, **kwargs):
        raise RuntimeError(
            "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: "
            "you tried to allocate 94175232 bytes. Error code 12 (Cannot allocate memory)"
        )

    monkeypatch.setattr(train_mod, "_epoch_row", out_of_memory)
    code, err = _cli(capsys, *TINY_RUN, "--out-dir", str(tmp_path / "run"))
    assert code == 2 and "ran out of memory training arch 'small'" in _one_line(err)
    assert "lower batch_size, num_steps or width" in err and not (tmp_path / "run").exists()


@pytest.mark.slow  # a real process (startup ~4-7 s): only there can an address-space ulimit be set and read back
def test_under_a_memory_ulimit_a_run_too_large_is_refused_naming_the_limit(tmp_path):
    import resource

    def limit():  # ulimit -v: the address space a process may map
        resource.setrlimit(resource.RLIMIT_AS, (3 * 2**30, 3 * 2**30))

    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tspike_lab",
            "train",
            "--dataset",
            "digits",
            "--width",
            "128",
            "--batch-size",
            "1437",
            "--num-steps",
            "8",
            "--epochs",
            "1",
            "--max-steps-per-epoch",
            "1",
            "--max-eval-steps",
            "1",
            "--no-progress",
            "--out-dir",
            str(tmp_path / "run"),
        ],
        env=dict(os.environ, OMP_NUM_THREADS="1"),
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=limit,
    )
    assert done.returncode == 2, done.stderr[-3000:]
    assert "needs at least" in _one_line(done.stderr) and "RLIMIT_AS" in done.stderr
    assert not (tmp_path / "run").exists()


def test_the_recycler_never_raises_buffer_error_for_a_block_still_in_use_nor_when_mmap_fails(monkeypatch):
    from tspike_lab.kernels import recycle

    r = recycle.Recycler(cap_bytes=2**30, min_bytes=1)
    alive = r.empty_strided((4096,), (1,), torch.float32)
    r.close()  # the block of `alive` is still exported
    del alive
    r = recycle.Recycler(cap_bytes=2**30, min_bytes=1)

    def no_memory(*args, **kwargs):
        raise OSError(12, "Cannot allocate memory")

    monkeypatch.setattr(recycle.mmap, "mmap", no_memory)
    out = r.empty_strided((4096,), (1,), torch.float32)  # falls back to torch's allocator
    assert out.shape == (4096,)
    code = (
        "import torch\nfrom tspike_lab.kernels.recycle import Recycler\nr = Recycler(min_bytes=1)\n"
        "keep = r.empty_strided((1 << 20,), (1,), torch.float32)\nr.close()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stderr == "", done.stderr


# --------------------------------------------------------------------------- environment and options


@pytest.mark.parametrize(
    "name, value",
    [("TSPIKE_STREAM_BYTES", "abc"), ("TSPIKE_RECYCLE_MB", "abc"), ("TSPIKE_RECYCLE_MB", "-5"), ("WORLD_SIZE", "two")],
)
def test_a_bad_tspike_environment_variable_ends_the_cli_in_one_line_naming_it(
    tmp_path, capsys, monkeypatch, name, value
):
    monkeypatch.setenv(name, value)
    code, err = _cli(capsys, *TINY_RUN, "--out-dir", str(tmp_path / "run"))
    assert code == 2 and f"environment variable {name} must be a whole number" in _one_line(err)
    assert repr(value) in err and not (tmp_path / "run").exists()


def test_empty_torchrun_variables_mean_unset_and_the_run_trains_in_one_process(tmp_path, capsys, monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.setenv(name, " ")
    code, err = _cli(capsys, *TINY_RUN, "--out-dir", str(tmp_path / "run"))
    assert code == 0, err
    assert (tmp_path / "run" / "checkpoint.pt").is_file()


def test_the_console_script_leaves_by_exit_status_and_a_torchrun_worker_without_finalization(monkeypatch):
    from tspike_lab import cli, frontend

    monkeypatch.setattr(cli, "main", lambda: 7)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(SystemExit) as done:
        cli.run()
    assert done.value.code == 7
    left = []
    monkeypatch.setattr(frontend.os, "_exit", left.append)  # recorded, so the test goes on to sys.exit
    monkeypatch.setattr(frontend.logging, "shutdown", lambda: left.append("logging flushed"))
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(SystemExit):
        cli.run()
    assert left == ["logging flushed", 7]


def test_a_bad_stream_bytes_variable_does_not_break_importing_the_library_and_the_kernel_refuses_it(monkeypatch):
    done = subprocess.run(
        [sys.executable, "-m", "tspike_lab", "train", "--epochs", "1", "--no-progress"],
        env=dict(os.environ, TSPIKE_STREAM_BYTES="abc", OMP_NUM_THREADS="1"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2 and "TSPIKE_STREAM_BYTES" in _one_line(done.stderr)
    from tspike_lab.kernels import cpu

    monkeypatch.setenv("TSPIKE_STREAM_BYTES", "lots")
    cpu.default_kernel.cache_clear()
    try:
        with pytest.raises(ConfigError, match="TSPIKE_STREAM_BYTES must be a whole number of bytes, got 'lots'"):
            cpu.default_kernel()
    finally:
        cpu.default_kernel.cache_clear()


@pytest.mark.parametrize("device", ["meta", "mps", "cpu:1", "xla"])
def test_a_device_that_is_not_cpu_or_cuda_is_refused_by_the_config(tmp_path, capsys, device):
    code, err = _cli(capsys, *TINY_RUN[:-2], "--device", device, "--out-dir", str(tmp_path / "run"))
    assert code == 2 and f"--device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}" in _one_line(err)


def test_new_run_in_naming_an_existing_file_ends_in_one_line(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    code, err = _cli(capsys, *TINY_RUN, "--new-run-in", str(afile))
    assert code == 2 and f"--new-run-in {str(afile)!r} is a file" in _one_line(err)
    from tspike_lab.results import new_run_dir

    with pytest.raises(RunFolderError, match="is a file, not a folder"):
        new_run_dir(afile, "x")


def test_cifar10_dvs_without_tonic_ends_in_one_line_and_leaves_no_run_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tonic", None)
    code, err = _cli(capsys, "--dataset", "cifar10-dvs", "--epochs", "1", "--new-run-in", str(tmp_path / "runs"))
    assert code == 2 and "needs the optional package tonic" in _one_line(err) and "pip install" in err
    assert list((tmp_path / "runs").iterdir()) == []  # the folder --new-run-in made is gone again


def test_tspike_data_naming_a_file_is_named_as_the_variable_not_as_an_option(tmp_path, capsys, monkeypatch):
    afile = tmp_path / "data-file"
    afile.write_text("x")
    monkeypatch.setenv("TSPIKE_DATA", str(afile))
    code, err = _cli(capsys, "--dataset", "cifar10", "--epochs", "1", "--out-dir", str(tmp_path / "run"))
    assert code == 2 and f"environment variable TSPIKE_DATA is {str(afile)!r}, a regular file" in _one_line(err)
    assert "--root" not in err and not (tmp_path / "run").exists()


# --------------------------------------------------------------------------- Ctrl-C

_INTERRUPTED = """
import os, signal, sys
from torch.optim.optimizer import register_optimizer_step_post_hook
from tspike_lab.cli import main

steps = 0

def interrupt_at(optimizer, args, kwargs):
    global steps
    steps += 1
    if steps == {at}:
        os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C in a terminal sends

# Python raises KeyboardInterrupt on SIGINT only if SIGINT was not ignored when it started, and a job a
# non-interactive shell puts in the background (make test &, some CI runners) starts with it ignored:
# restore what a terminal gives.
signal.signal(signal.SIGINT, signal.default_int_handler)
register_optimizer_step_post_hook(interrupt_at)
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow  # two short training processes: the interrupted one and its resumption
def test_ctrl_c_mid_epoch_ends_in_one_line_with_status_130_and_the_run_resumes(tmp_path):
    run = tmp_path / "run"
    args = [
        "train",
        "--dataset",
        "digits",
        "--width",
        "8",
        "--batch-size",
        "32",
        "--epochs",
        "3",
        "--seed",
        "1",
        "--max-steps-per-epoch",
        "10",
        "--max-eval-steps",
        "2",
        "--no-progress",
        "--out-dir",
        str(run),
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("WORLD_SIZE", None)
    # 10 steps an epoch: step 15 is step 5 of epoch 2
    done = subprocess.run(
        [sys.executable, "-c", _INTERRUPTED.format(at=15), *args], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 130, done.stderr[-3000:]
    assert "interrupted (Ctrl-C)" in _one_line(done.stderr) and "run the same command to resume" in done.stderr
    assert torch.load(run / "checkpoint.pt", weights_only=True)["epoch"] == 1
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1 and not list(run.glob(".*.tmp"))
    resumed = subprocess.run(
        [sys.executable, "-m", "tspike_lab", *args], env=env, capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    history = torch.load(run / "checkpoint.pt", weights_only=True)["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert [json.loads(x)["epoch"] for x in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]


def test_ctrl_c_before_the_first_checkpoint_leaves_no_run_folder(tmp_path, capsys, monkeypatch):
    from tspike_lab import train as train_mod

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_mod, "_epoch_row", interrupted)
    code, err = _cli(capsys, *TINY_RUN, "--out-dir", str(tmp_path / "run"))
    assert code == 130 and "before the first epoch ended" in _one_line(err)
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------- crafted checkpoints


@pytest.fixture(scope="module")
def epoch1_checkpoint(tmp_path_factory):
    """The checkpoint of TINY_RUN after epoch 1 (a 2-epoch run cut back to its first epoch, as if killed)."""
    run = tmp_path_factory.mktemp("ckpt") / "run"
    assert (
        cli.main(["train", "--no-progress", "--device", "cpu", "--num-workers", "0", *TINY_RUN, "--out-dir", str(run)])
        == 0
    )
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    ckpt["epoch"], ckpt["history"] = 1, ckpt["history"][:1]
    ckpt["scheduler"]["step"] = ckpt["scheduler"]["steps_per_epoch"]
    return ckpt


def _write_run(folder: Path, ckpt: dict) -> Path:
    folder.mkdir(parents=True)
    torch.save(ckpt, folder / "checkpoint.pt")
    history = ckpt.get("history") if isinstance(ckpt, dict) and isinstance(ckpt.get("history"), list) else []
    (folder / "metrics.jsonl").write_text(
        "".join(json.dumps(r, default=str) + "\n" for r in history if isinstance(r, dict))
    )
    return folder


def _without(d: dict, key: str) -> dict:
    return {k: v for k, v in d.items() if k != key}


CRAFTED = {
    "no scheduler": (lambda c: _without(c, "scheduler"), "lacks ['scheduler']"),
    "a 3-byte rng state": (
        lambda c: {**c, "rng": {**c["rng"], "torch": torch.zeros(3, dtype=torch.uint8)}},
        "rng['torch'] must be a uint8 tensor of",
    ),
    "a short python rng state": (
        lambda c: {
            **c,
            "rng": {**c["rng"], "python": {**c["rng"]["python"], "state": torch.zeros(7, dtype=torch.int64)}},
        },
        "rng['python'] must hold",
    ),
    "sliced weights": (
        lambda c: {**c, "model": {**c["model"], "stem.conv.weight": c["model"]["stem.conv.weight"][:-1]}},
        "model['stem.conv.weight'] is torch.float32",
    ),
    "a weight missing": (
        lambda c: {**c, "model": _without(c["model"], "classifier.bias")},
        "missing ['classifier.bias']",
    ),
    "NaN weights": (
        lambda c: {
            **c,
            "model": {
                **c["model"],
                "classifier.weight": torch.full_like(c["model"]["classifier.weight"], float("nan")),
            },
        },
        "non-finite values in model['classifier.weight']",
    ),
    "epoch -5": (lambda c: {**c, "epoch": -5}, "epoch must be an int >= 1, got int -5"),
    "epoch a string": (lambda c: {**c, "epoch": "1"}, "epoch must be an int >= 1"),
    "history a string": (lambda c: {**c, "history": "abc"}, "history must be a list of per-epoch dicts"),
    "history too long": (lambda c: {**c, "history": c["history"] * 3}, "history holds 3 epochs but epoch is 1"),
    "a tensor in history": (
        lambda c: {**c, "history": [{**c["history"][0], "lr": torch.zeros(2)}]},
        "history[0] holds a value",
    ),
    "a momentum buffer of another shape": (
        lambda c: {
            **c,
            "optimizer": {
                **c["optimizer"],
                "state": {**c["optimizer"]["state"], 0: {"momentum_buffer": torch.zeros(3)}},
            },
        },
        "optimizer state 'momentum_buffer' of parameter 0",
    ),
    "an optimizer of other groups": (
        lambda c: {**c, "optimizer": {**c["optimizer"], "param_groups": c["optimizer"]["param_groups"][:1]}},
        "parameter groups of sizes",
    ),
    "a scheduler step out of line": (
        lambda c: {**c, "scheduler": {**c["scheduler"], "step": 999}},
        "step 999 (this run: 2)",
    ),
    "a config that is not valid": (
        lambda c: {**c, "config": {**c["config"], "lr": -1.0}},
        "its config is not a valid TrainConfig",
    ),
    "a list instead of a dict": (lambda c: [1, 2, 3], "it holds list"),
    "a GradScaler state with a NaN scale": (
        lambda c: {**c, "scaler": {"scale": float("nan"), "_growth_tracker": 0}},
        "scaler must be a GradScaler state dict",
    ),
}


@pytest.mark.parametrize("case", sorted(CRAFTED))
def test_a_crafted_checkpoint_is_refused_field_by_field_before_anything_is_restored(
    tmp_path, capsys, monkeypatch, epoch1_checkpoint, case
):
    craft, words = CRAFTED[case]
    run = _write_run(tmp_path / "run", craft(epoch1_checkpoint))
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    from tspike_lab import train as train_mod

    monkeypatch.setattr(train_mod, "set_rng_state", _fail_with("an rng state was restored"))
    code, err = _cli(capsys, *TINY_RUN, "--out-dir", str(run))
    assert code == 2 and words in _one_line(err), err
    assert str(run / "checkpoint.pt") in err
    after = {p.name: p.read_bytes() for p in run.iterdir() if p.name != ".lock"}
    assert after == before  # nothing rewritten


def test_model_from_checkpoint_refuses_sliced_weights_naming_the_tensor(tmp_path, epoch1_checkpoint):
    from tspike_lab.train import model_from_checkpoint

    craft, _ = CRAFTED["sliced weights"]
    run = _write_run(tmp_path / "run", craft(epoch1_checkpoint))
    with pytest.raises(CheckpointError, match=r"model\['stem\.conv\.weight'\] is torch\.float32 \(3, 1, 3, 3\)"):
        model_from_checkpoint(run)


def test_a_checkpoint_without_a_data_fingerprint_resumes_only_when_the_user_vouches_for_the_data(
    tmp_path, capsys, epoch1_checkpoint
):
    run = _write_run(tmp_path / "run", _without(epoch1_checkpoint, "data_fingerprint"))
    code, err = _cli(capsys, *TINY_RUN, "--out-dir", str(run))
    assert code == 2 and "records no data fingerprint" in _one_line(err) and "--assume-same-data" in err
    code, err = _cli(capsys, *TINY_RUN, "--out-dir", str(run), "--assume-same-data")
    assert code == 0, err
    assert torch.load(run / "checkpoint.pt", weights_only=True)["epoch"] == 2


# --------------------------------------------------------------------------- special files never block


def test_a_fifo_named_metrics_jsonl_or_checkpoint_in_a_run_folder_is_refused_not_waited_on(tmp_path, capsys):
    for name in ("metrics.jsonl", "checkpoint.pt"):
        run = tmp_path / name
        run.mkdir()
        os.mkfifo(run / name)
        with deadline(60):
            code, err = _cli(capsys, *TINY_RUN, "--out-dir", str(run))
        assert code == 2 and f"{str(run / name)!r} is a FIFO, not a regular file" in _one_line(err)


def test_a_fifo_as_data_dir_or_as_an_image_in_a_folder_is_refused_not_waited_on(tmp_path, capsys):
    fifo = tmp_path / "images.tar"
    os.mkfifo(fifo)
    with deadline(60):
        code, err = _cli(capsys, "--dataset", "imagefolder", "--data-dir", str(fifo), "--epochs", "1")
    assert code == 2 and "--data-dir must be a folder or a regular (archive) file, not a special file" in _one_line(err)
    root = _image_folder(tmp_path / "images")
    os.mkfifo(root / "train" / "a" / "9.png")
    with deadline(60), pytest.raises(DataIntegrityError, match=r"9\.png' is a FIFO, not a regular file"):
        load("imagefolder", root=root, workers=1)


def test_reading_helpers_refuse_fifos_devices_and_symlink_loops_at_once(tmp_path):
    from tspike_lab.results import SpecialFileError, read_jsonl, read_regular

    os.mkfifo(tmp_path / "fifo")
    os.symlink("loop", tmp_path / "loop")
    with deadline(30):
        with pytest.raises(SpecialFileError, match="is a FIFO"):
            read_jsonl(tmp_path / "fifo")
        with pytest.raises(SpecialFileError, match="is a character device"):
            read_regular("/dev/zero")
        with pytest.raises(OSError):
            read_regular(tmp_path / "loop")
        with pytest.raises(DataIntegrityError, match="is a FIFO, not a regular file"):
            safe_extract(tmp_path / "fifo", tmp_path / "out")


# --------------------------------------------------------------------------- the image-folder cache key


def test_changed_pixels_with_the_same_size_and_mtime_are_decoded_again_with_a_new_fingerprint(tmp_path):
    from PIL import Image

    root = _image_folder(tmp_path / "images")
    first = load("imagefolder", root=root, workers=1)
    target = root / "train" / "a" / "0.png"
    st = target.stat()
    pixels = np.asarray(Image.open(target)).copy()
    pixels[0, 0] ^= 0xFF  # one pixel
    Image.fromarray(pixels).save(target)
    with open(target, "r+b") as f:  # the same size as before, and the same mtime
        f.truncate(st.st_size) if f.seek(0, 2) > st.st_size else f.write(b"\0" * (st.st_size - f.tell()))
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert target.stat().st_size == st.st_size and target.stat().st_mtime_ns == st.st_mtime_ns
    second = load("imagefolder", root=root, workers=1)
    assert not torch.equal(first.train_x, second.train_x) and second.fingerprint != first.fingerprint
    assert torch.equal(second.train_x, load("imagefolder", root=root, workers=1, cache=False).train_x)


def test_a_tampered_cache_file_is_ignored_and_the_images_are_decoded_again(tmp_path, isolated_cache):
    root = _image_folder(tmp_path / "images")
    first = load("imagefolder", root=root, workers=1)
    (cache,) = (isolated_cache / "imagefolder").glob("*.pt")
    data = torch.load(cache, weights_only=True)
    data["train_x"] = torch.zeros_like(data["train_x"])  # the stored fingerprint no longer matches
    torch.save(data, cache)
    assert torch.equal(load("imagefolder", root=root, workers=1).train_x, first.train_x)


# --------------------------------------------------------------------------- archive link chains


def _chain_archive(path: Path) -> Path:
    """sub/deep -> '.' (sub itself), then esc -> 'sub/deep/../..': inside by its letters, outside once sub/deep
    is a link (sub/deep/.. is the root, its .. outside), then esc/evil written through it."""
    with tarfile.open(path, "w") as tf:
        tf.addfile(_member("top/", tarfile.DIRTYPE))
        tf.addfile(_member("top/sub/", tarfile.DIRTYPE))
        tf.addfile(_member("top/sub/deep", tarfile.SYMTYPE, "."))
        tf.addfile(_member("top/esc", tarfile.SYMTYPE, "sub/deep/../.."))
        info = _member("top/esc/evil")
        info.size = 4
        tf.addfile(info, io.BytesIO(b"evil"))
    return path


@pytest.mark.parametrize("stdlib_filter", [True, False])
def test_a_tar_link_chain_is_refused_by_our_own_check_with_or_without_the_stdlib_filter(
    tmp_path, monkeypatch, stdlib_filter
):
    if not stdlib_filter:  # as on Python 3.10.0-3.10.11 and 3.11.0-3.11.3, which requires-python admits
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    archive = _chain_archive(tmp_path / "chain.tar")
    dest = tmp_path / "a" / "b" / "out"
    with pytest.raises(DataIntegrityError, match="refusing to extract") as info:
        safe_extract(archive, dest)
    assert "link" in str(info.value) and "top/" in str(info.value)
    assert list(dest.iterdir()) == [] and not list(tmp_path.rglob("evil"))


@pytest.mark.parametrize(
    "members",
    [
        [("d/l", tarfile.SYMTYPE, "."), ("d/l/x", tarfile.REGTYPE, "")],  # a file under a link
        [("l1", tarfile.SYMTYPE, "d"), ("l2", tarfile.SYMTYPE, "l1")],  # a link to a link
        [("l1", tarfile.SYMTYPE, "d"), ("h", tarfile.LNKTYPE, "l1")],  # a hard link to a link
        [("l1", tarfile.SYMTYPE, "d"), ("l1", tarfile.REGTYPE, "")],  # a file written over a link
    ],
)
def test_every_kind_of_link_chain_is_refused_before_anything_is_written(tmp_path, members):
    archive = tmp_path / "chain.tar"
    with tarfile.open(archive, "w") as tf:
        tf.addfile(_member("d/", tarfile.DIRTYPE))
        for name, kind, target in members:
            tf.addfile(_member(name, kind, target), io.BytesIO(b"") if kind == tarfile.REGTYPE else None)
    with pytest.raises(DataIntegrityError, match="refusing to extract"):
        safe_extract(archive, tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


def test_an_archive_with_an_inside_link_still_extracts(tmp_path):
    archive = tmp_path / "ok.tar"
    with tarfile.open(archive, "w") as tf:
        info = _member("d/file")
        info.size = 2
        tf.addfile(info, io.BytesIO(b"ok"))
        tf.addfile(_member("d/link", tarfile.SYMTYPE, "file"))
    safe_extract(archive, tmp_path / "out")
    assert (tmp_path / "out" / "d" / "link").read_text() == "ok"


# --------------------------------------------------------------------------- flawed messages


def test_a_full_disk_at_epoch_1_does_not_claim_an_earlier_checkpoint(tmp_path, capsys, monkeypatch):
    from tspike_lab import checkpoint

    def full(state, path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint, "_save_atomic", full)
    code, err = _cli(capsys, *TINY_RUN, "--out-dir", str(tmp_path / "run"))
    assert code == 2 and "No space left on device" in _one_line(err)
    assert "no checkpoint was written yet" in err and "epoch before" not in err


def test_a_data_error_leaves_no_run_folder_holding_a_lock(tmp_path, capsys):
    root = _image_folder(tmp_path / "images")
    (root / "train" / "a" / "0.png").write_bytes(b"not a png")
    for flag, where in (("--out-dir", tmp_path / "run"), ("--new-run-in", tmp_path / "runs")):
        code, err = _cli(capsys, "--dataset", "imagefolder", "--data-dir", str(root), "--epochs", "1", flag, str(where))
        assert code == 2 and "cannot be decoded" in _one_line(err)
        assert not where.exists() or list(where.iterdir()) == []


# --------------------------------------------------------------------------- the aggregate, as strict as the loader


@pytest.fixture
def record() -> dict:
    """A valid table-run record: the shipped Table 2 run's."""
    (run,) = reproduce.find_runs(reproduce.shipped_results())[-1:]
    return json.loads((run / "metrics.json").read_text())


def _put(folder: Path, obj, raw: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.json").write_text(raw if raw is not None else json.dumps(obj))
    return folder


def _aggregate_cli(capsys, *folders) -> tuple[int, str]:
    code = reproduce.main(["aggregate", *map(str, folders)])
    return code, capsys.readouterr().err


def _run(record: dict, **changes) -> dict:
    r = json.loads(json.dumps(record))
    r["runs"][0].update(changes)
    return r


BAD_RECORDS = {
    "an unknown neuron": (lambda r: _run(r, neuron="lif"), "['neuron'] must be one of"),
    "an unknown arch": (lambda r: _run(r, arch="resnet50"), "['arch'] must be one of"),
    "a data set entry of the wrong type": (
        lambda r: {**r, "datasets": {"cifar10": "CIFAR-10"}},
        "metrics['datasets']['cifar10'] must be an object",
    ),
    "a run of a data set not listed": (lambda r: _run(r, dataset="mnist"), "'mnist' is not among"),
    "a NaN top1": (lambda r: _run(r, top1=float("nan")), "['top1'] must be None or a finite number in [0, 100]"),
    "an infinite top1": (lambda r: _run(r, top1=float("inf")), "['top1'] must be None or a finite number"),
    "a top1 of 1e6": (lambda r: _run(r, top1=1e6), "got 1000000.0"),
    "a top1 of -50": (lambda r: _run(r, top1=-50), "got -50"),
    "a firing rate above 1": (lambda r: _run(r, firing_rate=3.0), "['firing_rate'] must be None or a finite"),
    "a run listed twice": (lambda r: {**r, "runs": r["runs"] + r["runs"][:1]}, "a run counted twice"),
    "a negative seed": (lambda r: _run(r, seed=-1), "['seed'] must be >= 0"),
}


@pytest.mark.parametrize("case", sorted(BAD_RECORDS))
def test_the_aggregate_refuses_a_record_with_impossible_values_naming_file_and_field(tmp_path, capsys, record, case):
    craft, words = BAD_RECORDS[case]
    folder = _put(tmp_path / "out" / "t2", None, json.dumps(craft(record)))
    code, err = _aggregate_cli(capsys, tmp_path / "out")
    assert code == 2 and words in _one_line(err) and str(folder / "metrics.json") in err
    with pytest.raises(RecordError):
        reproduce.load_run(folder)


@pytest.mark.parametrize(
    "raw, words",
    [
        ("[" * 200_000 + "]" * 200_000, "nested too deeply"),
        ('{"schema": "tspike_lab.reproduce/2", "table": "tab', "not valid JSON"),
        ("", "not valid JSON"),
        ("\udcff", "not UTF-8"),
        ('{"planned": ' + "9" * 5000 + "}", "not valid JSON"),  # an integer too long for Python to convert
    ],
)
def test_the_aggregate_names_a_malformed_truncated_or_deeply_nested_record(tmp_path, capsys, raw, words):
    folder = tmp_path / "out" / "run"
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_bytes(raw.encode("utf-8", "surrogateescape"))
    code, err = _aggregate_cli(capsys, tmp_path / "out")
    assert code == 2 and words in _one_line(err) and str(folder / "metrics.json") in err


def test_the_aggregate_names_every_bad_file_and_a_missing_folder_in_one_line(tmp_path, capsys, record):
    _put(tmp_path / "out" / "good", record)
    _put(tmp_path / "out" / "bad1", None, "{")
    _put(tmp_path / "out" / "bad2", _run(record, neuron="lif"))
    code, err = _aggregate_cli(capsys, tmp_path / "out", tmp_path / "nowhere")
    assert code == 2 and "could not read 3 table run record(s)" in _one_line(err)
    for name in ("bad1/metrics.json", "bad2/metrics.json", "nowhere' does not exist"):
        assert name in err
    assert "good" not in err


def test_a_fifo_named_metrics_json_under_an_aggregated_folder_is_refused_not_waited_on(tmp_path, capsys):
    (tmp_path / "out" / "run").mkdir(parents=True)
    os.mkfifo(tmp_path / "out" / "run" / "metrics.json")
    with deadline(60):
        code, err = _aggregate_cli(capsys, tmp_path / "out")
    assert code == 2 and "is a FIFO, not a regular file" in _one_line(err)


def test_a_symlink_loop_neither_hangs_nor_counts_a_run_twice(tmp_path, capsys, record):
    out = tmp_path / "out"
    _put(out / "t2", record)
    os.symlink(out, out / "t2" / "loop")  # a folder that holds itself
    os.symlink("..", out / "up")
    os.symlink("self", out / "self")  # a link loop that resolves nowhere
    with deadline(60):
        rows = reproduce.aggregate(out)
        twice = reproduce.aggregate([out, out / "t2", out])  # the same record reached three ways
    seeds = len({run["seed"] for run in record["runs"]})  # each run counted once: n is the record's own seed count
    assert rows == twice and {r["n_seeds"] for r in rows} == {seeds}
    (out / "t3").mkdir()
    os.symlink("metrics.json", out / "t3" / "metrics.json")  # a file that is a link to itself
    with deadline(60):
        code, err = _aggregate_cli(capsys, out)
    assert code == 2 and "t3/metrics.json" in _one_line(err)


def test_a_copied_run_folder_is_refused_instead_of_counting_its_seeds_twice(tmp_path, capsys, record):
    _put(tmp_path / "out" / "a", record)
    _put(tmp_path / "out" / "b", record)
    code, err = _aggregate_cli(capsys, tmp_path / "out")
    assert code == 2 and "is a copy of the table run in" in _one_line(err)


def test_a_valid_record_still_aggregates_and_a_foreign_metrics_json_is_skipped(tmp_path, capsys, record, caplog):
    _put(tmp_path / "out" / "t2", record)
    _put(tmp_path / "out" / "other", {"accuracy": 0.9})  # another tool's file of that name
    with caplog.at_level(logging.WARNING):
        rows = reproduce.aggregate(tmp_path / "out")
    assert {r["neuron"] for r in rows} == {"binary", "ternary", "trainable_ternary"}
    assert "not a table run record" in caplog.text
    assert reproduce.main(["aggregate", str(tmp_path / "out")]) == 0


# --------------------------------------------------------------------------- snn_functional beside snnTorch


def test_snn_functional_has_every_public_name_and_submodule_of_snntorch_functional():
    import pkgutil

    import snntorch.functional as sf

    from tspike_lab import snn_functional as SF

    public = {n for n in dir(sf) if not n.startswith("_")}
    assert public <= set(dir(SF)), sorted(public - set(dir(SF)))
    replaced = {"accuracy_temporal", "ce_temporal_loss", "mse_temporal_loss", "l1_rate_sparsity"}
    assert all(getattr(SF, n) is getattr(sf, n) for n in public - replaced)
    for name in (
        "OutputMonitor",
        "InputMonitor",
        "AttributeMonitor",
        "GradInputMonitor",
        "GradOutputMonitor",
        "SpikeTime",
        "LossFunctions",
    ):
        assert getattr(SF, name) is getattr(sf, name) and name in SF.__all__
    for sub in (m.name for m in pkgutil.iter_modules(sf.__path__)):
        assert getattr(SF, sub) is __import__(f"snntorch.functional.{sub}", fromlist=["_"]), sub
        assert sub in SF.__all__ and sub in dir(SF)
    namespace: dict = {}
    exec("from tspike_lab.snn_functional import *", namespace)
    assert set(SF.__all__) <= set(namespace)


def test_imagenet_style_folders_refuse_a_bomb_and_a_fifo_and_a_worker_error_stays_one_line(tmp_path):
    from torch._utils import ExceptionWrapper

    from tspike_lab.data import ImageFolderDataset

    (tmp_path / "train" / "c").mkdir(parents=True)
    (tmp_path / "train" / "c" / "bomb.png").write_bytes(_png_header(9000, 9000))
    ds = ImageFolderDataset(tmp_path / "train", train=False)
    with pytest.raises(DataIntegrityError, match=r"bomb\.png.*9000x9000.*MAX_IMAGE_PIXELS") as info:
        ds.get(0)
    try:  # as a DataLoader worker hands it to the main process: the traceback inside the message
        raise info.value
    except DataIntegrityError:
        wrapped = ExceptionWrapper(where="in DataLoader worker process 0")
    with pytest.raises(DataIntegrityError) as again:
        wrapped.reraise()
    assert "\n" in str(again.value) and frontend.one_line(str(again.value)) == str(info.value)
    os.mkfifo(tmp_path / "train" / "c" / "fifo.png")
    with deadline(30), pytest.raises(DataIntegrityError, match=r"fifo\.png' is not a regular file"):
        ImageFolderDataset(tmp_path / "train", train=False)


def test_without_the_stdlib_filter_extraction_drops_setuid_bits_and_keeps_our_owner(tmp_path, monkeypatch):
    monkeypatch.delattr(tarfile, "data_filter", raising=False)  # as on Python 3.10.0-3.10.11, 3.11.0-3.11.3
    archive = tmp_path / "modes.tar"
    with tarfile.open(archive, "w") as tf:
        info = _member("top/tool")
        info.size, info.mode, info.uid, info.gid = 1, 0o6777, 4321, 4321
        tf.addfile(info, io.BytesIO(b"x"))
    safe_extract(archive, tmp_path / "out")
    st = (tmp_path / "out" / "top" / "tool").stat()
    assert st.st_mode & 0o7777 == 0o755 and st.st_uid == os.getuid()


@pytest.mark.parametrize("v2", [True, False])
def test_the_memory_available_under_a_cgroup_counts_inactive_page_cache_as_free(tmp_path, v2):
    from tspike_lab.hardware import _cgroup_free

    folder = tmp_path if v2 else tmp_path / "memory"
    folder.mkdir(exist_ok=True)
    names = (
        ("memory.max", "memory.current", "memory.stat", "inactive_file")
        if v2
        else ("memory.limit_in_bytes", "memory.usage_in_bytes", "memory.stat", "total_inactive_file")
    )
    (folder / names[0]).write_text(f"{8 * 2**30}\n")
    (folder / names[1]).write_text(f"{7 * 2**30}\n")
    (folder / names[2]).write_text(f"anon {2**30}\n{names[3]} {5 * 2**30}\n")
    free, source = _cgroup_free(str(tmp_path))
    assert free == 6 * 2**30 and names[0] in source  # 8 GiB limit - (7 GiB used - 5 GiB reclaimable cache)
    (folder / names[0]).write_text("max\n" if v2 else f"{2**63 - 4096}\n")
    assert _cgroup_free(str(tmp_path)) is None
