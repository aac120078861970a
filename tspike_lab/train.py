"""The training engine: a :class:`TrainConfig` in, a :class:`History` out.

One function, :func:`train`, runs the paper's recipe (SGD, momentum 0.9, weight decay on
conv/linear weights only, cosine schedule, cross-entropy on T-averaged logits) on any data
set of :mod:`tspike_lab.data` and any network of :mod:`tspike_lab.models`, on a CPU, one GPU
or several processes under ``torchrun`` (DistributedDataParallel).

A run folder (``out_dir``) holds ``metrics.jsonl`` (one JSON object per epoch) and
``checkpoint.pt`` (written atomically after every epoch). Everything random in an epoch is a
function of ``(seed, epoch)``, so a run killed at any point and resumed from its last
checkpoint ends with exactly the weights and metrics of an uninterrupted run (on the CPU;
cuDNN autotuning and atomics make GPU runs only approximately repeatable).

No printing and no argument parsing here: :mod:`tspike_lab.cli` is the command line.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .data.sources import DATASETS
from .errors import TrainingDiverged
from .models import ARCHS, NEURONS, build_model, spiking_layers
from .models.layers import AMPLITUDES
from .results import _fsync_dir, read_jsonl, write_text_atomic

__all__ = [
    "TrainConfig",
    "History",
    "TrainingDiverged",
    "AUGMENT_RECIPES",
    "OPTIMIZERS",
    "SCHEDULES",
    "LOSSES",
    "validate",
    "train",
    "evaluate",
    "param_groups",
    "lr_at",
    "load_checkpoint",
    "read_metrics",
    "augment_for",
]

logger = logging.getLogger(__name__)

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "constant")
LOSSES = ("ce", "tet")
CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"
_CHECKPOINT_FORMAT = 1

# Training augmentation per data set, used where a TrainConfig field is None. CIFAR follows
# the authors' CIFAR recipe elsewhere (crop 4 + flip + AutoAugment + Cutout 16; an assumption,
# no CIFAR script was released); CIFAR10-DVS the released loader (flip + roll up to 5 px);
# 8x8 digits are not mirror-symmetric (no flip) and too small to crop (a 1-pixel crop
# costs ~5 points of test accuracy after 10 epochs). ImageNet's Dataset does its own transforms.
AUGMENT_RECIPES: dict[str, dict[str, Any] | None] = {
    "digits": dict(crop_padding=0, flip=False, autoaugment=False, cutout=0, roll=0),
    "cifar10": dict(crop_padding=4, flip=True, autoaugment=True, cutout=16, roll=0),
    "cifar100": dict(crop_padding=4, flip=True, autoaugment=True, cutout=16, roll=0),
    "imagefolder": dict(crop_padding=4, flip=True, autoaugment=False, cutout=0, roll=0),
    "cifar10-dvs": dict(crop_padding=0, flip=True, autoaugment=False, cutout=0, roll=5),
    "imagenet": None,
}

# Fields that do not change what a run computes: a checkpoint written under other values
# of these may be resumed.
_RESUME_FREE = ("data_dir", "device", "out_dir", "resume", "progress", "num_workers")


@dataclass
class TrainConfig:
    """Everything a training run depends on; plain typed defaults (the paper's recipe).

    Data and model:
        dataset: one of ``tspike_lab.data.DATASETS``. data_dir: its folder (None: the data default).
        arch: one of ``ARCHS``. neuron: one of ``NEURONS``. num_steps: T (time steps; for
        cifar10-dvs also the number of event frames). width: channels of arch "small" only.
        amplitude: "layer" (one trainable a per layer, Eq. 13-14) or "channel".
    Optimization:
        epochs, batch_size (per process; global batch = batch_size * world size),
        optimizer ("sgd" | "adamw"), lr, momentum (SGD), weight_decay (conv/linear weights only;
        BatchNorm, biases and amplitudes a are exempt, as the paper's code), warmup_epochs
        (linear warm-up), schedule ("cosine" per step to 0 | "constant"), label_smoothing,
        loss ("ce": cross-entropy on T-averaged logits, the paper; "tet": Deng et al. 2022,
        ``(1 - tet_lambda) * mean_t CE(logits_t, y) + tet_lambda * MSE(logits_t, tet_phi)``),
        grad_clip (max global grad norm; None: off).
    Augmentation (training only; None: the data set's recipe in ``AUGMENT_RECIPES``):
        augment (False: none at all), crop_padding, flip, autoaugment, cutout, roll.
    Hardware:
        amp (bf16 autocast on CUDA), cpu_amp (bf16 autocast on a CPU with native bf16,
        AVX512-BF16 or AMX; off by default: it changes float32 results), channels_last
        (image input, CUDA and CPU: faster convolutions on both), device
        ("auto": cuda:LOCAL_RANK if available, else cpu), sync_bn (SyncBatchNorm when
        distributed on GPUs; a no-op in one process), num_workers (DataLoader workers, file-based data only).
    Bookkeeping:
        seed, out_dir (run folder; None: no files), resume (continue from out_dir's
        checkpoint), max_steps_per_epoch and max_eval_steps (truncate epochs, for smoke
        tests), eval_every (test every k epochs and at the last), progress (tqdm bar).
    """

    dataset: str = "digits"
    data_dir: str | None = None
    arch: str = "small"
    neuron: str = "trainable_ternary"
    num_steps: int = 2
    width: int | None = None
    amplitude: str = "layer"

    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_epochs: int = 0
    schedule: str = "cosine"
    label_smoothing: float = 0.0
    loss: str = "ce"
    tet_lambda: float = 0.0
    tet_phi: float = 1.0
    grad_clip: float | None = None

    augment: bool = True
    crop_padding: int | None = None
    flip: bool | None = None
    autoaugment: bool | None = None
    cutout: int | None = None
    roll: int | None = None

    amp: bool = True
    cpu_amp: bool = False
    channels_last: bool = True
    device: str = "auto"
    sync_bn: bool = False
    num_workers: int = 4

    seed: int = 0
    out_dir: str | None = None
    resume: bool = True
    max_steps_per_epoch: int | None = None
    max_eval_steps: int | None = None
    eval_every: int = 1
    progress: bool = True

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown TrainConfig field(s) {unknown}; allowed: {sorted(names)}")
        return cls(**d)


@dataclass
class History:
    """Per-epoch metrics of a run.

    ``epochs[i]`` is a dict: epoch (1-based), step (optimizer steps so far), train_loss,
    train_acc, test_loss, test_acc, firing_rate (mean over spiking layers of the fraction of
    nonzero b in {-1, 0, 1} on the test set), firing_rates (per layer), amplitudes (layer ->
    mean a), lr (of the epoch's last step), epoch_time_s, images_per_s. Test fields are None
    in epochs skipped by ``eval_every``.
    """

    epochs: list[dict[str, Any]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    run_dir: str | None = None

    @property
    def final(self) -> dict[str, Any]:
        """The last epoch's metrics ({} before the first epoch)."""
        return self.epochs[-1] if self.epochs else {}

    def column(self, key: str) -> list[Any]:
        """One metric across epochs, e.g. ``history.column("test_acc")``."""
        return [e.get(key) for e in self.epochs]

    def __len__(self) -> int:
        return len(self.epochs)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.epochs)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.epochs[i]


# --------------------------------------------------------------------------- validation


def _fail(name: str, value: Any, allowed: str) -> None:
    raise ValueError(f"TrainConfig.{name} must be {allowed}, got {value!r}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_real(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def validate(config: TrainConfig) -> TrainConfig:
    """Check every field; raise ValueError naming the field, the value and what is allowed.

    Touches no data and no device. Returns ``config`` unchanged.
    """
    if not isinstance(config, TrainConfig):
        raise ValueError(f"config must be a TrainConfig, got {type(config).__name__}")
    c = config
    for name, value, choices in (
        ("dataset", c.dataset, DATASETS),
        ("arch", c.arch, tuple(ARCHS)),
        ("neuron", c.neuron, NEURONS),
        ("amplitude", c.amplitude, AMPLITUDES),
        ("optimizer", c.optimizer, OPTIMIZERS),
        ("schedule", c.schedule, SCHEDULES),
        ("loss", c.loss, LOSSES),
    ):
        if value not in choices:
            _fail(name, value, f"one of {list(choices)}")
    for name in ("epochs", "batch_size", "num_steps", "eval_every"):
        value = getattr(c, name)
        if not _is_int(value) or value < 1:
            _fail(name, value, "an int >= 1")
    for name in ("width", "max_steps_per_epoch", "max_eval_steps"):
        value = getattr(c, name)
        if value is not None and (not _is_int(value) or value < 1):
            _fail(name, value, "None or an int >= 1")
    if c.width is not None and c.arch != "small":
        _fail("width", c.width, f"None for arch {c.arch!r} (width applies to arch 'small' only)")
    for name in ("num_workers", "seed"):
        value = getattr(c, name)
        if not _is_int(value) or value < 0:
            _fail(name, value, "an int >= 0")
    if not _is_int(c.warmup_epochs) or not (c.warmup_epochs == 0 or 0 <= c.warmup_epochs < c.epochs):
        _fail("warmup_epochs", c.warmup_epochs, f"an int in [0, epochs={c.epochs})")
    if not _is_real(c.lr) or c.lr <= 0:
        _fail("lr", c.lr, "a finite number > 0")
    if not _is_real(c.momentum) or not 0 <= c.momentum < 1:
        _fail("momentum", c.momentum, "a number in [0, 1)")
    if not _is_real(c.weight_decay) or c.weight_decay < 0:
        _fail("weight_decay", c.weight_decay, "a finite number >= 0")
    if not _is_real(c.label_smoothing) or not 0 <= c.label_smoothing < 1:
        _fail("label_smoothing", c.label_smoothing, "a number in [0, 1)")
    if not _is_real(c.tet_lambda) or not 0 <= c.tet_lambda <= 1:
        _fail("tet_lambda", c.tet_lambda, "a number in [0, 1]")
    if c.tet_lambda and c.loss != "tet":
        _fail("tet_lambda", c.tet_lambda, "0 unless loss='tet'")
    if not _is_real(c.tet_phi):
        _fail("tet_phi", c.tet_phi, "a finite number")
    if c.grad_clip is not None and (not _is_real(c.grad_clip) or c.grad_clip <= 0):
        _fail("grad_clip", c.grad_clip, "None or a finite number > 0")
    for name in ("crop_padding", "cutout", "roll"):
        value = getattr(c, name)
        if value is not None and (not _is_int(value) or value < 0):
            _fail(name, value, "None (the data set's recipe) or an int >= 0")
    for name in ("flip", "autoaugment"):
        value = getattr(c, name)
        if value is not None and not isinstance(value, bool):
            _fail(name, value, "None (the data set's recipe), True or False")
    for name in ("augment", "amp", "cpu_amp", "channels_last", "sync_bn", "resume", "progress"):
        value = getattr(c, name)
        if not isinstance(value, bool):
            _fail(name, value, "True or False")
    if not isinstance(c.device, str):
        _fail("device", c.device, "'auto' or a torch device string such as 'cpu', 'cuda', 'cuda:1'")
    if c.device != "auto":
        try:
            torch.device(c.device)
        except (RuntimeError, ValueError):
            _fail("device", c.device, "'auto' or a torch device string such as 'cpu', 'cuda', 'cuda:1'")
    for name in ("data_dir", "out_dir"):
        value = getattr(c, name)
        if value is not None and not isinstance(value, (str, os.PathLike)):
            _fail(name, value, "None or a path")
    if c.out_dir is not None and str(c.out_dir) == "":
        _fail("out_dir", c.out_dir, "None or a non-empty path")
    return c


def augment_for(config: TrainConfig):
    """The :class:`tspike_lab.data.Augment` a config trains with (None: no augmentation)."""
    from .data import Augment

    recipe = AUGMENT_RECIPES[config.dataset]
    if not config.augment or recipe is None:
        return None
    chosen = {k: (recipe[k] if getattr(config, k) is None else getattr(config, k)) for k in recipe}
    return Augment(**chosen)


# --------------------------------------------------------------------------- pieces


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two optimizer groups: conv/linear weights with ``weight_decay``; all else with 0.

    BatchNorm weights and biases, conv/linear biases and spike amplitudes a are exempt, as
    in the paper's code. Parameters with ``requires_grad=False`` are left out.
    """
    conv_linear = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
    decay_ids = {id(m.weight) for m in model.modules() if isinstance(m, conv_linear) and m.weight is not None}
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if id(p) in decay_ids else no_decay).append(p)
    return [{"params": decay, "weight_decay": float(weight_decay)}, {"params": no_decay, "weight_decay": 0.0}]


def lr_at(step: int, *, lr: float, total_steps: int, warmup_steps: int = 0, schedule: str = "cosine") -> float:
    """Learning rate of optimizer step ``step`` (0-based).

        warm-up:  lr * (step + 1) / warmup_steps                       for step < warmup_steps
        cosine:   lr * (1 + cos(pi * (step - warmup) / (total - warmup))) / 2   afterwards
        constant: lr
    """
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return lr
    span = max(total_steps - warmup_steps, 1)
    return lr * 0.5 * (1.0 + math.cos(math.pi * min(step - warmup_steps, span) / span))


def _epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, 0x7573]).generate_state(1, np.uint64)[0] >> 1)


def _reseed(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


def _rng_state() -> dict[str, Any]:
    """RNG states as tensors and primitives (loadable with ``weights_only=True``)."""
    version, mt, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
        "python": {"version": version, "state": torch.tensor(mt, dtype=torch.int64), "gauss": gauss},
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state((npy["kind"], npy["keys"].numpy().astype(np.uint32), npy["pos"],
                         npy["has_gauss"], npy["cached"]))


def _save_atomic(obj: Any, path: Path) -> None:
    """torch.save to a temp file in the same folder, fsync, os.replace: never a torn file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _append_line(path: Path, row: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """Read a run's ``checkpoint.pt`` (tensors and primitives only: ``weights_only=True``).

    ``path`` is the file or its run folder. Keys: model, optimizer, scheduler, epoch,
    history, rng, config.
    """
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT
    return torch.load(path, weights_only=True, map_location=map_location)


def _config_diff(saved: dict[str, Any], config: TrainConfig) -> list[str]:
    now = config.to_dict()
    keys = (set(saved) | set(now)) - set(_RESUME_FREE)
    return [f"{k}: checkpoint {saved.get(k, '<missing>')!r} != config {now.get(k, '<missing>')!r}"
            for k in sorted(keys) if saved.get(k, "<missing>") != now.get(k, "<missing>")]


# --------------------------------------------------------------------------- distributed


@dataclass
class _Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def _resolve_device(config: TrainConfig, local_rank: int) -> torch.device:
    if config.device == "auto":
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    dev = torch.device(config.device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"TrainConfig.device is {config.device!r} but CUDA is not available; use 'cpu' or 'auto'")
        if dev.index is None:
            dev = torch.device("cuda", local_rank)
    return dev


def _setup_distributed(config: TrainConfig) -> tuple[_Dist, torch.device]:
    """Join the process group torchrun describes (WORLD_SIZE > 1): nccl on CUDA, gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = _resolve_device(config, local_rank)
    if world <= 1 and not (dist.is_available() and dist.is_initialized()):
        return _Dist(), device
    if device.type == "cuda":
        torch.cuda.set_device(device)
    owns = False
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        owns = True
    return _Dist(dist.get_rank(), dist.get_world_size(), local_rank, owns), device


def _all_reduce(t: torch.Tensor, d: _Dist) -> torch.Tensor:
    if d.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


# --------------------------------------------------------------------------- loops


def cpu_bf16_reason() -> str | None:
    """None if this CPU computes bfloat16 natively (AVX512-BF16 or AMX), else why not."""
    try:
        if torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported():
            return None
    except AttributeError:  # pragma: no cover - older torch
        return "this torch cannot tell whether the CPU has AVX512-BF16 or AMX"
    return "this CPU has neither AVX512-BF16 nor AMX: bfloat16 convolutions would be emulated and slower"


def _autocast(device: torch.device, amp: bool, cpu_amp: bool = False):
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if cpu_amp and device.type == "cpu":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _prepare(x: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    if x.dim() == 5:
        return x.transpose(0, 1)  # the one batch-first -> time-first conversion: [B, T, ...] -> [T, B, ...]
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader,
    *,
    device: torch.device | str | None = None,
    amp: bool = True,
    cpu_amp: bool = False,
    channels_last: bool = False,
    max_steps: int | None = None,
    _dist: _Dist | None = None,
) -> dict[str, Any]:
    """Test loss, accuracy and firing rates of ``model`` over ``loader``.

    The firing rate of a layer is the fraction of its b in {-1, 0, 1} that are nonzero
    (-1 spikes count) over all neurons, steps and test samples; ``firing_rate`` is the mean
    over layers.

    Returns:
        dict with test_loss (cross-entropy on T-averaged logits), test_acc, firing_rate,
        firing_rates (layer name -> rate).
    """
    d = _dist or _Dist()
    device = torch.device(device) if device is not None else next(model.parameters()).device
    layers = spiking_layers(model)
    was_training = model.training
    model.eval()
    for _, layer in layers:
        layer.record = True
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.float64, device=device)
    count = torch.zeros((), dtype=torch.float64, device=device)
    fired = torch.zeros(len(layers), dtype=torch.float64, device=device)
    total = torch.zeros(len(layers), dtype=torch.float64, device=device)
    try:
        for step, (x, y) in enumerate(loader, 1):
            if max_steps is not None and step > max_steps:
                break
            x, y = _prepare(x, device, channels_last), y.to(device, non_blocking=True)
            with _autocast(device, amp, cpu_amp):
                logits = model(x)
            logits = logits.float()
            loss_sum += F.cross_entropy(logits, y, reduction="sum").double()
            correct += (logits.argmax(-1) == y).sum()
            count += y.numel()
            for i, (_, layer) in enumerate(layers):
                fired[i] += layer.b_seq.count_nonzero()
                total[i] += layer.b_seq.numel()
    finally:
        for _, layer in layers:
            layer.record = False
            layer.b_seq = layer.mem_seq = None
        model.train(was_training)
    sums = _all_reduce(torch.cat([torch.stack([loss_sum, correct, count]), fired, total]), d).tolist()
    n = sums[2]
    rates = [f / t if t else float("nan") for f, t in zip(sums[3:3 + len(layers)], sums[3 + len(layers):])]
    return {
        "test_loss": sums[0] / n if n else float("nan"),
        "test_acc": sums[1] / n if n else float("nan"),
        "firing_rate": float(np.mean(rates)) if rates else float("nan"),
        "firing_rates": {name: r for (name, _), r in zip(layers, rates)},
    }


def _amplitudes(model: nn.Module) -> dict[str, float]:
    return {name: float(layer.graded_spikes_factor.detach().float().mean()) for name, layer in spiking_layers(model)}


def _loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, config: TrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, T-averaged logits [B, K])."""
    if config.loss == "ce":
        logits = model(x).float()
        return F.cross_entropy(logits, y, label_smoothing=config.label_smoothing), logits
    logits_seq = model(x, return_seq=True).float()  # [T, B, K]
    t, b, k = logits_seq.shape
    # TET (Deng et al. 2022): mean over t of CE(logits_t, y), optionally + lambda * MSE(logits_t, phi).
    ce = F.cross_entropy(logits_seq.reshape(t * b, k), y.repeat(t), label_smoothing=config.label_smoothing)
    loss = (1.0 - config.tet_lambda) * ce
    if config.tet_lambda:
        loss = loss + config.tet_lambda * F.mse_loss(logits_seq, torch.full_like(logits_seq, config.tet_phi))
    return loss, logits_seq.mean(0)


def _grad_norm(params: list[nn.Parameter], grad_clip: float | None) -> torch.Tensor:
    """Global L2 norm of the gradients (before clipping to ``grad_clip``, if given)."""
    if grad_clip is not None:
        return nn.utils.clip_grad_norm_(params, grad_clip)
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    if hasattr(nn.utils, "get_total_norm"):  # torch >= 2.6
        return nn.utils.get_total_norm(grads)
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))


def _check_finite(stats: torch.Tensor, first_step: int, epoch: int, d: _Dist, note: str = "") -> None:
    """Raise TrainingDiverged at the first step whose loss or gradient norm is not finite (on any rank).

    ``stats[k] = (loss, grad_norm)`` of step ``first_step + k``. A NaN need not reach the loss:
    a spike ``u >= threshold`` is False for NaN, so NaN weights can give a finite loss and NaN
    gradients; hence the gradient norm is checked too.
    """
    bad = ~torch.isfinite(stats).all(dim=1)
    any_bad = bad.any()
    first = torch.where(any_bad, bad.to(torch.int64).argmax(), torch.full((), -1, device=stats.device))
    if d.enabled:
        # every rank must stop at the same check, or the others would wait in a collective
        flag = torch.stack([any_bad.to(torch.float64), first.to(torch.float64)])
        gathered = [torch.zeros_like(flag) for _ in range(d.world_size)]
        dist.all_gather(gathered, flag)
        hits = [int(g[1]) for g in gathered if g[0] > 0]
        first_bad = min(hits) if hits else -1
    else:
        first_bad = int(first) if bool(any_bad) else -1
    if first_bad >= 0:
        loss, gnorm = stats[first_bad].tolist()
        raise TrainingDiverged(
            f"training diverged at epoch {epoch}, step {first_step + first_bad} (1-based, within the epoch): "
            f"loss {loss}, gradient norm {gnorm}. {note}Lower TrainConfig.lr or set grad_clip."
        )


# --------------------------------------------------------------------------- run folder


class _RunDir:
    """The run folder: an exclusive lock, the checkpoint and metrics.jsonl (written by rank 0)."""

    def __init__(self, path: Path | None, d: _Dist):
        self.path, self.d = path, d
        self._lock = None

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT

    @property
    def metrics(self) -> Path:
        return self.path / METRICS

    def open(self) -> None:
        if self.path is None or not self.d.main:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.path / ".lock", "a+")
        try:
            import fcntl

            fcntl.flock(self._lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # no fcntl (Windows): no cross-process guard
            pass
        except BlockingIOError:
            self._lock.close()
            self._lock = None
            raise RuntimeError(f"another process is training in out_dir {self.path}; refusing to share it") from None
        except OSError as e:  # a file system without locks: carry on unguarded
            logger.warning("cannot lock %s (%s); not guarding against a concurrent run", self.path, e)
        # temp files of a process killed while saving (we hold the lock: nobody else writes here)
        for name in (CHECKPOINT, METRICS):
            for stale in self.path.glob(f".{name}.*.tmp"):
                stale.unlink(missing_ok=True)

    def close(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def existing(self, config: TrainConfig) -> dict[str, Any] | None:
        """The checkpoint to resume, after checking it belongs to this config; None for a fresh run."""
        if self.path is None:
            return None
        if not self.checkpoint.exists():
            if self.metrics.exists() and self.metrics.stat().st_size > 0:
                raise ValueError(
                    f"out_dir {self.path} holds {METRICS} but no {CHECKPOINT}: it is another run's folder; "
                    f"choose a new out_dir (tspike_lab.results.new_run_dir)"
                )
            return None
        ckpt = load_checkpoint(self.checkpoint, map_location="cpu")
        if not config.resume:
            raise ValueError(
                f"out_dir {self.path} already holds a checkpoint (epoch {ckpt['epoch']}) and resume=False; "
                f"pass resume=True to continue it or choose a new out_dir (tspike_lab.results.new_run_dir)"
            )
        diff = _config_diff(ckpt["config"], config)
        if diff:
            raise ValueError(
                f"out_dir {self.path} holds a checkpoint of a different config; refusing to overwrite it. "
                f"Differing fields: {'; '.join(diff)}"
            )
        return ckpt

    def rewrite_metrics(self, history: list[dict[str, Any]]) -> None:
        """metrics.jsonl = the checkpoint's history (drops a line of an epoch never checkpointed)."""
        if self.path is not None and self.d.main:
            write_text_atomic(self.metrics, "".join(json.dumps(row) + "\n" for row in history))

    def save(self, state: dict[str, Any], row: dict[str, Any]) -> None:
        if self.path is None or not self.d.main:
            return
        _save_atomic(state, self.checkpoint)  # checkpoint first: metrics never run ahead of it
        _append_line(self.metrics, row)


# --------------------------------------------------------------------------- train


def _load_source(config: TrainConfig):
    from . import data

    options = {"num_steps": config.num_steps} if config.dataset == "cifar10-dvs" else {}
    return data.load(config.dataset, root=config.data_dir, **options)


def train(config: TrainConfig) -> History:
    """Train a spiking network as ``config`` says; return its per-epoch metrics.

    Validates ``config`` first (before any data is read). Under ``torchrun`` (WORLD_SIZE > 1)
    every process calls this; rank 0 alone writes files and shows progress; metrics are
    summed over ranks. With ``out_dir`` set, resumes from ``out_dir/checkpoint.pt`` when
    ``resume`` and the checkpoint's config matches (else ValueError naming the differing
    fields).

    Raises:
        ValueError: a bad config field, or an out_dir that belongs to another run.
        TrainingDiverged: the loss became NaN/inf (message names the epoch and the step).
    """
    validate(config)
    d, device = _setup_distributed(config)
    run = _RunDir(Path(config.out_dir) if config.out_dir is not None else None, d)
    try:
        if config.sync_bn and d.enabled and device.type != "cuda":
            raise ValueError(f"TrainConfig.sync_bn=True needs CUDA devices (torch's SyncBatchNorm is GPU-only), "
                             f"got device {str(device)!r}; use sync_bn=False on the CPU")
        if config.cpu_amp and device.type == "cpu" and cpu_bf16_reason() is not None:
            raise ValueError(f"TrainConfig.cpu_amp=True needs native bfloat16: {cpu_bf16_reason()}; "
                             f"use cpu_amp=False")
        run.open()
        history = _train(config, d, device, run)
        if d.owns_group:
            # every rank leaves together: tearing gloo down while a peer still has a
            # collective in flight aborts that peer ("terminate called without an active exception")
            dist.barrier()
        return history
    finally:
        run.close()
        if d.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def _train(config: TrainConfig, d: _Dist, device: torch.device, run: _RunDir) -> History:
    from .data import make_loader

    ckpt = run.existing(config)
    history = History(epochs=list(ckpt["history"]) if ckpt else [], config=config.to_dict(),
                      run_dir=str(run.path) if run.path is not None else None)
    if ckpt is not None and ckpt["epoch"] >= config.epochs:
        run.rewrite_metrics(history.epochs)
        return history  # already complete

    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    source = _load_source(config)
    channels_last = config.channels_last and not source.is_sequence

    _reseed(config.seed)  # the initial weights depend on the seed only
    extra = {"width": config.width} if config.width is not None else {}
    model = build_model(config.arch, neuron=config.neuron, num_classes=source.num_classes,
                        num_steps=config.num_steps, in_channels=source.in_channels,
                        amplitude=config.amplitude, **extra)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    groups = param_groups(model, config.weight_decay)
    params = [p for g in groups for p in g["params"]]
    if config.optimizer == "sgd":
        optimizer = torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum)
    else:
        optimizer = torch.optim.AdamW(groups, lr=config.lr)

    start_epoch, global_step = 1, 0
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        start_epoch, global_step = ckpt["epoch"] + 1, ckpt["scheduler"]["step"]
        _set_rng_state(ckpt["rng"])
        run.rewrite_metrics(history.epochs)
        logger.info("resuming %s at epoch %d", run.path, start_epoch)
    del ckpt

    net: nn.Module = model
    if d.enabled:
        if config.sync_bn:
            net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
        net = nn.parallel.DistributedDataParallel(
            net, device_ids=[device.index] if cuda else None, find_unused_parameters=False,
            gradient_as_bucket_view=True)
        model = net.module  # SyncBN conversion returns a new module tree; optimizer params are shared
    augment = augment_for(config)

    def loader(split: str, epoch: int):
        # A truncated evaluation (max_eval_steps) reads a fixed, seeded random subset, the same
        # every epoch: test splits are often ordered by class, so their first batches are not a sample.
        truncated_test = split == "test" and config.max_eval_steps is not None
        return make_loader(source, split, batch_size=config.batch_size, device=device,
                           augment=augment if split == "train" else None,
                           shuffle=split == "train" or truncated_test,
                           seed=config.seed, epoch=0 if truncated_test else epoch,
                           rank=d.rank, world_size=d.world_size,
                           drop_last=split == "train", num_workers=config.num_workers)

    steps_per_epoch = len(loader("train", 1))
    if config.max_steps_per_epoch is not None:
        steps_per_epoch = min(steps_per_epoch, config.max_steps_per_epoch)
    if steps_per_epoch < 1:
        raise ValueError(f"TrainConfig.batch_size={config.batch_size} exceeds the training set size per process; "
                         f"no full batch to train on")
    total_steps = steps_per_epoch * config.epochs
    warmup_steps = steps_per_epoch * config.warmup_epochs
    check_every = 1 if not cuda else 25  # a host sync per check; on CPU it is free

    from tqdm.auto import tqdm

    for epoch in range(start_epoch, config.epochs + 1):
        _reseed(_epoch_seed(config.seed, epoch))  # anything random beyond the loader's (seed, epoch)
        if run.path is None:
            note = "No checkpoint is kept (out_dir=None). "
        elif epoch > 1:
            note = f"{run.checkpoint} still holds epoch {epoch - 1}, the last good one. "
        else:
            note = "No checkpoint was written (the first epoch diverged). "
        train_loader = loader("train", epoch)
        net.train()
        if cuda:
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        stats = torch.zeros(steps_per_epoch, 2, dtype=torch.float32, device=device)  # (loss, grad norm) per step
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        correct = torch.zeros((), dtype=torch.float64, device=device)
        count = torch.zeros((), dtype=torch.float64, device=device)
        checked, lr = 0, config.lr
        bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch}/{config.epochs}", leave=False,
                   disable=not (config.progress and d.main), dynamic_ncols=True)
        try:
            for i, (x, y) in enumerate(train_loader):
                if i >= steps_per_epoch:
                    break
                lr = lr_at(global_step, lr=config.lr, total_steps=total_steps, warmup_steps=warmup_steps,
                           schedule=config.schedule)
                for g in optimizer.param_groups:
                    g["lr"] = lr
                x, y = _prepare(x, device, channels_last), y.to(device, non_blocking=True)
                with _autocast(device, config.amp, config.cpu_amp):
                    loss, logits = _loss(net, x, y, config)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                stats[i, 0] = loss.detach()
                stats[i, 1] = _grad_norm(params, config.grad_clip)
                if (i + 1 - checked) >= check_every or i + 1 == steps_per_epoch:
                    _check_finite(stats[checked:i + 1], checked + 1, epoch, d, note)  # before the step
                    checked = i + 1
                    bar.set_postfix(loss=f"{float(stats[i, 0]):.4f}", lr=f"{lr:.3g}", refresh=False)
                optimizer.step()
                global_step += 1
                loss_sum += loss.detach().double() * y.numel()
                correct += (logits.detach().argmax(-1) == y).sum()
                count += y.numel()
                bar.update(1)
        finally:
            bar.close()
        if checked < steps_per_epoch:
            _check_finite(stats[checked:], checked + 1, epoch, d, note)
        sums = _all_reduce(torch.stack([loss_sum, correct, count]), d).tolist()
        if cuda:
            torch.cuda.synchronize(device)
        train_time = time.perf_counter() - t0

        if d.enabled:
            # BatchNorm running statistics differ per rank after the last step: use rank 0's
            for buf in model.buffers():
                dist.broadcast(buf, 0)
        row: dict[str, Any] = {
            "epoch": epoch,
            "step": global_step,
            "train_loss": sums[0] / sums[2],
            "train_acc": sums[1] / sums[2],
            "test_loss": None,
            "test_acc": None,
            "firing_rate": None,
            "firing_rates": None,
        }
        if epoch % config.eval_every == 0 or epoch == config.epochs:
            row.update(evaluate(model, loader("test", epoch), device=device, amp=config.amp, cpu_amp=config.cpu_amp,
                                channels_last=channels_last, max_steps=config.max_eval_steps, _dist=d))
        row["amplitudes"] = _amplitudes(model)
        row["lr"] = lr
        row["epoch_time_s"] = time.perf_counter() - t0
        row["images_per_s"] = sums[2] / train_time if train_time > 0 else float("nan")
        history.epochs.append(row)
        run.save({
            "format": _CHECKPOINT_FORMAT,
            "epoch": epoch,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": {"schedule": config.schedule, "step": global_step, "steps_per_epoch": steps_per_epoch,
                          "total_steps": total_steps, "warmup_steps": warmup_steps},
            "history": history.epochs,
            "rng": _rng_state(),
            "config": config.to_dict(),
        }, row)
    return history


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The per-epoch metrics a run wrote to ``run_dir/metrics.jsonl``."""
    return read_jsonl(Path(run_dir) / METRICS)


if __name__ == "__main__":
    import sys

    from .cli import main

    sys.exit(main(["train", *sys.argv[1:]]))
