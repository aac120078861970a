"""Colours and layout every figure of the series shares: one colour per meaning (:data:`COLORS`)."""

from __future__ import annotations

from types import MappingProxyType

import numpy as np
import plotly.graph_objects as go
import torch

from ..models import NEURONS

# One colour per meaning, in every figure of the series. Neurons take the registry's colours
# (tspike_lab.models.NEURONS). Spike values and membrane sign share one diverging pair, apart
# from every neuron colour: a membrane above +threshold fires +1, one below -threshold fires -1.
_POSITIVE, _NEGATIVE, _ZERO = "#ff7f0e", "#17becf", "#efefef"
COLORS = MappingProxyType(
    {
        **{name: kind.color for name, kind in NEURONS.items()},
        "scaled_ternary": NEURONS["trainable_ternary"].color,  # {-a, 0, a}: the trainable ternary spike
        "real": "#7f7f7f",  # real-valued: membranes, float32 maps, the ANN
        "spike+1": _POSITIVE,
        "spike-1": _NEGATIVE,
        "spike0": _ZERO,
        "membrane+": _POSITIVE,
        "membrane-": _NEGATIVE,
        "reference": "#000000",  # thresholds, y = x, initial values, MSE-best amplitudes
    }
)
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
    neuron's label and a space or comma ("trainable ternary (folded)", "trainable ternary, SGD");
    anything else the i-th of ``_PALETTE``."""
    if name in COLORS:
        return COLORS[name]
    key = str(name).lower().replace("_", " ")
    for kind in sorted(NEURONS.values(), key=lambda k: -len(k.label)):
        if key == kind.label or key.startswith((kind.label + " ", kind.label + ",")):
            return kind.color
    return _PALETTE[i % len(_PALETTE)]


def _legend_rows(fig: go.Figure, width: float = 880.0) -> int:
    """How many rows the horizontal legend wraps to, estimated from its entries' text length."""
    names = [
        str(t.name)
        for t in fig.data
        if t.name and (t.showlegend or (t.showlegend is None and t.type not in ("heatmap", "box")))
    ]
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
    fig.update_layout(
        title=dict(
            text=title, x=0.01, xanchor="left", y=1 - 10 / height, yanchor="top", subtitle=dict(text=subtitle or "")
        ),
        height=height,
        template="plotly_white",
        margin=dict(l=70, r=20, t=margin_t, b=60),
        legend=dict(orientation="h", yref="container", y=1 - top / height, yanchor="top", x=0),
    )
    return fig


def _tint(color: str, alpha: float) -> str:
    """``color`` ("#rrggbb") at opacity ``alpha``, for fills whose outline and text stay opaque."""
    r, g, b = (int(color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r}, {g}, {b}, {alpha})"


def _np(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().double().cpu().numpy()
    return np.asarray(x, dtype=float)


def _signed_histogram(
    fig: go.Figure,
    u: np.ndarray,
    bins: int,
    *,
    lim: float | None = None,
    row: int | None = None,
    col: int | None = None,
) -> None:
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
        fig.add_trace(
            go.Bar(
                x=centres[keep],
                y=density[keep],
                width=width,
                offset=-width / 2,
                name=label,
                marker=dict(color=COLORS[key], line=dict(width=0)),
            ),
            row=row,
            col=col,
        )


def _threshold_lines(fig: go.Figure, threshold: float, *, vertical: bool = True, signs=(-1, 1), **where) -> None:
    for sign in signs:
        kw = dict(line_dash="dash", line_color=COLORS["reference"], line_width=1, **where)
        fig.add_vline(x=sign * threshold, **kw) if vertical else fig.add_hline(y=sign * threshold, **kw)
