"""viz: every plot_* builds a plotly figure from library numbers, with axis titles, a legend or
colour bar where colour means something, and the series' one colour per meaning.

The notebooks show only their own data, so this file is where each plot_*'s defaults run.
"""

import math
import re
import subprocess
import sys
from pathlib import Path

import plotly.graph_objects as go
import pytest
import torch

from tspike_lab import build_model, functional, info, viz
from tspike_lab.models import NEURONS
from tspike_lab.reparam import consumer_kinds

# trace names every plot_* draws with its default arguments
DEFAULT_TRACES = {
    "plot_capacity": ["capacity (upper bound)", "capacity, float32 for scale"],
    "plot_quantization": [
        "u < 0",
        "u ≥ 0",
        "identity",
        "binary {0, 1}",
        "ternary {-1, 0, 1}",
        None,
        "MSE",
        "entropy (bits/neuron)",
        "bound: log2(#values)",
    ],
    "plot_teaser": [
        "membrane u",
        "binary spikes",
        "ternary spikes",
        "spike +1 (u ≥ θ)",
        "spike −1 (u ≤ −θ, ternary only)",
        "no spike (0)",
    ],
    "plot_neuron": [
        "input x",
        "u binary",
        "u ternary",
        "spikes binary",
        "spikes ternary",
        "spikes trainable ternary (a·b)",
    ],
    "plot_reset": ["u zero reset (paper)", "spikes zero reset (paper)", "u subtract reset", "spikes subtract reset"],
    "plot_surrogates": ["forward b(u)", "ste", "triangle", "atan", "sigmoid"],
    "plot_raster": ["spike +1", "spike −1", "spike +1", "spike −1"],
    "plot_training": [],
    "plot_firing_rates": ["untrained"],
    "plot_amplitudes": ["untrained"],
    "plot_membrane_histogram": ["u < 0", "u ≥ 0"],
    "plot_membrane_depth": [
        "stem_lif",
        "layers.0.lif1",
        "layers.0.lif2",
        "layers.1.lif1",
        "layers.1.lif2",
        "std of u",
        "MSE-best a",
    ],
    "plot_bn_invariance": ["conv output", "BN output (training mode)"],
    "plot_logits_match": ["logits (one per image and class)", "y = x"],
    "plot_spike_values": ["trained (a·b)", "folded (b)"],
    "plot_energy": ["SNN operations", "ANN MACs", "energy (nJ)"],
    "plot_table": [],
    "plot_figure2": [f"T={t}, layer {i}" for t in (1, 2) for i in (1, 2, 3, 4)] + ["u < 0", "u ≥ 0"],
}

ROWS = [
    {"epoch": 1, "train_loss": 2.0, "train_acc": 0.3, "test_acc": 0.4},
    {"epoch": 2, "train_loss": 1.0, "train_acc": 0.6, "test_acc": 0.7},
]


def test_every_plot_function_is_listed_here():
    assert sorted(DEFAULT_TRACES) == sorted(n for n in viz.__all__ if n.startswith("plot_"))


@pytest.fixture(scope="module")
def default_figures():
    return {name: getattr(viz, name)() for name in DEFAULT_TRACES}


@pytest.mark.parametrize("name", sorted(DEFAULT_TRACES))
def test_each_plot_returns_a_figure_with_the_expected_traces_for_default_args(name, monkeypatch):
    monkeypatch.setattr(go.Figure, "show", lambda *a, **k: pytest.fail(f"{name} called .show()"))
    fig = getattr(viz, name)()
    assert isinstance(fig, go.Figure)
    names = [t.name for t in fig.data]
    expected = DEFAULT_TRACES[name]
    assert len(names) == len(expected), names
    assert all(e is None or e == n for e, n in zip(expected, names)), names
    assert fig.layout.title.text
    fig.to_json()  # serializable: what the notebook front end receives


# --------------------------------------------------------------------------- reading a figure


def _axes_used(fig) -> set[str]:
    """Layout names ("xaxis", "yaxis2", ...) of the axes that carry at least one trace."""
    used = set()
    for t in fig.data:
        for ref in (t.xaxis or "x", t.yaxis or "y"):
            used.add(ref[0] + "axis" + ref[1:])
    return used


def _legend_entries(fig) -> list[str]:
    """Names plotly lists in the legend: traces not hidden from it (heatmaps and boxes only on request)."""
    shown = [t for t in fig.data if t.showlegend or (t.showlegend is None and t.type not in ("heatmap", "box"))]
    if fig.layout.showlegend is False or (len(shown) < 2 and not any(t.showlegend for t in fig.data)):
        return []
    return [t.name for t in shown]


def _trace_color(t) -> str | None:
    for c in (getattr(getattr(t, "marker", None), "color", None), getattr(getattr(t, "line", None), "color", None)):
        if isinstance(c, str):
            return c
    return None


def _with_data() -> dict[str, go.Figure]:
    """Figures as the notebooks draw them: several runs, models and neurons at once."""
    from tspike_lab import energy, probes

    model, x = viz._demo_model("ternary")
    counts = {"binary": energy.count_ops(viz._demo_model("binary")[0], x), "ternary": energy.count_ops(model, x)}
    rec = viz._demo_recording()
    return {
        "capacity, measured": viz.plot_capacity((4, 2, 2), measured={"binary": 10.0, "ternary": 20.0}),
        "training, three neurons": viz.plot_training(
            {"binary": ROWS, "ternary": ROWS, "trainable_ternary": [ROWS, ROWS]}
        ),
        "firing rates, two runs": viz.plot_firing_rates({"binary": {"a": 0.1}, "ternary": {"a": 0.2}}),
        "amplitudes, two runs": viz.plot_amplitudes({"SGD": {"a": 1.0}, "AdamW": {"a": 2.0}}),
        "membrane histogram, learned a": viz.plot_membrane_histogram(rec, "stem_lif", learned_a=0.8),
        "membrane depth, learned a": viz.plot_membrane_depth(rec, probes.amplitudes(viz._demo_model()[0])),
        "energy, two models": viz.plot_energy(counts),
        "results, two neurons": viz.plot_table(
            [
                dict(_ROW, neuron="ternary", mean=90.0, std=0.5, paper=95.6, paper_std=0.09),
                dict(_ROW, neuron="trainable_ternary", mean=91.0, std=0.4, paper=95.8, paper_std=0.10),
            ]
        ),
    }


@pytest.fixture(scope="module")
def figures(default_figures):
    return {**{f"{k}()": v for k, v in default_figures.items()}, **_with_data()}


def test_every_axis_that_carries_data_has_a_title(figures):
    missing = []
    for name, fig in figures.items():
        for axis in _axes_used(fig):
            layout_axis = fig.layout[axis]
            if layout_axis.visible is False:  # image panels (the teaser's maps): no axis drawn
                continue
            if layout_axis.matches:  # a shared axis: the one it matches (the bottom panel's) carries the title
                layout_axis = fig.layout[axis[0] + "axis" + layout_axis.matches[1:]]
            if not (layout_axis.title and layout_axis.title.text):
                missing.append(f"{name}: {axis}")
    assert not missing, missing


def test_colour_that_means_something_is_explained_by_a_legend_or_a_colour_bar(figures):
    unexplained = []
    for name, fig in figures.items():
        legend = _legend_entries(fig)
        for t in fig.data:
            if t.type == "heatmap" and t.showscale is False and len(legend) < 2:
                unexplained.append(f"{name}: heatmap {t.name!r} has neither a colour bar nor a legend")
            if t.type == "heatmap" and t.showscale is not False and not (t.colorbar.title and t.colorbar.title.text):
                unexplained.append(f"{name}: colour bar of {t.name!r} has no title")
        colors = {_trace_color(t) for t in fig.data if t.type not in ("heatmap", "box")} - {None}
        if len(colors) > 1 and len(legend) < 2:
            unexplained.append(f"{name}: {len(colors)} trace colours, legend {legend}")
    assert not unexplained, unexplained


# --------------------------------------------------------------------------- one colour per meaning


def test_neuron_colours_come_from_the_registry_and_spike_colours_differ_from_them():
    for name, kind in NEURONS.items():
        assert viz.COLORS[name] == kind.color
    assert viz.COLORS["scaled_ternary"] == NEURONS["trainable_ternary"].color  # {-a, 0, a} is that neuron's spike
    neuron_colors = {k.color.lower() for k in NEURONS.values()}
    signs = {viz.COLORS[k].lower() for k in ("spike+1", "spike-1", "spike0", "membrane+", "membrane-")}
    assert not signs & neuron_colors
    assert viz.COLORS["spike+1"] == viz.COLORS["membrane+"] and viz.COLORS["spike-1"] == viz.COLORS["membrane-"]
    assert len({viz.COLORS["spike+1"], viz.COLORS["spike-1"], viz.COLORS["spike0"]}) == 3
    assert not {c.lower() for c in viz._PALETTE} & {c.lower() for c in viz.COLORS.values()}


def test_viz_and_widgets_name_no_colour_outside_colors_and_the_palette():
    package = Path(viz.__file__).parent
    for path in [*sorted(package.glob("*.py")), package.parent / "widgets.py"]:
        src = path.read_text()
        if path.name == "style.py":  # the one place colours are defined
            start = src.index("_POSITIVE, _NEGATIVE, _ZERO =")
            end = src.index("DISTRIBUTIONS = (")
            src = src[:start] + src[end:]
        assert not re.findall(r"#[0-9a-fA-F]{6}\b", src), path.name
        assert not re.findall(r"""color\w*\s*=\s*["'](?!rgba)[a-z]+["']""", src), path.name


def test_a_series_named_for_a_neuron_takes_its_colour_in_every_figure():
    fig = viz.plot_training({"binary": ROWS, "trainable_ternary": ROWS, "SGD": ROWS})
    colors = {t.name: t.line.color for t in fig.data}
    assert colors["binary test acc"] == NEURONS["binary"].color
    assert colors["trainable ternary test acc"] == NEURONS["trainable_ternary"].color  # the registry's label
    assert colors["SGD test acc"] not in {k.color for k in NEURONS.values()}
    fig = viz.plot_firing_rates({"trainable ternary (folded)": {"a": 0.1}, "ternary": {"a": 0.2}})
    assert [t.marker.color for t in fig.data] == [NEURONS["trainable_ternary"].color, NEURONS["ternary"].color]
    fig = viz.plot_neuron()
    traces = {t.name: t for t in fig.data}
    assert traces["u binary"].line.color == viz.COLORS["binary"]
    assert traces["spikes trainable ternary (a·b)"].marker.color == viz.COLORS["trainable_ternary"]


def test_teaser_colours_spike_values_and_membrane_sign_with_the_same_pair():
    fig = viz.plot_teaser(torch.randn(2, 3, 4, 5, 5), threshold=0.5)
    membrane, binary, ternary = fig.data[:3]
    assert (
        membrane.colorscale[0][1] == viz.COLORS["membrane-"] and membrane.colorscale[-1][1] == viz.COLORS["membrane+"]
    )
    assert binary.colorscale[0][1] == viz.COLORS["spike0"] and binary.colorscale[-1][1] == viz.COLORS["spike+1"]
    assert ternary.colorscale[0][1] == viz.COLORS["spike-1"] and ternary.colorscale[-1][1] == viz.COLORS["spike+1"]
    swatches = {t.name: t.marker.color for t in fig.data[3:]}
    assert list(swatches.values()) == [viz.COLORS["spike+1"], viz.COLORS["spike-1"], viz.COLORS["spike0"]]


def test_spike_value_figure_colours_each_model_by_the_values_it_emits():
    rec = viz._demo_recording()
    ternary = {layer: {**e, "amplitude": torch.tensor(1.0)} for layer, e in rec.items()}
    scaled = {layer: {**e, "amplitude": torch.tensor(0.7)} for layer, e in rec.items()}
    fig = viz.plot_spike_values({"a·b": scaled, "b": ternary})
    assert [t.marker.color for t in fig.data] == [viz.COLORS["trainable_ternary"], viz.COLORS["ternary"]]


# --------------------------------------------------------------------------- what each figure draws


def test_quantization_figure_draws_the_library_errors_and_entropies():
    u = viz.synthetic_membrane("laplace", scale=0.7, n=5000, seed=3)
    fig = viz.plot_quantization(u, threshold=0.4, a=1.3)
    traces = {t.name: t for t in fig.data}
    mse, ent = traces["MSE"].y, traces["entropy (bits/neuron)"].y
    for i, kind in enumerate(info.QUANT_KINDS):
        a = 1.3 if kind == "scaled_ternary" else 1.0
        assert mse[i] == pytest.approx(float(info.quantization_error(u, kind, 0.4, a)), rel=1e-6)
        q = info.quantize(u, kind, 0.4, a)
        assert ent[i] == pytest.approx(info.entropy_bits(q.reshape(-1, 1, 1)), rel=1e-9)
    assert list(traces["bound: log2(#values)"].y) == pytest.approx([1.0, math.log2(3), math.log2(3)])
    assert "trainable ternary {-a, 0, a}, a=1.30" in traces
    # MSE and bits sit on separate axes
    assert traces["MSE"].yaxis != traces["entropy (bits/neuron)"].yaxis


def test_quantization_histogram_is_a_density_split_at_zero():
    u = viz.synthetic_membrane("gaussian", loc=0.3, scale=0.5, n=4000, seed=1)
    fig = viz.plot_quantization(u, bins=40)
    neg, pos = fig.data[0], fig.data[1]
    assert max(neg.x) < 0 <= min(pos.x)
    width = neg.width
    assert (sum(neg.y) + sum(pos.y)) * width == pytest.approx(1.0)  # a density integrates to one
    assert sum(neg.y) * width == pytest.approx(float((u < 0).float().mean()), abs=1e-6)


def test_quantization_default_amplitude_is_the_mse_best_one():
    u = viz.synthetic_membrane()
    fig = viz.plot_quantization(u, threshold=0.5)
    a = float(info.best_amplitude(u, 0.5))
    assert any(t.name == f"trainable ternary {{-a, 0, a}}, a={a:.2f}" for t in fig.data)


def test_capacity_figure_puts_measured_entropy_next_to_the_bound_on_a_linear_axis():
    fig = viz.plot_capacity((4, 2, 2), measured={"binary": 10.0, "ternary": 20.0})
    bound, measured, scale = fig.data
    assert [bound.name, measured.name, scale.name] == [
        "capacity (upper bound)",
        "measured entropy",
        "capacity, float32 for scale",
    ]
    assert list(bound.y) == pytest.approx([16.0, 16 * math.log2(3)])
    assert list(measured.y) == [10.0, 20.0]
    assert list(scale.y) == pytest.approx([16.0, 16 * math.log2(3), 512.0])
    assert all(fig.layout[axis].type in (None, "linear", "-") for axis in ("yaxis", "yaxis2"))


def test_neuron_figure_draws_the_oracle_membranes_and_spikes():
    x = viz.input_current("pulses", num_steps=30, amplitude=0.8, period=6)
    fig = viz.plot_neuron(x, beta=0.5, threshold=0.4, a=2.0)
    traces = {t.name: t for t in fig.data}
    b, u = functional.oracle_lif_seq(x.reshape(-1, 1).double(), beta=0.5, threshold=0.4, kind="ternary")
    assert list(traces["u ternary"].y) == pytest.approx(u.flatten().tolist())
    nz = b.flatten() != 0
    assert list(traces["spikes ternary"].y) == b.flatten()[nz].tolist()
    assert list(traces["spikes trainable ternary (a·b)"].y) == (2.0 * b.flatten()[nz]).tolist()
    assert -1.0 in traces["spikes ternary"].y


def test_teaser_panels_are_the_membrane_and_its_binary_and_ternary_quantization():
    mem = torch.randn(2, 3, 4, 5, 5)
    fig = viz.plot_teaser(mem, threshold=0.5, a=0.8, step=1, sample=2, channel=3)
    u = mem[1, 2, 3]
    assert torch.allclose(torch.as_tensor(fig.data[0].z), u.double())
    assert torch.equal(torch.as_tensor(fig.data[1].z), info.quantize(u, "binary", 0.5).double())
    assert torch.equal(torch.as_tensor(fig.data[2].z), info.quantize(u, "ternary", 0.5).double())
    assert torch.allclose(torch.as_tensor(fig.data[2].customdata), 0.8 * info.quantize(u, "ternary", 0.5).double())


def test_synthetic_membranes_have_the_requested_mean_and_spread_and_are_seeded():
    for dist in viz.DISTRIBUTIONS:
        u = viz.synthetic_membrane(dist, loc=0.2, scale=0.5, n=50000, seed=1)
        assert float(u.mean()) == pytest.approx(0.2, abs=0.02), dist
        assert float(u.std()) == pytest.approx(0.5, rel=0.03), dist
    assert torch.equal(viz.synthetic_membrane(seed=4), viz.synthetic_membrane(seed=4))
    # the bimodal peaks move with the mean: raising it moves both to the right
    low = viz.synthetic_membrane("bimodal", loc=-0.5, scale=0.4, n=20000)
    high = viz.synthetic_membrane("bimodal", loc=0.5, scale=0.4, n=20000)
    for a, b in ((low[low < -0.5], high[high < 0.5]), (low[low > -0.5], high[high > 0.5])):
        assert float(b.mean() - a.mean()) == pytest.approx(1.0, abs=0.03)
    with pytest.raises(ValueError, match="dist must be one of"):
        viz.synthetic_membrane("cauchy")
    with pytest.raises(ValueError, match="scale must be > 0"):
        viz.synthetic_membrane(scale=0.0)


def test_input_currents_have_the_requested_shape_and_length():
    for shape in viz.CURRENTS:
        x = viz.input_current(shape, num_steps=24, amplitude=0.5, period=8)
        assert x.shape == (24,) and x.dtype == torch.float32
    step = viz.input_current("step", num_steps=16, amplitude=0.5)
    assert step[:4].eq(0).all() and step[4:10].eq(0.5).all() and step[10:].eq(-0.5).all()
    assert float(viz.input_current("sine", num_steps=32, period=16, offset=0.3).mean()) == pytest.approx(0.3, abs=1e-6)
    with pytest.raises(ValueError, match="shape must be one of"):
        viz.input_current("square")


def test_consumer_kinds_names_what_reads_each_spiking_layer():
    # lives in reparam beside fold_plan; tested here with the amplitude figure that shows it
    model = build_model("small", neuron="trainable_ternary", num_classes=10, num_steps=2, in_channels=1, width=4)
    assert consumer_kinds(model) == {
        "stem_lif": ["BatchNorm", "residual"],
        "layers.0.lif1": ["BatchNorm"],
        "layers.0.lif2": ["BatchNorm", "BatchNorm"],
        "layers.1.lif1": ["BatchNorm"],
        "layers.1.lif2": ["classifier"],
    }
    with pytest.raises(ValueError, match="fold_plan"):
        consumer_kinds(torch.nn.Linear(2, 2))


def test_bn_invariance_figure_shows_conv_scaling_and_bn_cancelling():
    fig = viz.plot_bn_invariance((0.5, 1.0, 2.0))
    conv, bn = fig.data
    assert list(conv.x) == [0.5, 2.0]  # a = 1 is the reference
    assert list(conv.y) == pytest.approx([0.5, 1.0], rel=1e-9)  # conv is linear in a
    assert max(bn.y) < 1e-2


def test_training_figure_draws_loss_and_test_accuracy_per_run_and_one_line_per_seed():
    fig = viz.plot_training({"binary": ROWS, "ternary": ROWS})
    assert [t.name for t in fig.data] == [
        "binary",
        "binary train loss",
        "binary test acc",
        "ternary",
        "ternary train loss",
        "ternary test acc",
    ]
    assert list(fig.data[2].y) == [0.4, 0.7]
    # the legend names runs, not panels: one entry per run, for the loss and the accuracy panel alike
    assert [t.name for t in fig.data if t.showlegend] == ["binary", "ternary"]
    seeds = [ROWS, [{**r, "test_acc": r["test_acc"] + 0.1} for r in ROWS]]
    fig = viz.plot_training({"ternary": seeds})
    acc = [t for t in fig.data if t.name == "ternary test acc"]
    assert [list(t.y) for t in acc] == [[0.4, 0.7], pytest.approx([0.5, 0.8])]
    assert [t.name for t in fig.data if t.showlegend] == ["ternary"]  # one legend entry per neuron


def test_amplitude_and_rate_figures_read_histories_and_dicts():
    rows = [{"epoch": 1, "firing_rates": {"a": 0.1, "b": 0.2}, "amplitudes": {"a": 1.0, "b": [2.0, 4.0]}}]
    fig = viz.plot_firing_rates({"run": rows, "dict": {"a": 0.3}})
    assert list(fig.data[0].y) == [0.1, 0.2] and list(fig.data[1].y) == [0.3]
    fig = viz.plot_amplitudes({"run": rows}, consumers={"a": ["classifier"]})
    assert list(fig.data[0].y) == [1.0, 3.0]  # per-channel a drawn as its mean
    assert "classifier" in fig.data[0].x[0]
    assert fig.data[0].textposition == "inside"  # values off the dashed "initial a" line


def test_energy_figure_draws_one_bar_per_layer_and_model_hatched_where_the_input_is_dense():
    from tspike_lab import energy

    model, x = viz._demo_model("ternary")
    counts = energy.count_ops(model, x)
    fig = viz.plot_energy({"ternary": counts})
    ops = fig.data[0]
    assert list(ops.y) == pytest.approx([(r.macs + r.sops) / counts.batch_size for r in counts.layers])
    assert list(ops.marker.pattern.shape) == ["x" if r.macs else "" for r in counts.layers]
    assert ops.marker.color == NEURONS["ternary"].color
    assert fig.layout.yaxis.type == "log" and fig.layout.yaxis.dtick == 1  # powers of ten only


_ROW = dict(
    table="table2",
    dataset="cifar10",
    dataset_label="CIFAR-10",
    arch="resnet19",
    width=None,
    num_steps=2,
    n_seeds=3,
    profile="paper",
    ours=False,
    paper=None,
    paper_std=None,
)


def test_results_figure_draws_ours_beside_the_paper_and_leaves_unknown_cells_empty():
    rows = [
        dict(_ROW, neuron="ternary", mean=90.0, std=0.5, paper=95.6, paper_std=0.09),
        dict(_ROW, neuron="binary", mean=85.0, std=None, n_seeds=1, ours=True),
    ]
    fig = viz.plot_table(rows)
    names = [t.name for t in fig.data]
    assert names == ["ternary", "paper (Guo et al. 2024)", "binary (ours)"]
    ternary, paper, binary = fig.data
    assert list(ternary.y) == [90.0] and list(ternary.error_y.array) == [0.5]
    assert ternary.marker.color == NEURONS["ternary"].color and binary.marker.color == NEURONS["binary"].color
    assert list(paper.y) == [95.6] and list(binary.error_y.array) == [0.0]  # one seed: no spread drawn
    fig = viz.plot_table([rows[0], {**rows[1], "dataset": "cifar100", "dataset_label": "CIFAR-100"}])
    assert len(fig.layout.annotations) == 2  # two data sets, two panels: never one bar chart


def test_the_legend_sits_in_its_own_band_below_the_title_and_above_the_panels():
    fig = viz.plot_quantization()
    height, top = fig.layout.height, fig.layout.margin.t
    legend_top_px = (1 - fig.layout.legend.y) * height
    assert fig.layout.legend.yref == "container"
    assert 40 <= legend_top_px < top - 22  # below title and subtitle, above the plotting area


def test_importing_the_package_viz_and_widgets_does_not_import_ipywidgets():
    code = (
        "import sys, tspike_lab, tspike_lab.viz, tspike_lab.widgets\n"
        "assert 'ipywidgets' not in sys.modules, 'ipywidgets imported eagerly'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# --------------------------------------------------------------------------- rasters


def test_raster_draws_every_spike_once_at_its_step_and_neuron_in_the_colour_of_its_sign():
    spikes = torch.tensor([[1.0, 0.0, -1.0], [0.0, -0.8, 0.8]])  # [T = 2, N = 3]; a·b with a = 0.8 keeps its sign
    fig = viz.plot_raster(spikes)
    plus, minus = fig.data
    assert sorted(zip(plus.x, plus.y)) == [(1, 0), (2, 2)] and sorted(zip(minus.x, minus.y)) == [(1, 2), (2, 1)]
    assert plus.marker.color == viz.COLORS["spike+1"] and minus.marker.color == viz.COLORS["spike-1"]
    assert "2 spikes of +1, 2 of −1" in fig.layout.annotations[0].text


def test_raster_puts_samples_side_by_side_and_panels_on_one_neuron_axis():
    b = torch.zeros(2, 3, 4, 2, 2)  # [T, B, C, H, W]: 16 neurons per sample
    b[1, 2, 3, 1, 1] = -1.0  # step 2 of sample 2, the last neuron
    fig = viz.plot_raster({"before": torch.zeros_like(b), "after": b}, sample_labels=["x", "y", "z"])
    minus = [t for t in fig.data if t.name == "spike −1"]
    assert list(minus[0].x) == [None] and list(minus[1].x) == [2 * 3 + 2] and list(minus[1].y) == [15]
    assert [t.showlegend for t in fig.data] == [True, True, False, False]  # one legend entry per sign
    texts = [a.text for a in fig.layout.annotations]
    assert {"x", "y", "z"} <= set(texts) and fig.layout.yaxis.title.text == "neuron"


def test_raster_of_the_default_population_shows_negative_spikes_only_for_the_ternary_neuron():
    current = viz.population_current(8, 40)
    assert current.shape == (40, 8) and float(current.min()) < -0.4 < 0.4 < float(current.max())
    fig = viz.plot_raster()
    binary_minus, ternary_minus = [t for t in fig.data if t.name == "spike −1"]
    assert list(binary_minus.x) == [None] and None not in ternary_minus.x


def test_raster_refuses_panels_of_different_shapes_and_says_which():
    with pytest.raises(ValueError, match="same samples and steps"):
        viz.plot_raster({"a": torch.zeros(2, 3), "b": torch.zeros(4, 3)})
    with pytest.raises(ValueError, match="max_neurons"):
        viz.plot_raster(torch.zeros(2, 3), max_neurons=0)


def test_amplitude_figure_hatches_runs_of_one_colour_and_draws_the_spread_over_seeds():
    fig = viz.plot_amplitudes({"trainable ternary, SGD": {"a": 1.0}, "trainable ternary, AdamW": {"a": 2.0}})
    sgd, adamw = fig.data
    assert sgd.marker.color == adamw.marker.color == NEURONS["trainable_ternary"].color  # one neuron, one colour
    assert sgd.marker.pattern.shape == "" and adamw.marker.pattern.shape == "/"
    fig = viz.plot_amplitudes({"T=1": [{"a": 1.0, "b": 2.0}, {"a": 3.0, "b": 2.0}]})
    assert list(fig.data[0].y) == [2.0, 2.0] and list(fig.data[0].error_y.array) == pytest.approx([2**0.5, 0.0])


def test_figure2_panels_share_one_x_range_and_colour_the_membrane_by_sign():
    rec = viz._demo_recording()
    wide = {k: {**e, "mem": e["mem"] * (4.0 if k == "layers.1.lif1" else 1.0)} for k, e in rec.items()}
    fig = viz.plot_figure2({1: wide, 2: wide})
    ranges = {tuple(fig.layout[a].range) for a in fig.layout if a.startswith("xaxis")}
    assert len(ranges) == 1  # the narrow layers are drawn on the wide layer's range
    bars = [t for t in fig.data if t.name == "T=1, layer 1"][0]
    assert {c for x, c in zip(bars.x, bars.marker.color) if x < 0} == {viz.COLORS["membrane-"]}
    assert {c for x, c in zip(bars.x, bars.marker.color) if x > 0} == {viz.COLORS["membrane+"]}


def test_teaser_titles_say_the_bits_are_counted_over_the_whole_map_not_the_channel_drawn():
    fig = viz.plot_teaser(torch.randn(2, 3, 4, 5, 5), threshold=0.5, channel=2)
    texts = [a.text for a in fig.layout.annotations]
    assert texts[0] == "membrane u: channel 2 of 4"
    assert texts[1].startswith("binary reading: ") and texts[1].endswith(" of 100 bits*")  # 4·5·5 neurons
    assert any(t.startswith("* bits:") and "whole 4×5×5 map" in t for t in texts)


def test_quantization_staircase_at_a_equal_to_one_is_dashed_over_the_ternary_one():
    fig = viz.plot_quantization(viz.synthetic_membrane(), threshold=0.5, a=1.0)
    scaled = [t for t in fig.data if t.name and t.name.startswith(f"{NEURONS['trainable_ternary'].label} {{-a, 0, a}}")]
    ternary = [t for t in fig.data if t.name == "ternary {-1, 0, 1}"]
    assert scaled[0].line.dash == "dash" and "(on the ternary one)" in scaled[0].name
    assert ternary[0].line.width > scaled[0].line.width  # the red line shows between the green dashes
