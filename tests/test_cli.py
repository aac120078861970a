"""The ``tspike`` command line: options from TrainConfig, one-line errors with exit codes, training output."""

import dataclasses
import json
import os
import subprocess
import sys
import types

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


def _tspike(*args):
    """``python -m tspike_lab ARGS`` as a real process (one test: the exit status and stderr of a process)."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, "-m", "tspike_lab", *args], capture_output=True, text=True, env=env, timeout=600
    )


def _tspike_here(capsys, *args):
    """The same command in this process (cli.main): its exit status, stdout and stderr."""
    code = cli.main(list(args))
    out = capsys.readouterr()
    return types.SimpleNamespace(returncode=code, stdout=out.out, stderr=out.err)


def test_the_cli_has_an_option_for_every_config_field():
    parser = cli.build_parser()
    ns = parser.parse_args(["train"])
    assert cli.config_from_args(ns) == TrainConfig()
    ns = parser.parse_args(
        [
            "train",
            "--num-steps",
            "4",
            "--no-amp",
            "--width",
            "none",
            "--grad-clip",
            "1.5",
            "--flip",
            "--out-dir",
            "runs/x",
            "--label-smoothing",
            "0.1",
        ]
    )
    config = cli.config_from_args(ns)
    assert (
        config.num_steps,
        config.amp,
        config.width,
        config.grad_clip,
        config.flip,
        config.out_dir,
        config.label_smoothing,
    ) == (4, False, None, 1.5, True, "runs/x", 0.1)
    help_text = parser._subparsers._group_actions[0].choices["train"].format_help()
    for f in dataclasses.fields(TrainConfig):
        assert "--" + f.name.replace("_", "-") in help_text


def _train_actions():
    parser = cli.build_parser()
    train = parser._subparsers._group_actions[0].choices["train"]
    return {a.dest: a for a in train._actions}


def test_the_cli_help_of_every_option_is_the_fields_metadata_and_its_default():
    actions = _train_actions()
    for f in dataclasses.fields(TrainConfig):
        assert actions[f.name].help == f"{f.metadata['help']} (default: {f.default})".replace("%", "%%"), f.name
    assert not hasattr(cli, "_HELP")  # the metadata is the one source


def _imagenet_config():
    return TrainConfig(
        dataset="imagenet",
        data_dir="/data/in1k",
        arch="resnet34",
        num_steps=4,
        seed=1000,
        batch_size=40,
        sync_bn=True,
        amp=False,
        amp_dtype="float16",
        lr=0.1,
        weight_decay=1e-4,
        max_steps_per_epoch=5,
        out_dir="runs/x",
        width=None,
        flip=False,
        autoaugment=None,
        grad_clip=0.7,
        label_smoothing=1 / 3,
        cutout=0,
        progress=False,
        resume=False,
    )


@pytest.mark.parametrize("config", [TrainConfig(), _imagenet_config()], ids=["default", "imagenet"])
def test_a_config_passed_as_json_to_torchrun_rebuilds_the_same_config(config, tmp_path):
    from tspike_lab.reproduce.run import torchrun_command

    path = tmp_path / "config.json"
    path.write_text(json.dumps(config.to_dict()))
    cmd = torchrun_command(path, 2)
    assert cmd[cmd.index("-m", 4) :] == ["-m", "tspike_lab", "train", "--config", str(path)]
    ns = cli.build_parser().parse_args(cmd[cmd.index("train", 4) :])
    assert cli.config_from_args(ns) == config
    # options given with --config override it
    ns = cli.build_parser().parse_args(["train", "--config", str(path), "--epochs", "3", "--no-resume"])
    assert cli.config_from_args(ns) == dataclasses.replace(config, epochs=3, resume=False)


def test_a_config_file_that_is_not_a_json_object_of_fields_ends_in_one_line(tmp_path, capsys, no_data):
    for text, words in (
        ("[1, 2]", "holds list, not a JSON object"),
        ("{oops", "is not JSON"),
        ('{"epoch": 3}', "unknown TrainConfig field(s) ['epoch']"),
        ('{"epochs": 0}', "--epochs must be an int >= 1, got 0"),
    ):
        (tmp_path / "c.json").write_text(text)
        assert cli.main(["train", "--config", str(tmp_path / "c.json")]) == 2
        err = capsys.readouterr().err
        assert words in err and err.count("\n") == 1, err
    assert cli.main(["train", "--config", str(tmp_path / "missing.json")]) == 2
    assert "cannot be read" in capsys.readouterr().err


def test_the_cli_rejects_a_bad_value_with_the_field_name(capsys, no_data):
    assert cli.main(["train", "--epochs", "0"]) == 2
    err = capsys.readouterr().err
    assert "epochs" in err and err.count("\n") == 1  # one line, no traceback
    assert cli.main(["train", "--arch", "resnet50"]) == 2
    assert "--arch must be one of ['resnet19'" in capsys.readouterr().err


def test_the_cli_trains_and_prints_the_final_metrics_as_json(capsys, tmp_path):
    code = cli.main(
        [
            "train",
            "--width",
            "8",
            "--batch-size",
            "32",
            "--epochs",
            "1",
            "--max-steps-per-epoch",
            "5",
            "--max-eval-steps",
            "2",
            "--no-progress",
            "--new-run-in",
            str(tmp_path),
        ]
    )
    assert code == 0
    final = json.loads(capsys.readouterr().out)
    assert final["epoch"] == 1 and final["step"] == 5 and 0 <= final["test_acc"] <= 1
    (run_dir,) = tmp_path.iterdir()
    assert final["run_dir"] == str(run_dir) and (run_dir / "checkpoint.pt").exists()


@pytest.mark.slow  # the one real `python -m tspike_lab` process
def test_a_learning_rate_that_blows_the_loss_up_exits_3_with_one_line(tmp_path):
    done = _tspike(
        "train",
        "--dataset",
        "digits",
        "--arch",
        "small",
        "--width",
        "8",
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--lr",
        "1e6",
        "--max-steps-per-epoch",
        "4",
        "--no-progress",
        "--out-dir",
        str(tmp_path / "r"),
    )
    assert done.returncode == 3, done.stderr
    assert done.stderr.count("\n") == 1 and "training diverged" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "r" / "checkpoint.pt").exists()


def test_an_out_dir_that_is_a_file_or_a_truncated_checkpoint_ends_in_one_line_naming_it(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    done = _tspike_here(capsys, "train", "--epochs", "1", "--no-progress", "--out-dir", str(afile))
    assert done.returncode == 2 and "is a file, not a folder" in done.stderr and done.stderr.count("\n") == 1
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(b"PK\x03\x04 truncated")
    done = _tspike_here(capsys, "train", "--epochs", "1", "--no-progress", "--out-dir", str(run))
    assert done.returncode == 2 and "cannot be read" in done.stderr and str(run / "checkpoint.pt") in done.stderr
    assert "Traceback" not in done.stderr and done.stderr.count("\n") == 1
    (run / "checkpoint.pt").write_bytes(b"")
    done = _tspike_here(capsys, "train", "--epochs", "1", "--no-progress", "--out-dir", str(run))
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
    code = cli.main(
        [
            "train",
            "--width",
            "4",
            "--epochs",
            "2",
            "--max-steps-per-epoch",
            "2",
            "--max-eval-steps",
            "1",
            "--no-progress",
            "--out-dir",
            str(out),
        ]
    )
    assert code == 2
    assert torch.load(out / "checkpoint.pt", weights_only=True)["epoch"] == 1


@pytest.mark.parametrize(
    "args, message",
    [
        (["--dataset", "cifar10", "--data-dir", "/no/such/folder"], "--data-dir must be an existing folder or archive"),
        (["--dataset", "digits", "--data-dir", "."], "--data-dir must be None for 'digits'"),
        (["--dataset", "digits", "--arch", "vgg16"], "'vgg16' needs at least 32x32"),
    ],
)
def test_a_wrong_data_dir_or_arch_fails_in_one_line_before_any_folder_is_made(args, message, tmp_path, capsys):
    done = _tspike_here(capsys, "train", *args, "--epochs", "1", "--no-progress", "--out-dir", str(tmp_path / "run"))
    assert done.returncode == 2 and message in done.stderr and done.stderr.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_every_front_end_ends_a_user_error_in_one_line_with_its_exit_code(tmp_path, capsys, no_data):
    from tspike_lab import demo, reproduce

    for main, argv, words in (
        (cli.main, ["train", "--epochs", "0"], "tspike train: error: --epochs must be an int >= 1, got 0"),
        (
            reproduce.main,
            ["aggregate", str(tmp_path / "none")],
            "python -m tspike_lab.reproduce aggregate: error: could not read 1 table run record(s)",
        ),
        (
            demo.main,
            ["--epochs", "0", "--out-dir", str(tmp_path / "demo")],
            "python -m tspike_lab.demo: error: capacity: parameter epochs must be an int >= 1, got 0",
        ),
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith(words) and err.count("\n") == 1, err
    assert not (tmp_path / "demo").exists()


def test_the_front_end_guard_gives_ctrl_c_130_a_diverged_run_3_and_prints_on_rank_0_only(capsys, monkeypatch):
    from tspike_lab.errors import TrainingDiverged
    from tspike_lab.frontend import run_guarded

    def interrupt():
        raise KeyboardInterrupt

    def diverge():
        raise TrainingDiverged("training diverged at epoch 1, step 2\n(detail)")

    assert run_guarded("prog", interrupt) == 130 and capsys.readouterr().err == "prog: interrupted (Ctrl-C)\n"
    assert run_guarded("prog", interrupt, interrupted=lambda: "kept it") == 130
    assert capsys.readouterr().err == "prog: kept it\n"
    assert run_guarded("prog", diverge) == 3
    assert capsys.readouterr().err == "prog: error: training diverged at epoch 1, step 2 (detail)\n"
    assert run_guarded("prog", lambda: 0) == 0
    monkeypatch.setenv("RANK", "1")
    assert run_guarded("prog", diverge) == 3 and capsys.readouterr().err == ""
