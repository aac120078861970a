"""One step of the snnTorch-style neurons (``TernaryLeaky`` / ``BinaryLeaky``) fused: one C call each way.

Stepped in a Python loop (``spk, mem = lif(x[t], mem)``), the neuron's general path is some
twenty PyTorch operations per step, forward and backward, each a pass over memory and most an
autograd node. :class:`LIFStepCPU` is one autograd Function per step: its forward reads ``x_t``
and ``u_{t-1}`` once and writes ``b_t``, ``u_t`` and a one-byte code; its backward reads the
incoming gradients and that code (and ``u_{t-1}`` for the reset path) once and writes ``dL/dx_t``
and ``dL/du_{t-1}``. The C kernel (``lif_step_fwd_*`` / ``lif_step_bwd_*`` in
``lif_cpu_template.h``) performs the general path's operations in its order, with its reset
masks, so spikes and membranes are its bits and the gradients are the ones autograd forms
through it (the STE's and the Triangle's bit for bit; Sigmoid's ``torch.sigmoid`` to float
rounding; sums over several later uses of ``u_t`` may associate differently).

What it covers (:func:`step_reason` says why not, and the neuron takes its general path):
CPU float32 / float64 tensors, ``x`` and the membrane of one dtype; a scalar ``beta`` and
``threshold`` that are not trained; one of our four surrogates (exact types); any reset mechanism
and ``detach_reset``; ``reset_delay=True``, no inhibition, no ``state_quant``; not while
``torch.compile`` / ``torch.jit`` trace, nor under ``torch.func`` transforms or forward-mode AD.
The amplitude ``a`` is applied by the neuron, outside (an ordinary multiply, trainable or not).
A subclass of the neurons that overrides a method the fused step replaces keeps the general
path (``_PaperLeaky._FUSED_REPLACES``).
"""

from __future__ import annotations

import ctypes

import torch

from .. import surrogate
from . import cpu
from .spec import SURROGATE_CODES

__all__ = ["LIFStepCPU", "STEP_DTYPES", "step_args", "step_reason", "lif_step"]

STEP_DTYPES = {torch.float32: "f32", torch.float64: "f64"}
_STE = SURROGATE_CODES[surrogate.STE][0]
_RESET_MASKS = {0: (1.0, 0.0), 1: (0.0, 1.0), 2: (0.0, 0.0)}  # reset_mechanism_val -> (sub, zer)

_is_compiling = getattr(torch.compiler, "is_compiling", None) or torch._dynamo.is_compiling


def _transforming() -> bool:
    """True under a tracer or transform a ctypes call cannot go through."""
    return (
        _is_compiling()
        or torch._C._get_tracing_state() is not None
        or torch._C._are_functorch_transforms_active()
        or torch.autograd.forward_ad._current_level >= 0
    )


def step_reason(
    x: torch.Tensor, mem: torch.Tensor, beta: torch.Tensor, threshold: torch.Tensor, spike_grad
) -> str | None:
    """None if :func:`lif_step` runs this step, else why not (then the neuron's general path does).

    The neuron's own options (inhibition, state_quant, reset_delay) are its to check.
    """
    if _transforming():  # first: under torch.compile nothing else here is traced
        return "torch.compile, torch.jit or a torch.func transform is tracing"
    if type(spike_grad) not in SURROGATE_CODES:
        return f"the fused step implements STE, Triangle, ATan and Sigmoid, got spike_grad={spike_grad!r}"
    if beta.requires_grad or threshold.requires_grad:
        return "a trained beta or threshold"
    if beta.dim() or threshold.dim():
        return "beta or threshold has one value per neuron"
    if type(x) is not torch.Tensor or type(mem) is not torch.Tensor:
        return "a tensor subclass"
    if x.device.type != "cpu" or mem.device.type != "cpu":
        return f"the fused step runs on the CPU, got device {x.device}"
    if x.dtype not in STEP_DTYPES or mem.dtype != x.dtype:
        return (
            f"the fused step runs float32 or float64 with a membrane of the input's dtype, got {x.dtype}, {mem.dtype}"
        )
    return cpu.unavailable_reason()


def step_args(
    numel: int, *, beta: float, threshold: float, reset: int, ternary: bool, detach: bool, spike_grad
) -> ctypes.Structure:
    """The kernel's arguments: ``reset`` is ``reset_mechanism_val`` (0 subtract, 1 zero, 2 none)."""
    code, attr = SURROGATE_CODES[type(spike_grad)]
    sub, zer = _RESET_MASKS.get(reset, (0.0, 0.0))  # as the general path's masks: neither
    return cpu._StepArgs(
        numel,
        beta,
        threshold,
        float(getattr(spike_grad, attr)),
        sub,
        zer,
        int(ternary),
        int(detach),
        code,
        cpu._threads(numel),
    )


class LIFStepCPU(torch.autograd.Function):
    """``(b_t, u_t)`` from ``(x_t, u_{t-1})`` by one C call; backward by one more (see the module docstring)."""

    @staticmethod
    def forward(ctx, x, mem, args):
        sfx = STEP_DTYPES[x.dtype]
        lib = cpu.library()
        b, u = torch.empty_like(x), torch.empty_like(x)
        code = torch.empty(x.shape, dtype=torch.uint8)
        getattr(lib, f"lif_step_fwd_{sfx}")(
            x.data_ptr(), mem.data_ptr(), b.data_ptr(), u.data_ptr(), code.data_ptr(), ctypes.byref(args)
        )
        smooth = args.sg != _STE
        ctx.args, ctx.sfx = args, sfx
        ctx.save_for_backward(code, None if args.detach else mem, u if smooth else None)  # what the backward reads
        ctx.set_materialize_grads(False)
        return b, u

    @staticmethod
    def backward(ctx, grad_b, grad_u):
        if torch.is_grad_enabled():  # create_graph=True: the C backward builds no graph to differentiate
            raise RuntimeError(
                "second-order gradients (create_graph=True) do not pass through the fused step of "
                "TernaryLeaky / BinaryLeaky; set neuron.fused_step = False for the general path, which has them"
            )
        code, mem, u = ctx.saved_tensors
        want_m = ctx.needs_input_grad[1]
        gx = torch.empty(code.shape, dtype=_DTYPES[ctx.sfx])
        gm = torch.empty_like(gx) if want_m else None
        g, m_grad = (None if t is None else t.contiguous() for t in (grad_b, grad_u))
        getattr(cpu.library(), f"lif_step_bwd_{ctx.sfx}")(
            _ptr(g), _ptr(m_grad), code.data_ptr(), _ptr(mem), _ptr(u), gx.data_ptr(), _ptr(gm), ctypes.byref(ctx.args)
        )
        return (gx if ctx.needs_input_grad[0] else None), gm, None


_DTYPES = {sfx: dtype for dtype, sfx in STEP_DTYPES.items()}


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def lif_step(x: torch.Tensor, mem: torch.Tensor, args: ctypes.Structure) -> tuple[torch.Tensor, torch.Tensor]:
    """``(b_t, u_t)`` of one step (``args``: :func:`step_args`; the inputs: see :func:`step_reason`).

    Where no gradient is wanted the forward runs alone and saves nothing.
    """
    x, mem = x.contiguous(), mem.contiguous()
    if torch.is_grad_enabled() and (x.requires_grad or mem.requires_grad):
        return LIFStepCPU.apply(x, mem, args)
    b, u = torch.empty_like(x), torch.empty_like(x)
    getattr(cpu.library(), f"lif_step_fwd_{STEP_DTYPES[x.dtype]}")(
        x.data_ptr(), mem.data_ptr(), b.data_ptr(), u.data_ptr(), None, ctypes.byref(args)
    )
    return b, u
