"""What a training run may be: :class:`TrainConfig`, checked once, when it is made.

A TrainConfig is frozen and checks itself on construction: every choice field against its
registry (``CHOICES``: ``dataset`` against :data:`tspike_lab.data.DATASETS`, ``arch`` against
:data:`tspike_lab.models.ARCHS`, ``neuron`` against :data:`tspike_lab.models.NEURONS`, ...),
every number against its range, and the fields that must agree (width with arch, the data's
image size with the arch). A bad value raises :class:`tspike_lab.errors.ConfigError` naming the
field, the value and what is allowed, so a TrainConfig that exists is valid. What depends on
the machine (the device, memory, native bfloat16, torchrun's variables) is checked where a run
starts (:func:`tspike_lab.train.train`, :mod:`tspike_lab.hardware`).

Each field's meaning is its ``metadata["help"]``, the one text the command line
(``tspike train --help``), the reproduction pipeline and :meth:`TrainConfig.describe` show.
A changed config is a new one: ``dataclasses.replace(config, out_dir=...)``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import torch
from torch import nn

from . import hardware
from .data import DATASETS
from .errors import ConfigError, ResourceError
from .models import ARCHS, INITS, NEURONS, SpikingNet, build_model
from .models.layers import AMPLITUDES, MultiStepLIF

__all__ = [
    "TrainConfig",
    "CHOICES",
    "OPTIMIZERS",
    "SCHEDULES",
    "LOSSES",
    "AMP_DTYPES",
    "RESUME_FREE",
    "estimate_memory",
    "check_memory",
]

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "cosine_epoch", "constant")
AMP_DTYPES = ("bfloat16", "float16")
LOSSES = ("ce", "tet")

# Fields that do not change what a run computes: a checkpoint written under other values
# of these may be resumed.
RESUME_FREE = ("data_dir", "device", "out_dir", "resume", "progress", "num_workers", "assume_same_data")

_RECIPE = "None: the data set's recipe, DATASETS[dataset].augment"


def _field(default: Any, help: str) -> Any:
    """A field with a default and its meaning (``metadata["help"]``)."""
    return dataclasses.field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on: plain typed defaults (the paper's recipe), checked when made.

    Frozen: ``dataclasses.replace(config, epochs=3)`` makes a changed copy (checked again).
    ``TrainConfig.describe()`` lists every field with its default and meaning (below).
    """

    # data and model
    dataset: str = _field("digits", "data set (tspike_lab.data.DATASETS)")
    data_dir: str | None = _field(
        None, "its folder or archive (None: $TSPIKE_DATA or ~/.cache/tspike_lab; the embedded digits take none)"
    )
    arch: str = _field("small", "network (tspike_lab.models.ARCHS)")
    neuron: str = _field("trainable_ternary", "spiking neuron (tspike_lab.models.NEURONS)")
    num_steps: int = _field(2, "time steps T (for cifar10-dvs also the number of event frames)")
    width: int | None = _field(None, "channels of arch 'small' (None: its default; other archs take None)")
    amplitude: str = _field("layer", "one trainable amplitude a per 'layer' (Eq. 13-14) or per 'channel'")
    step_bn: bool = _field(
        False,
        "BatchNorms outside residual blocks (stems, every VGG BN) normalise each time "
        "step, as the released SpikeConv (False: over T*B)",
    )
    init: str = _field(
        "torch",
        "initial weights: PyTorch's defaults ('torch') or the released code's "
        "('released', tspike_lab.models.released_init)",
    )

    # optimization
    epochs: int = _field(10, "training epochs")
    batch_size: int = _field(128, "samples per step and process (global batch = batch_size x world size)")
    optimizer: str = _field("sgd", "optimizer (adamw: torch defaults, momentum unused)")
    lr: float = _field(0.1, "peak learning rate")
    momentum: float = _field(0.9, "SGD momentum")
    weight_decay: float = _field(
        1e-4, "on conv/linear weights only (BatchNorm, biases and amplitudes a are exempt, as the paper's code)"
    )
    warmup_epochs: int = _field(0, "linear warm-up epochs")
    schedule: str = _field(
        "cosine",
        "learning-rate schedule: 'cosine' (per step to 0), 'cosine_epoch' (constant "
        "within an epoch, as the released CosineAnnealingLR(T_max=epochs)) or "
        "'constant'",
    )
    label_smoothing: float = _field(0.0, "cross-entropy label smoothing")
    loss: str = _field(
        "ce",
        "'ce': cross-entropy on T-averaged logits (the paper); 'tet': Deng et al. 2022, "
        "(1 - tet_lambda) * mean_t CE(logits_t, y) + tet_lambda * MSE(logits_t, tet_phi)",
    )
    tet_lambda: float = _field(0.0, "weight of TET's MSE regularizer (0 unless loss='tet')")
    tet_phi: float = _field(1.0, "target of TET's MSE regularizer")
    grad_clip: float | None = _field(None, "largest global gradient norm (None: no clipping)")

    # augmentation, training only
    augment: bool = _field(
        True, "training augmentation (False: none at all; the five fields below override the data set's recipe)"
    )
    crop_padding: int | None = _field(None, f"random-crop padding in pixels ({_RECIPE})")
    flip: bool | None = _field(None, f"random horizontal flip ({_RECIPE})")
    autoaugment: bool | None = _field(None, f"AutoAugment's CIFAR10 policy ({_RECIPE})")
    cutout: int | None = _field(None, f"side of the Cutout square in pixels ({_RECIPE})")
    roll: int | None = _field(None, f"largest random roll in pixels ({_RECIPE})")

    # hardware
    amp: bool = _field(True, "autocast on CUDA in amp_dtype")
    amp_dtype: str = _field(
        "bfloat16", "autocast dtype on CUDA ('float16' with a GradScaler, as the released ImageNet script)"
    )
    cpu_amp: bool = _field(
        False, "bfloat16 autocast on a CPU with native bfloat16 (AVX512-BF16 or AMX); it changes float32 results"
    )
    channels_last: bool = _field(
        True, "channels-last memory format for image input (faster convolutions on CUDA and CPU)"
    )
    device: str = _field("auto", "'auto' (cuda:LOCAL_RANK where CUDA is present, else cpu), 'cpu', 'cuda' or 'cuda:N'")
    sync_bn: bool = _field(False, "SyncBatchNorm when distributed on GPUs (torchrun; a no-op in one process)")
    num_workers: int = _field(4, "DataLoader workers (file-based data only)")

    # bookkeeping
    seed: int = _field(0, "seed of the initial weights, the data order and the augmentation")
    out_dir: str | None = _field(
        None, "run folder (metrics.jsonl, checkpoint.pt), resumed if it holds a checkpoint (None: no files)"
    )
    resume: bool = _field(True, "continue from out_dir's checkpoint")
    assume_same_data: bool = _field(
        False,
        "resume a checkpoint that records no data fingerprint (written before "
        "tspike_lab recorded one) on data_dir's data, which you vouch is the "
        "data it was trained on (otherwise such a resume is refused)",
    )
    max_steps_per_epoch: int | None = _field(
        None, "truncate each epoch to this many steps (smoke tests; None: the whole split)"
    )
    max_eval_steps: int | None = _field(
        None, "truncate each test pass to this many batches (smoke tests; None: the whole split)"
    )
    eval_every: int = _field(1, "test every k epochs (and after the last)")
    progress: bool = _field(True, "tqdm progress bar")

    def __post_init__(self) -> None:
        for name in ("data_dir", "out_dir"):  # a Path is kept as its string: configs are JSON
            value = getattr(self, name)
            if isinstance(value, os.PathLike):
                object.__setattr__(self, name, os.fspath(value))
        _check(self)

    def to_dict(self) -> dict[str, Any]:
        """Every field by name: plain JSON values (checkpoints and torchrun carry configs so)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
        """The config ``d`` describes; fields it lacks take their defaults (a checkpoint older than them)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"unknown TrainConfig field(s) {unknown}; allowed: {sorted(names)}")
        return cls(**d)

    @classmethod
    def describe(cls) -> str:
        """Every field, one line each: ``name = default: meaning`` (its ``metadata["help"]``), with what a choice
        field allows."""
        lines = []
        for f in dataclasses.fields(cls):
            allowed = f"; one of {list(CHOICES[f.name])}" if f.name in CHOICES else ""
            lines.append(f"{f.name} = {f.default!r}: {f.metadata['help']}{allowed}")
        return "\n".join(lines)

    def build_model(self, *, num_classes: int, in_channels: int, num_steps: int | None = None) -> SpikingNet:
        """The network this config trains (arch, neuron, T, amplitude, step_bn, init, width), freshly initialised.

        ``num_steps`` overrides T (None: the config's).
        """
        extra = {"width": self.width} if self.width is not None else {}
        return build_model(
            self.arch,
            neuron=self.neuron,
            num_classes=num_classes,
            num_steps=self.num_steps if num_steps is None else num_steps,
            in_channels=in_channels,
            amplitude=self.amplitude,
            step_bn=self.step_bn,
            init=self.init,
            **extra,
        )


# The registry behind every choice field: the check refuses what is not in it, the CLI lists it.
CHOICES: Mapping[str, Mapping | tuple] = MappingProxyType(
    {
        "dataset": DATASETS,
        "arch": ARCHS,
        "neuron": NEURONS,
        "amplitude": AMPLITUDES,
        "optimizer": OPTIMIZERS,
        "schedule": SCHEDULES,
        "loss": LOSSES,
        "init": INITS,
        "amp_dtype": AMP_DTYPES,
    }
)

TrainConfig.__doc__ += "\n    Fields:\n" + textwrap.indent(TrainConfig.describe(), " " * 8) + "\n"

_DEVICE_HELP = "'auto', 'cpu', 'cuda' or 'cuda:N'"


def _fail(name: str, value: Any, allowed: str):
    raise ConfigError.bad("TrainConfig", name, value, allowed)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_real(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_choices(c: TrainConfig) -> None:
    for name, registry in CHOICES.items():
        value = getattr(c, name)
        if not isinstance(value, str) or value not in registry:
            _fail(name, value, f"one of {list(registry)}")


def _check_ranges(c: TrainConfig) -> None:
    for name in ("epochs", "batch_size", "num_steps", "eval_every"):
        value = getattr(c, name)
        if not _is_int(value) or value < 1:
            _fail(name, value, "an int >= 1")
    for name in ("width", "max_steps_per_epoch", "max_eval_steps"):
        value = getattr(c, name)
        if value is not None and (not _is_int(value) or value < 1):
            _fail(name, value, "None or an int >= 1")
    for name in ("num_workers", "seed"):
        value = getattr(c, name)
        if not _is_int(value) or value < 0:
            _fail(name, value, "an int >= 0")
    if not _is_int(c.warmup_epochs) or not (c.warmup_epochs == 0 or 0 <= c.warmup_epochs < c.epochs):
        _fail("warmup_epochs", c.warmup_epochs, f"an int in [0, epochs={c.epochs})")
    for name, ok, allowed in (
        ("lr", _is_real(c.lr) and c.lr > 0, "a finite number > 0"),
        ("momentum", _is_real(c.momentum) and 0 <= c.momentum < 1, "a number in [0, 1)"),
        ("weight_decay", _is_real(c.weight_decay) and c.weight_decay >= 0, "a finite number >= 0"),
        ("label_smoothing", _is_real(c.label_smoothing) and 0 <= c.label_smoothing < 1, "a number in [0, 1)"),
        ("tet_lambda", _is_real(c.tet_lambda) and 0 <= c.tet_lambda <= 1, "a number in [0, 1]"),
        ("tet_phi", _is_real(c.tet_phi), "a finite number"),
        (
            "grad_clip",
            c.grad_clip is None or (_is_real(c.grad_clip) and c.grad_clip > 0),
            "None or a finite number > 0",
        ),
    ):
        if not ok:
            _fail(name, getattr(c, name), allowed)
    if c.tet_lambda and c.loss != "tet":
        _fail("tet_lambda", c.tet_lambda, "0 unless loss='tet'")
    for name in ("crop_padding", "cutout", "roll"):
        value = getattr(c, name)
        if value is not None and (not _is_int(value) or value < 0):
            _fail(name, value, "None (the data set's recipe) or an int >= 0")
    for name in ("flip", "autoaugment"):
        value = getattr(c, name)
        if value is not None and not isinstance(value, bool):
            _fail(name, value, "None (the data set's recipe), True or False")
    for name in (
        "augment",
        "step_bn",
        "amp",
        "cpu_amp",
        "channels_last",
        "sync_bn",
        "resume",
        "assume_same_data",
        "progress",
    ):
        if not isinstance(getattr(c, name), bool):
            _fail(name, getattr(c, name), "True or False")


def _check_paths_and_device(c: TrainConfig) -> None:
    if not isinstance(c.device, str):
        _fail("device", c.device, _DEVICE_HELP)
    if c.device != "auto":
        try:
            dev = torch.device(c.device)
        except (RuntimeError, ValueError):
            _fail("device", c.device, _DEVICE_HELP)
        if dev.type not in ("cpu", "cuda") or (dev.type == "cpu" and dev.index not in (None, 0)):
            _fail("device", c.device, _DEVICE_HELP)
    for name in ("data_dir", "out_dir"):
        value = getattr(c, name)
        if value is not None and (not isinstance(value, (str, os.PathLike)) or str(value) == ""):
            _fail(name, value, "None or a non-empty path")


def _check_pairing(c: TrainConfig) -> None:
    """Choices that must agree with each other: width with arch, the data's image size with the arch."""
    if c.width is not None and c.arch != "small":
        _fail("width", c.width, f"None for arch {c.arch!r} (width applies to arch 'small' only)")
    size = DATASETS[c.dataset].image_size  # None: known only after loading (an image folder)
    side = min(size) if size else None
    need = ARCHS[c.arch].min_size
    if side is not None and side < need:
        _fail(
            "arch",
            c.arch,
            f"a network that takes {side}x{side} images ({c.dataset!r}); {c.arch!r} needs at least {need}x{need}",
        )


def _check(c: TrainConfig) -> None:
    """Every intrinsic rule of a TrainConfig (no data, device or environment): ConfigError at the first broken one."""
    _check_choices(c)
    _check_ranges(c)
    _check_paths_and_device(c)
    _check_pairing(c)


# --------------------------------------------------------------------------- will it fit


def estimate_memory(
    config: TrainConfig,
    *,
    in_channels: int,
    image_size: tuple[int, int],
    num_classes: int,
    is_sequence: bool = False,
    half: bool = False,
) -> dict[str, int]:
    """A lower bound of the bytes a training step of ``config`` holds: weights, gradients, optimizer state, activations.

    The network is built on the ``meta`` device (no memory) and run forward on a meta batch of
    ``batch_size``; activations are what backward must keep at the least: the output of every
    convolution / linear layer (BatchNorm's input) and of every spiking layer (the next
    convolution's input), at T=1 and T=2, extrapolated linearly to ``num_steps``. ``half``:
    activations in 2-byte floats (bf16 autocast).

    Returns:
        dict with ``params`` (count), ``weights`` (weights + gradients + optimizer state, bytes),
        ``activations`` (bytes) and ``total`` (bytes).
    """
    kept = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, MultiStepLIF)
    acts, params = [], 0
    for t in (1, 2):
        with torch.device("meta"):
            model = config.build_model(num_classes=num_classes, in_channels=in_channels, num_steps=t)
        params = sum(p.numel() for p in model.parameters())
        total = [0]

        def hook(module, inputs, output, total=total):
            if isinstance(output, torch.Tensor):
                total[0] += output.numel() * (2 if half and output.is_floating_point() else output.element_size())

        handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, kept)]
        shape = (
            (t, config.batch_size, in_channels, *image_size)
            if is_sequence
            else (config.batch_size, in_channels, *image_size)
        )
        with torch.no_grad():
            model(torch.empty(shape, device="meta"))
        for h in handles:
            h.remove()
        acts.append(total[0])
    activations = acts[0] + (acts[1] - acts[0]) * (config.num_steps - 1)
    states = 2 if config.optimizer == "adamw" else (1 if config.momentum else 0)
    weights = params * 4 * (2 + states)
    return {"params": params, "weights": weights, "activations": activations, "total": weights + activations}


def _size(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if n < 1024 or unit == "EiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} EiB"  # pragma: no cover


def check_memory(
    config: TrainConfig,
    device: torch.device,
    *,
    in_channels: int,
    image_size: tuple[int, int],
    num_classes: int,
    is_sequence: bool = False,
) -> dict[str, int]:
    """Raise ResourceError when :func:`estimate_memory` (a lower bound) exceeds
    :func:`tspike_lab.hardware.available_memory`.

    Called before the network is built, so a width, batch or T that cannot fit is refused in one
    line instead of failing in the allocator. Returns the estimate.
    """
    half = (config.amp and device.type == "cuda") or (config.cpu_amp and device.type == "cpu")
    est = estimate_memory(
        config,
        in_channels=in_channels,
        image_size=image_size,
        num_classes=num_classes,
        is_sequence=is_sequence,
        half=half,
    )
    free = hardware.available_memory(device)
    if free is not None and est["total"] > free[0]:
        width = f"width={config.width}, " if config.width is not None else ""
        raise ResourceError(
            f"TrainConfig {width}batch_size={config.batch_size}, num_steps={config.num_steps} "
            f"(arch {config.arch!r}) needs at least {_size(est['total'])} on {device} (weights, gradients and "
            f"optimizer state {_size(est['weights'])}, activations {_size(est['activations'])}), but "
            f"{_size(free[0])} is available ({free[1]}); lower batch_size, num_steps or width"
        )
    return est
