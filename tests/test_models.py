"""The paper's networks: structure, shapes, encodings and bad input."""
import pytest
import torch
from torch import nn

import tspike_lab as tl
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
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in stem_convs] == \
        [(3, 64, (3, 3)), (64, 64, (3, 3)), (64, 64, (3, 3))]
    assert isinstance(r20.pool.module, nn.AvgPool2d) and r20.pool.module.kernel_size == 2
    assert [b.cb1.conv.out_channels for b in r20.layers] == [64, 64, 128, 128, 256, 256, 512, 512]
    assert [type(b.shortcut).__name__ for b in r20.layers] == \
        ["ScaledIdentity", "ScaledIdentity"] + ["AvgDown", "ScaledIdentity"] * 3
    assert all(isinstance(b.shortcut.pool.module, nn.AvgPool2d) for b in r20.layers if isinstance(b.shortcut, AvgDown))
    assert all(not b.cb2.bn.weight.detach().any() for b in r20.layers)  # zero_init_residual
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
    frames = torch.randn(5, 4, 1, 8, 8)  # [T, B, C, H, W]
    assert m(frames, return_seq=True).shape == (5, 4, 10)


def test_trainable_neurons_have_a_learnable_amplitude_and_fixed_ones_a_buffer():
    for neuron, learn in [("binary", False), ("ternary", False), ("trainable_binary", True), ("trainable_ternary", True)]:
        m = tl.build_model("small", neuron=neuron, num_classes=10, num_steps=1, in_channels=1)
        for name, layer in tl.spiking_layers(m):
            assert isinstance(layer.graded_spikes_factor, nn.Parameter) == learn, (neuron, name)
            assert layer.kind == neuron.removeprefix("trainable_")


def test_per_channel_amplitude_has_one_value_per_channel():
    m = tl.build_model("small", neuron="trainable_ternary", num_classes=10, num_steps=1, in_channels=1,
                       amplitude="channel", width=6)
    shapes = [tuple(l.graded_spikes_factor.shape) for _, l in tl.spiking_layers(m)]
    assert shapes == [(6,), (6,), (6,), (12,), (12,)]


def test_amplitudes_receive_gradients_in_training():
    m = tl.build_model("small", neuron="trainable_ternary", num_classes=10, num_steps=2, in_channels=1)
    loss = nn.functional.cross_entropy(m(torch.randn(8, 1, 8, 8)), torch.arange(8))
    loss.backward()
    grads = [l.graded_spikes_factor.grad for _, l in tl.spiking_layers(m)]
    assert all(g is not None for g in grads)
    assert m.classifier.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("kwargs, match", [
    (dict(arch="resnet50"), r"arch must be one of .*got 'resnet50'"),
    (dict(neuron="quaternary"), r"neuron must be one of .*got 'quaternary'"),
    (dict(num_classes=1), r"num_classes must be an int >= 2, got 1"),
    (dict(num_steps=0), r"num_steps must be an int >= 1, got 0"),
    (dict(amplitude="pixel"), r"amplitude must be one of .*got 'pixel'"),
    (dict(arch="resnet19", width=4), r"unknown options for arch 'resnet19'"),
])
def test_bad_build_arguments_are_rejected_naming_the_value(kwargs, match):
    args = dict(arch="small", neuron="ternary", num_classes=10, num_steps=2)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        tl.build_model(args.pop("arch"), **args)


def test_wrong_input_rank_or_channels_is_rejected():
    m = tl.build_model("small", neuron="ternary", num_classes=10, num_steps=2, in_channels=1)
    with pytest.raises(ValueError, match=r"\[B, C, H, W\].*got shape \(8, 8\)"):
        m(torch.zeros(8, 8))
    with pytest.raises(ValueError, match="3 channels .* in_channels=1"):
        m(torch.zeros(2, 3, 8, 8))
