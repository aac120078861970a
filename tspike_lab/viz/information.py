"""Figures of notebooks 01-02: capacity, quantization, the teaser, the neuron, its reset, surrogates."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from .. import functional, info
from .. import surrogate as _surrogate
from .inputs import _demo_recording, input_current, synthetic_membrane
from .style import (
    _LABELS,
    _PALETTE,
    _UNIT,
    COLORS,
    MEMBRANE_COLORSCALE,
    _layout,
    _np,
    _signed_histogram,
    _threshold_lines,
    _tint,
)


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
    fig = make_subplots(
        rows=1,
        cols=2,
        column_widths=[0.62, 0.38],
        horizontal_spacing=0.14,
        subplot_titles=("spike maps: binary against ternary", "against a float32 map"),
    )
    fig.add_trace(
        go.Bar(
            name="capacity (upper bound)",
            x=[names[k] for k in spikes],
            y=[cap[k] for k in spikes],
            marker=dict(
                color=[_tint(COLORS[k], 0.3) for k in spikes], line=dict(color=[COLORS[k] for k in spikes], width=2)
            ),
            text=[f"{cap[k]:,.0f} bits" for k in spikes],
            textposition="outside",
        ),
        1,
        1,
    )
    if measured:
        ys = [measured.get(k) for k in spikes]
        fig.add_trace(
            go.Bar(
                name="measured entropy",
                x=[names[k] for k in spikes],
                y=[float("nan") if v is None else v for v in ys],
                marker_color=[COLORS[k] for k in spikes],
                text=["" if v is None else f"{v:,.0f} bits" for v in ys],
                textposition="outside",
            ),
            1,
            1,
        )
    fig.add_trace(
        go.Bar(
            name="capacity, float32 for scale",
            x=[names[k] for k in kinds],
            y=[cap[k] for k in kinds],
            marker=dict(
                color=[_tint(COLORS[k], 0.3) for k in kinds], line=dict(color=[COLORS[k] for k in kinds], width=2)
            ),
            text=[f"{cap[k]:,.0f}" for k in kinds],
            textposition="outside",
            showlegend=False,
        ),
        1,
        2,
    )
    top = max(cap["ternary"], *(v for v in (measured or {}).values() if v is not None)) if measured else cap["ternary"]
    fig.update_yaxes(title="bits per map", tickformat=",d", rangemode="tozero", row=1, col=1)
    fig.update_yaxes(range=[0, 1.2 * top], row=1, col=1)
    fig.update_yaxes(title="bits per map", tickformat=",d", range=[0, 1.2 * cap["real"]], row=1, col=2)
    fig.update_xaxes(title="spike values", row=1, col=1)
    fig.update_xaxes(title="map", row=1, col=2)
    fig.update_layout(barmode="group")
    n = info.capacity_bits(shape, "binary")
    return _layout(
        fig,
        f"Capacity of one map of shape {shape}: bits = neurons × log2(#values)",
        subtitle=f"{n:,.0f} neurons: binary 1 bit each, ternary log2 3 ≈ 1.585, float32 32",
        height=420,
    )


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


def plot_quantization(
    u: torch.Tensor | None = None, *, threshold: float = 0.5, a: float | None = None, bins: int = 80
) -> go.Figure:
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
    fig = make_subplots(
        rows=2,
        cols=2,
        row_heights=[0.58, 0.42],
        vertical_spacing=0.2,
        horizontal_spacing=0.12,
        subplot_titles=("membrane potential u", "quantizer q(u)", "quantization error", "information per spike"),
    )
    _signed_histogram(fig, un, bins, lim=lim, row=1, col=1)
    _threshold_lines(fig, threshold, row=1, col=1)
    grid = torch.linspace(-lim, lim, 801)
    fig.add_trace(
        go.Scatter(
            x=_np(grid), y=_np(grid), name="identity", line=dict(color=COLORS["reference"], dash="dot", width=1)
        ),
        1,
        2,
    )
    for kind in info.QUANT_KINDS:
        amp = a if kind == "scaled_ternary" else 1.0
        q = info.quantize(grid, kind, threshold, amp)
        label = _LABELS[kind] + (f", a={a:.2f}" if kind == "scaled_ternary" else "")
        if kind == "scaled_ternary" and a == 1.0:
            label += " (on the ternary one)"
        # dashed and on top: at a = 1 the scaled staircase covers the ternary one, which shows between the dashes
        line = dict(
            color=COLORS[kind],
            shape="hv",
            width=2 if kind == "scaled_ternary" else 3,
            dash="dash" if kind == "scaled_ternary" else None,
        )
        fig.add_trace(go.Scatter(x=_np(grid), y=_np(q), name=label, line=line), 1, 2)
    kinds = list(info.QUANT_KINDS)
    xl = ["binary", "ternary", f"ternary·a (a={a:.2f})"]
    colors = [COLORS[k] for k in kinds]
    mse = [stats[k]["mse"] for k in kinds]
    fig.add_trace(
        go.Bar(
            x=xl,
            y=mse,
            name="MSE",
            marker_color=colors,
            text=[f"{v:.3f}" for v in mse],
            textposition="outside",
            showlegend=False,
        ),
        2,
        1,
    )
    ent = [stats[k]["entropy_bits"] for k in kinds]
    fig.add_trace(
        go.Bar(
            x=xl,
            y=ent,
            name="entropy (bits/neuron)",
            marker_color=colors,
            text=[f"{v:.2f} bits" for v in ent],
            textposition="inside",
            showlegend=False,
        ),
        2,
        2,
    )
    bound = [1.0, math.log2(3), math.log2(3)]
    fig.add_trace(
        go.Scatter(
            x=xl,
            y=bound,
            name="bound: log2(#values)",
            mode="markers",
            marker=dict(symbol="line-ew-open", size=34, color=COLORS["reference"], line=dict(width=2)),
        ),
        2,
        2,
    )
    fig.update_xaxes(title=f"u {_UNIT}", row=1, col=1)
    fig.update_yaxes(title="probability density", row=1, col=1)
    fig.update_xaxes(title=f"u {_UNIT}", range=[-lim, lim], row=1, col=2)
    fig.update_yaxes(title=f"q(u) {_UNIT}", row=1, col=2)
    fig.update_xaxes(title="spike", row=2, col=1)
    fig.update_yaxes(title=f"MSE {_UNIT}²", range=[0, 1.3 * max(max(mse), 1e-9)], row=2, col=1)
    fig.update_xaxes(title="spike", row=2, col=2)
    fig.update_yaxes(title="bits per neuron", range=[0, 1.8], row=2, col=2)
    fig.update_layout(barmode="overlay")
    return _layout(
        fig,
        f"Quantizing a membrane at threshold {threshold:.2f}",
        subtitle=f"MSE: binary {stats['binary']['mse']:.3f}, ternary {stats['ternary']['mse']:.3f}, "
        f"ternary·a {stats['scaled_ternary']['mse']:.3f}; share of u below zero: "
        f"{float((u < 0).float().mean()):.0%}",
        height=640,
    )


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


def plot_teaser(
    mem: torch.Tensor | None = None,
    *,
    threshold: float = 0.5,
    a: float | None = None,
    step: int = 0,
    sample: int = 0,
    channel: int = 0,
) -> go.Figure:
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
            f"membrane u: channel {channel} of {per_map[0]}",
            f"binary reading: {h_bin:,.0f} of {info.capacity_bits(per_map, 'binary'):,.0f} bits*",
            f"ternary reading: {h_ter:,.0f} of {info.capacity_bits(per_map, 'ternary'):,.0f} bits*",
        ]
        whole = (
            f"* bits: entropy of the {{0, 1}} / {{-1, 0, 1}} spikes read from this membrane, measured over the whole "
            f"{per_map[0]}×{per_map[1]}×{per_map[2]} map<br>(all channels, steps and samples), against its "
            f"capacity; the same map as float32 numbers: {info.capacity_bits(per_map, 'real'):,.0f} bits"
        )
    else:
        titles = ["membrane u", "binary reading", "ternary reading"]
        whole = ""
    fig = make_subplots(rows=1, cols=3, subplot_titles=titles, horizontal_spacing=0.13)
    m = _np(_map2d(u, step, sample, channel))
    lim = float(max(np.abs(m).max(), threshold * 1.5))
    right = fig.layout.xaxis.domain[1]
    fig.add_trace(
        go.Heatmap(
            z=m,
            name="membrane u",
            colorscale=MEMBRANE_COLORSCALE,
            zmin=-lim,
            zmax=lim,
            hovertemplate="u = %{z:.3f}<extra></extra>",
            colorbar=dict(
                title=dict(text=f"u {_UNIT}", side="top"),
                x=right + 0.005,
                xanchor="left",
                len=0.85,
                thickness=12,
                tickvals=[-threshold, 0, threshold],
                ticktext=[f"−θ = {-threshold:.2f}", "0", f"+θ = {threshold:.2f}"],
            ),
        ),
        1,
        1,
    )
    zero, pos, neg = COLORS["spike0"], COLORS["spike+1"], COLORS["spike-1"]
    fig.add_trace(
        go.Heatmap(
            z=_np(_map2d(b_bin, step, sample, channel)),
            name="binary spikes",
            colorscale=_discrete([(0, zero), (1, pos)]),
            zmin=-0.5,
            zmax=1.5,
            showscale=False,
            hovertemplate="b = %{z:.0f}<extra></extra>",
            xgap=1,
            ygap=1,
        ),
        1,
        2,
    )
    fig.add_trace(
        go.Heatmap(
            z=_np(_map2d(b_ter, step, sample, channel)),
            name="ternary spikes",
            customdata=a * _np(_map2d(b_ter, step, sample, channel)),
            colorscale=_discrete([(-1, neg), (0, zero), (1, pos)]),
            zmin=-1.5,
            zmax=1.5,
            showscale=False,
            hovertemplate="b = %{z:.0f}, a·b = %{customdata:.2f}<extra></extra>",
            xgap=1,
            ygap=1,
        ),
        1,
        3,
    )
    for name, color in (
        (f"spike +1 (u ≥ θ){'' if a == 1 else ', ×a'}", pos),
        (f"spike −1 (u ≤ −θ, ternary only){'' if a == 1 else ', ×a'}", neg),
        ("no spike (0)", zero),
    ):
        fig.add_trace(
            go.Scatter(
                x=[None],
                y=[None],
                mode="markers",
                name=name,
                showlegend=True,
                marker=dict(symbol="square", size=14, color=color, line=dict(width=1, color=COLORS["real"])),
            ),
            1,
            3,
        )
    for c in (1, 2, 3):
        fig.update_yaxes(autorange="reversed", scaleanchor=f"x{'' if c == 1 else c}", visible=False, row=1, col=c)
        fig.update_xaxes(visible=False, row=1, col=c)
    if whole:  # below the maps (their axes are hidden)
        fig.add_annotation(
            x=0,
            y=-0.04,
            xref="paper",
            yref="paper",
            xanchor="left",
            yanchor="top",
            showarrow=False,
            align="left",
            text=whole,
            font=dict(size=11),
        )
    return _layout(
        fig,
        "One membrane map read as spikes: binary spikes lose the negative membrane, ternary keep it",
        subtitle=f"threshold θ = {threshold:.2f}, amplitude a = {a:.2f}; step {step}, sample {sample}, "
        f"channel {channel}",
        height=430,
    )


# --------------------------------------------------------------------------- 02 neuron


def _lif_1d(current: torch.Tensor, kind: str, **kw) -> tuple[np.ndarray, np.ndarray]:
    b_seq, mem_seq = functional.oracle_lif_seq(current.reshape(-1, 1).double(), kind=kind, **kw)
    return _np(b_seq[:, 0]), _np(mem_seq[:, 0])


def plot_neuron(
    current: torch.Tensor | None = None,
    *,
    beta: float = 0.25,
    threshold: float = 0.5,
    a: float = 1.5,
    reset_mechanism: str = "zero",
) -> go.Figure:
    """One neuron driven by ``current``: binary vs ternary vs trainable ternary, side by side.

        u_t = beta·u_{t-1}·(1 - |b_{t-1}|) + x_t     (``functional.oracle_lif_seq``)

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
    fig = make_subplots(
        rows=3,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.07,
        row_heights=[0.25, 0.4, 0.35],
        subplot_titles=("input current x_t", "membrane potential u_t (dashed: ±threshold)", "spikes emitted o_t"),
    )
    fig.add_trace(go.Bar(x=t, y=_np(current), name="input x", marker_color=COLORS["real"]), 1, 1)
    fig.add_trace(go.Scatter(x=t, y=u_bin, name="u binary", line=dict(color=COLORS["binary"])), 2, 1)
    fig.add_trace(go.Scatter(x=t, y=u_ter, name="u ternary", line=dict(color=COLORS["ternary"])), 2, 1)
    _threshold_lines(fig, threshold, vertical=False, row=2, col=1)
    for name, vals, off, kind in (
        ("spikes binary", b_bin, -0.15, "binary"),
        ("spikes ternary", b_ter, 0.0, "ternary"),
        ("spikes trainable ternary (a·b)", a * b_ter, 0.15, "trainable_ternary"),
    ):
        nz = vals != 0
        fig.add_trace(
            go.Scatter(
                x=t[nz] + off,
                y=vals[nz],
                mode="markers",
                name=name,
                marker=dict(color=COLORS[kind], size=9),
                error_y=dict(
                    type="data",
                    symmetric=False,
                    array=np.zeros(nz.sum()),
                    arrayminus=vals[nz],
                    color=COLORS[kind],
                    width=0,
                ),
            ),
            3,
            1,
        )
    fig.update_xaxes(title="time step t", row=3, col=1)
    fig.update_yaxes(title=f"x_t {_UNIT}", row=1, col=1)
    fig.update_yaxes(title=f"u_t {_UNIT}", row=2, col=1)
    fig.update_yaxes(title="spike value", row=3, col=1)
    return _layout(
        fig,
        f"LIF neuron, beta={beta:.2f}, threshold={threshold:.2f}, reset={reset_mechanism!r}",
        subtitle=f"binary {int((b_bin != 0).sum())} spikes; ternary {int((b_ter > 0).sum())} positive + "
        f"{int((b_ter < 0).sum())} negative; trainable ternary: the ternary spikes × a = {a:.2f}",
        height=600,
    )


def plot_reset(
    current: torch.Tensor | None = None, *, beta: float = 0.25, threshold: float = 0.5, kind: str = "ternary"
) -> go.Figure:
    """The reset rule: hard reset by |b| (the paper) against reset by subtraction.

        zero:      u_t = beta·u_{t-1}·(1 - |b_{t-1}|) + x_t   (a -1 spike resets too)
        subtract:  u_t = beta·u_{t-1} - b_{t-1}·threshold + x_t

    Both curves are the same neuron (``kind``'s colour); solid is the paper's rule.
    Traces: "u zero reset (paper)", "spikes zero reset (paper)", "u subtract reset", "spikes subtract reset".
    """
    current = input_current("step", amplitude=0.4) if current is None else torch.as_tensor(current).flatten()
    t = np.arange(len(current))
    fig = make_subplots(
        rows=2,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.1,
        row_heights=[0.6, 0.4],
        subplot_titles=("membrane potential u_t (dashed: ±threshold)", "spikes b_t"),
    )
    for i, (reset, label) in enumerate((("zero", "zero reset (paper)"), ("subtract", "subtract reset"))):
        b, u = _lif_1d(current, kind, beta=beta, threshold=threshold, reset_mechanism=reset)
        color = COLORS[kind] if i == 0 else COLORS["real"]
        fig.add_trace(
            go.Scatter(x=t, y=u, name=f"u {label}", line=dict(color=color, dash="solid" if i == 0 else "dot")), 1, 1
        )
        nz = b != 0
        fig.add_trace(
            go.Scatter(
                x=t[nz] + 0.12 * (2 * i - 1),
                y=b[nz],
                mode="markers",
                name=f"spikes {label}",
                marker=dict(color=color, size=8, symbol="circle" if i == 0 else "diamond"),
            ),
            2,
            1,
        )
    _threshold_lines(fig, threshold, vertical=False, signs=(-1, 1) if kind == "ternary" else (1,), row=1, col=1)
    fig.update_xaxes(title="time step t", row=2, col=1)
    fig.update_yaxes(title=f"u_t {_UNIT}", row=1, col=1)
    fig.update_yaxes(title="spike value b", row=2, col=1)
    return _layout(fig, f"Reset rule of the {kind} neuron (beta={beta:.2f}, threshold={threshold:.2f})", height=480)


def plot_surrogates(
    surrogates: Mapping[str, Any] | None = None, *, threshold: float = 0.5, kind: str = "ternary"
) -> go.Figure:
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
    fig = make_subplots(
        rows=1,
        cols=2,
        horizontal_spacing=0.12,
        subplot_titles=(f"forward: {kind} spike b(u)", "backward: surrogate db/du"),
    )
    fig.add_trace(
        go.Scatter(
            x=_np(u),
            y=_np(info.quantize(u, kind, threshold)),
            name="forward b(u)",
            line=dict(color=COLORS[kind], shape="hv"),
        ),
        1,
        1,
    )
    for i, (name, sg) in enumerate(surrogates.items()):
        g = sg.ternary_grad(u, th) if kind == "ternary" else sg.binary_grad(u, th)
        fig.add_trace(go.Scatter(x=_np(u), y=_np(g), name=name, line=dict(color=_PALETTE[i % len(_PALETTE)])), 1, 2)
    for c in (1, 2):
        _threshold_lines(fig, threshold, signs=(-1, 1) if kind == "ternary" else (1,), row=1, col=c)
        fig.update_xaxes(title=f"membrane potential u {_UNIT}", row=1, col=c)
    fig.update_yaxes(title="spike value b", row=1, col=1)
    fig.update_yaxes(title=f"db/du (1/{_UNIT[1:-1]})", row=1, col=2)
    return _layout(
        fig,
        f"Surrogate gradients of the {kind} spike, threshold {threshold:.2f}",
        subtitle="dashed: ±threshold; the forward pass is the same staircase for every surrogate",
    )
