"""ipywidgets panels built from :mod:`tspike_lab.viz`: controls above a plotly figure.

Import this module only where widgets are wanted (``from tspike_lab import widgets``);
ipywidgets and IPython are imported when a panel is built, not at package import.

Every panel is an ``ipywidgets.VBox`` with three extra attributes:

- ``controls``: ``{name: widget}``, the sliders / dropdowns (set ``.value`` to drive it);
- ``figure``: the ``go.Figure`` currently drawn, rebuilt by the ``viz.plot_*`` function on
  every value change;
- ``output``: the ``ipywidgets.Output`` that shows it. Its ``outputs`` hold the figure as
  plotly's JupyterLab mimetype (``application/vnd.plotly.v1+json``), so the figure renders
  without ``go.FigureWidget`` (which needs anywidget with plotly >= 6).
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import plotly.io as pio

from . import energy, surrogate, viz
from .checkpoint import METRICS
from .functional import RESETS
from .results import read_jsonl
from .train import train

__all__ = [
    "PLOTLY_MIMETYPE",
    "figure_output",
    "panel",
    "quantization_panel",
    "teaser_panel",
    "neuron_panel",
    "surrogate_panel",
    "raster_panel",
    "membrane_panel",
    "energy_panel",
    "training_panel",
    "epoch_panel",
    "train_live",
    "results_panel",
]

PLOTLY_MIMETYPE = "application/vnd.plotly.v1+json"


def _ipw():
    # ipywidgets (and IPython below) are imported when a panel is built: the module's docstring says why
    import ipywidgets

    return ipywidgets


def _bundle(fig: go.Figure) -> dict:
    """One ``display_data`` output holding ``fig`` as plotly's mimetype (what JupyterLab renders)."""
    data = json.loads(pio.to_json(fig, validate=False))
    title = fig.layout.title.text or "plotly figure"
    return {
        "output_type": "display_data",
        "metadata": {},
        "data": {PLOTLY_MIMETYPE: data, "text/plain": f"<plotly figure: {title}>"},
    }


def figure_output(fig: go.Figure | None = None):
    """An ``ipywidgets.Output`` showing ``fig``; ``show(fig)`` on it replaces the figure in place."""
    out = _ipw().Output()

    def show(new: go.Figure) -> None:
        out.outputs = (_bundle(new),)

    out.show = show
    if fig is not None:
        show(fig)
    return out


def panel(
    controls: Mapping[str, Any], render: Callable[..., go.Figure], *, columns: int = 3, description: str | None = None
):
    """Controls above a figure that ``render(**values)`` redraws whenever a control's value changes.

    Args:
        controls: ``{keyword: ipywidgets control}``; ``render`` receives each ``.value`` by keyword.
        render: returns a ``go.Figure``, typically a ``viz.plot_*`` call.
        columns: controls per row. description: optional HTML line above the controls.
    Returns:
        ``ipywidgets.VBox`` with ``.controls``, ``.figure``, ``.output`` and ``.refresh()``.
    """
    w = _ipw()
    controls = dict(controls)
    out = figure_output()
    items = list(controls.values())
    rows = [w.HBox(items[i : i + columns]) for i in range(0, len(items), columns)]
    head = [w.HTML(description)] if description else []
    box = w.VBox(head + rows + [out])
    box.controls = controls
    box.output = out
    box.figure = None

    def refresh(*_):
        fig = render(**{name: c.value for name, c in controls.items()})
        box.figure = fig
        out.show(fig)
        return fig

    for c in controls.values():
        c.observe(refresh, names="value")
    box.refresh = refresh
    refresh()
    return box


def _style():
    return {"description_width": "initial"}


def _layout():
    return _ipw().Layout(width="330px")


def _float(description, value, lo, hi, step):
    return _ipw().FloatSlider(
        value=value,
        min=lo,
        max=hi,
        step=step,
        description=description,
        continuous_update=False,
        style=_style(),
        layout=_layout(),
    )


def _int(description, value, lo, hi, step=1):
    return _ipw().IntSlider(
        value=value,
        min=lo,
        max=hi,
        step=step,
        description=description,
        continuous_update=False,
        style=_style(),
        layout=_layout(),
    )


def _dropdown(description, options, value=None):
    options = list(options)
    return _ipw().Dropdown(
        options=options,
        value=options[0] if value is None else value,
        description=description,
        style=_style(),
        layout=_layout(),
    )


# --------------------------------------------------------------------------- 01


def quantization_panel(u=None, *, threshold: float = 0.5):
    """Sliders for the membrane distribution, the threshold and a -> ``viz.plot_quantization``.

    Args:
        u: membrane samples to quantize (e.g. a recorded layer). None: a synthetic
            distribution chosen with the ``dist``, ``loc`` (its mean) and ``scale`` (its std)
            controls (``viz.synthetic_membrane``).
        threshold: initial threshold.
    Controls: loc, scale, dist (synthetic only), threshold, a, best_a (checkbox: use
    ``info.best_amplitude`` instead of the slider's a).
    """
    w = _ipw()
    controls: dict[str, Any] = {}
    if u is None:
        controls["loc"] = _float("mean of u", 0.0, -1.0, 1.0, 0.05)
        controls["scale"] = _float("std of u", 0.5, 0.1, 2.0, 0.05)
        controls["dist"] = _dropdown("distribution", viz.DISTRIBUTIONS)
    controls["threshold"] = _float("threshold", threshold, 0.05, 1.5, 0.05)
    controls["a"] = _float("a", 1.0, 0.1, 3.0, 0.05)
    controls["best_a"] = w.Checkbox(value=False, description="a = MSE-best", style=_style())

    def render(threshold, a, best_a, dist=None, loc=None, scale=None):
        samples = viz.synthetic_membrane(dist, loc=loc, scale=scale) if u is None else u
        return viz.plot_quantization(samples, threshold=threshold, a=None if best_a else a)

    return panel(controls, render)


def teaser_panel(recording: Mapping[str, dict] | None = None):
    """Pick a layer, a step, a sample and a channel of a recording -> ``viz.plot_teaser``.

    Args:
        recording: from ``probes.record`` (default: an untrained ``small`` network).
    """
    recording = viz._demo_recording() if recording is None else recording
    names = list(recording)
    shape = recording[names[0]]["mem"].shape  # [T, B, C, H, W]
    controls = {
        "layer": _dropdown("layer", names),
        "step": _int("step t", 0, 0, shape[0] - 1),
        "sample": _int("sample", 0, 0, shape[1] - 1),
        "channel": _int("channel", 0, 0, min(e["mem"].shape[2] for e in recording.values()) - 1),
    }

    def render(layer, step, sample, channel):
        entry = recording[layer]
        a = entry["amplitude"]
        a = float(a.mean()) if hasattr(a, "mean") else float(a)
        return viz.plot_teaser(
            entry["mem"], threshold=entry.get("threshold", 0.5), a=a, step=step, sample=sample, channel=channel
        )

    return panel(controls, render, columns=4)


def raster_panel(
    recordings: Mapping[str, Mapping[str, dict]] | None = None, *, images: int = 4, max_neurons: int = 256
):
    """Pick a layer, the images and a channel of recorded spikes -> ``viz.plot_raster``, one panel per recording.

    Args:
        recordings: ``{panel title: probes.record output}`` recorded on the same inputs, e.g. one
            network before and after training (a single recording is one panel). Each layer's
            ``"spikes"`` is ``[T, B, ...]``. Default: an untrained ``small`` network.
        images: how many consecutive samples are drawn side by side, from the chosen one.
        max_neurons: the most neurons drawn per panel.
    Controls: layer, image (the first sample drawn), channel (one channel of a ``[T, B, C, H, W]``
    layer, 0 at first, or "all"; offered when some layer has channels).
    """
    if recordings is None:
        recordings = {"untrained": viz._demo_recording()}
    elif recordings and all(isinstance(v, Mapping) and "spikes" in v for v in recordings.values()):
        recordings = {"": recordings}  # one recording: {layer: entry}
    first = next(iter(recordings.values()))
    names = list(first)
    if not names:
        raise ValueError("recordings hold no spiking layer")
    num_samples = min(e["spikes"].shape[1] for rec in recordings.values() for e in rec.values())
    images = max(1, min(int(images), num_samples))
    channels = [e["spikes"].shape[2] for e in first.values() if e["spikes"].dim() == 5]
    controls = {"layer": _dropdown("layer", names), "image": _int("first image", 0, 0, num_samples - images)}
    if channels:
        controls["channel"] = _dropdown("channel", ["all", *range(min(channels))], value=0)

    def render(layer, image, channel="all"):
        chosen = {}
        for title, rec in recordings.items():
            s = rec[layer]["spikes"][:, image : image + images]  # [T, images, ...]
            if channel != "all" and s.dim() == 5:
                s = s[:, :, channel]
            chosen[title] = s
        where = "" if channel == "all" or first[layer]["spikes"].dim() != 5 else f", channel {channel}"
        return viz.plot_raster(
            chosen,
            max_neurons=max_neurons,
            sample_labels=[f"image {i}" for i in range(image, image + images)],
            title=f"Spikes of {layer}{where}, test images {image}-{image + images - 1}",
        )

    return panel(controls, render)


# --------------------------------------------------------------------------- 02


def neuron_panel():
    """Shape an input current and the neuron's parameters -> ``viz.plot_neuron``.

    Controls: amplitude, offset, period, noise, shape (of the current), beta, threshold,
    a, reset_mechanism.
    """
    controls = {
        "amplitude": _float("current amplitude", 0.45, 0.0, 1.5, 0.05),
        "offset": _float("offset", 0.0, -0.5, 0.5, 0.05),
        "period": _int("period", 16, 4, 40),
        "noise": _float("noise", 0.0, 0.0, 0.5, 0.05),
        "shape": _dropdown("current", viz.CURRENTS, "sine"),
        "beta": _float("beta (decay)", 0.25, 0.0, 1.0, 0.05),
        "threshold": _float("threshold", 0.5, 0.1, 1.5, 0.05),
        "a": _float("a (trainable)", 1.5, 0.1, 3.0, 0.1),
        "reset_mechanism": _dropdown("reset", RESETS),
    }

    def render(amplitude, offset, period, noise, shape, beta, threshold, a, reset_mechanism):
        x = viz.input_current(shape, amplitude=amplitude, offset=offset, period=period, noise=noise)
        return viz.plot_neuron(x, beta=beta, threshold=threshold, a=a, reset_mechanism=reset_mechanism)

    return panel(controls, render)


def surrogate_panel():
    """Threshold, kind and each surrogate's width -> ``viz.plot_surrogates``."""
    controls = {
        "threshold": _float("threshold", 0.5, 0.1, 1.5, 0.05),
        "ste_width": _float("STE width (x th)", 2.0, 0.5, 4.0, 0.25),
        "triangle_width": _float("triangle width", 0.5, 0.1, 2.0, 0.05),
        "atan_alpha": _float("atan alpha", 2.0, 0.5, 8.0, 0.5),
        "sigmoid_slope": _float("sigmoid slope", 5.0, 1.0, 20.0, 1.0),
        "kind": _dropdown("spike", ("ternary", "binary")),
    }

    def render(threshold, ste_width, triangle_width, atan_alpha, sigmoid_slope, kind):
        sgs = {
            "ste": surrogate.STE(ste_width),
            "triangle": surrogate.Triangle(triangle_width),
            "atan": surrogate.ATan(atan_alpha),
            "sigmoid": surrogate.Sigmoid(sigmoid_slope),
        }
        return viz.plot_surrogates(sgs, threshold=threshold, kind=kind)

    return panel(controls, render)


# --------------------------------------------------------------------------- 04


def membrane_panel(recording: Mapping[str, dict] | None = None, learned: Mapping[str, float] | None = None):
    """Choose a layer -> ``viz.plot_membrane_histogram`` (with its learned a, if given).

    Args:
        recording: from ``probes.record`` (default: an untrained ``small`` network).
        learned: ``{layer: a}`` learned amplitudes (floats or per-channel lists, drawn as means).
    """
    recording = viz._demo_recording() if recording is None else recording
    controls = {"layer": _dropdown("layer", list(recording)), "bins": _int("bins", 80, 10, 200, 10)}

    def render(layer, bins):
        a = None
        if learned and layer in learned:
            v = learned[layer]
            a = float(sum(v) / len(v)) if isinstance(v, (list, tuple)) else float(v)
        return viz.plot_membrane_histogram(recording, layer, bins=bins, learned_a=a)

    return panel(controls, render, columns=2)


# --------------------------------------------------------------------------- 03


def training_panel(histories: Mapping[str, Any] | None = None):
    """A figure of training curves (``viz.plot_training``) that :func:`train_live` updates.

    Returns an ``ipywidgets.VBox`` with ``.figure``, ``.output`` and ``.update(histories)``.
    """
    w = _ipw()
    out = figure_output()
    status = w.HTML("")
    box = w.VBox([status, out])
    box.output, box.status, box.controls = out, status, {}

    def update(hist: Mapping[str, Any], message: str = "") -> go.Figure:
        fig = viz.plot_training(hist)
        box.figure = fig
        out.show(fig)
        status.value = message
        return fig

    box.update = update
    update(histories or {})
    return box


def epoch_panel(histories: Mapping[str, Any], consumers: Mapping[str, list[str]] | None = None):
    """Scrub through training: an epoch slider -> ``viz.plot_amplitudes`` or ``viz.plot_firing_rates``.

    Args:
        histories: ``{run name: History or list of per-epoch dicts}`` (``train.train`` rows).
        consumers: ``{layer: [labels]}`` from ``reparam.consumer_kinds``, shown under each layer.
    Controls: epoch (1..the longest run; starts at 1, to scrub forward), quantity
    ("amplitudes" or "firing rates").
    """
    runs = {name: viz._epochs(h) for name, h in histories.items()}
    last = max((len(rows) for rows in runs.values()), default=1)
    controls = {
        "epoch": _int("epoch", 1, 1, max(last, 1)),
        "quantity": _dropdown("show", ("amplitudes", "firing rates")),
    }

    def render(epoch, quantity):
        upto = {name: rows[:epoch] for name, rows in runs.items() if rows[:epoch]}
        if quantity == "amplitudes":
            fig = viz.plot_amplitudes(upto, consumers)
        else:
            fig = viz.plot_firing_rates(upto)
        fig.update_layout(title_text=f"{fig.layout.title.text}, after epoch {epoch}")  # keeps the subtitle
        return fig

    return panel(controls, render, columns=2)


def train_live(configs: Mapping[str, Any], monitor=None, *, poll_s: float = 0.2, display: bool = True) -> dict:
    """Train each ``TrainConfig`` in turn, redrawing the training curves after every epoch.

    ``train.train`` has no per-epoch callback, so each run trains in a worker thread while
    this (the kernel's main) thread reads the run's ``metrics.jsonl`` every ``poll_s``
    seconds and redraws ``monitor``. Runs without ``out_dir`` use a temporary folder,
    deleted afterwards (their ``History.run_dir`` is then None). tqdm progress is turned off:
    the figure is the progress.

    Args:
        configs: ``{run name: TrainConfig}``, trained in this order.
        monitor: a :func:`training_panel` (default: a new one, displayed if ``display``).
    Returns:
        ``{run name: History}``.
    Raises:
        whatever ``train`` raised, after the worker thread ended.
    """
    if monitor is None:
        monitor = training_panel()
        if display:
            from IPython.display import display as _display

            _display(monitor)
    histories: dict[str, Any] = {}
    for name, config in configs.items():
        tmp = tempfile.TemporaryDirectory(prefix="tspike-live-") if config.out_dir is None else None
        cfg = dataclasses.replace(config, out_dir=tmp.name if tmp else config.out_dir, progress=False)
        metrics = Path(cfg.out_dir) / METRICS
        result: dict[str, Any] = {}

        def work(cfg=cfg, result=result):
            try:
                result["history"] = train(cfg)
            except BaseException as exc:  # re-raised in the main thread
                result["error"] = exc

        worker = threading.Thread(target=work, name=f"tspike-train-{name}", daemon=True)
        t0, seen = time.perf_counter(), -1
        worker.start()
        try:
            while worker.is_alive():
                worker.join(poll_s)
                rows = read_jsonl(metrics) if metrics.exists() else []
                if len(rows) != seen:
                    seen = len(rows)
                    monitor.update(
                        {**histories, name: rows},
                        f"training <b>{name}</b>: epoch {seen}/{cfg.epochs}, {time.perf_counter() - t0:.1f} s",
                    )
            if "error" in result:
                raise result["error"]
            history = result["history"]
            if tmp is not None:
                history.run_dir = None
            histories[name] = history
        finally:
            if tmp is not None:
                tmp.cleanup()
        monitor.update(histories, f"done: {', '.join(histories)}")
    return histories


# --------------------------------------------------------------------------- 05


def energy_panel(counts=None):
    """Energy per MAC and per accumulate, and the stem convention -> ``viz.plot_energy``.

    Args:
        counts: an ``energy.OpCount`` or ``{name: OpCount}`` (default: an untrained network's).
            The operation counts stay; only the energy figures change (45 nm defaults:
            4.6 pJ per MAC, 0.9 pJ per accumulate).
    """
    if counts is None:
        model, x = viz._demo_model("ternary")
        counts = energy.count_ops(model, x)
    single = not isinstance(counts, Mapping)
    named = {"SNN": counts} if single else dict(counts)
    controls = {
        "e_mac_pj": _float("pJ per MAC", energy.E_MAC_PJ, 0.1, 10.0, 0.1),
        "e_ac_pj": _float("pJ per accumulate", energy.E_AC_PJ, 0.05, 10.0, 0.05),
        "convention": _dropdown("stem counted", energy.CONVENTIONS),
    }

    def render(e_mac_pj, e_ac_pj, convention):
        priced = {k: dataclasses.replace(c, e_mac_pj=e_mac_pj, e_ac_pj=e_ac_pj) for k, c in named.items()}
        return viz.plot_energy(priced["SNN"] if single else priced, convention=convention)

    return panel(controls, render)


# --------------------------------------------------------------------------- 06


def results_panel(rows, *, filters=("table", "dataset", "arch", "num_steps")):
    """Filter reproduction rows by table, dataset, arch and T -> ``viz.plot_table``.

    Args:
        rows: rows of ``tspike_lab.reproduce.aggregate``.
        filters: keys offered as dropdowns ("all" keeps every value); a key with fewer than
            two values among the rows gets no dropdown.
    """
    rows = list(rows)
    controls = {}
    for key in filters:
        values = sorted({str(r[key]) for r in rows if r.get(key) is not None})
        if len(values) > 1:
            controls[key] = _dropdown(key, ["all", *values])

    def render(**chosen):
        keep = [r for r in rows if all(v == "all" or str(r.get(k)) == v for k, v in chosen.items())]
        return viz.plot_table(keep)

    return panel(controls, render, columns=4)
