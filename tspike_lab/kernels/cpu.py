"""Fused multi-step LIF on the CPU: one pass over memory forward, one backward.

A small C kernel (below), compiled once per machine with the system C compiler and
loaded with ``ctypes`` (no PyTorch headers, so it builds in about a second). Each thread
takes blocks of ``CHUNK`` neurons and runs the whole time loop on them with the state
in registers / L1: forward reads ``x`` once and writes the spikes, a one-byte ``code``
per element (spike and STE window) and, only where the backward needs it, the
membrane (see :mod:`.spec`); backward reads ``grad`` and that state once and writes
``grad_x``. Given an amplitude ``a`` (one, or one per channel), forward writes ``a * b``
and backward forms ``dL/db = dL/dout * a`` on the fly and sums ``dL/da`` per block in
double: the layer's output needs no extra pass over memory.

Floating point: compiled with ``-ffp-contract=off`` and without fast-math, so every
operation rounds as PyTorch's eager ops do and the spikes equal the oracle's bit for
bit (the tests check it, thresholds hit exactly included). bfloat16 (what bf16 autocast
feeds the neurons) is stored as bfloat16 and computed in float, rounded to bfloat16 after
every operation as PyTorch's CPU kernels do: spikes and dL/dx equal the oracle's bit for
bit; the smooth surrogates run in float32/float64 only.

Outputs of 32 MiB and more (spikes, codes, membranes, dL/dx) live in page-aligned blocks that
return to a small pool when their last tensor dies (:data:`recycler`, at most
``$TSPIKE_RECYCLE_MB`` MiB held, default 1024; 0 turns it off): glibc maps such blocks afresh on
every allocation, and touching fresh pages can cost several times writing them.

The compiled library is cached under ``$TSPIKE_KERNEL_CACHE`` (default
``~/.cache/tspike_lab/kernels``), keyed by the source, the flags, the compiler and the
CPU. Where no compiler works, :func:`available` is False and ``backend="auto"`` uses
the PyTorch fused path instead.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import mmap
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import weakref
from pathlib import Path

import torch
from torch.autograd.function import once_differentiable

from .layout import as_steps, empty_steps, match_steps
from .spec import (LIFSpec, amplitude_index, amplitude_reason, compute_amplitude, run_fused, run_scaled,
                   save_forward, scaled_function)

__all__ = ["available", "unavailable_reason", "supports", "lif_seq_cpu", "scaled_lif_seq_cpu", "amplitude_reason",
           "LIFSeqCPU", "ScaledLIFSeqCPU", "library"]

DTYPES = (torch.float32, torch.float64, torch.bfloat16)
_SUFFIX = {torch.float32: "f32", torch.float64: "f64", torch.bfloat16: "bf16"}
# Outputs at least this large are written with non-temporal stores: they do not fit in the
# cache anyway, and streaming skips reading every line before overwriting it.
STREAM_BYTES = int(os.environ.get("TSPIKE_STREAM_BYTES", 32 * 2**20))
CHUNK = 4096  # neurons per block, as ``#define CHUNK`` in the C source
# float32 on a CPU with AVX-512: the forward and the STE backward run as one vectorised pass per
# step (same operations, same bits). False runs the portable loops (the tests compare the two).
SIMD = True
# Outputs of at least RECYCLE_MIN_BYTES live in page-aligned blocks that are kept, up to
# RECYCLE_CAP_BYTES in all, when their tensors die, and handed to the next output of the same
# size: glibc maps every block above 32 MiB afresh, and the first touch of fresh pages cost up to
# ~7.5 ms per 32 MiB on our benchmark machine (against ~0.5 ms to write them). 0 MiB turns it off.
RECYCLE_MIN_BYTES = 32 * 2**20
RECYCLE_CAP_BYTES = int(os.environ.get("TSPIKE_RECYCLE_MB", 1024)) * 2**20

_SOURCE = r"""
#include <stdint.h>
#include <math.h>
#include <string.h>

typedef struct {
    int64_t T;         /* steps */
    int64_t N;         /* elements per step */
    int64_t x_stride;  /* elements from x_t to x_{t+1}: N, or 0 for a time-broadcast input */
    int64_t u_rows;    /* leading steps of u written forward / read backward */
    int64_t a_div, a_mod;  /* amplitude index of step offset n: (n / a_div) % a_mod (mod 1: one a) */
    double beta, threshold, sg_param;
    int32_t ternary, subtract, detach, sg, threads, stream, simd;
} lif_args;

#define CHUNK 4096

#if defined(__AVX512F__)
#include <immintrin.h>
#define HAVE_STREAM 1
#else
#define HAVE_STREAM 0
#endif

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

/* Copy a chunk from the L1 buffer to the output times a, a per element (av) or one value (A;
   1 for a plain store: exact). With `stream`, non-temporal stores (no read-for-ownership of
   lines that are only written: outputs larger than the cache). */
static inline void store_f32(float *restrict dst, const float *restrict src, const float *restrict av,
                             float A, int64_t len, int stream) {
    int64_t i = 0;
#if HAVE_STREAM
    if (stream) {
        for (; i < len && ((uintptr_t)(dst + i) & 63); ++i) dst[i] = src[i] * (av ? av[i] : A);
        const __m512 va = _mm512_set1_ps(A);
        for (; i + 16 <= len; i += 16)
            _mm512_stream_ps(dst + i, _mm512_mul_ps(_mm512_loadu_ps(src + i), av ? _mm512_loadu_ps(av + i) : va));
    }
#endif
    if (av) for (; i < len; ++i) dst[i] = src[i] * av[i];
    else for (; i < len; ++i) dst[i] = src[i] * A;
}

static inline void store_f64(double *restrict dst, const double *restrict src, const double *restrict av,
                             double A, int64_t len, int stream) {
    int64_t i = 0;
#if HAVE_STREAM
    if (stream) {
        for (; i < len && ((uintptr_t)(dst + i) & 63); ++i) dst[i] = src[i] * (av ? av[i] : A);
        const __m512d va = _mm512_set1_pd(A);
        for (; i + 8 <= len; i += 8)
            _mm512_stream_pd(dst + i, _mm512_mul_pd(_mm512_loadu_pd(src + i), av ? _mm512_loadu_pd(av + i) : va));
    }
#endif
    if (av) for (; i < len; ++i) dst[i] = src[i] * av[i];
    else for (; i < len; ++i) dst[i] = src[i] * A;
}

/* bfloat16 storage, float arithmetic rounded to bfloat16 after every operation, as PyTorch's
   CPU kernels do (round to nearest even; NaN -> 0x7FC0, as c10::BFloat16). */
static inline float bf16_to_f32(uint16_t h) {
    const uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline uint16_t f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    const uint32_t r = (u + (((u >> 16) & 1) + 0x7FFFu)) >> 16;
    return (u & 0x7FFFFFFFu) > 0x7F800000u ? (uint16_t)0x7FC0 : (uint16_t)r;
}

static inline float rnd_bf16(float f) { return bf16_to_f32(f32_to_bf16(f)); }

static inline void store_bf16(uint16_t *restrict dst, const float *restrict src, const float *restrict av,
                              float A, int64_t len, int stream) {
    (void)stream;
    if (av) for (int64_t i = 0; i < len; ++i) dst[i] = f32_to_bf16(src[i] * av[i]);
    else for (int64_t i = 0; i < len; ++i) dst[i] = f32_to_bf16(src[i] * A);
}

#define ID(v) (v)
#define chunk_amps_bf16 chunk_amps_f32

static inline void store_fence(int stream) {
#if HAVE_STREAM
    if (stream) _mm_sfence();
#else
    (void)stream;
#endif
}

/* The amplitude of each element of the chunk at step offset n0: av[i] = amp[c], c = ((n0 + i) / div) % mod,
   written in runs of constant c (no division per element). With ch, also the index c. */
#define DEFINE_CHUNK_AMPS(FT, SFX)                                                                  \
static inline void chunk_amps_##SFX(FT *restrict av, int32_t *restrict ch, const FT *restrict amp,  \
                                    int64_t n0, int64_t len, int64_t div, int64_t mod) {           \
    int64_t r = n0 % div, c = (n0 / div) % mod;                                                     \
    if (div == 1 && !ch) {  /* channels last: one period of mod values, then copies of it */        \
        const int64_t period = mod < len ? mod : len;                                               \
        for (int64_t i = 0; i < period; ++i) { av[i] = amp[c]; if (++c == mod) c = 0; }             \
        for (int64_t i = period; i < len; i += period)                                              \
            memcpy(av + i, av, (size_t)(len - i < period ? len - i : period) * sizeof(FT));         \
        return;                                                                                     \
    }                                                                                               \
    for (int64_t i = 0; i < len;) {                                                                 \
        int64_t run = div - r < len - i ? div - r : len - i;                                        \
        const FT v = amp[c];                                                                        \
        for (int64_t j = 0; j < run; ++j) av[i + j] = v;                                            \
        if (ch) for (int64_t j = 0; j < run; ++j) ch[i + j] = (int32_t)c;                           \
        i += run; r = 0; if (++c == mod) c = 0;                                                     \
    }                                                                                               \
}

DEFINE_CHUNK_AMPS(float, f32)
DEFINE_CHUNK_AMPS(double, f64)

/* A block's partial sums of dL/da in double: per channel (ch[i] = channel of element i) or all. */
#define DEFINE_PARTIALS(FT, SFX)                                                                    \
static inline void partials_##SFX(double *restrict part, const FT *restrict ga, const int32_t *restrict ch, \
                                  int64_t len, int per_channel) {                                   \
    if (per_channel) {                                                                              \
        for (int64_t i = 0; i < len; ++i) part[ch[i]] += (double)ga[i];                            \
    } else {                                                                                        \
        double sum = 0;                                                                             \
        for (int64_t i = 0; i < len; ++i) sum += (double)ga[i];                                    \
        part[0] = sum;                                                                              \
    }                                                                                               \
}

DEFINE_PARTIALS(float, f32)
DEFINE_PARTIALS(double, f64)
#define partials_f32g partials_f32
#define partials_bf16 partials_f32

#define SG_STE 0
#define SG_TRIANGLE 1
#define SG_ATAN 2
#define SG_SIGMOID 3

/* One backward step over a chunk: g_t = gb_t * s_t + ga_t (see spec.py), with GEXPR = dL/db_t
   (dL/dout_t times the amplitude, where there is one) and SEXPR = the surrogate derivative;
   RND rounds to the storage precision after every operation (identity for float32 / float64). */
#define BWD_STEP(FT, FABS, LD, RND, GEXPR, SEXPR)                                              \
    if (subtract) {                                                                            \
        const FT keep = detach ? (FT)0 : (FT)1;                                                \
        for (int64_t i = 0; i < len; ++i) {                                                    \
            const FT gb = RND((GEXPR) + keep * RND((-gn[i]) * th));                            \
            gn[i] = RND(RND(gb * (SEXPR)) + RND(gn[i] * beta));                                \
        }                                                                                      \
    } else if (detach || !ut) {                                                                \
        for (int64_t i = 0; i < len; ++i) {                                                    \
            const FT b = (FT)((int)(ct[i] & 3) - 1);                                           \
            gn[i] = RND(RND((GEXPR) * (SEXPR)) + RND(RND(gn[i] * ((FT)1 - FABS(b))) * beta));  \
        }                                                                                      \
    } else {                                                                                   \
        for (int64_t i = 0; i < len; ++i) {                                                    \
            const FT b = (FT)((int)(ct[i] & 3) - 1);                                           \
            const FT gb = RND((GEXPR) + (-RND(gn[i] * RND(beta * LD(ut[i])))) * b);            \
            gn[i] = RND(RND(gb * (SEXPR)) + RND(RND(gn[i] * ((FT)1 - FABS(b))) * beta));       \
        }                                                                                      \
    }

#define BWD_STEP_AMP(FT, FABS, LD, RND, SEXPR)                                                 \
    if (!amp) { BWD_STEP(FT, FABS, LD, RND, LD(G[i]), SEXPR) }                                 \
    else if (per_channel) { BWD_STEP(FT, FABS, LD, RND, RND(LD(G[i]) * av[i]), SEXPR) }        \
    else { BWD_STEP(FT, FABS, LD, RND, RND(LD(G[i]) * A), SEXPR) }

/* ds/dx of the smooth surrogates, x = u - th, in the operation order of surrogate.py. */
#define DEFINE_KERNELS(ST, FT, SFX, FABS, EXP, STORE, LD, RND)                                                   \
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
void lif_fwd_##SFX(const ST *restrict x, ST *restrict b_out, uint8_t *restrict code,           \
                   ST *restrict u_out, const FT *restrict amp, const lif_args *a) {            \
    const int64_t T = a->T, N = a->N, xs = a->x_stride, ur = a->u_rows;                        \
    const FT beta = (FT)a->beta, th = (FT)a->threshold, nth = -th;                             \
    const FT lim = (FT)a->sg_param * th;                                                       \
    const int ternary = a->ternary, subtract = a->subtract, ste = a->sg == SG_STE;             \
    const int stream = a->stream, per_channel = amp && a->a_mod > 1;                           \
    const FT A = amp ? amp[0] : (FT)1;                                                         \
    const int64_t nchunks = (N + CHUNK - 1) / CHUNK;                                           \
    _Pragma("omp parallel for schedule(static) num_threads(a->threads)")                        \
    for (int64_t c = 0; c < nchunks; ++c) {                                                    \
        const int64_t n0 = c * CHUNK, len = N - n0 < CHUNK ? N - n0 : CHUNK;                   \
        FT u[CHUNK], b[CHUNK], av[CHUNK];                                                      \
        for (int64_t i = 0; i < len; ++i) { u[i] = 0; b[i] = 0; }                              \
        if (per_channel) chunk_amps_##SFX(av, 0, amp, n0, len, a->a_div, a->a_mod);            \
        for (int64_t t = 0; t < T; ++t) {                                                      \
            const ST *restrict xt = x + t * xs + n0;                                           \
            ST *restrict bt = b_out + t * N + n0;                                              \
            if (subtract) {                                                                    \
                for (int64_t i = 0; i < len; ++i) {                                            \
                    const FT v = RND(RND(RND(beta * u[i]) - RND(b[i] * th)) + LD(xt[i]));      \
                    FT s = (FT)(v >= th);                                                      \
                    if (ternary) s -= (FT)(v <= nth);                                          \
                    u[i] = v; b[i] = s;                                                        \
                }                                                                              \
            } else {                                                                           \
                for (int64_t i = 0; i < len; ++i) {                                            \
                    const FT v = RND(RND(beta * u[i]) * ((FT)1 - FABS(b[i])) + LD(xt[i]));     \
                    FT s = (FT)(v >= th);                                                      \
                    if (ternary) s -= (FT)(v <= nth);                                          \
                    u[i] = v; b[i] = s;                                                        \
                }                                                                              \
            }                                                                                  \
            STORE(bt, b, per_channel ? av : 0, A, len, stream);  /* a * b, or b (A = 1) */      \
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
            if (u_out && t < ur) STORE(u_out + t * N + n0, u, 0, (FT)1, len, stream);          \
        }                                                                                      \
        store_fence(stream);                                                                   \
    }                                                                                          \
}                                                                                              \
                                                                                               \
void lif_bwd_##SFX(const ST *restrict g_out, const uint8_t *restrict code,                     \
                   const ST *restrict u_in, ST *restrict g_x, const FT *restrict amp,          \
                   double *restrict ga_part, const lif_args *a) {                              \
    const int64_t T = a->T, N = a->N, ur = a->u_rows;                                          \
    const FT beta = (FT)a->beta, th = (FT)a->threshold, p = (FT)a->sg_param;                   \
    const FT k = (FT)(1.5707963267948966 * a->sg_param), half_alpha = (FT)(a->sg_param / 2);   \
    const int ternary = a->ternary, subtract = a->subtract, detach = a->detach, sg = a->sg;    \
    const int stream = a->stream, per_channel = amp && a->a_mod > 1;                           \
    const FT A = amp ? amp[0] : (FT)1;                                                         \
    const int64_t nchunks = (N + CHUNK - 1) / CHUNK;                                           \
    _Pragma("omp parallel for schedule(static) num_threads(a->threads)")                        \
    for (int64_t c = 0; c < nchunks; ++c) {                                                    \
        const int64_t n0 = c * CHUNK, len = N - n0 < CHUNK ? N - n0 : CHUNK;                   \
        /* only the arrays an option uses are touched: the STE path keeps gn (+ a) in L1 */    \
        FT gn[CHUNK], s[CHUNK], av[CHUNK], ga[CHUNK];                                          \
        int32_t ch[CHUNK];                                                                     \
        for (int64_t i = 0; i < len; ++i) gn[i] = 0;                                           \
        if (ga_part) for (int64_t i = 0; i < len; ++i) ga[i] = 0;                              \
        if (per_channel)                                                                       \
            chunk_amps_##SFX(av, ga_part ? ch : 0, amp, n0, len, a->a_div, a->a_mod);          \
        for (int64_t t = T - 1; t >= 0; --t) {                                                 \
            const uint8_t *restrict ct = code + t * N + n0;                                    \
            const ST *restrict G = g_out + t * N + n0;                                         \
            const ST *restrict ut = t < ur ? u_in + t * N + n0 : 0;                            \
            ST *restrict gx = g_x + t * N + n0;                                                \
            if (ga_part)  /* out = a * b: dL/da += dL/dout * b */                              \
                for (int64_t i = 0; i < len; ++i)                                              \
                    ga[i] += LD(G[i]) * (FT)((int)(ct[i] & 3) - 1);                            \
            if (sg == SG_STE) {                                                                \
                BWD_STEP_AMP(FT, FABS, LD, RND, (FT)((ct[i] >> 2) & 1))                        \
            } else {                                                                           \
                if (ternary) {                                                                 \
                    for (int64_t i = 0; i < len; ++i)                                          \
                        s[i] = sg_##SFX(sg, LD(ut[i]) - th, p, k, half_alpha)                  \
                             + sg_##SFX(sg, -LD(ut[i]) - th, p, k, half_alpha);                \
                } else {                                                                       \
                    for (int64_t i = 0; i < len; ++i)                                          \
                        s[i] = sg_##SFX(sg, LD(ut[i]) - th, p, k, half_alpha);                 \
                }                                                                              \
                BWD_STEP_AMP(FT, FABS, LD, RND, s[i])                                          \
            }                                                                                  \
            STORE(gx, gn, 0, (FT)1, len, stream);                                              \
        }                                                                                      \
        store_fence(stream);                                                                   \
        if (ga_part) partials_##SFX(ga_part + c * a->a_mod, ga, ch, len, per_channel);          \
    }                                                                                          \
}

#define chunk_amps_f32g chunk_amps_f32
DEFINE_KERNELS(float, float, f32g, fabsf, expf, store_f32, ID, ID)
DEFINE_KERNELS(double, double, f64, fabs, exp, store_f64, ID, ID)
/* bfloat16: STE only (the smooth surrogates' chains of operations are not rounded here). */
DEFINE_KERNELS(uint16_t, float, bf16, fabsf, expf, store_bf16, bf16_to_f32, rnd_bf16)

/* float32 on AVX-512: the forward (every option) and the STE backward in one pass per step, the
   same operations in the same order as the generic code above (so the same bits), with the
   outputs written straight from registers (non-temporal where `stream` and aligned). */
#if HAVE_STREAM
#define ALIGNED(p, n) ((p) && !((uintptr_t)(p) & ((n) - 1)))

static inline void put_ps(float *p, __m512 v, __mmask16 m, int full, int nt) {
    if (!full) _mm512_mask_storeu_ps(p, m, v);
    else if (nt) _mm512_stream_ps(p, v);
    else _mm512_storeu_ps(p, v);
}

/* A hint only: never faults, so addresses past the end of an array are harmless. */
static inline void prefetch(const void *p) { _mm_prefetch((const char *)p, _MM_HINT_T0); }

static inline __m512 get_ps(const float *p, __mmask16 m, int full) {
    return full ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps(m, p);
}

static void lif_fwd_f32_simd(const float *restrict x, float *restrict b_out, uint8_t *restrict code,
                             float *restrict u_out, const float *restrict amp, const lif_args *a) {
    const int64_t T = a->T, N = a->N, xs = a->x_stride, ur = a->u_rows;
    const float th = (float)a->threshold, lim = (float)a->sg_param * th;
    const int ternary = a->ternary, subtract = a->subtract, ste = a->sg == SG_STE, binary_win = ste && !ternary;
    const int stream = a->stream, per_channel = amp && a->a_mod > 1;
    const __m512 vbeta = _mm512_set1_ps((float)a->beta), vth = _mm512_set1_ps(th), vnth = _mm512_set1_ps(-th);
    const __m512 vlim = _mm512_set1_ps(lim), one = _mm512_set1_ps(1.0f), zero = _mm512_setzero_ps();
    const __m512 vA = _mm512_set1_ps(amp ? amp[0] : 1.0f);
    const __m512i i1 = _mm512_set1_epi32(1), i4 = _mm512_set1_epi32(4);
    const int64_t nchunks = (N + CHUNK - 1) / CHUNK;
    _Pragma("omp parallel for schedule(static) num_threads(a->threads)")
    for (int64_t c = 0; c < nchunks; ++c) {
        const int64_t n0 = c * CHUNK, len = N - n0 < CHUNK ? N - n0 : CHUNK;
        float U[CHUNK] __attribute__((aligned(64))), B[CHUNK] __attribute__((aligned(64)));
        float av[CHUNK] __attribute__((aligned(64)));
        for (int64_t i = 0; i < CHUNK; ++i) { U[i] = 0; B[i] = 0; }
        if (per_channel) chunk_amps_f32(av, 0, amp, n0, len, a->a_div, a->a_mod);
        for (int64_t t = 0; t < T; ++t) {
            const float *restrict xt = x + t * xs + n0;
            float *restrict bt = b_out + t * N + n0;
            uint8_t *restrict ct = code ? code + t * N + n0 : 0;
            float *restrict ut = (u_out && t < ur) ? u_out + t * N + n0 : 0;
            const int nt_b = stream && ALIGNED(bt, 64), nt_u = stream && ALIGNED(ut, 64);
            const int nt_c = stream && ALIGNED(ct, 16);
            /* the segment the next step reads (the next block's x_0 after the last step): the
               hardware prefetchers restart at every 16 KiB segment, so the loads are issued ahead */
            const float *xt_next = t + 1 < T ? xt + xs : x + n0 + CHUNK;
            for (int64_t i = 0; i < len; i += 16) {
                const int full = len - i >= 16;
                const __mmask16 m = full ? (__mmask16)0xFFFF : (__mmask16)((1u << (len - i)) - 1);
                const __m512 u = _mm512_load_ps(U + i), b = _mm512_load_ps(B + i), xv = get_ps(xt + i, m, full);
                prefetch(xt_next + i);
                const __m512 v = subtract
                    ? _mm512_add_ps(_mm512_sub_ps(_mm512_mul_ps(vbeta, u), _mm512_mul_ps(b, vth)), xv)
                    : _mm512_add_ps(_mm512_mul_ps(_mm512_mul_ps(vbeta, u), _mm512_sub_ps(one, _mm512_abs_ps(b))), xv);
                const __mmask16 mp = _mm512_cmp_ps_mask(v, vth, _CMP_GE_OQ);
                const __mmask16 mn = ternary ? _mm512_cmp_ps_mask(v, vnth, _CMP_LE_OQ) : 0;
                const __m512 s = _mm512_sub_ps(_mm512_maskz_mov_ps(mp, one), _mm512_maskz_mov_ps(mn, one));
                _mm512_store_ps(U + i, v);
                _mm512_store_ps(B + i, s);
                put_ps(bt + i, _mm512_mul_ps(s, per_channel ? _mm512_load_ps(av + i) : vA), m, full, nt_b);
                if (ct) {
                    __mmask16 win = 0;
                    if (ternary && ste) win = _mm512_cmp_ps_mask(_mm512_abs_ps(v), vlim, _CMP_LE_OQ);
                    else if (binary_win)
                        win = _mm512_cmp_ps_mask(v, zero, _CMP_GE_OQ) & _mm512_cmp_ps_mask(v, vlim, _CMP_LE_OQ);
                    __m512i ci = _mm512_mask_add_epi32(i1, mp, i1, i1);
                    ci = _mm512_mask_sub_epi32(ci, mn, ci, i1);
                    ci = _mm512_mask_or_epi32(ci, win, ci, i4);
                    if (!full) _mm512_mask_cvtepi32_storeu_epi8(ct + i, m, ci);
                    else if (nt_c) _mm_stream_si128((__m128i *)(ct + i), _mm512_cvtepi32_epi8(ci));
                    else _mm_storeu_si128((__m128i *)(ct + i), _mm512_cvtepi32_epi8(ci));
                }
                if (ut) put_ps(ut + i, v, m, full, nt_u);
            }
        }
        store_fence(stream);
    }
}

static void lif_bwd_f32_ste_simd(const float *restrict g_out, const uint8_t *restrict code,
                                 const float *restrict u_in, float *restrict g_x, const float *restrict amp,
                                 double *restrict ga_part, const lif_args *a) {
    const int64_t T = a->T, N = a->N, ur = a->u_rows;
    const int subtract = a->subtract, detach = a->detach;
    const int stream = a->stream, per_channel = amp && a->a_mod > 1;
    const __m512 vbeta = _mm512_set1_ps((float)a->beta), vth = _mm512_set1_ps((float)a->threshold);
    const __m512 one = _mm512_set1_ps(1.0f), keep = _mm512_set1_ps(detach ? 0.0f : 1.0f);
    const __m512 vA = _mm512_set1_ps(amp ? amp[0] : 1.0f), sign = _mm512_set1_ps(-0.0f);
    const __m512i i1 = _mm512_set1_epi32(1), i3 = _mm512_set1_epi32(3);
    const int64_t nchunks = (N + CHUNK - 1) / CHUNK;
    _Pragma("omp parallel for schedule(static) num_threads(a->threads)")
    for (int64_t c = 0; c < nchunks; ++c) {
        const int64_t n0 = c * CHUNK, len = N - n0 < CHUNK ? N - n0 : CHUNK;
        float GN[CHUNK] __attribute__((aligned(64))), GA[CHUNK] __attribute__((aligned(64)));
        float av[CHUNK] __attribute__((aligned(64)));
        int32_t ch[CHUNK];
        for (int64_t i = 0; i < CHUNK; ++i) GN[i] = 0;
        if (ga_part) for (int64_t i = 0; i < CHUNK; ++i) GA[i] = 0;
        if (per_channel) chunk_amps_f32(av, ga_part ? ch : 0, amp, n0, len, a->a_div, a->a_mod);
        for (int64_t t = T - 1; t >= 0; --t) {
            const uint8_t *restrict ct = code + t * N + n0;
            const float *restrict G = g_out + t * N + n0;
            const float *restrict ut = t < ur ? u_in + t * N + n0 : 0;
            float *restrict gx = g_x + t * N + n0;
            const int nt = stream && ALIGNED(gx, 64), reset_u = !subtract && !detach && ut;
            /* what step t - 1 reads (the next block's step T - 1 after step 0), loaded ahead */
            const int64_t tn = t > 0 ? t - 1 : T - 1, nn = t > 0 ? n0 : n0 + CHUNK;
            const float *G_next = g_out + tn * N + nn, *u_next = tn < ur ? u_in + tn * N + nn : 0;
            const uint8_t *c_next = code + tn * N + nn;
            for (int64_t i = 0; i < len; i += 16) {
                const int full = len - i >= 16;
                const __mmask16 m = full ? (__mmask16)0xFFFF : (__mmask16)((1u << (len - i)) - 1);
                __m128i c8;
                if (full) c8 = _mm_loadu_si128((const __m128i *)(ct + i));
                else { uint8_t tmp[16] = {0}; memcpy(tmp, ct + i, (size_t)(len - i)); c8 = _mm_loadu_si128((const __m128i *)tmp); }
                const __m512i ci = _mm512_cvtepu8_epi32(c8);
                const __m512 b = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_and_si512(ci, i3), i1));
                const __m512 s = _mm512_cvtepi32_ps(_mm512_and_si512(_mm512_srli_epi32(ci, 2), i1));
                const __m512 G0 = get_ps(G + i, m, full), gn = _mm512_load_ps(GN + i);
                prefetch(G_next + i);
                if (!(i & 63)) prefetch(c_next + i);
                if (u_next) prefetch(u_next + i);
                if (ga_part) _mm512_store_ps(GA + i, _mm512_add_ps(_mm512_load_ps(GA + i), _mm512_mul_ps(G0, b)));
                const __m512 gexpr = !amp ? G0 : _mm512_mul_ps(G0, per_channel ? _mm512_load_ps(av + i) : vA);
                __m512 out;
                if (subtract) {
                    const __m512 gb = _mm512_add_ps(gexpr, _mm512_mul_ps(keep, _mm512_mul_ps(_mm512_xor_ps(gn, sign), vth)));
                    out = _mm512_add_ps(_mm512_mul_ps(gb, s), _mm512_mul_ps(gn, vbeta));
                } else {
                    const __m512 decay = _mm512_mul_ps(_mm512_mul_ps(gn, _mm512_sub_ps(one, _mm512_abs_ps(b))), vbeta);
                    __m512 gb = gexpr;
                    if (reset_u) {
                        const __m512 uv = get_ps(ut + i, m, full);
                        const __m512 r = _mm512_xor_ps(_mm512_mul_ps(gn, _mm512_mul_ps(vbeta, uv)), sign);
                        gb = _mm512_add_ps(gexpr, _mm512_mul_ps(r, b));
                    }
                    out = _mm512_add_ps(_mm512_mul_ps(gb, s), decay);
                }
                _mm512_store_ps(GN + i, out);
                put_ps(gx + i, out, m, full, nt);
            }
        }
        store_fence(stream);
        if (ga_part) partials_f32(ga_part + c * a->a_mod, GA, ch, len, per_channel);
    }
}
#endif

void lif_fwd_f32(const float *restrict x, float *restrict b_out, uint8_t *restrict code, float *restrict u_out,
                 const float *restrict amp, const lif_args *a) {
#if HAVE_STREAM
    if (a->simd) { lif_fwd_f32_simd(x, b_out, code, u_out, amp, a); return; }
#endif
    lif_fwd_f32g(x, b_out, code, u_out, amp, a);
}

void lif_bwd_f32(const float *restrict g_out, const uint8_t *restrict code, const float *restrict u_in,
                 float *restrict g_x, const float *restrict amp, double *restrict ga_part, const lif_args *a) {
#if HAVE_STREAM
    if (a->simd && a->sg == SG_STE) { lif_bwd_f32_ste_simd(g_out, code, u_in, g_x, amp, ga_part, a); return; }
#endif
    lif_bwd_f32g(g_out, code, u_in, g_x, amp, ga_part, a);
}
"""

_FLAGS = ["-O3", "-march=native", "-ffp-contract=off", "-fno-fast-math", "-fopenmp", "-fPIC", "-shared",
          "-std=gnu11"]


class _Args(ctypes.Structure):
    _fields_ = [
        ("T", ctypes.c_int64), ("N", ctypes.c_int64), ("x_stride", ctypes.c_int64), ("u_rows", ctypes.c_int64),
        ("a_div", ctypes.c_int64), ("a_mod", ctypes.c_int64),
        ("beta", ctypes.c_double), ("threshold", ctypes.c_double), ("sg_param", ctypes.c_double),
        ("ternary", ctypes.c_int32), ("subtract", ctypes.c_int32), ("detach", ctypes.c_int32),
        ("sg", ctypes.c_int32), ("threads", ctypes.c_int32), ("stream", ctypes.c_int32), ("simd", ctypes.c_int32),
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
        for sfx in _SUFFIX.values():
            for name, pointers in ((f"lif_fwd_{sfx}", 5), (f"lif_bwd_{sfx}", 6)):
                getattr(lib, name).restype = None
                getattr(lib, name).argtypes = [ctypes.c_void_p] * pointers + [ctypes.POINTER(_Args)]
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


def _args(spec: LIFSpec, T: int, N: int, x_stride: int, u_rows: int, numel: int, itemsize: int,
          amp_index: tuple[int, int] = (1 << 62, 1)) -> _Args:
    return _Args(T, N, x_stride, u_rows, amp_index[0], amp_index[1], spec.beta, spec.threshold, spec.sg_param,
                 int(spec.ternary), int(not spec.zero_reset), int(spec.detach_reset), spec.sg_code,
                 _threads(numel), int(numel * itemsize >= STREAM_BYTES), int(SIMD))


class _Recycler:
    """Page-aligned blocks for large outputs, taken back when the last tensor on a block dies.

    Free blocks wait oldest first; past the cap the oldest are unmapped, so blocks of sizes no
    longer asked for (another T, another batch) make room for the current ones.
    """

    def __init__(self):
        self._free: list[tuple[int, mmap.mmap]] = []  # (bytes, block), oldest first
        self._held = 0
        self._lock = threading.Lock()

    @property
    def held_bytes(self) -> int:
        return self._held

    def empty_strided(self, size, stride, dtype) -> torch.Tensor:
        """``torch.empty_strided(size, stride, dtype=dtype)`` on the CPU, recycled where large."""
        extent = 1 + sum((n - 1) * st for n, st in zip(size, stride)) if all(size) else 0
        nbytes = extent * dtype.itemsize
        if RECYCLE_CAP_BYTES <= 0 or nbytes < max(RECYCLE_MIN_BYTES, 1):
            return torch.empty_strided(size, stride, dtype=dtype)
        block = None
        with self._lock:
            for i in range(len(self._free) - 1, -1, -1):  # the most recently freed block of this size
                if self._free[i][0] == nbytes:
                    block = self._free.pop(i)[1]
                    self._held -= nbytes
                    break
        if block is None:
            block = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE)
        view = memoryview(block)
        base = torch.frombuffer(view, dtype=dtype, count=extent)
        weakref.finalize(view, self._give_back, block, nbytes)  # fires when the storage lets go
        return base.as_strided(size, stride)

    def _give_back(self, block: mmap.mmap, nbytes: int) -> None:
        evicted = []
        with self._lock:
            self._free.append((nbytes, block))
            self._held += nbytes
            while self._held > RECYCLE_CAP_BYTES and self._free:
                n, old = self._free.pop(0)
                self._held -= n
                evicted.append(old)
        for old in evicted:
            old.close()

    def clear(self) -> None:
        """Unmap every block held for reuse."""
        with self._lock:
            blocks = [b for _, b in self._free]
            self._free.clear()
            self._held = 0
        for block in blocks:
            block.close()


recycler = _Recycler()


def _forward(x_seq: torch.Tensor, spec: LIFSpec, save: bool, return_mem: bool, amp: torch.Tensor | None = None):
    lib = library()
    x, x_stride = as_steps(x_seq)
    T, N = x.shape[0], x[0].numel()
    empty = recycler.empty_strided
    b = empty_steps(x, empty=empty)
    rows = spec.u_rows(T) if save else 0
    mem = empty_steps(x, empty=empty) if return_mem else None
    u = mem if return_mem else (empty_steps(x, rows, empty=empty) if rows else None)
    code = empty((T, N), (N, 1), torch.uint8) if save else None
    amp = compute_amplitude(amp, x.dtype)
    a = _args(spec, T, N, x_stride, T if return_mem else rows, T * N, x.element_size(), amplitude_index(b, amp))
    fwd = getattr(lib, f"lif_fwd_{_SUFFIX[x.dtype]}")
    if T * N:
        fwd(_ptr(x), _ptr(b), _ptr(code), _ptr(u), _ptr(amp), ctypes.byref(a))
    saved_u = u[:rows] if (u is not None and rows) else None
    return b, code, saved_u, mem


def _backward(ctx, grad_out, amp: torch.Tensor | None, want_ga: bool):
    code, u = ctx.saved_tensors[:2]
    spec = ctx.spec
    lib = library()
    shape, stride, dtype = ctx.geometry
    gx = recycler.empty_strided(shape, stride, dtype)
    g = match_steps(grad_out, gx)
    T, N = shape[0], gx[0].numel()
    index = amplitude_index(gx, amp)
    part = torch.zeros(((N + CHUNK - 1) // CHUNK, index[1]), dtype=torch.float64) if want_ga else None
    a = _args(spec, T, N, N, 0 if u is None else u.shape[0], T * N, gx.element_size(), index)
    bwd = getattr(lib, f"lif_bwd_{_SUFFIX[dtype]}")
    if T * N:
        bwd(_ptr(g), _ptr(code), _ptr(u), _ptr(gx), _ptr(amp), _ptr(part), ctypes.byref(a))
    ga = None
    if want_ga:
        ga = part.sum(0).to(ctx.amp_dtype).reshape(amp.shape)
    return gx, ga



class LIFSeqCPU(torch.autograd.Function):
    """``b_seq`` (and ``mem_seq``, no grad) from ``x_seq``; backward by the C kernel."""

    @staticmethod
    def forward(ctx, x_seq, spec: LIFSpec, return_mem: bool):
        b, code, u, mem = _forward(x_seq, spec, save=True, return_mem=return_mem)
        return save_forward(ctx, spec, b, code, u, mem, return_mem)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_b, *_):
        gx, _ = _backward(ctx, grad_b, None, False)
        return gx, None, None


ScaledLIFSeqCPU = scaled_function("ScaledLIFSeqCPU", _forward, _backward, """
    ``a * b_seq`` from ``x_seq`` and the amplitude ``a`` in one pass; backward gives dL/dx and dL/da.

    ``out = b * a`` is rounded as the oracle's multiply; dL/db = dL/dout * a (the same product
    autograd forms), and dL/da = sum(dL/dout * b) over the broadcast dims, summed per
    4096-neuron block in double (the oracle's float sum may differ by rounding).
    """)


def lif_seq_cpu(x_seq: torch.Tensor, spec: LIFSpec, return_mem: bool = False):
    """``(b_seq, mem_seq or None)`` by the C kernel; saves state only where a gradient is wanted."""
    return run_fused(LIFSeqCPU, _forward, x_seq, spec, return_mem)


def scaled_lif_seq_cpu(x_seq: torch.Tensor, amplitude: torch.Tensor, spec: LIFSpec) -> torch.Tensor:
    """``amplitude * b_seq`` by the C kernel (``amplitude``: see :func:`.spec.amplitude_reason`)."""
    return run_scaled(ScaledLIFSeqCPU, _forward, x_seq, amplitude, spec)
