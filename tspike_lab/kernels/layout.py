"""Memory layout of ``[T, B, ...]`` sequences for the elementwise kernels.

A kernel sees a sequence as ``T`` steps of ``N`` elements: step ``t`` starts
``t * x_stride`` elements after step 0, and every step shares one dense layout
(contiguous, channels_last, ...). ``x_stride`` is ``N`` for an ordinary time-major
tensor and 0 for a static input expanded over time (the direct-encoding stem), which
the kernels then read without materialising T copies.
"""

from __future__ import annotations

import torch

__all__ = ["is_dense", "as_steps", "empty_steps", "match_steps"]


def is_dense(t: torch.Tensor) -> bool:
    """True when ``t`` covers a contiguous block of memory with no overlap, in any dim order."""
    expected = 1
    for stride, size in sorted((st, sz) for st, sz in zip(t.stride(), t.shape) if sz != 1):
        if stride != expected:
            return False
        expected *= size
    return True


def as_steps(x_seq: torch.Tensor) -> tuple[torch.Tensor, int]:
    """``(x, x_stride)``: ``x_seq`` itself where its layout allows, else a contiguous copy."""
    n = x_seq[0].numel()
    if is_dense(x_seq[0]):
        if x_seq.shape[0] == 1 or x_seq.stride(0) == n:
            return x_seq, n
        if x_seq.stride(0) == 0:
            return x_seq, 0
    return x_seq.contiguous(), n


def empty_steps(like: torch.Tensor, num_steps: int | None = None, dtype=None, empty=None) -> torch.Tensor:
    """An uninitialised ``[T, ...]`` tensor whose steps have the layout of ``like[0]``, steps dense.

    ``empty(size, stride, dtype)`` allocates it (default ``torch.empty_strided`` on ``like``'s device).
    """
    step = like[0]
    t = like.shape[0] if num_steps is None else num_steps
    size, stride = (t, *step.shape), (step.numel(), *step.stride())
    dtype = like.dtype if dtype is None else dtype
    if empty is not None:
        return empty(size, stride, dtype)
    return torch.empty_strided(size, stride, dtype=dtype, device=like.device)


def match_steps(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``t`` with exactly the strides of ``like`` (a copy only where they differ)."""
    if t.stride() == like.stride():
        return t
    out = torch.empty_strided(like.shape, like.stride(), dtype=t.dtype, device=t.device)
    return out.copy_(t)
