"""What a training run may be: :class:`TrainConfig` and its one :func:`validate`.

Every choice field is backed by a registry (``CHOICES``): ``dataset`` by
:data:`tspike_lab.data.DATASETS`, ``arch`` by :data:`tspike_lab.models.ARCHS`, ``neuron`` by
:data:`tspike_lab.models.NEURONS`, and so on. The command line (:mod:`tspike_lab.cli`) and the
reproduction pipeline (:mod:`tspike_lab.reproduce`) translate their parameters into a
TrainConfig and let :func:`validate` decide; a bad value raises
:class:`tspike_lab.errors.ConfigError` naming the field, the value and what is allowed.
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping

import torch
from torch import nn

from .data import DATASETS
from .errors import ConfigError, ResourceError
from .models import ARCHS, INITS, NEURONS
from .models.layers import AMPLITUDES

__all__ = ["TrainConfig", "validate", "CHOICES", "OPTIMIZERS", "SCHEDULES", "LOSSES", "AMP_DTYPES", "RESUME_FREE",
           "resolve_device", "cpu_bf16_reason", "onednn_1x1_hazard", "check_environment", "estimate_memory",
           "available_memory", "check_memory"]

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "cosine_epoch", "constant")
AMP_DTYPES = ("bfloat16", "float16")
LOSSES = ("ce", "tet")

# Fields that do not change what a run computes: a checkpoint written under other values
# of these may be resumed.
RESUME_FREE = ("data_dir", "device", "out_dir", "resume", "progress", "num_workers", "assume_same_data")


@dataclass
class TrainConfig:
    """Everything a training run depends on; plain typed defaults (the paper's recipe).

    Data and model:
        dataset: one of ``tspike_lab.data.DATASETS``. data_dir: its folder (None: the data default).
        arch: one of ``ARCHS``. neuron: one of ``NEURONS``. num_steps: T (time steps; for
        cifar10-dvs also the number of event frames). width: channels of arch "small" only.
        amplitude: "layer" (one trainable a per layer, Eq. 13-14) or "channel".
        step_bn: BatchNorms outside residual blocks (stems, every VGG BN) normalise each time step,
        as the released ``SpikeConv`` (False: over T*B). init: "torch" (PyTorch's defaults) or
        "released" (the released code's, :func:`tspike_lab.models.released_init`).
    Optimization:
        epochs, batch_size (per process; global batch = batch_size * world size),
        optimizer ("sgd" | "adamw"), lr, momentum (SGD), weight_decay (conv/linear weights only;
        BatchNorm, biases and amplitudes a are exempt, as the paper's code), warmup_epochs
        (linear warm-up), schedule ("cosine": per step to 0 | "cosine_epoch": constant within an
        epoch, stepped per epoch as the released ``CosineAnnealingLR(T_max=epochs)`` | "constant"), label_smoothing,
        loss ("ce": cross-entropy on T-averaged logits, the paper; "tet": Deng et al. 2022,
        ``(1 - tet_lambda) * mean_t CE(logits_t, y) + tet_lambda * MSE(logits_t, tet_phi)``),
        grad_clip (max global grad norm; None: off).
    Augmentation (training only; None: the data set's recipe, ``DATASETS[dataset].augment``):
        augment (False: none at all), crop_padding, flip, autoaugment, cutout, roll.
    Hardware:
        amp (autocast on CUDA in ``amp_dtype``: "bfloat16", or "float16" with a GradScaler as the
        released ImageNet script), cpu_amp (bf16 autocast on a CPU with native bf16,
        AVX512-BF16 or AMX; off by default: it changes float32 results), channels_last
        (image input, CUDA and CPU: faster convolutions on both), device
        ("auto": cuda:LOCAL_RANK if available, else cpu), sync_bn (SyncBatchNorm when
        distributed on GPUs; a no-op in one process), num_workers (DataLoader workers, file-based data only).
    Bookkeeping:
        seed, out_dir (run folder; None: no files), resume (continue from out_dir's
        checkpoint), assume_same_data (resume a checkpoint that records no data fingerprint,
        written before tspike_lab recorded one, as if trained on data_dir's data; otherwise such
        a resume is refused, since nothing can tell other data apart), max_steps_per_epoch and
        max_eval_steps (truncate epochs, for smoke tests), eval_every (test every k epochs and
        at the last), progress (tqdm bar).
    """

    dataset: str = "digits"
    data_dir: str | None = None
    arch: str = "small"
    neuron: str = "trainable_ternary"
    num_steps: int = 2
    width: int | None = None
    amplitude: str = "layer"
    step_bn: bool = False
    init: str = "torch"

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
    amp_dtype: str = "bfloat16"
    cpu_amp: bool = False
    channels_last: bool = True
    device: str = "auto"
    sync_bn: bool = False
    num_workers: int = 4

    seed: int = 0
    out_dir: str | None = None
    resume: bool = True
    assume_same_data: bool = False
    max_steps_per_epoch: int | None = None
    max_eval_steps: int | None = None
    eval_every: int = 1
    progress: bool = True

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"unknown TrainConfig field(s) {unknown}; allowed: {sorted(names)}")
        return cls(**d)


# The registry behind every choice field: validate() checks against it, the CLI lists it.
CHOICES: Mapping[str, Mapping | tuple] = MappingProxyType({
    "dataset": DATASETS,
    "arch": ARCHS,
    "neuron": NEURONS,
    "amplitude": AMPLITUDES,
    "optimizer": OPTIMIZERS,
    "schedule": SCHEDULES,
    "loss": LOSSES,
    "init": INITS,
    "amp_dtype": AMP_DTYPES,
})

_DEVICE_HELP = "'auto', 'cpu', 'cuda' or 'cuda:N'"


def _fail(name: str, value: Any, allowed: str):
    raise ConfigError.bad("TrainConfig", name, value, allowed)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_real(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


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
        ("grad_clip", c.grad_clip is None or (_is_real(c.grad_clip) and c.grad_clip > 0),
         "None or a finite number > 0"),
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
    for name in ("augment", "step_bn", "amp", "cpu_amp", "channels_last", "sync_bn", "resume", "assume_same_data",
                 "progress"):
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
        _fail("arch", c.arch, f"a network that takes {side}x{side} images ({c.dataset!r}); {c.arch!r} needs "
                              f"at least {need}x{need}")


def validate(config: TrainConfig) -> TrainConfig:
    """Check every field against its registry or range; raise ConfigError naming field, value and what is allowed.

    Touches no data and no device. Returns ``config`` unchanged.
    """
    if not isinstance(config, TrainConfig):
        raise ConfigError(f"config must be a TrainConfig, got {type(config).__name__}")
    for name, registry in CHOICES.items():
        value = getattr(config, name)
        if not isinstance(value, str) or value not in registry:
            _fail(name, value, f"one of {list(registry)}")
    _check_ranges(config)
    _check_paths_and_device(config)
    _check_pairing(config)
    check_environment()
    return config


def check_environment() -> None:
    """Raise ConfigError naming the variable when ``TSPIKE_STREAM_BYTES``, ``TSPIKE_RECYCLE_MB``, ``TSPIKE_SIMD`` or one of
    torchrun's ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK`` is not a whole number >= 0 (``TSPIKE_DATA`` is
    checked where the data folder is used: :func:`tspike_lab.data.cache_dir`)."""
    from .kernels.recycle import env_int

    env_int("TSPIKE_STREAM_BYTES", 0, unit="bytes")
    env_int("TSPIKE_RECYCLE_MB", 0, unit="MiB")
    from .kernels.cpu import simd_from_env

    simd_from_env()
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        env_int(name, 0)


def resolve_device(device: str, local_rank: int = 0) -> torch.device:
    """The torch device a ``device`` string names: "auto" is cuda:local_rank where CUDA is present, else cpu.

    Raises ConfigError for a CUDA device on a machine without CUDA.
    """
    if device == "auto":
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device is {device!r} but CUDA is not available on this machine; use 'cpu' or 'auto'",
                              field="device", value=device, allowed="'auto' or 'cpu' (no CUDA here)")
        if dev.index is None:
            dev = torch.device("cuda", local_rank)
        if dev.index >= torch.cuda.device_count():
            n = torch.cuda.device_count()
            raise ConfigError(f"device is {device!r} but this machine has {n} CUDA device(s) (cuda:0..cuda:{n - 1})",
                              field="device", value=device, allowed=f"'auto', 'cpu' or 'cuda:0'..'cuda:{n - 1}'")
    return dev


# --------------------------------------------------------------------------- will it fit


def estimate_memory(config: TrainConfig, *, in_channels: int, image_size: tuple[int, int], num_classes: int,
                    is_sequence: bool = False, half: bool = False) -> dict[str, int]:
    """A lower bound of the bytes one training step of ``config`` holds: weights, gradients, optimizer state, activations.

    The network is built on the ``meta`` device (no memory) and run forward on a meta batch of
    ``batch_size``; activations are what backward must keep at the least: the output of every
    convolution / linear layer (BatchNorm's input) and of every spiking layer (the next
    convolution's input), at T=1 and T=2, extrapolated linearly to ``num_steps``. ``half``:
    activations in 2-byte floats (bf16 autocast).

    Returns:
        dict with ``params`` (count), ``weights`` (weights + gradients + optimizer state, bytes),
        ``activations`` (bytes) and ``total`` (bytes).
    """
    from .models import build_model
    from .models.layers import MultiStepLIF

    extra = {"width": config.width} if config.width is not None else {}
    extra.update({k: getattr(config, k) for k in ("step_bn", "init") if hasattr(config, k)})  # recipe fields, if any
    kept = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, MultiStepLIF)
    acts, params = [], 0
    for t in (1, 2):
        with torch.device("meta"):
            model = build_model(config.arch, neuron=config.neuron, num_classes=num_classes, num_steps=t,
                                in_channels=in_channels, amplitude=config.amplitude, **extra)
        params = sum(p.numel() for p in model.parameters())
        total = [0]

        def hook(module, inputs, output):
            if isinstance(output, torch.Tensor):
                total[0] += output.numel() * (2 if half and output.is_floating_point() else output.element_size())

        handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, kept)]
        shape = (t, config.batch_size, in_channels, *image_size) if is_sequence else \
            (config.batch_size, in_channels, *image_size)
        with torch.no_grad():
            model(torch.empty(shape, device="meta"))
        for h in handles:
            h.remove()
        acts.append(total[0])
    activations = acts[0] + (acts[1] - acts[0]) * (config.num_steps - 1)
    states = 2 if config.optimizer == "adamw" else (1 if config.momentum else 0)
    weights = params * 4 * (2 + states)
    return {"params": params, "weights": weights, "activations": activations, "total": weights + activations}


def _cgroup_free(root: str = "/sys/fs/cgroup") -> tuple[int, str] | None:
    """The cgroup's memory limit less its working set (usage less inactive page cache, which is reclaimable)."""
    for limit_name, usage_name, stat_name, inactive in (
            ("memory.max", "memory.current", "memory.stat", "inactive_file"),
            ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes", "memory/memory.stat",
             "total_inactive_file")):
        try:
            with open(os.path.join(root, limit_name), encoding="ascii") as f:
                limit = f.read().strip()
            with open(os.path.join(root, usage_name), encoding="ascii") as f:
                usage = int(f.read().strip())
        except (OSError, ValueError):
            continue
        if not limit.isdigit() or int(limit) >= 2**60:  # "max", or v1's "no limit"
            continue
        cache = 0
        try:
            with open(os.path.join(root, stat_name), encoding="ascii") as f:
                for line in f:
                    key, _, value = line.partition(" ")
                    if key == inactive:
                        cache = int(value)
        except (OSError, ValueError):
            pass
        return max(int(limit) - max(usage - cache, 0), 0), f"the cgroup's memory limit ({os.path.join(root, limit_name)})"
    return None


def _rlimit_free() -> tuple[int, str] | None:
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return None
    best = None
    for name, field in (("RLIMIT_AS", "VmSize"), ("RLIMIT_DATA", "VmData")):
        kind = getattr(resource, name, None)
        if kind is None:
            continue
        soft = resource.getrlimit(kind)[0]
        if soft == resource.RLIM_INFINITY or soft < 0:
            continue
        used = 0
        try:
            with open("/proc/self/status", encoding="ascii") as f:
                for line in f:
                    if line.startswith(field + ":"):
                        used = int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            pass
        free = max(soft - used, 0)
        if best is None or free < best[0]:
            best = (free, f"the process limit {name} (ulimit)")
    return best


def available_memory(device: torch.device) -> tuple[int, str] | None:
    """Bytes free for a run on ``device`` and where the number comes from; None when it cannot be told.

    CUDA: the device's free memory. CPU: the least of MemAvailable (/proc/meminfo), the
    cgroup's limit less its usage, and the address-space / data ulimits less this process's use.
    """
    if device.type == "cuda":
        try:
            free, _ = torch.cuda.mem_get_info(device)
        except (RuntimeError, AssertionError):
            return None
        return int(free), f"free memory of {device}"
    found = []
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    found.append((int(line.split()[1]) * 1024, "MemAvailable (/proc/meminfo)"))
    except (OSError, ValueError, IndexError):
        pass
    for extra in (_cgroup_free(), _rlimit_free()):
        if extra is not None:
            found.append(extra)
    return min(found) if found else None


def _size(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if n < 1024 or unit == "EiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} EiB"  # pragma: no cover


def check_memory(config: TrainConfig, device: torch.device, *, in_channels: int, image_size: tuple[int, int],
                 num_classes: int, is_sequence: bool = False) -> dict[str, int]:
    """Raise ResourceError when :func:`estimate_memory` (a lower bound) exceeds :func:`available_memory`.

    Called before the network is built, so a width, batch or T that cannot fit is refused in one
    line instead of failing in the allocator. Returns the estimate.
    """
    half = (config.amp and device.type == "cuda") or (config.cpu_amp and device.type == "cpu")
    est = estimate_memory(config, in_channels=in_channels, image_size=image_size, num_classes=num_classes,
                          is_sequence=is_sequence, half=half)
    free = available_memory(device)
    if free is not None and est["total"] > free[0]:
        width = f"width={config.width}, " if config.width is not None else ""
        raise ResourceError(
            f"TrainConfig {width}batch_size={config.batch_size}, num_steps={config.num_steps} "
            f"(arch {config.arch!r}) needs at least {_size(est['total'])} on {device} (weights, gradients and "
            f"optimizer state {_size(est['weights'])}, activations {_size(est['activations'])}), but "
            f"{_size(free[0])} is available ({free[1]}); lower batch_size, num_steps or width")
    return est


# --------------------------------------------------------------------------- what this CPU can do


def cpu_bf16_reason() -> str | None:
    """None if this CPU computes bfloat16 natively (AVX512-BF16 or AMX), else why not."""
    try:
        if torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported():
            return None
    except AttributeError:  # pragma: no cover - older torch
        return "this torch cannot tell whether the CPU has AVX512-BF16 or AMX"
    return "this CPU has neither AVX512-BF16 nor AMX: bfloat16 convolutions would be emulated and slower"


def onednn_1x1_hazard(model: nn.Module) -> str | None:
    """The first Conv2d of ``model`` whose CPU backward corrupts the heap in channels-last, or None.

    oneDNN 3.12 (torch 2.13 CPU wheels; kernel ``jit_1x1:avx2`` backward_weights) writes out of
    bounds computing the weight gradient of a 1x1 convolution with stride > 1 on channels-last
    input with 2..7 input channels when torch runs one thread: the heap is corrupted and the
    process dies later ("corrupted size vs. prev_size", "free(): invalid size", segfaults).
    Arch "small" at widths 2..7 has such a shortcut (its stage-2 downsampling 1x1 conv). Measured
    on an AVX2 CPU; an AVX-512 CPU blocks channels by 16, so there up to 15 channels are avoided.
    Pure-torch repro (crashes within 20 iterations)::

        torch.set_num_threads(1)
        conv = nn.Conv2d(2, 4, 1, stride=2, bias=False).to(memory_format=torch.channels_last)
        x = torch.randn(256, 2, 8, 8).contiguous(memory_format=torch.channels_last).requires_grad_()
        conv(x).sum().backward()
    """
    limit = 16 if torch.backends.cpu.get_cpu_capability().startswith("AVX512") else 8
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and m.stride != (1, 1) and 1 < m.in_channels < limit:
            return name
    return None
