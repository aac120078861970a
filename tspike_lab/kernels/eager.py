"""Fused multi-step LIF in PyTorch ops: any device, any dtype, any :class:`~tspike_lab.surrogate.Surrogate`.

The same hand-written backward as the compiled kernels (:mod:`.spec`), with the same
compact saved state (a uint8 ``code`` per element, the membrane only where needed),
but each step is a handful of PyTorch ops. It is the fallback where no compiled
kernel applies: no C compiler, bf16/fp16 on the CPU, CUDA without Triton, or a user's
own ``Surrogate`` subclass (whose ``binary_grad`` / ``ternary_grad`` it calls, on the
saved membrane, exactly as the oracle does).
"""

from __future__ import annotations

import torch

from .spec import FunctionPasses, LIFSpec, code_bits, plain_function, run_fused

__all__ = ["LIFSeqEager", "PASSES", "lif_seq_eager"]


def _surrogate_grad(spec: LIFSpec, u: torch.Tensor, th: torch.Tensor) -> torch.Tensor:
    sg = spec.spike_grad
    return sg.ternary_grad(u, th) if spec.ternary else sg.binary_grad(u, th)


def _fire(u: torch.Tensor, th: torch.Tensor, ternary: bool) -> torch.Tensor:
    b = (u >= th).to(u.dtype)
    return b - (u <= -th).to(u.dtype) if ternary else b


def _forward(x_seq: torch.Tensor, spec: LIFSpec, save: bool, return_mem: bool):
    T = x_seq.shape[0]
    th = torch.as_tensor(spec.threshold, dtype=x_seq.dtype, device=x_seq.device)  # as the oracle's fire()
    rows = spec.u_rows(T) if save else 0
    b_seq = torch.empty_like(x_seq, memory_format=torch.contiguous_format)
    mem = torch.empty_like(b_seq) if return_mem else None
    u_save = mem if return_mem else (b_seq.new_empty((rows, *b_seq.shape[1:])) if rows else None)
    code = torch.empty(b_seq.shape, dtype=torch.uint8, device=b_seq.device) if save else None
    u = torch.zeros_like(b_seq[0])
    b = torch.zeros_like(u)
    for t in range(T):
        if spec.zero_reset:
            u = (spec.beta * u).mul_(1 - b.abs()).add_(x_seq[t])  # (beta u) (1 - |b|) + x
        else:
            u = (spec.beta * u).sub_(b * spec.threshold).add_(x_seq[t])  # (beta u - b th) + x
        b = _fire(u, th, spec.ternary)
        b_seq[t] = b
        if save:
            code[t] = code_bits(b, _surrogate_grad(spec, u, th) if spec.ste else None)
        if u_save is not None and (return_mem or t < rows):
            u_save[t] = u
    saved_u = u_save[:rows] if (u_save is not None and rows) else None
    return b_seq, code, saved_u, mem


def _backward(ctx, grad_b, amp, want_ga):
    """``(dL/dx, None)``: the backward of :mod:`.spec` in torch ops (this path has no scaled Function)."""
    code, u = ctx.saved_tensors
    spec = ctx.spec
    T = code.shape[0]
    dtype = grad_b.dtype
    th = torch.as_tensor(spec.threshold, dtype=dtype, device=grad_b.device)
    gx = torch.empty_like(grad_b, memory_format=torch.contiguous_format)
    gn = torch.zeros_like(gx[0])
    has_u = 0 if u is None else u.shape[0]
    for t in range(T - 1, -1, -1):
        b = (code[t] & 3).to(dtype) - 1
        s = ((code[t] >> 2) & 1).to(dtype) if spec.ste else _surrogate_grad(spec, u[t], th)
        gb = grad_b[t]
        if spec.zero_reset:
            ga = (gn * (1 - b.abs())) * spec.beta
            if not spec.detach_reset and t < has_u:
                gb = gb + (-(gn * (spec.beta * u[t]))) * b
        else:
            ga = gn * spec.beta
            if not spec.detach_reset:
                gb = gb + (-gn) * spec.threshold
        gn = gb * s + ga
        gx[t] = gn
    return gx, None


PASSES = FunctionPasses(_forward, _backward)
LIFSeqEager = plain_function(
    "LIFSeqEager",
    __name__,
    """
    ``b_seq`` (and ``mem_seq``, no grad) from ``x_seq``; backward of :mod:`.spec` in torch ops.
    """,
)


def lif_seq_eager(x_seq: torch.Tensor, spec: LIFSpec, return_mem: bool = False):
    """``(b_seq, mem_seq or None)``; saves state only where a gradient is wanted."""
    return run_fused(LIFSeqEager, PASSES, x_seq, spec, return_mem)
