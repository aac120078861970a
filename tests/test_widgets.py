"""widgets: every panel redraws its figure, built by viz.plot_*, whenever one of its controls changes."""

import json

import plotly.graph_objects as go
import pytest

from tspike_lab import viz, widgets
from tspike_lab.config import TrainConfig


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
        control.value = (
            control.value + control.step
            if control.value + control.step <= control.max
            else control.value - control.step
        )


PANELS = [
    "quantization_panel",
    "teaser_panel",
    "neuron_panel",
    "surrogate_panel",
    "raster_panel",
    "membrane_panel",
    "energy_panel",
]


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


def test_quantization_panel_mean_slider_moves_the_bimodal_membrane_to_the_right():
    panel = widgets.quantization_panel()
    panel.controls["dist"].value = "bimodal"
    assert panel.controls["loc"].description == "mean of u" and panel.controls["scale"].description == "std of u"

    def mean(fig):  # of the drawn density histogram
        xs = [x for t in fig.data[:2] for x in t.x]
        ys = [y for t in fig.data[:2] for y in t.y]
        return sum(x * y for x, y in zip(xs, ys)) / sum(ys)

    means = []
    for loc in (-0.5, 0.0, 0.5):
        panel.controls["loc"].value = loc
        means.append(mean(panel.figure))
    assert means[0] < means[1] < means[2]
    assert means[2] - means[0] == pytest.approx(1.0, abs=0.05)


def test_quantization_panel_on_given_membranes_offers_no_distribution_controls():
    import torch

    u = torch.randn(1000)
    panel = widgets.quantization_panel(u)
    assert set(panel.controls) == {"threshold", "a", "best_a"}
    panel.controls["a"].value = 2.0
    assert any(t.name.endswith("a=2.00") for t in panel.figure.data)


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
    assert "paper convention" in panel.figure.layout.title.subtitle.text


def test_results_panel_filters_rows_by_dropdown():
    base = dict(
        table="table2",
        arch="resnet19",
        width=None,
        num_steps=2,
        neuron="ternary",
        std=None,
        n_seeds=1,
        profile="paper",
        ours=False,
        paper_std=0.08,
    )
    rows = [
        dict(base, dataset="cifar10", dataset_label="CIFAR-10", mean=90.0, paper=None),
        dict(base, dataset="cifar100", dataset_label="CIFAR-100", mean=70.0, paper=80.2),
    ]
    panel = widgets.results_panel(rows)
    assert set(panel.controls) == {"dataset"}  # the other keys take one value only
    assert [list(t.y) for t in panel.figure.data if t.type == "bar"] == [[90.0], [70.0]]  # one panel per data set
    panel.controls["dataset"].value = "cifar100"
    assert list(panel.figure.data[0].y) == [70.0] and list(panel.figure.data[1].y) == [80.2]


def test_epoch_panel_shows_the_amplitudes_and_rates_of_the_chosen_epoch():
    rows = [
        {"epoch": 1, "firing_rates": {"x": 0.1}, "amplitudes": {"x": 1.5}},
        {"epoch": 2, "firing_rates": {"x": 0.2}, "amplitudes": {"x": 2.5}},
    ]
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
    configs = {
        name: TrainConfig(
            dataset="digits",
            arch="small",
            width=4,
            neuron=name,
            num_steps=1,
            epochs=2,
            batch_size=64,
            max_steps_per_epoch=2,
            max_eval_steps=1,
            device="cpu",
            num_workers=0,
            out_dir=str(tmp_path / name) if name == "ternary" else None,
        )
        for name in ("binary", "ternary")
    }
    histories = widgets.train_live(configs, monitor, poll_s=0.05)
    assert list(histories) == ["binary", "ternary"]
    assert all(len(h) == 2 for h in histories.values())
    assert histories["binary"].run_dir is None and histories["ternary"].run_dir == str(tmp_path / "ternary")
    test_acc = {t.name: list(t.y) for t in monitor.figure.data}
    assert test_acc["ternary test acc"] == histories["ternary"].column("test_acc")
    assert _drawn(monitor)["data"]
    assert "done" in monitor.status.value


def test_train_live_reraises_what_train_raised():
    bad = TrainConfig(dataset="digits", arch="small", width=4, epochs=1, batch_size=4096, device="cpu", num_workers=0)
    with pytest.raises(ValueError, match="batch_size"):
        widgets.train_live({"bad": bad}, widgets.training_panel())


def test_raster_panel_draws_the_chosen_layer_images_and_channel_of_each_recording():
    rec = viz._demo_recording()
    panel = widgets.raster_panel({"before": rec, "after": rec}, images=3)
    panel.controls["layer"].value = "layers.1.lif1"  # [T, B, 8, 4, 4]
    panel.controls["image"].value = 5
    panel.controls["channel"].value = 2
    expected = viz.plot_raster(
        {k: rec["layers.1.lif1"]["spikes"][:, 5:8, 2] for k in ("before", "after")},
        sample_labels=["image 5", "image 6", "image 7"],
    )
    assert [(list(t.x), list(t.y)) for t in panel.figure.data] == [(list(t.x), list(t.y)) for t in expected.data]
    assert "layers.1.lif1, channel 2, test images 5-7" in panel.figure.layout.title.text
    assert widgets.raster_panel(rec).controls["image"].max == 16 - 4  # one recording, four images
