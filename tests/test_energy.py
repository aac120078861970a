"""Counting MACs and synaptic operations, and energy estimates (tspike_lab.energy)."""

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from tspike_lab.energy import (
    E_AC_PJ,
    E_MAC_PJ,
    ann_equivalent,
    conv_sops,
    count_ops,
    energy_pj,
    is_spike_input,
    linear_sops,
    table5_counts,
    table5_energy_uj,
)
from tspike_lab.models import ARCHS, build_model
from tspike_lab.models.layers import ConvBN
from tspike_lab.reparam import reparameterize


class OneConvBN(nn.Module):
    """One time-folded 3x3 conv, C_in=1 -> C_out=4, padding 1, on [T, B, 1, 5, 5]."""

    def __init__(self):
        super().__init__()
        self.cb = ConvBN(1, 4, 3, 1, 1)

    def forward(self, x_seq):
        return self.cb(x_seq)


def _pixel_map(*pixels):
    x = torch.zeros(1, 1, 1, 5, 5)  # [T, B, C, H, W]
    for (i, j), v in pixels:
        x[0, 0, 0, i, j] = v
    return x


@pytest.mark.parametrize(
    "pixels, expected",
    [
        ([((2, 2), 1.0)], 9 * 4),  # interior pixel: 9 output positions x 4 channels
        ([((2, 2), -1.0)], 9 * 4),  # a -1 spike costs the same accumulates
        ([((0, 0), 1.0)], 4 * 4),  # corner: 4 output positions
        ([((0, 2), -1.0)], 6 * 4),  # edge: 6 output positions
        ([((2, 2), 1.0), ((0, 0), -1.0), ((0, 2), 1.0)], (9 + 4 + 6) * 4),
        ([], 0),
    ],
)
def test_a_hand_placed_ternary_map_triggers_exactly_the_hand_counted_accumulates(pixels, expected):
    counts = count_ops(OneConvBN().eval(), _pixel_map(*pixels))
    (row,) = counts.layers
    assert (row.name, row.op, row.input) == ("cb.conv", "conv", "spikes")
    assert row.sops == expected and row.macs == 0
    assert row.dense_macs == 4 * 25 * 9
    assert counts.total()["sops"] == expected
    assert counts.total()["energy_pj"] == pytest.approx(expected * E_AC_PJ)


def test_a_real_valued_input_to_the_same_conv_counts_dense_macs():
    x = _pixel_map(((2, 2), 0.3), ((1, 1), 0.7))
    (row,) = count_ops(OneConvBN().eval(), x).layers
    assert row.input == "dense" and row.sops == 0 and row.macs == 4 * 25 * 9


def _brute_force_sops(x, c_out, k, stride, padding, groups):
    n_, c_in, h, w = x.shape
    h_out = (h + 2 * padding - k) // stride + 1
    w_out = (w + 2 * padding - k) // stride + 1
    per_group = c_in // groups
    total = 0
    for n in range(n_):
        for o in range(c_out):
            g = o // (c_out // groups)
            for i in range(h_out):
                for j in range(w_out):
                    for c in range(g * per_group, (g + 1) * per_group):
                        for di in range(k):
                            for dj in range(k):
                                r, s = i * stride - padding + di, j * stride - padding + dj
                                if 0 <= r < h and 0 <= s < w and x[n, c, r, s] != 0:
                                    total += 1
    return total


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    groups=st.sampled_from([1, 2]),
    k=st.sampled_from([1, 2, 3]),
    stride=st.sampled_from([1, 2]),
    padding=st.sampled_from([0, 1]),
    density=st.floats(0.0, 1.0),
)
def test_conv_sops_equal_a_brute_force_count_over_output_positions(seed, groups, k, stride, padding, density):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(-1, 2, (2, 4, 5, 6), generator=g).float()
    x = x * (torch.rand(x.shape, generator=g) < density)
    conv = nn.Conv2d(4, 4, k, stride, padding, groups=groups, bias=False)
    assert conv_sops(conv, x) == _brute_force_sops(x, 4, k, stride, padding, groups)


def test_linear_sops_are_the_nonzero_inputs_times_the_outputs():
    x = torch.tensor([[[0.0, 1.0, -1.0, 0.0, 1.0]]])  # [T, B, in]
    assert linear_sops(nn.Linear(5, 7), x) == 3 * 7


def test_spikes_scaled_by_a_per_channel_amplitude_still_count_as_spikes_but_pooled_spikes_do_not():
    b = torch.tensor([[[[1.0, 0.0], [-1.0, 1.0]], [[0.0, 1.0], [1.0, 0.0]]]])  # [1, 2, 2, 2]
    a = torch.tensor([0.7, 1.3]).view(1, 2, 1, 1)
    assert is_spike_input(b) and is_spike_input(a * b)
    pooled = torch.tensor([[0.25, 0.5, 0.0], [0.5, 0.25, 0.0]])  # [B, C]: channels 0 and 1 take two magnitudes
    assert not is_spike_input(pooled, channel_dim=-1)


def test_the_classifier_after_average_pooling_counts_macs_not_sops():
    model = nn.Sequential(nn.Linear(3, 2))
    pooled = torch.tensor([[[0.25, 0.5, 0.0]], [[0.75, 0.0, 1.0]]])  # [T, B, C]: average-pooled spikes
    (row,) = count_ops(model, pooled).layers
    assert row.input == "dense" and row.macs == 2 * 3 * 2 and row.sops == 0


def _small(neuron="ternary", num_steps=2, **kw):
    torch.manual_seed(0)
    return build_model("small", neuron=neuron, num_classes=3, num_steps=num_steps, in_channels=1, width=2, **kw).eval()


def test_the_static_stem_counts_once_executed_and_t_times_in_the_paper_convention():
    model = _small(num_steps=3)
    counts = count_ops(model, torch.randn(2, 1, 8, 8))
    stem = counts.layers[0]
    assert stem.name == "stem.conv" and stem.input == "dense"
    assert stem.items == 2 and stem.paper_repeat == 3
    assert stem.macs == 2 * (2 * 8 * 8) * 9  # B * C_out*H*W * C_in*k*k
    executed, paper = counts.total("executed"), counts.total("paper")
    assert paper["macs"] - executed["macs"] == pytest.approx(2 * stem.macs / 2)
    assert paper["sops"] == executed["sops"]
    assert all(r.paper_repeat == 1 for r in counts.layers[1:])


def test_event_frames_run_the_stem_every_step_so_both_conventions_agree():
    model = _small(num_steps=3)
    counts = count_ops(model, torch.randn(3, 2, 1, 8, 8))
    assert counts.layers[0].items == 6 and counts.layers[0].paper_repeat == 1
    assert counts.total("executed") == counts.total("paper")


def test_totals_are_per_sample_sums_of_the_rows_priced_at_45nm():
    model = _small()
    counts = count_ops(model, torch.randn(4, 1, 8, 8))
    macs = sum(r.macs for r in counts.layers) / 4
    sops = sum(r.sops for r in counts.layers) / 4
    total = counts.total()
    assert total["macs"] == macs and total["sops"] == sops
    assert total["energy_pj"] == pytest.approx(E_MAC_PJ * macs + E_AC_PJ * sops)
    assert all(r.sops <= r.dense_macs for r in counts.layers)
    assert sops > 0
    json.dumps(counts.to_dict())


def test_ann_equivalent_of_small_is_the_hand_summed_macs_of_one_pass():
    # stem 2*64*9 = 1152; block 0: 2 x 2*64*18 = 4608; block 1: cb1 64*18 = 1152, cb2 64*36 = 2304,
    # 1x1 shortcut 64*2 = 128; classifier 4*3 = 12
    expected = 1152 + 4608 + 1152 + 2304 + 128 + 12
    for num_steps, batch in ((1, 1), (4, 3)):
        ann = ann_equivalent(_small(num_steps=num_steps), torch.randn(batch, 1, 8, 8))
        assert ann["macs"] == expected
        assert ann["energy_pj"] == pytest.approx(expected * E_MAC_PJ)
        assert ann["layers"]["stem.conv"] == 1152


def test_re_parameterization_leaves_the_synaptic_operation_count_unchanged():
    torch.manual_seed(1)
    model = _small("trainable_ternary", num_steps=2).double()
    with torch.no_grad():
        for i, (_, lif) in enumerate([(n, m) for n, m in model.named_modules() if hasattr(m, "graded_spikes_factor")]):
            lif.graded_spikes_factor.fill_(0.6 + 0.2 * i)
    x = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    before = count_ops(model, x)
    after = count_ops(reparameterize(model), x)
    assert [(r.name, r.input, r.sops, r.macs) for r in before.layers] == [
        (r.name, r.input, r.sops, r.macs) for r in after.layers
    ]
    assert before.layers[1].input == "spikes"  # a * b with a != 1 still counts as spikes


def test_energy_is_priced_per_mac_and_per_accumulate():
    assert energy_pj(10, 100) == pytest.approx(10 * 4.6 + 100 * 0.9)
    assert energy_pj(10, 100, e_mac_pj=1.0, e_ac_pj=0.0) == 10.0
    with pytest.raises(ValueError, match="sops"):
        energy_pj(1, -1)


def test_count_ops_rejects_an_unknown_convention():
    counts = count_ops(OneConvBN().eval(), _pixel_map())
    with pytest.raises(ValueError, match="convention"):
        counts.total("ann")


@pytest.mark.parametrize("neuron", ["binary", "ternary", "trainable_binary", "trainable_ternary"])
def test_count_ops_runs_on_small_with_every_neuron(neuron):
    counts = count_ops(_small(neuron), torch.randn(2, 1, 8, 8))
    assert [r.name for r in counts.layers][0] == "stem.conv" and counts.layers[-1].name == "classifier"
    assert counts.total()["sops"] > 0


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_count_ops_runs_on_every_architecture(arch):
    torch.manual_seed(0)
    kw = {"width": 2} if arch == "small" else {}
    model = build_model(arch, neuron="ternary", num_classes=10, num_steps=1, **kw).eval()
    counts = count_ops(model, torch.randn(1, 3, 32, 32))
    convs = sum(isinstance(m, nn.Conv2d) for m in model.modules())
    assert len(counts.layers) == convs + 1
    assert counts.layers[0].input == "dense" and counts.total()["macs"] > 0
    assert counts.ann()["macs"] >= counts.total()["macs"]


def test_table5_counts_are_the_same_per_sample_averages_whatever_the_chunking():
    torch.manual_seed(0)
    model = build_model("small", neuron="ternary", num_classes=10, num_steps=2, in_channels=1, width=4).eval()
    x = torch.randn(10, 1, 8, 8) * 2
    whole = table5_counts(model, x, chunk_size=10)
    chunked = table5_counts(model, x, chunk_size=3)
    assert set(whole) == set(chunked)
    for key in whole:
        assert chunked[key] == pytest.approx(whole[key], rel=1e-12), key
    # #Flops: the first layer's MACs (4 channels x 8 x 8 outputs x 1 x 3 x 3), T=2 times, as the released code runs it
    assert whole["flops"] == 4 * 8 * 8 * 1 * 9 * 2
    assert whole["sign"] == 2 * whole["neuron_steps"]  # two threshold tests per ternary neuron-step
    assert whole["energy_uj"] == pytest.approx(table5_energy_uj(whole["flops"], whole["sops"], whole["sign"]))
    with pytest.raises(ValueError, match="chunk_size must be an int >= 1, got 0"):
        table5_counts(model, x, chunk_size=0)
