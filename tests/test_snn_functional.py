"""Signed-spike metrics and losses: snnTorch's own on spikes in {0, 1}, right on {-1, 0, 1}."""

import math
import warnings

import pytest
import snntorch.functional as sf
import torch
from torch import nn

import tspike_lab as tl
from tspike_lab import snn_functional as SF

# [T=3, B=1, N=3]: neuron 1 fires -1 first (t=0), neuron 2 fires +1 at t=1, neuron 0 at t=2.
TERNARY = torch.tensor([[[0.0, -1.0, 0.0]], [[0.0, 0.0, 1.0]], [[1.0, 0.0, 0.0]]])


def binary_train(seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 2, (6, 4, 5), generator=g).float(), torch.randint(0, 5, (4,), generator=g)


def value_and_grad(fn, spk, targets):
    spk = spk.clone().requires_grad_()
    value = fn(spk, targets.clone())
    value.backward()
    return value.detach(), spk.grad


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("name", ["ce_temporal_loss", "mse_temporal_loss"])
def test_on_binary_spikes_the_temporal_losses_equal_snntorchs_in_value_and_gradient(seed, name):
    spk, targets = binary_train(seed)
    ours, grad_ours = value_and_grad(getattr(SF, name)(), spk, targets)
    theirs, grad_theirs = value_and_grad(getattr(sf, name)(), spk, targets)
    assert torch.equal(ours, theirs) and torch.equal(grad_ours, grad_theirs)
    assert grad_ours.abs().sum() > 0


@pytest.mark.parametrize("seed", range(3))
def test_on_binary_spikes_accuracy_temporal_and_the_l1_value_equal_snntorchs(seed):
    spk, targets = binary_train(seed)
    assert SF.accuracy_temporal(spk, targets) == sf.accuracy_temporal(spk, targets)
    assert torch.equal(SF.l1_rate_sparsity(0.1)(spk), sf.l1_rate_sparsity(0.1)(spk))


def test_by_design_the_l1_penalty_gives_no_gradient_where_no_spike_fired():
    # d|spk|/dspk = sign(spk): 0 where silent. snnTorch's sum gives 1 there, which for a ternary
    # neuron near -threshold pushes the membrane towards a -1 spike.
    spk = TERNARY.clone().requires_grad_()
    SF.l1_rate_sparsity(1.0)(spk).backward()
    assert torch.equal(spk.grad, TERNARY)


def test_snntorch_takes_a_minus_one_as_the_first_spike_and_we_take_the_first_plus_one():
    # snnTorch: t * spk makes neuron 1's -1 a spike at time -2, the earliest of all.
    assert sf.accuracy_temporal(TERNARY, torch.tensor([1])) == 1.0
    # Ours: first positive spikes at t = 2, none (T - 1 = 2), 1: neuron 2 is first.
    assert SF.accuracy_temporal(TERNARY, torch.tensor([2])) == 1.0
    assert SF.accuracy_temporal(TERNARY, torch.tensor([1])) == 0.0


def test_ce_temporal_loss_by_hand_on_a_ternary_train():
    # logits = -t_first = [-2, -2, -1], target 2: CE = log(1 + 2 / e).
    loss = SF.ce_temporal_loss()(TERNARY, torch.tensor([2]))
    assert loss.item() == pytest.approx(math.log(1 + 2 / math.e))


def test_mse_temporal_loss_by_hand_on_a_ternary_train():
    # Label 2, on 0, off 2: target times [2, 2, 0]; t_first = [2, 2, 1]: MSE of t / T = (1/3)^2 / 3.
    loss = SF.mse_temporal_loss(on_target=0, off_target=2)(TERNARY, torch.tensor([2]))
    assert loss.item() == pytest.approx(1 / 27)


def test_the_amplitude_does_not_shift_a_first_spike_time():
    targets = torch.tensor([2])
    for fn in (SF.ce_temporal_loss(), SF.mse_temporal_loss()):
        assert fn(0.3 * TERNARY, targets).item() == pytest.approx(fn(TERNARY, targets).item())


def test_the_l1_penalty_counts_spikes_of_either_sign():
    assert SF.l1_rate_sparsity(0.5)(2.0 * TERNARY).item() == 3.0
    # snnTorch's: +1 + 1 - 1, a -1 spike lowers its penalty.
    assert sf.l1_rate_sparsity(0.5)(2.0 * TERNARY).item() == 1.0


def test_positive_spikes_keeps_the_plus_ones_and_passes_the_gradient_straight_through():
    spk = (0.5 * TERNARY).requires_grad_()
    fired = SF.positive_spikes(spk)
    assert torch.equal(fired, (TERNARY > 0).float())
    (fired * torch.arange(9.0).reshape(3, 1, 3)).sum().backward()
    assert torch.equal(spk.grad, torch.arange(9.0).reshape(3, 1, 3))


def test_the_summing_helpers_are_snntorchs_and_read_a_net_count():
    assert SF.accuracy_rate is sf.accuracy_rate and SF.mse_count_loss is sf.mse_count_loss
    assert SF.ce_rate_loss is sf.ce_rate_loss and SF.ce_count_loss is sf.ce_count_loss
    # Neuron 0: +1 +1 -1 -1 (four spikes, net 0); neuron 1: one +1 (net 1): neuron 1 wins.
    spk = torch.tensor([[[1.0, 0.0]], [[1.0, 1.0]], [[-1.0, 0.0]], [[-1.0, 0.0]]])
    assert SF.accuracy_rate(spk, torch.tensor([1])) == 1.0
    loss = SF.ce_count_loss()(spk, torch.tensor([1]))
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-1)))


def test_snntorch_bptt_accepts_our_losses_and_regularizer_by_name():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from snntorch import backprop
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Linear(8, 6),
        tl.TernaryLeaky(init_hidden=True),
        nn.Linear(6, 3),
        tl.TernaryLeaky(init_hidden=True, output=True),
    )
    batches = [(torch.randn(4, 8) * 2, torch.tensor([0, 1, 2, 1])) for _ in range(2)]
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    for criterion in (SF.ce_temporal_loss(), SF.mse_temporal_loss()):
        loss = backprop.BPTT(
            net,
            batches,
            optimizer=optimizer,
            criterion=criterion,
            num_steps=4,
            time_var=False,
            regularization=SF.l1_rate_sparsity(1e-3),
        )
        assert torch.isfinite(loss)
