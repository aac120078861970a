"""Demo inputs: synthetic membranes, shaped input currents, an untrained network and its recording."""

from __future__ import annotations

import math

import torch

from .. import probes
from ..models import build_model
from .style import CURRENTS, DISTRIBUTIONS


def synthetic_membrane(
    dist: str = "gaussian", *, loc: float = 0.0, scale: float = 0.5, n: int = 20000, seed: int = 0
) -> torch.Tensor:
    """Samples of a membrane-potential distribution with mean ``loc`` and std ``scale``.

    Args:
        dist: one of ``DISTRIBUTIONS``: "gaussian" N(loc, scale^2); "laplace"; "bimodal" (an
            equal mixture of N(loc ± scale·sqrt(3)/2, (scale/2)^2): two peaks that move together
            with ``loc``); "uniform" on loc ± scale·sqrt(3). Every one has mean loc and std scale.
        loc, scale: mean and standard deviation (scale > 0). n: number of samples. seed: RNG seed.
    Returns:
        float32 tensor ``[n]``.
    """
    if dist not in DISTRIBUTIONS:
        raise ValueError(f"dist must be one of {DISTRIBUTIONS}, got {dist!r}")
    if not float(scale) > 0:
        raise ValueError(f"scale must be > 0, got {scale!r}")
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    g = torch.Generator().manual_seed(seed)
    if dist == "gaussian":
        u = loc + scale * torch.randn(n, generator=g, dtype=torch.float64)
    elif dist == "laplace":
        e = -torch.log1p(-torch.rand(n, generator=g, dtype=torch.float64).clamp_max(1 - 1e-12))
        sign = torch.randint(0, 2, (n,), generator=g).double() * 2 - 1
        u = loc + scale / math.sqrt(2) * sign * e  # Laplace(b) has std b·sqrt(2)
    elif dist == "bimodal":
        # var = offset^2 + (scale/2)^2 = scale^2
        sign = torch.randint(0, 2, (n,), generator=g).double() * 2 - 1
        u = loc + sign * scale * math.sqrt(3) / 2 + scale / 2 * torch.randn(n, generator=g, dtype=torch.float64)
    else:
        u = loc + scale * math.sqrt(3) * (2 * torch.rand(n, generator=g, dtype=torch.float64) - 1)
    return u.float()


def input_current(
    shape: str = "sine",
    *,
    num_steps: int = 40,
    amplitude: float = 0.6,
    offset: float = 0.0,
    period: int = 16,
    noise: float = 0.0,
    seed: int = 0,
) -> torch.Tensor:
    """An input current ``x_t`` to drive one neuron, shaped for the neuron demos.

    Args:
        shape: one of ``CURRENTS``: "step" (0, then ``amplitude`` from T/4, then ``-amplitude``
            from 5T/8), "sine" (``amplitude·sin(2πt/period)``), "ramp" (-amplitude to
            +amplitude), "pulses" (±amplitude every period/2 steps), "noise" (Gaussian, std
            ``amplitude``).
        num_steps: T. offset: added to every step. noise: std of extra Gaussian noise.
    Returns:
        float32 tensor ``[T]``.
    """
    if shape not in CURRENTS:
        raise ValueError(f"shape must be one of {CURRENTS}, got {shape!r}")
    if not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive int, got {num_steps!r}")
    if not isinstance(period, int) or period < 2:
        raise ValueError(f"period must be an int >= 2, got {period!r}")
    t = torch.arange(num_steps, dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    if shape == "step":
        x = torch.zeros(num_steps, dtype=torch.float64)
        x[num_steps // 4 :] = amplitude
        x[(5 * num_steps) // 8 :] = -amplitude
    elif shape == "sine":
        x = amplitude * torch.sin(2 * math.pi * t / period)
    elif shape == "ramp":
        x = amplitude * (2 * t / max(num_steps - 1, 1) - 1)
    elif shape == "pulses":
        half = max(period // 2, 1)
        x = torch.zeros(num_steps, dtype=torch.float64)
        x[::half] = amplitude
        x[half::period] = -amplitude
    else:
        x = amplitude * torch.randn(num_steps, generator=g, dtype=torch.float64)
    if noise:
        x = x + noise * torch.randn(num_steps, generator=g, dtype=torch.float64)
    return (x + offset).float()


def _demo_model(neuron: str = "trainable_ternary", seed: int = 0):
    """An untrained ``small`` network (width 4) on 8x8 single-channel input, and an input batch."""
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model("small", neuron=neuron, num_classes=10, num_steps=2, in_channels=1, width=4)
    x = torch.randn(16, 1, 8, 8, generator=g)
    return model.eval(), x


def _demo_recording(seed: int = 0) -> dict:
    model, x = _demo_model(seed=seed)
    return probes.record(model, x)
