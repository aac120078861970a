"""Pure LIF step functions, binary and ternary, no state (paper Eq. 7-8, 13-14).

Charge, fire, reset (the reset of step t-1 is applied while charging step t, as in
the paper and snnTorch, so the returned membrane is the one the spike was fired on):

    u_t = beta * u_{t-1} * (1 - |b_{t-1}|) + x_t          reset_mechanism="zero"
    u_t = beta * u_{t-1} - b_{t-1} * threshold + x_t      reset_mechanism="subtract"
    b_t = fire(u_t)       binary: 1[u_t >= th];  ternary: 1[u_t >= th] - 1[u_t <= -th]

The spike ``b_t`` is unscaled; a layer emits ``a * b_t`` with ``a`` its amplitude
(``graded_spikes_factor``). The reset uses ``b``, not ``a * b`` (Eq. 14).

``lif_seq`` here is the plain-PyTorch oracle: autograd through every step. Fast paths
(:mod:`tspike_lab.kernels`) are tested against it.
"""
from __future__ import annotations

import torch

from . import surrogate

__all__ = ["KINDS", "RESETS", "fire", "lif_step", "lif_seq", "check_kind", "check_reset"]

KINDS = ("binary", "ternary")
RESETS = ("zero", "subtract")


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    return kind


def check_reset(reset_mechanism: str) -> str:
    if reset_mechanism not in RESETS:
        raise ValueError(f"reset_mechanism must be one of {RESETS}, got {reset_mechanism!r}")
    return reset_mechanism


def fire(u: torch.Tensor, threshold, kind: str = "ternary", spike_grad=None) -> torch.Tensor:
    """Spike of a membrane ``u``: binary {0, 1} or ternary {-1, 0, 1}, surrogate backward."""
    if kind == "ternary":
        return surrogate.ternary(u, threshold, spike_grad)
    if kind == "binary":
        return surrogate.heaviside(u, threshold, spike_grad)
    raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")


def _charge(x, mem, b_prev, beta, threshold, reset_mechanism):
    if reset_mechanism == "zero":
        return beta * mem * (1 - b_prev.abs()) + x
    return beta * mem - b_prev * threshold + x


def lif_step(
    x: torch.Tensor,
    mem: torch.Tensor,
    *,
    beta=0.25,
    threshold=0.5,
    kind: str = "ternary",
    reset_mechanism: str = "zero",
    spike_grad=None,
    detach_reset: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One LIF step from the previous (pre-reset) membrane.

    Args:
        x: input current ``[B, ...]``. mem: previous membrane ``u_{t-1}``, same shape.
    Returns:
        ``(b_t, u_t)``: the unscaled spike and the membrane it fired on.
    """
    check_reset(reset_mechanism)
    b_prev = fire(mem, threshold, kind, spike_grad)
    if detach_reset:
        b_prev = b_prev.detach()
    mem = _charge(x, mem, b_prev, beta, threshold, reset_mechanism)
    return fire(mem, threshold, kind, spike_grad), mem


def lif_seq(
    x_seq: torch.Tensor,
    *,
    beta=0.25,
    threshold=0.5,
    kind: str = "ternary",
    reset_mechanism: str = "zero",
    spike_grad=None,
    detach_reset: bool = False,
    mem: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Multi-step LIF over ``[T, B, ...]``, the oracle for every fast path.

    Returns:
        ``(b_seq, mem_seq)``, both ``[T, B, ...]``: unscaled spikes and membranes.
    """
    check_kind(kind)
    check_reset(reset_mechanism)
    if x_seq.dim() < 2:
        raise ValueError(f"x_seq must be [T, B, ...] (rank >= 2), got shape {tuple(x_seq.shape)}")
    if mem is None:
        mem = torch.zeros_like(x_seq[0])
        b = torch.zeros_like(mem)
    else:
        b = fire(mem, threshold, kind, spike_grad)
    b_list, mem_list = [], []
    for x in x_seq.unbind(0):
        mem = _charge(x, mem, b.detach() if detach_reset else b, beta, threshold, reset_mechanism)
        b = fire(mem, threshold, kind, spike_grad)
        b_list.append(b)
        mem_list.append(mem)
    return torch.stack(b_list), torch.stack(mem_list)
