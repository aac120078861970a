"""Building and loading the C kernel (tspike_lab.kernels.build, cpu): the cache key, the folders a
library may come from, and the checks of the loaded library against the Python side."""

import ctypes
import hashlib
import os
import stat
import tempfile
from pathlib import Path

import pytest
import torch

from tspike_lab import kernels
from tspike_lab.kernels import build, cpu

HAS_C = cpu.available()
needs_c = pytest.mark.skipif(not HAS_C, reason=f"C kernel unavailable: {cpu.unavailable_reason()}")
# A library that compiles in a fraction of a second: the loader is the same for it and the kernel.
TINY = {"tiny.c": b"int answer(void) { return 42; }\n"}
TINY_FLAGS = [["-O1", "-fPIC", "-shared"]]


def _has_compiler() -> bool:
    try:
        build.find_compiler()
    except build.KernelUnavailable:
        return False
    return True


needs_cc = pytest.mark.skipif(not _has_compiler(), reason="no C compiler")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """``(home, temp)``: the configured cache and the predictable temp folder, both under ``tmp_path``."""
    home = tmp_path / "home-cache"
    monkeypatch.setenv("TSPIKE_KERNEL_CACHE", str(home))
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    return home, tmp / f"tspike_lab-kernels-{os.getuid()}"


@pytest.fixture
def opened(monkeypatch):
    """Every path the loader opens as a library, in order."""
    paths = []
    real = build._open

    def record(path):
        paths.append(Path(path))
        return real(path)

    monkeypatch.setattr(build, "_open", record)
    return paths


def _tiny_name() -> str:
    _, version = build.find_compiler()
    return f"tiny_{build.library_key(TINY, TINY_FLAGS[0], version)}.so"


def _unusable_home(home: Path) -> None:
    home.parent.mkdir(parents=True, exist_ok=True)
    home.write_text("a file where the cache folder should be")


# -- the loaded C kernel and the Python side ---------------------------------------------------------------


@needs_c
def test_the_c_kernel_is_compiled_with_the_block_size_python_sizes_its_partial_sums_by():
    lib = cpu.library()
    assert lib.lif_chunk() == cpu.CHUNK
    assert f"-DCHUNK={cpu.CHUNK}" in cpu._flag_sets()[0]
    source = cpu._sources()["lif_cpu.c"].decode()
    assert "#define CHUNK" not in source and "#error" in source  # defined once, in Python
    with pytest.raises(
        build.KernelUnavailable,
        match=f"compiled with CHUNK={cpu.CHUNK}, cpu.py sizes its partial sums by CHUNK={2 * cpu.CHUNK}",
    ):
        cpu.check_abi(lib, chunk=2 * cpu.CHUNK)


class _WrongArgs(ctypes.Structure):
    """lif_args with sg_param as a float: every later field moves."""

    _fields_ = [(name, ctypes.c_float if name == "sg_param" else kind) for name, kind in cpu._Args._fields_]


@needs_c
def test_a_ctypes_mirror_that_disagrees_with_lif_args_makes_the_c_kernel_unavailable_with_the_reason(monkeypatch):
    cpu.check_abi(cpu.library())  # the real mirror agrees
    with pytest.raises(
        build.KernelUnavailable,
        match=r"lif_args in lif_cpu.c and its ctypes mirror _WrongArgs "
        r"disagree: size and field offsets \[104, ",
    ):
        cpu.check_abi(cpu.library(), _WrongArgs)
    x = torch.randn(3, 2, 40)
    spec = kernels.make_spec(
        beta=0.25, threshold=0.5, kind="ternary", reset_mechanism="zero", spike_grad=None, detach_reset=False
    )
    monkeypatch.setattr(cpu, "_Args", _WrongArgs)
    cpu._load.cache_clear()
    try:
        assert "disagree" in cpu.unavailable_reason() and not cpu.available()
        assert kernels.select_backend(x, spec) == "fused_torch"
        with pytest.raises(ValueError, match="backend='fused' cannot run this input: lif_args in lif_cpu.c"):
            kernels.lif_seq(x, backend="fused")
    finally:
        monkeypatch.undo()
        cpu._load.cache_clear()
    assert cpu.available()


def test_the_cache_key_changes_with_every_source_file_and_every_flag():
    sources = {"lif_cpu.c": b"int f(void);", "lif_cpu_template.h": b"/* v1 */"}
    flags = ["-O3", "-DCHUNK=4096"]
    key = build.library_key(sources, flags, "gcc 12")
    assert key == build.library_key(dict(sources), list(flags), "gcc 12") and len(key) == 16
    assert build.library_key({**sources, "lif_cpu_template.h": b"/* v2 */"}, flags, "gcc 12") != key
    assert build.library_key({**sources, "lif_cpu.c": b"int g(void);"}, flags, "gcc 12") != key
    assert build.library_key(sources, ["-O3", "-DCHUNK=2048"], "gcc 12") != key
    assert build.library_key(sources, flags, "gcc 13") != key
    assert set(cpu._sources()) == {"lif_cpu.c", "lif_cpu_template.h"}


def test_the_c_sources_ship_with_the_package():
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: the test extra installs tomli
        import tomli as tomllib

    root = Path(__file__).resolve().parents[1]
    data = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["tspike_lab"]
    for name in cpu.SOURCES:
        assert (root / "tspike_lab" / "kernels" / name).is_file()
        assert any(Path("kernels", name).match(pattern) for pattern in data), (name, data)


# -- where a library may come from --------------------------------------------------------------------------


def test_the_temp_folder_is_created_private_when_the_home_cache_is_unusable(cache):
    home, temp = cache
    _unusable_home(home)
    problems = []
    assert build.cache_folders(problems) == [temp]
    assert stat.S_IMODE(temp.stat().st_mode) == 0o700
    assert len(problems) == 1 and str(home) in problems[0]


def _owned_by_someone_else(monkeypatch, folder: Path) -> None:
    real = os.lstat

    def lstat(path, *args, **kwargs):
        st = real(path, *args, **kwargs)
        if Path(path) == folder:
            fields = list(st[:10])
            fields[4] = os.getuid() + 1  # st_uid
            return os.stat_result(fields)
        return st

    monkeypatch.setattr(build.os, "lstat", lstat)


@needs_cc
@pytest.mark.parametrize("flaw", ["owned-by-another-user", "world-writable", "a-symlink"])
def test_a_temp_folder_that_is_not_ours_alone_is_refused_and_its_library_never_loaded(cache, opened, monkeypatch, flaw):
    home, temp = cache
    _unusable_home(home)
    name = _tiny_name()
    planted = temp
    if flaw == "a-symlink":
        planted = temp.parent / "elsewhere"
        temp.symlink_to(planted)
    planted.mkdir(mode=0o700)
    # a library with the expected name and a sidecar that matches it: what a squatter would leave
    (planted / name).write_bytes(b"not a library")
    (planted / (name + ".sha256")).write_text(_sha(planted / name))
    if flaw == "owned-by-another-user":
        _owned_by_someone_else(monkeypatch, temp)
    elif flaw == "world-writable":
        temp.chmod(0o777)
    problems = []
    assert build.cache_folders(problems) == []
    assert {
        "owned-by-another-user": "owned by uid",
        "world-writable": "writable by group or others (mode 777)",
        "a-symlink": "is a symlink",
    }[flaw] in problems[-1]
    lib = build.load_library("tiny", TINY, TINY_FLAGS)
    assert lib.answer() == 42
    assert len(opened) == 1 and opened[0].name == name
    private = opened[0].parent
    assert private.parent == temp.parent and private.name.startswith("tspike_lab-kernels-") and private != temp
    assert not private.exists()  # built, loaded, removed
    assert (planted / name).read_bytes() == b"not a library"  # untouched, never opened


@needs_cc
@pytest.mark.parametrize("tamper", ["no-sidecar", "wrong-sidecar", "group-writable-library"])
def test_a_cached_library_that_fails_its_check_is_rebuilt_before_it_is_loaded(cache, opened, tamper):
    home, _ = cache
    name = _tiny_name()
    home.mkdir(parents=True, mode=0o700)
    lib_path = home / name
    lib_path.write_bytes(b"not a library")
    if tamper == "wrong-sidecar":
        (home / (name + ".sha256")).write_text("0" * 64)
    elif tamper == "group-writable-library":
        (home / (name + ".sha256")).write_text(_sha(lib_path))
        lib_path.chmod(0o775)
    lib = build.load_library("tiny", TINY, TINY_FLAGS)
    assert lib.answer() == 42
    assert opened == [lib_path]
    assert lib_path.read_bytes() != b"not a library"
    assert (home / (name + ".sha256")).read_text().strip() == _sha(lib_path)
    assert build.library_problem(lib_path) is None


@needs_cc
def test_a_library_is_built_once_then_loaded_from_the_cache_whatever_the_umask(cache, opened, monkeypatch):
    home, _ = cache
    compiled = []
    real = build.compile_library
    monkeypatch.setattr(build, "compile_library", lambda *a: (compiled.append(a[-1]), real(*a))[1])
    old = os.umask(0o002)  # a group-writable default must not make our own library unloadable
    try:
        first = build.load_library("tiny", TINY, TINY_FLAGS)
        second = build.load_library("tiny", TINY, TINY_FLAGS)
    finally:
        os.umask(old)
    assert first.answer() == second.answer() == 42
    assert compiled == [home / _tiny_name()] and opened == [home / _tiny_name()] * 2
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert not stat.S_IMODE(opened[0].stat().st_mode) & (stat.S_IWGRP | stat.S_IWOTH)


@needs_cc
def test_a_compile_error_names_the_compiler_and_flags_and_tries_the_next_flags(cache):
    refused = r"(?s)failed \(-O1 -fPIC -shared\).*failed \(-O0 -fPIC -shared\)"
    with pytest.raises(build.KernelUnavailable, match=refused) as e:
        build.load_library(
            "broken", {"broken.c": b"this is not C\n"}, [["-O1", "-fPIC", "-shared"], ["-O0", "-fPIC", "-shared"]]
        )
    assert str(e.value).count(" failed (") == 2  # the compiler's refusal is not retried in another folder
