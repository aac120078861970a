"""Figures of the reproduction: tables beside the paper (:func:`plot_table`) and the paper's Figure 2 layout.

Re-exported by :mod:`tspike_lab.viz`; colours and layout come from there.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .models import NEURONS

__all__ = ["plot_table", "plot_figure2"]


def _style(neuron: str) -> tuple[str, str]:
    kind = NEURONS.get(neuron)
    return (kind.label, kind.color) if kind else (neuron, "#7f7f7f")


def _sweep(fig: go.Figure, rs: list, col: int, shown: set) -> None:
    """Lines of top-1 against width, one per neuron and T (dotted: the smaller T)."""
    widths = sorted({r["width"] for r in rs if r["width"] is not None})
    top = max(r["num_steps"] for r in rs)
    for t in sorted({r["num_steps"] for r in rs}):
        for neuron in dict.fromkeys(r["neuron"] for r in rs):
            line = sorted((r for r in rs if r["neuron"] == neuron and r["num_steps"] == t and r["mean"] is not None),
                          key=lambda r: r["width"])
            label, color = _style(neuron)
            name = f"{label}, T={t}"
            fig.add_scatter(x=[r["width"] for r in line], y=[r["mean"] for r in line],
                            error_y=dict(type="data", array=[r["std"] or 0.0 for r in line]), mode="lines+markers",
                            name=name, legendgroup=name, showlegend=name not in shown,
                            line=dict(color=color, dash="solid" if t == top else "dot"), row=1, col=col)
            shown.add(name)
    fig.update_xaxes(type="log", tickvals=widths, ticktext=[str(w) for w in widths],
                     title="width (channels of the first block)", row=1, col=col)


def _bars(fig: go.Figure, rs: list, col: int, shown: set) -> None:
    """One bar per neuron (ours, mean ± std) in each (arch, T) group; a diamond at the paper's cell."""
    groups = sorted({(r["arch"], r["width"], r["num_steps"]) for r in rs}, key=lambda k: (k[0], k[1] or 0, k[2]))
    xs = {g: g[0] + (f" w{g[1]}" if g[1] else "") + f" · T={g[2]}" for g in groups}
    for neuron in dict.fromkeys(r["neuron"] for r in rs):
        mine = [r for r in rs if r["neuron"] == neuron]
        label, color = _style(neuron)
        if any(r.get("ours") for r in mine) and mine[0]["table"] != "capacity":
            label += " (ours)"
        fig.add_bar(x=[xs[(r["arch"], r["width"], r["num_steps"])] for r in mine], y=[r["mean"] for r in mine],
                    error_y=dict(type="data", array=[r["std"] or 0.0 for r in mine]), marker_color=color,
                    name=label, legendgroup=neuron, showlegend=neuron not in shown, offsetgroup=neuron,
                    text=[f"{r['mean']:.1f}" if r["mean"] is not None else "" for r in mine],
                    textposition="outside", cliponaxis=False, row=1, col=col)
        shown.add(neuron)
        papers = [r for r in mine if r["paper"] is not None]
        if papers:
            fig.add_scatter(x=[xs[(r["arch"], r["width"], r["num_steps"])] for r in papers],
                            y=[r["paper"] for r in papers], mode="markers", offsetgroup=neuron,
                            marker=dict(symbol="diamond", size=11, color=color, line=dict(color="black", width=2)),
                            error_y=dict(type="data", array=[r["paper_std"] or 0.0 for r in papers]),
                            name="paper (Guo et al. 2024)", legendgroup="paper", showlegend="paper" not in shown,
                            row=1, col=col)
            shown.add("paper")
    fig.update_xaxes(title="network · time steps T", automargin=True, row=1, col=col)


def plot_table(rows: Iterable[Mapping[str, Any]], title: str | None = None) -> go.Figure:
    """Reproduction rows as a figure: one panel per (data set, profile), never two data sets in one chart.

    A width sweep (several widths of arch ``small``) is drawn as lines of top-1 against width,
    one per neuron and T. Otherwise one group of bars per (arch, T), one bar per neuron (ours,
    mean ± std over seeds), and a black-edged diamond at the paper's number where the paper has
    that cell. Each panel title names the data set and the profile.

    Args:
        rows: rows of :func:`tspike_lab.reproduce.aggregate`.
        title: the figure title (default: the tables shown).
    Traces: one per neuron (and T for a sweep), then "paper (Guo et al. 2024)".
    """
    from .viz import _layout

    rows = [r for r in rows if r.get("mean") is not None or r.get("paper") is not None]
    panels: dict[tuple, list] = {}
    for r in rows:
        panels.setdefault((r["dataset_label"], r["profile"]), []).append(r)
    keys = list(panels) or [("no results", "")]
    fig = make_subplots(rows=1, cols=len(keys), shared_yaxes=True, horizontal_spacing=0.08,
                        subplot_titles=[f"{d} · profile {p}" + ("" if p in ("paper", "") else
                                                               " (not the paper's protocol)") for d, p in keys])
    shown: set[str] = set()
    for col, key in enumerate(keys, start=1):
        rs = panels.get(key, [])
        if len({r["width"] for r in rs if r["width"] is not None}) > 1:
            _sweep(fig, rs, col, shown)
        elif rs:
            _bars(fig, rs, col, shown)
    fig.update_layout(barmode="group")
    fig.update_yaxes(title="test top-1 (%)", range=[0, 105], row=1, col=1)
    if title is None:
        tables = list(dict.fromkeys(r["table"] for r in rows))
        title = (f"{', '.join(tables)}: ours, mean ± std over seeds" + (", beside the paper" if any(
            r["paper"] is not None for r in rows) else "")) if rows else "no results"
    return _layout(fig, title, height=460)


def plot_figure2(recordings: Mapping[int, Mapping[str, Mapping[str, Any]]], *, label: str,
                 layers: Iterable[int] = (1, 2, 3, 4), bins: int = 80) -> go.Figure:
    """The paper's Figure 2 layout: membrane-potential histograms of layers 1-4, one row per T.

    Args:
        recordings: ``{T: recording}``, each from :func:`tspike_lab.probes.record` on a network
            trained with that T; layer i is the recording's i-th spiking layer (1-based).
        label: what network and data the panels show (the subtitle), e.g. "small (width 8),
            ternary, profile cpu, CIFAR-10 (JPEG copy) - not the paper's ResNet20".
        layers: which spiking layers (1-based), four as in the paper.
    Traces: one histogram per panel, named "T=<t>, layer <i>".
    """
    from .viz import COLORS, _layout, _np

    steps = sorted(recordings)
    layers = list(layers)
    letters = "abcdefghijklmnopqrstuvwxyz"
    titles = [f"({letters[i * len(layers) + j]}) layer {li}, T={t}" for i, t in enumerate(steps)
              for j, li in enumerate(layers)]
    fig = make_subplots(rows=len(steps), cols=len(layers), subplot_titles=titles, horizontal_spacing=0.06,
                        vertical_spacing=0.2)
    for i, t in enumerate(steps, start=1):
        names = list(recordings[t])
        for j, li in enumerate(layers, start=1):
            if li - 1 >= len(names):
                raise ValueError(f"layers asks for layer {li} but the T={t} recording has {len(names)} spiking layers")
            entry = recordings[t][names[li - 1]]
            fig.add_trace(go.Histogram(x=_np(entry["mem"].flatten()), nbinsx=bins, histnorm="probability density",
                                       name=f"T={t}, layer {li}", marker_color=COLORS["real"], showlegend=False),
                          row=i, col=j)
            th = float(entry.get("threshold", 0.5))
            for sign in (-1, 1):
                fig.add_vline(x=sign * th, line_dash="dash", line_color=COLORS["reference"], row=i, col=j)
            fig.update_xaxes(title="membrane potential u (a.u.)", row=i, col=j)
        fig.update_yaxes(title="density", row=i, col=1)
    return _layout(fig, f"Figure 2 layout: membrane potentials of layers {layers[0]}-{layers[-1]} (dashed: ±threshold)",
                   height=280 * len(steps) + 60, subtitle=label)
