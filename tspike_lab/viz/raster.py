"""Signed spike rasters (notebooks 02-03): +1 and −1 spikes over time, one row per neuron."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from .. import functional
from .style import COLORS, _layout, _name, _np

_SIGNS = ((1, "spike +1", "spike+1"), (-1, "spike −1", "spike-1"))


def population_current(
    num_neurons: int = 24, num_steps: int = 60, *, amplitude: float = 0.45, period: float = 20.0
) -> torch.Tensor:
    """Sine currents with evenly spread phases, one per neuron: ``x_t,n = A sin(2πt/P + 2πn/N)``, ``[T, N]``."""
    if not isinstance(num_neurons, int) or num_neurons < 1:
        raise ValueError(f"num_neurons must be a positive int, got {num_neurons!r}")
    if not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive int, got {num_steps!r}")
    if not float(period) > 0:
        raise ValueError(f"period must be > 0, got {period!r}")
    t = torch.arange(num_steps, dtype=torch.float64).reshape(-1, 1)
    phase = 2 * math.pi * torch.arange(num_neurons, dtype=torch.float64) / num_neurons
    return (float(amplitude) * torch.sin(2 * math.pi * t / float(period) + phase)).float()


def _samples(spikes) -> np.ndarray:
    """``[T]``, ``[T, N]`` or ``[T, B, ...]`` -> signs ``[B, T, N]`` (a·b keeps the sign of b)."""
    s = spikes.detach() if isinstance(spikes, torch.Tensor) else torch.as_tensor(np.asarray(spikes))
    if s.dim() == 0:
        raise ValueError("spikes must be [T], [T, N] or [T, B, ...], got a scalar")
    if s.dim() == 1:
        s = s.reshape(-1, 1, 1)
    elif s.dim() == 2:
        s = s.unsqueeze(1)
    else:
        s = s.flatten(2)
    return np.sign(_np(s)).transpose(1, 0, 2)  # [B, T, N]


def plot_raster(
    spikes=None, *, max_neurons: int = 256, sample_labels=None, title: str | None = None, subtitle: str | None = None
) -> go.Figure:
    """Signed spike raster: a tick per spike, orange for +1 and cyan for −1, time along x, neurons along y.

    snnTorch's ``spikeplot.raster`` draws a −1 like a +1; here the sign keeps its colour
    (``COLORS["spike+1"]``, ``COLORS["spike-1"]``), and a scaled spike ``a·b`` is drawn by its sign.

    Args:
        spikes: ``[T, N]`` (N neurons over T steps), ``[T, B, ...]`` (B samples side by side, T steps
            each, neurons = the flattened rest), or ``{panel title: such a tensor}``, panels side by
            side sharing the neuron axis (binary against ternary, before against after training).
            Default: 24 binary and 24 ternary neurons driven by :func:`population_current`.
        max_neurons: draw the first ``max_neurons`` neurons of each panel (the subtitle says so).
        sample_labels: one label per sample (default "sample 0", "sample 1", ...).
        title, subtitle: override the default title; add a line under it.
    Traces per panel: "spike +1", "spike −1" (the legend shows the first panel's).
    """
    if spikes is None:
        current = population_current()
        spikes = {kind: functional.oracle_lif_seq(current, kind=kind)[0] for kind in ("binary", "ternary")}
        subtitle = subtitle or "24 neurons, each driven by the same sine current at its own phase"
    panels = spikes if isinstance(spikes, Mapping) else {"": spikes}
    if not panels:
        raise ValueError("spikes must hold at least one panel")
    if not isinstance(max_neurons, int) or max_neurons < 1:
        raise ValueError(f"max_neurons must be a positive int, got {max_neurons!r}")
    signs = {name: _samples(s) for name, s in panels.items()}
    shapes = {s.shape[:2] for s in signs.values()}
    if len(shapes) != 1:
        raise ValueError(f"every panel must have the same samples and steps [B, T], got {sorted(shapes)}")
    num_samples, num_steps = next(iter(shapes))
    labels = list(sample_labels) if sample_labels is not None else [f"sample {b}" for b in range(num_samples)]
    if len(labels) != num_samples:
        raise ValueError(f"sample_labels must name the {num_samples} samples, got {len(labels)} labels")
    gap = 1 if num_samples > 1 else 0
    width = num_steps + gap  # columns per sample, a blank one between samples
    titles = []
    for name, s in signs.items():
        shown = s[..., :max_neurons]
        count = f"{int((shown > 0).sum())} spikes of +1, {int((shown < 0).sum())} of −1"
        titles.append(f"{_name(name)}<br>{count}" if name else count)
    fig = make_subplots(
        rows=1,
        cols=len(signs),
        shared_yaxes=True,
        subplot_titles=titles,
        horizontal_spacing=0.04 if len(signs) > 1 else 0.2,
    )
    n_max = max(min(s.shape[2], max_neurons) for s in signs.values())
    plot_px = max(260, min(640, 6 * n_max))
    row_px = plot_px / max(n_max, 1)
    col_px = 820 / len(signs) / max(num_samples * width, 1)
    size = float(np.clip(0.9 * row_px, 3, 14))
    for c, s in enumerate(signs.values(), 1):
        s = s[..., :max_neurons]
        for value, trace_name, key in _SIGNS:
            b, t, n = np.nonzero(s == value)
            x, y = (b * width + t + 1, n) if len(b) else ([None], [None])  # an empty sign keeps its legend entry
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=y,
                    mode="markers",
                    name=trace_name,
                    legendgroup=trace_name,
                    showlegend=c == 1,
                    marker=dict(
                        symbol="line-ns",
                        size=size,
                        color=COLORS[key],
                        line=dict(color=COLORS[key], width=float(np.clip(col_px / 3, 1.5, 4))),
                    ),
                    customdata=np.stack([b, t + 1], axis=-1) if len(b) else None,
                    hovertemplate=(
                        f"{trace_name}<br>neuron %{{y}}, step t = %{{customdata[1]}}"
                        + (", %{customdata[0]}" if num_samples > 1 else "")
                        + "<extra></extra>"
                    ),
                ),
                1,
                c,
            )
        ticks = [k * width + t + 1 for k in range(num_samples) for t in range(num_steps)]
        text = [str(t + 1) for _ in range(num_samples) for t in range(num_steps)]
        fig.update_xaxes(
            range=[0.3, num_samples * width - gap + 0.7],
            tickvals=ticks if len(ticks) <= 40 else None,
            ticktext=text if len(ticks) <= 40 else None,
            showgrid=False,
            zeroline=False,
            title=dict(text="time step t", standoff=22 if num_samples > 1 else 8),
            row=1,
            col=c,
        )
        for k in range(1, num_samples):
            fig.add_vline(x=k * width, line_color=COLORS["real"], line_width=1, line_dash="dot", row=1, col=c)
        if num_samples > 1:  # under the step numbers, above the axis title
            for k, label in enumerate(labels):
                fig.add_annotation(
                    x=k * width + (num_steps + 1) / 2,
                    y=0,
                    yref="y domain",
                    yanchor="top",
                    yshift=-20,
                    text=str(label),
                    showarrow=False,
                    font=dict(size=10),
                    row=1,
                    col=c,
                )
    fig.update_yaxes(range=[n_max - 0.5, -0.5], showgrid=False, zeroline=False)
    fig.update_yaxes(title="neuron", row=1, col=1)
    fig.update_annotations(font_size=12, selector=dict(yanchor="bottom"))  # the two-line panel titles
    clipped = max(s.shape[2] for s in signs.values()) > max_neurons
    note = f"first {max_neurons} neurons shown" if clipped else ""
    sub = "; ".join(x for x in (subtitle, note) if x)
    return _layout(fig, title or "Spike raster: +1 and −1 spikes over time", height=plot_px + 150, subtitle=sub or None)
