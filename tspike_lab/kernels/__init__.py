"""Fast paths for the multi-step LIF over ``[T, B, ...]``, tested against the oracle.

The library's one multi-step entry point, :func:`lif_seq`: the arguments of the oracle
(:func:`tspike_lab.functional.oracle_lif_seq`, kept under that name for the tests) plus ``backend``:

===============  ==============================================================
``"auto"``       CUDA tensor and Triton importable: ``"triton"``; CPU float32/64
                 (or bfloat16 with the STE) and the C kernel builds: ``"fused"``; any other
                 :class:`~tspike_lab.surrogate.Surrogate`: ``"fused_torch"``; an
                 arbitrary snnTorch-style callable: ``"torch"``.
``"torch"``      the oracle :func:`tspike_lab.functional.oracle_lif_seq` (autograd
                 through every step).
``"fused"``      the C kernel (:mod:`.cpu`): CPU, float32/float64 with surrogates STE,
                 Triangle, ATan, Sigmoid; bfloat16 (bf16 autocast) with the STE, every
                 operation rounded as PyTorch rounds it. It also multiplies by the
                 amplitude ``a`` as it writes the spikes and reduces dL/da backward.
``"fused_torch"``  the same hand-written backward in PyTorch ops (:mod:`.eager`):
                 any device and dtype, any ``Surrogate`` (subclasses included).
``"triton"``     one Triton kernel per direction running the time loop
                 (:mod:`.triton_lif`): CUDA, float32/float16/bfloat16, the four
                 surrogates; it multiplies by the amplitude as the C kernel does.
===============  ==============================================================

A bad option raises :class:`~tspike_lab.errors.ConfigError` naming it, once, here (in
:func:`make_spec`, or in the oracle where ``beta`` / ``threshold`` are tensors); an explicit
backend that cannot run the input raises ``ValueError`` saying why; where the
Triton kernels fail their first launch, ``"auto"`` warns once with the reason and moves on.
Every path returns spikes equal to the oracle's and gradients equal to float rounding.

:func:`lif_seq` resolves its options into a :class:`LIFSpec` at every call; a layer builds its
spec once (:func:`make_spec`, :func:`check_backend`) and calls :func:`lif_seq_spec`.
"""

from __future__ import annotations

import functools
import warnings

import torch

from .. import functional, surrogate
from ..errors import ConfigError
from . import cpu, eager, triton_lif
from .spec import LIFSpec, amplitude_reason, make_spec

__all__ = [
    "BACKENDS",
    "lif_seq",
    "lif_seq_spec",
    "check_backend",
    "select_backend",
    "backend_report",
    "make_spec",
    "LIFSpec",
    "broadcast_amplitude",
]

BACKENDS = ("auto", "torch", "fused", "fused_torch", "triton")


def _why_not(backend: str, x: torch.Tensor, spec: LIFSpec) -> str | None:
    if backend == "torch":
        return None
    if backend == "fused":
        return cpu.supports(x, spec)
    if backend == "fused_torch":
        if not isinstance(spec.spike_grad, surrogate.Surrogate):
            return (
                f"fused_torch needs a tspike_lab.surrogate.Surrogate, got spike_grad={spec.spike_grad!r} "
                f"(an arbitrary callable runs on backend='torch')"
            )
        return None
    if backend == "triton":
        return triton_lif.supports(x, spec)
    raise AssertionError(backend)


def check_backend(backend: str) -> str:
    """``backend`` if it names one of :data:`BACKENDS`, else :class:`~tspike_lab.errors.ConfigError`."""
    if backend not in BACKENDS:
        raise ConfigError.bad("", "backend", backend, f"one of {BACKENDS}")
    return backend


@functools.cache
def _warn_fallback(reason: str, chosen: str) -> None:
    # Once per reason and process: "auto" asks at every forward.
    warnings.warn(
        f"backend='auto' does not use the Triton kernels: {reason}; running backend={chosen!r} instead",
        RuntimeWarning,
        stacklevel=2,
    )


def select_backend(x_seq: torch.Tensor, spec: LIFSpec, backend: str = "auto") -> str:
    """The backend that runs ``x_seq`` with ``spec``: ``backend`` itself, or the choice of "auto"."""
    check_backend(backend)
    if backend != "auto":
        reason = _why_not(backend, x_seq, spec)
        if reason is not None:
            raise ValueError(f"backend={backend!r} cannot run this input: {reason}")
        return backend
    triton_reason = _why_not("triton", x_seq, spec)
    if triton_reason is None:
        return "triton"
    chosen = next((c for c in ("fused", "fused_torch") if _why_not(c, x_seq, spec) is None), "torch")
    if triton_lif.input_reason(x_seq, spec) is None:
        _warn_fallback(triton_reason, chosen)  # an input Triton takes, refused by the machine: say so once
    return chosen


def backend_report() -> dict[str, str]:
    """Which compiled backends load on this machine, for logs and benchmark headers."""
    return {
        "fused": cpu.unavailable_reason() or "available",
        "triton": triton_lif.unavailable_reason() or "available",
    }


def broadcast_amplitude(a: torch.Tensor, ndim: int) -> torch.Tensor:
    """``a`` (one value, or one per channel at dim 2) shaped to broadcast against a ``[T, B, C, ...]``
    tensor of rank ``ndim``."""
    return a if a.dim() == 0 else a.view(-1, *([1] * (ndim - 3)))


def lif_seq(
    x_seq: torch.Tensor,
    *,
    beta=0.25,
    threshold=0.5,
    kind: str = "ternary",
    reset_mechanism: str = "zero",
    spike_grad=None,
    detach_reset: bool = False,
    backend: str = "auto",
    return_mem: bool = False,
    amplitude: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Multi-step LIF over ``[T, B, ...]`` on the chosen backend (see the module docstring).

    Args:
        x_seq: input currents ``[T, B, ...]``; the state starts at zero.
        beta, threshold, kind, reset_mechanism, spike_grad, detach_reset: as
            :func:`tspike_lab.functional.oracle_lif_seq` (tensors run the oracle).
        backend: one of :data:`BACKENDS`.
        return_mem: also return the membranes (without gradient on the fast paths).
        amplitude: optional ``a``, a scalar tensor or one value per channel (dim 2): the
            output is then ``a * b_seq`` (``b_seq * a`` rounded as the oracle's multiply),
            differentiable in ``a``. The C and Triton kernels multiply while they write the
            spikes and reduce dL/da in their backward; the other paths multiply afterwards.
    Returns:
        ``(out_seq, mem_seq)``: spikes ``[T, B, ...]`` (times ``amplitude`` if given), and the
        membranes or None.
    """
    _check_input(x_seq)
    check_backend(backend)
    if backend == "auto" and any(isinstance(v, torch.Tensor) for v in (beta, threshold)):
        backend = "torch"  # a tensor beta / threshold (maybe trained) is the oracle's business
    _check_amplitude(x_seq, amplitude)
    if backend == "torch" and any(isinstance(v, torch.Tensor) for v in (beta, threshold)):
        b_seq, mem_seq = functional.oracle_lif_seq(
            x_seq,
            beta=beta,
            threshold=threshold,
            kind=kind,
            reset_mechanism=reset_mechanism,
            spike_grad=spike_grad,
            detach_reset=detach_reset,
        )
        return _scale(b_seq, amplitude), (mem_seq if return_mem else None)
    spec = make_spec(
        beta=beta,
        threshold=threshold,
        kind=kind,
        reset_mechanism=reset_mechanism,
        spike_grad=spike_grad,
        detach_reset=detach_reset,
    )
    return _run(x_seq, spec, backend, return_mem, amplitude)


def lif_seq_spec(
    x_seq: torch.Tensor,
    spec: LIFSpec,
    *,
    backend: str = "auto",
    return_mem: bool = False,
    amplitude: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`lif_seq` with the options already resolved into ``spec`` (:func:`make_spec`) and
    ``backend`` already checked (:func:`check_backend`): what a layer calls at every forward."""
    _check_input(x_seq)
    _check_amplitude(x_seq, amplitude)
    return _run(x_seq, spec, backend, return_mem, amplitude)


def _check_input(x_seq: torch.Tensor) -> None:
    if x_seq.dim() < 2:
        raise ValueError(f"x_seq must be [T, B, ...] (rank >= 2), got shape {tuple(x_seq.shape)}")
    if not x_seq.is_floating_point():
        raise ValueError(f"x_seq must be a floating-point tensor, got dtype {x_seq.dtype}")


def _check_amplitude(x_seq: torch.Tensor, amplitude) -> None:
    if amplitude is None:
        return
    if not isinstance(amplitude, torch.Tensor):
        raise ValueError(f"amplitude must be a tensor or None, got {type(amplitude).__name__}")
    if amplitude.dim() == 1 and (x_seq.dim() < 3 or x_seq.shape[2] != amplitude.shape[0]):
        raise ValueError(
            f"amplitude of shape {tuple(amplitude.shape)} needs x_seq [T, B, "
            f"{amplitude.shape[0]}, ...], got {tuple(x_seq.shape)}"
        )
    if amplitude.dim() > 1:
        raise ValueError(f"amplitude must be a scalar or one value per channel, got shape {tuple(amplitude.shape)}")


def _scale(b_seq: torch.Tensor, amplitude: torch.Tensor | None) -> torch.Tensor:
    return b_seq if amplitude is None else b_seq * broadcast_amplitude(amplitude, b_seq.dim())


def _run(x_seq, spec: LIFSpec, backend: str, return_mem: bool, amplitude):
    chosen = select_backend(x_seq, spec, backend)
    if (
        chosen in ("fused", "triton")
        and amplitude is not None
        and not return_mem
        and amplitude_reason(x_seq, amplitude) is None
    ):
        scaled = cpu.scaled_lif_seq_cpu if chosen == "fused" else triton_lif.scaled_lif_seq_triton
        return scaled(x_seq, amplitude, spec), None
    if chosen == "torch":
        b_seq, mem_seq = functional.run_oracle(
            x_seq,
            spec.spike,
            beta=spec.beta,
            threshold=spec.threshold,
            reset_mechanism=spec.reset_mechanism,
            spike_grad=spec.spike_grad,
            detach_reset=spec.detach_reset,
        )
        mem_seq = mem_seq if return_mem else None
    else:
        fused = {"fused": cpu.lif_seq_cpu, "triton": triton_lif.lif_seq_triton, "fused_torch": eager.lif_seq_eager}
        b_seq, mem_seq = fused[chosen](x_seq, spec, return_mem)
    return _scale(b_seq, amplitude), mem_seq
