"""Fused multi-step LIF on the CPU: one pass over memory forward, one backward.

A small C kernel (``lif_cpu.c`` and the per-type template it includes, ``lif_cpu_template.h``),
compiled once per machine with the system C compiler and loaded with ``ctypes`` (no PyTorch
headers). Each thread takes blocks of :data:`CHUNK` neurons and runs the whole time loop on them
with the state in registers / L1: forward reads ``x`` once and writes the spikes, a one-byte
``code`` per element (spike and STE window) and, only where the backward needs it, the membrane
(see :mod:`.spec`); backward reads ``grad`` and that state once and writes ``grad_x``. Given an
amplitude ``a`` (one, or one per channel), forward writes ``a * b`` and backward forms
``dL/db = dL/dout * a`` on the fly and sums ``dL/da`` per block in double: the layer's output
needs no extra pass over memory.

Floating point: compiled with ``-ffp-contract=off`` and without fast-math, so every
operation rounds as PyTorch's eager ops do and the spikes equal the oracle's bit for
bit (the tests check it, thresholds hit exactly included). bfloat16 (what bf16 autocast
feeds the neurons) is stored as bfloat16 and computed in float, rounded to bfloat16 after
every operation as PyTorch's CPU kernels do: spikes and dL/dx equal the oracle's bit for
bit; the smooth surrogates run in float32/float64 only.

How the kernel runs is a :class:`CPUKernel`: the AVX-512 pass on or off, the size from which
outputs are written with streaming stores, and the :class:`~.recycle.Recycler` that keeps the
blocks of outputs of 32 MiB and more for reuse. ``backend="fused"`` runs :func:`default_kernel`,
whose recycler holds at most ``$TSPIKE_RECYCLE_MB`` MiB (default 1024; 0 turns it off).

The compiled library is cached as :mod:`.build` describes (``$TSPIKE_KERNEL_CACHE``, default
``~/.cache/tspike_lab/kernels``, only in folders of this user's), keyed by the sources' content,
the flags, the compiler and the CPU. Loading checks that the library's ``CHUNK`` and its
``lif_args`` layout are those of this module. Where no compiler works, :func:`available` is False
and ``backend="auto"`` uses the PyTorch fused path instead.
"""

from __future__ import annotations

import ctypes
import functools
from dataclasses import dataclass
from importlib import resources

import torch

from ..errors import ConfigError
from . import build
from .build import KernelUnavailable
from .layout import as_steps, empty_steps, match_steps
from .recycle import Recycler, env_int
from .spec import (
    LIFSpec,
    amplitude_index,
    amplitude_reason,
    compute_amplitude,
    plain_function,
    run_fused,
    run_scaled,
    scaled_function,
)

__all__ = [
    "available",
    "unavailable_reason",
    "supports",
    "lif_seq_cpu",
    "scaled_lif_seq_cpu",
    "amplitude_reason",
    "LIFSeqCPU",
    "ScaledLIFSeqCPU",
    "library",
    "CPUKernel",
    "default_kernel",
    "Recycler",
    "KernelUnavailable",
    "CHUNK",
    "SOURCES",
]

DTYPES = (torch.float32, torch.float64, torch.bfloat16)
_SUFFIX = {torch.float32: "f32", torch.float64: "f64", torch.bfloat16: "bf16"}
# Outputs at least this large are written with non-temporal stores: they do not fit in the
# cache anyway, and streaming skips reading every line before overwriting it.
STREAM_BYTES = env_int("TSPIKE_STREAM_BYTES", 32 * 2**20, strict=False)  # a bad value: refused by default_kernel()
CHUNK = 4096  # neurons per block: compiled in with -DCHUNK, checked when the library loads
SOURCES = ("lif_cpu.c", "lif_cpu_template.h")  # the translation unit first; shipped as package data
_FLAGS = [
    "-O3",
    "-march=native",
    "-ffp-contract=off",
    "-fno-fast-math",
    "-fopenmp",
    "-fPIC",
    "-shared",
    "-std=gnu11",
    f"-DCHUNK={CHUNK}",
]


class _Args(ctypes.Structure):
    """``lif_args`` of lif_cpu.c, field for field (checked against the library when it loads)."""

    _fields_ = [
        ("T", ctypes.c_int64),
        ("N", ctypes.c_int64),
        ("x_stride", ctypes.c_int64),
        ("u_rows", ctypes.c_int64),
        ("a_div", ctypes.c_int64),
        ("a_mod", ctypes.c_int64),
        ("beta", ctypes.c_double),
        ("threshold", ctypes.c_double),
        ("sg_param", ctypes.c_double),
        ("ternary", ctypes.c_int32),
        ("subtract", ctypes.c_int32),
        ("detach", ctypes.c_int32),
        ("sg", ctypes.c_int32),
        ("threads", ctypes.c_int32),
        ("stream", ctypes.c_int32),
        ("simd", ctypes.c_int32),
    ]


class _StepArgs(ctypes.Structure):
    """``lif_step_args`` of lif_cpu.c, field for field (checked against the library when it loads)."""

    _fields_ = [
        ("N", ctypes.c_int64),
        ("beta", ctypes.c_double),
        ("threshold", ctypes.c_double),
        ("sg_param", ctypes.c_double),
        ("sub", ctypes.c_double),
        ("zer", ctypes.c_double),
        ("ternary", ctypes.c_int32),
        ("detach", ctypes.c_int32),
        ("sg", ctypes.c_int32),
        ("threads", ctypes.c_int32),
    ]


def _sources() -> dict[str, bytes]:
    folder = resources.files(__package__)
    return {name: folder.joinpath(name).read_bytes() for name in SOURCES}


def _flag_sets() -> list[list[str]]:
    # -march=native is a speed-up only; retry without it, then without OpenMP.
    return [
        _FLAGS,
        [f for f in _FLAGS if f != "-march=native"],
        [f for f in _FLAGS if f not in ("-march=native", "-fopenmp")],
    ]


def check_abi(
    lib: ctypes.CDLL,
    args: type[ctypes.Structure] | None = None,
    chunk: int | None = None,
    step_args: type[ctypes.Structure] | None = None,
) -> None:
    """Raise :class:`KernelUnavailable` unless ``lib`` was compiled with ``chunk`` (default :data:`CHUNK`)
    neurons per block and its ``lif_args`` and ``lif_step_args`` have the size and field offsets of
    ``args`` and ``step_args`` (default ``_Args`` and ``_StepArgs``)."""
    chunk = CHUNK if chunk is None else chunk
    lib.lif_chunk.restype, lib.lif_chunk.argtypes = ctypes.c_int64, []
    if lib.lif_chunk() != chunk:
        raise KernelUnavailable(
            f"the C kernel was compiled with CHUNK={lib.lif_chunk()}, cpu.py sizes its partial sums by CHUNK={chunk}"
        )
    _check_layout(lib, "lif_args", _Args if args is None else args)
    _check_layout(lib, "lif_step_args", _StepArgs if step_args is None else step_args)


def _check_layout(lib: ctypes.CDLL, struct: str, args: type[ctypes.Structure]) -> None:
    layout = getattr(lib, f"{struct}_layout")
    layout.restype, layout.argtypes = ctypes.c_int64, [ctypes.POINTER(ctypes.c_int64), ctypes.c_int64]
    buf = (ctypes.c_int64 * 64)()
    count = layout(buf, len(buf))
    in_c = list(buf[: min(count, len(buf))])
    in_python = [ctypes.sizeof(args)] + [getattr(args, name).offset for name, _ in args._fields_]
    if in_c != in_python:
        raise KernelUnavailable(
            f"{struct} in lif_cpu.c and its ctypes mirror {args.__name__} disagree: "
            f"size and field offsets {in_c} in C, {in_python} in Python (edit both together)"
        )


def library() -> ctypes.CDLL:
    """Build (once per machine) and load the C kernel; raises :class:`KernelUnavailable`."""
    lib, error = _load()
    if lib is None:
        raise KernelUnavailable(error)
    return lib


@functools.cache
def _load() -> tuple[ctypes.CDLL | None, str | None]:
    # Memoised, failure included: a machine without a compiler tries once per process.
    try:
        return _build_and_load(), None
    except KernelUnavailable as e:
        return None, str(e)


def _build_and_load() -> ctypes.CDLL:
    lib = build.load_library("lif_cpu", _sources(), _flag_sets())
    check_abi(lib)
    for sfx in _SUFFIX.values():
        for name, pointers in ((f"lif_fwd_{sfx}", 5), (f"lif_bwd_{sfx}", 6)):
            getattr(lib, name).restype = None
            getattr(lib, name).argtypes = [ctypes.c_void_p] * pointers + [ctypes.POINTER(_Args)]
    for sfx in ("f32", "f64"):  # the one-step kernels of the snnTorch-style neurons (:mod:`.step`)
        for name, pointers in ((f"lif_step_fwd_{sfx}", 5), (f"lif_step_bwd_{sfx}", 7)):
            getattr(lib, name).restype = None
            getattr(lib, name).argtypes = [ctypes.c_void_p] * pointers + [ctypes.POINTER(_StepArgs)]
    return lib


def unavailable_reason() -> str | None:
    """None if the C kernel loads, else why not."""
    try:
        library()
    except KernelUnavailable as e:
        return str(e)
    return None


def available() -> bool:
    return unavailable_reason() is None


def supports(x: torch.Tensor, spec: LIFSpec) -> str | None:
    """None if this kernel runs ``x`` with ``spec``, else the reason it does not."""
    if x.device.type != "cpu":
        return f"the C kernel runs on CPU tensors, got device {x.device}"
    if x.dtype not in DTYPES:
        return f"the C kernel runs float32/float64/bfloat16, got {x.dtype}"
    if spec.sg_code is None:
        return f"the C kernel implements STE, Triangle, ATan and Sigmoid, got spike_grad={spec.spike_grad!r}"
    if x.dtype == torch.bfloat16:
        if not spec.ste:
            return f"the C kernel runs bfloat16 with the STE surrogate only, got spike_grad={spec.spike_grad!r}"
        values = {"beta": spec.beta, "threshold": spec.threshold, "width * threshold": spec.sg_param * spec.threshold}
        for name, v in values.items():
            if float(torch.tensor(v, dtype=torch.bfloat16)) != v:
                return f"the C kernel runs bfloat16 where {name} is a bfloat16 number, got {v!r}"
    return unavailable_reason()


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _threads(numel: int) -> int:
    return 1 if numel < (1 << 16) else max(1, torch.get_num_threads())


def _args(
    spec: LIFSpec,
    T: int,
    N: int,
    x_stride: int,
    u_rows: int,
    numel: int,
    itemsize: int,
    amp_index: tuple[int, int] = (1 << 62, 1),
    *,
    simd: bool = True,
    stream_bytes: int = STREAM_BYTES,
) -> _Args:
    """One call's ``lif_args`` (benchmarks/bench_neuron.py calls the library with it directly)."""
    return _Args(
        T,
        N,
        x_stride,
        u_rows,
        amp_index[0],
        amp_index[1],
        spec.beta,
        spec.threshold,
        spec.sg_param,
        int(spec.ternary),
        int(not spec.zero_reset),
        int(spec.detach_reset),
        spec.sg_code,
        _threads(numel),
        int(numel * itemsize >= stream_bytes),
        int(simd),
    )


@dataclass(frozen=True, eq=False)
class CPUKernel:
    """How the C kernel runs (every setting gives the same bits; the tests compare them).

    Args:
        simd: float32 on a CPU with AVX-512 runs the forward and the STE backward as one
            vectorised pass per step (the same operations in the same order); False runs the
            portable loops.
        stream_bytes: outputs at least this large are written with non-temporal stores.
        recycler: where outputs live (:class:`~.recycle.Recycler`); None: plain allocations.
            ``close()`` (or leaving a ``with`` block) closes it.
    """

    simd: bool = True
    stream_bytes: int = STREAM_BYTES
    recycler: Recycler | None = None

    def close(self) -> None:
        if self.recycler is not None:
            self.recycler.close()

    def __enter__(self) -> CPUKernel:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _empty(self, size, stride, dtype) -> torch.Tensor:
        if self.recycler is None:
            return torch.empty_strided(size, stride, dtype=dtype)
        return self.recycler.empty_strided(size, stride, dtype)

    def _args(self, spec: LIFSpec, T, N, x_stride, u_rows, numel, itemsize, amp_index) -> _Args:
        return _args(
            spec, T, N, x_stride, u_rows, numel, itemsize, amp_index, simd=self.simd, stream_bytes=self.stream_bytes
        )

    def forward(
        self, x_seq: torch.Tensor, spec: LIFSpec, save: bool, return_mem: bool, amp: torch.Tensor | None = None
    ):
        """``(out, code, u, mem)`` (see :class:`.spec.Passes`) by one call of the forward kernel."""
        lib = library()
        x, x_stride = as_steps(x_seq)
        T, N = x.shape[0], x[0].numel()
        empty = self._empty
        b = empty_steps(x, empty=empty)
        rows = spec.u_rows(T) if save else 0
        mem = empty_steps(x, empty=empty) if return_mem else None
        u = mem if return_mem else (empty_steps(x, rows, empty=empty) if rows else None)
        code = empty((T, N), (N, 1), torch.uint8) if save else None
        amp = compute_amplitude(amp, x.dtype)
        a = self._args(
            spec, T, N, x_stride, T if return_mem else rows, T * N, x.element_size(), amplitude_index(b, amp)
        )
        fwd = getattr(lib, f"lif_fwd_{_SUFFIX[x.dtype]}")
        if T * N:
            fwd(_ptr(x), _ptr(b), _ptr(code), _ptr(u), _ptr(amp), ctypes.byref(a))
        saved_u = u[:rows] if (u is not None and rows) else None
        return b, code, saved_u, mem

    def backward(self, ctx, grad_out: torch.Tensor, amp: torch.Tensor | None, want_ga: bool):
        """``(dL/dx, dL/da or None)`` by one call of the backward kernel."""
        code, u = ctx.saved_tensors[:2]
        spec = ctx.spec
        lib = library()
        shape, stride, dtype = ctx.geometry
        gx = self._empty(shape, stride, dtype)
        g = match_steps(grad_out, gx)
        T, N = shape[0], gx[0].numel()
        index = amplitude_index(gx, amp)
        part = torch.zeros(((N + CHUNK - 1) // CHUNK, index[1]), dtype=torch.float64) if want_ga else None
        a = self._args(spec, T, N, N, 0 if u is None else u.shape[0], T * N, gx.element_size(), index)
        bwd = getattr(lib, f"lif_bwd_{_SUFFIX[dtype]}")
        if T * N:
            bwd(_ptr(g), _ptr(code), _ptr(u), _ptr(gx), _ptr(amp), _ptr(part), ctypes.byref(a))
        ga = None
        if want_ga:
            ga = part.sum(0).to(ctx.amp_dtype).reshape(amp.shape)
        return gx, ga

    def lif_seq(self, x_seq: torch.Tensor, spec: LIFSpec, return_mem: bool = False):
        """``(b_seq, mem_seq or None)``; saves state only where a gradient is wanted."""
        return run_fused(LIFSeqCPU, self, x_seq, spec, return_mem)

    def scaled_lif_seq(self, x_seq: torch.Tensor, amplitude: torch.Tensor, spec: LIFSpec) -> torch.Tensor:
        """``amplitude * b_seq`` (``amplitude``: see :func:`.spec.amplitude_reason`)."""
        return run_scaled(ScaledLIFSeqCPU, self, x_seq, amplitude, spec)


@functools.cache
def default_kernel() -> CPUKernel:
    """The kernel ``backend="fused"`` runs: SIMD as ``$TSPIKE_SIMD`` says (on), streaming from
    ``$TSPIKE_STREAM_BYTES`` (32 MiB), and
    the process's recycler, created here at first use and capped by ``$TSPIKE_RECYCLE_MB``.

    ``default_kernel().close()`` unmaps the blocks it holds; later outputs are plain allocations.
    """
    stream = env_int("TSPIKE_STREAM_BYTES", 32 * 2**20, unit="bytes")  # ConfigError naming a bad value
    return CPUKernel(simd=simd_from_env(), stream_bytes=stream, recycler=Recycler.from_env())


def simd_from_env() -> bool:
    """``$TSPIKE_SIMD``: 1 (default) runs the AVX-512 pass where the CPU has it, 0 the portable loops everywhere
    (what a CPU without AVX-512 runs; the portability matrix sets it). ConfigError naming another value."""
    value = env_int("TSPIKE_SIMD", 1)
    if value > 1:
        raise ConfigError(
            f"environment variable TSPIKE_SIMD must be 0 or 1, got {value!r}; fix or unset it",
            field="TSPIKE_SIMD",
            value=value,
            allowed="0 or 1",
        )
    return bool(value)


LIFSeqCPU = plain_function(
    "LIFSeqCPU",
    __name__,
    """
    ``b_seq`` (and ``mem_seq``, no grad) from ``x_seq``; backward by the C kernel.
    """,
)

ScaledLIFSeqCPU = scaled_function(
    "ScaledLIFSeqCPU",
    __name__,
    """
    ``a * b_seq`` from ``x_seq`` and the amplitude ``a`` in one pass; backward gives dL/dx and dL/da.

    ``out = b * a`` is rounded as the oracle's multiply; dL/db = dL/dout * a (the same product
    autograd forms), and dL/da = sum(dL/dout * b) over the broadcast dims, summed per
    4096-neuron block in double (the oracle's float sum may differ by rounding).
    """,
)


def lif_seq_cpu(x_seq: torch.Tensor, spec: LIFSpec, return_mem: bool = False, kernel: CPUKernel | None = None):
    """``(b_seq, mem_seq or None)`` by the C kernel (``kernel``: default :func:`default_kernel`)."""
    return (kernel or default_kernel()).lif_seq(x_seq, spec, return_mem)


def scaled_lif_seq_cpu(
    x_seq: torch.Tensor, amplitude: torch.Tensor, spec: LIFSpec, kernel: CPUKernel | None = None
) -> torch.Tensor:
    """``amplitude * b_seq`` by the C kernel (``amplitude``: see :func:`.spec.amplitude_reason`)."""
    return (kernel or default_kernel()).scaled_lif_seq(x_seq, amplitude, spec)
