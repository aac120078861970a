"""The released code's LIF neuron (``LIFAct`` in models/spike_layer.py), transcribed as a benchmark peer.

Not library code: it is here so the benchmarks time what the paper's code does. Per
step, in the released order of operations:

    m_t   = m_{t-1}' * 0.25 + x_t                       decay first, V_th = 1.0
    s_t   = sign(m_t / V_th), zeroed where |m_t / V_th| < 0.5       (fires at |m| >= 0.5)
    s_t   = (s_t - c_t).detach() + c_t,   c_t = clamp(m_t / V_th, -1, 1)   clipped STE
    m_t'  = m_t * (1 - |s_t|)                           hard reset, not detached
    out_t = s_t * fire_ratio                            fire_ratio = 1 (the trainable one is commented out)

This is the same neuron as ``MultiStepLIF("ternary")`` with its defaults (beta 0.25,
threshold 0.5, STE width 2, zero reset through the graph); ``tests/test_benchmarks.py``
checks that they agree in spikes and gradients.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["LIFAct", "spike_activation", "mem_update"]


def spike_activation(x: torch.Tensor, binary: bool = False) -> torch.Tensor:
    """Spike of ``x = m / V_th`` with the clipped straight-through gradient."""
    if binary:
        hard = torch.gt(x, 0.5).float()
        soft = torch.clamp(x, 0, 1)
    else:
        hard = torch.sign(x)
        hard[torch.abs(x) < 0.5] = 0.0  # in-place masked zeroing, as released
        soft = torch.clamp(x, -1, 1)
    return (hard - soft).detach() + soft


def mem_update(x_in, mem, v_th, decay, fire_ratio):
    """One step: ``(membrane after reset, output spike)``."""
    mem = mem * decay + x_in
    spike = spike_activation(mem / v_th)
    mem = mem * (1 - torch.abs(spike))
    return mem, spike * fire_ratio


class LIFAct(nn.Module):
    """Multi-step LIF over ``[T, B, ...]``: a Python loop of :func:`mem_update`, outputs stacked."""

    def __init__(self, step: int):
        super().__init__()
        self.step = step
        self.v_th = 1.0
        self.decay = 0.25
        self.fire_ratio = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = torch.zeros_like(x[0])
        out = []
        for i in range(self.step):
            u, out_i = mem_update(x[i], u, self.v_th, self.decay, self.fire_ratio)
            out.append(out_i)
        return torch.stack(out)
