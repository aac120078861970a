"""Crafted inputs against the data layer: pickles that run code, damaged files, unsafe archives, a full disk.

Each test builds its own tiny synthetic files; none needs the real CIFAR data or the network.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import pickle
import shutil
import subprocess
import tarfile
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest

from test_data import make_cifar_archive
from tspike_lab.data import DataIntegrityError, cifar, load, safe_extract
from tspike_lab.data.archive import iter_files
from tspike_lab.errors import DataError


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
    return {b"batch_label": b"x", b"data": np.zeros((n, 3072), np.uint8), b"labels": [0] * n,
            b"filenames": [b"a.png", payload][:n]}


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
    info.external_attr = (0o120777 << 16)  # a symbolic link
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
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True,
                          text=True)
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
