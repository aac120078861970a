import json
import math
import os
import stat
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tspike_lab import results


def test_two_run_dirs_with_the_same_name_are_different_new_folders(tmp_path):
    a = results.new_run_dir(tmp_path, "cifar10")
    b = results.new_run_dir(tmp_path, "cifar10")
    assert a != b
    assert a.is_dir() and b.is_dir()
    assert a.parent == b.parent == tmp_path
    assert a.name.startswith("cifar10-") and b.name.startswith("cifar10-")
    assert list(a.iterdir()) == [] and list(b.iterdir()) == []


def test_concurrent_run_dirs_never_collide(tmp_path):
    with ThreadPoolExecutor(8) as pool:
        dirs = list(pool.map(lambda _: results.new_run_dir(tmp_path, "x"), range(64)))
    assert len(set(dirs)) == 64


def test_new_run_dir_retries_when_the_name_is_taken(tmp_path, monkeypatch):
    suffixes = iter(["aaaaaa", "aaaaaa", "bbbbbb"])
    monkeypatch.setattr(results.secrets, "token_hex", lambda n: next(suffixes))
    monkeypatch.setattr(results.time, "strftime", lambda fmt: "20240101-000000")
    first = results.new_run_dir(tmp_path, "r")
    second = results.new_run_dir(tmp_path, "r")
    assert first.name == "r-20240101-000000-aaaaaa"
    assert second.name == "r-20240101-000000-bbbbbb"


def test_new_run_dir_rejects_a_name_with_a_path_separator(tmp_path):
    with pytest.raises(ValueError, match="name"):
        results.new_run_dir(tmp_path, "a/b")


def test_environment_reports_versions_hardware_and_git_state():
    env = results.environment()
    for key in (
        "python",
        "torch",
        "snntorch",
        "numpy",
        "cuda_available",
        "cuda_version",
        "device_name",
        "cpu_count",
        "platform",
        "git_commit",
        "git_dirty",
    ):
        assert key in env
    json.dumps(env)  # serializable
    import torch

    assert env["torch"] == torch.__version__
    assert env["cuda_available"] == torch.cuda.is_available()
    repo = os.path.dirname(os.path.dirname(results.__file__))
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True)
    if head.returncode == 0:
        assert env["git_commit"] == head.stdout.strip()
        assert isinstance(env["git_dirty"], bool)


def test_environment_tolerates_a_missing_git(monkeypatch):
    def no_git(*args, **kwargs):
        raise FileNotFoundError("git")

    monkeypatch.setattr(results.subprocess, "run", no_git)
    env = results.environment()
    assert env["git_commit"] is None and env["git_dirty"] is None


def test_write_json_atomic_replaces_the_file_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "sub" / "result.json"
    results.write_json_atomic(path, {"acc": 0.5})
    results.write_json_atomic(path, {"acc": 0.75, "runs": [1, 2]})
    assert json.loads(path.read_text()) == {"acc": 0.75, "runs": [1, 2]}
    assert sorted(p.name for p in path.parent.iterdir()) == ["result.json"]


def test_write_json_atomic_keeps_the_old_file_when_serialization_fails(tmp_path):
    path = tmp_path / "result.json"
    results.write_json_atomic(path, {"acc": 0.5})
    with pytest.raises(TypeError):
        results.write_json_atomic(path, {"acc": object()})
    assert json.loads(path.read_text()) == {"acc": 0.5}
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


@pytest.fixture
def umask():
    """Set the process umask for one test, then restore it."""
    saved = os.umask(0o022)
    os.umask(saved)
    yield lambda mask: os.umask(mask)
    os.umask(saved)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600), (0o027, 0o640)])
def test_atomically_written_files_get_the_mode_the_umask_gives_not_mkstemps_0600(tmp_path, umask, mask, mode):
    umask(mask)
    for name, write in (
        ("metrics.json", lambda p: results.write_json_atomic(p, {"acc": 1.0})),
        ("notes.txt", lambda p: results.write_text_atomic(p, "x")),
        ("blob.bin", lambda p: results.atomic_write(p, b"\0\1")),
    ):
        write(tmp_path / name)
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name
    umask(0o022)
    results.atomic_write(tmp_path / "blob.bin", b"again")  # replacing a file takes the current umask too
    assert stat.S_IMODE((tmp_path / "blob.bin").stat().st_mode) == 0o644


def test_atomic_write_takes_bytes_str_or_a_writer_callable_such_as_torch_save(tmp_path):
    import torch

    results.atomic_write(tmp_path / "a.bin", b"\xff\x00")
    results.atomic_write(tmp_path / "b.txt", "ünïcode\n")
    t = torch.arange(5)
    results.atomic_write(tmp_path / "c.pt", lambda f: torch.save({"t": t}, f))
    assert (tmp_path / "a.bin").read_bytes() == b"\xff\x00"
    assert (tmp_path / "b.txt").read_bytes() == "ünïcode\n".encode()
    assert torch.equal(torch.load(tmp_path / "c.pt", weights_only=True)["t"], t)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "b.txt", "c.pt"]
    with pytest.raises(TypeError, match="bytes, str or a callable"):
        results.atomic_write(tmp_path / "d", 42)


def test_atomic_write_keeps_the_old_file_and_no_temp_when_the_writer_fails_midway(tmp_path):
    path = tmp_path / "checkpoint.pt"
    results.atomic_write(path, b"old")

    def torn(f):
        f.write(b"half of the new")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        results.atomic_write(path, torn)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_atomic_write_fsyncs_the_file_then_renames_then_fsyncs_the_folder(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", "folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", Path(dst).name))
        real_replace(src, dst)

    monkeypatch.setattr(results.os, "fsync", fsync)
    monkeypatch.setattr(results.os, "replace", replace)
    results.atomic_write(tmp_path / "x.json", "{}")
    assert events == [("fsync", "file"), ("replace", "x.json"), ("fsync", "folder")]


def test_read_jsonl_ignores_a_torn_last_line(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"epoch": 1}\n{"epoch": 2}\n{"epo')
    assert results.read_jsonl(path) == [{"epoch": 1}, {"epoch": 2}]


def test_mean_std_uses_the_sample_standard_deviation():
    mean, std = results.mean_std([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5
    assert std == pytest.approx(math.sqrt(5 / 3))  # ddof=1: sum of squares 5 over n-1 = 3


def test_mean_std_of_one_run_has_unknown_spread():
    mean, std = results.mean_std([0.9])
    assert mean == 0.9 and math.isnan(std)


def test_mean_std_of_nothing_is_an_error():
    with pytest.raises(ValueError):
        results.mean_std([])


def test_read_regular_reads_a_file_under_its_cap_and_refuses_one_above_or_a_folder(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"12345")
    assert results.read_regular(path) == b"12345" and results.read_regular(path, max_bytes=5) == b"12345"
    with pytest.raises(results.SpecialFileError, match="holds 5 bytes, more than the 4 allowed"):
        results.read_regular(path, max_bytes=4)
    with pytest.raises(results.SpecialFileError, match="is a folder, not a regular file"):
        results.read_regular(tmp_path)
    with results.open_regular(path, "r") as f:
        assert f.read() == "12345"


def test_a_folder_lock_refuses_a_second_holder_at_once_and_is_free_again_when_closed(tmp_path):
    from tspike_lab.results import lock_folder

    first = lock_folder(tmp_path)
    try:
        with pytest.raises(BlockingIOError):  # a second open file description: as another process would be
            lock_folder(tmp_path)
    finally:
        first.close()
    lock_folder(tmp_path).close()
    assert (tmp_path / ".lock").is_file()
