import json
import math
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor

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
    for key in ("python", "torch", "snntorch", "numpy", "cuda_available", "cuda_version", "device_name",
                "cpu_count", "platform", "git_commit", "git_dirty"):
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
