"""TernaryLeaky as a drop-in snnTorch neuron, and MultiStepLIF against it."""

import pytest
import snntorch as snn
import torch
from snntorch import utils
from torch import nn

import tspike_lab as tl
from tspike_lab.errors import ConfigError
from tspike_lab.neurons import MultiStepLIF


def test_ternary_leaky_is_an_snntorch_leaky_with_the_paper_defaults():
    lif = tl.TernaryLeaky()
    assert isinstance(lif, snn.Leaky)
    assert float(lif.beta) == 0.25 and float(lif.threshold) == 0.5
    assert lif.reset_mechanism == "zero"


def test_ternary_leaky_steps_like_snn_leaky_and_returns_the_membrane_it_fired_on():
    lif = tl.TernaryLeaky()
    mem = lif.reset_mem()
    outs = []
    for x in torch.tensor([[0.6], [-0.3], [-0.5]]):
        spk, mem = lif(x, mem)
        outs.append((spk.item(), round(mem.item(), 6)))
    assert outs == [(1.0, 0.6), (0.0, -0.3), (-1.0, -0.575)]


def test_binary_leaky_with_the_same_input_never_emits_a_negative_spike():
    lif = tl.BinaryLeaky()
    mem = lif.reset_mem()
    spks = []
    for x in torch.tensor([[0.6], [-0.3], [-0.5]]):
        spk, mem = lif(x, mem)
        spks.append(spk.item())
    assert spks == [1.0, 0.0, 0.0]


def test_ternary_leaky_runs_inside_nn_sequential_next_to_snntorch_layers():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Linear(6, 8),
        tl.TernaryLeaky(init_hidden=True),
        nn.Linear(8, 8),
        snn.Leaky(beta=0.9, init_hidden=True),
        nn.Linear(8, 3),
        tl.TernaryLeaky(init_hidden=True, output=True, learn_graded_spikes_factor=True),
    )
    x = torch.randn(4, 5, 6) * 3
    spk_rec = []
    for t in range(4):
        spk, mem = net(x[t])
        spk_rec.append(spk)
    spk_rec = torch.stack(spk_rec)
    assert spk_rec.shape == (4, 5, 3) and mem.shape == (5, 3)
    spk_rec.sum().backward()
    assert net[0].weight.grad is not None and net[5].graded_spikes_factor.grad is not None


def test_reset_clears_one_network_and_leaves_another_networks_neurons_alone():
    a = nn.Sequential(nn.Linear(2, 2), tl.TernaryLeaky(init_hidden=True), snn.Leaky(beta=0.5, init_hidden=True))
    b = nn.Sequential(nn.Linear(2, 2), tl.TernaryLeaky(init_hidden=True))
    x = torch.ones(3, 2) * 5
    a(x), b(x)
    tl.reset(a)
    assert a[1].mem.abs().sum() == 0 and a[2].mem.abs().sum() == 0
    assert b[1].mem.abs().sum() > 0


def test_ternary_leaky_joins_snntorchs_neuron_registry_as_snn_leaky_does(monkeypatch):
    # snntorch.utils.reset, reset_hidden, detach_hidden and backprop.BPTT find neurons there.
    monkeypatch.setattr(snn.SpikingNeuron, "instances", [])
    net = nn.Sequential(nn.Linear(2, 2), tl.TernaryLeaky(init_hidden=True))
    assert snn.SpikingNeuron.instances == [net[1]]
    net(torch.ones(3, 2) * 5)
    utils.reset(net)
    assert net[1].mem.shape == (3, 2) and net[1].mem.abs().sum() == 0


@pytest.mark.parametrize("per_channel", [False, True])
def test_outputs_are_minus_a_zero_or_a(per_channel):
    torch.manual_seed(1)
    lif = MultiStepLIF(learn_graded_spikes_factor=True, num_channels=3 if per_channel else None)
    with torch.no_grad():
        lif.graded_spikes_factor.copy_(torch.tensor([0.4, 1.3, 2.0]) if per_channel else torch.tensor(0.7))
    out = lif(torch.randn(4, 2, 3, 5, 5))
    a = lif.amplitude(5)
    b = out / a
    assert set(b.unique().tolist()) <= {-1.0, 0.0, 1.0}
    for c in range(3):
        av = float((lif.graded_spikes_factor[c] if per_channel else lif.graded_spikes_factor).detach())
        assert set(out[:, :, c].unique().tolist()) <= {-av, 0.0, av}


@pytest.mark.parametrize("kind", ["binary", "ternary"])
@pytest.mark.parametrize("reset", ["zero", "subtract"])
@pytest.mark.parametrize("sg", ["ste", "sigmoid"])
def test_multi_step_layer_equals_looping_the_snntorch_style_neuron_forward_and_grad(kind, reset, sg):
    torch.manual_seed(2)
    x = torch.randn(4, 3, 2, 5, dtype=torch.float64)
    seq = MultiStepLIF(
        kind, reset_mechanism=reset, spike_grad=sg, learn_graded_spikes_factor=True, graded_spikes_factor=0.75
    ).double()
    step_cls = tl.TernaryLeaky if kind == "ternary" else tl.BinaryLeaky
    step = step_cls(
        reset_mechanism=reset,
        spike_grad=sg,
        learn_graded_spikes_factor=True,
        graded_spikes_factor=torch.tensor(0.75, dtype=torch.float64),
    )
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    out1 = seq(x1)
    mem = torch.zeros_like(x[0])
    out2 = []
    for t in range(4):
        spk, mem = step(x2[t], mem)
        out2.append(spk)
    out2 = torch.stack(out2)
    assert torch.equal(out1, out2)
    w = torch.randn_like(out1)
    (out1 * w).sum().backward()
    (out2 * w).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(seq.graded_spikes_factor.grad, step.graded_spikes_factor.grad)


def test_record_keeps_the_membrane_and_unscaled_spikes():
    lif = MultiStepLIF(graded_spikes_factor=2.0)
    lif.record = True
    x = torch.tensor([[0.6], [-0.3], [-0.5]])
    out = lif(x)
    assert out.flatten().tolist() == [2.0, 0.0, -2.0]
    assert lif.b_seq.flatten().tolist() == [1.0, 0.0, -1.0]
    torch.testing.assert_close(lif.mem_seq.flatten(), torch.tensor([0.6, -0.3, -0.575]))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(kind="spiky"), "kind must be one of"),
        (dict(reset_mechanism="none"), "reset_mechanism must be one of"),
        (dict(beta=1.5), "beta must be in"),
        (dict(threshold=0.0), "threshold must be > 0"),
        (dict(num_channels=0), "num_channels"),
    ],
)
def test_bad_neuron_options_are_rejected_naming_the_value(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MultiStepLIF(**kwargs)


def test_wrong_rank_or_channel_count_is_rejected():
    with pytest.raises(ValueError, match="rank >= 2"):
        MultiStepLIF()(torch.zeros(4))
    with pytest.raises(ValueError, match="3 channels at dim 2"):
        MultiStepLIF(learn_graded_spikes_factor=True, num_channels=3)(torch.zeros(2, 1, 4, 5))


@pytest.mark.filterwarnings("ignore:Inhibition is an unstable feature")
def test_ternary_leaky_accepts_every_option_of_snn_leaky():
    lif = tl.TernaryLeaky(
        reset_delay=False,
        reset_mechanism="none",
        learn_threshold=True,
        inhibition=True,
        learn_beta=True,
        surrogate_disable=True,
        state_quant=False,
        output=True,
    )
    assert lif.reset_mechanism == "none" and isinstance(lif.threshold, nn.Parameter)
    spk, mem = lif(torch.tensor([[0.6, -0.9]]))
    assert spk.tolist() == [[0.0, -1.0]]


def test_a_bad_reset_mechanism_is_rejected_naming_the_value():
    with pytest.raises(ConfigError, match=r"reset_mechanism must be one of \('subtract', 'zero', 'none'\), got 'hard'"):
        tl.TernaryLeaky(reset_mechanism="hard")
    lif = tl.TernaryLeaky()
    with pytest.raises(ConfigError, match="got 'hard'"):
        lif.reset_mechanism = "hard"
    assert lif.reset_mechanism == "zero"
