"""What this machine offers a run: its device, free memory, native bfloat16, and a oneDNN hazard.

These are checked where a run starts (:func:`tspike_lab.train.train`), not when a
:class:`~tspike_lab.config.TrainConfig` is made: a config valid on one machine may not fit another.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from .errors import ConfigError

__all__ = ["resolve_device", "available_memory", "cpu_bf16_reason", "onednn_1x1_hazard"]


def resolve_device(device: str, local_rank: int = 0) -> torch.device:
    """The torch device a ``device`` string names: "auto" is cuda:local_rank where CUDA is present, else cpu.

    Raises ConfigError for a CUDA device on a machine without CUDA, or one beyond its device count.
    """
    if device == "auto":
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device is {device!r} but CUDA is not available on this machine; use 'cpu' or 'auto'",
                field="device",
                value=device,
                allowed="'auto' or 'cpu' (no CUDA here)",
            )
        if dev.index is None:
            dev = torch.device("cuda", local_rank)
        if dev.index >= torch.cuda.device_count():
            n = torch.cuda.device_count()
            raise ConfigError(
                f"device is {device!r} but this machine has {n} CUDA device(s) (cuda:0..cuda:{n - 1})",
                field="device",
                value=device,
                allowed=f"'auto', 'cpu' or 'cuda:0'..'cuda:{n - 1}'",
            )
    return dev


# --------------------------------------------------------------------------- memory


def _cgroup_free(root: str = "/sys/fs/cgroup") -> tuple[int, str] | None:
    """The cgroup's memory limit less its working set (usage less inactive page cache, which is reclaimable)."""
    for limit_name, usage_name, stat_name, inactive in (
        ("memory.max", "memory.current", "memory.stat", "inactive_file"),
        ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes", "memory/memory.stat", "total_inactive_file"),
    ):
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
        return max(
            int(limit) - max(usage - cache, 0), 0
        ), f"the cgroup's memory limit ({os.path.join(root, limit_name)})"
    return None


def _rlimit_free() -> tuple[int, str] | None:
    try:
        import resource  # POSIX only
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
