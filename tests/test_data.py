"""Tests of tspike_lab.data: sources, archives, caching, augmentation and loaders (no network, no shared files)."""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import io
import itertools
import logging
import math
import os
import pickle
import stat
import sys
import tarfile
import types
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance, ImageOps

from tspike_lab.data import (
    DATASETS,
    Augment,
    DataIntegrityError,
    DataSource,
    DataUnavailableError,
    cifar,
    describe,
    dvs,
    imagefolder,
    load,
    make_loader,
    probe,
    sources,
)
from tspike_lab.data import augment as aug
from tspike_lab.data.archive import safe_extract
from tspike_lab.data.imagenet import eval_transform, random_resized_crop_box
from tspike_lab.errors import ConfigError

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """Every test gets its own empty cache folder through $TSPIKE_DATA."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("TSPIKE_DATA", str(cache))
    return cache


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _add_bytes(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))


def make_cifar_archive(directory: Path, kind: str = "cifar10", n: int = 3) -> tuple[Path, str, dict]:
    """Write a small archive with the real CIFAR python layout; return (path, md5, arrays written)."""
    rng = np.random.default_rng(1)
    if kind == "cifar10":
        folder, filename, label_key = "cifar-10-batches-py", "cifar-10-python.tar.gz", b"labels"
        train_files, test_files, classes = [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], 10
        meta_name, meta = "batches.meta", {b"label_names": [c.encode() for c in CIFAR10_NAMES], b"num_vis": 3072}
    else:
        folder, filename, label_key = "cifar-100-python", "cifar-100-python.tar.gz", b"fine_labels"
        train_files, test_files, classes = ["train"], ["test"], 100
        meta_name = "meta"
        meta = {b"fine_label_names": [f"class{i:03d}".encode() for i in range(100)], b"coarse_label_names": [b"c"] * 20}
    written = {"train_x": [], "train_y": [], "test_x": [], "test_y": []}
    path = directory / filename
    with tarfile.open(path, "w:gz") as tf:
        for split, files in (("train", train_files), ("test", test_files)):
            for name in files:
                data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
                labels = rng.integers(0, classes, size=n).tolist()
                batch = {b"batch_label": name.encode(), b"data": data, label_key: labels, b"filenames": [b"x.png"] * n}
                if kind == "cifar100":
                    batch[b"coarse_labels"] = [0] * n
                _add_bytes(tf, f"{folder}/{name}", pickle.dumps(batch, protocol=2))
                written[f"{split}_x"].append(data.reshape(n, 3, 32, 32))
                written[f"{split}_y"].append(np.asarray(labels))
        _add_bytes(tf, f"{folder}/{meta_name}", pickle.dumps(meta, protocol=2))
    arrays = {k: np.concatenate(v) for k, v in written.items()}
    return path, _md5(path), arrays


# --------------------------------------------------------------------------- registry and bad values


def test_dataset_registry_lists_the_six_sources():
    assert tuple(DATASETS) == ("digits", "cifar10", "cifar100", "imagefolder", "cifar10-dvs", "imagenet")


def test_unknown_dataset_name_is_rejected_naming_it():
    with pytest.raises(ValueError, match="'mnist-typo'") as info:
        load("mnist-typo")
    assert "digits" in str(info.value)


def test_unknown_load_option_is_rejected_listing_allowed_ones():
    with pytest.raises(ValueError, match="colour") as info:
        load("imagefolder", root=".", colour=3)
    assert "channels" in str(info.value)


def test_augment_with_negative_crop_padding_is_rejected():
    with pytest.raises(ValueError, match=r"crop_padding.*-1"):
        Augment(crop_padding=-1)


@pytest.mark.parametrize("field, value", [("cutout", -2), ("roll", 1.5), ("flip", 1), ("autoaugment", "yes")])
def test_augment_rejects_bad_field_values_naming_field_and_value(field, value):
    with pytest.raises(ValueError, match=field) as info:
        Augment(**{field: value})
    assert repr(value) in str(info.value)


def test_make_loader_rejects_split_val_and_batch_size_zero():
    src = load("digits")
    with pytest.raises(ValueError, match="'val'"):
        make_loader(src, "val", batch_size=8)
    with pytest.raises(ValueError, match=r"batch_size.*got 0"):
        make_loader(src, "train", batch_size=0)
    with pytest.raises(ValueError, match=r"rank.*got 2"):
        make_loader(src, "train", batch_size=8, rank=2, world_size=2)
    with pytest.raises(ValueError, match="device"):
        make_loader(src, "train", batch_size=8, device="gpu-ish")


def test_data_source_with_inconsistent_classes_is_rejected():
    x = torch.zeros(4, 1, 2, 2, dtype=torch.uint8)
    y = torch.zeros(4, dtype=torch.int64)
    with pytest.raises(ValueError, match="num_classes"):
        DataSource("toy", 3, 1, (2, 2), ["a", "b"], (0.5,), (0.5,), x, y, x, y)


# --------------------------------------------------------------------------- digits


def test_digits_load_without_download_with_fixed_split_and_uint8_images():
    src = load("digits", download=False)
    assert src.resident and not src.is_sequence and src.train_set is None
    assert src.train_x.shape == (1437, 1, 8, 8) and src.test_x.shape == (360, 1, 8, 8)
    assert src.train_x.dtype == torch.uint8 and src.train_y.dtype == torch.int64
    assert int(src.train_x.max()) == 255 and int(src.train_x.min()) == 0
    assert set(src.train_y.tolist()) == set(range(10)) == set(src.test_y.tolist())
    assert src.classes == [str(d) for d in range(10)] and src.num_classes == 10
    again = load("digits")
    assert torch.equal(again.train_x, src.train_x) and torch.equal(again.test_y, src.test_y)
    # values are v * 255 // 16 of the 0..16 originals
    allowed = {v * 255 // 16 for v in range(17)}
    assert set(torch.unique(src.train_x).tolist()) <= allowed


# --------------------------------------------------------------------------- CIFAR


def test_cifar10_archive_given_as_root_is_verified_extracted_and_read(tmp_path):
    archive, md5, arrays = make_cifar_archive(tmp_path)
    src = load("cifar10", root=archive, md5=md5)
    assert src.classes == CIFAR10_NAMES and src.num_classes == 10 and src.in_channels == 3
    assert src.train_x.shape == (15, 3, 32, 32) and src.test_x.shape == (3, 3, 32, 32)
    assert np.array_equal(src.train_x.numpy(), arrays["train_x"])
    assert np.array_equal(src.test_y.numpy(), arrays["test_y"])
    assert src.mean == pytest.approx((0.4914, 0.4822, 0.4465))
    assert (tmp_path / "cifar-10-batches-py" / "data_batch_5").is_file()


def test_cifar10_extracted_folder_is_read_as_root_or_from_its_parent(tmp_path, monkeypatch):
    archive, md5, arrays = make_cifar_archive(tmp_path)
    load("cifar10", root=archive, md5=md5)
    archive.unlink()
    monkeypatch.setattr(urllib.request, "urlopen", _no_network)
    for root in (tmp_path / "cifar-10-batches-py", tmp_path):
        src = load("cifar10", root=root, download=False)
        assert np.array_equal(src.test_x.numpy(), arrays["test_x"])


def test_cifar10_archive_in_root_folder_is_checked_with_the_module_md5_constant(tmp_path, monkeypatch):
    _, md5, arrays = make_cifar_archive(tmp_path)
    monkeypatch.setattr(cifar, "CIFAR10_MD5", md5)
    src = load("cifar10", root=tmp_path, download=False)
    assert np.array_equal(src.train_y.numpy(), arrays["train_y"])
    # once extracted, the archive is not hashed again
    monkeypatch.setattr(cifar, "check_md5", _fail("md5 checked twice"))
    load("cifar10", root=tmp_path, download=False)


def test_cifar100_archive_loads_fine_labels_and_names(tmp_path):
    archive, md5, arrays = make_cifar_archive(tmp_path, kind="cifar100", n=5)
    src = load("cifar100", root=archive, md5=md5)
    assert src.num_classes == 100 and src.classes[7] == "class007"
    assert src.train_x.shape == (5, 3, 32, 32) and src.test_x.shape == (5, 3, 32, 32)
    assert np.array_equal(src.train_y.numpy(), arrays["train_y"])
    assert src.std == pytest.approx((0.2675, 0.2565, 0.2761))  # the released CIFAR script's constants


def test_cifar_archive_with_wrong_md5_is_rejected(tmp_path):
    archive, md5, _ = make_cifar_archive(tmp_path)
    wrong = "0" * 32
    with pytest.raises(ValueError) as info:
        load("cifar10", root=archive, md5=wrong)
    message = str(info.value)
    assert str(archive) in message and wrong in message and md5 in message
    assert not (tmp_path / "cifar-10-batches-py").exists()


def test_cifar_archive_with_default_md5_is_rejected_as_corrupted(tmp_path):
    make_cifar_archive(tmp_path)
    with pytest.raises(ValueError, match=cifar.CIFAR10_MD5):
        load("cifar10", root=tmp_path)


def _no_network(*args, **kwargs):
    raise AssertionError("the network must not be touched")


def _fail(message):
    def raiser(*args, **kwargs):
        raise AssertionError(message)

    return raiser


def test_offline_download_gives_one_clear_data_unavailable_error(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    root = tmp_path / "empty"
    with pytest.raises(DataUnavailableError) as info:
        load("cifar10", root=root, download=True)
    message = str(info.value)
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in message
    assert str(root) in message and "cifar-10-python.tar.gz" in message and cifar.CIFAR10_MD5 in message
    assert isinstance(info.value, RuntimeError)
    assert info.value.__suppress_context__ and info.value.__cause__ is None
    assert [p.name for p in root.iterdir()] == []  # no partial download left behind


def test_download_false_raises_data_unavailable_without_touching_the_network(tmp_path, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", _no_network)
    with pytest.raises(DataUnavailableError, match="cifar-100-python.tar.gz") as info:
        load("cifar100", root=tmp_path / "nothing", download=False)
    assert "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz" in str(info.value)


def test_default_root_comes_from_tspike_data(isolated_cache, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", _no_network)
    with pytest.raises(DataUnavailableError, match=str(isolated_cache)):
        load("cifar10", download=False)


def test_download_is_md5_checked_then_renamed_into_place(tmp_path, monkeypatch):
    archive, md5, arrays = make_cifar_archive(tmp_path)
    payload = archive.read_bytes()
    urls = []

    def fake_urlopen(url, timeout=None):
        urls.append(url)
        return io.BytesIO(payload)

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    root = tmp_path / "dl"
    src = load("cifar10", root=root, md5=md5)
    assert urls == ["https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"]
    assert np.array_equal(src.train_x.numpy(), arrays["train_x"])
    assert sorted(p.name for p in root.iterdir()) == ["cifar-10-batches-py", "cifar-10-python.tar.gz"]


def test_corrupted_download_is_rejected_and_not_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout=None: io.BytesIO(b"not an archive"))
    root = tmp_path / "dl"
    with pytest.raises(ValueError, match="md5"):
        load("cifar10", root=root)
    assert list(root.iterdir()) == []


# --------------------------------------------------------------------------- safe extraction


def _tar_with(path: Path, member: tarfile.TarInfo, data: bytes = b"x") -> Path:
    mode = {".tar": "w", ".gz": "w:gz", ".xz": "w:xz"}[path.suffix]
    with tarfile.open(path, mode) as tf:
        _add_bytes(tf, "ok/fine.txt", b"fine")
        if member.isfile():
            member.size = len(data)
            tf.addfile(member, io.BytesIO(data))
        else:
            tf.addfile(member)
    return path


def _tarinfo(name, kind=tarfile.REGTYPE, linkname=""):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


BAD_TAR_MEMBERS = {
    "dotdot": _tarinfo("../evil"),
    "nested-dotdot": _tarinfo("ok/../../evil"),
    "absolute": _tarinfo("/tmp/abs-evil"),
    "symlink-out": _tarinfo("ok/etc", tarfile.SYMTYPE, "/etc"),
    "symlink-up": _tarinfo("ok/up", tarfile.SYMTYPE, "../../evil"),
    "hardlink-out": _tarinfo("ok/passwd", tarfile.LNKTYPE, "../../etc/passwd"),
    "device": _tarinfo("ok/null", tarfile.CHRTYPE),
}


@pytest.mark.parametrize("suffix", [".tar", ".tar.gz", ".tar.xz"])
@pytest.mark.parametrize("case", sorted(BAD_TAR_MEMBERS))
def test_safe_extract_rejects_unsafe_tar_members_and_writes_nothing(tmp_path, suffix, case):
    member = BAD_TAR_MEMBERS[case]
    archive = _tar_with(tmp_path / f"bad{suffix}", member)
    dest = tmp_path / "out" / "dest"
    with pytest.raises(ValueError, match=member.name.replace(".", r"\.")):
        safe_extract(archive, dest)
    assert list(dest.iterdir()) == []
    assert not (tmp_path / "out" / "evil").exists() and not (tmp_path / "evil").exists()


@pytest.mark.parametrize("name", ["../evil", "/abs/evil", "ok/../../evil"])
def test_safe_extract_rejects_zip_members_escaping_dest(tmp_path, name):
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ok/fine.txt", "fine")
        zf.writestr(zipfile.ZipInfo(name), "evil")
    dest = tmp_path / "out" / "dest"
    with pytest.raises(ValueError, match=name.replace(".", r"\.")):
        safe_extract(archive, dest)
    assert list(dest.iterdir()) == [] and not (tmp_path / "out" / "evil").exists()


def test_safe_extract_rejects_zip_symlink_pointing_outside(tmp_path):
    archive = tmp_path / "link.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo("ok/etc")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc")
    with pytest.raises(ValueError, match="ok/etc"):
        safe_extract(archive, tmp_path / "dest")


@pytest.mark.parametrize("suffix", [".tar.gz", ".zip"])
def test_safe_extract_writes_benign_archives_inside_dest(tmp_path, suffix):
    archive = tmp_path / f"good{suffix}"
    if suffix == ".zip":
        with zipfile.ZipFile(archive, "w") as zf:
            zf.writestr("top/a.txt", "A")
            zf.writestr("top/sub/b.txt", "B")
    else:
        with tarfile.open(archive, "w:gz") as tf:
            _add_bytes(tf, "top/a.txt", b"A")
            _add_bytes(tf, "top/sub/b.txt", b"B")
            tf.addfile(_tarinfo("top/link", tarfile.SYMTYPE, "sub/b.txt"))
    dest = safe_extract(archive, tmp_path / "dest")
    assert (dest / "top" / "a.txt").read_text() == "A" and (dest / "top" / "sub" / "b.txt").read_text() == "B"
    if suffix != ".zip":
        assert (dest / "top" / "link").read_text() == "B"


# --------------------------------------------------------------------------- image folders

IMAGE_CLASSES = ["dog", "ant", "cat"]  # written unsorted on purpose


def _encode(array: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt)
    return buf.getvalue()


def make_image_members(size=(6, 5), per_class=(2, 1), mode="RGB") -> dict[str, bytes]:
    """``{relative path: encoded bytes}`` for train/<class>/ and test/<class>/, PNG and JPEG mixed."""
    rng = np.random.default_rng(2)
    members = {}
    for c_idx, cls in enumerate(IMAGE_CLASSES):
        for split, count in zip(("train", "test"), per_class):
            for i in range(count):
                shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
                array = rng.integers(0, 256, size=shape, dtype=np.uint8)
                fmt, ext = ("PNG", "png") if (i + c_idx) % 2 == 0 else ("JPEG", "jpg")
                members[f"{split}/{cls}/img{i}.{ext}"] = _encode(array, fmt)
    return members


def write_image_source(tmp_path: Path, members: dict[str, bytes], kind: str, prefix: str = "") -> Path:
    """Write members as a folder or archive of the given kind; return the root to pass to load."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    if kind == "dir":
        root = tmp_path / "folder"
        for rel, data in members.items():
            p = root / prefix / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
        return root
    if kind == ".zip":
        root = tmp_path / "images.zip"
        with zipfile.ZipFile(root, "w") as zf:
            for rel, data in members.items():
                zf.writestr(prefix + rel, data)
        return root
    root = tmp_path / f"images{kind}"
    mode = {".tar": "w", ".tar.gz": "w:gz", ".tgz": "w:gz", ".tar.xz": "w:xz"}[kind]
    with tarfile.open(root, mode) as tf:
        for rel, data in reversed(list(members.items())):  # archive order must not matter
            _add_bytes(tf, prefix + rel, data)
    return root


def test_image_folder_of_every_kind_gives_the_same_tensors_and_sorted_classes(tmp_path):
    members = make_image_members()
    results = []
    for kind, prefix in [("dir", ""), (".zip", ""), (".tar", ""), (".tar.gz", "wrap/"), (".tgz", ""), (".tar.xz", "")]:
        src = load("imagefolder", root=write_image_source(tmp_path / kind.strip("."), members, kind, prefix), workers=1)
        results.append(src)
    first = results[0]
    assert first.classes == ["ant", "cat", "dog"] and first.num_classes == 3
    assert first.train_x.shape == (6, 3, 5, 6) and first.test_x.shape == (3, 3, 5, 6)
    assert first.image_size == (5, 6) and first.in_channels == 3
    assert first.train_y.tolist() == [0, 0, 1, 1, 2, 2] and first.test_y.tolist() == [0, 1, 2]
    for other in results[1:]:
        for name in ("train_x", "train_y", "test_x", "test_y"):
            assert torch.equal(getattr(other, name), getattr(first, name)), name
        assert other.classes == first.classes and other.mean == first.mean
    # PNG members decode exactly; samples are ordered by path (train/dog/img0.png is the fifth)
    png = np.asarray(Image.open(io.BytesIO(members["train/dog/img0.png"])))
    assert np.array_equal(first.train_x[4].permute(1, 2, 0).numpy(), png)
    expected_mean = first.train_x.double().div(255).mean(dim=(0, 2, 3))
    assert first.mean == pytest.approx(tuple(expected_mean.tolist()))


def test_image_folder_grayscale_channels_option(tmp_path):
    root = write_image_source(tmp_path, make_image_members(mode="L"), ".zip")
    src = load("imagefolder", root=root, channels=1)
    assert src.train_x.shape == (6, 1, 5, 6) and len(src.mean) == 1


def test_second_image_folder_load_hits_the_cache(tmp_path, monkeypatch, isolated_cache):
    root = write_image_source(tmp_path, make_image_members(), ".tar.gz")
    first = load("imagefolder", root=root)
    assert len(list((isolated_cache / "imagefolder").glob("*.pt"))) == 1
    monkeypatch.setattr(imagefolder, "_decode_chunk", _fail("decoded again despite the cache"))
    second = load("imagefolder", root=root)
    assert torch.equal(first.train_x, second.train_x) and second.classes == first.classes
    # the key is the content: a new mtime alone still hits, a changed archive is decoded again
    os.utime(root, ns=(1_000_000_000, 1_000_000_000))
    assert torch.equal(load("imagefolder", root=root).train_x, first.train_x)
    write_image_source(tmp_path, make_image_members(per_class=(3, 1)), ".tar.gz")
    with pytest.raises(AssertionError, match="decoded again"):
        load("imagefolder", root=root)


def test_image_folder_parallel_decoding_matches_serial(tmp_path, monkeypatch):
    root = write_image_source(tmp_path, make_image_members(per_class=(3, 2)), ".tar")
    serial = load("imagefolder", root=root, workers=1, cache=False)
    monkeypatch.setattr(imagefolder, "_DECODE_CHUNK", 2)  # several chunks -> worker pool
    parallel = load("imagefolder", root=root, workers=2, cache=False)
    assert torch.equal(serial.train_x, parallel.train_x) and torch.equal(serial.test_y, parallel.test_y)


def test_image_folder_with_two_image_sizes_is_rejected_naming_a_file(tmp_path):
    members = make_image_members()
    members["test/cat/big.png"] = _encode(np.zeros((9, 9, 3), np.uint8), "PNG")
    root = write_image_source(tmp_path, members, "dir")
    with pytest.raises(ValueError, match=r"test/cat/big\.png"):
        load("imagefolder", root=root)


def test_image_folder_needs_an_existing_root(tmp_path):
    with pytest.raises(ValueError, match="root is required"):
        load("imagefolder")
    with pytest.raises(ValueError, match="does not exist"):
        load("imagefolder", root=tmp_path / "missing.zip")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="train/<class>"):
        load("imagefolder", root=tmp_path / "empty")


# --------------------------------------------------------------------------- CIFAR10-DVS


def test_cifar10_dvs_without_tonic_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tonic", None)  # makes `import tonic` fail even where it is installed
    with pytest.raises(DataUnavailableError, match=r"pip install tspike_lab\[dvs\]") as info:
        load("cifar10-dvs", root=tmp_path)
    assert isinstance(info.value, ImportError)  # also what code catching a missing package expects


def _fake_tonic(num_recordings_per_class: int = 10) -> types.ModuleType:
    """A stand-in for tonic with CIFAR10DVS and ToFrame, events of a known per-class pattern."""

    class ToFrame:
        def __init__(self, sensor_size, n_time_bins):
            self.sensor_size, self.n_time_bins = sensor_size, n_time_bins

        def __call__(self, events):
            w, h, p = self.sensor_size
            frames = np.zeros((self.n_time_bins, p, h, w), dtype=np.int16)
            frames[:, 0] = events  # events is the label here
            return frames

    class CIFAR10DVS:
        sensor_size = (128, 128, 2)
        url = "http://example.invalid/CIFAR10DVS.zip"

        def __init__(self, save_to, transform=None):
            self.transform = transform
            self.data, self.targets = [], []
            for c in range(10):
                for i in range(num_recordings_per_class):
                    self.data.append(f"{save_to}/CIFAR10DVS/{CIFAR10_NAMES[c]}/{i:04d}.aedat4")
                    self.targets.append(c)
            order = np.random.default_rng(3).permutation(len(self.data))  # os.walk order is arbitrary
            self.data = [self.data[i] for i in order]
            self.targets = [self.targets[i] for i in order]

        def __len__(self):
            return len(self.data)

        def __getitem__(self, index):
            target = self.targets[index]
            return self.transform(target), target

    module = types.ModuleType("tonic")
    module.datasets = types.SimpleNamespace(CIFAR10DVS=CIFAR10DVS)
    module.transforms = types.SimpleNamespace(ToFrame=ToFrame)
    return module


def test_cifar10_dvs_frames_split_nine_to_one_per_class_and_are_cached(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tonic", _fake_tonic())
    src = load("cifar10-dvs", root=tmp_path, num_steps=3, size=8)
    assert src.is_sequence and src.num_steps == 3 and src.in_channels == 2 and src.image_size == (8, 8)
    assert src.train_x.shape == (90, 3, 2, 8, 8) and src.test_x.shape == (10, 3, 2, 8, 8)
    assert src.train_x.dtype == torch.float32
    assert torch.bincount(src.train_y).tolist() == [9] * 10 and torch.bincount(src.test_y).tolist() == [1] * 10
    # frames were resized from 128x128: channel 0 holds the label everywhere, channel 1 zeros
    assert torch.equal(src.train_x[:, :, 0, 0, 0], src.train_y[:, None].float().expand(-1, 3))
    assert float(src.train_x[:, :, 1].abs().max()) == 0.0
    assert (tmp_path / "frames-T3-8px.pt").is_file()
    monkeypatch.setitem(sys.modules, "tonic", None)  # the cache needs no tonic
    again = load("cifar10-dvs", root=tmp_path, num_steps=3, size=8)
    assert torch.equal(again.test_x, src.test_x) and torch.equal(again.train_y, src.train_y)


def test_dvs_split_is_seeded_disjoint_and_per_class():
    labels = torch.arange(10).repeat_interleave(20)
    train, test = dvs.dvs_split(labels)
    train2, test2 = dvs.dvs_split(labels)
    assert torch.equal(train, train2) and torch.equal(test, test2)
    assert len(set(train.tolist()) & set(test.tolist())) == 0 and len(train) + len(test) == 200
    assert torch.bincount(labels[test]).tolist() == [2] * 10
    assert not torch.equal(test, dvs.dvs_split(labels, seed=1)[1])


# --------------------------------------------------------------------------- ImageNet-style folders


@pytest.fixture
def tiny_imagenet(tmp_path) -> Path:
    rng = np.random.default_rng(4)
    root = tmp_path / "imagenet"
    for split in ("train", "val"):
        for wnid in ("n02", "n01"):
            d = root / split / wnid
            d.mkdir(parents=True)
            for i in range(3):
                Image.fromarray(rng.integers(0, 256, (260, 300, 3), dtype=np.uint8)).save(d / f"img{i}.JPEG", "JPEG")
    return root


def test_imagenet_folder_gives_loader_based_source_with_224_crops(tiny_imagenet):
    src = load("imagenet", root=tiny_imagenet)
    assert not src.resident and src.train_x is None and src.classes == ["n01", "n02"]
    assert len(src.train_set) == 6 and len(src.test_set) == 6
    x, y = src.train_set[0]
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32 and y == 0
    assert src.test_set.targets == [0, 0, 0, 1, 1, 1]
    t1, _ = src.test_set[4]
    t2, _ = src.test_set[4]
    assert torch.equal(t1, t2)  # evaluation transform is deterministic
    assert -3.0 < float(t1.min()) and float(t1.max()) < 3.0  # normalized with ImageNet mean/std


def test_imagenet_loader_batches_are_reproducible_and_sharded(tiny_imagenet):
    src = load("imagenet", root=tiny_imagenet)
    loader = make_loader(src, "train", batch_size=4, num_workers=0, seed=5, epoch=1)
    batches = list(loader)
    assert len(loader) == 2 and [b[0].shape for b in batches] == [(4, 3, 224, 224), (2, 3, 224, 224)]
    assert batches[0][1].dtype == torch.int64
    again = list(make_loader(src, "train", batch_size=4, num_workers=0, seed=5, epoch=1))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(batches, again))
    other = list(make_loader(src, "train", batch_size=4, num_workers=0, seed=5, epoch=2))
    assert not torch.equal(batches[0][0], other[0][0])
    shards = [make_loader(src, "test", batch_size=2, num_workers=0, rank=r, world_size=2) for r in (0, 1)]
    assert [len(s) for s in shards] == [2, 2]
    labels = [torch.cat([y for _, y in s]).tolist() for s in shards]
    assert sorted(labels[0] + labels[1]) == [0, 0, 0, 1, 1, 1]


def test_random_resized_crop_boxes_stay_inside_the_image_and_respect_the_ratio():
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        left, top, w, h = random_resized_crop_box(300, 260, generator=g)
        assert 0 <= left and left + w <= 300 and 0 <= top and top + h <= 260 and w > 0 and h > 0
    # a very thin image falls back to a central crop at the extreme ratio
    assert random_resized_crop_box(1000, 10, scale=(0.99, 1.0), generator=g)[2:] == (13, 10)


def test_eval_transform_resizes_shorter_side_then_center_crops():
    img = Image.new("RGB", (300, 260))
    out = eval_transform(img, crop=224, resize=256)
    assert out.size == (224, 224)


# --------------------------------------------------------------------------- loaders over resident tensors


def indexed_source(n: int = 10, sequence: bool = False) -> DataSource:
    """A source whose sample i has every pixel equal to i (labels i % 3); mean 0 / std 1/255 recovers i."""
    if sequence:
        x = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1, 1).expand(n, 2, 2, 4, 4).contiguous()
        return DataSource(
            "seq",
            3,
            2,
            (4, 4),
            list("abc"),
            (0.0, 0.0),
            (1.0, 1.0),
            x,
            torch.arange(n) % 3,
            x[:4],
            torch.arange(4) % 3,
            is_sequence=True,
            num_steps=2,
        )
    x = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 4, 4).contiguous()
    return DataSource(
        "toy", 3, 1, (4, 4), list("abc"), (0.0,), (1 / 255,), x, torch.arange(n) % 3, x[:4], torch.arange(4) % 3
    )


def _ids(loader) -> list[int]:
    """Sample indices of all batches of an indexed_source loader, in order."""
    return list(itertools.chain.from_iterable(x[:, 0, 0, 0].round().long().tolist() for x, _ in loader))


def test_resident_loader_shapes_dtypes_device_and_batch_count():
    src = load("digits")
    loader = make_loader(src, "train", batch_size=100)
    batches = list(loader)
    assert len(loader) == len(batches) == math.ceil(1437 / 100)
    x, y = batches[0]
    assert x.shape == (100, 1, 8, 8) and x.dtype == torch.float32 and x.device.type == "cpu"
    assert y.shape == (100,) and y.dtype == torch.int64
    assert batches[-1][0].shape[0] == 37
    assert len(make_loader(src, "train", batch_size=100, drop_last=True)) == 14
    assert len(make_loader(src, "test", batch_size=1000)) == 1


def test_resident_loader_normalizes_with_the_source_mean_and_std():
    src = load("digits")
    ((x, y),) = list(make_loader(src, "train", batch_size=2000, shuffle=False))
    assert abs(float(x.mean())) < 1e-4 and float(x.std()) == pytest.approx(1.0, abs=1e-3)
    expected = (src.train_x.float() / 255 - src.mean[0]) / src.std[0]
    assert torch.allclose(x, expected, atol=1e-5) and torch.equal(y, src.train_y)


def test_test_split_is_not_shuffled_by_default_and_train_is():
    src = indexed_source(10)
    assert _ids(make_loader(src, "test", batch_size=3)) == [0, 1, 2, 3]
    train = _ids(make_loader(src, "train", batch_size=3))
    assert sorted(train) == list(range(10)) and train != list(range(10))


def test_same_seed_and_epoch_give_identical_batches_and_another_epoch_another_order():
    src = load("digits")
    full = Augment(crop_padding=2, flip=True, autoaugment=True, cutout=3, roll=1)

    def run(epoch, seed=0):
        return list(make_loader(src, "train", batch_size=256, augment=full, epoch=epoch, seed=seed))

    a, b, c = run(3), run(3), run(4)
    assert all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(a, b))
    assert not torch.equal(a[0][1], c[0][1])
    assert not torch.equal(a[0][1], run(3, seed=1)[0][1])
    # augmentation randomness itself follows (seed, epoch, rank), also without shuffling
    fixed = [
        next(iter(make_loader(src, "test", batch_size=64, augment=full, epoch=e, rank=r, world_size=2)))
        for e, r in ((0, 0), (0, 0), (1, 0))
    ]
    assert torch.equal(fixed[0][0], fixed[1][0]) and not torch.equal(fixed[0][0], fixed[2][0])
    assert torch.equal(fixed[0][1], fixed[2][1])


def test_two_ranks_get_disjoint_equal_shards_covering_the_set():
    src = indexed_source(10)
    shards = [_ids(make_loader(src, "train", batch_size=2, rank=r, world_size=2, epoch=7)) for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 5
    assert set(shards[0]).isdisjoint(shards[1]) and sorted(shards[0] + shards[1]) == list(range(10))
    odd = indexed_source(11)
    loaders = [make_loader(odd, "train", batch_size=4, rank=r, world_size=2) for r in (0, 1)]
    ids = [_ids(ld) for ld in loaders]
    assert len(loaders[0]) == len(loaders[1]) and len(ids[0]) == len(ids[1]) == 6
    assert set(ids[0]) | set(ids[1]) == set(range(11))


def test_resident_source_is_copied_to_the_device_once():
    src = load("digits")
    list(make_loader(src, "test", batch_size=500))
    first = src.on_device("test", "cpu")
    list(make_loader(src, "test", batch_size=500))
    assert src.on_device("test", torch.device("cpu"))[0] is first[0]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_batches_are_delivered_on_cuda_with_augmentation():
    src = load("digits")
    full = Augment(crop_padding=2, autoaugment=True, cutout=2)
    x, y = next(iter(make_loader(src, "train", batch_size=64, device="cuda", augment=full)))
    assert x.is_cuda and y.is_cuda and x.shape == (64, 1, 8, 8)


def test_sequence_batches_are_batch_first_float_and_unnormalized():
    src = indexed_source(6, sequence=True)
    x, _ = next(iter(make_loader(src, "test", batch_size=4)))
    assert x.shape == (4, 2, 2, 4, 4) and x.dtype == torch.float32
    assert x[:, 0, 0, 0, 0].tolist() == [0.0, 1.0, 2.0, 3.0]
    rolled = list(make_loader(src, "train", batch_size=6, augment=Augment(crop_padding=0, roll=2)))
    assert rolled[0][0].shape == (6, 2, 2, 4, 4)
    with pytest.raises(ValueError, match="autoaugment"):
        make_loader(src, "train", batch_size=2, augment=Augment(autoaugment=True))


# --------------------------------------------------------------------------- augmentation functions


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _images(b: int = 16, c: int = 3, h: int = 10, w: int = 12) -> torch.Tensor:
    return torch.randint(1, 256, (b, c, h, w), generator=_gen(99), dtype=torch.uint8)


def test_random_crop_takes_a_window_of_the_zero_padded_image():
    x = _images()
    out = aug.random_crop(x, 3, _gen())
    assert out.shape == x.shape and out.dtype == x.dtype
    padded = torch.nn.functional.pad(x, (3, 3, 3, 3))
    for i in range(x.shape[0]):
        windows = [padded[i, :, oy : oy + 10, ox : ox + 12] for oy in range(7) for ox in range(7)]
        assert any(torch.equal(out[i], win) for win in windows)
    assert torch.equal(out, aug.random_crop(x, 3, _gen()))
    assert not torch.equal(out, aug.random_crop(x, 3, _gen(1)))


def test_random_flip_flips_about_half_of_the_batch():
    x = _images(64)
    out = aug.random_flip(x, _gen())
    flipped = [torch.equal(out[i], x[i].flip(-1)) for i in range(64)]
    kept = [torch.equal(out[i], x[i]) for i in range(64)]
    assert all(f or k for f, k in zip(flipped, kept)) and 16 < sum(flipped) < 48


def test_random_roll_shifts_each_sample_circularly_within_range():
    x = _images(8)
    out = aug.random_roll(x, 2, _gen())
    for i in range(8):
        options = [torch.roll(x[i], (dy, dx), (1, 2)) for dy in range(-2, 3) for dx in range(-2, 3)]
        assert any(torch.equal(out[i], o) for o in options)


def test_cutout_zeroes_one_square_of_the_given_side_at_most():
    x = torch.ones(32, 3, 16, 16)
    out = aug.cutout(x, 4, _gen())
    zeros = (out == 0).all(dim=1).sum(dim=(1, 2))
    assert out.shape == x.shape and int(zeros.max()) == 16 and int(zeros.min()) >= 4  # clipped at borders
    assert torch.equal(out, aug.cutout(x, 4, _gen()))


def test_autoaugment_keeps_shape_dtype_and_is_reproducible_from_the_generator():
    x = _images(64, h=32, w=32)
    out = aug.autoaugment(x, _gen(3))
    assert out.shape == x.shape and out.dtype == torch.uint8
    assert torch.equal(out, aug.autoaugment(x, _gen(3)))
    assert not torch.equal(out, aug.autoaugment(x, _gen(4)))
    changed = sum(not torch.equal(out[i], x[i]) for i in range(64))
    assert 20 < changed < 64  # most sub-policies fire often, a few samples pass unchanged
    gray = aug.autoaugment(x[:, :1], _gen(3))
    assert gray.shape == (64, 1, 32, 32)


def _pil_rotate(img, degrees):
    rot = img.convert("RGBA").rotate(degrees)
    return Image.composite(rot, Image.new("RGBA", rot.size, (128,) * 4), rot).convert(img.mode)


FILL = (128, 128, 128)
PIL_REFERENCE = {
    "shearX": lambda im, m: im.transform(im.size, Image.AFFINE, (1, m, 0, 0, 1, 0), Image.BICUBIC, fillcolor=FILL),
    "shearY": lambda im, m: im.transform(im.size, Image.AFFINE, (1, 0, 0, m, 1, 0), Image.BICUBIC, fillcolor=FILL),
    "translateX": lambda im, m: im.transform(im.size, Image.AFFINE, (1, 0, m * im.size[0], 0, 1, 0), fillcolor=FILL),
    "translateY": lambda im, m: im.transform(im.size, Image.AFFINE, (1, 0, 0, 0, 1, m * im.size[1]), fillcolor=FILL),
    "rotate": _pil_rotate,
    "color": lambda im, m: ImageEnhance.Color(im).enhance(1 + m),
    "posterize": lambda im, m: ImageOps.posterize(im, int(m)),
    "solarize": lambda im, m: ImageOps.solarize(im, m),
    "contrast": lambda im, m: ImageEnhance.Contrast(im).enhance(1 + m),
    "sharpness": lambda im, m: ImageEnhance.Sharpness(im).enhance(1 + m),
    "brightness": lambda im, m: ImageEnhance.Brightness(im).enhance(1 + m),
    "autocontrast": lambda im, m: ImageOps.autocontrast(im),
    "equalize": lambda im, m: ImageOps.equalize(im),
    "invert": lambda im, m: ImageOps.invert(im),
}
OP_MAGNITUDES = {
    "shearX": 0.3,
    "shearY": -0.2,
    "translateX": 0.25,
    "translateY": -0.3,
    "rotate": 23.3,
    "color": 0.9,
    "posterize": 5,
    "solarize": 170.0,
    "contrast": -0.4,
    "sharpness": 0.7,
    "brightness": -0.6,
    "autocontrast": 0,
    "equalize": 0,
    "invert": 0,
}


@pytest.mark.parametrize("name", sorted(aug.AUTOAUGMENT_OPS))
def test_batched_autoaugment_op_matches_pil_on_every_sample(name):
    smooth = torch.nn.functional.interpolate(torch.rand(5, 3, 6, 6, generator=_gen(5)), size=(32, 32), mode="bilinear")
    batch = torch.cat([(smooth * 200 + 20).to(torch.uint8), _images(2, h=32, w=32)])
    magnitude = OP_MAGNITUDES[name]
    ours = aug.AUTOAUGMENT_OPS[name](batch, torch.full((batch.shape[0],), float(magnitude), dtype=torch.float64))
    for i in range(batch.shape[0]):
        img = Image.fromarray(batch[i].permute(1, 2, 0).numpy())
        reference = np.asarray(PIL_REFERENCE[name](img, magnitude))
        assert np.array_equal(ours[i].permute(1, 2, 0).numpy(), reference), f"{name} differs on sample {i}"


def test_autoaugment_policy_has_twenty_five_valid_sub_policies():
    assert len(aug.CIFAR10_POLICY) == 25
    for p1, op1, l1, p2, op2, l2 in aug.CIFAR10_POLICY:
        assert op1 in aug.AUTOAUGMENT_OPS and op2 in aug.AUTOAUGMENT_OPS
        assert 0 <= p1 <= 1 and 0 <= p2 <= 1 and 0 <= l1 <= 9 and 0 <= l2 <= 9


# --------------------------------------------------------------------------- registry specs


def test_the_registry_is_a_read_only_mapping_of_frozen_specs_in_the_documented_order():
    assert list(DATASETS) == ["digits", "cifar10", "cifar100", "imagefolder", "cifar10-dvs", "imagenet"]
    assert "cifar10" in DATASETS and "mnist" not in DATASETS
    with pytest.raises(TypeError):
        DATASETS["mnist"] = DATASETS["digits"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        DATASETS["digits"].label = "other"
    with pytest.raises(TypeError):
        DATASETS["cifar10"].augment["cutout"] = 0
    assert {n: s.label for n, s in DATASETS.items()} == {
        "digits": "digits (embedded UCI 8x8)",
        "cifar10": "CIFAR-10",
        "cifar100": "CIFAR-100",
        "imagefolder": "image folder",
        "cifar10-dvs": "CIFAR10-DVS",
        "imagenet": "ImageNet (ILSVRC-2012)",
    }


def test_each_spec_carries_the_training_augmentation_recipe_of_its_data_set():
    def recipe(crop, flip, aa, cutout, roll):
        return dict(crop_padding=crop, flip=flip, autoaugment=aa, cutout=cutout, roll=roll)

    assert {n: (dict(s.augment) if s.augment is not None else None) for n, s in DATASETS.items()} == {
        "digits": recipe(0, False, False, 0, 0),
        "cifar10": recipe(4, True, True, 16, 0),
        "cifar100": recipe(4, True, True, 16, 0),
        "imagefolder": recipe(4, True, False, 0, 0),
        "cifar10-dvs": recipe(0, True, False, 0, 5),
        "imagenet": None,
    }
    assert set(DATASETS["cifar10"].augment) <= set(inspect.signature(Augment).parameters)


def test_each_spec_states_the_input_it_yields_and_digits_matches_what_it_loads():
    shapes = {n: (s.in_channels, s.image_size) for n, s in DATASETS.items()}
    assert shapes == {
        "digits": (1, (8, 8)),
        "cifar10": (3, (32, 32)),
        "cifar100": (3, (32, 32)),
        "imagefolder": (None, None),
        "cifar10-dvs": (2, (48, 48)),
        "imagenet": (3, (224, 224)),
    }
    src = load("digits")
    spec = DATASETS["digits"]
    assert (src.in_channels, src.image_size, src.num_classes) == (spec.in_channels, spec.image_size, spec.num_classes)
    assert (len(src.train_y), len(src.test_y)) == spec.split_sizes


def test_load_dispatches_through_the_registry_and_checks_options_against_the_specs_loader(monkeypatch):
    from tspike_lab.data import registry

    calls = []
    spec = dataclasses.replace(DATASETS["digits"], load=lambda root, download, scale=1: calls.append(scale))
    monkeypatch.setattr(registry, "DATASETS", {**DATASETS, "digits": spec})
    load("digits", scale=3)
    assert calls == [3]
    with pytest.raises(ConfigError, match=r"unknown option\(s\) \['colour'\].*\['scale'\]"):
        load("digits", colour=1)


# --------------------------------------------------------------------------- describe and probe


def _image_copy(root: Path, classes: int = 10, size: int = 32, fmt: str = "JPEG") -> Path:
    rng = np.random.default_rng(5)
    for split in ("train", "test"):
        for c in range(classes):
            (root / split / f"class{c:02d}").mkdir(parents=True)
            array = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            ext = "jpg" if fmt == "JPEG" else "png"
            (root / split / f"class{c:02d}" / f"0.{ext}").write_bytes(_encode(array, fmt))
    return root


def test_describe_reads_a_cifar_layout_as_cifar_and_a_class_folder_copy_as_a_labelled_image_folder(tmp_path):
    canonical = tmp_path / "canon" / "cifar-10-batches-py"
    canonical.mkdir(parents=True)
    for data_dir in (canonical, canonical.parent, None):
        plan = describe("cifar10", None if data_dir is None else str(data_dir))
        assert (plan.source, plan.label, dict(plan.options), plan.copy) == ("cifar10", "CIFAR-10", {}, False)
    archive, _, _ = make_cifar_archive(tmp_path)
    assert describe("cifar10", archive).source == "cifar10"

    jpeg = describe("cifar10", _image_copy(tmp_path / "jpeg", classes=2))
    assert (jpeg.source, jpeg.label, jpeg.copy) == ("imagefolder", "CIFAR-10 (JPEG copy)", True)
    assert dict(jpeg.options) == dict(DATASETS["cifar10"].augment)  # the CIFAR recipe, not the image folder's
    png = describe("cifar100", _image_copy(tmp_path / "png", classes=2, fmt="PNG"))
    assert (png.source, png.label) == ("imagefolder", "CIFAR-100 (image-folder copy)")
    packed = tmp_path / "copy.tar.xz"
    with tarfile.open(packed, "w:xz") as tar:
        tar.add(tmp_path / "jpeg" / "train", arcname="train")
        tar.add(tmp_path / "jpeg" / "test", arcname="test")
    assert describe("cifar10", packed).label == "CIFAR-10 (JPEG copy)"


def test_describe_refuses_with_one_line_naming_data_dir_what_was_found_and_what_to_do(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("not data")
    cases = [
        (("cifar10", tmp_path / "missing"), r"data_dir '.*missing' does not exist.*leave data_dir unset"),
        (("cifar10", tmp_path / "notes.txt"), r"data_dir '.*notes\.txt' is a file, not an archive .*give the folder"),
        (("cifar10", tmp_path / "empty"), r"neither a CIFAR layout \(cifar-10-batches-py/, cifar-10-python\.tar\.gz\)"),
        (("digits", tmp_path / "empty"), r"'digits' is embedded in tspike_lab and takes no data_dir"),
        (("imagefolder", None), r"data_dir is required for 'imagefolder'"),
        (("imagenet", tmp_path / "missing"), r"data_dir '.*missing' does not exist"),
        (("mnist", None), r"dataset must be one of \['digits', 'cifar10'"),
    ]
    for (dataset, data_dir), pattern in cases:
        with pytest.raises(ConfigError, match=pattern) as info:
            describe(dataset, data_dir)
        assert "\n" not in str(info.value) and info.value.field in ("data_dir", "dataset")
    assert not (tmp_path / "missing").exists()  # refused, not created


def test_probe_loads_the_plan_once_and_refuses_a_copy_without_the_data_sets_classes(tmp_path):
    plan = describe("cifar10", _image_copy(tmp_path / "ten", classes=10))
    src = probe(plan)
    assert src.name == "imagefolder" and src.num_classes == 10 and src.image_size == (32, 32)
    with pytest.raises(DataIntegrityError, match=r"holds 3 classes of 3x32x32 images, but CIFAR-10 has 10"):
        probe(describe("cifar10", _image_copy(tmp_path / "three", classes=3)))
    with pytest.raises(DataIntegrityError, match=r"3x16x16 images, but CIFAR-100 has 100 classes of 3x32x32"):
        probe(describe("cifar100", _image_copy(tmp_path / "small", classes=100, size=16)))
    assert probe(describe("digits", None)).num_classes == 10


# --------------------------------------------------------------------------- data errors a user causes


def test_a_file_given_as_cifar_root_is_refused_as_a_file_not_an_archive(tmp_path):
    path = tmp_path / "cifar.bin"
    path.write_bytes(b"whatever")
    with pytest.raises(ConfigError, match=r"root '.*cifar\.bin' is a file, not an archive tspike_lab can read"):
        load("cifar10", root=path, download=False)
    assert path.read_bytes() == b"whatever"


def test_digits_refuses_a_root_because_it_is_embedded():
    with pytest.raises(ConfigError, match=r"'digits' is embedded in tspike_lab and takes no data_dir/root, got '/x'"):
        load("digits", root="/x")


def test_a_named_archive_that_does_not_exist_is_unavailable_not_a_traceback(tmp_path):
    with pytest.raises(DataUnavailableError, match=r"names an archive that does not exist.*c58f30108f"):
        load("cifar10", root=tmp_path / "cifar-10-python.tar.gz")


def test_an_image_cache_that_cannot_be_written_is_skipped_with_a_warning(tmp_path, monkeypatch, caplog):
    root = write_image_source(tmp_path, make_image_members(), "dir")

    def disk_full(path, data):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(sources, "atomic_write", disk_full)
    with caplog.at_level(logging.WARNING):
        src = load("imagefolder", root=root)
    assert src.num_classes == len(IMAGE_CLASSES)
    assert "could not write the optional cache" in caplog.text and "No space left" in caplog.text


def test_an_unreadable_image_cache_is_decoded_again(tmp_path, isolated_cache, caplog):
    root = write_image_source(tmp_path, make_image_members(), "dir")
    first = load("imagefolder", root=root)
    [cache_file] = (isolated_cache / "imagefolder").iterdir()
    cache_file.write_bytes(cache_file.read_bytes()[:100])
    with caplog.at_level(logging.WARNING):
        again = load("imagefolder", root=root)
    assert torch.equal(again.train_x, first.train_x) and "ignoring unreadable cache" in caplog.text


# --------------------------------------------------------------------------- fingerprints


def test_the_same_cifar_data_has_one_fingerprint_whichever_way_it_is_found(tmp_path):
    archive, md5, _ = make_cifar_archive(tmp_path)
    from_archive = load("cifar10", root=archive, md5=md5)
    from_folder = load("cifar10", root=tmp_path / "cifar-10-batches-py", download=False)
    from_parent = load("cifar10", root=tmp_path, download=False)
    assert len(from_archive.fingerprint) == 16
    assert from_archive.fingerprint == from_folder.fingerprint == from_parent.fingerprint
    (tmp_path / "other").mkdir()
    other, other_md5, _ = make_cifar_archive(tmp_path / "other", n=4)
    assert load("cifar10", root=other, md5=other_md5).fingerprint != from_archive.fingerprint


def test_fingerprints_are_stable_and_tell_different_data_apart(tmp_path, isolated_cache):
    assert load("digits").fingerprint == load("digits").fingerprint
    root = write_image_source(tmp_path, make_image_members(), "dir")
    decoded = load("imagefolder", root=root)
    cached = load("imagefolder", root=root)  # from the cache, fingerprint stored beside the tensors
    assert decoded.fingerprint == cached.fingerprint != load("digits").fingerprint
    assert (
        decoded.fingerprint
        == DataSource(
            "again",
            decoded.num_classes,
            3,
            decoded.image_size,
            decoded.classes,
            decoded.mean,
            decoded.std,
            decoded.train_x,
            decoded.train_y,
            decoded.test_x,
            decoded.test_y,
        ).fingerprint
    )  # same definition
    grey = load("imagefolder", root=root, channels=1)
    assert grey.fingerprint != decoded.fingerprint
    y = decoded.train_y.clone()
    y[0] = (y[0] + 1) % decoded.num_classes
    relabelled = DataSource(
        "x",
        decoded.num_classes,
        3,
        decoded.image_size,
        decoded.classes,
        decoded.mean,
        decoded.std,
        decoded.train_x,
        y,
        decoded.test_x,
        decoded.test_y,
    )
    assert relabelled.fingerprint != decoded.fingerprint


def test_a_loader_based_source_is_fingerprinted_by_its_file_list(tiny_imagenet):
    first = load("imagenet", root=tiny_imagenet).fingerprint
    assert first == load("imagenet", root=tiny_imagenet).fingerprint
    Image.new("RGB", (300, 260)).save(tiny_imagenet / "train" / "n01" / "extra.JPEG")
    assert load("imagenet", root=tiny_imagenet).fingerprint != first


def test_distributed_test_shards_mark_the_wrapped_copies_so_each_sample_counts_once():
    from tspike_lab.data import load, make_loader

    source = load("digits")
    n = source.test_x.shape[0]  # 360: make it uneven for 7 ranks
    seen = []
    for rank in range(7):
        loader = make_loader(source, "test", batch_size=16, rank=rank, world_size=7)
        ys = torch.cat([y for _, y in loader])
        assert loader.keep.shape == ys.shape
        seen.append(ys[loader.keep])
    counted = torch.cat(seen)
    assert counted.numel() == n  # 360 = 7 x 52 - 4 wrapped copies, not counted
    assert torch.equal(counted.sort().values, source.test_y.sort().values)
    assert make_loader(source, "test", batch_size=16).keep is None  # one process: nothing wrapped


def test_the_imagenet_walk_lists_files_in_os_walk_order_without_following_folder_links(tmp_path):
    from tspike_lab.data.imagenet import _walk_files

    for rel in ["b/2.png", "a/z/1.png", "a/0.png", "a/y.png", "c.png", "B/x.png"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    (tmp_path / "link").symlink_to(tmp_path / "a")
    (tmp_path / "broken.png").symlink_to(tmp_path / "nowhere")
    expected = []
    for folder, folders, files in os.walk(tmp_path):
        folders.sort()
        expected += [os.path.join(folder, f) for f in sorted(files)]
    walked = list(_walk_files(str(tmp_path)))
    assert [e.path for e in walked] == expected and len(expected) == 7
    assert [e.name for e in walked if not e.is_file()] == ["broken.png"]
