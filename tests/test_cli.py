"""The ``tspike`` command line: options from TrainConfig, one-line errors with exit codes, training output."""
import dataclasses
import json
import os
import subprocess
import sys

import pytest
import torch

import tspike_lab.data
from tspike_lab import cli
from tspike_lab.config import TrainConfig


@pytest.fixture
def no_data(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("data.load was called before the config was validated")

    monkeypatch.setattr(tspike_lab.data, "load", refuse)


def _tspike(*args, cwd=None):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "tspike_lab", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=300)


def test_the_cli_has_an_option_for_every_config_field():
    parser = cli.build_parser()
    ns = parser.parse_args(["train"])
    assert cli.config_from_args(ns) == TrainConfig()
    ns = parser.parse_args(["train", "--num-steps", "4", "--no-amp", "--width", "none", "--grad-clip", "1.5",
                            "--flip", "--out-dir", "runs/x", "--label-smoothing", "0.1"])
    config = cli.config_from_args(ns)
    assert (config.num_steps, config.amp, config.width, config.grad_clip, config.flip, config.out_dir,
            config.label_smoothing) == (4, False, None, 1.5, True, "runs/x", 0.1)
    help_text = parser._subparsers._group_actions[0].choices["train"].format_help()
    for f in dataclasses.fields(TrainConfig):
        assert "--" + f.name.replace("_", "-") in help_text


def test_the_cli_rejects_a_bad_value_with_the_field_name(capsys, no_data):
    assert cli.main(["train", "--epochs", "0"]) == 2
    err = capsys.readouterr().err
    assert "epochs" in err and err.count("\n") == 1  # one line, no traceback
    assert cli.main(["train", "--arch", "resnet50"]) == 2
    assert "--arch must be one of ['resnet19'" in capsys.readouterr().err


def test_the_cli_trains_and_prints_the_final_metrics_as_json(capsys, tmp_path):
    code = cli.main(["train", "--width", "8", "--batch-size", "32", "--epochs", "1", "--max-steps-per-epoch", "5",
                     "--max-eval-steps", "2", "--no-progress", "--new-run-in", str(tmp_path)])
    assert code == 0
    final = json.loads(capsys.readouterr().out)
    assert final["epoch"] == 1 and final["step"] == 5 and 0 <= final["test_acc"] <= 1
    (run_dir,) = tmp_path.iterdir()
    assert final["run_dir"] == str(run_dir) and (run_dir / "checkpoint.pt").exists()


def test_a_learning_rate_that_blows_the_loss_up_exits_3_with_one_line(tmp_path):
    done = _tspike("train", "--dataset", "digits", "--arch", "small", "--width", "8", "--epochs", "1", "--batch-size",
                   "16", "--lr", "1e6", "--max-steps-per-epoch", "4", "--no-progress", "--out-dir", str(tmp_path / "r"))
    assert done.returncode == 3, done.stderr
    assert done.stderr.count("\n") == 1 and "training diverged" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "r" / "checkpoint.pt").exists()


def test_an_out_dir_that_is_a_file_or_a_truncated_checkpoint_ends_in_one_line_naming_it(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    done = _tspike("train", "--epochs", "1", "--no-progress", "--out-dir", str(afile))
    assert done.returncode == 2 and "is a file, not a folder" in done.stderr and done.stderr.count("\n") == 1
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(b"PK\x03\x04 truncated")
    done = _tspike("train", "--epochs", "1", "--no-progress", "--out-dir", str(run))
    assert done.returncode == 2 and "cannot be read" in done.stderr and str(run / "checkpoint.pt") in done.stderr
    assert "Traceback" not in done.stderr and done.stderr.count("\n") == 1
    (run / "checkpoint.pt").write_bytes(b"")
    done = _tspike("train", "--epochs", "1", "--no-progress", "--out-dir", str(run))
    assert done.returncode == 2 and "checkpoint" in done.stderr and "Traceback" not in done.stderr


def test_a_full_disk_while_saving_ends_in_one_line_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    from tspike_lab import checkpoint

    real = checkpoint._save_atomic
    calls = {"n": 0}

    def full_on_the_second(state, path):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 133824 vs 133712")
        real(state, path)

    monkeypatch.setattr(checkpoint, "_save_atomic", full_on_the_second)
    out = tmp_path / "run"
    code = cli.main(["train", "--width", "4", "--epochs", "2", "--max-steps-per-epoch", "2", "--max-eval-steps", "1",
                     "--no-progress", "--out-dir", str(out)])
    assert code == 2
    assert torch.load(out / "checkpoint.pt", weights_only=True)["epoch"] == 1


@pytest.mark.parametrize("args, message", [
    (["--dataset", "cifar10", "--data-dir", "/no/such/folder"], "--data-dir must be an existing folder or archive"),
    (["--dataset", "digits", "--data-dir", "."], "--data-dir must be None for 'digits'"),
    (["--dataset", "digits", "--arch", "vgg16"], "'vgg16' needs at least 32x32"),
])
def test_a_wrong_data_dir_or_arch_fails_in_one_line_before_any_folder_is_made(args, message, tmp_path):
    done = _tspike("train", *args, "--epochs", "1", "--no-progress", "--out-dir", str(tmp_path / "run"))
    assert done.returncode == 2 and message in done.stderr and done.stderr.count("\n") == 1
    assert not (tmp_path / "run").exists()
