"""The Triton backend (tspike_lab.kernels.triton_lif) against the oracle: in Triton's CPU interpreter
here, on CUDA where a GPU is present (those tests skip without one, naming the reason), and the
checks that keep a Triton that cannot compile out of a model's forward."""

import os
import subprocess
import sys
import textwrap
import warnings
from importlib.util import find_spec
from types import SimpleNamespace

import pytest
import torch
from test_kernels import DETACH_IDS, SURROGATES, TOL, _inputs, dtype_id, sg_id

from tspike_lab import functional, kernels, surrogate
from tspike_lab.kernels import triton_lif

needs_cuda_triton = pytest.mark.skipif(
    not triton_lif.available(), reason=f"Triton backend unavailable: {triton_lif.unavailable_reason()}"
)
needs_two_gpus = pytest.mark.skipif(
    not triton_lif.available() or torch.cuda.device_count() < 2, reason="needs two CUDA devices and Triton"
)
needs_triton = pytest.mark.skipif(
    find_spec("triton") is None, reason="triton is not installed (its CPU interpreter checks the kernels)"
)
SPEC = dict(beta=0.25, threshold=0.5, kind="ternary", reset_mechanism="zero", spike_grad=None, detach_reset=False)


def _interpret(script: str, tmp_path=None) -> None:
    """Run ``script`` in a fresh process under Triton's CPU interpreter (TRITON_INTERPRET must be set
    before triton is imported); it must print "ok". A script defining its own @triton.jit kernels is
    run from a file: Triton reads a kernel's source."""
    env = dict(os.environ, TRITON_INTERPRET="1")
    if tmp_path is None:
        cmd = [sys.executable, "-c", script]
    else:
        path = tmp_path / "interpreted.py"
        path.write_text(script)
        cmd = [sys.executable, str(path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]


# -- the first launch: a Triton that cannot compile is found before a model's forward -------------------------


@pytest.fixture
def failing_triton(monkeypatch):
    """CUDA "available" and Triton importable, but every test launch fails (no C compiler here)."""
    launches = []

    def probe(device):
        launches.append(device)
        raise RuntimeError("Failed to find C compiler. Please specify via CC environment variable.")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(triton_lif, "_impl", lambda: SimpleNamespace())
    monkeypatch.setattr(triton_lif, "_probe", probe)
    triton_lif._probe_reason.cache_clear()
    kernels._warn_fallback.cache_clear()
    yield launches
    triton_lif._probe_reason.cache_clear()
    kernels._warn_fallback.cache_clear()


def _cuda_like(dtype=torch.float32):
    # what select_backend reads of a tensor, for a CUDA tensor on a machine without one
    return SimpleNamespace(device=torch.device("cuda", 0), dtype=dtype)


def test_a_triton_whose_first_launch_fails_sends_auto_to_the_next_backend_with_one_warning(failing_triton):
    spec = kernels.make_spec(**SPEC)
    with pytest.warns(RuntimeWarning) as caught:
        assert kernels.select_backend(_cuda_like(), spec) == "fused_torch"
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "backend='auto' does not use the Triton kernels" in message and "Failed to find C compiler" in message
    assert "running backend='fused_torch' instead" in message
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning, and no second test launch
        for _ in range(3):
            assert kernels.select_backend(_cuda_like(), spec) == "fused_torch"
    assert failing_triton == [torch.device("cuda", 0)]
    assert "fail on a test launch on cuda:0: RuntimeError: Failed to find C compiler" in triton_lif.unavailable_reason()
    assert not triton_lif.available()


def test_a_triton_whose_first_launch_fails_is_refused_when_asked_for_by_name(failing_triton):
    spec = kernels.make_spec(**SPEC)
    with pytest.raises(
        ValueError,
        match="backend='triton' cannot run this input: the Triton kernels fail on a "
        "test launch on cuda:0: RuntimeError: Failed to find C compiler",
    ):
        kernels.select_backend(_cuda_like(), spec, "triton")


def test_inputs_the_triton_kernels_do_not_take_go_elsewhere_without_a_warning_or_a_launch(failing_triton):
    spec = kernels.make_spec(**SPEC)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert kernels.select_backend(_cuda_like(torch.float64), spec) == "fused_torch"  # dtype, not the machine
        x = torch.randn(2, 3, 4)
        assert kernels.select_backend(x, spec) == ("fused" if kernels.cpu.available() else "fused_torch")
    assert failing_triton == []  # no test launch for inputs Triton would not run anyway


def test_on_a_machine_without_cuda_the_reason_is_cuda_and_nothing_is_launched(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(triton_lif, "_probe", lambda device: pytest.fail("launched without CUDA"))
    assert triton_lif.unavailable_reason() == "CUDA is not available"


# -- Triton's CPU interpreter ----------------------------------------------------------------------------------


@needs_triton
@pytest.mark.slow  # Triton's CPU interpreter runs every program instance in Python
def test_bfloat16_rounding_keeps_nan_as_nan_and_infinity_as_infinity_in_triton_s_interpreter(tmp_path):
    _interpret(
        textwrap.dedent("""
        import numpy as np
        import torch
        import triton
        import triton.language as tl
        from tspike_lab.kernels._triton_impl import _rnd

        @triton.jit
        def round_bf16(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
            offs = tl.arange(0, BLOCK)
            m = offs < n
            tl.store(y_ptr + offs, _rnd(tl.load(x_ptr + offs, mask=m, other=0.0), 2), mask=m)

        bits = [0x7FFFFFFF,  # NVIDIA's canonical NaN: the carry of the rounding made it -0.0
                0xFFFFFFFF, 0x7FC00000, 0x7F800001, 0xFF800001, 0x7FBFFFFF,  # other NaNs
                0x7F800000, 0xFF800000,  # +-inf
                0x7F7FFFFF, 0xFF7FFFFF,  # the largest floats: round to +-inf, as PyTorch does
                0x3F808000, 0x3F818000, 0x3EAAAAAB, 0x00000001, 0x80000000, 0x3F800000]  # ties, a third, tiny, -0, 1
        x = torch.from_numpy(np.array(bits, dtype=np.uint32).view(np.float32))
        y = torch.empty_like(x)
        round_bf16[(1,)](x, y, len(bits), BLOCK=16)
        nan = x.isnan()
        assert nan[:6].all() and torch.equal(y.isnan(), nan), y.tolist()
        ref = x.to(torch.bfloat16).float()
        assert torch.equal(y[~nan], ref[~nan]), (y.tolist(), ref.tolist())
        assert torch.equal(torch.signbit(y[~nan]), torch.signbit(ref[~nan]))
        assert y[6] == float("inf") and y[7] == float("-inf") and y[8] == float("inf")
        print("ok")
    """),
        tmp_path,
    )


@needs_triton
@pytest.mark.slow  # Triton's CPU interpreter runs every program instance in Python
def test_nan_and_infinite_bfloat16_inputs_give_the_oracles_spikes_membranes_and_gradients_in_the_interpreter():
    _interpret(
        textwrap.dedent("""
        import torch
        from tspike_lab import functional, surrogate
        from tspike_lab.kernels import make_spec, triton_lif
        torch.manual_seed(0)
        for reset in ("zero", "subtract"):
            for sg in (surrogate.STE(), surrogate.Triangle()):
                x = (torch.randint(-96, 97, (3, 2, 64)) / 64).to(torch.bfloat16)
                x[0, 0, :4] = torch.tensor([float("nan"), float("inf"), float("-inf"), 0.75])
                x[1, 1, :3] = torch.tensor([float("inf"), float("nan"), float("-inf")])
                x.requires_grad_(True)
                kw = dict(beta=0.25, threshold=0.5, kind="ternary", reset_mechanism=reset, spike_grad=sg,
                          detach_reset=False)
                b_ref, m_ref = functional.oracle_lif_seq(x, **kw)
                (g_ref,) = torch.autograd.grad(b_ref.sum(), x)
                b, m = triton_lif.lif_seq_triton(x, make_spec(**kw), return_mem=True)
                (g,) = torch.autograd.grad(b.sum(), x)
                key = (reset, sg)
                assert m_ref.isnan().any() and m_ref.isinf().any(), key  # the case is exercised
                assert torch.equal(b, b_ref), key
                torch.testing.assert_close(m, m_ref, rtol=0, atol=0, equal_nan=True, msg=str(key))
                torch.testing.assert_close(g, g_ref, rtol=0, atol=0, equal_nan=True, msg=str(key))
        print("ok")
    """)
    )


@needs_triton
@pytest.mark.slow  # Triton's CPU interpreter runs every program instance in Python
def test_triton_kernels_equal_the_oracle_in_triton_s_cpu_interpreter():
    _interpret(
        textwrap.dedent("""
        import torch
        from tspike_lab import functional, surrogate
        from tspike_lab.kernels import make_spec, triton_lif
        torch.manual_seed(0)
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            for kind in ("binary", "ternary"):
                for reset in ("zero", "subtract"):
                    for sg in (surrogate.STE(), surrogate.Triangle(), surrogate.ATan()):
                        x = (torch.randint(-96, 97, (3, 2, 700)) / 64).to(dtype).requires_grad_(True)
                        kw = dict(beta=0.25, threshold=0.5, kind=kind, reset_mechanism=reset, spike_grad=sg,
                                  detach_reset=False)
                        b_ref, m_ref = functional.oracle_lif_seq(x, **kw)
                        (g_ref,) = torch.autograd.grad(b_ref.sum(), x)
                        b, m = triton_lif.lif_seq_triton(x, make_spec(**kw), return_mem=True)
                        (g,) = torch.autograd.grad(b.sum(), x)
                        assert torch.equal(b, b_ref) and torch.equal(m, m_ref), (dtype, kind, reset, sg)
                        assert torch.equal(g, g_ref), (dtype, kind, reset, sg)
        # the amplitude inside the kernels: one trainable a (float32, as under autocast) or one per channel,
        # contiguous and channels_last steps
        from tspike_lab.kernels import spec as spec_mod
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            for per in ("layer", "channel"):
                for channels_last in (False, True):
                    T, B, C = 3, 2, 5
                    x0 = (torch.randint(-96, 97, (T * B, C, 4, 3)) / 64).to(dtype)
                    if channels_last:
                        x0 = x0.contiguous(memory_format=torch.channels_last)
                    a0 = (0.5 + torch.rand(()) if per == "layer" else 0.5 + torch.rand(C))
                    a0 = a0 if per == "layer" else a0.to(dtype)
                    g = torch.randn(T, B, C, 4, 3).to(dtype)
                    spec = make_spec(beta=0.3, threshold=0.5, kind="ternary", reset_mechanism="zero",
                                     spike_grad=None, detach_reset=False)
                    res = []
                    for fused in (False, True):
                        x = x0.clone().requires_grad_(True)
                        a = a0.clone().requires_grad_(True)
                        xs = x.unflatten(0, (T, B))
                        assert spec_mod.amplitude_reason(xs, a) is None
                        if fused:
                            out = triton_lif.scaled_lif_seq_triton(xs, a, spec)
                            assert type(out.grad_fn).__name__ == "ScaledLIFSeqTritonBackward"
                        else:
                            b, _ = functional.oracle_lif_seq(xs, beta=0.3)
                            out = b * (a if per == "layer" else a.view(-1, 1, 1))
                        out.backward(g)
                        res.append((out, x.grad, a.grad))
                    (o_ref, gx_ref, ga_ref), (o, gx, ga) = res
                    key = (dtype, per, channels_last)
                    assert o.dtype == o_ref.dtype and torch.equal(o, o_ref), key
                    assert torch.equal(gx, gx_ref), key
                    # dL/da: the oracle sums in a's dtype, the kernel per neuron in float32 then in float64
                    exact = (g.double() * o_ref.double().sign()).sum(
                        dim=tuple(d for d in range(5) if per == "layer" or d != 2))
                    assert ga.dtype == a0.dtype, key
                    if a0.dtype == torch.float32:
                        assert torch.allclose(ga.double(), exact, rtol=1e-6, atol=1e-5), key
                    else:  # exact up to the amplitude's own rounding
                        assert torch.equal(ga, exact.to(a0.dtype)), key
        print("ok")
    """)
    )


# -- CUDA: these run where a GPU and Triton are present ---------------------------------------------------------


@needs_cuda_triton
def test_the_first_launch_succeeds_on_a_gpu():
    assert triton_lif.unavailable_reason() is None
    assert triton_lif.unavailable_reason(torch.device("cuda", torch.cuda.current_device())) is None


@needs_cuda_triton
@pytest.mark.parametrize("sg", SURROGATES, ids=sg_id)
def test_triton_gradients_on_cuda_are_the_oracles_bits_but_for_the_sigmoids_exp(sg):
    # Divisions are IEEE (div_rn) or multiplies by the float32 reciprocal, as PyTorch's CUDA kernels
    # divide; a triangle of width 0.3 (not a power of two) checks the reciprocal. tl.exp is an
    # approximate exponential on NVIDIA GPUs: the sigmoid's gradients are equal to float32 rounding
    # over T steps (the CPU tolerance), not bit for bit.
    sg = surrogate.Triangle(0.3) if type(sg) is surrogate.Triangle else sg
    x = _inputs((4, 8, 16, 8, 8), torch.float32, seed=8).cuda().requires_grad_(True)
    g = torch.randn(x.shape, device="cuda")
    kw = dict(beta=0.3, threshold=0.45, kind="ternary", spike_grad=sg)
    b_ref, _ = functional.oracle_lif_seq(x, **kw)
    (gx_ref,) = torch.autograd.grad((b_ref * g).sum(), x)
    b, _ = kernels.lif_seq(x, backend="triton", **kw)
    (gx,) = torch.autograd.grad((b * g).sum(), x)
    assert torch.equal(b, b_ref) and gx.abs().sum() > 0
    if type(sg) is surrogate.Sigmoid:
        scale = max(1.0, gx_ref.abs().max().item())
        torch.testing.assert_close(gx, gx_ref, rtol=TOL[torch.float32]["rtol"], atol=TOL[torch.float32]["atol"] * scale)
    else:
        assert torch.equal(gx, gx_ref)


@needs_cuda_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=dtype_id)
@pytest.mark.parametrize("per", ["layer", "channel"], ids=lambda per: f"a-per-{per}")
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_the_amplitude_and_its_gradient_on_cuda_equal_the_oracles(layout, per, dtype):
    T, B, C, H, W = 3, 4, 24, 9, 9
    torch.manual_seed(2)
    x0 = _inputs((T * B, C, H, W), torch.float32, seed=9).to(dtype).cuda()
    if layout == "channels_last":
        x0 = x0.contiguous(memory_format=torch.channels_last)
    # a float32 scalar a (as under autocast) or one a of the input's dtype per channel
    a0 = (0.5 + torch.rand(())) if per == "layer" else (0.5 + torch.rand(C)).to(dtype)
    a0 = a0.cuda()
    g = torch.randn(T, B, C, H, W).to(dtype).cuda()
    res = []
    for backend in ("torch", "triton"):
        x = x0.clone().requires_grad_(True)
        a = a0.clone().requires_grad_(True)
        out, _ = kernels.lif_seq(x.unflatten(0, (T, B)), backend=backend, amplitude=a)
        if backend == "triton":
            assert type(out.grad_fn).__name__ == "ScaledLIFSeqTritonBackward"
        out.backward(g)
        res.append((out, x.grad, a.grad))
    (o_ref, gx_ref, ga_ref), (o, gx, ga) = res
    assert o.dtype == o_ref.dtype and torch.equal(o, o_ref)
    assert torch.equal(gx, gx_ref)  # dL/db = dL/dout * a, the same product
    assert (o != 0).any() and gx.abs().sum() > 0
    exact = (g.double() * o_ref.double().sign()).sum(dim=tuple(d for d in range(5) if per == "layer" or d != 2))
    assert ga.dtype == a0.dtype
    if a0.dtype == torch.float32:  # per neuron in float32, then per channel in float64
        torch.testing.assert_close(ga.double(), exact, rtol=1e-6, atol=1e-4)
    else:  # exact to the amplitude's own rounding
        assert torch.equal(ga, exact.to(a0.dtype))


@needs_cuda_triton
@pytest.mark.parametrize("reset", ["zero", "subtract"])
def test_nan_and_infinite_bfloat16_inputs_on_cuda_give_the_oracles_spikes_membranes_and_gradients(reset):
    x = (torch.randint(-96, 97, (3, 2, 256)) / 64).to(torch.bfloat16)
    x[0, 0, :4] = torch.tensor([float("nan"), float("inf"), float("-inf"), 0.75])
    x[1, 1, :3] = torch.tensor([float("inf"), float("nan"), float("-inf")])
    x = x.cuda().requires_grad_(True)
    kw = dict(beta=0.25, threshold=0.5, kind="ternary", reset_mechanism=reset)
    b_ref, m_ref = functional.oracle_lif_seq(x, **kw)
    (g_ref,) = torch.autograd.grad(b_ref.sum(), x)
    b, m = kernels.lif_seq(x, backend="triton", return_mem=True, **kw)
    (g,) = torch.autograd.grad(b.sum(), x)
    assert m_ref.isnan().any() and m_ref.isinf().any()
    assert torch.equal(b, b_ref)
    torch.testing.assert_close(m, m_ref, rtol=0, atol=0, equal_nan=True)
    torch.testing.assert_close(g, g_ref, rtol=0, atol=0, equal_nan=True)


@needs_two_gpus
def test_a_tensor_on_a_device_that_is_not_current_runs_on_its_own_device():
    spec = kernels.make_spec(**SPEC)
    assert torch.cuda.current_device() == 0
    x = _inputs((4, 2, 3000), torch.float32, seed=10).to("cuda:1").requires_grad_(True)
    a = torch.tensor(0.7, device="cuda:1", requires_grad=True)
    out = triton_lif.scaled_lif_seq_triton(x, a, spec)
    out.backward(torch.ones_like(out))
    assert out.device == x.grad.device == a.grad.device == torch.device("cuda", 1)
    x_ref = x.detach().clone().requires_grad_(True)
    out_ref = functional.oracle_lif_seq(x_ref)[0] * 0.7
    out_ref.backward(torch.ones_like(out_ref))
    assert torch.equal(out, out_ref.to(out.dtype)) and torch.equal(x.grad, x_ref.grad)
    assert torch.cuda.current_device() == 0
    assert triton_lif.unavailable_reason(torch.device("cuda", 1)) is None


@needs_cuda_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=dtype_id)
@pytest.mark.parametrize("detach", [False, True], ids=DETACH_IDS)
@pytest.mark.parametrize("sg", SURROGATES, ids=sg_id)
@pytest.mark.parametrize("reset", ["zero", "subtract"])
@pytest.mark.parametrize("kind", ["binary", "ternary"])
def test_triton_equals_the_oracle_on_cuda(kind, reset, sg, detach, dtype):
    x = _inputs((4, 8, 16, 8, 8), dtype, seed=7).cuda().requires_grad_(True)
    g = torch.randn(x.shape, device="cuda", dtype=dtype)
    kw = dict(kind=kind, reset_mechanism=reset, spike_grad=sg, detach_reset=detach)
    b_ref, m_ref = functional.oracle_lif_seq(x, **kw)
    (gx_ref,) = torch.autograd.grad((b_ref * g).sum(), x)
    b, m = kernels.lif_seq(x, backend="triton", return_mem=True, **kw)
    (gx,) = torch.autograd.grad((b * g).sum(), x)
    assert torch.equal(b, b_ref) and torch.equal(m, m_ref)
    tol = TOL[dtype] if dtype == torch.float32 else dict(rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(gx, gx_ref, **tol)


@needs_cuda_triton
def test_auto_picks_triton_for_cuda_tensors_and_handles_an_expanded_stem_input():
    static = torch.randn(2, 4, 8, 8, device="cuda", requires_grad=True)
    x = static.unsqueeze(0).expand(3, *static.shape)
    spec = kernels.make_spec(
        beta=0.25, threshold=0.5, kind="ternary", reset_mechanism="zero", spike_grad=None, detach_reset=False
    )
    assert kernels.select_backend(x, spec) == "triton"
    b, _ = kernels.lif_seq(x)
    b.sum().backward()
    ref = static.detach().clone().requires_grad_(True)
    b_ref, _ = functional.oracle_lif_seq(ref.unsqueeze(0).expand(3, *ref.shape))
    b_ref.sum().backward()
    assert torch.equal(b, b_ref)
    torch.testing.assert_close(static.grad, ref.grad)
