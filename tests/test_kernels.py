"""Fast LIF paths (tspike_lab.kernels) against the oracle functional.oracle_lif_seq.

Spikes must be equal (torch.equal), gradients equal to float rounding, for every option.
"""

import os
import subprocess
import sys
import textwrap
import zlib

import pytest
import snntorch.surrogate as snn_surrogate
import torch

from tspike_lab import functional, kernels, surrogate
from tspike_lab import train as train_mod
from tspike_lab.errors import ConfigError
from tspike_lab.kernels import cpu
from tspike_lab.neurons import MultiStepLIF

HAS_C = cpu.available()
needs_c = pytest.mark.skipif(not HAS_C, reason=f"C kernel unavailable: {cpu.unavailable_reason()}")
CPU_BACKENDS = [pytest.param("fused", marks=needs_c), "fused_torch"]
SURROGATES = [surrogate.STE(), surrogate.Triangle(), surrogate.ATan(), surrogate.Sigmoid()]


def dtype_id(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def sg_id(sg) -> str:
    return type(sg).__name__


DETACH_IDS = ["reset-in-graph", "reset-detached"]
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-6), torch.float64: dict(rtol=1e-12, atol=1e-14)}


def _inputs(shape, dtype, seed):
    """Half Gaussian, half a dyadic grid: with beta 0.25 every membrane is then exact, and
    many land exactly on +-threshold (0.5) and on the STE window edge +-1.0."""
    g = torch.Generator().manual_seed(seed)
    gauss = torch.randn(shape, generator=g, dtype=torch.float64) * 0.6
    grid = torch.randint(-96, 97, shape, generator=g).to(torch.float64) / 64
    x = torch.where(torch.rand(shape, generator=g) < 0.5, gauss, grid)
    x.view(-1)[:8] = torch.tensor([0.5, -0.5, 1.0, -1.0, 0.0, 0.4375, -0.4375, 0.75])
    return x.to(dtype)


def _pair(backend, kind, reset, sg, detach, amplitude, dtype, channels):
    kw = dict(
        kind=kind,
        reset_mechanism=reset,
        spike_grad=sg,
        detach_reset=detach,
        learn_graded_spikes_factor=amplitude != "fixed",
        num_channels=channels if amplitude == "channel" else None,
    )
    ref, fast = MultiStepLIF(backend="torch", **kw), MultiStepLIF(backend=backend, **kw)
    if amplitude != "fixed":
        with torch.no_grad():
            g = torch.Generator().manual_seed(7)
            ref.graded_spikes_factor.copy_(0.5 + torch.rand(ref.graded_spikes_factor.shape, generator=g))
    fast.load_state_dict(ref.state_dict())
    return ref.to(dtype), fast.to(dtype)


def _run(lif, x, g):
    x = x.detach().clone().requires_grad_(True)
    out = lif(x)
    (out * g).sum().backward()
    a = lif.graded_spikes_factor
    return out, x.grad, (a.grad if a.requires_grad else None)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("amplitude", ["fixed", "layer", "channel"], ids=lambda a: f"{a}-a")
@pytest.mark.parametrize("detach", [False, True], ids=DETACH_IDS)
@pytest.mark.parametrize("sg", SURROGATES, ids=sg_id)
@pytest.mark.parametrize("reset", ["zero", "subtract"])
@pytest.mark.parametrize("kind", ["binary", "ternary"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=dtype_id)
def test_fast_path_equals_the_oracle_in_spikes_and_gradients(backend, kind, reset, sg, detach, amplitude, dtype):
    T, B, C = 4, 3, 5
    seed = zlib.crc32(repr((kind, reset, type(sg).__name__, detach)).encode()) % 1000  # stable across runs
    x = _inputs((T, B, C, 4, 4), dtype, seed=seed)
    g = torch.randn(x.shape, dtype=dtype, generator=torch.Generator().manual_seed(seed))
    ref, fast = _pair(backend, kind, reset, sg, detach, amplitude, dtype, C)
    out_ref, gx_ref, ga_ref = _run(ref, x, g)
    out, gx, ga = _run(fast, x, g)
    assert torch.equal(out, out_ref)
    assert (out != 0).any() and (out == 0).any()
    # STE, Triangle and ATan are bit-exact (test below); the sigmoid's exp rounds differently from
    # torch.sigmoid, and over T steps that reaches a few ulps of the largest gradient (measured up
    # to 0.26 of this bound over 300 seeds).
    scale = max(1.0, gx_ref.abs().max().item())
    torch.testing.assert_close(gx, gx_ref, rtol=TOL[dtype]["rtol"], atol=TOL[dtype]["atol"] * scale)
    assert gx.abs().sum() > 0
    if ga_ref is not None:
        # dL/da sums T*B*H*W products in another order (the kernel in double, the oracle in x's dtype):
        # the oracle's own float32 rounding error is up to ~n * 2^-24 * sum |G b|.
        tol = dict(rtol=1e-5, atol=2e-5) if dtype == torch.float32 else TOL[dtype]
        torch.testing.assert_close(ga, ga_ref, **tol)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_ste_triangle_and_atan_gradients_are_bitwise_those_of_the_oracle(backend):
    # The backward repeats autograd's operations in autograd's order: no rounding drift at all.
    for sg in (surrogate.STE(), surrogate.Triangle(), surrogate.ATan()):
        for reset in ("zero", "subtract"):
            x = _inputs((6, 2, 300), torch.float32, seed=3).requires_grad_(True)
            g = torch.randn(x.shape)
            kw = dict(beta=0.3, threshold=0.45, kind="ternary", reset_mechanism=reset, spike_grad=sg)
            b_ref, _ = functional.oracle_lif_seq(x, **kw)
            (gx_ref,) = torch.autograd.grad((b_ref * g).sum(), x)
            b, _ = kernels.lif_seq(x, backend=backend, **kw)
            (gx,) = torch.autograd.grad((b * g).sum(), x)
            assert torch.equal(b, b_ref) and torch.equal(gx, gx_ref), (sg, reset)


@pytest.mark.parametrize("backend", ["torch", *CPU_BACKENDS])
@pytest.mark.parametrize(
    "reset, detach, expected",
    [
        # x = [0.75, 0.5], loss = 1 * b_0 + 2 * b_1, ternary, STE window |u| <= 1, beta 0.25:
        # zero reset: u = [0.75, 0.5], b = [1, 1]; g_1 = 2;
        #   g_0 = 1 + (-(2 * 0.25 * 0.75)) * 1 = 0.625 through the reset, 1.0 with it detached.
        pytest.param("zero", False, [0.625, 2.0], id="zero-reset-in-graph"),
        pytest.param("zero", True, [1.0, 2.0], id="zero-reset-detached"),
        # subtract: u_1 = 0.25 * 0.75 - 0.5 + 0.5 = 0.1875, b = [1, 0]; g_1 = 2 (in the window);
        #   g_0 = (1 + (-2) * 0.5) * 1 + 2 * 0.25 = 0.5, detached 1 + 0.5 = 1.5.
        pytest.param("subtract", False, [0.5, 2.0], id="subtract-reset-in-graph"),
        pytest.param("subtract", True, [1.5, 2.0], id="subtract-reset-detached"),
    ],
)
def test_gradient_of_two_steps_by_hand(backend, reset, detach, expected):
    x = torch.tensor([[0.75], [0.5]], requires_grad=True)
    b, _ = kernels.lif_seq(x, reset_mechanism=reset, detach_reset=detach, backend=backend)
    (b * torch.tensor([[1.0], [2.0]])).sum().backward()
    assert b.flatten().tolist() == ([1.0, 1.0] if reset == "zero" else [1.0, 0.0])
    assert x.grad.flatten().tolist() == expected


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("T", [1, 2, 7], ids=lambda T: f"T{T}")
def test_any_number_of_steps_and_a_beta_that_is_not_dyadic(backend, T):
    x = _inputs((T, 2, 1000), torch.float32, seed=T).requires_grad_(True)
    kw = dict(beta=0.37, threshold=0.33, kind="ternary")
    b_ref, m_ref = functional.oracle_lif_seq(x, **kw)
    (gx_ref,) = torch.autograd.grad(b_ref.square().sum() + b_ref.sum(), x)
    b, m = kernels.lif_seq(x, backend=backend, return_mem=True, **kw)
    (gx,) = torch.autograd.grad(b.square().sum() + b.sum(), x)
    assert torch.equal(b, b_ref) and torch.equal(m, m_ref)
    torch.testing.assert_close(gx, gx_ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_recording_returns_the_oracles_membranes(backend):
    lif = MultiStepLIF(backend=backend)
    lif.record = True
    x = _inputs((4, 2, 3, 5), torch.float32, seed=1)
    lif(x.requires_grad_(True)).sum().backward()
    _, mem_ref = functional.oracle_lif_seq(x)
    assert torch.equal(lif.mem_seq, mem_ref)
    lif.record = False
    assert kernels.lif_seq(x, backend=backend)[1] is None


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_layouts_time_broadcast_channels_last_and_strided_inputs(backend):
    torch.manual_seed(0)
    T = 3
    static = torch.randn(2, 4, 5, 6) * 0.7
    cases = {
        # the direct-encoding stem: one image expanded over T, a stride-0 time dim
        "expanded": static.unsqueeze(0).expand(T, *static.shape),
        "channels_last": torch.randn(T * 2, 4, 5, 6).to(memory_format=torch.channels_last).unflatten(0, (T, 2)),
        "strided": torch.randn(2, T, 4, 5, 6).transpose(0, 1),
    }
    for name, x in cases.items():
        base = x.detach().clone().requires_grad_(True) if name != "expanded" else static.clone().requires_grad_(True)
        base_ref = base.detach().clone().requires_grad_(True)
        make = (lambda s: s.unsqueeze(0).expand(T, *s.shape)) if name == "expanded" else (lambda s: s)
        g = torch.randn(x.shape)
        b_ref, _ = functional.oracle_lif_seq(make(base_ref))
        (b_ref * g).sum().backward()
        b, _ = kernels.lif_seq(make(base), backend=backend)
        (b * g).sum().backward()
        assert torch.equal(b, b_ref), name
        torch.testing.assert_close(base.grad, base_ref.grad, rtol=1e-5, atol=1e-6, msg=name)


def _oracle_scaled(x, a, **kw):
    b, _ = functional.oracle_lif_seq(x, **kw)
    return b * (a if a.dim() == 0 else a.view(-1, *([1] * (x.dim() - 3))))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=dtype_id)
@pytest.mark.parametrize("per", ["layer", "channel"], ids=lambda per: f"a-per-{per}")
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "expanded", "strided"])
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_an_amplitude_passed_to_the_kernel_gives_the_oracles_a_times_b_and_both_gradients(backend, layout, per, dtype):
    # 2 x 40 x 9 x 9 = 6480 neurons per step: two C blocks, channels straddling the block edge.
    T, B, C, H, W = 3, 2, 40, 9, 9
    torch.manual_seed(1)
    static = (torch.randn(B, C, H, W, dtype=torch.float64) * 0.7).to(dtype)
    if layout == "expanded":
        base = static
        make = lambda s: s.unsqueeze(0).expand(T, *s.shape)  # noqa: E731
    elif layout == "channels_last":
        base = _inputs((T * B, C, H, W), dtype, seed=3).contiguous(memory_format=torch.channels_last)
        make = lambda s: s.unflatten(0, (T, B))  # noqa: E731
    elif layout == "strided":
        base = _inputs((B, T, C, H, W), dtype, seed=3)
        make = lambda s: s.transpose(0, 1)  # noqa: E731
    else:
        base = _inputs((T, B, C, H, W), dtype, seed=3)
        make = lambda s: s  # noqa: E731
    a0 = (0.5 + torch.rand(() if per == "layer" else (C,), dtype=torch.float64)).to(dtype)
    g = torch.randn(T, B, C, H, W, dtype=dtype)
    grads = []
    for fn in (lambda x, a: _oracle_scaled(x, a), lambda x, a: kernels.lif_seq(x, amplitude=a, backend=backend)[0]):
        x = base.detach().clone().requires_grad_(True)
        a = a0.clone().requires_grad_(True)
        out = fn(make(x), a)
        (out * g).sum().backward()
        grads.append((out, x.grad, a.grad))
    (out_ref, gx_ref, ga_ref), (out, gx, ga) = grads
    assert torch.equal(out, out_ref)
    assert torch.equal(gx, gx_ref)  # dL/db = dL/dout * a is the same product on both paths
    tol = dict(rtol=1e-5, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-10)
    torch.testing.assert_close(ga, ga_ref, **tol)
    assert ga.abs().sum() > 0


@needs_c
def test_the_c_kernel_multiplies_by_the_amplitude_itself_and_saves_only_one_byte_per_element_more():
    T, N = 4, 5000
    x = torch.randn(T, 2, N, requires_grad=True)
    a = torch.tensor(0.7, requires_grad=True)
    out, _ = kernels.lif_seq(x, amplitude=a, backend="fused", detach_reset=True)
    assert type(out.grad_fn).__name__ == "ScaledLIFSeqCPUBackward"
    saved = _saved_bytes(lambda: kernels.lif_seq(x, amplitude=a, backend="fused", detach_reset=True))
    assert saved == T * 2 * N + a.element_size()  # the 1-byte codes and a itself
    # a wrong dtype or device still runs, multiplying afterwards
    out64, _ = kernels.lif_seq(x, amplitude=a.double().detach(), backend="fused")
    assert type(out64.grad_fn).__name__ != "ScaledLIFSeqCPUBackward"


@pytest.mark.parametrize(
    "shape, a, match",
    [
        pytest.param((4, 2, 3), torch.ones(5), "needs x_seq", id="five-values-for-three-channels"),
        pytest.param((4, 2, 3), torch.ones(3, 1), "scalar or one value per channel", id="a-matrix"),
        pytest.param((4, 2, 3), 2.0, "must be a tensor", id="a-python-float"),
    ],
)
def test_a_wrong_amplitude_is_rejected_naming_its_shape(shape, a, match):
    with pytest.raises(ValueError, match=match):
        kernels.lif_seq(torch.randn(shape), amplitude=a)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_without_grad_the_fast_paths_save_nothing_and_still_match(backend):
    x = _inputs((4, 2, 100), torch.float32, seed=2)
    with torch.no_grad():
        b, _ = kernels.lif_seq(x, backend=backend)
    assert not b.requires_grad and torch.equal(b, functional.oracle_lif_seq(x)[0])
    b, _ = kernels.lif_seq(x, backend=backend)  # x does not require grad either
    assert b.grad_fn is None


def _saved_bytes(fn):
    sizes = []

    def pack(t):
        sizes.append(t.untyped_storage().nbytes() if t.numel() else 0)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(sizes)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize(
    "sg, reset, detach, float_rows",
    [
        pytest.param(surrogate.STE(), "zero", False, 3, id="STE-zero-reset-in-graph"),  # beta * u_t, t = 0 .. T-2
        pytest.param(surrogate.STE(), "zero", True, 0, id="STE-zero-reset-detached"),  # code only
        pytest.param(surrogate.STE(), "subtract", False, 0, id="STE-subtract-reset-in-graph"),
        pytest.param(surrogate.ATan(), "zero", True, 4, id="ATan-zero-reset-detached"),  # a smooth surrogate: every u_t
    ],
)
def test_the_backward_saves_one_byte_per_element_plus_membranes_only_where_needed(
    backend, sg, reset, detach, float_rows
):
    T, N = 4, 1000
    x = torch.randn(T, N, requires_grad=True)
    kw = dict(spike_grad=sg, reset_mechanism=reset, detach_reset=detach)
    fast = _saved_bytes(lambda: kernels.lif_seq(x, backend=backend, **kw))
    assert fast == T * N + float_rows * N * 4
    oracle = _saved_bytes(lambda: functional.oracle_lif_seq(x, **kw))
    assert fast < oracle  # the oracle keeps float copies per step (u for the surrogate, beta u, 1 - |b|, ...)


@needs_c
def test_the_c_kernel_gives_the_same_bits_with_one_thread_or_all():
    x = _inputs((4, 8, 64, 16, 16), torch.float32, seed=5).requires_grad_(True)
    g = torch.randn(x.shape)
    results = []
    threads = torch.get_num_threads()
    try:
        for n in (1, max(2, threads)):
            torch.set_num_threads(n)
            b, _ = kernels.lif_seq(x, backend="fused")
            (gx,) = torch.autograd.grad((b * g).sum(), x)
            results.append((b, gx))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])


@needs_c
@pytest.mark.parametrize("sg", [surrogate.STE(), surrogate.ATan()], ids=sg_id)
@pytest.mark.parametrize(
    "reset, detach",
    [("zero", False), ("zero", True), ("subtract", False)],
    ids=["zero-reset-in-graph", "zero-reset-detached", "subtract-reset-in-graph"],
)
@pytest.mark.parametrize("kind", ["binary", "ternary"])
def test_the_vectorised_and_the_streaming_c_paths_give_the_portable_loops_bits(kind, reset, detach, sg):
    # float32 runs an AVX-512 pass where the machine has it, and large outputs are written with
    # non-temporal stores; both must give the bits of the portable loops (tested against the oracle).
    # 2 x 41 x 9 x 9 = 6642 neurons per step: two C blocks, the second ending in a partial vector;
    # beta 0.3 (not a power of two), so a reordered product changes bits.
    T, B, C, H, W = 3, 2, 41, 9, 9
    x0 = _inputs((T, B, C, H, W), torch.float32, seed=13)
    g = torch.randn(x0.shape, generator=torch.Generator().manual_seed(13))
    a_channel = 0.5 + torch.rand(C, generator=torch.Generator().manual_seed(14))
    layouts = {
        "contiguous": (x0, lambda s: s),
        "channels_last": (
            x0.flatten(0, 1).contiguous(memory_format=torch.channels_last),
            lambda s: s.unflatten(0, (T, B)),
        ),
        "expanded": (x0[0], lambda s: s.unsqueeze(0).expand(T, *s.shape)),
    }
    spec = kernels.make_spec(
        beta=0.3, threshold=0.5, kind=kind, reset_mechanism=reset, spike_grad=sg, detach_reset=detach
    )
    recycler = cpu.Recycler(min_bytes=1)  # every output in a reused block: no stale data
    engines = {
        (simd, stream): cpu.CPUKernel(simd=simd, stream_bytes=0 if stream else 1 << 62, recycler=recycler)
        for simd in (False, True)
        for stream in (False, True)
    }
    for layout, (base, make) in layouts.items():
        for a0 in (None, torch.tensor(0.8125), a_channel):
            results = {}
            for key, engine in engines.items():
                x = base.detach().clone().requires_grad_(True)
                a = None if a0 is None else a0.clone().requires_grad_(True)
                if a is None:
                    out, _ = engine.lif_seq(make(x), spec)
                else:
                    out = engine.scaled_lif_seq(make(x), a, spec)
                    assert type(out.grad_fn).__name__ == "ScaledLIFSeqCPUBackward"
                out.backward(g)
                results[key] = (out, x.grad, None if a is None else a.grad)
            ref = results[False, False]
            assert (ref[0] != 0).any() and ref[1].abs().sum() > 0
            for key, got in results.items():
                for r, v in zip(ref, got):
                    assert (r is None and v is None) or torch.equal(r, v), (layout, a0, key)


@needs_c
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=dtype_id)
def test_large_outputs_live_in_blocks_that_come_back_when_their_tensors_die(dtype):
    import gc

    spec = kernels.make_spec(
        beta=0.25, threshold=0.5, kind="ternary", reset_mechanism="zero", spike_grad=None, detach_reset=False
    )
    # every output recycled (normally >= 32 MiB only)
    with cpu.CPUKernel(recycler=cpu.Recycler(cap_bytes=1 << 30, min_bytes=1)) as engine:
        ptrs = set()
        for seed in (1, 2, 3):
            x = _inputs((4, 3, 8, 5, 5), torch.float32, seed=seed).to(dtype).requires_grad_(True)
            g = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed)).to(dtype)
            out = engine.scaled_lif_seq(x, torch.tensor(0.75, dtype=dtype), spec)
            (gx,) = torch.autograd.grad(out, x, g)
            x_ref = x.detach().clone().requires_grad_(True)
            b_ref, _ = functional.oracle_lif_seq(x_ref)
            out_ref = b_ref * torch.tensor(0.75, dtype=dtype)
            (gx_ref,) = torch.autograd.grad(out_ref, x_ref, g)
            assert torch.equal(out, out_ref) and torch.equal(gx, gx_ref), seed
            assert (out != 0).any() and gx.abs().sum() > 0
            new = {out.data_ptr(), gx.data_ptr()}
            if seed > 1:
                assert new & ptrs, "a block of the previous call was not reused"
            ptrs |= new
            del x, g, out, gx, x_ref, b_ref, out_ref, gx_ref
            gc.collect()
            assert engine.recycler.held_bytes > 0  # the dead outputs' blocks wait for the next call
    assert engine.recycler.closed and engine.recycler.held_bytes == 0


@needs_c
def test_recycled_blocks_are_held_only_up_to_the_cap():
    import gc

    spec = kernels.make_spec(
        beta=0.25, threshold=0.5, kind="ternary", reset_mechanism="zero", spike_grad=None, detach_reset=False
    )
    x = torch.randn(2, 4, 1000)
    block = 2 * 4 * 1000 * 4  # one float32 output
    with cpu.Recycler(cap_bytes=block, min_bytes=1) as recycler:
        engine = cpu.CPUKernel(recycler=recycler)
        outs = [engine.lif_seq(x, spec)[0] for _ in range(3)]  # three live outputs
        assert len({o.data_ptr() for o in outs}) == 3
        del outs
        gc.collect()
        assert recycler.held_bytes == block  # one kept (the newest), two unmapped
        smaller = engine.lif_seq(x[:, :, :500].contiguous(), spec)[0]
        del smaller
        gc.collect()
        assert recycler.held_bytes == block // 2  # the older block made room for the newer size
    # off: plain torch allocations, nothing held
    with cpu.CPUKernel(recycler=cpu.Recycler(cap_bytes=0, min_bytes=1)) as engine:
        out = engine.lif_seq(x, spec)[0]
        assert torch.equal(out, functional.oracle_lif_seq(x)[0])
        del out
        gc.collect()
        assert engine.recycler.held_bytes == 0


@needs_c
def test_a_closed_recycler_unmaps_blocks_still_in_use_when_their_tensors_die():
    import gc

    spec = kernels.make_spec(
        beta=0.25, threshold=0.5, kind="ternary", reset_mechanism="zero", spike_grad=None, detach_reset=False
    )
    x = torch.randn(2, 4, 1000)
    recycler = cpu.Recycler(min_bytes=1)
    engine = cpu.CPUKernel(recycler=recycler)
    out = engine.lif_seq(x, spec)[0]
    engine.close()
    assert torch.equal(out, functional.oracle_lif_seq(x)[0])  # a live output stays valid after close
    del out
    gc.collect()
    assert recycler.closed and recycler.held_bytes == 0
    again = engine.lif_seq(x, spec)[0]  # after close: a plain allocation
    assert torch.equal(again, functional.oracle_lif_seq(x)[0])
    del again
    gc.collect()
    assert recycler.held_bytes == 0


def test_the_default_recycler_is_capped_by_tspike_recycle_mb(monkeypatch):
    monkeypatch.setenv("TSPIKE_RECYCLE_MB", "3")
    assert cpu.Recycler.from_env().cap_bytes == 3 * 2**20
    monkeypatch.setenv("TSPIKE_RECYCLE_MB", "0")  # off
    with cpu.Recycler.from_env() as off:
        t = off.empty_strided((64, 2**20), (2**20, 1), torch.float32)  # 256 MiB: recyclable size
        assert t.shape == (64, 2**20) and off.cap_bytes == 0
        del t
        assert off.held_bytes == 0
    monkeypatch.delenv("TSPIKE_RECYCLE_MB")
    assert cpu.Recycler.from_env().cap_bytes == 1024 * 2**20
    monkeypatch.setenv("TSPIKE_RECYCLE_MB", "lots")
    with pytest.raises(ValueError, match="TSPIKE_RECYCLE_MB must be a whole number of MiB, got 'lots'"):
        cpu.Recycler.from_env()
    monkeypatch.delenv("TSPIKE_RECYCLE_MB")
    # the default kernel owns the process's recycler, created at its first use
    assert cpu.default_kernel() is cpu.default_kernel()
    assert isinstance(cpu.default_kernel().recycler, cpu.Recycler)
    assert cpu.default_kernel().simd == (os.environ.get("TSPIKE_SIMD", "1").strip() != "0")


def test_tspike_simd_turns_the_default_kernels_avx512_pass_off_and_refuses_other_values(monkeypatch):
    make = cpu.default_kernel.__wrapped__  # a fresh default kernel, not the process's cached one
    for value, simd in (("", True), ("1", True), ("0", False)):
        monkeypatch.setenv("TSPIKE_SIMD", value)
        with make() as kernel:
            assert kernel.simd is simd
    monkeypatch.setenv("TSPIKE_SIMD", "2")
    with pytest.raises(ConfigError, match="TSPIKE_SIMD must be 0 or 1, got 2"):
        make()
    with pytest.raises(ConfigError, match="TSPIKE_SIMD"):
        train_mod.check_environment()


@pytest.mark.parametrize(
    "dtype, sg, threshold, expected",
    [
        # the paper's neuron: the C kernel, rounding per op
        pytest.param(torch.bfloat16, None, 0.5, "fused", id="bfloat16-STE-threshold-0.5"),
        # smooth surrogates: C kernel in float32/64 only
        pytest.param(torch.bfloat16, surrogate.ATan(), 0.5, "fused_torch", id="bfloat16-ATan-threshold-0.5"),
        # a threshold bfloat16 cannot hold exactly
        pytest.param(torch.bfloat16, None, 0.3, "fused_torch", id="bfloat16-STE-threshold-0.3"),
        pytest.param(torch.float16, None, 0.5, "fused_torch", id="float16-STE-threshold-0.5"),
    ],
)
def test_half_precision_on_cpu_gives_the_oracles_spikes_and_gradients_bit_for_bit(dtype, sg, threshold, expected):
    x = _inputs((4, 2, 500), dtype, seed=4).requires_grad_(True)
    spec = kernels.make_spec(
        beta=0.25, threshold=threshold, kind="ternary", reset_mechanism="zero", spike_grad=sg, detach_reset=False
    )
    assert kernels.select_backend(x, spec) == (expected if HAS_C else "fused_torch")
    b_ref, _ = functional.oracle_lif_seq(x, threshold=threshold, spike_grad=sg)
    (gx_ref,) = torch.autograd.grad(b_ref.sum(), x)
    b, _ = kernels.lif_seq(x, threshold=threshold, spike_grad=sg)
    (gx,) = torch.autograd.grad(b.sum(), x)
    assert torch.equal(b, b_ref) and torch.equal(gx, gx_ref)


@needs_c
@pytest.mark.parametrize(
    "amplitude",
    [None, "f32 scalar", "bf16 scalar", "bf16 per channel"],
    ids=["no-a", "float32-a", "bfloat16-a", "bfloat16-a-per-channel"],
)
@pytest.mark.parametrize("detach", [False, True], ids=DETACH_IDS)
@pytest.mark.parametrize("reset", ["zero", "subtract"])
@pytest.mark.parametrize("kind", ["binary", "ternary"])
def test_the_c_kernel_in_bfloat16_rounds_every_operation_as_the_oracle_does(kind, reset, detach, amplitude):
    # bf16 autocast on the CPU feeds the neurons bfloat16 (conv -> BN outputs); the kernel keeps
    # bfloat16 storage and rounds after each float operation, as PyTorch's CPU kernels do.
    torch.manual_seed(11)
    T, B, C = 5, 3, 8
    x0 = (torch.randn(T, B, C, 7, 7) * 0.8).to(torch.bfloat16)
    g = torch.randn(x0.shape).to(torch.bfloat16)
    a0 = {
        None: None,
        "f32 scalar": torch.tensor(0.7371),
        "bf16 scalar": torch.tensor(0.7371).bfloat16(),
        "bf16 per channel": (0.5 + torch.rand(C)).bfloat16(),
    }[amplitude]
    results = []
    for backend in ("torch", "fused"):
        x = x0.clone().requires_grad_(True)
        a = None if a0 is None else a0.clone().requires_grad_(True)
        out, _ = kernels.lif_seq(x, kind=kind, reset_mechanism=reset, detach_reset=detach, backend=backend, amplitude=a)
        out.backward(g)
        results.append((out, x.grad, None if a is None else a.grad))
    (out_ref, gx_ref, ga_ref), (out, gx, ga) = results
    assert out.dtype == out_ref.dtype == torch.bfloat16
    assert torch.equal(out, out_ref) and torch.equal(gx, gx_ref)
    assert (out != 0).any() and gx.abs().sum() > 0
    if a0 is not None:
        b = out_ref.double().sign()  # a > 0
        exact = (g.double() * b).sum(dim=tuple(d for d in range(5) if a0.dim() == 0 or d != 2))
        # the kernel sums in double: exact to the amplitude's own rounding; the oracle's sum is bfloat16
        torch.testing.assert_close(ga.double(), exact.to(ga.dtype).double(), rtol=0, atol=0)
        torch.testing.assert_close(ga.double(), ga_ref.double(), rtol=2**-7, atol=1e-2)


@pytest.mark.slow  # a process of its own
def test_without_a_c_compiler_auto_falls_back_to_the_torch_fused_path():
    code = textwrap.dedent("""
        import torch
        from tspike_lab import functional, kernels
        from tspike_lab.kernels import cpu
        from tspike_lab.neurons import MultiStepLIF
        assert not cpu.available() and "CC='/nonexistent/cc'" in cpu.unavailable_reason()
        x = torch.randn(3, 2, 50, requires_grad=True)
        spec = kernels.make_spec(beta=0.25, threshold=0.5, kind="ternary", reset_mechanism="zero",
                                 spike_grad=None, detach_reset=False)
        assert kernels.select_backend(x, spec) == "fused_torch"
        out = MultiStepLIF()(x)
        assert torch.equal(out, functional.oracle_lif_seq(x)[0])
        print("ok")
    """)
    env = dict(os.environ, CC="/nonexistent/cc")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]


class _HalfTriangle(surrogate.Triangle):
    def grad(self, x):
        return 0.5 * super().grad(x)


def test_auto_dispatch_rules():
    x = torch.randn(2, 3, 4)
    spec = lambda sg: kernels.make_spec(
        beta=0.25,
        threshold=0.5,
        kind="ternary",
        reset_mechanism="zero",  # noqa: E731
        spike_grad=sg,
        detach_reset=False,
    )
    cpu_choice = "fused" if HAS_C else "fused_torch"
    for sg in SURROGATES:
        assert kernels.select_backend(x, spec(sg)) == cpu_choice
    assert kernels.select_backend(x.double(), spec(None)) == cpu_choice
    # A user's Surrogate subclass may override grad(): only the PyTorch fused path calls it.
    assert kernels.select_backend(x, spec(_HalfTriangle())) == "fused_torch"
    # An arbitrary snnTorch callable: only the oracle knows how to differentiate it.
    assert kernels.select_backend(x, spec(snn_surrogate.atan())) == "torch"
    assert kernels.select_backend(x, spec(None), "torch") == "torch"


def test_a_users_surrogate_subclass_and_an_snntorch_callable_give_the_oracles_gradients():
    for sg in (_HalfTriangle(), snn_surrogate.fast_sigmoid()):
        x = _inputs((3, 2, 50), torch.float32, seed=6).requires_grad_(True)
        b_ref, _ = functional.oracle_lif_seq(x, spike_grad=sg)
        (gx_ref,) = torch.autograd.grad(b_ref.sum(), x)
        b, _ = kernels.lif_seq(x, spike_grad=sg)
        (gx,) = torch.autograd.grad(b.sum(), x)
        assert torch.equal(b, b_ref) and torch.equal(gx, gx_ref)


def test_an_unusable_backend_fails_early_naming_the_value_and_the_reason():
    x = torch.randn(2, 3)
    with pytest.raises(ValueError, match=r"backend must be one of .*'fused'.*got 'cuda'"):
        kernels.lif_seq(x, backend="cuda")
    with pytest.raises(ValueError, match="backend='triton' cannot run this input: the Triton kernels run CUDA"):
        kernels.lif_seq(x, backend="triton")
    with pytest.raises(ValueError, match="backend='fused' cannot run this input: .*float16"):
        kernels.lif_seq(x.half(), backend="fused")
    with pytest.raises(
        ValueError, match="backend='fused' cannot run this input: .*bfloat16 with the STE surrogate only"
    ):
        kernels.lif_seq(x.bfloat16(), backend="fused", spike_grad="atan")
    with pytest.raises(ValueError, match="backend='fused_torch' cannot run .*spike_grad="):
        kernels.lif_seq(x, backend="fused_torch", spike_grad=snn_surrogate.atan())
    with pytest.raises(ValueError, match="backend must be one of"):
        MultiStepLIF(backend="nope")(torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match="x_seq must be a floating-point tensor, got dtype torch.int64"):
        kernels.lif_seq(torch.ones(2, 3, dtype=torch.long))


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(kind="quaternary"), "kind must be one of .*got 'quaternary'"),
        (dict(reset_mechanism="none"), "reset_mechanism must be one of .*got 'none'"),
        (dict(beta=torch.tensor([0.2, 0.3])), "beta must be a python float for the fast paths"),
        (dict(threshold="0.5"), "threshold must be a float, got '0.5'"),
        (dict(spike_grad="relu"), "spike_grad must be one of"),
    ],
)
def test_a_bad_option_is_a_config_error_naming_it(kw, match):
    opts = (
        dict(beta=0.25, threshold=0.5, kind="ternary", reset_mechanism="zero", spike_grad=None, detach_reset=False) | kw
    )
    with pytest.raises(ConfigError, match=match):
        kernels.make_spec(**opts)
    with pytest.raises(ConfigError, match=match):
        kernels.lif_seq(torch.randn(2, 3), backend="fused_torch", **{k: opts[k] for k in kw})
    with pytest.raises(ConfigError, match="backend must be one of"):
        kernels.check_backend("gpu")


def test_the_oracle_stays_selectable_on_the_layer():
    lif = MultiStepLIF(backend="torch")
    x = torch.randn(2, 3, 4, requires_grad=True)
    out = lif(x)
    assert type(out.grad_fn).__name__ == "MulBackward0"
    names = set()
    stack = [out.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is not None and fn.name() not in names:
            names.add(fn.name())
            stack += [f for f, _ in fn.next_functions]
    assert "StackBackward0" in names and not any("LIFSeq" in n for n in names)


def test_a_resnet_trains_identically_on_the_fast_path_and_on_the_oracle():
    from tspike_lab.models import build_model

    torch.manual_seed(0)
    x, y = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 3])
    grads = {}
    for backend in ("torch", "auto"):
        torch.manual_seed(1)
        model = build_model("small", neuron="trainable_ternary", num_classes=4, num_steps=2, width=8, backend=backend)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        grads[backend] = [p.grad.clone() for p in model.parameters()]
    for g_ref, g in zip(grads["torch"], grads["auto"]):
        torch.testing.assert_close(g, g_ref, rtol=1e-5, atol=1e-6)


# -- the layer's spec: resolved once, followed when an option changes ---------------------------------------


def test_the_layer_resolves_its_options_at_construction_and_a_forward_only_runs_the_kernels(monkeypatch):
    from tspike_lab.kernels import spec as spec_module
    from tspike_lab.models import build_model

    model = build_model("small", neuron="trainable_ternary", num_classes=4, num_steps=2, width=8)
    layers = [m for m in model.modules() if isinstance(m, MultiStepLIF)]
    assert len(layers) >= 3 and all(isinstance(m.spec, kernels.LIFSpec) for m in layers)
    checks, specs = [], []
    check_kind, make_spec = functional.check_kind, spec_module.make_spec
    monkeypatch.setattr(functional, "check_kind", lambda kind: (checks.append(kind), check_kind(kind))[1])
    monkeypatch.setattr(spec_module, "make_spec", lambda **kw: (specs.append(kw), make_spec(**kw))[1])
    monkeypatch.setattr(kernels, "make_spec", spec_module.make_spec)
    out = model(torch.randn(2, 3, 16, 16))
    out.sum().backward()
    assert checks == [] and specs == []
    MultiStepLIF()  # the counters do count
    assert checks == ["ternary"] and len(specs) == 1


def test_a_layer_with_an_unknown_backend_fails_when_it_is_built_naming_the_value():
    with pytest.raises(ValueError, match=r"backend must be one of \('auto', 'torch', .*\), got 'bogus'"):
        MultiStepLIF(backend="bogus")


def test_options_set_after_construction_rebuild_the_spec_and_a_bad_value_changes_nothing():
    import copy

    lif = MultiStepLIF()
    first = lif.spec
    lif.beta, lif.threshold, lif.kind = 0.5, 0.375, "binary"
    lif.reset_mechanism, lif.spike_grad, lif.detach_reset, lif.backend = "subtract", "atan", True, "fused_torch"
    expected = kernels.make_spec(
        beta=0.5,
        threshold=0.375,
        kind="binary",
        reset_mechanism="subtract",
        spike_grad=surrogate.ATan(),
        detach_reset=True,
    )
    assert lif.spec == expected and lif.spec is not first and lif.backend == "fused_torch"
    assert (lif.beta, lif.threshold, lif.kind, lif.spike_grad) == (0.5, 0.375, "binary", surrogate.ATan())
    x = _inputs((3, 2, 60), torch.float32, seed=12).requires_grad_(True)
    out = lif(x)
    (gx,) = torch.autograd.grad(out.sum(), x)
    b_ref, _ = functional.oracle_lif_seq(
        x,
        beta=0.5,
        threshold=0.375,
        kind="binary",
        reset_mechanism="subtract",
        spike_grad=surrogate.ATan(),
        detach_reset=True,
    )
    (gx_ref,) = torch.autograd.grad(b_ref.sum(), x)
    assert torch.equal(out, b_ref) and (out != 0).any()
    torch.testing.assert_close(gx, gx_ref, rtol=1e-5, atol=1e-6)
    settled = lif.spec
    for name, value, match in [
        ("beta", 2.0, r"beta must be in \[0, 1\], got 2.0"),
        ("threshold", -1.0, "threshold must be > 0, got -1.0"),
        ("kind", "quaternary", "kind must be one of"),
        ("reset_mechanism", "none", "reset_mechanism must be one of"),
        ("spike_grad", "spiky", "spike_grad must be one of"),
        ("backend", "cuda", "backend must be one of"),
    ]:
        with pytest.raises(ValueError, match=match):
            setattr(lif, name, value)
        assert lif.spec is settled and lif.backend == "fused_torch", name
    clone = copy.deepcopy(lif)
    assert clone.spec == lif.spec and clone.backend == lif.backend
    assert torch.equal(clone(x), out)
