"""Re-parameterization (Eq. 15-17): folded models equal the original and emit {-1, 0, 1}."""

import pytest
import torch
from torch import nn

import tspike_lab as tl
from tspike_lab.reparam import compare

SIZES = {"small": 8, "resnet19": 8, "resnet20": 8, "resnet20_wide": 8, "vgg16": 32, "resnet18": 32, "resnet34": 32}


def _randomize(model, seed):
    """Random amplitudes and BN statistics/affine (not the defaults)."""
    g = torch.Generator().manual_seed(seed)
    rand = lambda t, lo, hi: t.copy_(torch.rand(t.shape, generator=g, dtype=t.dtype) * (hi - lo) + lo)
    with torch.no_grad():
        for _, layer in tl.spiking_layers(model):
            rand(layer.graded_spikes_factor, 0.2, 2.5)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                rand(m.running_mean, -0.5, 0.5), rand(m.running_var, 0.3, 2.0)
                rand(m.weight, 0.5, 1.5), rand(m.bias, -0.3, 0.3)
    return model


def _spike_values(model, x):
    values = set()
    hooks = [
        lif.register_forward_hook(lambda m, i, o: values.update(o.unique().tolist()))
        for _, lif in tl.spiking_layers(model)
    ]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return values


@pytest.mark.parametrize("arch", sorted(SIZES))
@pytest.mark.parametrize("amplitude", ["layer", "channel"])
def test_folded_model_has_the_same_logits_and_emits_only_minus_one_zero_one(arch, amplitude):
    torch.manual_seed(0)
    model = tl.build_model(arch, neuron="trainable_ternary", num_classes=10, num_steps=2, amplitude=amplitude)
    model = _randomize(model, seed=1).double().eval()
    x = torch.randn(2, 3, SIZES[arch], SIZES[arch], dtype=torch.float64)
    with torch.no_grad():
        logits = model(x)
    assert len(_spike_values(model, x) - {-1.0, 0.0, 1.0}) > 0  # the original really emits a*b
    for fold_bn in (False, True):
        folded = tl.reparameterize(model, fold_bn=fold_bn)
        with torch.no_grad():
            torch.testing.assert_close(folded(x), logits, rtol=0, atol=1e-9)
        assert _spike_values(folded, x) <= {-1.0, 0.0, 1.0}
        assert any(isinstance(m, nn.BatchNorm2d) for m in folded.modules()) != fold_bn


def test_reparameterize_returns_a_new_model_and_leaves_the_input_untouched():
    model = _randomize(
        tl.build_model("small", neuron="trainable_ternary", num_classes=10, num_steps=2, in_channels=1), seed=3
    ).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded = tl.reparameterize(model, fold_bn=True)
    assert folded is not model
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert all(not isinstance(lif.graded_spikes_factor, nn.Parameter) for _, lif in tl.spiking_layers(folded))


def test_identity_shortcuts_become_additions_of_plus_or_minus_a():
    model = _randomize(
        tl.build_model("small", neuron="trainable_ternary", num_classes=10, num_steps=2, in_channels=1), seed=4
    ).eval()
    folded = tl.reparameterize(model)
    a_in = float(model.stem_lif.graded_spikes_factor.detach())
    assert float(folded.layers[0].shortcut.scale) == pytest.approx(a_in)


def test_float32_folding_agrees_except_for_spikes_sitting_on_the_threshold():
    # fl(a*K) rounds differently from K*(a*B) under FMA; a membrane within ~1e-6 of the
    # threshold can flip. The flips must be vanishingly rare, and without one the logits agree.
    torch.manual_seed(0)
    model = _randomize(
        tl.build_model("resnet20", neuron="trainable_ternary", num_classes=10, num_steps=2), seed=5
    ).eval()
    x = torch.randn(4, 3, 16, 16)
    report = compare(model, tl.reparameterize(model), x)
    assert report["spikes"] > 100_000
    assert report["flipped"] / report["spikes"] < 1e-4
    if report["flipped"] == 0:
        assert report["max_logit_diff"] < 1e-4


def test_a_model_without_a_fold_plan_is_rejected():
    with pytest.raises(ValueError, match="fold_plan"):
        tl.reparameterize(nn.Linear(2, 2))
