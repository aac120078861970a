"""Recording membranes and spikes, firing rates, amplitudes, histograms (tspike_lab.probes)."""

import numpy as np
import pytest
import torch
from torch import nn

from tspike_lab.models import build_model, spiking_layers
from tspike_lab.neurons import MultiStepLIF
from tspike_lab.probes import Recorder, amplitudes, firing_rates, membrane_histograms, record


def _small(neuron="ternary", **kw):
    torch.manual_seed(0)
    return build_model("small", neuron=neuron, num_classes=3, num_steps=2, in_channels=1, width=2, **kw).eval()


def test_record_returns_every_spiking_layer_in_forward_order_with_time_first_shapes():
    model = _small()
    rec = record(model, torch.randn(5, 1, 8, 8))
    assert list(rec) == [name for name, _ in spiking_layers(model)]
    assert rec["stem_lif"]["mem"].shape == (2, 5, 2, 8, 8)
    assert rec["layers.1.lif2"]["spikes"].shape == (2, 5, 4, 4, 4)
    for entry in rec.values():
        assert entry["kind"] == "ternary" and entry["threshold"] == 0.5
        assert set(entry["spikes"].unique().tolist()) <= {-1.0, 0.0, 1.0}
        assert not entry["mem"].requires_grad


def test_recorded_spikes_are_the_layers_output_divided_by_its_amplitude():
    model = _small("trainable_ternary")
    with torch.no_grad():
        model.stem_lif.graded_spikes_factor.fill_(0.7)
    outs = []
    h = model.stem_lif.register_forward_hook(lambda m, i, o: outs.append(o))
    rec = record(model, torch.randn(3, 1, 8, 8))
    h.remove()
    assert torch.equal(outs[0], 0.7 * rec["stem_lif"]["spikes"])
    assert rec["stem_lif"]["amplitude"].item() == pytest.approx(0.7)


def test_record_restores_flags_and_frees_the_tensors_of_layers_that_were_not_recording():
    model = _small()
    layers = [m for _, m in spiking_layers(model)]
    layers[0].record = True
    model(torch.randn(2, 1, 8, 8))
    kept = layers[0].mem_seq
    record(model, torch.randn(2, 1, 8, 8))
    assert [m.record for m in layers] == [True] + [False] * (len(layers) - 1)
    assert all(m.mem_seq is None and m.b_seq is None for m in layers[1:])
    assert layers[0].mem_seq is not None and layers[0].mem_seq is not kept


def test_record_keeps_the_models_mode():
    model = _small().train()
    record(model, torch.randn(2, 1, 8, 8))
    assert model.training
    model.eval()
    record(model, torch.randn(2, 1, 8, 8))
    assert not model.training


def test_recorder_context_keeps_the_last_forward_pass_and_restores_flags_on_error():
    model = _small()
    x1, x2 = torch.randn(2, 1, 8, 8), torch.randn(4, 1, 8, 8)
    with torch.no_grad(), Recorder(model) as rec:
        model(x1)
        assert rec.read()["stem_lif"]["mem"].shape[1] == 2
        model(x2)
    assert rec.recording["stem_lif"]["mem"].shape[1] == 4
    with pytest.raises(ValueError, match="channels"):
        with Recorder(model):
            model(torch.randn(2, 3, 8, 8))  # wrong channel count
    assert not any(m.record for _, m in spiking_layers(model))


def _one_layer():
    return nn.Sequential(MultiStepLIF("ternary", threshold=0.5))


def test_firing_rates_count_minus_one_spikes_and_report_the_signs_separately():
    # one step, one sample, 8 neurons: +1, +1, -1, 0, 0, 0, -1, 0 -> 4 of 8 spike
    x_seq = torch.tensor([0.9, 0.5, -0.6, 0.1, -0.4, 0.0, -2.0, 0.49]).reshape(1, 1, 8)
    rates = firing_rates(_one_layer(), x_seq)["0"]
    assert rates["rate"] == 0.5 and rates["pos_rate"] == 0.25 and rates["neg_rate"] == 0.25
    assert (rates["spikes"], rates["positive"], rates["negative"], rates["numel"]) == (4, 2, 2, 8)


def test_firing_rates_of_a_binary_layer_see_no_negative_spikes():
    x_seq = torch.tensor([0.9, -0.9]).reshape(1, 1, 2)
    rates = firing_rates(nn.Sequential(MultiStepLIF("binary")), x_seq)["0"]
    assert rates["rate"] == 0.5 and rates["neg_rate"] == 0.0


def test_firing_rates_from_a_recording_equal_those_from_the_model():
    model = _small()
    x = torch.randn(3, 1, 8, 8)
    assert firing_rates(record(model, x)) == firing_rates(model, x)


def test_firing_rates_need_an_input_when_given_a_model():
    with pytest.raises(ValueError, match="x must be given"):
        firing_rates(_small())


def test_amplitudes_read_back_per_layer_floats_and_per_channel_lists():
    model = _small("trainable_ternary")
    with torch.no_grad():
        model.layers[0].lif1.graded_spikes_factor.fill_(0.3)
    amps = amplitudes(model)
    assert amps["stem_lif"] == 1.0 and amps["layers.0.lif1"] == pytest.approx(0.3)
    per_channel = _small("trainable_ternary", amplitude="channel")
    with torch.no_grad():
        per_channel.stem_lif.graded_spikes_factor.copy_(torch.tensor([0.5, 2.0]))
    assert amplitudes(per_channel)["stem_lif"] == [0.5, 2.0]


def test_membrane_histograms_count_every_recorded_membrane_value():
    model = _small()
    rec = record(model, torch.randn(3, 1, 8, 8))
    hists = membrane_histograms(rec, bins=20)
    for name, entry in rec.items():
        h = hists[name]
        assert h["counts"].dtype == np.int64 and h["counts"].shape == (20,) and h["edges"].shape == (21,)
        assert h["counts"].sum() == entry["mem"].numel()
    shared = membrane_histograms(rec, bins=4, range=(-1.0, 1.0))
    mem = rec["stem_lif"]["mem"]
    inside = int(((mem >= -1) & (mem <= 1)).sum())
    assert shared["stem_lif"]["counts"].sum() == inside
    assert np.allclose(shared["stem_lif"]["edges"], [-1, -0.5, 0, 0.5, 1])


def test_membrane_histograms_reject_a_bad_bin_count():
    with pytest.raises(ValueError, match="bins"):
        membrane_histograms({}, bins=0)


def test_probes_reject_a_model_without_spiking_layers():
    with pytest.raises(ValueError, match="no spiking layer"):
        record(nn.Linear(2, 2), torch.zeros(1, 2))
