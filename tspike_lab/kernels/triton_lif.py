"""Multi-step LIF on CUDA with Triton: one launch runs the whole time loop, forward and backward.

Triton is imported lazily, the first time a CUDA tensor asks for this backend, so the
package imports (and its tests run) on machines without it. The kernels live in
:mod:`._triton_impl`; this module holds the autograd glue, which mirrors :mod:`.cpu`.

Triton compiles a kernel at its first launch, which needs a C compiler, the Python headers and
a writable cache: :func:`unavailable_reason` therefore launches both kernels once on a tiny
tensor per device (cached), and ``backend="auto"`` moves on to the next backend where that fails.
Every launch runs on the tensor's own device, whichever device is current.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
from types import SimpleNamespace

import torch

from .layout import as_steps, empty_steps, match_steps
from .spec import (
    FunctionPasses,
    LIFSpec,
    amplitude_index,
    compute_amplitude,
    make_spec,
    plain_function,
    run_fused,
    run_scaled,
    scaled_function,
)

__all__ = [
    "available",
    "unavailable_reason",
    "input_reason",
    "supports",
    "lif_seq_triton",
    "scaled_lif_seq_triton",
    "LIFSeqTriton",
    "ScaledLIFSeqTriton",
    "PASSES",
]

DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_LOWP = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}
BLOCK = 1024


@functools.cache
def _impl():
    return importlib.import_module(f"{__package__}._triton_impl")


def unavailable_reason(device: torch.device | int | None = None) -> str | None:
    """None if the Triton kernels run on ``device`` (default: the current CUDA device), else why not."""
    if not torch.cuda.is_available():
        return "CUDA is not available"
    try:
        _impl()
    except Exception as e:  # ImportError, or a Triton too old for the kernels' syntax
        return f"triton kernels do not load: {type(e).__name__}: {e}"
    return _probe_reason(_device_index(device))


def _device_index(device: torch.device | int | None) -> int:
    if isinstance(device, int):
        return device
    index = None if device is None else torch.device(device).index
    return torch.cuda.current_device() if index is None else index


@functools.cache
def _probe_reason(index: int) -> str | None:
    # Once per device and process: Triton's first launch compiles, and a failure there would
    # otherwise come out of the model's forward.
    try:
        _probe(torch.device("cuda", index))
    except Exception as e:  # noqa: BLE001 - any compile or launch failure makes the backend unusable
        return f"the Triton kernels fail on a test launch on cuda:{index}: {type(e).__name__}: {e}"
    return None


def _probe(device: torch.device) -> None:
    """Run the forward and the backward kernel once on a tiny tensor (both compile at first launch)."""
    spec = make_spec(
        beta=0.25, threshold=0.5, kind="ternary", reset_mechanism="zero", spike_grad=None, detach_reset=False
    )
    x = torch.full((2, 1, 4), 0.75, device=device)
    b, code, u, _ = _forward(x, spec, save=True, return_mem=False)
    ctx = SimpleNamespace(saved_tensors=(code, u), spec=spec, geometry=(b.shape, b.stride(), b.dtype))
    gx, _ = _backward(ctx, torch.ones_like(b), None, False)
    torch.cuda.synchronize(device)
    if b[:, 0, 0].tolist() != [1.0, 1.0] or not torch.isfinite(gx).all():
        raise RuntimeError(f"wrong results: spikes {b.flatten().tolist()}, dL/dx {gx.flatten().tolist()}")


def available() -> bool:
    return unavailable_reason() is None


def input_reason(x: torch.Tensor, spec: LIFSpec) -> str | None:
    """None if the Triton kernels take ``x`` with ``spec`` (device, dtype, surrogate), else why not."""
    if x.device.type != "cuda":
        return f"the Triton kernels run CUDA tensors, got device {x.device}"
    if x.dtype not in DTYPES:
        return f"the Triton kernels run float32/float16/bfloat16, got {x.dtype}"
    if spec.sg_code is None:
        return f"the Triton kernels implement STE, Triangle, ATan and Sigmoid, got spike_grad={spec.spike_grad!r}"
    return None


def supports(x: torch.Tensor, spec: LIFSpec) -> str | None:
    """None if the Triton kernels run ``x`` with ``spec`` here, else the reason they do not."""
    return input_reason(x, spec) or unavailable_reason(x.device)


def _constants(spec: LIFSpec, dtype: torch.dtype) -> dict:
    """Scalars rounded as the oracle rounds them: th as ``torch.as_tensor(th, dtype)``, etc."""
    th = torch.tensor(spec.threshold, dtype=dtype)
    return dict(
        beta=float(torch.tensor(spec.beta, dtype=torch.float32)),
        th=float(th),
        th_sub=float(torch.tensor(spec.threshold, dtype=torch.float32)),  # b * threshold: an fp32 scalar
        lim=float(spec.sg_param * th) if spec.ste else 0.0,  # STE: width * threshold in the tensor's dtype
        # x / width on CUDA: x * (1 / width), the reciprocal in float32 (PyTorch's division by a CPU scalar)
        inv_p=float(1.0 / torch.tensor(spec.sg_param, dtype=torch.float32)) if spec.sg_param else 0.0,
    )


def _on(device: torch.device):
    """Triton launches on the current CUDA device, not the tensor's: make the tensor's current
    (a CPU tensor is Triton's interpreter at work: nothing to select)."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def _grid(n: int):
    return (max(1, -(-n // BLOCK)),)


def _dummy(x: torch.Tensor) -> torch.Tensor:
    return torch.empty(1, dtype=x.dtype, device=x.device)


def _amp_mode(amp: torch.Tensor | None, index: tuple[int, int]) -> int:
    return 0 if amp is None else (1 if index[1] == 1 else 2)


def _forward(x_seq: torch.Tensor, spec: LIFSpec, save: bool, return_mem: bool, amp: torch.Tensor | None = None):
    impl = _impl()
    x, x_stride = as_steps(x_seq)
    T, N = x.shape[0], x[0].numel()
    b = empty_steps(x)
    rows = spec.u_rows(T) if save else 0
    mem = empty_steps(x) if return_mem else None
    u = mem if return_mem else (empty_steps(x, rows) if rows else None)
    code = torch.empty((T, N), dtype=torch.uint8, device=x.device) if save else None
    c = _constants(spec, x.dtype)
    amp = compute_amplitude(amp, x.dtype)
    div, mod = amplitude_index(b, amp)
    if T * N:
        with _on(x.device):
            impl.lif_fwd_kernel[_grid(N)](
                x,
                b,
                code if save else _dummy(b).to(torch.uint8),
                u if u is not None else _dummy(b),
                amp if amp is not None else _dummy(b),
                T,
                N,
                x_stride,
                T if return_mem else rows,
                div,
                mod,
                c["beta"],
                c["th"],
                c["th_sub"],
                c["lim"],
                TERNARY=spec.ternary,
                SUBTRACT=not spec.zero_reset,
                STE=spec.ste,
                SAVE_CODE=save,
                SAVE_U=u is not None,
                AMP=_amp_mode(amp, (div, mod)),
                LOWP=_LOWP[x.dtype],
                BLOCK=BLOCK,
                enable_fp_fusion=False,
            )
    saved_u = u[:rows] if (u is not None and rows) else None
    return b, code, saved_u, mem


def _backward(ctx, grad_out, amp: torch.Tensor | None, want_ga: bool):
    """``(dL/dx, dL/da or None)`` by the backward kernel from the saved codes and membranes."""
    code, u = ctx.saved_tensors[:2]
    spec = ctx.spec
    shape, stride, dtype = ctx.geometry
    gx = torch.empty_strided(shape, stride, dtype=dtype, device=code.device)
    g = match_steps(grad_out, gx)
    T, N = shape[0], gx[0].numel()
    c = _constants(spec, dtype)
    div, mod = amplitude_index(gx, amp)
    # every neuron's sum_t dL/dout_t * b_t (zeros where no kernel runs: T = 0)
    ga_elem = (torch.empty if T * N else torch.zeros)(N, dtype=torch.float32, device=gx.device) if want_ga else None
    if T * N:
        with _on(gx.device):
            _impl().lif_bwd_kernel[_grid(N)](
                g,
                code,
                u if u is not None else _dummy(gx),
                gx,
                amp if amp is not None else _dummy(gx),
                ga_elem if want_ga else _dummy(gx).float(),
                T,
                N,
                0 if u is None else u.shape[0],
                div,
                mod,
                c["beta"],
                c["th"],
                c["th_sub"],
                spec.sg_param,
                c["inv_p"],
                float(torch.tensor(1.5707963267948966 * spec.sg_param, dtype=torch.float32)),
                float(torch.tensor(spec.sg_param / 2, dtype=torch.float32)),
                TERNARY=spec.ternary,
                SUBTRACT=not spec.zero_reset,
                DETACH=spec.detach_reset,
                SG=spec.sg_code,
                AMP=_amp_mode(amp, (div, mod)),
                GRAD_A=want_ga,
                LOWP=_LOWP[dtype],
                BLOCK=BLOCK,
                enable_fp_fusion=False,
            )
    ga = None
    if want_ga:
        # per neuron sums grouped by channel: offset n = (q * mod + c) * div + r (a dense step)
        ga = (
            ga_elem.view(-1, mod, div).sum((0, 2), dtype=torch.float64) if mod > 1 else ga_elem.sum(dtype=torch.float64)
        )
        ga = ga.to(ctx.amp_dtype).reshape(ctx.amp_shape)
    return gx, ga


PASSES = FunctionPasses(_forward, _backward)

LIFSeqTriton = plain_function(
    "LIFSeqTriton",
    __name__,
    """
    ``b_seq`` (and ``mem_seq``, no grad) from ``x_seq``; backward by the Triton kernel.
    """,
)

ScaledLIFSeqTriton = scaled_function(
    "ScaledLIFSeqTriton",
    __name__,
    """
    ``a * b_seq`` from ``x_seq`` and the amplitude ``a`` in one pass; backward gives dL/dx and dL/da.

    ``out = b * a`` rounded as the oracle's multiply; dL/db = dL/dout * a (autograd's product);
    dL/da = sum(dL/dout * b): per neuron over T in the kernel (float32), then per channel (or
    over all) in float64.
    """,
)


def lif_seq_triton(x_seq: torch.Tensor, spec: LIFSpec, return_mem: bool = False):
    """``(b_seq, mem_seq or None)`` by the Triton kernels; saves state only where a gradient is wanted."""
    return run_fused(LIFSeqTriton, PASSES, x_seq, spec, return_mem)


def scaled_lif_seq_triton(x_seq: torch.Tensor, amplitude: torch.Tensor, spec: LIFSpec) -> torch.Tensor:
    """``amplitude * b_seq`` by the Triton kernels (``amplitude``: see :func:`.spec.amplitude_reason`)."""
    return run_scaled(ScaledLIFSeqTriton, PASSES, x_seq, amplitude, spec)
