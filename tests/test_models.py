"""The paper's networks: structure, shapes, encodings and bad input."""

import pytest
import torch
from torch import nn

import tspike_lab as tl
from tspike_lab.errors import ConfigError
from tspike_lab.models.resnet import BasicBlock
from tspike_lab.neurons import MultiStepLIF

SIZES = {"small": 8, "resnet19": 16, "resnet20": 16, "resnet20_wide": 16, "vgg16": 32, "resnet18": 32, "resnet34": 32}


@pytest.mark.parametrize("arch", sorted(SIZES))
@pytest.mark.parametrize("neuron", tl.NEURONS)
def test_every_arch_and_neuron_maps_images_to_logits_averaged_over_time(arch, neuron):
    torch.manual_seed(0)
    m = tl.build_model(arch, neuron=neuron, num_classes=7, num_steps=2, in_channels=3)
    x = torch.randn(2, 3, SIZES[arch], SIZES[arch])
    seq = m(x, return_seq=True)
    assert seq.shape == (2, 2, 7)
    torch.testing.assert_close(m(x), seq.mean(0))


def test_resnet19_has_the_released_structure():
    m = tl.build_model("resnet19", neuron="ternary", num_classes=10, num_steps=2)
    blocks = [b for b in m.layers if isinstance(b, BasicBlock)]
    widths = [b.cb1.conv.out_channels for b in blocks]
    assert widths == [128] * 3 + [256] * 3 + [512] * 2
    assert m.stem.conv.kernel_size == (3, 3) and m.stem.conv.out_channels == 128
    assert isinstance(m.classifier, nn.Linear) and m.classifier.in_features == 512
    assert len(tl.spiking_layers(m)) == 1 + 2 * 8
    down = [b.shortcut.conv.kernel_size for b in blocks if hasattr(b.shortcut, "conv")]
    assert down == [(1, 1), (1, 1)]


def test_resnet20_is_the_released_modified_network_with_a_three_conv_stem_and_avgdown_shortcuts():
    from tspike_lab.models.resnet import AvgDown

    r20 = tl.build_model("resnet20", neuron="ternary", num_classes=10, num_steps=1)
    stem_convs = [r20.stem.conv] + [m.conv for m in r20.stem_rest if hasattr(m, "conv")]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in stem_convs] == [
        (3, 64, (3, 3)),
        (64, 64, (3, 3)),
        (64, 64, (3, 3)),
    ]
    assert isinstance(r20.pool.module, nn.AvgPool2d) and r20.pool.module.kernel_size == 2
    assert [b.cb1.conv.out_channels for b in r20.layers] == [64, 64, 128, 128, 256, 256, 512, 512]
    assert [type(b.shortcut).__name__ for b in r20.layers] == ["ScaledIdentity", "ScaledIdentity"] + [
        "AvgDown",
        "ScaledIdentity",
    ] * 3
    assert all(isinstance(b.shortcut.pool.module, nn.AvgPool2d) for b in r20.layers if isinstance(b.shortcut, AvgDown))
    # the released ANN zeroes bn2 (zero_init_residual); its spiking conversion replaces it by a fresh BN3d at 1
    assert all(bool((b.cb2.bn.weight == 1).all()) for b in r20.layers)
    assert len(tl.spiking_layers(r20)) == 3 + 2 * 8
    wide = tl.build_model("resnet20_wide", neuron="ternary", num_classes=10, num_steps=1)
    assert len(wide.layers) == 9 and wide.stem.conv.out_channels == 128


def test_parameter_counts_match_the_released_cifar_definitions():
    # counted on the released models/resnet.py definitions (10 classes); our amplitudes a excluded
    released = {"resnet19": 12_569_226, "resnet20": 11_247_946, "resnet20_wide": 17_289_866}
    for arch, count in released.items():
        m = tl.build_model(arch, neuron="ternary", num_classes=10, num_steps=1)
        ours = sum(p.numel() for name, p in m.named_parameters() if not name.endswith("graded_spikes_factor"))
        assert ours == count, arch


def test_imagenet_resnets_have_a_7x7_stem():
    r34 = tl.build_model("resnet34", neuron="ternary", num_classes=1000, num_steps=1)
    assert r34.stem.conv.kernel_size == (7, 7) and r34.stem.conv.stride == (2, 2)
    assert isinstance(r34.pool.module, nn.AvgPool2d)
    assert len(r34.layers) == 3 + 4 + 6 + 3
    assert len(tl.build_model("resnet18", neuron="ternary", num_classes=1000, num_steps=1).layers) == 8


def test_vgg16_has_13_convolutions_with_bias_and_average_pooling_only():
    m = tl.build_model("vgg16", neuron="binary", num_classes=10, num_steps=1)
    convs = [x for x in m.modules() if isinstance(x, nn.Conv2d)]
    assert len(convs) == 13 and all(c.bias is not None for c in convs)
    assert not any(isinstance(x, nn.MaxPool2d) for x in m.modules())
    assert sum(isinstance(x, nn.AvgPool2d) for x in m.modules()) == 5


def test_the_residual_is_added_to_the_pre_activation_of_the_block_output_neuron():
    torch.manual_seed(0)
    block = BasicBlock(4, 4, 1, lambda c: MultiStepLIF("ternary"))
    block.eval()
    x = torch.randn(2, 3, 4, 5, 5).sign()
    seen = {}
    block.lif2.register_forward_pre_hook(lambda mod, inp: seen.update(pre=inp[0]))
    block(x)
    expected = block.cb2(block.lif1(block.cb1(x))) + x
    torch.testing.assert_close(seen["pre"], expected)


def test_static_images_are_repeated_over_time_and_event_frames_pass_through():
    torch.manual_seed(0)
    m = tl.build_model("small", neuron="trainable_ternary", num_classes=10, num_steps=3, in_channels=1).eval()
    x = torch.randn(4, 1, 8, 8)
    torch.testing.assert_close(m(x), m(x.unsqueeze(0).repeat(3, 1, 1, 1, 1)))
    frames = torch.randn(3, 4, 1, 8, 8)  # [T, B, C, H, W]
    assert m(frames, return_seq=True).shape == (3, 4, 10)


def test_event_frames_of_another_t_than_num_steps_are_refused_naming_both():
    m = tl.build_model("small", neuron="ternary", num_classes=10, num_steps=2, in_channels=1)
    with pytest.raises(ConfigError, match=r"has T=4 steps at dim 0, the model was built for num_steps=2") as err:
        m(torch.randn(4, 3, 1, 8, 8))
    assert (err.value.field, err.value.value, err.value.allowed) == ("num_steps", 4, "2")
    assert m(torch.randn(2, 3, 1, 8, 8)).shape == (3, 10)  # T == num_steps passes


def test_trainable_neurons_have_a_learnable_amplitude_and_fixed_ones_a_buffer():
    for neuron, learn in [
        ("binary", False),
        ("ternary", False),
        ("trainable_binary", True),
        ("trainable_ternary", True),
    ]:
        m = tl.build_model("small", neuron=neuron, num_classes=10, num_steps=1, in_channels=1)
        for name, layer in tl.spiking_layers(m):
            assert isinstance(layer.graded_spikes_factor, nn.Parameter) == learn, (neuron, name)
            assert layer.kind == neuron.removeprefix("trainable_")


def test_per_channel_amplitude_has_one_value_per_channel():
    m = tl.build_model(
        "small", neuron="trainable_ternary", num_classes=10, num_steps=1, in_channels=1, amplitude="channel", width=6
    )
    shapes = [tuple(lif.graded_spikes_factor.shape) for _, lif in tl.spiking_layers(m)]
    assert shapes == [(6,), (6,), (6,), (12,), (12,)]


def test_amplitudes_receive_gradients_in_training():
    m = tl.build_model("small", neuron="trainable_ternary", num_classes=10, num_steps=2, in_channels=1)
    loss = nn.functional.cross_entropy(m(torch.randn(8, 1, 8, 8)), torch.arange(8))
    loss.backward()
    grads = [lif.graded_spikes_factor.grad for _, lif in tl.spiking_layers(m)]
    assert all(g is not None for g in grads)
    assert m.classifier.weight.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(arch="resnet50"), r"arch must be one of .*got 'resnet50'"),
        (dict(neuron="quaternary"), r"neuron must be one of .*got 'quaternary'"),
        (dict(num_classes=1), r"num_classes must be an int >= 2, got 1"),
        (dict(num_steps=0), r"num_steps must be an int >= 1, got 0"),
        (dict(amplitude="pixel"), r"amplitude must be one of .*got 'pixel'"),
        (dict(arch="resnet19", width=4), r"unknown options for arch 'resnet19'"),
    ],
)
def test_bad_build_arguments_are_rejected_naming_the_value(kwargs, match):
    args = dict(arch="small", neuron="ternary", num_classes=10, num_steps=2)
    args.update(kwargs)
    with pytest.raises(ConfigError, match=match):
        tl.build_model(args.pop("arch"), **args)


def test_wrong_input_rank_or_channels_is_rejected():
    m = tl.build_model("small", neuron="ternary", num_classes=10, num_steps=2, in_channels=1)
    with pytest.raises(ConfigError, match=r"\[B, C, H, W\].*got shape \(8, 8\)"):
        m(torch.zeros(8, 8))
    with pytest.raises(ConfigError, match="3 channels .* in_channels=1"):
        m(torch.zeros(2, 3, 8, 8))


# --------------------------------------------------------------------------- against the released code

from released_models import released_snn  # noqa: E402 - tests/ is on sys.path (rootdir conftest-free import)

# (arch, image side, T): the smallest inputs every network takes; float64 so no spike flips on rounding
RELEASED_CASES = [
    ("resnet19", 8, 2),
    ("resnet20", 8, 2),
    ("resnet20_wide", 8, 1),
    ("resnet18", 32, 2),
    ("vgg16", 32, 2),
]


def _layers_of(model, kinds):
    return [m for m in model.modules() if isinstance(m, kinds)]


def _copy_released_into_ours(released, ours):
    """Copy every conv, BN and linear of the released network into ours, in module order (shapes checked)."""
    bn = nn.modules.batchnorm._BatchNorm
    for kinds in (nn.Conv2d, bn, nn.Linear):
        src, dst = _layers_of(released, kinds), _layers_of(ours, kinds)
        assert len(src) == len(dst), kinds
        for a, b in zip(src, dst):
            assert a.weight.shape == b.weight.shape
            b.load_state_dict(a.state_dict())


def _pair(arch, t, step_bn, num_classes=10):
    torch.manual_seed(0)
    released = released_snn(arch, num_classes=num_classes, step=t).double().train()
    ours = (
        tl.build_model(arch, neuron="ternary", num_classes=num_classes, num_steps=t, step_bn=step_bn, init="released")
        .double()
        .train()
    )
    _copy_released_into_ours(released, ours)
    return released, ours


@pytest.mark.parametrize("arch, side, t", RELEASED_CASES)
def test_train_mode_logits_equal_the_released_network_with_per_step_bn_and_copied_weights(arch, side, t):
    released, ours = _pair(arch, t, step_bn=True)
    x = torch.randn(4, 3, side, side, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(ours(x), released(x), rtol=0, atol=1e-9)
    # the running statistics moved alike: per-step BNs once per step, the blocks' BNs once
    bn = nn.modules.batchnorm._BatchNorm
    for a, b in zip(_layers_of(released, bn), _layers_of(ours, bn)):
        torch.testing.assert_close(b.running_mean, a.running_mean, rtol=0, atol=1e-12)
        torch.testing.assert_close(b.running_var, a.running_var, rtol=0, atol=1e-12)
    released.eval(), ours.eval()
    torch.testing.assert_close(ours(x), released(x), rtol=0, atol=1e-9)


def test_gradients_equal_the_released_resnet20_with_per_step_bn():
    released, ours = _pair("resnet20", 2, step_bn=True)
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    y = torch.tensor([0, 1, 2, 3])
    nn.functional.cross_entropy(released(x), y).backward()
    nn.functional.cross_entropy(ours(x), y).backward()
    for a, b in zip(_layers_of(released, nn.Conv2d), _layers_of(ours, nn.Conv2d)):
        torch.testing.assert_close(b.weight.grad, a.weight.grad, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("arch", ["resnet20", "vgg16"])
def test_folded_bn_departs_from_the_released_network_in_training_but_not_in_eval(arch):
    side = 32 if arch == "vgg16" else 8
    released, ours = _pair(arch, 2, step_bn=False)
    x = torch.randn(4, 3, side, side, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    assert (ours(x) - released(x)).abs().max() > 1e-3  # per-step statistics of spike inputs differ from T*B ones
    released2, ours2 = _pair(arch, 2, step_bn=False)
    released2.eval(), ours2.eval()
    torch.testing.assert_close(ours2(x), released2(x), rtol=0, atol=1e-9)


def test_resnet19_folded_and_per_step_stems_give_the_same_training_output_for_static_images():
    # the stem sees the same image at every step, so its per-step statistics are the T*B ones
    released, ours = _pair("resnet19", 2, step_bn=False)
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(ours(x), released(x), rtol=0, atol=1e-9)


def _std_tolerance(n):
    """5 standard errors of a sample std of n normal draws (relative): sqrt(1 / (2 (n - 1)))."""
    return 5 * (1 / (2 * (n - 1))) ** 0.5


@pytest.mark.parametrize("arch", ["resnet19", "resnet20", "vgg16"])
def test_the_released_initialisation_draws_the_released_statistics(arch):
    torch.manual_seed(0)
    ours = tl.build_model(arch, neuron="ternary", num_classes=10, num_steps=1, init="released")
    released = released_snn(arch, num_classes=10, step=1)
    for a, b in zip(_layers_of(released, nn.Conv2d), _layers_of(ours, nn.Conv2d)):
        kh, kw = b.kernel_size
        want = (2 / (kh * kw * b.out_channels)) ** 0.5
        for w in (a.weight, b.weight):
            assert abs(float(w.detach().std()) / want - 1) < _std_tolerance(w.numel()), (arch, tuple(w.shape))
            assert abs(float(w.detach().mean())) < 5 * want / w.numel() ** 0.5
        if b.bias is not None:
            assert not b.bias.any() and not a.bias.any()
    (fa,), (fb,) = _layers_of(released, nn.Linear), _layers_of(ours, nn.Linear)
    want = 0.01 if arch == "vgg16" else 1 / fb.in_features
    for w in (fa.weight, fb.weight):
        assert abs(float(w.detach().std()) / want - 1) < _std_tolerance(w.numel())
    assert not fb.bias.any() and not fa.bias.any()
    bn = nn.modules.batchnorm._BatchNorm
    for m in _layers_of(released, bn) + _layers_of(ours, bn):
        assert bool((m.weight == 1).all()) and not m.bias.any()


def test_torch_initialisation_is_the_default_and_differs_from_the_released_one():
    torch.manual_seed(0)
    default = tl.build_model("resnet19", neuron="ternary", num_classes=10, num_steps=1)
    fc = default.classifier.weight
    # PyTorch's Linear default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), std 1/sqrt(3 fan_in) (the released: 1/fan_in)
    assert abs(float(fc.detach().std()) * (3 * 512) ** 0.5 - 1) < _std_tolerance(fc.numel()) * 2
    with pytest.raises(ConfigError, match=r"init must be one of \('torch', 'released'\), got 'xavier'"):
        tl.build_model("resnet19", neuron="ternary", num_classes=10, num_steps=1, init="xavier")


def test_step_bn_lies_where_the_released_spikeconv_wraps_batchnorm():
    from tspike_lab.models import ConvBN

    def flags(model):
        return [m.step_bn for m in model.modules() if isinstance(m, ConvBN)]

    r20 = tl.build_model("resnet20", neuron="ternary", num_classes=10, num_steps=2, step_bn=True)
    # three stem BNs per step; 8 blocks x 2 BNs and 3 AvgDown BNs over T*B
    assert flags(r20) == [True] * 3 + [False] * 19
    vgg = tl.build_model("vgg16", neuron="ternary", num_classes=10, num_steps=2, step_bn=True)
    assert flags(vgg) == [True] * 13
    assert not any(flags(tl.build_model("vgg16", neuron="ternary", num_classes=10, num_steps=2)))
