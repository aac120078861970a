"""Figures of notebook 05 (re-parameterization, energy) and of the reproduction: tables and Figure 2."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from .. import energy, probes
from ..models import NEURONS, build_model
from ..reparam import reparameterize
from .inputs import _demo_model
from .style import _UNIT, COLORS, _color, _layout, _np


def plot_logits_match(original: torch.Tensor | None = None, folded: torch.Tensor | None = None) -> go.Figure:
    """Logits of a model against those of its re-parameterized copy (y = x if unchanged).

    Default: an untrained ``small`` network and ``reparameterize(model)`` on random input.
    Traces: "logits", "y = x".
    """
    if original is None or folded is None:
        model, x = _demo_model()
        with torch.no_grad():
            original, folded = model(x), reparameterize(model).eval()(x)
    o, f = _np(original).ravel(), _np(folded).ravel()
    diff = float(np.abs(o - f).max()) if o.size else 0.0
    lo, hi = (float(min(o.min(), f.min())), float(max(o.max(), f.max()))) if o.size else (0.0, 1.0)
    fig = go.Figure(
        go.Scatter(
            x=o,
            y=f,
            mode="markers",
            name="logits (one per image and class)",
            marker=dict(color=COLORS["trainable_ternary"], size=5, opacity=0.6),
        )
    )
    fig.add_scatter(
        x=[lo, hi], y=[lo, hi], mode="lines", name="y = x", line=dict(color=COLORS["reference"], dash="dash")
    )
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
        model, x = _demo_model()
        with torch.no_grad():
            model.stem_lif.graded_spikes_factor.fill_(0.7)
        recordings = {
            "trained (a·b)": probes.record(model, x),
            "folded (b)": probes.record(reparameterize(model).eval(), x),
        }
    fig = go.Figure()
    for i, (name, rec) in enumerate(recordings.items()):
        xs, ys, sizes, texts = [], [], [], []
        for layer, entry in rec.items():
            emitted = (
                entry["spikes"] * entry["amplitude"].reshape(-1, *([1] * (entry["spikes"].dim() - 3)))
                if entry["amplitude"].dim()
                else entry["spikes"] * entry["amplitude"]
            )
            vals, counts = torch.unique(emitted.detach().flatten(), return_counts=True)
            share = counts.double() / counts.sum()
            for v, s in zip(vals.tolist(), share.tolist()):
                xs.append(layer)
                ys.append(v)
                sizes.append(8 + 30 * math.sqrt(s))
                texts.append(f"{v:+.3g}: {100 * s:.1f}%")
        fig.add_scatter(
            x=xs,
            y=ys,
            mode="markers",
            name=name,
            text=texts,
            hoverinfo="text+x",
            marker=dict(
                size=sizes,
                color=COLORS[_family(set(ys))],
                opacity=0.6,
                symbol=("circle", "diamond", "square")[i % 3],
                line=dict(width=1, color=COLORS["reference"]),
            ),
        )
    fig.update_xaxes(title="spiking layer (forward order)")
    fig.update_yaxes(title=f"emitted spike value {_UNIT}")
    fig.update_layout(scattermode="group", scattergap=0.6)
    return _layout(
        fig, "Values the spiking layers emit", subtitle="marker area ~ share of neuron-steps with that value"
    )


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
    Energy is in nJ (1 nJ = 1000 pJ), as notebook 05 prints it.
    Traces: "SNN operations" (per model, prefixed by its name if several), "ANN MACs", "energy (nJ)".
    """
    if counts is None:
        model, x = _demo_model("ternary")
        counts = energy.count_ops(model, x)
    if not isinstance(counts, Mapping):
        counts = {"SNN": counts}
    fig = make_subplots(
        rows=1,
        cols=2,
        column_widths=[0.64, 0.36],
        horizontal_spacing=0.12,
        subplot_titles=("operations per sample, per layer", "energy per sample"),
    )
    names, energies, colors = [], [], []
    for i, (name, c) in enumerate(counts.items()):
        color = _color(name, i)
        fig.add_bar(
            x=[r.name for r in c.layers],
            y=[(r.macs + r.sops) / c.batch_size for r in c.layers],
            name=f"{'' if len(counts) == 1 else name + ' '}SNN operations",
            marker=dict(color=color, pattern=dict(shape=["x" if r.macs else "" for r in c.layers])),
            customdata=[["MACs" if r.macs else "SOPs", r.input] for r in c.layers],
            hovertemplate="%{x}: %{y:,.0f} %{customdata[0]} (%{customdata[1]} input)<extra>" + name + "</extra>",
            row=1,
            col=1,
        )
        names.append(name)
        energies.append(c.total(convention)["energy_pj"])
        colors.append(color)
    first = next(iter(counts.values()))
    fig.add_bar(
        x=[r.name for r in first.layers],
        y=[r.ann_macs for r in first.layers],
        name="ANN MACs",
        marker_color=COLORS["real"],
        row=1,
        col=1,
    )
    names.append("ANN")
    energies.append(first.ann()["energy_pj"])
    fig.add_bar(
        x=names,
        y=[e / 1e3 for e in energies],
        name="energy (nJ)",
        showlegend=False,
        marker_color=colors + [COLORS["real"]],
        text=[f"{e / 1e3:.4g} nJ" for e in energies],
        textposition="outside",
        row=1,
        col=2,
    )
    fig.update_xaxes(title="layer", row=1, col=1)
    fig.update_xaxes(title="model", row=1, col=2)
    fig.update_yaxes(type="log", dtick=1, tickformat="~s", title="operations per sample (log)", row=1, col=1)
    fig.update_yaxes(title="nJ per sample", rangemode="tozero", row=1, col=2)
    fig.update_yaxes(range=[0, 1.2 * max(energies) / 1e3], row=1, col=2)
    fig.update_layout(barmode="group")
    return _layout(
        fig,
        "Synaptic operations and energy",
        subtitle=f"{first.e_mac_pj:g} pJ per MAC, {first.e_ac_pj:g} pJ per accumulate; "
        f"{convention} convention; hatched: MACs on dense input, solid: SOPs on spikes",
        height=460,
    )


# --------------------------------------------------------------------------- reproduction (06, reproduce/)


def _style(neuron: str) -> tuple[str, str]:
    kind = NEURONS.get(neuron)
    return (kind.label, kind.color) if kind else (neuron, COLORS["real"])


def _sweep(fig: go.Figure, rs: list, col: int, shown: set) -> None:
    """Lines of top-1 against width, one per neuron and T (dotted: the smaller T)."""
    widths = sorted({r["width"] for r in rs if r["width"] is not None})
    top = max(r["num_steps"] for r in rs)
    for t in sorted({r["num_steps"] for r in rs}):
        for neuron in dict.fromkeys(r["neuron"] for r in rs):
            line = sorted(
                (r for r in rs if r["neuron"] == neuron and r["num_steps"] == t and _compared(r)[0] is not None),
                key=lambda r: r["width"],
            )
            label, color = _style(neuron)
            name = f"{label}, T={t}"
            fig.add_scatter(
                x=[r["width"] for r in line],
                y=[_compared(r)[0] for r in line],
                error_y=dict(type="data", array=[_compared(r)[1] or 0.0 for r in line]),
                mode="lines+markers",
                name=name,
                legendgroup=name,
                showlegend=name not in shown,
                line=dict(color=color, dash="solid" if t == top else "dot"),
                row=1,
                col=col,
            )
            shown.add(name)
    fig.update_xaxes(
        type="log",
        tickvals=widths,
        ticktext=[str(w) for w in widths],
        title="width (channels of the first block)",
        row=1,
        col=col,
    )


def _compared(r: Mapping[str, Any]) -> tuple[float | None, float | None]:
    """The accuracy a row compares with the paper (``reproduce.COMPARED``: the best epoch's mean ± std, as the
    released scripts report), the final epoch's where a row has no best."""
    if r.get("best_mean") is not None:
        return r["best_mean"], r.get("best_std")
    return r.get("mean"), r.get("std")


def _bars(fig: go.Figure, rs: list, col: int, shown: set) -> None:
    """One bar per neuron (ours, mean ± std) in each (arch, T) group; a diamond at the paper's cell."""
    groups = sorted({(r["arch"], r["width"], r["num_steps"]) for r in rs}, key=lambda k: (k[0], k[1] or 0, k[2]))
    xs = {g: g[0] + (f" w{g[1]}" if g[1] else "") + f" · T={g[2]}" for g in groups}
    for neuron in dict.fromkeys(r["neuron"] for r in rs):
        mine = [r for r in rs if r["neuron"] == neuron]
        label, color = _style(neuron)
        if any(r.get("ours") for r in mine) and mine[0]["table"] != "capacity":
            label += " (ours)"
        acc = [_compared(r) for r in mine]
        fig.add_bar(
            x=[xs[(r["arch"], r["width"], r["num_steps"])] for r in mine],
            y=[m for m, _ in acc],
            error_y=dict(type="data", array=[s or 0.0 for _, s in acc]),
            marker_color=color,
            name=label,
            legendgroup=neuron,
            showlegend=neuron not in shown,
            offsetgroup=neuron,
            text=[f"{m:.1f}" if m is not None else "" for m, _ in acc],
            textposition="outside",
            cliponaxis=False,
            row=1,
            col=col,
        )
        shown.add(neuron)
        papers = [r for r in mine if r["paper"] is not None]
        if papers:
            fig.add_scatter(
                x=[xs[(r["arch"], r["width"], r["num_steps"])] for r in papers],
                y=[r["paper"] for r in papers],
                mode="markers",
                offsetgroup=neuron,
                marker=dict(symbol="diamond", size=11, color=color, line=dict(color=COLORS["reference"], width=2)),
                error_y=dict(type="data", array=[r["paper_std"] or 0.0 for r in papers]),
                name="paper (Guo et al. 2024)",
                legendgroup="paper",
                showlegend="paper" not in shown,
                row=1,
                col=col,
            )
            shown.add("paper")
    fig.update_xaxes(title="network · time steps T", automargin=True, row=1, col=col)


def plot_table(rows: Iterable[Mapping[str, Any]] = (), title: str | None = None) -> go.Figure:
    """Reproduction rows as a figure: one panel per (data set, profile), never two data sets in one chart.

    A width sweep (several widths of arch ``small``) is drawn as lines of top-1 against width,
    one per neuron and T. Otherwise one group of bars per (arch, T), one bar per neuron (ours: the
    best epoch's top-1, mean ± sample std over seeds, what a row compares with the paper; the final
    epoch's where a row has no best), and a black-edged diamond at the paper's number where the paper has
    that cell. Each panel title names the data set and the profile.

    Args:
        rows: rows of :func:`tspike_lab.reproduce.aggregate` (default: none, empty axes).
        title: the figure title (default: the tables shown).
    Traces: one per neuron (and T for a sweep), then "paper (Guo et al. 2024)".
    """
    rows = [r for r in rows if _compared(r)[0] is not None or r.get("paper") is not None]
    panels: dict[tuple, list] = {}
    for r in rows:
        panels.setdefault((r["dataset_label"], r["profile"]), []).append(r)
    keys = list(panels) or [("no results", "")]
    fig = make_subplots(
        rows=1,
        cols=len(keys),
        shared_yaxes=True,
        horizontal_spacing=0.08,
        subplot_titles=[
            f"{d} · profile {p}" + ("" if p in ("paper", "") else " (not the paper's protocol)") for d, p in keys
        ],
    )
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
        title = (
            (
                f"{', '.join(tables)}: ours, best-epoch top-1 (as the released scripts report), mean ± sample std "
                f"over seeds" + (", beside the paper" if any(r["paper"] is not None for r in rows) else "")
            )
            if rows
            else "no results"
        )
    return _layout(fig, title, height=460)


def plot_figure2(
    recordings: Mapping[int, Mapping[str, Mapping[str, Any]]] | None = None,
    *,
    label: str | None = None,
    layers: Iterable[int] = (1, 2, 3, 4),
    bins: int = 80,
) -> go.Figure:
    """The paper's Figure 2 layout: membrane-potential histograms of layers 1-4, one row per T.

    Args:
        recordings: ``{T: recording}``, each from :func:`tspike_lab.probes.record` on a network
            trained with that T; layer i is the recording's i-th spiking layer (1-based).
            Default: untrained ``small`` networks at T=1 and T=2 on random input (tests only).
        label: what network and data the panels show (the subtitle), e.g. "small (width 8),
            ternary, profile cpu, CIFAR-10 (JPEG copy) - not the paper's ResNet20".
        layers: which spiking layers (1-based), four as in the paper.
        bins: bins per panel; the histograms are binned in Python (density: counts / (N * bin width)),
            so the figure's size does not grow with N.
    Every panel shares one x range and one set of bins (the paper's point is the comparison across
    layers), and colours the membrane by sign as the series does (cyan u < 0, orange u ≥ 0).
    Traces: one density histogram (bars) per panel, named "T=<t>, layer <i>", then the legend
    entries "u < 0" and "u ≥ 0".
    """
    if recordings is None:
        x = torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(0))
        recordings = {}
        for t in (1, 2):
            torch.manual_seed(0)
            model = build_model("small", neuron="ternary", num_classes=10, num_steps=t, in_channels=1, width=4)
            recordings[t] = probes.record(model.eval(), x)
        label = label or "untrained small network (width 4), random input: the default, not a result"
    label = label or ""
    steps = sorted(recordings)
    layers = list(layers)
    letters = "abcdefghijklmnopqrstuvwxyz"
    titles = [
        f"({letters[i * len(layers) + j]}) layer {li}, T={t}"
        for i, t in enumerate(steps)
        for j, li in enumerate(layers)
    ]
    fig = make_subplots(
        rows=len(steps), cols=len(layers), subplot_titles=titles, horizontal_spacing=0.06, vertical_spacing=0.2
    )
    panels = {}
    for t in steps:
        names = list(recordings[t])
        for li in layers:
            if li - 1 >= len(names):
                raise ValueError(f"layers asks for layer {li} but the T={t} recording has {len(names)} spiking layers")
            panels[(t, li)] = recordings[t][names[li - 1]]
    # one x range for all panels: the 99.9th percentile of |u| over every panel (the tails clip into the end bins)
    lim = max(float(np.quantile(np.abs(_np(e["mem"].flatten())), 0.999)) for e in panels.values())
    lim = max(lim, 1.5 * max(float(e.get("threshold", 0.5)) for e in panels.values()))
    half = max(int(bins) // 2, 1)
    edges = np.linspace(-lim, lim, 2 * half + 1)
    centres, width = (edges[:-1] + edges[1:]) / 2, float(edges[1] - edges[0])
    for i, t in enumerate(steps, start=1):
        for j, li in enumerate(layers, start=1):
            entry = panels[(t, li)]
            counts, _ = np.histogram(np.clip(_np(entry["mem"].flatten()), -lim, lim), edges)
            density = counts / max(counts.sum(), 1) / width
            fig.add_trace(
                go.Bar(
                    x=centres,
                    y=density,
                    width=width,
                    name=f"T={t}, layer {li}",
                    showlegend=False,
                    marker=dict(
                        color=[COLORS["membrane-"] if c < 0 else COLORS["membrane+"] for c in centres],
                        line=dict(width=0),
                    ),
                    hovertemplate="u ≈ %{x:.2f}: density %{y:.3f}<extra>" + f"T={t}, layer {li}</extra>",
                ),
                row=i,
                col=j,
            )
            th = float(entry.get("threshold", 0.5))
            for sign in (-1, 1):
                fig.add_vline(x=sign * th, line_dash="dash", line_color=COLORS["reference"], row=i, col=j)
            fig.update_xaxes(title="membrane potential u (a.u.)", range=[-lim, lim], row=i, col=j)
            fig.update_yaxes(title="density", row=i, col=j)
    for key, text in (("membrane-", "u < 0"), ("membrane+", "u ≥ 0")):
        fig.add_trace(go.Bar(x=[None], y=[None], name=text, marker_color=COLORS[key], showlegend=True), row=1, col=1)
    fig.update_layout(bargap=0)
    return _layout(
        fig,
        f"Figure 2 layout: membrane potentials of layers {layers[0]}-{layers[-1]} (dashed: ±threshold)",
        height=280 * len(steps) + 60,
        subtitle=label,
    )
