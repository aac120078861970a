"""Information measures of spike maps and quantizers of membranes (pure tensor functions).

Capacity (paper Eq. 6, Proposition 1): ``R(S) = max H(S)``, the entropy of a map whose
states are all equally likely. A C×H×W map of binary spikes has C·H·W bits, of ternary
spikes C·H·W·log2(3) ≈ 1.585·C·H·W bits, of 32-bit floats 32·C·H·W bits.

Capacity is an upper bound, not what a trained network uses (issue #2 of the released
code disputes the "representation capability" argument on this ground). The measured
counterpart here is the empirical entropy of recorded spikes:

    H(n) = -sum_v p_n(v) log2 p_n(v)          per neuron n, over samples [T, B]
    map entropy = sum_n H(n)                   >= joint entropy H(S) (subadditivity)

and ``map entropy <= capacity`` always, since each H(n) <= log2(#levels).

The quantizers read a membrane ``u`` as the spiking layer does (paper Eq. 8, 13-14):
binary ``1[u >= th]``, ternary ``1[u >= th] - 1[u <= -th]``, scaled ternary ``a`` times
the ternary value; ``best_amplitude`` gives the ``a`` that minimises the squared error.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "CAPACITY_KINDS",
    "QUANT_KINDS",
    "capacity_bits",
    "entropy_per_neuron",
    "entropy_bits",
    "map_entropy_bits",
    "quantize",
    "quantization_error",
    "best_amplitude",
]

CAPACITY_KINDS = ("binary", "ternary", "real")
QUANT_KINDS = ("binary", "ternary", "scaled_ternary")

_BITS_PER_NEURON = {"binary": 1.0, "ternary": math.log2(3), "real": 32.0}


def capacity_bits(shape_or_numel, kind: str) -> float:
    """Capacity ``R(S) = max H(S)`` of a spike map in bits (paper Eq. 6, Proposition 1).

        binary: C·H·W    ternary: C·H·W·log2(3)    real (float32): 32·C·H·W

    Args:
        shape_or_numel: the map's shape, e.g. ``(C, H, W)``, or its number of neurons.
        kind: one of ``CAPACITY_KINDS`` ("binary", "ternary", "real").
    Returns:
        Bits, a float.
    """
    if kind not in _BITS_PER_NEURON:
        raise ValueError(f"kind must be one of {CAPACITY_KINDS}, got {kind!r}")
    if isinstance(shape_or_numel, torch.Size) or isinstance(shape_or_numel, (tuple, list)):
        dims = tuple(shape_or_numel)
        if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in dims):
            raise ValueError(f"shape_or_numel must be a shape of non-negative ints, got {shape_or_numel!r}")
        numel = math.prod(dims)
    elif isinstance(shape_or_numel, int) and not isinstance(shape_or_numel, bool) and shape_or_numel >= 0:
        numel = shape_or_numel
    else:
        raise ValueError(
            f"shape_or_numel must be a shape tuple like (C, H, W) or a non-negative int, got {shape_or_numel!r}"
        )
    return numel * _BITS_PER_NEURON[kind]


def _samples_by_neuron(spk_seq: torch.Tensor) -> torch.Tensor:
    if not isinstance(spk_seq, torch.Tensor) or spk_seq.dim() < 2:
        shape = tuple(spk_seq.shape) if isinstance(spk_seq, torch.Tensor) else type(spk_seq).__name__
        raise ValueError(f"spk_seq must be a tensor [T, B, ...] (rank >= 2), got {shape}")
    if spk_seq.shape[0] * spk_seq.shape[1] == 0:
        raise ValueError(f"spk_seq must hold at least one sample (T*B > 0), got shape {tuple(spk_seq.shape)}")
    return spk_seq.detach().reshape(spk_seq.shape[0] * spk_seq.shape[1], -1)  # [T*B, N]


def entropy_per_neuron(spk_seq: torch.Tensor, levels=None) -> torch.Tensor:
    """Empirical entropy in bits of each neuron's spike value over the samples ``[T, B]``.

        H(n) = -sum_v p_n(v) log2 p_n(v),   p_n(v) = #{(t, b): s[t, b, n] = v} / (T·B)

    The plug-in estimate: biased low when T·B is small next to the number of levels.
    Values are compared exactly, so pass spikes (``b`` or ``a * b``), not membranes.

    Args:
        spk_seq: recorded spikes ``[T, B, ...]``; dims after the first two are neurons.
        levels: the allowed values (e.g. ``(-1, 0, 1)``); every value must be one of them.
            Default: the distinct values present.
    Shape: ``[T, B, *N] -> [*N]``.
    Returns:
        Entropies in bits (float64), one per neuron.
    """
    flat = _samples_by_neuron(spk_seq)
    if levels is None:
        values = torch.unique(flat)
    else:
        values = torch.as_tensor(levels, dtype=flat.dtype, device=flat.device).flatten().unique()
        if values.numel() == 0:
            raise ValueError(f"levels must hold at least one value, got {levels!r}")
        outside = ~torch.isin(flat, values)
        if outside.any():
            raise ValueError(
                f"spk_seq holds values outside levels={list(values.tolist())}, e.g. {flat[outside][0].item()!r}"
            )
    counts = torch.stack([(flat == v).sum(0) for v in values]).double()  # [L, N]
    p = counts / flat.shape[0]
    h = -(p * torch.where(p > 0, p.log2(), torch.zeros_like(p))).sum(0)
    return h.clamp_min(0.0).reshape(spk_seq.shape[2:])


def entropy_bits(spk_seq: torch.Tensor, levels=None) -> float:
    """Mean per-neuron entropy in bits: at most 1 (binary) or log2(3) (ternary)."""
    return entropy_per_neuron(spk_seq, levels).mean().item()


def map_entropy_bits(spk_seq: torch.Tensor, levels=None) -> float:
    """Sum of the per-neuron entropies of a map, in bits: the measured side of capacity.

        sum_n H(n)  >=  H(S) (the joint entropy),   sum_n H(n)  <=  capacity_bits

    Comparable to :func:`capacity_bits` of the same map shape: equal to it only when every
    neuron uses every level equally often.
    """
    return entropy_per_neuron(spk_seq, levels).sum().item()


def _check_quant(kind: str, threshold, a) -> None:
    if kind not in QUANT_KINDS:
        raise ValueError(f"kind must be one of {QUANT_KINDS}, got {kind!r}")
    if not float(threshold) > 0.0:
        raise ValueError(f"threshold must be > 0, got {threshold!r}")
    a_t = torch.as_tensor(a)
    if kind != "scaled_ternary" and not bool((a_t == 1).all()):
        raise ValueError(f"a={a!r} only applies to kind='scaled_ternary'; with kind={kind!r} use a=1.0")


def quantize(u: torch.Tensor, kind: str, threshold=0.5, a=1.0) -> torch.Tensor:
    """Quantize a membrane as a spiking layer reads it (paper Eq. 8, 13-14).

        binary: 1[u >= th]    ternary: 1[u >= th] - 1[u <= -th]    scaled_ternary: a · ternary

    Args:
        u: membrane potentials, any shape.
        kind: one of ``QUANT_KINDS`` ("binary", "ternary", "scaled_ternary").
        threshold: th > 0 (0.5, the released code's effective threshold).
        a: amplitude for "scaled_ternary"; a scalar or a tensor that broadcasts against u.
    Returns:
        Values in {0, 1}, {-1, 0, 1} or {-a, 0, a}, shaped like ``u``.
    """
    _check_quant(kind, threshold, a)
    pos = (u >= threshold).to(u.dtype)
    if kind == "binary":
        return pos
    q = pos - (u <= -threshold).to(u.dtype)
    return q * torch.as_tensor(a, dtype=u.dtype, device=u.device) if kind == "scaled_ternary" else q


def quantization_error(u: torch.Tensor, kind: str, threshold=0.5, a=1.0) -> torch.Tensor:
    """Mean squared error ``mean((u - quantize(u))^2)`` of a quantizer; a 0-dim tensor."""
    return (u - quantize(u, kind, threshold, a)).pow(2).mean()


def best_amplitude(u: torch.Tensor, threshold=0.5, channel_dim: int | None = None) -> torch.Tensor:
    """The amplitude ``a`` minimising the MSE of {-a, 0, a} quantization at a fixed threshold.

        MSE(a) ∝ sum_{|u| < th} u^2 + sum_{|u| >= th} (|u| - a)^2   =>   a* = mean_{|u| >= th} |u|

    Args:
        u: membrane potentials, any shape.
        threshold: th > 0.
        channel_dim: if given, one ``a`` per index of this dim (per-channel amplitude).
    Returns:
        ``a*``: a 0-dim tensor, or ``[u.shape[channel_dim]]``. NaN where nothing reaches the
        threshold (then every ``a`` gives the same error).
    """
    if not float(threshold) > 0.0:
        raise ValueError(f"threshold must be > 0, got {threshold!r}")
    mag = u.detach().abs()
    fired = (mag >= threshold).to(mag.dtype)
    if channel_dim is None:
        return (mag * fired).sum() / fired.sum()
    if not -u.dim() <= channel_dim < u.dim():
        raise ValueError(
            f"channel_dim must be in [{-u.dim()}, {u.dim() - 1}] for u of rank {u.dim()}, got {channel_dim!r}"
        )
    dims = [d for d in range(u.dim()) if d != channel_dim % u.dim()]
    return (mag * fired).sum(dims) / fired.sum(dims)
