"""Pure LIF step functions, binary and ternary, no state (paper Eq. 7-8, 13-14).

Charge, fire, reset (the reset of step t-1 is applied while charging step t, as in
the paper and snnTorch, so the returned membrane is the one the spike was fired on):

    u_t = beta * u_{t-1} * (1 - |b_{t-1}|) + x_t          reset_mechanism="zero"
    u_t = beta * u_{t-1} - b_{t-1} * threshold + x_t      reset_mechanism="subtract"
    b_t = fire(u_t)       binary: 1[u_t >= th];  ternary: 1[u_t >= th] - 1[u_t <= -th]

The spike ``b_t`` is unscaled; a layer emits ``a * b_t`` with ``a`` its amplitude
(``graded_spikes_factor``). The reset uses ``b``, not ``a * b`` (Eq. 14).

:func:`oracle_lif_seq` is the plain-PyTorch oracle, autograd through every step: the tests
hold every fast path to it. The public multi-step entry point is
:func:`tspike_lab.kernels.lif_seq` (``backend="torch"`` runs this oracle).
"""

from __future__ import annotations

import torch

from . import surrogate
from .errors import ConfigError

__all__ = [
    "KINDS",
    "RESETS",
    "SPIKES",
    "fire",
    "lif_step",
    "oracle_lif_seq",
    "check_kind",
    "check_reset",
    "spike_function",
]

# kind -> the spike function b(u, threshold, spike_grad) with the surrogate backward
SPIKES = {"binary": surrogate.heaviside, "ternary": surrogate.ternary}
KINDS = tuple(SPIKES)
RESETS = ("zero", "subtract")


def check_kind(kind: str) -> str:
    """``kind`` if it is one of :data:`KINDS`, else :class:`~tspike_lab.errors.ConfigError` naming it."""
    if kind not in SPIKES:
        raise ConfigError.bad("", "kind", kind, f"one of {KINDS}")
    return kind


def check_reset(reset_mechanism: str) -> str:
    """``reset_mechanism`` if it is one of :data:`RESETS`, else :class:`~tspike_lab.errors.ConfigError`."""
    if reset_mechanism not in RESETS:
        raise ConfigError.bad("", "reset_mechanism", reset_mechanism, f"one of {RESETS}")
    return reset_mechanism


def spike_function(kind: str):
    """The spike function of ``kind`` (checked here): ``b = f(u, threshold, spike_grad)``."""
    return SPIKES[check_kind(kind)]


def fire(u: torch.Tensor, threshold, kind: str = "ternary", spike_grad=None) -> torch.Tensor:
    """Spike of a membrane ``u``: binary {0, 1} or ternary {-1, 0, 1}, surrogate backward."""
    return spike_function(kind)(u, threshold, spike_grad)


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
    spike = spike_function(kind)
    check_reset(reset_mechanism)
    b_prev = spike(mem, threshold, spike_grad)
    if detach_reset:
        b_prev = b_prev.detach()
    mem = _charge(x, mem, b_prev, beta, threshold, reset_mechanism)
    return spike(mem, threshold, spike_grad), mem


def oracle_lif_seq(
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
    """Multi-step LIF over ``[T, B, ...]`` by autograd through every step: the oracle of the fast paths.

    ``beta`` and ``threshold`` may be tensors (trained ones included); ``mem`` is ``u_{-1}``
    (default zeros, no spike before the first step).

    Returns:
        ``(b_seq, mem_seq)``, both ``[T, B, ...]``: unscaled spikes and membranes.
    """
    spike = spike_function(kind)
    check_reset(reset_mechanism)
    if x_seq.dim() < 2:
        raise ValueError(f"x_seq must be [T, B, ...] (rank >= 2), got shape {tuple(x_seq.shape)}")
    return run_oracle(
        x_seq,
        spike,
        beta=beta,
        threshold=threshold,
        reset_mechanism=reset_mechanism,
        spike_grad=spike_grad,
        detach_reset=detach_reset,
        mem=mem,
    )


def run_oracle(x_seq, spike, *, beta, threshold, reset_mechanism, spike_grad, detach_reset, mem=None):
    """:func:`oracle_lif_seq` with the options already checked (``spike``: from :func:`spike_function`)."""
    if mem is None:
        mem = torch.zeros_like(x_seq[0])
        b = torch.zeros_like(mem)
    else:
        b = spike(mem, threshold, spike_grad)
    b_list, mem_list = [], []
    for x in x_seq.unbind(0):
        mem = _charge(x, mem, b.detach() if detach_reset else b, beta, threshold, reset_mechanism)
        b = spike(mem, threshold, spike_grad)
        b_list.append(b)
        mem_list.append(mem)
    return torch.stack(b_list), torch.stack(mem_list)
