"""Figures of notebooks 03-04: training curves, firing rates, amplitudes, membrane distributions."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from .. import info, probes
from ..models.layers import ConvBN
from ..reparam import consumer_kinds
from .inputs import _demo_model, _demo_recording
from .style import _PALETTE, _UNIT, COLORS, _color, _layout, _name, _np, _signed_histogram, _threshold_lines


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
    Traces per run: "<name>" (the legend entry: one per run, for both panels, a line with no
    data), then per seed "<name> train loss" and "<name> test acc"; a neuron's name is shown as
    its registry label ("trainable ternary").
    """
    histories = histories or {}
    fig = make_subplots(
        rows=1, cols=2, horizontal_spacing=0.12, subplot_titles=("training loss (mean over the epoch)", "test accuracy")
    )
    for i, (name, h) in enumerate(histories.items()):
        color, label = _color(name, i), _name(name)
        runs = _runs(h)
        fig.add_trace(
            go.Scatter(
                x=[None],
                y=[None],
                name=label,
                mode="lines+markers",
                line=dict(color=color, width=2),
                legendgroup=name,
                showlegend=True,
                hoverinfo="skip",
            ),
            1,
            2,
        )
        for k, rows in enumerate(runs):
            ep = [r["epoch"] for r in rows]
            tag = label if len(runs) == 1 else f"{label}, run {k + 1}"
            line = dict(color=color, width=2 if len(runs) == 1 else 1.5)
            fig.add_trace(
                go.Scatter(
                    x=ep,
                    y=[r.get("train_loss") for r in rows],
                    name=f"{label} train loss",
                    line=line,
                    legendgroup=name,
                    showlegend=False,
                    mode="lines+markers",
                    hovertemplate=f"{tag}<br>epoch %{{x}}: loss %{{y:.3f}}<extra></extra>",
                ),
                1,
                1,
            )
            fig.add_trace(
                go.Scatter(
                    x=ep,
                    y=[r.get("test_acc") for r in rows],
                    name=f"{label} test acc",
                    line=line,
                    legendgroup=name,
                    showlegend=False,
                    mode="lines+markers",
                    hovertemplate=f"{tag}<br>epoch %{{x}}: %{{y:.1%}}<extra></extra>",
                ),
                1,
                2,
            )
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
        model, x = _demo_model()
        rates = {"untrained": probes.firing_rates(model, x)}
    fig = go.Figure()
    for i, (name, r) in enumerate(rates.items()):
        if hasattr(r, "epochs") or isinstance(r, list):
            r = _last_with(_epochs(r), "firing_rates") or {}
        r = {k: (v["rate"] if isinstance(v, dict) else v) for k, v in r.items()}
        fig.add_bar(
            x=list(r),
            y=list(r.values()),
            name=_name(name),
            marker_color=_color(name, i),
            text=[f"{v:.2f}" for v in r.values()],
            textposition="outside",
        )
    fig.update_layout(barmode="group")
    fig.update_xaxes(title="spiking layer (forward order)")
    fig.update_yaxes(title="firing rate (nonzero spikes per neuron per step)", rangemode="tozero")
    return _layout(fig, "Firing rate per spiking layer (test set)")


def plot_amplitudes(
    amplitudes: Mapping[str, Any] | None = None, consumers: Mapping[str, list[str]] | None = None, initial: float = 1.0
) -> go.Figure:
    """Learned amplitude a per layer (per run), against its initial value.

    Args:
        amplitudes: ``{run: {layer: a}}`` (a float or a per-channel list, drawn as its mean),
            ``{run: History}`` (its last ``amplitudes``), or ``{run: [{layer: a}, ...]}`` (one dict per
            seed: the bar is the mean over seeds, the error bar one standard deviation).
            Default: an untrained network's. Runs that share a colour (two optimizers of one
            neuron, "trainable ternary, SGD" and "trainable ternary, AdamW") differ by hatching.
        consumers: ``{layer: [labels]}`` from :func:`tspike_lab.reparam.consumer_kinds`; the x
            labels then say what reads each layer (e.g. "BatchNorm", "residual", "classifier").
        initial: the initial a (1.0), drawn as a dashed line.
    Traces: one bar trace per run, values written inside the bars.
    """
    if amplitudes is None:
        model, _ = _demo_model()
        amplitudes = {"untrained": probes.amplitudes(model)}
        consumers = consumers or consumer_kinds(model)
    fig = go.Figure()
    uses: dict[str, int] = {}  # colour -> runs drawn in it so far
    for i, (name, amps) in enumerate(amplitudes.items()):
        spread = None
        seeds = (
            isinstance(amps, (list, tuple))
            and amps
            and all(isinstance(r, Mapping) and "amplitudes" not in r and "epoch" not in r for r in amps)
        )
        if seeds:
            layers = list(amps[0])
            per_seed = np.array([[float(np.mean(r[k])) for k in layers] for r in amps])  # [seeds, layers]
            vals = list(per_seed.mean(0))
            spread = list(per_seed.std(0, ddof=1)) if len(amps) > 1 else None
        else:
            if hasattr(amps, "epochs") or isinstance(amps, list):
                amps = _last_with(_epochs(amps), "amplitudes") or {}
            layers = list(amps)
            vals = [float(np.mean(v)) for v in amps.values()]
        x = [f"{k}<br>→ {' + '.join(consumers[k])}" if consumers and k in consumers else k for k in layers]
        color = _color(name, i)
        pattern = ("", "/", "x", ".")[uses.get(color, 0) % 4]
        uses[color] = uses.get(color, 0) + 1
        fig.add_bar(
            x=x,
            y=vals,
            name=_name(name),
            marker=dict(color=color, pattern=dict(shape=pattern)),
            text=[f"{v:.3f}" for v in vals],
            textposition="inside",
            insidetextanchor="middle",
            textangle=0,
            error_y=dict(type="data", array=spread, visible=spread is not None, color=COLORS["reference"]),
        )
    fig.add_hline(
        y=initial,
        line_dash="dash",
        line_color=COLORS["reference"],
        line_width=1,
        annotation_text=f"initial a = {initial:g}",
        annotation_position="top left",
    )
    fig.update_layout(barmode="group")
    fig.update_xaxes(title="spiking layer → what reads its output")
    fig.update_yaxes(title=f"amplitude a {_UNIT}", rangemode="tozero")
    return _layout(
        fig, "Spike amplitude a per layer", subtitle="under each layer's name: what reads its output", height=420
    )


# --------------------------------------------------------------------------- 04 membranes


def plot_membrane_histogram(
    recording: Mapping[str, dict] | None = None,
    layer: str | None = None,
    *,
    bins: int = 80,
    learned_a: float | None = None,
) -> go.Figure:
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
        fig.add_vline(
            x=best,
            line_color=COLORS["reference"],
            line_dash="dot",
            line_width=2,
            annotation_text=f"MSE-best a = {best:.2f}",
            annotation_position="top right",
        )
    if learned_a is not None:
        fig.add_vline(
            x=float(learned_a),
            line_color=COLORS["trainable_ternary"],
            line_width=3,
            annotation_text=f"learned a = {float(learned_a):.2f}",
            annotation_position="top left",
        )
    fig.update_layout(barmode="overlay")
    fig.update_xaxes(title=f"membrane potential u {_UNIT}")
    fig.update_yaxes(title="probability density")
    return _layout(
        fig,
        f"Membrane potential of {layer}",
        subtitle=f"std {float(mem.std()):.3f}; |u| ≥ threshold {th:.2f} for {100 * frac:.1f}% of "
        f"neuron-steps (dashed: ±threshold)",
    )


def plot_membrane_depth(
    recording: Mapping[str, dict] | None = None, learned: Mapping[str, float] | None = None
) -> go.Figure:
    """How membrane distributions change along depth: one box per layer, and per-layer statistics.

    Left: boxes of each layer's membrane (forward order; dashed: ±threshold of the first layer).
    Right: std of u and the MSE-optimal amplitude ``info.best_amplitude`` per layer, and the
    learned a if given: all three in the unit of u.

    Traces: one box per layer, then "std of u", "MSE-best a" (and "learned a").
    """
    recording = _demo_recording() if recording is None else recording
    names = list(recording)
    fig = make_subplots(
        rows=1,
        cols=2,
        column_widths=[0.58, 0.42],
        horizontal_spacing=0.12,
        subplot_titles=("membrane potential per layer", "per-layer statistics"),
    )
    stds, bests = [], []
    g = torch.Generator().manual_seed(0)
    for name in names:
        mem = recording[name]["mem"].detach().float().flatten()
        th = float(recording[name].get("threshold", 0.5))
        stds.append(float(mem.std()))
        bests.append(float(info.best_amplitude(mem, th)))
        show = mem[torch.randperm(mem.numel(), generator=g)[:5000]] if mem.numel() > 5000 else mem
        fig.add_trace(
            go.Box(y=_np(show), name=name, marker_color=COLORS["real"], boxpoints=False, showlegend=False), 1, 1
        )
    fig.add_trace(
        go.Scatter(x=names, y=stds, name="std of u", mode="lines+markers", line=dict(color=COLORS["real"])), 1, 2
    )
    fig.add_trace(
        go.Scatter(
            x=names, y=bests, name="MSE-best a", mode="lines+markers", line=dict(color=COLORS["reference"], dash="dot")
        ),
        1,
        2,
    )
    if learned:
        fig.add_trace(
            go.Scatter(
                x=names,
                y=[float(np.mean(learned[n])) if n in learned else None for n in names],
                name="learned a",
                mode="lines+markers",
                line=dict(color=COLORS["trainable_ternary"]),
            ),
            1,
            2,
        )
    th0 = float(recording[names[0]].get("threshold", 0.5)) if names else 0.5
    _threshold_lines(fig, th0, vertical=False, row=1, col=1)
    fig.update_xaxes(title="spiking layer (forward order)")
    fig.update_yaxes(title=f"membrane potential u {_UNIT}", row=1, col=1)
    fig.update_yaxes(title=f"value, in the unit of u {_UNIT}", rangemode="tozero", row=1, col=2)
    return _layout(fig, "Membrane potentials along depth", height=460)


def plot_bn_invariance(
    scales: Iterable[float] = (0.25, 0.5, 1.0, 2.0, 4.0), *, channels: int = 8, seed: int = 0
) -> go.Figure:
    """A conv + training-mode BatchNorm ignores a positive scale a of its spike input.

    For ternary spikes ``b`` and each ``a``: relative change of ``conv(a·b)`` and of
    ``BN(conv(a·b))`` against a = 1. The conv output scales with a; the BN output does
    not (up to BN's eps), so a loss depends on such an a only through eps.

    Traces: "conv output", "BN output (training mode)".
    """
    scales = [float(s) for s in scales]
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        cb = ConvBN(channels, channels, 3, 1, 1).double().train()
    b = (torch.randint(0, 3, (16, channels, 8, 8), generator=g) - 1).double()
    with torch.no_grad():
        conv1, bn1 = cb.conv(b), cb.bn(cb.conv(b))
        rows = [
            ((cb.conv(s * b) - conv1).norm() / conv1.norm(), (cb.bn(cb.conv(s * b)) - bn1).norm() / bn1.norm())
            for s in scales
        ]
    keep = [i for i, s in enumerate(scales) if s != 1.0]  # a = 1 is the reference: change 0
    xs = [scales[i] for i in keep]
    fig = go.Figure()
    fig.add_scatter(
        x=xs,
        y=[float(rows[i][0]) for i in keep],
        name="conv output",
        mode="lines+markers",
        line=dict(color=_PALETTE[0]),
    )
    fig.add_scatter(
        x=xs,
        y=[float(rows[i][1]) for i in keep],
        name="BN output (training mode)",
        mode="lines+markers",
        line=dict(color=_PALETTE[1]),
    )
    fig.update_xaxes(title="amplitude a (input = a·b)", type="log", tickvals=xs, ticktext=[f"{s:g}" for s in xs])
    fig.update_yaxes(title="relative change against a = 1 (‖Δ‖ / ‖·‖)", type="log", exponentformat="power", dtick=1)
    return _layout(fig, "BatchNorm after a convolution normalizes away the spike amplitude")
