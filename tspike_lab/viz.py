"""Plotly figures for the notebooks: every ``plot_*`` returns a ``go.Figure``, never shows it.

Each ``plot_*`` also runs with no arguments (on a synthetic membrane, a shaped input current
or an untrained ``small`` network): tests exercise those defaults; the notebooks always pass
their own data. Computation is delegated to the library (:mod:`.functional`, :mod:`.info`,
:mod:`.probes`, :mod:`.energy`, :mod:`.reparam`); what lives here is layout, plus two
generators of demo inputs (:func:`synthetic_membrane`, :func:`input_current`).

Colours: :data:`COLORS`, one per meaning across the whole series (figures, widgets, notebooks).
"""
from __future__ import annotations

import math
from types import MappingProxyType
from typing import Any, Iterable, Mapping

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from . import functional, info
from . import surrogate as _surrogate
from .models import NEURONS

__all__ = [
    "COLORS",
    "MEMBRANE_COLORSCALE",
    "DISTRIBUTIONS",
    "CURRENTS",
    "synthetic_membrane",
    "input_current",
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

# One colour per meaning, in every figure of the series. Neurons take the registry's colours
# (tspike_lab.models.NEURONS). Spike values and membrane sign share one diverging pair, apart
# from every neuron colour: a membrane above +threshold fires +1, one below -threshold fires -1.
_POSITIVE, _NEGATIVE, _ZERO = "#ff7f0e", "#17becf", "#efefef"
COLORS = MappingProxyType({
    **{name: kind.color for name, kind in NEURONS.items()},
    "scaled_ternary": NEURONS["trainable_ternary"].color,  # {-a, 0, a}: the trainable ternary spike
    "real": "#7f7f7f",  # real-valued: membranes, float32 maps, the ANN
    "spike+1": _POSITIVE,
    "spike-1": _NEGATIVE,
    "spike0": _ZERO,
    "membrane+": _POSITIVE,
    "membrane-": _NEGATIVE,
    "reference": "#000000",  # thresholds, y = x, initial values, MSE-best amplitudes
})
# Membrane potential maps: negative cyan, zero pale, positive orange (zmin = -zmax).
MEMBRANE_COLORSCALE = ((0.0, COLORS["membrane-"]), (0.5, COLORS["spike0"]), (1.0, COLORS["membrane+"]))
# Series whose colour means nothing beyond the legend (surrogates, optimizers): never a COLORS value.
_PALETTE = ("#8c564b", "#e377c2", "#bcbd22", "#393b79", "#c49c94", "#637939", "#7b4173", "#843c39")

DISTRIBUTIONS = ("gaussian", "laplace", "bimodal", "uniform")
CURRENTS = ("step", "sine", "ramp", "pulses", "noise")

_LABELS = {
    "binary": f"{NEURONS['binary'].label} {{0, 1}}",
    "ternary": f"{NEURONS['ternary'].label} {{-1, 0, 1}}",
    "scaled_ternary": f"{NEURONS['trainable_ternary'].label} {{-a, 0, a}}",
}
_UNIT = "(a.u.)"  # membrane potentials, currents and amplitudes share the input's arbitrary unit


def _color(name: str, i: int = 0) -> str:
    """A series' colour: a ``COLORS`` key, a neuron's name or label, or a name starting with a
    neuron's label ("trainable ternary (folded)"); anything else the i-th of ``_PALETTE``."""
    if name in COLORS:
        return COLORS[name]
    key = str(name).lower().replace("_", " ")
    for kind in sorted(NEURONS.values(), key=lambda k: -len(k.label)):
        if key == kind.label or key.startswith(kind.label + " "):
            return kind.color
    return _PALETTE[i % len(_PALETTE)]


def _legend_rows(fig: go.Figure, width: float = 880.0) -> int:
    """How many rows the horizontal legend wraps to, estimated from its entries' text length."""
    names = [str(t.name) for t in fig.data
             if t.name and (t.showlegend or (t.showlegend is None and t.type not in ("heatmap", "box")))]
    if len(names) < 2 and not any(t.showlegend for t in fig.data):
        return 0
    rows, used = 1, 0.0
    for name in names:
        w = 45 + 6.6 * len(name)
        if used and used + w > width:
            rows, used = rows + 1, 0.0
        used += w
    return rows


def _name(name: str) -> str:
    """A series' display name: a neuron's registry label ("trainable ternary"), else the name itself."""
    return NEURONS[name].label if name in NEURONS else str(name)


def _layout(fig: go.Figure, title: str, height: int = 380, subtitle: str | None = None) -> go.Figure:
    """Title (and subtitle), then the legend in a band of its own, then the panels: nothing overlaps."""
    top = 44 + (22 if subtitle else 0)  # px from the figure's top to the legend
    rows = _legend_rows(fig)
    margin_t = top + 22 * rows + (30 if fig.layout.annotations else 10)
    height = height + margin_t - 105  # the plotting area keeps the height it had with the old fixed margin
    fig.update_layout(title=dict(text=title, x=0.01, xanchor="left", y=1 - 10 / height, yanchor="top",
                                 subtitle=dict(text=subtitle or "")),
                      height=height, template="plotly_white", margin=dict(l=70, r=20, t=margin_t, b=60),
                      legend=dict(orientation="h", yref="container", y=1 - top / height, yanchor="top", x=0))
    return fig


def _tint(color: str, alpha: float) -> str:
    """``color`` ("#rrggbb") at opacity ``alpha``, for fills whose outline and text stay opaque."""
    r, g, b = (int(color[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r}, {g}, {b}, {alpha})"


def _np(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().double().cpu().numpy()
    return np.asarray(x, dtype=float)


def _signed_histogram(fig: go.Figure, u: np.ndarray, bins: int, *, lim: float | None = None,
                      row: int | None = None, col: int | None = None) -> None:
    """A density histogram of ``u`` as two bar traces, "u < 0" and "u ≥ 0", in the membrane-sign colours.

    Zero is a bin edge, so no bin mixes the signs. Density: counts / (n · bin width).
    """
    lim = float(lim if lim is not None else max(np.abs(u).max(), 1e-6))
    half = max(int(bins) // 2, 1)
    edges = np.linspace(-lim, lim, 2 * half + 1)
    counts, _ = np.histogram(np.clip(u, -lim, lim), edges)
    width = float(edges[1] - edges[0])
    density = counts / max(counts.sum(), 1) / width
    centres = (edges[:-1] + edges[1:]) / 2
    for keep, key, label in ((centres < 0, "membrane-", "u < 0"), (centres >= 0, "membrane+", "u ≥ 0")):
        fig.add_trace(go.Bar(x=centres[keep], y=density[keep], width=width, offset=-width / 2, name=label,
                             marker=dict(color=COLORS[key], line=dict(width=0))),
                      row=row, col=col)


def _threshold_lines(fig: go.Figure, threshold: float, *, vertical: bool = True, signs=(-1, 1), **where) -> None:
    for sign in signs:
        kw = dict(line_dash="dash", line_color=COLORS["reference"], line_width=1, **where)
        fig.add_vline(x=sign * threshold, **kw) if vertical else fig.add_hline(y=sign * threshold, **kw)


# --------------------------------------------------------------------------- demo inputs


def synthetic_membrane(dist: str = "gaussian", *, loc: float = 0.0, scale: float = 0.5,
                       n: int = 20000, seed: int = 0) -> torch.Tensor:
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


# --------------------------------------------------------------------------- 01 information


def plot_capacity(shape: Iterable[int] | int = (16, 8, 8), measured: Mapping[str, float] | None = None) -> go.Figure:
    """Capacity ``R(S) = max H(S)`` of a binary, ternary and 32-bit real map (Eq. 6), in bits.

    Left: binary against ternary on a linear axis, with the measured entropies if given. Right:
    the same two against a float32 map of the shape, for scale (32 bits per neuron).

    Args:
        shape: the map's shape (C, H, W) or number of neurons.
        measured: optional ``{kind: bits}`` measured entropies (``info.map_entropy_bits``) drawn
            next to the bounds, e.g. ``{"binary": 310.2, "ternary": 520.7}``.
    Traces: "capacity (upper bound)", with ``measured`` "measured entropy", then
    "capacity, float32 for scale".
    """
    shape = tuple(shape) if not isinstance(shape, int) else shape
    kinds = list(info.CAPACITY_KINDS)  # binary, ternary, real
    cap = {k: info.capacity_bits(shape, k) for k in kinds}
    names = {"binary": "binary {0,1}", "ternary": "ternary {-1,0,1}", "real": "real (float32)"}
    spikes = ["binary", "ternary"]
    fig = make_subplots(rows=1, cols=2, column_widths=[0.62, 0.38], horizontal_spacing=0.14,
                        subplot_titles=("spike maps: binary against ternary", "against a float32 map"))
    fig.add_trace(go.Bar(name="capacity (upper bound)", x=[names[k] for k in spikes], y=[cap[k] for k in spikes],
                         marker=dict(color=[_tint(COLORS[k], 0.3) for k in spikes],
                                     line=dict(color=[COLORS[k] for k in spikes], width=2)),
                         text=[f"{cap[k]:,.0f} bits" for k in spikes], textposition="outside"), 1, 1)
    if measured:
        ys = [measured.get(k) for k in spikes]
        fig.add_trace(go.Bar(name="measured entropy", x=[names[k] for k in spikes],
                             y=[float("nan") if v is None else v for v in ys],
                             marker_color=[COLORS[k] for k in spikes],
                             text=["" if v is None else f"{v:,.0f} bits" for v in ys], textposition="outside"), 1, 1)
    fig.add_trace(go.Bar(name="capacity, float32 for scale", x=[names[k] for k in kinds], y=[cap[k] for k in kinds],
                         marker=dict(color=[_tint(COLORS[k], 0.3) for k in kinds],
                                     line=dict(color=[COLORS[k] for k in kinds], width=2)),
                         text=[f"{cap[k]:,.0f}" for k in kinds], textposition="outside", showlegend=False), 1, 2)
    top = max(cap["ternary"], *(v for v in (measured or {}).values() if v is not None)) if measured else cap["ternary"]
    fig.update_yaxes(title="bits per map", tickformat=",d", rangemode="tozero", row=1, col=1)
    fig.update_yaxes(range=[0, 1.2 * top], row=1, col=1)
    fig.update_yaxes(title="bits per map", tickformat=",d", range=[0, 1.2 * cap["real"]], row=1, col=2)
    fig.update_xaxes(title="spike values", row=1, col=1)
    fig.update_xaxes(title="map", row=1, col=2)
    fig.update_layout(barmode="group")
    n = info.capacity_bits(shape, "binary")
    return _layout(fig, f"Capacity of one map of shape {shape}: bits = neurons × log2(#values)",
                   subtitle=f"{n:,.0f} neurons: binary 1 bit each, ternary log2 3 ≈ 1.585, float32 32", height=420)


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

    Top left: histogram of ``u`` (negative and positive halves in the membrane-sign colours)
    with the thresholds ±th. Top right: the three quantizers q(u) against the identity. Bottom
    left: mean squared error ``E[(u - q(u))^2]``. Bottom right: entropy of the spike value in
    bits per neuron, against its bound (1 for binary, log2 3 for ternary).

    Args:
        u: membrane samples (default ``synthetic_membrane()``).
        threshold: th. a: amplitude of the scaled ternary quantizer (default
            ``info.best_amplitude(u, th)``, the MSE-optimal one).
    Traces: "u < 0", "u ≥ 0", "identity", the three quantizers, "MSE", "entropy (bits/neuron)",
    "bound: log2(#values)".
    """
    u = synthetic_membrane() if u is None else u.detach().flatten().float()
    if a is None:
        a = float(info.best_amplitude(u, threshold))
        if not math.isfinite(a):
            a = 1.0
    stats = _quant_stats(u, threshold, a)
    un = _np(u)
    lim = float(max(np.abs(un).max(), 1.5 * threshold, abs(a) * 1.2))
    fig = make_subplots(rows=2, cols=2, row_heights=[0.58, 0.42], vertical_spacing=0.2, horizontal_spacing=0.12,
                        subplot_titles=("membrane potential u", "quantizer q(u)",
                                        "quantization error", "information per spike"))
    _signed_histogram(fig, un, bins, lim=lim, row=1, col=1)
    _threshold_lines(fig, threshold, row=1, col=1)
    grid = torch.linspace(-lim, lim, 801)
    fig.add_trace(go.Scatter(x=_np(grid), y=_np(grid), name="identity",
                             line=dict(color=COLORS["reference"], dash="dot", width=1)), 1, 2)
    for kind in info.QUANT_KINDS:
        amp = a if kind == "scaled_ternary" else 1.0
        q = info.quantize(grid, kind, threshold, amp)
        label = _LABELS[kind] + (f", a={a:.2f}" if kind == "scaled_ternary" else "")
        fig.add_trace(go.Scatter(x=_np(grid), y=_np(q), name=label, line=dict(color=COLORS[kind], shape="hv")), 1, 2)
    kinds = list(info.QUANT_KINDS)
    xl = ["binary", "ternary", f"ternary·a (a={a:.2f})"]
    colors = [COLORS[k] for k in kinds]
    mse = [stats[k]["mse"] for k in kinds]
    fig.add_trace(go.Bar(x=xl, y=mse, name="MSE", marker_color=colors, text=[f"{v:.3f}" for v in mse],
                         textposition="outside", showlegend=False), 2, 1)
    ent = [stats[k]["entropy_bits"] for k in kinds]
    fig.add_trace(go.Bar(x=xl, y=ent, name="entropy (bits/neuron)", marker_color=colors,
                         text=[f"{v:.2f} bits" for v in ent], textposition="inside", showlegend=False), 2, 2)
    bound = [1.0, math.log2(3), math.log2(3)]
    fig.add_trace(go.Scatter(x=xl, y=bound, name="bound: log2(#values)", mode="markers",
                             marker=dict(symbol="line-ew-open", size=34, color=COLORS["reference"], line=dict(width=2))),
                  2, 2)
    fig.update_xaxes(title=f"u {_UNIT}", row=1, col=1)
    fig.update_yaxes(title="probability density", row=1, col=1)
    fig.update_xaxes(title=f"u {_UNIT}", range=[-lim, lim], row=1, col=2)
    fig.update_yaxes(title=f"q(u) {_UNIT}", row=1, col=2)
    fig.update_xaxes(title="spike", row=2, col=1)
    fig.update_yaxes(title=f"MSE {_UNIT}²", range=[0, 1.3 * max(max(mse), 1e-9)], row=2, col=1)
    fig.update_xaxes(title="spike", row=2, col=2)
    fig.update_yaxes(title="bits per neuron", range=[0, 1.8], row=2, col=2)
    fig.update_layout(barmode="overlay")
    return _layout(fig, f"Quantizing a membrane at threshold {threshold:.2f}",
                   subtitle=f"MSE: binary {stats['binary']['mse']:.3f}, ternary {stats['ternary']['mse']:.3f}, "
                            f"ternary·a {stats['scaled_ternary']['mse']:.3f}; share of u below zero: "
                            f"{float((u < 0).float().mean()):.0%}", height=640)


def _map2d(t: torch.Tensor, step: int, sample: int, channel: int) -> torch.Tensor:
    if t.dim() == 5:  # [T, B, C, H, W]
        return t[step, sample, channel]
    if t.dim() == 4:  # [B, C, H, W]
        return t[sample, channel]
    if t.dim() == 2:
        return t
    raise ValueError(f"mem must be [T, B, C, H, W], [B, C, H, W] or [H, W], got shape {tuple(t.shape)}")


def _discrete(levels: list[tuple[float, str]]) -> list[list]:
    """A step colorscale: equal bands, one colour per level (levels in ascending order)."""
    n = len(levels)
    return [[i / n + j / n, c] for i, (_, c) in enumerate(levels) for j in (0, 1)]


def plot_teaser(mem: torch.Tensor | None = None, *, threshold: float = 0.5, a: float | None = None,
                step: int = 0, sample: int = 0, channel: int = 0) -> go.Figure:
    """The paper's teaser idea in three panels, from a recorded membrane map.

    Left: the real-valued membrane ``u`` of one channel (colour bar: negative cyan, positive
    orange, thresholds marked); middle: its binary spikes ``1[u >= th]``; right: its ternary
    spikes ``a·(1[u >= th] - 1[u <= -th])``, spike values in the legend. Panel titles give
    capacity and measured entropy of the *whole* recorded map (all channels, over steps and
    samples; ``info.map_entropy_bits``), so the bound and what is used sit side by side.

    Args:
        mem: membrane ``[T, B, C, H, W]`` (e.g. ``probes.record(...)[layer]["mem"]``); default:
            the stem of an untrained ``small`` network on random input.
        threshold, a: the spiking layer's threshold and amplitude (a default 1).
        step, sample, channel: which map to draw.
    Traces: heatmaps "membrane u", "binary spikes", "ternary spikes", then legend entries
    "spike +1", "spike −1", "no spike (0)".
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
            f"membrane u (float32: {info.capacity_bits(per_map, 'real'):,.0f} bits max)",
            f"binary spikes: {h_bin:,.0f} of {info.capacity_bits(per_map, 'binary'):,.0f} bits",
            f"ternary spikes: {h_ter:,.0f} of {info.capacity_bits(per_map, 'ternary'):,.0f} bits",
        ]
    else:
        titles = ["membrane u", "binary spikes", "ternary spikes"]
    fig = make_subplots(rows=1, cols=3, subplot_titles=titles, horizontal_spacing=0.13)
    m = _np(_map2d(u, step, sample, channel))
    lim = float(max(np.abs(m).max(), threshold * 1.5))
    right = fig.layout.xaxis.domain[1]
    fig.add_trace(go.Heatmap(z=m, name="membrane u", colorscale=MEMBRANE_COLORSCALE, zmin=-lim, zmax=lim,
                             hovertemplate="u = %{z:.3f}<extra></extra>",
                             colorbar=dict(title=dict(text=f"u {_UNIT}", side="top"), x=right + 0.005,
                                           xanchor="left", len=0.85, thickness=12,
                                           tickvals=[-threshold, 0, threshold],
                                           ticktext=[f"−θ = {-threshold:.2f}", "0", f"+θ = {threshold:.2f}"])), 1, 1)
    zero, pos, neg = COLORS["spike0"], COLORS["spike+1"], COLORS["spike-1"]
    fig.add_trace(go.Heatmap(z=_np(_map2d(b_bin, step, sample, channel)), name="binary spikes",
                             colorscale=_discrete([(0, zero), (1, pos)]), zmin=-0.5, zmax=1.5, showscale=False,
                             hovertemplate="b = %{z:.0f}<extra></extra>", xgap=1, ygap=1), 1, 2)
    fig.add_trace(go.Heatmap(z=_np(_map2d(b_ter, step, sample, channel)), name="ternary spikes",
                             customdata=a * _np(_map2d(b_ter, step, sample, channel)),
                             colorscale=_discrete([(-1, neg), (0, zero), (1, pos)]), zmin=-1.5, zmax=1.5,
                             showscale=False, hovertemplate="b = %{z:.0f}, a·b = %{customdata:.2f}<extra></extra>",
                             xgap=1, ygap=1), 1, 3)
    for name, color in ((f"spike +1 (u ≥ θ){'' if a == 1 else ', ×a'}", pos),
                        (f"spike −1 (u ≤ −θ, ternary only){'' if a == 1 else ', ×a'}", neg),
                        ("no spike (0)", zero)):
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=name, showlegend=True,
                                 marker=dict(symbol="square", size=14, color=color, line=dict(width=1, color=COLORS["real"]))),
                      1, 3)
    for c in (1, 2, 3):
        fig.update_yaxes(autorange="reversed", scaleanchor=f"x{'' if c == 1 else c}", visible=False, row=1, col=c)
        fig.update_xaxes(visible=False, row=1, col=c)
    return _layout(fig, "One membrane map read as spikes: binary spikes lose the negative membrane, ternary keep it",
                   subtitle=f"threshold θ = {threshold:.2f}, amplitude a = {a:.2f}; step {step}, sample {sample}, "
                            f"channel {channel}", height=430)


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
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.07, row_heights=[0.25, 0.4, 0.35],
                        subplot_titles=("input current x_t", "membrane potential u_t (dashed: ±threshold)",
                                        "spikes emitted o_t"))
    fig.add_trace(go.Bar(x=t, y=_np(current), name="input x", marker_color=COLORS["real"]), 1, 1)
    fig.add_trace(go.Scatter(x=t, y=u_bin, name="u binary", line=dict(color=COLORS["binary"])), 2, 1)
    fig.add_trace(go.Scatter(x=t, y=u_ter, name="u ternary", line=dict(color=COLORS["ternary"])), 2, 1)
    _threshold_lines(fig, threshold, vertical=False, row=2, col=1)
    for name, vals, off, kind in (("spikes binary", b_bin, -0.15, "binary"),
                                  ("spikes ternary", b_ter, 0.0, "ternary"),
                                  ("spikes trainable ternary (a·b)", a * b_ter, 0.15, "trainable_ternary")):
        nz = vals != 0
        fig.add_trace(go.Scatter(x=t[nz] + off, y=vals[nz], mode="markers", name=name,
                                 marker=dict(color=COLORS[kind], size=9),
                                 error_y=dict(type="data", symmetric=False, array=np.zeros(nz.sum()),
                                              arrayminus=vals[nz], color=COLORS[kind], width=0)), 3, 1)
    fig.update_xaxes(title="time step t", row=3, col=1)
    fig.update_yaxes(title=f"x_t {_UNIT}", row=1, col=1)
    fig.update_yaxes(title=f"u_t {_UNIT}", row=2, col=1)
    fig.update_yaxes(title="spike value", row=3, col=1)
    return _layout(fig, f"LIF neuron, beta={beta:.2f}, threshold={threshold:.2f}, reset={reset_mechanism!r}",
                   subtitle=f"binary {int((b_bin != 0).sum())} spikes; ternary {int((b_ter > 0).sum())} positive + "
                            f"{int((b_ter < 0).sum())} negative; trainable ternary: the ternary spikes × a = {a:.2f}",
                   height=600)


def plot_reset(current: torch.Tensor | None = None, *, beta: float = 0.25, threshold: float = 0.5,
               kind: str = "ternary") -> go.Figure:
    """The reset rule: hard reset by |b| (the paper) against reset by subtraction.

        zero:      u_t = beta·u_{t-1}·(1 - |b_{t-1}|) + x_t   (a -1 spike resets too)
        subtract:  u_t = beta·u_{t-1} - b_{t-1}·threshold + x_t

    Both curves are the same neuron (``kind``'s colour); solid is the paper's rule.
    Traces: "u zero reset (paper)", "spikes zero reset (paper)", "u subtract reset", "spikes subtract reset".
    """
    current = input_current("step", amplitude=0.4) if current is None else torch.as_tensor(current).flatten()
    t = np.arange(len(current))
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.1, row_heights=[0.6, 0.4],
                        subplot_titles=("membrane potential u_t (dashed: ±threshold)", "spikes b_t"))
    for i, (reset, label) in enumerate((("zero", "zero reset (paper)"), ("subtract", "subtract reset"))):
        b, u = _lif_1d(current, kind, beta=beta, threshold=threshold, reset_mechanism=reset)
        color = COLORS[kind] if i == 0 else COLORS["real"]
        fig.add_trace(go.Scatter(x=t, y=u, name=f"u {label}", line=dict(color=color, dash="solid" if i == 0 else "dot")), 1, 1)
        nz = b != 0
        fig.add_trace(go.Scatter(x=t[nz] + 0.12 * (2 * i - 1), y=b[nz], mode="markers", name=f"spikes {label}",
                                 marker=dict(color=color, size=8, symbol="circle" if i == 0 else "diamond")), 2, 1)
    _threshold_lines(fig, threshold, vertical=False, signs=(-1, 1) if kind == "ternary" else (1,), row=1, col=1)
    fig.update_xaxes(title="time step t", row=2, col=1)
    fig.update_yaxes(title=f"u_t {_UNIT}", row=1, col=1)
    fig.update_yaxes(title="spike value b", row=2, col=1)
    return _layout(fig, f"Reset rule of the {kind} neuron (beta={beta:.2f}, threshold={threshold:.2f})", height=480)


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
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.12,
                        subplot_titles=(f"forward: {kind} spike b(u)", "backward: surrogate db/du"))
    fig.add_trace(go.Scatter(x=_np(u), y=_np(info.quantize(u, kind, threshold)), name="forward b(u)",
                             line=dict(color=COLORS[kind], shape="hv")), 1, 1)
    for i, (name, sg) in enumerate(surrogates.items()):
        g = sg.ternary_grad(u, th) if kind == "ternary" else sg.binary_grad(u, th)
        fig.add_trace(go.Scatter(x=_np(u), y=_np(g), name=name, line=dict(color=_PALETTE[i % len(_PALETTE)])), 1, 2)
    for c in (1, 2):
        _threshold_lines(fig, threshold, signs=(-1, 1) if kind == "ternary" else (1,), row=1, col=c)
        fig.update_xaxes(title=f"membrane potential u {_UNIT}", row=1, col=c)
    fig.update_yaxes(title="spike value b", row=1, col=1)
    fig.update_yaxes(title=f"db/du (1/{_UNIT[1:-1]})", row=1, col=2)
    return _layout(fig, f"Surrogate gradients of the {kind} spike, threshold {threshold:.2f}",
                   subtitle="dashed: ±threshold; the forward pass is the same staircase for every surrogate")


# --------------------------------------------------------------------------- 03 training


def _epochs(h) -> list[dict]:
    return list(h.epochs) if hasattr(h, "epochs") else list(h)


def _runs(h) -> list[list[dict]]:
    """One run (a History or a list of per-epoch dicts) or several (a list or tuple of those), as runs."""
    if isinstance(h, (list, tuple)) and h and (hasattr(h[0], "epochs") or isinstance(h[0], (list, tuple))):
        return [_epochs(r) for r in h]
    return [_epochs(h)]


def plot_training(histories: Mapping[str, Any] | None = None) -> go.Figure:
    """Training curves per run: train loss (left) and test accuracy (right) against the epoch.

    Args:
        histories: ``{name: History, list of per-epoch dicts (train.train's rows: epoch,
            train_loss, test_acc), or a list of those (one per seed, drawn as one line each in
            the name's colour)}``. Empty: axes only.
    Traces per run: "<name> train loss", "<name> test acc", a neuron's name shown as its registry
    label ("trainable ternary"); the legend names each run once.
    """
    histories = histories or {}
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.12,
                        subplot_titles=("training loss (mean over the epoch)", "test accuracy"))
    for i, (name, h) in enumerate(histories.items()):
        color, label = _color(name, i), _name(name)
        runs = _runs(h)
        for k, rows in enumerate(runs):
            ep = [r["epoch"] for r in rows]
            tag = label if len(runs) == 1 else f"{label}, run {k + 1}"
            line = dict(color=color, width=2 if len(runs) == 1 else 1.5)
            fig.add_trace(go.Scatter(x=ep, y=[r.get("train_loss") for r in rows], name=f"{label} train loss",
                                     line=line, legendgroup=name, showlegend=False, mode="lines+markers",
                                     hovertemplate=f"{tag}<br>epoch %{{x}}: loss %{{y:.3f}}<extra></extra>"), 1, 1)
            fig.add_trace(go.Scatter(x=ep, y=[r.get("test_acc") for r in rows], name=f"{label} test acc",
                                     line=line, legendgroup=name, showlegend=k == 0, mode="lines+markers",
                                     hovertemplate=f"{tag}<br>epoch %{{x}}: %{{y:.1%}}<extra></extra>"), 1, 2)
    fig.update_xaxes(title="epoch", dtick=1)
    fig.update_yaxes(title="cross-entropy", rangemode="tozero", row=1, col=1)
    fig.update_yaxes(title="test accuracy", tickformat=".0%", range=[0, 1.02], row=1, col=2)
    return _layout(fig, "Training on the embedded digits", height=400)


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
    Traces: one bar trace per run, in the run's neuron colour where its name is a neuron.
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
        fig.add_bar(x=list(r), y=list(r.values()), name=_name(name), marker_color=_color(name, i),
                    text=[f"{v:.2f}" for v in r.values()], textposition="outside")
    fig.update_layout(barmode="group")
    fig.update_xaxes(title="spiking layer (forward order)")
    fig.update_yaxes(title="firing rate (nonzero spikes per neuron per step)", rangemode="tozero")
    return _layout(fig, "Firing rate per spiking layer (test set)")


def plot_amplitudes(amplitudes: Mapping[str, Any] | None = None, consumers: Mapping[str, list[str]] | None = None,
                    initial: float = 1.0) -> go.Figure:
    """Learned amplitude a per layer (per run), against its initial value.

    Args:
        amplitudes: ``{run: {layer: a}}`` (a float or a per-channel list, drawn as its mean) or
            ``{run: History}`` (its last ``amplitudes``). Default: an untrained network's.
        consumers: ``{layer: [labels]}`` from :func:`tspike_lab.reparam.consumer_kinds`; the x
            labels then say what reads each layer (e.g. "BatchNorm", "residual", "classifier").
        initial: the initial a (1.0), drawn as a dashed line.
    Traces: one bar trace per run, values written inside the bars.
    """
    if amplitudes is None:
        from . import probes
        from .reparam import consumer_kinds

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
        fig.add_bar(x=x, y=vals, name=_name(name), marker_color=_color(name, i), text=[f"{v:.3f}" for v in vals],
                    textposition="inside", insidetextanchor="middle", textangle=0)
    fig.add_hline(y=initial, line_dash="dash", line_color=COLORS["reference"], line_width=1,
                  annotation_text=f"initial a = {initial:g}", annotation_position="top left")
    fig.update_layout(barmode="group")
    fig.update_xaxes(title="spiking layer → what reads its output")
    fig.update_yaxes(title=f"amplitude a {_UNIT}", rangemode="tozero")
    return _layout(fig, "Spike amplitude a per layer", subtitle="under each layer's name: what reads its output",
                   height=420)


# --------------------------------------------------------------------------- 04 membranes


def plot_membrane_histogram(recording: Mapping[str, dict] | None = None, layer: str | None = None, *,
                            bins: int = 80, learned_a: float | None = None) -> go.Figure:
    """One layer's membrane-potential distribution, its thresholds and amplitudes.

    Draws the histogram of ``recording[layer]["mem"]`` (negative and positive halves in the
    membrane-sign colours) with ±threshold (dashed), the MSE-optimal amplitude
    ``info.best_amplitude`` (dotted) and, if given, the learned a (the trainable ternary colour).

    Args:
        recording: from ``probes.record`` (default: an untrained ``small`` network).
        layer: a key of ``recording`` (default the first). learned_a: the layer's trained a.
    Traces: "u < 0", "u ≥ 0".
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
    fig = go.Figure()
    _signed_histogram(fig, _np(mem), bins)
    _threshold_lines(fig, th)
    if math.isfinite(best):
        fig.add_vline(x=best, line_color=COLORS["reference"], line_dash="dot", line_width=2,
                      annotation_text=f"MSE-best a = {best:.2f}", annotation_position="top right")
    if learned_a is not None:
        fig.add_vline(x=float(learned_a), line_color=COLORS["trainable_ternary"], line_width=3,
                      annotation_text=f"learned a = {float(learned_a):.2f}", annotation_position="top left")
    fig.update_layout(barmode="overlay")
    fig.update_xaxes(title=f"membrane potential u {_UNIT}")
    fig.update_yaxes(title="probability density")
    return _layout(fig, f"Membrane potential of {layer}",
                   subtitle=f"std {float(mem.std()):.3f}; |u| ≥ threshold {th:.2f} for {100 * frac:.1f}% of "
                            f"neuron-steps (dashed: ±threshold)")


def plot_membrane_depth(recording: Mapping[str, dict] | None = None,
                        learned: Mapping[str, float] | None = None) -> go.Figure:
    """How membrane distributions change along depth: one box per layer, and per-layer statistics.

    Left: boxes of each layer's membrane (forward order; dashed: ±threshold of the first layer).
    Right: std of u and the MSE-optimal amplitude ``info.best_amplitude`` per layer, and the
    learned a if given: all three in the unit of u.

    Traces: one box per layer, then "std of u", "MSE-best a" (and "learned a").
    """
    recording = _demo_recording() if recording is None else recording
    names = list(recording)
    fig = make_subplots(rows=1, cols=2, column_widths=[0.58, 0.42], horizontal_spacing=0.12,
                        subplot_titles=("membrane potential per layer", "per-layer statistics"))
    stds, bests = [], []
    g = torch.Generator().manual_seed(0)
    for name in names:
        mem = recording[name]["mem"].detach().float().flatten()
        th = float(recording[name].get("threshold", 0.5))
        stds.append(float(mem.std()))
        bests.append(float(info.best_amplitude(mem, th)))
        show = mem[torch.randperm(mem.numel(), generator=g)[:5000]] if mem.numel() > 5000 else mem
        fig.add_trace(go.Box(y=_np(show), name=name, marker_color=COLORS["real"], boxpoints=False,
                             showlegend=False), 1, 1)
    fig.add_trace(go.Scatter(x=names, y=stds, name="std of u", mode="lines+markers", line=dict(color=COLORS["real"])), 1, 2)
    fig.add_trace(go.Scatter(x=names, y=bests, name="MSE-best a", mode="lines+markers",
                             line=dict(color=COLORS["reference"], dash="dot")), 1, 2)
    if learned:
        fig.add_trace(go.Scatter(x=names, y=[float(np.mean(learned[n])) if n in learned else None for n in names],
                                 name="learned a", mode="lines+markers", line=dict(color=COLORS["trainable_ternary"])), 1, 2)
    th0 = float(recording[names[0]].get("threshold", 0.5)) if names else 0.5
    _threshold_lines(fig, th0, vertical=False, row=1, col=1)
    fig.update_xaxes(title="spiking layer (forward order)")
    fig.update_yaxes(title=f"membrane potential u {_UNIT}", row=1, col=1)
    fig.update_yaxes(title=f"value, in the unit of u {_UNIT}", rangemode="tozero", row=1, col=2)
    return _layout(fig, "Membrane potentials along depth", height=460)


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
                    line=dict(color=_PALETTE[0]))
    fig.add_scatter(x=xs, y=[float(rows[i][1]) for i in keep], name="BN output (training mode)",
                    mode="lines+markers", line=dict(color=_PALETTE[1]))
    fig.update_xaxes(title="amplitude a (input = a·b)", type="log", tickvals=xs, ticktext=[f"{s:g}" for s in xs])
    fig.update_yaxes(title="relative change against a = 1 (‖Δ‖ / ‖·‖)", type="log", exponentformat="power", dtick=1)
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
    fig = go.Figure(go.Scatter(x=o, y=f, mode="markers", name="logits (one per image and class)",
                               marker=dict(color=COLORS["trainable_ternary"], size=5, opacity=0.6)))
    fig.add_scatter(x=[lo, hi], y=[lo, hi], mode="lines", name="y = x", line=dict(color=COLORS["reference"], dash="dash"))
    fig.update_xaxes(title="logit, trained model (spikes a·b)")
    fig.update_yaxes(title="logit, folded model (spikes b)")
    return _layout(fig, "Re-parameterization keeps the logits", subtitle=f"max |difference| = {diff:.2e}")


def _family(values: set[float]) -> str:
    """The spike family whose values these are: {0, 1} binary, {-1, 0, 1} ternary, else scaled ternary."""
    if values <= {0.0, 1.0}:
        return "binary"
    return "ternary" if values <= {-1.0, 0.0, 1.0} else "scaled_ternary"


def plot_spike_values(recordings: Mapping[str, Mapping[str, dict]] | None = None) -> go.Figure:
    """Distinct values each spiking layer emits, per model: {-a, 0, a} before folding, {-1, 0, 1} after.

    Args:
        recordings: ``{model name: probes.record(...)}``; a layer's emitted values are
            ``amplitude · spikes``. Default: an untrained network and its folded copy.
    Traces: one scatter per model (x: layer, y: emitted value, marker area: share of that
    value), coloured by the family its values belong to: {0, 1} binary, {-1, 0, 1} ternary,
    anything else trainable ternary {-a, 0, a}.
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
                        marker=dict(size=sizes, color=COLORS[_family(set(ys))], opacity=0.6,
                                    symbol=("circle", "diamond", "square")[i % 3], line=dict(width=1, color=COLORS["reference"])))
    fig.update_xaxes(title="spiking layer (forward order)")
    fig.update_yaxes(title=f"emitted spike value {_UNIT}")
    fig.update_layout(scattermode="group", scattergap=0.6)
    return _layout(fig, "Values the spiking layers emit", subtitle="marker area ~ share of neuron-steps with that value")


def plot_energy(counts=None, *, convention: str = "executed") -> go.Figure:
    """Per-layer operations and total energy of a spiking network against its ANN equivalent.

    Args:
        counts: an ``energy.OpCount`` (``energy.count_ops(model, x)``) or ``{name: OpCount}``;
            each uses its own ``e_mac_pj`` / ``e_ac_pj``. Default: an untrained ``small``
            ternary network on random input.
        convention: "executed" (static stem once) or "paper" (stem counted T times), for the totals.
    Left: per layer and sample, the operations each model executes (hatched: MACs on dense
    input; solid: SOPs, one accumulate per nonzero spike and weight it meets) and the ANN's MACs
    (grey), on a log axis labelled at powers of ten. Right: energy per sample,
    E = e_MAC·MACs + e_AC·SOPs, each model against the ANN. A model named for a neuron
    ("binary", "trainable ternary (folded)") takes that neuron's colour.
    Traces: "SNN operations" (per model, prefixed by its name if several), "ANN MACs", "energy (µJ)".
    """
    from . import energy

    if counts is None:
        model, x = _demo_model("ternary")
        counts = energy.count_ops(model, x)
    if not isinstance(counts, Mapping):
        counts = {"SNN": counts}
    fig = make_subplots(rows=1, cols=2, column_widths=[0.64, 0.36], horizontal_spacing=0.12,
                        subplot_titles=("operations per sample, per layer", "energy per sample"))
    names, energies, colors = [], [], []
    for i, (name, c) in enumerate(counts.items()):
        color = _color(name, i)
        fig.add_bar(x=[r.name for r in c.layers], y=[(r.macs + r.sops) / c.batch_size for r in c.layers],
                    name=f"{'' if len(counts) == 1 else name + ' '}SNN operations",
                    marker=dict(color=color, pattern=dict(shape=["x" if r.macs else "" for r in c.layers])),
                    customdata=[["MACs" if r.macs else "SOPs", r.input] for r in c.layers],
                    hovertemplate="%{x}: %{y:,.0f} %{customdata[0]} (%{customdata[1]} input)<extra>" + name + "</extra>",
                    row=1, col=1)
        names.append(name)
        energies.append(c.total(convention)["energy_pj"])
        colors.append(color)
    first = next(iter(counts.values()))
    fig.add_bar(x=[r.name for r in first.layers], y=[r.ann_macs for r in first.layers], name="ANN MACs",
                marker_color=COLORS["real"], row=1, col=1)
    names.append("ANN")
    energies.append(first.ann()["energy_pj"])
    fig.add_bar(x=names, y=[e / 1e6 for e in energies], name="energy (µJ)", showlegend=False,
                marker_color=colors + [COLORS["real"]],
                text=[f"{e / 1e6:.3g} µJ" for e in energies], textposition="outside", row=1, col=2)
    fig.update_xaxes(title="layer", row=1, col=1)
    fig.update_xaxes(title="model", row=1, col=2)
    fig.update_yaxes(type="log", dtick=1, tickformat="~s", title="operations per sample (log)", row=1, col=1)
    fig.update_yaxes(title="µJ per sample", rangemode="tozero", row=1, col=2)
    fig.update_yaxes(range=[0, 1.2 * max(energies) / 1e6], row=1, col=2)
    fig.update_layout(barmode="group")
    return _layout(fig, "Synaptic operations and energy",
                   subtitle=f"{first.e_mac_pj:g} pJ per MAC, {first.e_ac_pj:g} pJ per accumulate; "
                            f"{convention} convention; hatched: MACs on dense input, solid: SOPs on spikes",
                   height=460)


# --------------------------------------------------------------------------- 06 results


def _result_label(r: Mapping[str, Any], keys: list[str]) -> str:
    parts = []
    for k in keys:
        v = r.get(k)
        if v is None:
            continue
        parts.append(f"T={v}" if k == "num_steps" else f"w={v}" if k == "width" else _name(v) if k == "neuron" else str(v))
    return " · ".join(parts)


def plot_results(rows: Iterable[Mapping[str, Any]] | None = None) -> go.Figure:
    """Reproduction results against the paper: one bar per result row, ours (mean ± std) beside the paper.

    Args:
        rows: rows of ``tspike_lab.reproduce.aggregate`` (keys dataset, arch, width, num_steps,
            neuron, mean, std, n_seeds, paper; top-1 in %). A paper cell that is None is unknown
            and drawn empty. Default: no rows (empty axes).
    Traces: "ours (mean ± std over seeds)" (solid, in each row's neuron colour), "paper" (hatched).
    """
    rows = list(rows or [])
    varying = [k for k in ("table", "dataset", "arch", "width", "num_steps")
               if len({r.get(k) for r in rows}) > 1]
    labels = [_result_label(r, varying + ["neuron"]) for r in rows]
    ours = [r.get("mean") for r in rows]
    std = [r.get("std") if r.get("std") is not None else 0.0 for r in rows]
    paper = [r.get("paper") for r in rows]
    colors = [_color(str(r.get("neuron")), i) for i, r in enumerate(rows)]
    fig = go.Figure()
    fig.add_bar(x=labels, y=ours, name="ours (mean ± std over seeds)", marker_color=colors,
                error_y=dict(type="data", array=std),
                text=[f"{v:.2f} (n={r.get('n_seeds', '?')})" if v is not None else "" for v, r in zip(ours, rows)],
                textposition="outside")
    fig.add_bar(x=labels, y=paper, name="paper", marker=dict(color=colors, opacity=0.45, pattern=dict(shape="/")),
                text=[f"{v:.2f}" if v is not None else "unknown" for v in paper], textposition="outside")
    fig.update_layout(barmode="group")
    fig.update_xaxes(title="result row")
    fig.update_yaxes(title="test top-1 (%)", range=[0, 105])
    fixed = [k for k in ("table", "dataset", "arch", "width", "num_steps") if k not in varying and rows]
    where = _result_label(rows[0], fixed) if rows else "no results"
    return _layout(fig, f"Reproduction, ours against the paper: {where}")
