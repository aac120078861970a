import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from torch import nn

import tspike_lab.data
from tspike_lab import config as config_mod
from tspike_lab import hardware
from tspike_lab import train as train_mod
from tspike_lab.config import TrainConfig
from tspike_lab.errors import ConfigError, RunFolderError, TrainingDiverged
from tspike_lab.kernels import cpu
from tspike_lab.models import build_model, spiking_layers
from tspike_lab.train import History, evaluate, lr_at, param_groups, read_metrics, train

# A digits run that trains in about a second: 44 steps of 32 per epoch.
FAST = dict(dataset="digits", arch="small", width=8, num_steps=2, batch_size=32, progress=False)
TIMING = ("epoch_time_s", "images_per_s")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # The tiny models gain nothing from a second thread, and OpenMP spin-waiting makes
    # two threads crawl when another process holds a core.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _no_timing(rows):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


# --------------------------------------------------------------------------- validation

BAD_VALUES = [
    ("dataset", "mnist"),
    ("arch", "resnet50"),
    ("neuron", "lif"),
    ("amplitude", "neuron"),
    ("optimizer", "adam"),
    ("schedule", "step"),
    ("loss", "mse"),
    ("epochs", 0),
    ("epochs", 2.5),
    ("batch_size", 0),
    ("num_steps", 0),
    ("lr", 0.0),
    ("lr", -0.1),
    ("lr", float("nan")),
    ("momentum", 1.0),
    ("weight_decay", -1e-4),
    ("label_smoothing", 1.0),
    ("label_smoothing", -0.1),
    ("warmup_epochs", -1),
    ("warmup_epochs", 10),
    ("tet_lambda", 1.5),
    ("tet_lambda", 0.5),  # only with loss="tet"
    ("grad_clip", 0.0),
    ("width", 0),
    ("crop_padding", -1),
    ("cutout", -2),
    ("roll", 1.5),
    ("flip", "yes"),
    ("amp", 1),
    ("cpu_amp", "yes"),
    ("device", "gpu0"),
    ("seed", -1),
    ("num_workers", -1),
    ("eval_every", 0),
    ("max_steps_per_epoch", 0),
    ("max_eval_steps", 0),
]


@pytest.fixture
def no_data(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("data.load was called before the config was validated")

    monkeypatch.setattr(tspike_lab.data, "load", refuse)


@pytest.mark.parametrize("name,value", BAD_VALUES, ids=[f"{n}={v!r}" for n, v in BAD_VALUES])
def test_a_config_with_a_bad_value_cannot_be_made_and_the_error_names_the_field(no_data, name, value):
    with pytest.raises(ConfigError) as err:
        TrainConfig(**{name: value})  # refused where it is made: train() never sees it, no data is read
    message = str(err.value)
    assert name in message
    assert repr(value) in message
    assert err.value.field == name and err.value.allowed


@pytest.mark.parametrize("name,value", BAD_VALUES, ids=[f"{n}={v!r}" for n, v in BAD_VALUES])
def test_a_valid_config_cannot_be_changed_into_an_invalid_one(name, value):
    config = TrainConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(config, name, value)
    with pytest.raises(ConfigError, match=name):
        dataclasses.replace(config, **{name: value})  # a changed copy is checked again
    with pytest.raises(ConfigError, match=name):
        TrainConfig.from_dict({**config.to_dict(), name: value})
    assert config == TrainConfig()  # untouched


def test_width_is_refused_for_a_paper_network(no_data):
    with pytest.raises(ConfigError, match=r"width.*small"):
        TrainConfig(arch="resnet19", width=8)


def test_the_default_config_is_valid_and_a_path_is_kept_as_its_string(tmp_path):
    assert TrainConfig() == TrainConfig.from_dict(TrainConfig().to_dict())
    config = TrainConfig(out_dir=tmp_path / "run", data_dir=None)
    assert config.out_dir == str(tmp_path / "run") and json.loads(json.dumps(config.to_dict())) == config.to_dict()


def test_train_takes_only_a_train_config(no_data):
    with pytest.raises(ConfigError, match="config must be a TrainConfig, got dict"):
        train(TrainConfig().to_dict())


def test_every_field_has_its_meaning_in_its_metadata_and_describe_lists_them_all():
    text = TrainConfig.describe()
    for f in dataclasses.fields(TrainConfig):
        assert isinstance(f.metadata.get("help"), str) and len(f.metadata["help"]) > 5, f.name
        assert f"{f.name} = {f.default!r}: {f.metadata['help']}" in text
    assert len(text.splitlines()) == len(dataclasses.fields(TrainConfig))
    assert "one of ['resnet19'" in text  # a choice field lists what it allows
    assert f"{dataclasses.fields(TrainConfig)[0].metadata['help']}" in TrainConfig.__doc__  # help(TrainConfig)


def test_a_configs_network_is_built_one_way_with_every_model_field():
    config = TrainConfig(
        arch="small", width=6, neuron="binary", num_steps=3, amplitude="channel", step_bn=True, init="released"
    )
    model = config.build_model(num_classes=7, in_channels=2)
    assert (model.arch, model.neuron, model.num_steps, model.in_channels) == ("small", "binary", 3, 2)
    assert model.classifier.out_features == 7 and model.stem.conv.out_channels == 6 and model.stem.step_bn
    assert config.build_model(num_classes=7, in_channels=2, num_steps=1).num_steps == 1


# --------------------------------------------------------------------------- pieces


def test_weight_decay_applies_to_conv_and_linear_weights_only():
    model = build_model("small", neuron="trainable_ternary", num_classes=10, num_steps=2, in_channels=1, width=8)
    decay, no_decay = param_groups(model, 5e-4)
    assert decay["weight_decay"] == 5e-4 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    decay_names = {names[id(p)] for p in decay["params"]}
    no_decay_names = {names[id(p)] for p in no_decay["params"]}
    assert decay_names == {
        n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear)) for n in [f"{n}.weight"]
    }
    assert "classifier.weight" in decay_names and "stem.conv.weight" in decay_names
    assert "classifier.bias" in no_decay_names
    assert any(n.endswith("bn.weight") for n in no_decay_names) and any(n.endswith("bn.bias") for n in no_decay_names)
    amplitudes = {f"{n}.graded_spikes_factor" for n, _ in spiking_layers(model)}
    assert amplitudes <= no_decay_names
    assert decay_names.isdisjoint(no_decay_names)
    assert len(decay_names) + len(no_decay_names) == len(list(model.parameters()))


def test_cosine_schedule_warms_up_linearly_then_decays_to_zero():
    kw = dict(lr=0.1, total_steps=100, warmup_steps=10)
    assert lr_at(0, **kw) == pytest.approx(0.01)
    assert lr_at(9, **kw) == pytest.approx(0.1)
    assert lr_at(10, **kw) == pytest.approx(0.1)
    assert lr_at(55, **kw) == pytest.approx(0.05)
    assert lr_at(100, **kw) == pytest.approx(0.0, abs=1e-12)
    assert lr_at(50, lr=0.1, total_steps=100, schedule="constant") == 0.1


def test_per_epoch_cosine_schedule_is_the_released_cosine_annealing_lr_stepped_after_each_epoch():
    epochs, steps = 7, 5
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    released = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs, eta_min=0)
    for epoch in range(epochs):
        want = opt.param_groups[0]["lr"]
        got = [
            lr_at(epoch * steps + i, lr=0.1, total_steps=epochs * steps, schedule="cosine_epoch", steps_per_epoch=steps)
            for i in range(steps)
        ]
        assert got == pytest.approx([want] * steps, rel=1e-12, abs=1e-15), epoch
        opt.step()
        released.step()
    assert lr_at(3, lr=0.1, total_steps=35, schedule="cosine", steps_per_epoch=5) != lr_at(
        3, lr=0.1, total_steps=35, schedule="cosine_epoch", steps_per_epoch=5
    )  # per step differs within an epoch


def test_best_and_final_test_accuracy_are_both_recorded_every_epoch():
    from tspike_lab.train import best_epoch

    epochs = [
        {"epoch": 1, "test_acc": 0.5},
        {"epoch": 2, "test_acc": None},
        {"epoch": 3, "test_acc": 0.7},
        {"epoch": 4, "test_acc": 0.7},
        {"epoch": 5, "test_acc": 0.6},
    ]
    assert best_epoch(epochs) == {"best_test_acc": 0.7, "best_epoch": 3}  # the first epoch to reach it
    assert best_epoch(epochs[:2]) == {"best_test_acc": 0.5, "best_epoch": 1}
    assert best_epoch([{"epoch": 1, "test_acc": None}]) == {"best_test_acc": None, "best_epoch": None}


def test_firing_rate_counts_negative_spikes():
    torch.manual_seed(0)
    model = build_model("small", neuron="ternary", num_classes=10, num_steps=2, in_channels=1, width=8)
    x = torch.randn(16, 1, 8, 8) * 3
    y = torch.randint(0, 10, (16,))
    out = evaluate(model, [(x, y)], device="cpu")
    for _, layer in spiking_layers(model):
        layer.record = True
    model.eval()
    with torch.no_grad():
        model(x)
    negative = 0
    for name, layer in spiking_layers(model):
        b = layer.b_seq
        negative += int((b < 0).sum())
        assert out["firing_rates"][name] == pytest.approx(float((b != 0).double().mean()))
        assert out["firing_rates"][name] > float((b > 0).double().mean()) or not (b < 0).any()
    assert negative > 0  # the comparison above saw -1 spikes
    assert out["firing_rate"] == pytest.approx(sum(out["firing_rates"].values()) / len(out["firing_rates"]))
    assert all(layer.b_seq is not None for _, layer in spiking_layers(model))


def test_tet_loss_is_the_mean_over_steps_of_the_cross_entropy():
    torch.manual_seed(0)
    model = build_model("small", neuron="ternary", num_classes=10, num_steps=3, in_channels=1, width=8)
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    loss, logits = train_mod._loss(model, x, y, TrainConfig(loss="tet", num_steps=3))
    seq = model(x, return_seq=True)
    expected = sum(nn.functional.cross_entropy(seq[t], y) for t in range(3)) / 3
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    torch.testing.assert_close(logits, seq.mean(0))
    reg, _ = train_mod._loss(model, x, y, TrainConfig(loss="tet", num_steps=3, tet_lambda=0.25, tet_phi=1.0))
    mse = ((seq - 1.0) ** 2).mean()
    assert reg.item() == pytest.approx((0.75 * expected + 0.25 * mse).item(), rel=1e-5)


# --------------------------------------------------------------------------- training runs


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "digits"
    config = TrainConfig(**FAST, neuron="trainable_ternary", epochs=3, out_dir=str(out))
    t0 = time.perf_counter()
    history = train(config)
    return config, history, out, time.perf_counter() - t0


def test_the_run_records_the_best_epoch_beside_the_final_one(digits_run):
    _, history, out, _ = digits_run
    accs = history.column("test_acc")
    assert history.column("best_test_acc") == [max(accs[: i + 1]) for i in range(len(accs))]
    assert accs[history.final["best_epoch"] - 1] == history.final["best_test_acc"]
    assert [r["best_test_acc"] for r in read_metrics(out)] == history.column("best_test_acc")


def test_a_grad_scaler_run_trains_the_same_weights_as_a_plain_one(tmp_path, monkeypatch):
    # CUDA float16 runs step through a GradScaler; here a CPU one (fp32 autocast-free) scales the loss by 2^16,
    # unscales the gradients and steps: powers of two are exact, so the weights are those of a plain run
    plain = train(TrainConfig(**FAST, epochs=1, out_dir=str(tmp_path / "plain")))
    scalers = []
    monkeypatch.setattr(
        train_mod, "_grad_scaler", lambda c, d: scalers.append(torch.amp.GradScaler("cpu")) or scalers[-1]
    )
    scaled = train(TrainConfig(**FAST, epochs=1, amp_dtype="float16", out_dir=str(tmp_path / "scaled")))
    assert scalers and scalers[0].get_scale() == 2.0**16
    assert scaled.final["train_loss"] == plain.final["train_loss"]
    a = train_mod.load_checkpoint(tmp_path / "plain")["model"]
    ckpt = train_mod.load_checkpoint(tmp_path / "scaled")
    assert all(torch.equal(a[k], ckpt["model"][k]) for k in a)
    assert ckpt["scaler"]["scale"] == 2.0**16


def test_training_on_digits_reaches_well_above_chance(digits_run):
    config, history, _, _ = digits_run
    assert isinstance(history, History) and len(history) == 3
    # measured 0.93-0.96 over seeds 0-3 after 3 epochs (chance: 0.1)
    assert history.final["test_acc"] > 0.85
    assert history.final["train_loss"] < history[0]["train_loss"]


def test_every_epoch_reports_the_documented_metrics(digits_run):
    _, history, _, _ = digits_run
    layers = [
        n
        for n, _ in spiking_layers(
            build_model("small", neuron="trainable_ternary", num_classes=10, num_steps=2, in_channels=1, width=8)
        )
    ]
    for i, row in enumerate(history, 1):
        assert row["epoch"] == i and row["step"] == 44 * i
        for key in (
            "train_loss",
            "train_acc",
            "test_loss",
            "test_acc",
            "firing_rate",
            "lr",
            "epoch_time_s",
            "images_per_s",
        ):
            assert isinstance(row[key], float) and math.isfinite(row[key]), key
        assert 0 < row["firing_rate"] < 1
        assert list(row["amplitudes"]) == layers and list(row["firing_rates"]) == layers
    # trainable amplitudes moved away from their initial 1.0
    assert any(abs(a - 1.0) > 1e-3 for a in history.final["amplitudes"].values())
    assert history.column("epoch") == [1, 2, 3]


def test_metrics_jsonl_has_one_line_per_epoch_equal_to_the_history(digits_run):
    _, history, out, _ = digits_run
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == history.epochs
    assert train_mod.read_metrics(out) == history.epochs


def test_checkpoint_is_written_atomically_and_loads_weights_only(digits_run):
    config, history, out, _ = digits_run
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".lock")) == ["checkpoint.pt", "metrics.jsonl"]
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp"))
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True, map_location="cpu")
    assert ckpt["epoch"] == 3 and ckpt["config"] == dataclasses.asdict(config)
    assert ckpt["history"] == history.epochs
    assert set(ckpt["rng"]) == {"torch", "cuda", "python", "numpy"}
    assert ckpt["scheduler"]["step"] == 3 * 44
    # the optimizer's groups: decay on conv/linear weights, none on the rest
    wd = [g["weight_decay"] for g in ckpt["optimizer"]["param_groups"]]
    assert wd == [config.weight_decay, 0.0]
    model = build_model("small", neuron="trainable_ternary", num_classes=10, num_steps=2, in_channels=1, width=8)
    model.load_state_dict(ckpt["model"])
    n_decay = len(ckpt["optimizer"]["param_groups"][0]["params"])
    assert n_decay == sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in model.modules())


def test_a_finished_run_resumed_returns_its_history_without_training(digits_run, monkeypatch):
    config, history, _, _ = digits_run
    monkeypatch.setattr(tspike_lab.data, "load", lambda *a, **k: pytest.fail("no data needed"))
    again = train(dataclasses.replace(config, progress=True))
    assert again.epochs == history.epochs


def test_resuming_with_a_different_config_is_refused_naming_the_fields(digits_run):
    config, _, out, _ = digits_run
    before = (out / "checkpoint.pt").read_bytes()
    with pytest.raises(ValueError, match=r"lr: checkpoint 0\.1 != config 0\.05") as err:
        train(dataclasses.replace(config, lr=0.05, neuron="ternary"))
    assert "neuron" in str(err.value) and "overwrite" in str(err.value)
    with pytest.raises(ValueError, match="resume=False"):
        train(dataclasses.replace(config, resume=False))
    assert (out / "checkpoint.pt").read_bytes() == before


def test_a_folder_with_metrics_but_no_checkpoint_is_not_reused(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 1}\n')
    with pytest.raises(ValueError, match="another run"):
        train(TrainConfig(**FAST, epochs=1, out_dir=str(tmp_path)))


def test_two_processes_cannot_train_in_one_folder(tmp_path):
    import fcntl

    tmp_path.mkdir(exist_ok=True)
    with open(tmp_path / ".lock", "a+") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(RunFolderError, match="another process"):
            train(TrainConfig(**FAST, epochs=1, out_dir=str(tmp_path)))


def test_same_seed_same_result_in_one_process():
    a = train(TrainConfig(**FAST, neuron="ternary", epochs=1, max_steps_per_epoch=10))
    b = train(TrainConfig(**FAST, neuron="ternary", epochs=1, max_steps_per_epoch=10))
    assert _no_timing(a.epochs) == _no_timing(b.epochs)
    assert a.final["step"] == 10


def test_tet_loss_trains(tmp_path):
    h = train(
        TrainConfig(
            **FAST,
            neuron="binary",
            loss="tet",
            tet_lambda=0.05,
            epochs=1,
            optimizer="adamw",
            lr=3e-3,
            label_smoothing=0.1,
            grad_clip=5.0,
            max_eval_steps=2,
        )
    )
    assert math.isfinite(h.final["train_loss"]) and h.final["test_acc"] > 0.2


@pytest.mark.skipif(not cpu.available(), reason=f"C kernel unavailable: {cpu.unavailable_reason()}")
def test_cpu_amp_trains_in_bfloat16_with_the_neurons_on_the_c_kernel(monkeypatch):
    # On a CPU without native bfloat16 train() refuses cpu_amp (it would be slow, not wrong):
    # lifted here, so the path runs on every machine, emulated where the CPU lacks AVX512-BF16/AMX.
    monkeypatch.setattr(train_mod, "cpu_bf16_reason", lambda: None)
    seen = []
    for name in ("lif_seq_cpu", "scaled_lif_seq_cpu"):  # the C kernel's two entry points
        real = getattr(cpu, name)

        def spy(x_seq, *args, _real=real, **kw):
            seen.append(x_seq.dtype)
            return _real(x_seq, *args, **kw)

        monkeypatch.setattr(cpu, name, spy)
    h = train(TrainConfig(**FAST, neuron="ternary", epochs=1, cpu_amp=True, max_steps_per_epoch=20))
    assert seen and set(seen) <= {torch.bfloat16, torch.float32}, seen
    assert torch.bfloat16 in seen  # conv -> BN outputs reach the neurons as bfloat16
    assert math.isfinite(h.final["train_loss"]) and h.final["test_acc"] > 0.3


def test_cpu_amp_on_a_cpu_without_native_bfloat16_is_refused_naming_the_field(monkeypatch):
    monkeypatch.setattr(train_mod, "cpu_bf16_reason", lambda: "this CPU has neither AVX512-BF16 nor AMX")
    with pytest.raises(ValueError, match="cpu_amp=True needs native bfloat16: this CPU has neither"):
        train(TrainConfig(**FAST, epochs=1, cpu_amp=True, device="cpu"))


# --------------------------------------------------------------------------- divergence


def test_a_huge_learning_rate_stops_with_the_epoch_and_step_and_writes_nothing(tmp_path):
    with pytest.raises(TrainingDiverged, match=r"epoch 1, step \d+") as err:
        train(TrainConfig(**FAST, epochs=2, lr=1e6, out_dir=str(tmp_path)))
    assert isinstance(err.value, FloatingPointError)
    assert not (tmp_path / "checkpoint.pt").exists() and not (tmp_path / "metrics.jsonl").exists()


def test_a_nan_mid_run_stops_naming_epoch_and_step_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    bad_call = 44 + 7  # epoch 2, step 7

    def build_poisoned(*args, **kwargs):
        model = build_model(*args, **kwargs)
        calls = {"n": 0}

        def poison(module, inputs):
            if not module.training:
                return None
            calls["n"] += 1
            if calls["n"] == bad_call:
                return (torch.full_like(inputs[0], float("nan")),)
            return None

        model.register_forward_pre_hook(poison)
        return model

    monkeypatch.setattr(config_mod, "build_model", build_poisoned)
    with pytest.raises(TrainingDiverged, match=r"epoch 2, step 7\b") as err:
        train(TrainConfig(**FAST, epochs=3, out_dir=str(tmp_path)))
    assert "epoch 1, the last good one" in str(err.value)
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 1
    assert not list(tmp_path.glob(".*.tmp"))
    # the last good checkpoint resumes (without the poison) and finishes the run
    monkeypatch.setattr(config_mod, "build_model", build_model)
    h = train(TrainConfig(**FAST, epochs=3, out_dir=str(tmp_path)))
    assert h.column("epoch") == [1, 2, 3] and h.final["test_acc"] > 0.85


# --------------------------------------------------------------------------- kill and resume


def _cli(out_dir, epochs=3):
    return [
        sys.executable,
        "-m",
        "tspike_lab",
        "train",
        "--dataset",
        "digits",
        "--arch",
        "small",
        "--width",
        "16",
        "--batch-size",
        "16",
        "--num-steps",
        "2",
        "--epochs",
        str(epochs),
        "--seed",
        "3",
        "--out-dir",
        str(out_dir),
    ]


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("WORLD_SIZE", None)
    return env


# The victim kills itself with SIGKILL right after its 99th optimizer step (epoch 2 has 89 steps of 16
# images: this is step 10 of epoch 2), so the kill lands at the same place on any machine and under
# any load; nothing in the test waits on a clock.
KILL_AFTER_STEP = 89 + 10
_VICTIM = """
import os, signal, sys
from torch.optim.optimizer import register_optimizer_step_post_hook
from tspike_lab.cli import main

steps = 0

def kill_at(optimizer, args, kwargs):
    global steps
    steps += 1
    if steps == {kill_after}:
        os.kill(os.getpid(), signal.SIGKILL)

register_optimizer_step_post_hook(kill_at)
sys.exit(main(sys.argv[1:]))
"""
WAIT_S = 600  # generous: three epochs of a tiny net take seconds on a quiet 2-core machine


@pytest.mark.slow  # three training processes
def test_a_run_killed_mid_epoch_and_resumed_ends_exactly_like_an_uninterrupted_run(tmp_path):
    ref_dir, run_dir = tmp_path / "reference", tmp_path / "killed"
    reference = subprocess.Popen(
        _cli(ref_dir) + ["--no-progress"], env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    victim = subprocess.run(
        [sys.executable, "-c", _VICTIM.format(kill_after=KILL_AFTER_STEP)] + _cli(run_dir)[3:] + ["--no-progress"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=WAIT_S,
    )
    assert victim.returncode == -signal.SIGKILL, (victim.returncode, victim.stderr[-2000:])
    killed_at = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert killed_at["epoch"] == 1  # killed during epoch 2, before its checkpoint
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 1
    (run_dir / ".checkpoint.pt.99999.tmp").write_bytes(b"torn")  # as if killed while saving

    resumed = subprocess.run(
        _cli(run_dir) + ["--no-progress"], env=_env(), capture_output=True, text=True, timeout=WAIT_S
    )
    assert resumed.returncode == 0, resumed.stderr
    out, err = reference.communicate(timeout=WAIT_S)  # the uninterrupted reference run
    assert reference.returncode == 0, err

    a = torch.load(ref_dir / "checkpoint.pt", weights_only=True)
    b = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 3
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(sa["momentum_buffer"], sb["momentum_buffer"])
    assert _no_timing(a["history"]) == _no_timing(b["history"])
    final_a, final_b = json.loads(out), json.loads(resumed.stdout)
    for key in ("train_loss", "train_acc", "test_loss", "test_acc", "firing_rate", "amplitudes"):
        assert final_a[key] == final_b[key], key
    assert _no_timing([json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]) == _no_timing(
        a["history"]
    )
    assert not list(run_dir.glob(".*.tmp"))


def _images(root, seed):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split in ("train", "test"):
        for c in range(2):
            d = root / split / f"class{c}"
            d.mkdir(parents=True)
            for i in range(8):
                Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(d / f"{i}.png")
    return root


def test_resuming_on_other_data_is_refused_naming_both_fingerprints(tmp_path, monkeypatch):
    monkeypatch.setenv("TSPIKE_DATA", str(tmp_path / "cache"))
    a, b = _images(tmp_path / "a", 0), _images(tmp_path / "b", 1)
    out = tmp_path / "run"
    config = dict(
        dataset="imagefolder",
        arch="small",
        width=8,
        epochs=2,
        batch_size=4,
        progress=False,
        device="cpu",
        num_workers=0,
        out_dir=str(out),
    )
    train(TrainConfig(**config, data_dir=str(a)))
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    ckpt["epoch"], ckpt["history"] = 1, ckpt["history"][:1]  # as if killed after epoch 1
    ckpt["scheduler"]["step"] = ckpt["scheduler"]["steps_per_epoch"]
    torch.save(ckpt, out / "checkpoint.pt")
    with pytest.raises(
        RunFolderError,
        match=rf"was trained on data {ckpt['data_fingerprint']} but data_dir "
        rf"'.*b' holds data [0-9a-f]+",
    ):
        train(TrainConfig(**config, data_dir=str(b)))
    assert train(TrainConfig(**config, data_dir=str(a))).column("epoch") == [1, 2]  # the same data resumes


def test_evaluate_counts_a_wrapped_copy_of_a_distributed_shard_nowhere():
    torch.manual_seed(0)
    model = build_model("small", neuron="ternary", num_classes=3, num_steps=1, in_channels=1, width=2)
    x, y = torch.randn(8, 1, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    keep = torch.tensor([True] * 7 + [False])  # 7 test images, the 8th a copy evening out 2 ranks

    class Shard(list):  # a distributed loader: batches, and which samples are wrapped copies
        pass

    shard = Shard([(x[:5], y[:5]), (x[5:], y[5:])])
    shard.keep = keep
    full = evaluate(model, [(x[:7], y[:7])])
    padded = evaluate(model, shard)
    assert padded["test_acc"] == pytest.approx(full["test_acc"]) and padded["test_loss"] == pytest.approx(
        full["test_loss"]
    )
    assert padded["firing_rates"] == pytest.approx(full["firing_rates"])


# --------------------------------------------------------------------------- oneDNN strided 1x1 bug


@pytest.mark.parametrize(
    "width, hazard", [(1, None), (2, "layers.1.shortcut.conv"), (7, "layers.1.shortcut.conv"), (16, None)]
)
def test_onednn_strided_1x1_hazard_names_the_small_nets_shortcut_at_narrow_widths(width, hazard):
    model = build_model("small", neuron="trainable_ternary", num_classes=10, num_steps=2, in_channels=1, width=width)
    assert hardware.onednn_1x1_hazard(model) == hazard


@pytest.mark.slow  # a training process of its own (a heap corruption kills it, not pytest)
def test_small_widths_train_in_one_thread_without_corrupting_the_heap(tmp_path):
    # oneDNN 3.12's channels-last backward of a strided 1x1 conv with few input channels writes out of
    # bounds in one thread (arch "small": the stage-2 shortcut); train() must not take that path. In a
    # child process: the corruption aborts it (MALLOC_CHECK_=3 makes glibc notice at once).
    code = (
        "import torch; torch.set_num_threads(1)\n"
        "from tspike_lab.train import TrainConfig, train\n"
        "for w in (2, 3, 4, 5, 6, 7, 2):\n"
        "    train(TrainConfig(dataset='digits', arch='small', width=w, num_steps=2, epochs=1, batch_size=128,\n"
        "                      max_steps_per_epoch=2, max_eval_steps=1, progress=False, device='cpu'))\n"
        "print('done', flush=True)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env=dict(_env(), MALLOC_CHECK_="3"),
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert proc.returncode == 0 and "done" in proc.stdout, (proc.returncode, proc.stderr[-2000:])
