"""The fused single step of TernaryLeaky / BinaryLeaky (tspike_lab.kernels.step) against the neuron's general path.

The general path is the neuron's op-by-op update (autograd through each operation); the fused
step must give its spikes and membranes bit for bit and its gradients, for every option it takes.
"""

import ctypes
import itertools
import warnings

import pytest
import snntorch
import torch

import tspike_lab as tl
from tspike_lab import surrogate
from tspike_lab.kernels import build, cpu
from tspike_lab.kernels import step as fused_step

needs_c = pytest.mark.skipif(
    not cpu.available(), reason=f"the C kernel does not build here: {cpu.unavailable_reason()}"
)

SURROGATES = {
    "ste": surrogate.STE(),
    "triangle": surrogate.Triangle(0.5),
    "atan": surrogate.ATan(2.0),
    "sigmoid": surrogate.Sigmoid(5.0),
}


def _inputs(shape=(5, 3, 8), dtype=torch.float64, seed=0):
    """x [T, ...] with the thresholds (+-0.5), the STE window's edges (+-1.0) and 0 planted at t = 0."""
    torch.manual_seed(seed)
    x = torch.randn(shape, dtype=dtype) * 0.8
    x.view(-1)[:7] = torch.tensor([0.5, -0.5, 1.0, -1.0, 0.0, 0.25, -0.75], dtype=dtype)
    return x


def _run(lif, x_seq, fused: bool, monkeypatch, mem_weight=0.5):
    """``(spk, mem, dL/dx, dL/da or None, fused steps taken)`` of ``lif`` stepped over ``x_seq``, the snnTorch way."""
    with monkeypatch.context() as m:
        if not fused:
            m.setattr(fused_step, "step_reason", lambda *args: "the general path, for comparison")
        x_seq = x_seq.clone().requires_grad_()
        mem = lif.init_leaky()
        spk_rec, mem_rec, steps = [], [], 0
        for x in x_seq:
            spk, mem = lif(x, mem)
            steps += type(mem.grad_fn).__name__ == "LIFStepCPUBackward"
            spk_rec.append(spk)
            mem_rec.append(mem)
        spk, mem = torch.stack(spk_rec), torch.stack(mem_rec)
        weights = torch.linspace(-1, 1, spk.numel(), dtype=spk.dtype).reshape(spk.shape)
        ((spk + mem_weight * mem) * weights).sum().backward()
    a = lif.graded_spikes_factor
    return spk.detach(), mem.detach(), x_seq.grad, (a.grad.clone() if a.grad is not None else None), steps


def _pair(cls, **kw):
    return [cls(**kw).double() for _ in range(2)]


@needs_c
@pytest.mark.parametrize("cls", [tl.TernaryLeaky, tl.BinaryLeaky])
@pytest.mark.parametrize("reset_mechanism", ["subtract", "zero", "none"])
@pytest.mark.parametrize("detach_reset", [False, True])
@pytest.mark.parametrize("sg", list(SURROGATES))
@pytest.mark.parametrize("amplitude", ["1", "fixed 0.75", "learned"])
def test_the_fused_step_equals_the_general_path_forward_and_gradient(
    cls, reset_mechanism, detach_reset, sg, amplitude, monkeypatch
):
    kw = dict(
        reset_mechanism=reset_mechanism,
        detach_reset=detach_reset,
        spike_grad=SURROGATES[sg],
        graded_spikes_factor=1.0 if amplitude == "1" else 0.75,
        learn_graded_spikes_factor=amplitude == "learned",
    )
    fused, general = _pair(cls, **kw)
    x = _inputs()
    spk_f, mem_f, gx_f, ga_f, steps_f = _run(fused, x, True, monkeypatch)
    spk_g, mem_g, gx_g, ga_g, steps_g = _run(general, x, False, monkeypatch)
    assert (steps_f, steps_g) == (x.shape[0], 0)
    assert spk_g.abs().sum() > 0
    assert torch.equal(spk_f, spk_g) and torch.equal(mem_f, mem_g)
    # Each step's gradients are the general path's bits (next test); over steps, dL/du_t sums what
    # u_t's later uses send back, which autograd adds in its own order: float rounding, a few ulp.
    torch.testing.assert_close(gx_f, gx_g, rtol=1e-13, atol=1e-15)
    if amplitude == "learned":
        torch.testing.assert_close(ga_f, ga_g, rtol=1e-13, atol=0)


@needs_c
@pytest.mark.parametrize("cls", [tl.TernaryLeaky, tl.BinaryLeaky])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("reset_mechanism", ["subtract", "zero", "none"])
@pytest.mark.parametrize("sg", ["ste", "triangle", "atan"])
def test_one_step_gives_the_general_paths_gradients_bit_for_bit(cls, dtype, reset_mechanism, sg, monkeypatch):
    # One step from a membrane that needs a gradient: dL/dspk only, dL/dmem only, both, and x without one.
    x = _inputs((2, 4, 50), dtype=dtype)
    results = []
    for fused in (True, False):
        with monkeypatch.context() as m:
            if not fused:
                m.setattr(fused_step, "step_reason", lambda *args: "off")
            lif = cls(reset_mechanism=reset_mechanism, spike_grad=SURROGATES[sg]).to(dtype)
            xt, m0 = x[1].clone().requires_grad_(), x[0].clone().mul(1.5).requires_grad_()
            xt_nograd = x[1].clone()
            spk, mem = lif(xt, m0)
            g1 = torch.autograd.grad((spk * 0.3).sum(), (xt, m0), retain_graph=True)
            g2 = torch.autograd.grad((mem * 0.7).sum(), (xt, m0), retain_graph=True)
            g3 = torch.autograd.grad((spk * 0.3 + mem * 0.7).sum(), (xt, m0))
            spk4, mem4 = lif(xt_nograd, m0)
            g4 = torch.autograd.grad((spk4 + mem4).sum(), m0)
            results.append((spk.detach(), mem.detach(), *g1, *g2, *g3, *g4))
    for f, g in zip(*results):
        assert f.dtype == dtype and torch.equal(f, g)


@needs_c
@pytest.mark.parametrize("cls", [tl.TernaryLeaky, tl.BinaryLeaky])
def test_nan_and_inf_go_where_the_general_path_sends_them(cls, monkeypatch):
    x = _inputs((4, 2, 9))
    x[0, 0, :4] = torch.tensor([float("nan"), float("inf"), -float("inf"), 0.5], dtype=x.dtype)
    outs = [_run(cls().double(), x, fused, monkeypatch) for fused in (True, False)]
    for f, g in zip(outs[0][:3], outs[1][:3]):
        assert torch.equal(f.isnan(), g.isnan()) and torch.equal(f.nan_to_num(), g.nan_to_num())


@needs_c
def test_without_a_gradient_the_fused_step_saves_nothing_and_gives_the_same_bits(monkeypatch):
    x = _inputs((3, 64, 128), dtype=torch.float32)
    with torch.no_grad():
        lif = tl.TernaryLeaky(init_hidden=True)
        fused = [(lif(xt), lif.mem) for xt in x]
        monkeypatch.setattr(fused_step, "step_reason", lambda *args: "off")
        lif = tl.TernaryLeaky(init_hidden=True)
        general = [(lif(xt), lif.mem) for xt in x]
    for (s1, m1), (s2, m2) in zip(fused, general):
        assert s1.grad_fn is None and torch.equal(s1, s2) and torch.equal(m1, m2)


def _steps_fused(lif, x):
    mem = lif.init_leaky()
    spk, mem = lif(x.clone().requires_grad_(), mem)
    return type(mem.grad_fn).__name__ == "LIFStepCPUBackward"


@needs_c
@pytest.mark.filterwarnings("ignore:Inhibition is an unstable feature")
@pytest.mark.parametrize(
    "kw, fused",
    [
        ({}, True),
        (dict(reset_mechanism="none", detach_reset=True, graded_spikes_factor=torch.ones(5)), True),
        (dict(spike_grad="sigmoid", learn_graded_spikes_factor=True), True),
        (dict(learn_threshold=True), False),
        (dict(learn_beta=True), False),
        (dict(beta=torch.full((5,), 0.25)), False),
        (dict(inhibition=True), False),
        (dict(reset_delay=False), False),
        (dict(state_quant=lambda u: u), False),
        (dict(spike_grad=snntorch.surrogate.atan()), False),
        (dict(surrogate_disable=True), False),
    ],
)
def test_the_fused_step_takes_the_options_it_implements_and_leaves_the_rest_to_the_general_path(kw, fused):
    for cls in (tl.TernaryLeaky, tl.BinaryLeaky):
        assert _steps_fused(cls(**kw), torch.randn(3, 5)) is fused


@needs_c
def test_other_dtypes_devices_and_tracers_take_the_general_path():
    lif = tl.TernaryLeaky()
    assert not _steps_fused(lif, torch.randn(3, 5).bfloat16())
    assert "float32 or float64" in fused_step.step_reason(
        torch.randn(2).half(), torch.randn(2).half(), lif.beta, lif.threshold, lif.spike_grad
    )
    assert "one dtype" not in (
        fused_step.step_reason(torch.randn(2), torch.randn(2), lif.beta, lif.threshold, lif.spike_grad) or ""
    )
    assert "float32 or float64" in fused_step.step_reason(
        torch.randn(2), torch.randn(2).double(), lif.beta, lif.threshold, lif.spike_grad
    )
    with torch.autograd.forward_ad.dual_level():
        assert not _steps_fused(lif, torch.randn(3, 5))

    def reason(x):
        reasons.append(fused_step.step_reason(x, x, lif.beta, lif.threshold, lif.spike_grad))
        return x.sum()

    reasons = []
    torch.func.grad(reason)(torch.randn(3, 5))
    assert reasons == ["torch.compile, torch.jit or a torch.func transform is tracing"]


def test_a_ctypes_mirror_that_disagrees_with_lif_step_args_makes_the_c_kernel_unavailable():
    if not cpu.available():
        pytest.skip(f"the C kernel does not build here: {cpu.unavailable_reason()}")

    class WrongStepArgs(ctypes.Structure):
        _fields_ = [(name, ctypes.c_int64 if name == "threads" else kind) for name, kind in cpu._StepArgs._fields_]

    with pytest.raises(build.KernelUnavailable, match="lif_step_args in lif_cpu.c and its ctypes mirror WrongStepArgs"):
        cpu.check_abi(cpu.library(), step_args=WrongStepArgs)


def test_without_the_c_kernel_the_neuron_steps_on_its_general_path(monkeypatch):
    monkeypatch.setattr(cpu, "unavailable_reason", lambda: "no C compiler (simulated)")
    assert "no C compiler" in fused_step.step_reason(
        torch.randn(2), torch.randn(2), torch.tensor(0.25), torch.tensor(0.5), surrogate.STE()
    )
    x = _inputs((3, 4, 6))
    lif = tl.TernaryLeaky().double()
    assert not _steps_fused(lif, x[0])
    spk, mem = lif(x[0], None)
    assert torch.equal(spk, surrogate.ternary(x[0], 0.5))


@needs_c
def test_the_fused_step_runs_many_threads_on_a_large_step_with_the_same_bits(monkeypatch):
    # 2^17 elements: the kernel's OpenMP blocks, one per thread, with a partial last block.
    x = _inputs((2, 3, 131072 // 3 + 5), dtype=torch.float32)
    outs = [_run(tl.TernaryLeaky(), x, fused, monkeypatch) for fused in (True, False)]
    for f, g in zip(outs[0][:3], outs[1][:3]):
        assert torch.equal(f, g)


@needs_c
def test_a_non_contiguous_input_and_an_expanded_gradient_are_taken(monkeypatch):
    x = _inputs((3, 8, 6)).transpose(1, 2)  # [T, 6, 8], each step strided
    res = []
    for fused in (True, False):
        with monkeypatch.context() as m:
            if not fused:
                m.setattr(fused_step, "step_reason", lambda *args: "off")
            xs = x.clone().requires_grad_()
            lif = tl.TernaryLeaky().double()
            mem = lif.init_leaky()
            total = 0
            for xt in xs:
                spk, mem = lif(xt, mem)
                total = total + spk.sum() + mem.sum()  # gradients of ones, expanded (stride 0)
            total.backward()
            res.append(xs.grad)
    assert torch.equal(res[0], res[1])


def test_every_option_combination_is_covered_above():
    # The parametrisation of the first test: kinds x resets x detach x surrogates x amplitudes.
    combos = list(
        itertools.product(
            [tl.TernaryLeaky, tl.BinaryLeaky],
            ["subtract", "zero", "none"],
            [False, True],
            SURROGATES,
            ["1", "fixed 0.75", "learned"],
        )
    )
    assert len(combos) == 144
    assert set(type(s) for s in SURROGATES.values()) == set(fused_step.SURROGATE_CODES)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fused_step.step_args(
            10, beta=0.25, threshold=0.5, reset=2, ternary=True, detach=False, spike_grad=surrogate.STE()
        )


def test_a_subclass_that_overrides_the_spike_function_keeps_its_general_path():
    class Doubled(tl.TernaryLeaky):  # a user's variant: fires at twice the threshold
        def _fire_unscaled(self, mem):
            return surrogate.ternary(mem, 2 * self.threshold, self.spike_grad)

    class Renamed(tl.BinaryLeaky):  # adds a method, overrides nothing the fused step replaces
        def describe(self):
            return "binary"

    x = torch.tensor([[0.6, -0.7, 1.2]])
    assert not Doubled._fusable and not _steps_fused(Doubled(), x)
    assert Doubled()(x, None)[0].tolist() == [[0.0, 0.0, 1.0]]
    assert Renamed._fusable and tl.TernaryLeaky._fusable
    if cpu.available():
        assert _steps_fused(Renamed(), x)


@needs_c
@pytest.mark.parametrize("cls", [tl.TernaryLeaky, tl.BinaryLeaky])
def test_second_order_gradients_are_refused_by_the_fused_step_and_given_by_the_general_path(cls):
    x = torch.randn(4, 8, dtype=torch.float64, requires_grad=True)

    def gradient(lif, create_graph):
        mem, out = lif.init_leaky(), 0
        for _ in range(3):
            spk, mem = lif(2 * x, mem)
            out = out + (spk * mem).sum() + (mem**2).sum()
        return torch.autograd.grad(out, x, create_graph=create_graph)[0]

    fused = cls(beta=0.5)
    assert _steps_fused(fused, x)
    with pytest.raises(RuntimeError, match=r"create_graph=True.*fused_step = False"):
        gradient(fused, create_graph=True)
    general = cls(beta=0.5)
    general.fused_step = False
    assert not _steps_fused(general, x)
    g = gradient(general, create_graph=True)
    torch.testing.assert_close(g.detach(), gradient(cls(beta=0.5), create_graph=False))  # first order: the same
    (gg,) = torch.autograd.grad(g.pow(2).sum(), x)  # through the membrane terms, not zero
    assert torch.isfinite(gg).all() and gg.abs().sum() > 0
