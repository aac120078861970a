"""Fused multi-step LIF on the CPU: one pass over memory forward, one backward.

A small C kernel (below), compiled once per machine with the system C compiler and
loaded with ``ctypes`` (no PyTorch headers, so it builds in about a second). Each thread
takes blocks of ``CHUNK`` neurons and runs the whole time loop on them with the state
in registers / L1: forward reads ``x`` once and writes the spikes, a one-byte ``code``
per element (spike and STE window) and, only where the backward needs it, the
membrane (see :mod:`.spec`); backward reads ``grad`` and that state once and writes
``grad_x``.

Floating point: compiled with ``-ffp-contract=off`` and without fast-math, so every
operation rounds as PyTorch's eager ops do and the spikes equal the oracle's bit for
bit (the tests check it, thresholds hit exactly included).

The compiled library is cached under ``$TSPIKE_KERNEL_CACHE`` (default
``~/.cache/tspike_lab/kernels``), keyed by the source, the flags, the compiler and the
CPU. Where no compiler works, :func:`available` is False and ``backend="auto"`` uses
the PyTorch fused path instead.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch
from torch.autograd.function import once_differentiable

from .layout import as_steps, empty_steps, match_steps
from .spec import LIFSpec, save_forward

__all__ = ["available", "unavailable_reason", "supports", "lif_seq_cpu", "LIFSeqCPU", "library"]

DTYPES = (torch.float32, torch.float64)
# Outputs at least this large are written with non-temporal stores: they do not fit in the
# cache anyway, and streaming skips reading every line before overwriting it.
STREAM_BYTES = int(os.environ.get("TSPIKE_STREAM_BYTES", 32 * 2**20))

_SOURCE = r"""
#include <stdint.h>
#include <math.h>

typedef struct {
    int64_t T;         /* steps */
    int64_t N;         /* elements per step */
    int64_t x_stride;  /* elements from x_t to x_{t+1}: N, or 0 for a time-broadcast input */
    int64_t u_rows;    /* leading steps of u written forward / read backward */
    double beta, threshold, sg_param;
    int32_t ternary, subtract, detach, sg, threads, stream;
} lif_args;

#define CHUNK 4096

#if defined(__AVX512F__)
#include <immintrin.h>
#define HAVE_STREAM 1
#else
#define HAVE_STREAM 0
#endif

/* Copy a chunk from the L1 buffer to the output; with `stream`, non-temporal stores
   (no read-for-ownership of lines that are only written: outputs larger than the cache). */
static inline void store_f32(float *restrict dst, const float *restrict src, int64_t len, int stream) {
    int64_t i = 0;
#if HAVE_STREAM
    if (stream) {
        for (; i < len && ((uintptr_t)(dst + i) & 63); ++i) dst[i] = src[i];
        for (; i + 16 <= len; i += 16) _mm512_stream_ps(dst + i, _mm512_loadu_ps(src + i));
    }
#endif
    for (; i < len; ++i) dst[i] = src[i];
}

static inline void store_f64(double *restrict dst, const double *restrict src, int64_t len, int stream) {
    int64_t i = 0;
#if HAVE_STREAM
    if (stream) {
        for (; i < len && ((uintptr_t)(dst + i) & 63); ++i) dst[i] = src[i];
        for (; i + 8 <= len; i += 8) _mm512_stream_pd(dst + i, _mm512_loadu_pd(src + i));
    }
#endif
    for (; i < len; ++i) dst[i] = src[i];
}

static inline void store_u8(uint8_t *restrict dst, const uint8_t *restrict src, int64_t len, int stream) {
    int64_t i = 0;
#if HAVE_STREAM
    if (stream) {
        for (; i < len && ((uintptr_t)(dst + i) & 63); ++i) dst[i] = src[i];
        for (; i + 64 <= len; i += 64)
            _mm512_stream_si512((void *)(dst + i), _mm512_loadu_si512((const void *)(src + i)));
    }
#endif
    for (; i < len; ++i) dst[i] = src[i];
}

static inline void store_fence(int stream) {
#if HAVE_STREAM
    if (stream) _mm_sfence();
#else
    (void)stream;
#endif
}
#define SG_STE 0
#define SG_TRIANGLE 1
#define SG_ATAN 2
#define SG_SIGMOID 3

/* ds/dx of the smooth surrogates, x = u - th, in the operation order of surrogate.py. */
#define DEFINE_KERNELS(FT, SFX, FABS, EXP, STORE)                                                     \
static inline FT sg_##SFX(int sg, FT x, FT p, FT k, FT half_alpha) {                           \
    if (sg == SG_TRIANGLE) {                                                                   \
        FT v = (FT)1 - FABS(x) / p;                                                            \
        v = v < (FT)0 ? (FT)0 : v;                                                             \
        return v / p;                                                                          \
    }                                                                                          \
    if (sg == SG_ATAN) {                                                                       \
        FT y = k * x;                                                                          \
        return ((FT)1 / ((FT)1 + y * y)) * half_alpha;                                         \
    }                                                                                          \
    FT s = (FT)1 / ((FT)1 + EXP(-(p * x)));                                                    \
    return p * s * ((FT)1 - s);                                                                \
}                                                                                              \
                                                                                               \
void lif_fwd_##SFX(const FT *restrict x, FT *restrict b_out, uint8_t *restrict code,           \
                   FT *restrict u_out, const lif_args *a) {                                    \
    const int64_t T = a->T, N = a->N, xs = a->x_stride, ur = a->u_rows;                        \
    const FT beta = (FT)a->beta, th = (FT)a->threshold, nth = -th;                             \
    const FT lim = (FT)a->sg_param * th;                                                       \
    const int ternary = a->ternary, subtract = a->subtract, ste = a->sg == SG_STE;             \
    const int stream = a->stream;                                                              \
    const int64_t nchunks = (N + CHUNK - 1) / CHUNK;                                           \
    _Pragma("omp parallel for schedule(static) num_threads(a->threads)")                        \
    for (int64_t c = 0; c < nchunks; ++c) {                                                    \
        const int64_t n0 = c * CHUNK, len = N - n0 < CHUNK ? N - n0 : CHUNK;                   \
        FT u[CHUNK], b[CHUNK];                                                                 \
        for (int64_t i = 0; i < len; ++i) { u[i] = 0; b[i] = 0; }                              \
        for (int64_t t = 0; t < T; ++t) {                                                      \
            const FT *restrict xt = x + t * xs + n0;                                           \
            FT *restrict bt = b_out + t * N + n0;                                              \
            if (subtract) {                                                                    \
                for (int64_t i = 0; i < len; ++i) {                                            \
                    const FT v = (beta * u[i] - b[i] * th) + xt[i];                            \
                    FT s = (FT)(v >= th);                                                      \
                    if (ternary) s -= (FT)(v <= nth);                                          \
                    u[i] = v; b[i] = s;                                                        \
                }                                                                              \
            } else {                                                                           \
                for (int64_t i = 0; i < len; ++i) {                                            \
                    const FT v = (beta * u[i]) * ((FT)1 - FABS(b[i])) + xt[i];                 \
                    FT s = (FT)(v >= th);                                                      \
                    if (ternary) s -= (FT)(v <= nth);                                          \
                    u[i] = v; b[i] = s;                                                        \
                }                                                                              \
            }                                                                                  \
            STORE(bt, b, len, stream);                                                         \
            if (code) {                                                                        \
                uint8_t ct[CHUNK];                                                             \
                if (ste && ternary) {                                                          \
                    for (int64_t i = 0; i < len; ++i)                                          \
                        ct[i] = (uint8_t)((int)(b[i] + (FT)1) | ((FABS(u[i]) <= lim) << 2));   \
                } else if (ste) {                                                              \
                    for (int64_t i = 0; i < len; ++i)                                          \
                        ct[i] = (uint8_t)((int)(b[i] + (FT)1)                                  \
                                          | (((u[i] >= (FT)0) & (u[i] <= lim)) << 2));         \
                } else {                                                                       \
                    for (int64_t i = 0; i < len; ++i) ct[i] = (uint8_t)(int)(b[i] + (FT)1);    \
                }                                                                              \
                store_u8(code + t * N + n0, ct, len, stream);                                  \
            }                                                                                  \
            if (u_out && t < ur) STORE(u_out + t * N + n0, u, len, stream);                    \
        }                                                                                      \
        store_fence(stream);                                                                   \
    }                                                                                          \
}                                                                                              \
                                                                                               \
void lif_bwd_##SFX(const FT *restrict g_out, const uint8_t *restrict code,                     \
                   const FT *restrict u_in, FT *restrict g_x, const lif_args *a) {             \
    const int64_t T = a->T, N = a->N, ur = a->u_rows;                                          \
    const FT beta = (FT)a->beta, th = (FT)a->threshold, p = (FT)a->sg_param;                   \
    const FT k = (FT)(1.5707963267948966 * a->sg_param), half_alpha = (FT)(a->sg_param / 2);   \
    const int ternary = a->ternary, subtract = a->subtract, detach = a->detach, sg = a->sg;    \
    const int stream = a->stream;                                                              \
    const int64_t nchunks = (N + CHUNK - 1) / CHUNK;                                           \
    _Pragma("omp parallel for schedule(static) num_threads(a->threads)")                        \
    for (int64_t c = 0; c < nchunks; ++c) {                                                    \
        const int64_t n0 = c * CHUNK, len = N - n0 < CHUNK ? N - n0 : CHUNK;                   \
        FT gn[CHUNK], s[CHUNK];                                                                \
        for (int64_t i = 0; i < len; ++i) gn[i] = 0;                                           \
        for (int64_t t = T - 1; t >= 0; --t) {                                                 \
            const FT *restrict G = g_out + t * N + n0;                                         \
            const uint8_t *restrict ct = code + t * N + n0;                                    \
            const FT *restrict ut = t < ur ? u_in + t * N + n0 : 0;                            \
            FT *restrict gx = g_x + t * N + n0;                                                \
            if (sg == SG_STE) {                                                                \
                for (int64_t i = 0; i < len; ++i) s[i] = (FT)((ct[i] >> 2) & 1);               \
            } else if (ternary) {                                                              \
                for (int64_t i = 0; i < len; ++i)                                              \
                    s[i] = sg_##SFX(sg, ut[i] - th, p, k, half_alpha)                          \
                         + sg_##SFX(sg, -ut[i] - th, p, k, half_alpha);                        \
            } else {                                                                           \
                for (int64_t i = 0; i < len; ++i)                                              \
                    s[i] = sg_##SFX(sg, ut[i] - th, p, k, half_alpha);                         \
            }                                                                                  \
            if (subtract) {                                                                    \
                const FT keep = detach ? (FT)0 : (FT)1;                                        \
                for (int64_t i = 0; i < len; ++i) {                                            \
                    const FT gb = G[i] + keep * ((-gn[i]) * th);                               \
                    gn[i] = gb * s[i] + gn[i] * beta;                                          \
                }                                                                              \
            } else if (detach || !ut) {                                                        \
                for (int64_t i = 0; i < len; ++i) {                                            \
                    const FT b = (FT)((int)(ct[i] & 3) - 1);                                   \
                    gn[i] = G[i] * s[i] + (gn[i] * ((FT)1 - FABS(b))) * beta;                  \
                }                                                                              \
            } else {                                                                           \
                for (int64_t i = 0; i < len; ++i) {                                            \
                    const FT b = (FT)((int)(ct[i] & 3) - 1);                                   \
                    const FT gb = G[i] + (-(gn[i] * (beta * ut[i]))) * b;                      \
                    gn[i] = gb * s[i] + (gn[i] * ((FT)1 - FABS(b))) * beta;                    \
                }                                                                              \
            }                                                                                  \
            STORE(gx, gn, len, stream);                                                        \
        }                                                                                      \
        store_fence(stream);                                                                   \
    }                                                                                          \
}

DEFINE_KERNELS(float, f32, fabsf, expf, store_f32)
DEFINE_KERNELS(double, f64, fabs, exp, store_f64)
"""

_FLAGS = ["-O3", "-march=native", "-ffp-contract=off", "-fno-fast-math", "-fopenmp", "-fPIC", "-shared",
          "-std=gnu11"]


class _Args(ctypes.Structure):
    _fields_ = [
        ("T", ctypes.c_int64), ("N", ctypes.c_int64), ("x_stride", ctypes.c_int64), ("u_rows", ctypes.c_int64),
        ("beta", ctypes.c_double), ("threshold", ctypes.c_double), ("sg_param", ctypes.c_double),
        ("ternary", ctypes.c_int32), ("subtract", ctypes.c_int32), ("detach", ctypes.c_int32),
        ("sg", ctypes.c_int32), ("threads", ctypes.c_int32), ("stream", ctypes.c_int32),
    ]


class KernelUnavailable(RuntimeError):
    """The C kernel could not be built or loaded on this machine."""


def _cache_dirs() -> list[Path]:
    """Where to keep the compiled library: the configured folder, then a private temp folder."""
    root = os.environ.get("TSPIKE_KERNEL_CACHE")
    if not root:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(base, "tspike_lab", "kernels")
    uid = os.getuid() if hasattr(os, "getuid") else "user"
    return [Path(root), Path(tempfile.gettempdir()) / f"tspike_lab-kernels-{uid}"]


def _cpu_id() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            lines = [ln for ln in f if ln.startswith(("model name", "flags"))][:2]
        return "".join(lines)
    except OSError:
        return platform.processor() or platform.machine()


def _compile(cc: str, flags: list[str], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        src = Path(tmp) / "lif_cpu.c"
        src.write_text(_SOURCE)
        so = Path(tmp) / out.name
        proc = subprocess.run([cc, *flags, str(src), "-o", str(so), "-lm"], capture_output=True, text=True,
                              timeout=300)
        if proc.returncode != 0:
            raise KernelUnavailable(f"{cc} failed ({' '.join(flags)}): {proc.stderr.strip()[-2000:]}")
        os.replace(so, out)  # atomic: concurrent builders each publish a complete file


def library() -> ctypes.CDLL:
    """Build (once per machine) and load the C kernel; raises :class:`KernelUnavailable`."""
    lib, error = _load()
    if lib is None:
        raise KernelUnavailable(error)
    return lib


@functools.lru_cache(maxsize=None)
def _load() -> tuple[ctypes.CDLL | None, str | None]:
    # Memoised, failure included: a machine without a compiler tries once per process.
    try:
        return _build_and_load(), None
    except KernelUnavailable as e:
        return None, str(e)


def _build_and_load() -> ctypes.CDLL:
    if platform.system() == "Windows":
        raise KernelUnavailable("the C kernel is built for Linux/macOS only")
    cc = os.environ.get("CC")
    if cc and shutil.which(cc) is None:
        raise KernelUnavailable(f"the C compiler CC={cc!r} is not found")
    cc = cc or next((c for c in ("cc", "gcc", "clang") if shutil.which(c)), None)
    if cc is None:
        raise KernelUnavailable("no C compiler found (tried cc, gcc, clang; set CC)")
    try:
        version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as e:
        raise KernelUnavailable(f"C compiler {cc!r} does not run: {e}") from e
    errors = []
    # -march=native is a speed-up only; retry without it, then without OpenMP.
    for flags in (_FLAGS, [f for f in _FLAGS if f != "-march=native"],
                  [f for f in _FLAGS if f not in ("-march=native", "-fopenmp")]):
        key = hashlib.sha256("\0".join([_SOURCE, *flags, version, _cpu_id()]).encode()).hexdigest()[:16]
        lib = None
        for folder in _cache_dirs():
            path = folder / f"lif_cpu_{key}.so"
            try:
                if not path.exists():
                    _compile(cc, flags, path)
                lib = ctypes.CDLL(str(path))
                break
            except (KernelUnavailable, OSError, subprocess.SubprocessError) as e:
                errors.append(str(e))
        if lib is None:
            continue
        for name in ("lif_fwd_f32", "lif_fwd_f64", "lif_bwd_f32", "lif_bwd_f64"):
            getattr(lib, name).restype = None
            getattr(lib, name).argtypes = [ctypes.c_void_p] * 4 + [ctypes.POINTER(_Args)]
        return lib
    raise KernelUnavailable("; ".join(errors))


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
        return f"the C kernel runs float32/float64, got {x.dtype}"
    if spec.sg_code is None:
        return f"the C kernel implements STE, Triangle, ATan and Sigmoid, got spike_grad={spec.spike_grad!r}"
    return unavailable_reason()


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _threads(numel: int) -> int:
    return 1 if numel < (1 << 16) else max(1, torch.get_num_threads())


def _args(spec: LIFSpec, T: int, N: int, x_stride: int, u_rows: int, numel: int, itemsize: int) -> _Args:
    return _Args(T, N, x_stride, u_rows, spec.beta, spec.threshold, spec.sg_param, int(spec.ternary),
                 int(not spec.zero_reset), int(spec.detach_reset), spec.sg_code, _threads(numel),
                 int(numel * itemsize >= STREAM_BYTES))


def _forward(x_seq: torch.Tensor, spec: LIFSpec, save: bool, return_mem: bool):
    lib = library()
    x, x_stride = as_steps(x_seq)
    T, N = x.shape[0], x[0].numel()
    b = empty_steps(x)
    rows = spec.u_rows(T) if save else 0
    mem = empty_steps(x) if return_mem else None
    u = mem if return_mem else (empty_steps(x, rows) if rows else None)
    code = torch.empty((T, N), dtype=torch.uint8) if save else None
    a = _args(spec, T, N, x_stride, T if return_mem else rows, T * N, x.element_size())
    fwd = lib.lif_fwd_f32 if x.dtype == torch.float32 else lib.lif_fwd_f64
    if T * N:
        fwd(_ptr(x), _ptr(b), _ptr(code), _ptr(u), ctypes.byref(a))
    saved_u = u[:rows] if (u is not None and rows) else None
    return b, code, saved_u, mem


class LIFSeqCPU(torch.autograd.Function):
    """``b_seq`` (and ``mem_seq``, no grad) from ``x_seq``; backward by the C kernel."""

    @staticmethod
    def forward(ctx, x_seq, spec: LIFSpec, return_mem: bool):
        b, code, u, mem = _forward(x_seq, spec, save=True, return_mem=return_mem)
        return save_forward(ctx, spec, b, code, u, mem, return_mem)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_b, *_):
        code, u = ctx.saved_tensors
        spec = ctx.spec
        lib = library()
        shape, stride, dtype = ctx.geometry
        gx = torch.empty_strided(shape, stride, dtype=dtype)
        g = match_steps(grad_b, gx)
        T, N = shape[0], gx[0].numel()
        a = _args(spec, T, N, N, 0 if u is None else u.shape[0], T * N, gx.element_size())
        bwd = lib.lif_bwd_f32 if dtype == torch.float32 else lib.lif_bwd_f64
        if T * N:
            bwd(_ptr(g), _ptr(code), _ptr(u), _ptr(gx), ctypes.byref(a))
        return gx, None, None


def lif_seq_cpu(x_seq: torch.Tensor, spec: LIFSpec, return_mem: bool = False):
    """``(b_seq, mem_seq or None)`` by the C kernel; saves state only where a gradient is wanted."""
    if torch.is_grad_enabled() and x_seq.requires_grad:
        out = LIFSeqCPU.apply(x_seq, spec, return_mem)
        return (out[0], out[1]) if return_mem else (out, None)
    b, _, _, mem = _forward(x_seq, spec, save=False, return_mem=return_mem)
    return b, mem
