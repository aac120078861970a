"""What every fast LIF path needs to know: the neuron's options and the exact backward.

Forward (the oracle :func:`tspike_lab.functional.oracle_lif_seq`, with ``u_{-1} = b_{-1} = 0``):

    u_t = (beta * u_{t-1}) * (1 - |b_{t-1}|) + x_t           reset "zero"
    u_t = (beta * u_{t-1} - b_{t-1} * th) + x_t               reset "subtract"
    b_t = 1[u_t >= th]  (binary)   or   1[u_t >= th] - 1[u_t <= -th]  (ternary)

Backward, with ``G_t = dL/db_t`` (from the layer's output), ``s_t = sg'(u_t)`` the
surrogate derivative and ``g_t = dL/du_t = dL/dx_t`` (``g_T = 0``):

    ga_t = (g_{t+1} * (1 - |b_t|)) * beta                     zero       (direct path)
    gb_t = G_t + (-(g_{t+1} * (beta * u_t))) * b_t            zero       (reset path, d|b|/db = sgn b = b)
    ga_t = g_{t+1} * beta;   gb_t = G_t + (-g_{t+1}) * th     subtract
    gb_t = G_t                                                detach_reset=True
    g_t  = gb_t * s_t + ga_t

The operations are written in the order autograd runs them on the oracle's graph, so a
kernel that follows them reproduces the oracle's gradients to the last bit wherever
the surrogate is computed with the same operations (STE: exactly; smooth surrogates:
to float rounding).

What the backward needs, per element and step:

- ``b_t`` (2 bits) and, for the STE, the 0/1 window ``s_t`` (1 bit): one byte, ``code``;
- ``u_t`` itself only for (a) a smooth surrogate (``s_t`` depends on ``u_t``: all T
  steps) or (b) the non-detached zero reset (``beta * u_t`` at t = 0 .. T-2; the last
  step has no successor). Everything else needs no float state at all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
from torch.autograd.function import once_differentiable

from .. import functional, surrogate
from ..errors import ConfigError

__all__ = [
    "LIFSpec",
    "SURROGATE_CODES",
    "make_spec",
    "code_bits",
    "save_forward",
    "Passes",
    "FunctionPasses",
    "plain_function",
    "scaled_function",
    "run_fused",
    "run_scaled",
]

# Surrogate classes the compiled kernels implement, with their parameter's name. Exact
# types only: a subclass may override grad(), which a kernel cannot see.
SURROGATE_CODES = {
    surrogate.STE: (0, "width"),
    surrogate.Triangle: (1, "width"),
    surrogate.ATan: (2, "alpha"),
    surrogate.Sigmoid: (3, "slope"),
}


@dataclass(frozen=True)
class LIFSpec:
    """The neuron's options, resolved once: by a layer when it is built (and when an option
    changes), or by :func:`tspike_lab.kernels.lif_seq` at each call.

    ``sg_code`` is None where the surrogate is not one the compiled kernels implement.
    """

    kind: str
    reset_mechanism: str
    beta: float
    threshold: float
    detach_reset: bool
    spike_grad: object
    sg_code: int | None
    sg_param: float

    @property
    def ternary(self) -> bool:
        return self.kind == "ternary"

    @property
    def spike(self):
        """The spike function of ``kind`` (:data:`tspike_lab.functional.SPIKES`), for the oracle."""
        return functional.SPIKES[self.kind]

    @property
    def zero_reset(self) -> bool:
        return self.reset_mechanism == "zero"

    @property
    def ste(self) -> bool:
        return type(self.spike_grad) is surrogate.STE

    def u_rows(self, num_steps: int) -> int:
        """How many leading steps of ``u`` the backward reads (0, T-1 or T)."""
        if not self.ste:
            return num_steps
        if self.zero_reset and not self.detach_reset:
            return max(num_steps - 1, 0)
        return 0


def make_spec(*, beta, threshold, kind, reset_mechanism, spike_grad, detach_reset) -> LIFSpec:
    """Validate and resolve the options of a LIF layer or call; a :class:`~tspike_lab.errors.ConfigError`
    names a bad one."""
    functional.check_kind(kind)
    functional.check_reset(reset_mechanism)
    for name, value in (("beta", beta), ("threshold", threshold)):
        if isinstance(value, torch.Tensor):
            if value.numel() != 1 or value.requires_grad:
                raise ConfigError.bad(
                    "",
                    name,
                    value,
                    "a python float for the fast paths (a tensor that "
                    "needs no gradient and holds one value is read as one)",
                )
            value = float(value)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ConfigError.bad("", name, value, "a float")
    sg = surrogate.get(spike_grad)
    code, param = None, 0.0
    if type(sg) in SURROGATE_CODES:
        code, attr = SURROGATE_CODES[type(sg)]
        param = float(getattr(sg, attr))
    return LIFSpec(kind, reset_mechanism, float(beta), float(threshold), bool(detach_reset), sg, code, param)


def code_bits(b: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Pack a spike ``b`` in {-1, 0, 1} and a 0/1 STE window into one uint8: ``(b + 1) | mask << 2``."""
    code = (b + 1).to(torch.uint8)
    if mask is not None:
        code |= mask.to(torch.uint8) << 2
    return code


def save_forward(ctx, spec: LIFSpec, b: torch.Tensor, code, u, mem, return_mem: bool, extra=()):
    """The forward's bookkeeping shared by the fused autograd Functions; returns their output.

    Saves the spec, b's geometry (not b: a float copy of the spikes would stay alive), the
    1-byte codes and the membranes the backward needs (then ``extra``, e.g. the amplitude);
    ``mem`` is returned without gradient.
    """
    ctx.spec = spec
    ctx.geometry = (b.shape, b.stride(), b.dtype)
    ctx.save_for_backward(code, u, *extra)
    if return_mem:
        ctx.mark_non_differentiable(mem)
        return b, mem
    return b


_LOW = (torch.float16, torch.bfloat16)


def amplitude_reason(x_seq: torch.Tensor, amplitude: torch.Tensor) -> str | None:
    """None if a fused kernel can multiply by ``amplitude`` itself, else why not.

    ``amplitude`` is one a or one per channel at dim 2 (:func:`tspike_lab.kernels.lif_seq` checks
    the shape). The output must have the oracle's dtype: ``a`` of the input's dtype, or (float16 /
    bfloat16 input, as under autocast) a scalar ``a`` of float32, which PyTorch multiplies in
    float32 and rounds to the input's dtype.
    """
    if amplitude.device != x_seq.device:
        return f"amplitude is on {amplitude.device}, the input on {x_seq.device}"
    scalar_f32 = x_seq.dtype in _LOW and amplitude.dim() == 0 and amplitude.dtype == torch.float32
    if amplitude.dtype != x_seq.dtype and not scalar_f32:
        return f"amplitude is {amplitude.dtype}, the input {x_seq.dtype}"
    return None


def compute_amplitude(amp: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """The amplitude in the kernels' arithmetic type (float32 for float16 / bfloat16 storage)."""
    if amp is None:
        return None
    return amp.detach().to(torch.float32 if dtype in _LOW else dtype).contiguous()


def amplitude_index(steps: torch.Tensor, amp: torch.Tensor | None) -> tuple[int, int]:
    """``(div, mod)``: the amplitude of the element at offset n of a step is ``amp[(n // div) % mod]``."""
    if amp is None or amp.dim() == 0 or amp.shape[0] == 1:
        return 1 << 62, 1  # one run over the whole step: a single value
    return steps.stride(2), amp.shape[0]  # a dense step: the index along dim c is (n // stride_c) % size_c


class Passes(Protocol):
    """One backend's two passes, as its autograd Functions call them.

    ``forward(x_seq, spec, save, return_mem, amp=None)`` returns ``(out, code, u, mem)``: ``out`` the
    spikes (``a * b`` given ``amp``), ``code`` / ``u`` what the backward needs (None unless ``save``),
    ``mem`` the membranes (None unless ``return_mem``). ``backward(ctx, grad_out, amp, want_ga)``
    returns ``(dL/dx, dL/da or None)`` from what :func:`save_forward` kept on ``ctx``.
    """

    def forward(self, x_seq: torch.Tensor, spec: LIFSpec, save: bool, return_mem: bool, amp=None): ...

    def backward(self, ctx, grad_out: torch.Tensor, amp, want_ga: bool): ...


@dataclass(frozen=True)
class FunctionPasses:
    """:class:`Passes` made of two functions (a backend without options)."""

    forward: Callable
    backward: Callable


def _function(name: str, module: str, doc: str, fwd, bwd):
    return type(
        name,
        (torch.autograd.Function,),
        {"forward": staticmethod(fwd), "backward": staticmethod(bwd), "__doc__": doc, "__module__": module},
    )


def plain_function(name: str, module: str, doc: str):
    """The autograd Function of a backend's ``b_seq`` (and ``mem_seq``, no grad).

    ``apply(x_seq, spec, return_mem, passes)`` runs ``passes`` (:class:`Passes`) forward, and backward
    from the saved codes and membranes.
    """

    def fwd(ctx, x_seq, spec: LIFSpec, return_mem: bool, passes: Passes):
        b, code, u, mem = passes.forward(x_seq, spec, save=True, return_mem=return_mem)
        ctx.passes = passes
        return save_forward(ctx, spec, b, code, u, mem, return_mem)

    @once_differentiable
    def bwd(ctx, grad_b, *_):
        gx, _ = ctx.passes.backward(ctx, grad_b, None, False)
        return gx, None, None, None

    return _function(name, module, doc, fwd, bwd)


def scaled_function(name: str, module: str, doc: str):
    """The autograd Function of a backend's ``a * b_seq``, differentiable in ``x_seq`` and ``a``.

    ``apply(x_seq, amplitude, spec, passes)`` runs ``passes`` (:class:`Passes`) with the amplitude.
    """

    def fwd(ctx, x_seq, amplitude, spec: LIFSpec, passes: Passes):
        amp = compute_amplitude(amplitude, x_seq.dtype)
        out, code, u, _ = passes.forward(x_seq, spec, save=True, return_mem=False, amp=amp)
        ctx.passes = passes
        ctx.amp_dtype, ctx.amp_shape = amplitude.dtype, amplitude.shape
        return save_forward(ctx, spec, out, code, u, None, False, extra=(amp,))

    @once_differentiable
    def bwd(ctx, grad_out):
        gx, ga = ctx.passes.backward(ctx, grad_out, ctx.saved_tensors[2], ctx.needs_input_grad[1])
        return gx, ga, None, None

    return _function(name, module, doc, fwd, bwd)


def run_fused(function, passes: Passes, x_seq: torch.Tensor, spec: LIFSpec, return_mem: bool):
    """``(b_seq, mem_seq or None)`` of a fused path: its autograd ``function`` (:func:`plain_function`)
    where a gradient is wanted, else ``passes.forward`` with ``save=False``, which saves nothing."""
    if torch.is_grad_enabled() and x_seq.requires_grad:
        out = function.apply(x_seq, spec, return_mem, passes)
        return (out[0], out[1]) if return_mem else (out, None)
    b, _, _, mem = passes.forward(x_seq, spec, save=False, return_mem=return_mem)
    return b, mem


def run_scaled(function, passes: Passes, x_seq: torch.Tensor, amplitude: torch.Tensor, spec: LIFSpec) -> torch.Tensor:
    """``a * b_seq`` of a fused path: its scaled autograd ``function`` (:func:`scaled_function`) where a
    gradient is wanted, else ``passes.forward``, which saves nothing."""
    if torch.is_grad_enabled() and (x_seq.requires_grad or amplitude.requires_grad):
        return function.apply(x_seq, amplitude, spec, passes)
    return passes.forward(x_seq, spec, save=False, return_mem=False, amp=amplitude)[0]
