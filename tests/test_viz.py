"""viz: every plot_* builds a plotly figure from library numbers; widgets: panels redraw on change."""
import json
import math
import subprocess
import sys

import plotly.graph_objects as go
import pytest
import torch

from tspike_lab import build_model, functional, info, viz
from tspike_lab.train import TrainConfig

# trace names every plot_* draws with its default arguments
DEFAULT_TRACES = {
    "plot_capacity": ["capacity (upper bound)"],
    "plot_quantization": ["membrane u", "identity", "binary {0, 1}", "ternary {-1, 0, 1}", None, "MSE",
                          "entropy (bits/neuron)"],
    "plot_teaser": ["membrane u", "binary spikes", "ternary spikes"],
    "plot_neuron": ["input x", "u binary", "u ternary", "spikes binary", "spikes ternary",
                    "spikes trainable ternary (a·b)"],
    "plot_reset": ["u zero reset (paper)", "spikes zero reset (paper)", "u subtract reset", "spikes subtract reset"],
    "plot_surrogates": ["forward b(u)", "ste", "triangle", "atan", "sigmoid"],
    "plot_training": [],
    "plot_firing_rates": ["untrained"],
    "plot_amplitudes": ["untrained"],
    "plot_membrane_histogram": ["membrane stem_lif"],
    "plot_membrane_depth": ["stem_lif", "layers.0.lif1", "layers.0.lif2", "layers.1.lif1", "layers.1.lif2",
                            "std of u", "MSE-best a"],
    "plot_bn_invariance": ["conv output", "BN output (training mode)"],
    "plot_logits_match": ["logits", "y = x"],
    "plot_spike_values": ["trained (a·b)", "folded (b)"],
    "plot_energy": ["SNN MACs", "SNN SOPs", "ANN MACs", "energy (µJ)"],
    "plot_results": ["ours (mean ± std over seeds)", "paper (secondary)"],
}


def test_every_plot_function_is_listed_here():
    assert sorted(DEFAULT_TRACES) == sorted(n for n in viz.__all__ if n.startswith("plot_"))


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


def test_quantization_figure_draws_the_library_errors_and_entropies():
    u = viz.synthetic_membrane("laplace", scale=0.7, n=5000, seed=3)
    fig = viz.plot_quantization(u, threshold=0.4, a=1.3)
    mse = next(t for t in fig.data if t.name == "MSE").y
    ent = next(t for t in fig.data if t.name == "entropy (bits/neuron)").y
    for i, kind in enumerate(info.QUANT_KINDS):
        a = 1.3 if kind == "scaled_ternary" else 1.0
        assert mse[i] == pytest.approx(float(info.quantization_error(u, kind, 0.4, a)), rel=1e-6)
        q = info.quantize(u, kind, 0.4, a)
        assert ent[i] == pytest.approx(info.entropy_bits(q.reshape(-1, 1, 1)), rel=1e-9)
    assert "a=1.30" in fig.data[4].name


def test_quantization_default_amplitude_is_the_mse_best_one():
    u = viz.synthetic_membrane()
    fig = viz.plot_quantization(u, threshold=0.5)
    a = float(info.best_amplitude(u, 0.5))
    assert f"a={a:.2f}" in fig.data[4].name


def test_capacity_figure_adds_measured_entropy_next_to_the_bound():
    fig = viz.plot_capacity((4, 2, 2), measured={"binary": 10.0, "ternary": 20.0})
    assert [t.name for t in fig.data] == ["capacity (upper bound)", "measured entropy"]
    assert list(fig.data[0].y) == pytest.approx([16.0, 16 * math.log2(3), 512.0])
    assert fig.data[1].y[0] == 10.0 and fig.data[1].y[1] == 20.0 and math.isnan(fig.data[1].y[2])


def test_neuron_figure_draws_the_oracle_membranes_and_spikes():
    x = viz.input_current("pulses", num_steps=30, amplitude=0.8, period=6)
    fig = viz.plot_neuron(x, beta=0.5, threshold=0.4, a=2.0)
    traces = {t.name: t for t in fig.data}
    b, u = functional.lif_seq(x.reshape(-1, 1).double(), beta=0.5, threshold=0.4, kind="ternary")
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
    assert torch.allclose(torch.as_tensor(fig.data[2].z), 0.8 * info.quantize(u, "ternary", 0.5).double())


def test_synthetic_membranes_have_the_requested_spread_and_are_seeded():
    for dist in ("gaussian", "laplace", "uniform"):
        u = viz.synthetic_membrane(dist, loc=0.2, scale=0.5, n=50000, seed=1)
        assert float(u.mean()) == pytest.approx(0.2, abs=0.02)
        assert float(u.std()) == pytest.approx(0.5, rel=0.03)
    assert torch.equal(viz.synthetic_membrane(seed=4), viz.synthetic_membrane(seed=4))
    bimodal = viz.synthetic_membrane("bimodal", loc=1.0, scale=0.2, n=10000)
    assert float((bimodal.abs() > 0.5).float().mean()) > 0.99
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
    model = build_model("small", neuron="trainable_ternary", num_classes=10, num_steps=2, in_channels=1, width=4)
    assert viz.consumer_kinds(model) == {
        "stem_lif": ["BatchNorm", "residual"],
        "layers.0.lif1": ["BatchNorm"],
        "layers.0.lif2": ["BatchNorm", "BatchNorm"],
        "layers.1.lif1": ["BatchNorm"],
        "layers.1.lif2": ["classifier"],
    }


def test_bn_invariance_figure_shows_conv_scaling_and_bn_cancelling():
    fig = viz.plot_bn_invariance((0.5, 1.0, 2.0))
    conv, bn = fig.data
    assert list(conv.x) == [0.5, 2.0]  # a = 1 is the reference
    assert list(conv.y) == pytest.approx([0.5, 1.0], rel=1e-9)  # conv is linear in a
    assert max(bn.y) < 1e-2


def test_training_figure_draws_three_curves_per_run():
    rows = [{"epoch": 1, "train_loss": 2.0, "train_acc": 0.3, "test_acc": 0.4},
            {"epoch": 2, "train_loss": 1.0, "train_acc": 0.6, "test_acc": 0.7}]
    fig = viz.plot_training({"binary": rows, "ternary": rows})
    assert [t.name for t in fig.data] == ["binary train loss", "binary train acc", "binary test acc",
                                          "ternary train loss", "ternary train acc", "ternary test acc"]
    assert list(fig.data[2].y) == [0.4, 0.7]


def test_amplitude_and_rate_figures_read_histories_and_dicts():
    rows = [{"epoch": 1, "firing_rates": {"a": 0.1, "b": 0.2}, "amplitudes": {"a": 1.0, "b": [2.0, 4.0]}}]
    fig = viz.plot_firing_rates({"run": rows, "dict": {"a": 0.3}})
    assert list(fig.data[0].y) == [0.1, 0.2] and list(fig.data[1].y) == [0.3]
    fig = viz.plot_amplitudes({"run": rows}, consumers={"a": ["classifier"]})
    assert list(fig.data[0].y) == [1.0, 3.0]  # per-channel a drawn as its mean
    assert "classifier" in fig.data[0].x[0]


def test_results_figure_draws_ours_beside_the_paper_and_leaves_unknown_cells_empty():
    rows = [{"table": "table2", "dataset": "cifar10", "arch": "resnet19", "num_steps": 2, "neuron": "ternary",
             "mean": 90.0, "std": 0.5, "n_seeds": 3, "paper": 95.6},
            {"table": "table2", "dataset": "cifar10", "arch": "resnet19", "num_steps": 2, "neuron": "binary",
             "mean": 85.0, "std": None, "n_seeds": 1, "paper": None}]
    fig = viz.plot_results(rows)
    ours, paper = fig.data
    assert list(ours.x) == ["ternary", "binary"]  # nothing varies but the neuron
    assert list(ours.y) == [90.0, 85.0] and list(ours.error_y.array) == [0.5, 0.0]
    assert list(paper.y) == [95.6, None] and paper.text[1] == "unknown"
    assert "cifar10" in fig.layout.title.text and "resnet19" in fig.layout.title.text
    fig = viz.plot_results([rows[0], {**rows[1], "dataset": "cifar100"}])
    assert list(fig.data[0].x) == ["cifar10 · ternary", "cifar100 · binary"]


def test_importing_the_package_viz_and_widgets_does_not_import_ipywidgets():
    code = ("import sys, tspike_lab, tspike_lab.viz, tspike_lab.widgets\n"
            "assert 'ipywidgets' not in sys.modules, 'ipywidgets imported eagerly'\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# --------------------------------------------------------------------------- widgets

widgets = pytest.importorskip("tspike_lab.widgets")


def _drawn(panel):
    (out,) = panel.output.outputs
    assert out["output_type"] == "display_data"
    return out["data"][widgets.PLOTLY_MIMETYPE]


def _nudge(control):
    if hasattr(control, "options"):
        control.value = next(o for o in control.options if o != control.value)
    elif isinstance(control.value, bool):
        control.value = not control.value
    else:
        control.value = control.value + control.step if control.value + control.step <= control.max \
            else control.value - control.step


PANELS = ["quantization_panel", "teaser_panel", "neuron_panel", "surrogate_panel", "membrane_panel", "energy_panel"]


@pytest.mark.parametrize("name", PANELS)
def test_each_panel_builds_and_redraws_its_figure_when_any_control_changes(name):
    panel = getattr(widgets, name)()
    assert isinstance(panel.figure, go.Figure)
    assert panel.output in panel.children
    for key, control in panel.controls.items():
        before_fig, before_drawn = panel.figure, _drawn(panel)
        _nudge(control)
        assert panel.figure is not before_fig, key
        assert _drawn(panel) != before_drawn, f"{name}: changing {key} did not change the drawn figure"
        assert _drawn(panel) == json.loads(panel.figure.to_json()), f"{name}: drawn figure is not panel.figure"


def test_quantization_panel_draws_exactly_what_plot_quantization_draws():
    panel = widgets.quantization_panel()
    panel.controls["threshold"].value = 0.8
    panel.controls["best_a"].value = True
    expected = viz.plot_quantization(viz.synthetic_membrane("gaussian", loc=0.0, scale=0.5), threshold=0.8)
    assert panel.figure.to_json() == expected.to_json()


def test_quantization_panel_on_given_membranes_offers_no_distribution_controls():
    u = torch.randn(1000)
    panel = widgets.quantization_panel(u)
    assert set(panel.controls) == {"threshold", "a", "best_a"}
    panel.controls["a"].value = 2.0
    assert "a=2.00" in panel.figure.data[4].name


def test_membrane_panel_marks_the_learned_amplitude_of_the_chosen_layer():
    recording = viz._demo_recording()
    panel = widgets.membrane_panel(recording, learned={"layers.1.lif2": 2.5})
    panel.controls["layer"].value = "layers.1.lif2"
    texts = [a.text for a in panel.figure.layout.annotations]
    assert any("learned a = 2.50" in t for t in texts)


def test_energy_panel_reprices_the_same_operations():
    from tspike_lab import energy

    model, x = viz._demo_model("ternary")
    counts = energy.count_ops(model, x)
    panel = widgets.energy_panel({"ternary": counts})
    total = counts.total()
    ann = counts.ann()
    # at the break-even price of an accumulate, the SNN costs what the ANN costs
    panel.controls["e_ac_pj"].value = round(4.6 * (ann["macs"] - total["macs"]) / total["sops"], 2)
    bars = panel.figure.data[-1]
    assert list(bars.x) == ["ternary", "ANN"]
    assert bars.y[0] == pytest.approx(bars.y[1], rel=0.02)
    panel.controls["convention"].value = "paper"
    assert "paper convention" in panel.figure.layout.title.text


def test_results_panel_filters_rows_by_dropdown():
    rows = [{"table": "t2", "dataset": "cifar10", "arch": "resnet19", "num_steps": 2, "neuron": "ternary",
             "mean": 90.0, "paper": None},
            {"table": "t2", "dataset": "cifar100", "arch": "resnet19", "num_steps": 2, "neuron": "ternary",
             "mean": 70.0, "paper": 80.2}]
    panel = widgets.results_panel(rows)
    assert set(panel.controls) == {"dataset"}  # the other keys take one value only
    assert list(panel.figure.data[0].y) == [90.0, 70.0]
    panel.controls["dataset"].value = "cifar100"
    assert list(panel.figure.data[0].y) == [70.0] and list(panel.figure.data[1].y) == [80.2]


def test_epoch_panel_shows_the_amplitudes_and_rates_of_the_chosen_epoch():
    rows = [{"epoch": 1, "firing_rates": {"x": 0.1}, "amplitudes": {"x": 1.5}},
            {"epoch": 2, "firing_rates": {"x": 0.2}, "amplitudes": {"x": 2.5}}]
    panel = widgets.epoch_panel({"run": rows})
    assert panel.controls["epoch"].max == 2 and list(panel.figure.data[0].y) == [1.5]
    assert "after epoch 1" in panel.figure.layout.title.text
    panel.controls["epoch"].value = 2
    assert list(panel.figure.data[0].y) == [2.5]
    panel.controls["epoch"].value = 1
    panel.controls["quantity"].value = "firing rates"
    assert list(panel.figure.data[0].y) == [0.1]


def test_train_live_redraws_the_curves_and_returns_each_runs_history(tmp_path):
    monitor = widgets.training_panel()
    assert len(monitor.figure.data) == 0
    configs = {name: TrainConfig(dataset="digits", arch="small", width=4, neuron=name, num_steps=1, epochs=2,
                                 batch_size=64, max_steps_per_epoch=2, max_eval_steps=1, device="cpu",
                                 num_workers=0, out_dir=str(tmp_path / name) if name == "ternary" else None)
               for name in ("binary", "ternary")}
    histories = widgets.train_live(configs, monitor, poll_s=0.05)
    assert list(histories) == ["binary", "ternary"]
    assert all(len(h) == 2 for h in histories.values())
    assert histories["binary"].run_dir is None and histories["ternary"].run_dir == str(tmp_path / "ternary")
    test_acc = {t.name: list(t.y) for t in monitor.figure.data}
    assert test_acc["ternary test acc"] == histories["ternary"].column("test_acc")
    assert _drawn(monitor)["data"]
    assert "done" in monitor.status.value


def test_train_live_reraises_what_train_raised():
    bad = TrainConfig(dataset="digits", arch="small", width=4, epochs=1, batch_size=4096, device="cpu",
                      num_workers=0)
    with pytest.raises(ValueError, match="batch_size"):
        widgets.train_live({"bad": bad}, widgets.training_panel())
