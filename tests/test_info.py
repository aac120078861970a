"""Capacity, empirical entropy and membrane quantizers (tspike_lab.info)."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tspike_lab import functional
from tspike_lab.info import (
    best_amplitude,
    capacity_bits,
    entropy_bits,
    entropy_per_neuron,
    map_entropy_bits,
    quantization_error,
    quantize,
)


def test_capacity_of_a_2x3x4_map_is_24_bits_binary_24_log2_3_ternary_and_768_real():
    assert capacity_bits((2, 3, 4), "binary") == 24
    assert capacity_bits((2, 3, 4), "ternary") == pytest.approx(24 * math.log2(3))
    assert capacity_bits((2, 3, 4), "real") == 768


def test_capacity_accepts_a_neuron_count_and_a_torch_size_alike():
    assert capacity_bits(24, "ternary") == capacity_bits(torch.Size([2, 3, 4]), "ternary")


@pytest.mark.parametrize(
    "bad",
    [
        {"shape_or_numel": (2, -1), "kind": "binary"},
        {"shape_or_numel": 2.5, "kind": "binary"},
        {"shape_or_numel": 4, "kind": "quaternary"},
    ],
)
def test_capacity_rejects_bad_shapes_and_kinds_naming_the_parameter(bad):
    name = "kind" if bad["kind"] == "quaternary" else "shape_or_numel"
    with pytest.raises(ValueError, match=name):
        capacity_bits(**bad)


def test_uniform_ternary_spikes_have_about_log2_3_bits_per_neuron():
    g = torch.Generator().manual_seed(0)
    spk_seq = torch.randint(-1, 2, (4, 5000, 2, 3), generator=g).float()
    h = entropy_per_neuron(spk_seq)
    assert h.shape == (2, 3)
    assert torch.allclose(h, torch.full((2, 3), math.log2(3), dtype=h.dtype), atol=2e-3)
    assert map_entropy_bits(spk_seq) == pytest.approx(6 * math.log2(3), abs=1e-2)


def test_a_constant_map_has_zero_entropy_per_neuron():
    spk_seq = torch.ones(3, 7, 4)
    assert entropy_per_neuron(spk_seq).abs().max().item() == 0.0
    assert map_entropy_bits(spk_seq) == 0.0


def test_entropy_of_a_hand_counted_neuron_matches_the_formula():
    # one neuron, 4 samples: values 1, 1, -1, 0 -> p = (1/2, 1/4, 1/4), H = 1.5 bits
    spk_seq = torch.tensor([1.0, 1.0, -1.0, 0.0]).reshape(2, 2, 1)
    assert entropy_bits(spk_seq) == pytest.approx(1.5)


def test_entropy_is_the_same_for_b_and_for_a_times_b():
    g = torch.Generator().manual_seed(1)
    b = torch.randint(-1, 2, (2, 50, 6), generator=g).float()
    assert torch.allclose(entropy_per_neuron(b), entropy_per_neuron(0.37 * b))


def test_map_entropy_never_exceeds_the_capacity_of_its_kind():
    g = torch.Generator().manual_seed(2)
    b = (torch.rand(3, 40, 2, 4, 4, generator=g) < 0.3).float()
    t = torch.randint(-1, 2, (3, 40, 2, 4, 4), generator=g).float()
    assert map_entropy_bits(b) <= capacity_bits((2, 4, 4), "binary")
    assert map_entropy_bits(t) <= capacity_bits((2, 4, 4), "ternary") + 1e-9
    assert map_entropy_bits(t) > capacity_bits((2, 4, 4), "binary")


def test_entropy_with_levels_rejects_values_outside_them():
    with pytest.raises(ValueError, match="levels"):
        entropy_per_neuron(torch.tensor([[[0.0, 2.0]]]), levels=(-1, 0, 1))


def test_entropy_rejects_a_tensor_without_time_and_batch_dims():
    with pytest.raises(ValueError, match="spk_seq"):
        entropy_per_neuron(torch.zeros(5))


U = torch.tensor([-1.2, -0.5, -0.3, 0.0, 0.2, 0.5, 0.9])


def test_quantize_binary_ternary_and_scaled_ternary_on_a_hand_example():
    assert quantize(U, "binary", 0.5).tolist() == [0, 0, 0, 0, 0, 1, 1]
    assert quantize(U, "ternary", 0.5).tolist() == [-1, -1, 0, 0, 0, 1, 1]
    assert torch.allclose(quantize(U, "scaled_ternary", 0.5, a=0.8), torch.tensor([-0.8, -0.8, 0, 0, 0, 0.8, 0.8]))


def test_quantize_agrees_with_the_neurons_fire_function():
    u = torch.linspace(-2, 2, 101)
    for kind in ("binary", "ternary"):
        assert torch.equal(quantize(u, kind, 0.5), functional.fire(u, 0.5, kind))


def test_quantization_errors_match_the_closed_forms_on_a_hand_example():
    # binary:  squared errors 1.44, .25, .09, 0, .04, .25, .01 -> mean 2.08 / 7
    # ternary: .04, .25, .09, 0, .04, .25, .01                 -> mean 0.68 / 7
    # scaled a = 0.8: .16, .09, .09, 0, .04, .09, .01          -> mean 0.48 / 7
    assert quantization_error(U, "binary", 0.5).item() == pytest.approx(2.08 / 7)
    assert quantization_error(U, "ternary", 0.5).item() == pytest.approx(0.68 / 7)
    assert quantization_error(U, "scaled_ternary", 0.5, a=0.8).item() == pytest.approx(0.48 / 7)


def test_best_amplitude_is_the_mean_magnitude_of_the_values_that_fire():
    # |u| >= 0.5: 1.2, 0.5, 0.5, 0.9 -> a* = 3.1 / 4
    assert best_amplitude(U, 0.5).item() == pytest.approx(0.775)


def test_best_amplitude_beats_every_amplitude_on_a_grid():
    g = torch.Generator().manual_seed(3)
    u = torch.randn(2000, generator=g, dtype=torch.float64) * 0.7
    a_star = best_amplitude(u, 0.5)
    grid = torch.linspace(0.05, 3.0, 591, dtype=torch.float64)
    errors = torch.stack([quantization_error(u, "scaled_ternary", 0.5, a) for a in grid])
    assert quantization_error(u, "scaled_ternary", 0.5, a_star) <= errors.min() + 1e-12
    assert abs(grid[errors.argmin()].item() - a_star.item()) <= 0.005 + 1e-9
    assert quantization_error(u, "scaled_ternary", 0.5, a_star) < quantization_error(u, "ternary", 0.5)


def test_best_amplitude_per_channel_is_each_channels_own_optimum():
    u = torch.tensor([[[1.0, 0.1]], [[-2.0, 3.0]]]).transpose(0, 1)  # [1, 2, 2]: channel dim 1
    a = best_amplitude(u, 0.5, channel_dim=1)
    assert a.tolist() == [1.0, 2.5]


def test_best_amplitude_is_nan_when_nothing_reaches_the_threshold():
    assert math.isnan(best_amplitude(torch.tensor([0.1, -0.2]), 0.5).item())


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"kind": "real"}, "kind"),
        ({"kind": "ternary", "threshold": 0.0}, "threshold"),
        ({"kind": "binary", "a": 0.5}, "a="),
    ],
)
def test_quantize_rejects_bad_arguments_naming_them(kwargs, name):
    with pytest.raises(ValueError, match=name):
        quantize(U, **kwargs)


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(st.floats(-5, 5, allow_nan=False, width=32), min_size=1, max_size=40),
    threshold=st.floats(0.01, 3.0),
    a=st.floats(0.01, 4.0),
)
def test_quantize_output_always_lies_in_the_level_set(values, threshold, a):
    u = torch.tensor(values)
    assert set(quantize(u, "binary", threshold).tolist()) <= {0.0, 1.0}
    assert set(quantize(u, "ternary", threshold).tolist()) <= {-1.0, 0.0, 1.0}
    a32 = torch.tensor(a).item()
    assert set(quantize(u, "scaled_ternary", threshold, a).tolist()) <= {-a32, 0.0, a32}
    # and the optimal amplitude never does worse than a = 1
    a_star = best_amplitude(u.double(), threshold)
    if not math.isnan(a_star.item()):
        assert (
            quantization_error(u.double(), "scaled_ternary", threshold, a_star)
            <= quantization_error(u.double(), "ternary", threshold) + 1e-12
        )
