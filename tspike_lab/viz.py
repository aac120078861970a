"""Plotly figures for the notebooks: every ``plot_*`` returns a ``go.Figure``, never shows it.

Each ``plot_*`` runs with no arguments (on a synthetic membrane, a shaped input current or
an untrained ``small`` network), so a headless run exercises it; the notebooks pass live
data. Computation is delegated to the library (:mod:`.functional`, :mod:`.info`,
:mod:`.probes`, :mod:`.energy`); what lives here is layout, plus two generators of demo
inputs (:func:`synthetic_membrane`, :func:`input_current`) and :func:`consumer_kinds`,
which labels layers for the amplitude figures.

Colours: binary blue, ternary red, trainable ternary green, real-valued grey.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from . import functional, info
from . import surrogate as _surrogate

__all__ = [
    "COLORS",
    "DISTRIBUTIONS",
    "CURRENTS",
    "synthetic_membrane",
    "input_current",
    "consumer_kinds",
    "plot_capacity",
    "plot_quantization",
    "plot_teaser",
    "plot_neuron",
    "plot_reset",
    "plot_surrogates",
    "plot_training",
    "plot_firing_rates",
    "plot_amplitudes",
    "plot_membrane_histogram",
    "plot_membrane_depth",
    "plot_bn_invariance",
    "plot_logits_match",
    "plot_spike_values",
    "plot_energy",
    "plot_results",
]

COLORS = {
    "binary": "#1f77b4",
    "ternary": "#d62728",
    "scaled_ternary": "#2ca02c",
    "trainable_ternary": "#2ca02c",
    "trainable_binary": "#9467bd",
    "real": "#7f7f7f",
}
_PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")

DISTRIBUTIONS = ("gaussian", "laplace", "bimodal", "uniform")
CURRENTS = ("step", "sine", "ramp", "pulses", "noise")

_LABELS = {
    "binary": "binary {0, 1}",
    "ternary": "ternary {-1, 0, 1}",
    "scaled_ternary": "ternary {-a, 0, a}",
}


def _color(name: str, i: int = 0) -> str:
    return COLORS.get(name, _PALETTE[i % len(_PALETTE)])


def _layout(fig: go.Figure, title: str, height: int = 380) -> go.Figure:
    fig.update_layout(title=dict(text=title, y=0.98, yanchor="top"), height=height, template="plotly_white",
                      margin=dict(l=60, r=20, t=105, b=50),
                      legend=dict(orientation="h", yanchor="bottom", y=1.07, x=0))
    return fig


def _np(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().double().cpu().numpy()
    return np.asarray(x, dtype=float)


# --------------------------------------------------------------------------- demo inputs


def synthetic_membrane(dist: str = "gaussian", *, loc: float = 0.0, scale: float = 0.5,
                       n: int = 20000, seed: int = 0) -> torch.Tensor:
    """Samples of a membrane-potential distribution for the quantization demos.

    Args:
        dist: one of ``DISTRIBUTIONS``: "gaussian" N(loc, scale^2), "laplace" (same mean and
            std), "bimodal" (equal mixture of N(±|loc| or ±scale, (scale/2)^2)), "uniform"
            on loc ± scale·sqrt(3) (same std).
        loc, scale: centre and spread (scale > 0). n: number of samples. seed: RNG seed.
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
        centre = abs(loc) if loc else scale
        sign = torch.randint(0, 2, (n,), generator=g).double() * 2 - 1
        u = sign * centre + scale / 2 * torch.randn(n, generator=g, dtype=torch.float64)
    else:
        u = loc + scale * math.sqrt(3) * (2 * torch.rand(n, generator=g, dtype=torch.float64) - 1)
    return u.float()


def input_current(shape: str = "sine", *, num_steps: int = 40, amplitude: float = 0.6,
                  offset: float = 0.0, period: int = 16, noise: float = 0.0, seed: int = 0) -> torch.Tensor:
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
        x[num_steps // 4:] = amplitude
        x[(5 * num_steps) // 8:] = -amplitude
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
    from .models import build_model

    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model("small", neuron=neuron, num_classes=10, num_steps=2, in_channels=1, width=4)
    x = torch.randn(16, 1, 8, 8, generator=g)
    return model.eval(), x


def _demo_recording(seed: int = 0) -> dict:
    from . import probes

    model, x = _demo_model(seed=seed)
    return probes.record(model, x)


def consumer_kinds(model) -> dict[str, list[str]]:
    """For every spiking layer, what reads its output (``model.fold_plan()``), as labels.

    "BatchNorm" (a convolution followed by BatchNorm: a positive scale of its input is
    normalized away in training mode), "residual" (an identity shortcut adds it to a
    pre-activation), "classifier" (the final linear layer reads its pooled output), or the
    consumer's class name.

    Returns:
        ``{layer name: [label, ...]}`` in forward order.
    """
    from torch import nn

    from .models import spiking_layers
    from .models.layers import ConvBN, ScaledIdentity

    names = {id(m): n for n, m in spiking_layers(model)}
    out: dict[str, list[str]] = {}
    for lif, consumers in model.fold_plan():
        labels = []
        for c in consumers:
            if isinstance(c, ConvBN):
                labels.append("BatchNorm" if isinstance(c.bn, nn.modules.batchnorm._BatchNorm) else "conv")
            elif isinstance(c, ScaledIdentity):
                labels.append("residual")
            elif isinstance(c, nn.Linear) and c is getattr(model, "classifier", None):
                labels.append("classifier")
            else:
                labels.append(type(c).__name__)
        out[names[id(lif)]] = labels
    return out


# --------------------------------------------------------------------------- 01 information


def plot_capacity(shape: Iterable[int] | int = (16, 8, 8), measured: Mapping[str, float] | None = None) -> go.Figure:
    """Capacity ``R(S) = max H(S)`` of a binary, ternary and 32-bit real map (Eq. 6), in bits.

    Args:
        shape: the map's shape (C, H, W) or number of neurons.
        measured: optional ``{kind: bits}`` measured entropies (``info.map_entropy_bits``) drawn
            next to the bounds, e.g. ``{"binary": 310.2, "ternary": 520.7}``.
    Traces: "capacity (upper bound)" and, with ``measured``, "measured entropy".
    """
    shape = tuple(shape) if not isinstance(shape, int) else shape
    kinds = list(info.CAPACITY_KINDS)
    cap = [info.capacity_bits(shape, k) for k in kinds]
    labels = ["binary {0,1}", "ternary {-1,0,1}", "real (float32)"]
    fig = go.Figure(go.Bar(name="capacity (upper bound)", x=labels, y=cap,
                           marker_color=[_color(k) for k in kinds], opacity=0.55,
                           text=[f"{c:,.0f} bits" for c in cap], textposition="outside"))
    if measured:
        ys = [measured.get(k) for k in kinds]
        fig.add_bar(name="measured entropy", x=labels, y=[float("nan") if v is None else v for v in ys],
                    marker_color=[_color(k) for k in kinds],
                    text=["" if v is None else f"{v:,.0f} bits" for v in ys], textposition="outside")
    fig.update_yaxes(type="log", title="bits per map")
    fig.update_layout(barmode="group")
    return _layout(fig, f"Capacity of a spike map of shape {shape}: bits = neurons x log2(#states)")


def _quant_stats(u: torch.Tensor, threshold: float, a: float) -> dict[str, dict[str, float]]:
    out = {}
    for kind in info.QUANT_KINDS:
        amp = a if kind == "scaled_ternary" else 1.0
        q = info.quantize(u, kind, threshold, amp)
        out[kind] = {
            "mse": float(info.quantization_error(u, kind, threshold, amp)),
            # i.i.d. samples of one neuron: [T = n, B = 1, 1 neuron]
            "entropy_bits": info.entropy_bits(q.reshape(-1, 1, 1)),
        }
    return out


def plot_quantization(u: torch.Tensor | None = None, *, threshold: float = 0.5, a: float | None = None,
                      bins: int = 80) -> go.Figure:
    """A membrane distribution quantized to {0, 1}, {-1, 0, 1} and {-a, 0, a}.

    Left: histogram of ``u`` with the thresholds ±th. Middle: the three quantizers q(u)
    against the identity. Right: mean squared error ``E[(u - q(u))^2]`` and entropy of the
    spike value (bits per neuron; the bound is 1 and log2 3).

    Args:
        u: membrane samples (default ``synthetic_membrane()``).
        threshold: th. a: amplitude of the scaled ternary quantizer (default
            ``info.best_amplitude(u, th)``, the MSE-optimal one).
    Traces: "membrane u", "identity", the three quantizers, "MSE", "entropy (bits/neuron)".
    """
    u = synthetic_membrane() if u is None else u.detach().flatten().float()
    if a is None:
        a = float(info.best_amplitude(u, threshold))
        if not math.isfinite(a):
            a = 1.0
    stats = _quant_stats(u, threshold, a)
    un = _np(u)
    lim = float(max(np.abs(un).max(), 1.5 * threshold, abs(a) * 1.2))
    fig = make_subplots(rows=1, cols=3, column_widths=[0.38, 0.34, 0.28], horizontal_spacing=0.08,
                        subplot_titles=("membrane potential u", "quantizer q(u)", "error and entropy"))
    fig.add_trace(go.Histogram(x=un, nbinsx=bins, name="membrane u", marker_color=_color("real"),
                               histnorm="probability density", showlegend=False), 1, 1)
    for sign in (-1, 1):
        fig.add_vline(x=sign * threshold, line_dash="dash", line_color="black", row=1, col=1)
    grid = torch.linspace(-lim, lim, 801)
    fig.add_trace(go.Scatter(x=_np(grid), y=_np(grid), name="identity", line=dict(color="lightgrey", dash="dot")), 1, 2)
    for kind in info.QUANT_KINDS:
        amp = a if kind == "scaled_ternary" else 1.0
        q = info.quantize(grid, kind, threshold, amp)
        label = _LABELS[kind] + (f", a={a:.2f}" if kind == "scaled_ternary" else "")
        fig.add_trace(go.Scatter(x=_np(grid), y=_np(q), name=label, line=dict(color=_color(kind), shape="hv"),
                                 legendgroup=kind), 1, 2)
    kinds = list(info.QUANT_KINDS)
    xl = ["binary", "ternary", "ternary·a"]
    fig.add_trace(go.Bar(x=xl, y=[stats[k]["mse"] for k in kinds], name="MSE", marker_color=[_color(k) for k in kinds],
                         text=[f"{stats[k]['mse']:.3f}" for k in kinds], textposition="outside", showlegend=False), 1, 3)
    fig.add_trace(go.Scatter(x=xl, y=[stats[k]["entropy_bits"] for k in kinds], name="entropy (bits/neuron)",
                             mode="markers+text", marker=dict(symbol="diamond", size=11, color="black"),
                             text=[f"{stats[k]['entropy_bits']:.2f} b" for k in kinds], textposition="top center"), 1, 3)
    fig.update_xaxes(title="u", row=1, col=1)
    fig.update_xaxes(title="u", row=1, col=2)
    fig.update_yaxes(title="density", row=1, col=1)
    fig.update_yaxes(title="q(u)", row=1, col=2)
    top = max(max(s["mse"] for s in stats.values()), math.log2(3)) * 1.25
    fig.update_yaxes(title="MSE / bits", range=[0, top], row=1, col=3)
    return _layout(fig, f"Quantizing u at threshold {threshold:.2f}: binary MSE {stats['binary']['mse']:.3f}, "
                        f"ternary {stats['ternary']['mse']:.3f}, ternary·a {stats['scaled_ternary']['mse']:.3f}",
                   height=420)


def _map2d(t: torch.Tensor, step: int, sample: int, channel: int) -> torch.Tensor:
    if t.dim() == 5:  # [T, B, C, H, W]
        return t[step, sample, channel]
    if t.dim() == 4:  # [B, C, H, W]
        return t[sample, channel]
    if t.dim() == 2:
        return t
    raise ValueError(f"mem must be [T, B, C, H, W], [B, C, H, W] or [H, W], got shape {tuple(t.shape)}")


def plot_teaser(mem: torch.Tensor | None = None, *, threshold: float = 0.5, a: float | None = None,
                step: int = 0, sample: int = 0, channel: int = 0) -> go.Figure:
    """The paper's teaser idea in three panels, from a recorded membrane map.

    Left: the real-valued membrane ``u`` of one channel; middle: its binary spikes
    ``1[u >= th]``; right: its ternary spikes ``a·(1[u >= th] - 1[u <= -th])``. Panel
    titles give capacity and measured entropy of the *whole* recorded map (all channels,
    over steps and samples; ``info.map_entropy_bits``), so the bound and what is used
    sit side by side.

    Args:
        mem: membrane ``[T, B, C, H, W]`` (e.g. ``probes.record(...)[layer]["mem"]``); default:
            the stem of an untrained ``small`` network on random input.
        threshold, a: the spiking layer's threshold and amplitude (a default 1).
        step, sample, channel: which map to draw.
    Traces: three heatmaps "membrane u", "binary spikes", "ternary spikes".
    """
    if mem is None:
        mem = _demo_recording()["stem_lif"]["mem"]
    a = 1.0 if a is None else float(a)
    u = mem.detach().float()
    b_bin = info.quantize(u, "binary", threshold)
    b_ter = info.quantize(u, "ternary", threshold)
    if u.dim() in (4, 5):
        per_map = tuple(u.shape[-3:])  # one map: [C, H, W]; samples: [T, B] or [B]
        h_bin = info.map_entropy_bits(b_bin.reshape(-1, 1, *per_map), levels=(0, 1))
        h_ter = info.map_entropy_bits(b_ter.reshape(-1, 1, *per_map), levels=(-1, 0, 1))
        titles = [
            f"membrane u (real: {info.capacity_bits(per_map, 'real'):,.0f} bits max)",
            f"binary: {h_bin:,.0f} of {info.capacity_bits(per_map, 'binary'):,.0f} bits",
            f"ternary: {h_ter:,.0f} of {info.capacity_bits(per_map, 'ternary'):,.0f} bits",
        ]
    else:
        titles = ["membrane u", "binary spikes", "ternary spikes"]
    fig = make_subplots(rows=1, cols=3, subplot_titles=titles, horizontal_spacing=0.06)
    m = _np(_map2d(u, step, sample, channel))
    lim = float(max(np.abs(m).max(), threshold * 1.5))
    fig.add_trace(go.Heatmap(z=m, name="membrane u", colorscale="RdBu_r", zmin=-lim, zmax=lim,
                             colorbar=dict(x=0.285, len=0.9, thickness=10)), 1, 1)
    fig.add_trace(go.Heatmap(z=_np(_map2d(b_bin, step, sample, channel)), name="binary spikes",
                             colorscale=[[0, "white"], [1, _color("binary")]], zmin=0, zmax=1, showscale=False), 1, 2)
    fig.add_trace(go.Heatmap(z=a * _np(_map2d(b_ter, step, sample, channel)), name="ternary spikes",
                             colorscale=[[0, _color("binary")], [0.5, "white"], [1, _color("ternary")]],
                             zmin=-abs(a), zmax=abs(a), showscale=False), 1, 3)
    for c in (1, 2, 3):
        fig.update_yaxes(autorange="reversed", scaleanchor=f"x{'' if c == 1 else c}", showticklabels=False, row=1, col=c)
        fig.update_xaxes(showticklabels=False, row=1, col=c)
    return _layout(fig, f"One membrane map read as spikes (threshold {threshold:.2f}; a = {a:.2f}): "
                        "negative membrane is lost by binary spikes, kept by ternary ones", height=400)


# --------------------------------------------------------------------------- 02 neuron


def _lif_1d(current: torch.Tensor, kind: str, **kw) -> tuple[np.ndarray, np.ndarray]:
    b_seq, mem_seq = functional.lif_seq(current.reshape(-1, 1).double(), kind=kind, **kw)
    return _np(b_seq[:, 0]), _np(mem_seq[:, 0])


def plot_neuron(current: torch.Tensor | None = None, *, beta: float = 0.25, threshold: float = 0.5,
                a: float = 1.5, reset_mechanism: str = "zero") -> go.Figure:
    """One neuron driven by ``current``: binary vs ternary vs trainable ternary, side by side.

        u_t = beta·u_{t-1}·(1 - |b_{t-1}|) + x_t     (``functional.lif_seq``)

    Rows: input current; membrane of the binary and the ternary neuron with ±threshold;
    spikes emitted: binary ``b`` in {0, 1}, ternary ``b`` in {-1, 0, 1}, trainable ternary
    ``a·b`` (its membrane is the ternary one: the reset uses b, not a·b, Eq. 14).

    Traces: "input x", "u binary", "u ternary", "spikes binary", "spikes ternary",
    "spikes trainable ternary (a·b)".
    """
    current = input_current(amplitude=0.45) if current is None else torch.as_tensor(current).flatten()
    kw = dict(beta=beta, threshold=threshold, reset_mechanism=reset_mechanism)
    b_bin, u_bin = _lif_1d(current, "binary", **kw)
    b_ter, u_ter = _lif_1d(current, "ternary", **kw)
    t = np.arange(len(current))
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.06, row_heights=[0.25, 0.4, 0.35],
                        subplot_titles=("input current x_t", "membrane u_t", "spikes emitted"))
    fig.add_trace(go.Bar(x=t, y=_np(current), name="input x", marker_color=_color("real")), 1, 1)
    fig.add_trace(go.Scatter(x=t, y=u_bin, name="u binary", line=dict(color=_color("binary"))), 2, 1)
    fig.add_trace(go.Scatter(x=t, y=u_ter, name="u ternary", line=dict(color=_color("ternary"))), 2, 1)
    for sign in (-1, 1):
        fig.add_hline(y=sign * threshold, line_dash="dash", line_color="black", row=2, col=1)
    for name, vals, off, kind in (("spikes binary", b_bin, -0.15, "binary"),
                                  ("spikes ternary", b_ter, 0.0, "ternary"),
                                  ("spikes trainable ternary (a·b)", a * b_ter, 0.15, "trainable_ternary")):
        nz = vals != 0
        fig.add_trace(go.Scatter(x=t[nz] + off, y=vals[nz], mode="markers", name=name,
                                 marker=dict(color=_color(kind), size=9),
                                 error_y=dict(type="data", symmetric=False, array=np.zeros(nz.sum()),
                                              arrayminus=vals[nz], color=_color(kind), width=0)), 3, 1)
    fig.update_xaxes(title="time step t", row=3, col=1)
    fig.update_yaxes(title="o_t", row=3, col=1)
    return _layout(fig, f"LIF neuron, beta={beta:.2f}, threshold={threshold:.2f}, reset={reset_mechanism!r}: "
                        f"binary {int((b_bin != 0).sum())} spikes, ternary {int((b_ter > 0).sum())} positive + "
                        f"{int((b_ter < 0).sum())} negative", height=560)


def plot_reset(current: torch.Tensor | None = None, *, beta: float = 0.25, threshold: float = 0.5,
               kind: str = "ternary") -> go.Figure:
    """The reset rule: hard reset by |b| (the paper) against reset by subtraction.

        zero:      u_t = beta·u_{t-1}·(1 - |b_{t-1}|) + x_t   (a -1 spike resets too)
        subtract:  u_t = beta·u_{t-1} - b_{t-1}·threshold + x_t

    Traces: "u zero reset (paper)", "u subtract reset", "spikes zero reset", "spikes subtract reset".
    """
    current = input_current("step", amplitude=0.4) if current is None else torch.as_tensor(current).flatten()
    t = np.arange(len(current))
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08, row_heights=[0.6, 0.4],
                        subplot_titles=("membrane u_t", "spikes b_t"))
    for i, (reset, label) in enumerate((("zero", "zero reset (paper)"), ("subtract", "subtract reset"))):
        b, u = _lif_1d(current, kind, beta=beta, threshold=threshold, reset_mechanism=reset)
        color = _PALETTE[4 * i]
        fig.add_trace(go.Scatter(x=t, y=u, name=f"u {label}", line=dict(color=color, dash="solid" if i == 0 else "dot")), 1, 1)
        nz = b != 0
        fig.add_trace(go.Scatter(x=t[nz] + 0.12 * (2 * i - 1), y=b[nz], mode="markers", name=f"spikes {label}",
                                 marker=dict(color=color, size=8)), 2, 1)
    for sign in (-1, 1) if kind == "ternary" else (1,):
        fig.add_hline(y=sign * threshold, line_dash="dash", line_color="black", row=1, col=1)
    fig.update_xaxes(title="time step t", row=2, col=1)
    return _layout(fig, f"Reset rule of the {kind} neuron (beta={beta:.2f}, threshold={threshold:.2f})", height=460)


def plot_surrogates(surrogates: Mapping[str, Any] | None = None, *, threshold: float = 0.5,
                    kind: str = "ternary") -> go.Figure:
    """Surrogate gradients: the spike's forward step and each surrogate's ``db/du``.

    Args:
        surrogates: ``{name: Surrogate}``; default one of each in ``surrogate.SURROGATES``.
        threshold: th. kind: "ternary" (``ternary_grad``) or "binary" (``binary_grad``).
    Traces: "forward b(u)" then one per surrogate, named by its key.
    """
    functional.check_kind(kind)
    if surrogates is None:
        surrogates = {name: cls() for name, cls in _surrogate.SURROGATES.items()}
    u = torch.linspace(-4 * threshold, 4 * threshold, 801, dtype=torch.float64)
    th = torch.tensor(threshold, dtype=torch.float64)
    fig = make_subplots(rows=1, cols=2, subplot_titles=(f"forward: {kind} spike b(u)", "backward: surrogate db/du"))
    fig.add_trace(go.Scatter(x=_np(u), y=_np(info.quantize(u, kind, threshold)), name="forward b(u)",
                             line=dict(color="black", shape="hv")), 1, 1)
    for i, (name, sg) in enumerate(surrogates.items()):
        g = sg.ternary_grad(u, th) if kind == "ternary" else sg.binary_grad(u, th)
        fig.add_trace(go.Scatter(x=_np(u), y=_np(g), name=name, line=dict(color=_PALETTE[i % len(_PALETTE)])), 1, 2)
    for c in (1, 2):
        for sign in (-1, 1) if kind == "ternary" else (1,):
            fig.add_vline(x=sign * threshold, line_dash="dash", line_color="grey", row=1, col=c)
        fig.update_xaxes(title="u", row=1, col=c)
    return _layout(fig, f"Surrogate gradients of the {kind} spike, threshold {threshold:.2f}")


# --------------------------------------------------------------------------- 03 training


def _epochs(h) -> list[dict]:
    return list(h.epochs) if hasattr(h, "epochs") else list(h)


def plot_training(histories: Mapping[str, Any] | None = None) -> go.Figure:
    """Training curves: train loss (left) and train / test accuracy (right) per epoch.

    Args:
        histories: ``{run name: History or list of per-epoch dicts}`` (``train.train``'s
            rows: epoch, train_loss, train_acc, test_acc). Empty: axes only.
    Traces per run: "<name> train loss", "<name> train acc", "<name> test acc".
    """
    histories = histories or {}
    fig = make_subplots(rows=1, cols=2, subplot_titles=("train loss", "accuracy (solid: test, dotted: train)"))
    for i, (name, h) in enumerate(histories.items()):
        rows = _epochs(h)
        ep = [r["epoch"] for r in rows]
        color = _color(name, i)
        fig.add_trace(go.Scatter(x=ep, y=[r.get("train_loss") for r in rows], name=f"{name} train loss",
                                 line=dict(color=color), legendgroup=name, showlegend=False, mode="lines+markers"), 1, 1)
        fig.add_trace(go.Scatter(x=ep, y=[r.get("train_acc") for r in rows], name=f"{name} train acc",
                                 line=dict(color=color, dash="dot"), legendgroup=name, showlegend=False), 1, 2)
        fig.add_trace(go.Scatter(x=ep, y=[r.get("test_acc") for r in rows], name=f"{name} test acc",
                                 line=dict(color=color), legendgroup=name, mode="lines+markers"), 1, 2)
    fig.update_xaxes(title="epoch", dtick=1)
    fig.update_yaxes(range=[0, 1.02], row=1, col=2)
    return _layout(fig, "Training on the embedded digits")


def _last_with(rows: list[dict], key: str) -> Any:
    for r in reversed(rows):
        if r.get(key) is not None:
            return r[key]
    return None


def plot_firing_rates(rates: Mapping[str, Any] | None = None) -> go.Figure:
    """Firing rate per layer (fraction of nonzero b, -1 spikes included), one bar group per run.

    Args:
        rates: ``{run: {layer: rate}}``, ``{run: History}`` (its last ``firing_rates``), or
            ``{run: probes.firing_rates(...)}`` output (uses ``"rate"``). Default: an
            untrained ``small`` network on random input.
    Traces: one bar trace per run.
    """
    if rates is None:
        from . import probes

        model, x = _demo_model()
        rates = {"untrained": probes.firing_rates(model, x)}
    fig = go.Figure()
    for i, (name, r) in enumerate(rates.items()):
        if hasattr(r, "epochs") or isinstance(r, list):
            r = _last_with(_epochs(r), "firing_rates") or {}
        r = {k: (v["rate"] if isinstance(v, dict) else v) for k, v in r.items()}
        fig.add_bar(x=list(r), y=list(r.values()), name=name, marker_color=_color(name, i))
    fig.update_layout(barmode="group")
    fig.update_yaxes(title="spikes per neuron per step")
    return _layout(fig, "Firing rate per spiking layer (test set)")


def plot_amplitudes(amplitudes: Mapping[str, Any] | None = None, consumers: Mapping[str, list[str]] | None = None,
                    initial: float = 1.0) -> go.Figure:
    """Learned amplitude a per layer (per run), against its initial value.

    Args:
        amplitudes: ``{run: {layer: a}}`` (a float or a per-channel list, drawn as its mean) or
            ``{run: History}`` (its last ``amplitudes``). Default: an untrained network's.
        consumers: ``{layer: [labels]}`` from :func:`consumer_kinds`; the x labels then say
            what reads each layer (e.g. "BatchNorm", "residual", "classifier").
        initial: the initial a (1.0), drawn as a dashed line.
    Traces: one bar trace per run.
    """
    if amplitudes is None:
        from . import probes

        model, _ = _demo_model()
        amplitudes = {"untrained": probes.amplitudes(model)}
        consumers = consumers or consumer_kinds(model)
    fig = go.Figure()
    for i, (name, amps) in enumerate(amplitudes.items()):
        if hasattr(amps, "epochs") or isinstance(amps, list):
            amps = _last_with(_epochs(amps), "amplitudes") or {}
        layers = list(amps)
        vals = [float(np.mean(v)) for v in amps.values()]
        x = [f"{k}<br>→ {' + '.join(consumers[k])}" if consumers and k in consumers else k for k in layers]
        fig.add_bar(x=x, y=vals, name=name, marker_color=_color(name, i),
                    text=[f"{v:.3f}" for v in vals], textposition="outside")
    fig.add_hline(y=initial, line_dash="dash", line_color="black", annotation_text=f"initial a = {initial:g}")
    fig.update_layout(barmode="group")
    fig.update_yaxes(title="amplitude a")
    return _layout(fig, "Spike amplitude a per layer (what reads the layer's output below its name)")


# --------------------------------------------------------------------------- 04 membranes


def plot_membrane_histogram(recording: Mapping[str, dict] | None = None, layer: str | None = None, *,
                            bins: int = 80, learned_a: float | None = None) -> go.Figure:
    """One layer's membrane-potential distribution, its thresholds and amplitudes.

    Draws the histogram of ``recording[layer]["mem"]`` with ±threshold, the MSE-optimal
    amplitude ``info.best_amplitude`` and (if given) the learned a.

    Args:
        recording: from ``probes.record`` (default: an untrained ``small`` network).
        layer: a key of ``recording`` (default the first). learned_a: the layer's trained a.
    Traces: "membrane <layer>".
    """
    recording = _demo_recording() if recording is None else recording
    layer = next(iter(recording)) if layer is None else layer
    if layer not in recording:
        raise ValueError(f"layer must be one of {list(recording)}, got {layer!r}")
    entry = recording[layer]
    mem = entry["mem"].detach().float().flatten()
    th = float(entry.get("threshold", 0.5))
    best = float(info.best_amplitude(mem, th))
    frac = float((mem.abs() >= th).float().mean())
    fig = go.Figure(go.Histogram(x=_np(mem), nbinsx=bins, histnorm="probability density", name=f"membrane {layer}",
                                 marker_color=_color("real")))
    for sign in (-1, 1):
        fig.add_vline(x=sign * th, line_dash="dash", line_color="black")
    if math.isfinite(best):
        fig.add_vline(x=best, line_color=_color("scaled_ternary"), annotation_text=f"MSE-best a = {best:.2f}",
                      annotation_position="top right")
    if learned_a is not None:
        fig.add_vline(x=float(learned_a), line_color=_color("ternary"), line_dash="dot",
                      annotation_text=f"learned a = {float(learned_a):.2f}", annotation_position="top left")
    fig.update_xaxes(title="membrane potential u")
    fig.update_yaxes(title="density")
    return _layout(fig, f"{layer}: std {float(mem.std()):.3f}, |u| >= th for {100 * frac:.1f}% of neuron-steps")


def plot_membrane_depth(recording: Mapping[str, dict] | None = None,
                        learned: Mapping[str, float] | None = None) -> go.Figure:
    """How membrane distributions change along depth: one box per layer, and per-layer statistics.

    Left: boxes of each layer's membrane (forward order). Right: std of u and the
    MSE-optimal amplitude ``info.best_amplitude`` per layer, and the learned a if given.

    Traces: one box per layer, then "std of u", "MSE-best a" (and "learned a").
    """
    recording = _demo_recording() if recording is None else recording
    names = list(recording)
    fig = make_subplots(rows=1, cols=2, column_widths=[0.6, 0.4],
                        subplot_titles=("membrane potential per layer", "per-layer statistics"))
    stds, bests = [], []
    g = torch.Generator().manual_seed(0)
    for i, name in enumerate(names):
        mem = recording[name]["mem"].detach().float().flatten()
        th = float(recording[name].get("threshold", 0.5))
        stds.append(float(mem.std()))
        bests.append(float(info.best_amplitude(mem, th)))
        show = mem[torch.randperm(mem.numel(), generator=g)[:5000]] if mem.numel() > 5000 else mem
        fig.add_trace(go.Box(y=_np(show), name=name, marker_color=_PALETTE[i % len(_PALETTE)], boxpoints=False,
                             showlegend=False), 1, 1)
    fig.add_trace(go.Scatter(x=names, y=stds, name="std of u", mode="lines+markers", line=dict(color=_color("real"))), 1, 2)
    fig.add_trace(go.Scatter(x=names, y=bests, name="MSE-best a", mode="lines+markers",
                             line=dict(color=_color("scaled_ternary"))), 1, 2)
    if learned:
        fig.add_trace(go.Scatter(x=names, y=[float(np.mean(learned[n])) if n in learned else None for n in names],
                                 name="learned a", mode="lines+markers", line=dict(color=_color("ternary"), dash="dot")), 1, 2)
    th0 = float(recording[names[0]].get("threshold", 0.5)) if names else 0.5
    for sign in (-1, 1):
        fig.add_hline(y=sign * th0, line_dash="dash", line_color="black", row=1, col=1)
    return _layout(fig, "Membrane potentials along depth", height=440)


def plot_bn_invariance(scales: Iterable[float] = (0.25, 0.5, 1.0, 2.0, 4.0), *, channels: int = 8,
                       seed: int = 0) -> go.Figure:
    """A conv + training-mode BatchNorm ignores a positive scale a of its spike input.

    For ternary spikes ``b`` and each ``a``: relative change of ``conv(a·b)`` and of
    ``BN(conv(a·b))`` against a = 1. The conv output scales with a; the BN output does
    not (up to BN's eps), so a loss depends on such an a only through eps.

    Traces: "conv output", "BN output (training mode)".
    """
    from .models.layers import ConvBN

    scales = [float(s) for s in scales]
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        cb = ConvBN(channels, channels, 3, 1, 1).double().train()
    b = (torch.randint(0, 3, (16, channels, 8, 8), generator=g) - 1).double()
    with torch.no_grad():
        conv1, bn1 = cb.conv(b), cb.bn(cb.conv(b))
        rows = [((cb.conv(s * b) - conv1).norm() / conv1.norm(), (cb.bn(cb.conv(s * b)) - bn1).norm() / bn1.norm())
                for s in scales]
    keep = [i for i, s in enumerate(scales) if s != 1.0]  # a = 1 is the reference: change 0
    xs = [scales[i] for i in keep]
    fig = go.Figure()
    fig.add_scatter(x=xs, y=[float(rows[i][0]) for i in keep], name="conv output", mode="lines+markers",
                    line=dict(color=_color("real")))
    fig.add_scatter(x=xs, y=[float(rows[i][1]) for i in keep], name="BN output (training mode)",
                    mode="lines+markers", line=dict(color=_color("ternary")))
    fig.update_xaxes(title="amplitude a (input = a·b)", type="log", tickvals=xs, ticktext=[f"{s:g}" for s in xs])
    fig.update_yaxes(title="relative change against a = 1", type="log", exponentformat="power")
    return _layout(fig, "BatchNorm after a convolution normalizes away the spike amplitude")


# --------------------------------------------------------------------------- 05 reparameterization


def plot_logits_match(original: torch.Tensor | None = None, folded: torch.Tensor | None = None) -> go.Figure:
    """Logits of a model against those of its re-parameterized copy (y = x if unchanged).

    Default: an untrained ``small`` network and ``reparameterize(model)`` on random input.
    Traces: "logits", "y = x".
    """
    if original is None or folded is None:
        from .reparam import reparameterize

        model, x = _demo_model()
        with torch.no_grad():
            original, folded = model(x), reparameterize(model).eval()(x)
    o, f = _np(original).ravel(), _np(folded).ravel()
    diff = float(np.abs(o - f).max()) if o.size else 0.0
    lo, hi = (float(min(o.min(), f.min())), float(max(o.max(), f.max()))) if o.size else (0.0, 1.0)
    fig = go.Figure(go.Scatter(x=o, y=f, mode="markers", name="logits", marker=dict(color=_color("ternary"), size=5)))
    fig.add_scatter(x=[lo, hi], y=[lo, hi], mode="lines", name="y = x", line=dict(color="black", dash="dash"))
    fig.update_xaxes(title="logits, trained model (spikes a·b)")
    fig.update_yaxes(title="logits, folded model (spikes b)")
    return _layout(fig, f"Re-parameterization keeps the logits: max |difference| = {diff:.2e}")


def plot_spike_values(recordings: Mapping[str, Mapping[str, dict]] | None = None) -> go.Figure:
    """Distinct values each spiking layer emits, per model: {-a, 0, a} before folding, {-1, 0, 1} after.

    Args:
        recordings: ``{model name: probes.record(...)}``; a layer's emitted values are
            ``amplitude · spikes``. Default: an untrained network and its folded copy.
    Traces: one scatter per model (x: layer, y: emitted value, size: share of that value).
    """
    if recordings is None:
        from . import probes
        from .reparam import reparameterize

        model, x = _demo_model()
        with torch.no_grad():
            model.stem_lif.graded_spikes_factor.fill_(0.7)
        recordings = {"trained (a·b)": probes.record(model, x),
                      "folded (b)": probes.record(reparameterize(model).eval(), x)}
    fig = go.Figure()
    for i, (name, rec) in enumerate(recordings.items()):
        xs, ys, sizes, texts = [], [], [], []
        for layer, entry in rec.items():
            emitted = (entry["spikes"] * entry["amplitude"].reshape(-1, *([1] * (entry["spikes"].dim() - 3)))
                       if entry["amplitude"].dim() else entry["spikes"] * entry["amplitude"])
            vals, counts = torch.unique(emitted.detach().flatten(), return_counts=True)
            share = counts.double() / counts.sum()
            for v, s in zip(vals.tolist(), share.tolist()):
                xs.append(layer)
                ys.append(v)
                sizes.append(8 + 30 * math.sqrt(s))
                texts.append(f"{v:+.3g}: {100 * s:.1f}%")
        fig.add_scatter(x=xs, y=ys, mode="markers", name=name, text=texts, hoverinfo="text+x",
                        marker=dict(size=sizes, color=_PALETTE[i % len(_PALETTE)], opacity=0.6,
                                    line=dict(width=1, color="black")))
    fig.update_yaxes(title="emitted spike value")
    fig.update_layout(scattermode="group", scattergap=0.6)
    return _layout(fig, "Values the spiking layers emit (marker area ~ share of neuron-steps)")


def plot_energy(counts=None, *, convention: str = "executed") -> go.Figure:
    """Per-layer operations and total energy of a spiking network against its ANN equivalent.

    Args:
        counts: an ``energy.OpCount`` (``energy.count_ops(model, x)``) or ``{name: OpCount}``;
            each uses its own ``e_mac_pj`` / ``e_ac_pj``. Default: an untrained ``small``
            ternary network on random input.
        convention: "executed" (static stem once) or "paper" (stem counted T times), for the totals.
    Left: per-layer per-sample MACs (dense input), SOPs (spike input) and the ANN's MACs.
    Right: energy per sample, E = 4.6 pJ·MACs + 0.9 pJ·SOPs, each model against the ANN.
    Traces: "SNN MACs", "SNN SOPs", "ANN MACs" (per model), then "energy (pJ)".
    """
    from . import energy

    if counts is None:
        model, x = _demo_model("ternary")
        counts = energy.count_ops(model, x)
    if not isinstance(counts, Mapping):
        counts = {"SNN": counts}
    fig = make_subplots(rows=1, cols=2, column_widths=[0.62, 0.38],
                        subplot_titles=("operations per sample, per layer", "energy per sample"))
    names, energies = [], []
    for i, (name, c) in enumerate(counts.items()):
        layers = [r.name for r in c.layers]
        tag = "" if len(counts) == 1 else f"{name} "
        fig.add_bar(x=layers, y=[r.macs / c.batch_size for r in c.layers], name=f"{tag}SNN MACs",
                    marker_color=_PALETTE[(2 * i) % 8], row=1, col=1)
        fig.add_bar(x=layers, y=[r.sops / c.batch_size for r in c.layers], name=f"{tag}SNN SOPs",
                    marker_color=_PALETTE[(2 * i + 1) % 8], row=1, col=1)
        names.append(name)
        energies.append(c.total(convention)["energy_pj"])
    first = next(iter(counts.values()))
    fig.add_bar(x=[r.name for r in first.layers], y=[r.ann_macs for r in first.layers], name="ANN MACs",
                marker_color=_color("real"), row=1, col=1)
    names.append("ANN")
    energies.append(first.ann()["energy_pj"])
    fig.add_bar(x=names, y=[e / 1e6 for e in energies], name="energy (µJ)", showlegend=False,
                marker_color=[_PALETTE[(2 * i + 1) % 8] for i in range(len(names) - 1)] + [_color("real")],
                text=[f"{e / 1e6:.3g} µJ" for e in energies], textposition="outside", row=1, col=2)
    fig.update_yaxes(type="log", title="operations", row=1, col=1)
    fig.update_yaxes(title="µJ per sample", row=1, col=2)
    fig.update_layout(barmode="group")
    return _layout(fig, f"Synaptic operations and energy ({first.e_mac_pj:g} pJ per MAC, {first.e_ac_pj:g} pJ per "
                        f"accumulate; {convention} convention)", height=440)


# --------------------------------------------------------------------------- 06 results


def _result_label(r: Mapping[str, Any], keys: list[str]) -> str:
    parts = []
    for k in keys:
        v = r.get(k)
        if v is None:
            continue
        parts.append(f"T={v}" if k == "num_steps" else f"w={v}" if k == "width" else str(v))
    return " · ".join(parts)


def plot_results(rows: Iterable[Mapping[str, Any]] | None = None) -> go.Figure:
    """Reproduction results against the paper: one bar per result row, ours (mean ± std) beside the paper.

    Args:
        rows: rows of ``tspike_lab.reproduce.aggregate`` (keys dataset, arch, width, num_steps,
            neuron, mean, std, n_seeds, paper; top-1 in %). A paper cell that is None is unknown
            and drawn empty. Default: no rows (empty axes).
    Traces: "ours (mean ± std over seeds)", "paper (secondary)".
    """
    rows = list(rows or [])
    varying = [k for k in ("table", "dataset", "arch", "width", "num_steps")
               if len({r.get(k) for r in rows}) > 1]
    labels = [_result_label(r, varying + ["neuron"]) for r in rows]
    ours = [r.get("mean") for r in rows]
    std = [r.get("std") if r.get("std") is not None else 0.0 for r in rows]
    paper = [r.get("paper") for r in rows]
    fig = go.Figure()
    fig.add_bar(x=labels, y=ours, name="ours (mean ± std over seeds)", marker_color=_PALETTE[0],
                error_y=dict(type="data", array=std),
                text=[f"{v:.2f} (n={r.get('n_seeds', '?')})" if v is not None else "" for v, r in zip(ours, rows)],
                textposition="outside")
    fig.add_bar(x=labels, y=paper, name="paper (secondary)", marker_color="#ff7f0e",
                text=[f"{v:.2f}" if v is not None else "unknown" for v in paper], textposition="outside")
    fig.update_layout(barmode="group")
    fig.update_yaxes(title="test top-1 (%)", range=[0, 105])
    fixed = [k for k in ("table", "dataset", "arch", "width", "num_steps") if k not in varying and rows]
    where = _result_label(rows[0], fixed) if rows else "no results"
    return _layout(fig, f"Reproduction, ours against the paper: {where}")
