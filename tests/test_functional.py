"""Hand-computed recurrences and the multi-step == single-step-loop equivalence."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tspike_lab import functional as F
from tspike_lab.errors import ConfigError


def test_three_ternary_steps_by_hand_with_zero_reset():
    # beta 0.25, th 0.5: u1 = 0.6 -> +1; reset to 0: u2 = 0 + (-0.3) -> 0;
    # u3 = 0.25 * -0.3 + (-0.5) = -0.575 -> -1
    x = torch.tensor([[0.6], [-0.3], [-0.5]])
    b, u = F.oracle_lif_seq(x)
    torch.testing.assert_close(u.flatten(), torch.tensor([0.6, -0.3, -0.575]))
    assert b.flatten().tolist() == [1, 0, -1]


def test_two_binary_steps_by_hand_a_negative_membrane_does_not_fire_or_reset():
    # u1 = -0.8 -> 0 (binary has no negative spike, no reset); u2 = 0.25 * -0.8 + 0.9 = 0.7 -> 1
    x = torch.tensor([[-0.8], [0.9]])
    b, u = F.oracle_lif_seq(x, kind="binary")
    torch.testing.assert_close(u.flatten(), torch.tensor([-0.8, 0.7]))
    assert b.flatten().tolist() == [0, 1]


def test_subtract_reset_subtracts_for_plus_one_and_adds_for_minus_one():
    # u1 = 0.9 -> +1; u2 = 0.25*0.9 - 0.5 + 0 = -0.275 -> 0; u3 = -0.06875 - 0.6 -> -1;
    # u4 = 0.25 * -0.66875 + 0.5 + 0 = 0.3328125 -> 0
    x = torch.tensor([[0.9], [0.0], [-0.6], [0.0]], dtype=torch.float64)
    b, u = F.oracle_lif_seq(x, reset_mechanism="subtract")
    torch.testing.assert_close(u.flatten(), torch.tensor([0.9, -0.275, -0.66875, 0.3328125], dtype=torch.float64))
    assert b.flatten().tolist() == [1, 0, -1, 0]


def _loop(x_seq, **kw):
    mem = torch.zeros_like(x_seq[0])
    bs, ms = [], []
    for x in x_seq:
        b, mem = F.lif_step(x, mem, **kw)
        bs.append(b)
        ms.append(mem)
    return torch.stack(bs), torch.stack(ms)


@pytest.mark.parametrize("kind", ["binary", "ternary"])
@pytest.mark.parametrize("reset", ["zero", "subtract"])
@pytest.mark.parametrize("sg", ["ste", "atan", "triangle"])
@pytest.mark.parametrize("detach", [False, True])
def test_multi_step_equals_the_single_step_loop_in_forward_and_gradient(kind, reset, sg, detach):
    torch.manual_seed(0)
    x = torch.randn(5, 4, 3, 6, dtype=torch.float64)
    kw = dict(kind=kind, reset_mechanism=reset, spike_grad=sg, detach_reset=detach)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    b1, m1 = F.oracle_lif_seq(x1, **kw)
    b2, m2 = _loop(x2, **kw)
    assert torch.equal(b1, b2)
    torch.testing.assert_close(m1, m2, rtol=0, atol=1e-14)
    w = torch.randn_like(b1)
    ((b1 * w).sum() + (m1 * w).sum()).backward()
    ((b2 * w).sum() + (m2 * w).sum()).backward()
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-12, atol=1e-12)


def test_reset_path_carries_gradient_unless_detached():
    x = torch.tensor([[0.8], [0.1]], requires_grad=True)
    b, _ = F.oracle_lif_seq(x, detach_reset=False)
    F.oracle_lif_seq(x)[1][1].sum().backward()
    g_attached = x.grad[0].item()
    x.grad = None
    F.oracle_lif_seq(x, detach_reset=True)[1][1].sum().backward()
    g_detached = x.grad[0].item()
    # u2 = beta * u1 * (1 - |b1|) + x2; du2/du1 = beta*(1-|b1|) - beta*u1*sign(b1)*1 = -0.25*0.8
    assert g_attached == pytest.approx(-0.2)
    assert g_detached == pytest.approx(0.0)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.floats(-3, 3, allow_nan=False, width=32), min_size=1, max_size=12),
    st.sampled_from(["binary", "ternary"]),
    st.floats(0.05, 2.0),
)
def test_spikes_stay_in_the_level_set_and_any_spike_resets_to_zero(xs, kind, th):
    x = torch.tensor(xs, dtype=torch.float64).reshape(-1, 1)
    b, u = F.oracle_lif_seq(x, kind=kind, threshold=th, beta=0.25)
    allowed = {0.0, 1.0} if kind == "binary" else {-1.0, 0.0, 1.0}
    assert set(b.flatten().tolist()) <= allowed
    assert torch.equal(b != 0, u.abs() >= th if kind == "ternary" else u >= th)
    for t in range(1, len(xs)):
        if b[t - 1].item() != 0:  # hard reset: the next membrane is exactly the input
            assert u[t].item() == x[t].item()
        else:
            assert u[t].item() == pytest.approx(0.25 * u[t - 1].item() + x[t].item())


def test_bad_kind_reset_and_rank_are_rejected_naming_the_value():
    with pytest.raises(ConfigError, match="kind must be one of .* got 'quaternary'"):
        F.oracle_lif_seq(torch.zeros(2, 2), kind="quaternary")
    with pytest.raises(ConfigError, match="reset_mechanism must be one of .* got 'none'"):
        F.oracle_lif_seq(torch.zeros(2, 2), reset_mechanism="none")
    with pytest.raises(ConfigError, match="kind must be one of .* got 'quaternary'"):
        F.fire(torch.zeros(2), 0.5, "quaternary")
    with pytest.raises(ValueError, match=r"\[T, B, \.\.\.\].*shape \(3,\)"):
        F.oracle_lif_seq(torch.zeros(3))


def test_the_library_has_one_public_multi_step_lif_and_the_oracle_under_its_own_name():
    from tspike_lab import kernels

    assert not hasattr(F, "lif_seq") and "lif_seq" not in F.__all__
    x = torch.randn(3, 2, 4, dtype=torch.float64)
    b_ref, m_ref = F.oracle_lif_seq(x)
    b, m = kernels.lif_seq(x, backend="torch", return_mem=True)
    assert torch.equal(b, b_ref) and torch.equal(m, m_ref)


@pytest.mark.parametrize("backend", ["torch", "auto"])
def test_the_multi_step_entry_point_checks_the_kind_once_per_call(backend, monkeypatch):
    from tspike_lab import kernels

    calls = []
    check_kind = F.check_kind
    monkeypatch.setattr(F, "check_kind", lambda kind: (calls.append(kind), check_kind(kind))[1])
    kernels.lif_seq(torch.randn(3, 2, 4), kind="binary", backend=backend)
    assert calls == ["binary"]
    with pytest.raises(ConfigError, match="kind must be one of .* got 'quaternary'"):
        kernels.lif_seq(torch.randn(3, 2, 4), kind="quaternary", backend=backend)
