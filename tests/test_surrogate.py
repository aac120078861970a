"""Contract tests of the spike functions and their surrogate gradients."""

import math

import pytest
import torch

from tspike_lab import surrogate

SMOOTH = [surrogate.triangle(0.5), surrogate.atan(2.0), surrogate.sigmoid(5.0)]


def _smoothed_heaviside(sg, x):
    """Antiderivative of sg.grad in float64, the function the surrogate stands for."""
    if isinstance(sg, surrogate.ATan):
        return torch.atan(math.pi / 2 * sg.alpha * x) / math.pi + 0.5
    if isinstance(sg, surrogate.Sigmoid):
        return torch.sigmoid(sg.slope * x)
    if isinstance(sg, surrogate.Triangle):
        w = sg.width
        y = x.clamp(-w, w) / w
        return torch.where(y < 0, 0.5 * (1 + y) ** 2, 1 - 0.5 * (1 - y) ** 2)
    raise AssertionError(sg)


@pytest.mark.parametrize("sg", SMOOTH, ids=lambda s: s.name)
def test_each_smooth_surrogate_backward_matches_a_float64_finite_difference(sg):
    x = torch.linspace(-2, 2, 400, dtype=torch.float64)  # avoids the kinks at 0, +-w
    eps = 1e-6
    fd = (_smoothed_heaviside(sg, x + eps) - _smoothed_heaviside(sg, x - eps)) / (2 * eps)
    xg = x.clone().requires_grad_()
    sg(xg).sum().backward()
    torch.testing.assert_close(xg.grad, fd, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("sg", SMOOTH, ids=lambda s: s.name)
def test_ternary_surrogate_gradient_is_the_sum_of_both_thresholds(sg):
    u = torch.linspace(-2, 2, 200, dtype=torch.float64, requires_grad=True)  # avoids the kinks at 0, +-1
    th = 0.5
    surrogate.ternary(u, th, sg).sum().backward()
    eps = 1e-6
    f = lambda v: _smoothed_heaviside(sg, v - th) - _smoothed_heaviside(sg, -v - th)
    fd = (f(u.detach() + eps) - f(u.detach() - eps)) / (2 * eps)
    torch.testing.assert_close(u.grad, fd, rtol=1e-5, atol=1e-6)


def test_ste_gradient_is_one_exactly_where_u_over_vth_is_within_one():
    # released code: V_th = 1.0 compared at 0.5, grad 1 where |u / V_th| <= 1
    u = torch.tensor([-1.5, -1.0, -0.7, -0.5, 0.0, 0.3, 0.5, 1.0, 1.0001, 3.0], requires_grad=True)
    b = surrogate.ternary(u, 0.5, surrogate.ste())
    b.sum().backward()
    assert b.tolist() == [-1, -1, -1, -1, 0, 0, 1, 1, 1, 1]
    assert u.grad.tolist() == [0, 1, 1, 1, 1, 1, 1, 1, 0, 0]


def test_binary_ste_gradient_is_the_clamp_window_zero_to_vth():
    u = torch.tensor([-0.1, 0.0, 0.49, 0.5, 1.0, 1.1], requires_grad=True)
    s = surrogate.heaviside(u, 0.5, "ste")
    s.sum().backward()
    assert s.tolist() == [0, 0, 0, 1, 1, 1]
    assert u.grad.tolist() == [0, 1, 1, 1, 1, 0]


@pytest.mark.parametrize("sg", [None, "ste", "atan", "triangle", "sigmoid"])
def test_ternary_outputs_only_minus_one_zero_one_and_fire_at_the_threshold(sg):
    u = torch.tensor([-0.6, -0.5, -0.4999, 0.0, 0.4999, 0.5, 0.6])
    assert surrogate.ternary(u, 0.5, sg).tolist() == [-1, -1, 0, 0, 0, 1, 1]


def test_ternary_accepts_a_plain_snntorch_surrogate_callable():
    import snntorch.surrogate as ss

    u = torch.tensor([-0.7, 0.1, 0.7], requires_grad=True)
    b = surrogate.ternary(u, 0.5, ss.fast_sigmoid(slope=25))
    b.sum().backward()
    # snnTorch's fast_sigmoid fires at x > 0: same values away from the threshold
    assert b.tolist() == [-1, 0, 1]
    assert (u.grad > 0).all()


def test_our_surrogates_work_as_snntorch_spike_grad():
    import snntorch as snn

    lif = snn.Leaky(beta=0.5, spike_grad=surrogate.atan())
    x = torch.tensor([[2.0, 0.1]], requires_grad=True)
    spk, mem = lif(x)
    spk.sum().backward()
    assert spk.tolist() == [[1.0, 0.0]]
    assert x.grad.abs().sum() > 0


@pytest.mark.parametrize("bad", ["relu", 3, object()])
def test_unknown_spike_grad_is_rejected_naming_the_value(bad):
    with pytest.raises(ValueError, match="spike_grad"):
        surrogate.get(bad)


@pytest.mark.parametrize("ctor", [surrogate.ste, surrogate.triangle, surrogate.atan, surrogate.sigmoid])
def test_a_non_positive_surrogate_width_is_rejected(ctor):
    with pytest.raises(ValueError, match="must be > 0"):
        ctor(0.0)
