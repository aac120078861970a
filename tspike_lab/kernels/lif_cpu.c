/* The fused multi-step LIF on the CPU, loaded by cpu.py with ctypes (see its docstring and spec.py
   for the equations). Compiled with -ffp-contract=off and without fast-math: every operation rounds
   as PyTorch's eager ops do. cpu.py passes -DCHUNK (neurons per block) and checks, when it loads the
   library, that lif_chunk() and lif_args_layout() agree with its own CHUNK and its ctypes mirror of
   lif_args. */
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <string.h>

/* One call's arguments; mirrored field for field by cpu._Args. */
typedef struct {
    int64_t T;         /* steps */
    int64_t N;         /* elements per step */
    int64_t x_stride;  /* elements from x_t to x_{t+1}: N, or 0 for a time-broadcast input */
    int64_t u_rows;    /* leading steps of u written forward / read backward */
    int64_t a_div, a_mod;  /* amplitude index of step offset n: (n / a_div) % a_mod (mod 1: one a) */
    double beta, threshold, sg_param;
    int32_t ternary, subtract, detach, sg, threads, stream, simd;
} lif_args;

/* One step of the snnTorch-style neurons (lif_step_fwd_* / lif_step_bwd_*); mirrored by step._StepArgs.
   sub and zer are the reset masks of neurons.py (1, 0 "subtract"; 0, 1 "zero"; 0, 0 "none"). */
typedef struct {
    int64_t N;         /* elements */
    double beta, threshold, sg_param, sub, zer;
    int32_t ternary, detach, sg, threads;
} lif_step_args;

#ifndef CHUNK
#error "compile with -DCHUNK=<neurons per block> (cpu.py passes its CHUNK)"
#endif

int64_t lif_chunk(void) { return CHUNK; }

/* sizeof(lif_args), then the offset of every field in declaration order: writes the first n of
   these values to out and returns how many there are (17). */
int64_t lif_args_layout(int64_t *out, int64_t n) {
    const int64_t layout[] = {
        sizeof(lif_args), offsetof(lif_args, T), offsetof(lif_args, N), offsetof(lif_args, x_stride),
        offsetof(lif_args, u_rows), offsetof(lif_args, a_div), offsetof(lif_args, a_mod),
        offsetof(lif_args, beta), offsetof(lif_args, threshold), offsetof(lif_args, sg_param),
        offsetof(lif_args, ternary), offsetof(lif_args, subtract), offsetof(lif_args, detach),
        offsetof(lif_args, sg), offsetof(lif_args, threads), offsetof(lif_args, stream), offsetof(lif_args, simd),
    };
    const int64_t count = (int64_t)(sizeof layout / sizeof layout[0]);
    for (int64_t i = 0; i < count && i < n; ++i) out[i] = layout[i];
    return count;
}

/* sizeof(lif_step_args), then the offset of every field in declaration order (11 values). */
int64_t lif_step_args_layout(int64_t *out, int64_t n) {
    const int64_t layout[] = {
        sizeof(lif_step_args), offsetof(lif_step_args, N), offsetof(lif_step_args, beta),
        offsetof(lif_step_args, threshold), offsetof(lif_step_args, sg_param), offsetof(lif_step_args, sub),
        offsetof(lif_step_args, zer), offsetof(lif_step_args, ternary), offsetof(lif_step_args, detach),
        offsetof(lif_step_args, sg), offsetof(lif_step_args, threads),
    };
    const int64_t count = (int64_t)(sizeof layout / sizeof layout[0]);
    for (int64_t i = 0; i < count && i < n; ++i) out[i] = layout[i];
    return count;
}

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

/* One backward step over a chunk: g_t = gb_t * s_t + ga_t (see spec.py), with GEXPR = dL/db_t
   (dL/dout_t times the amplitude, where there is one) and SEXPR = the surrogate derivative;
   RND rounds to the storage precision after every operation (identity for float32 / float64).
   Expanded inside lif_cpu_template.h, where FT, FABS, LD and RND are those of the type at hand. */
#define BWD_STEP(GEXPR, SEXPR)                                                                 \
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

#define BWD_STEP_AMP(SEXPR)                                                                    \
    if (!amp) { BWD_STEP(LD(G[i]), SEXPR) }                                                    \
    else if (per_channel) { BWD_STEP(RND(LD(G[i]) * av[i]), SEXPR) }                           \
    else { BWD_STEP(RND(LD(G[i]) * A), SEXPR) }

/* The portable kernels: lif_fwd_f32g / lif_bwd_f32g (float32; lif_fwd_f32 below dispatches),
   lif_fwd_f64 / lif_bwd_f64, lif_fwd_bf16 / lif_bwd_bf16. */
#define ST float
#define FT float
#define SFX f32g
#define FSFX f32
#define FT_HELPERS
#define STEP_SFX f32
#define FABS fabsf
#define EXP expf
#define STORE store_f32
#define LD ID
#define RND ID
#include "lif_cpu_template.h"

#define ST double
#define FT double
#define SFX f64
#define FSFX f64
#define FT_HELPERS
#define STEP_SFX f64
#define FABS fabs
#define EXP exp
#define STORE store_f64
#define LD ID
#define RND ID
#include "lif_cpu_template.h"

/* bfloat16: STE only (the smooth surrogates' chains of operations are not rounded here). */
#define ST uint16_t
#define FT float
#define SFX bf16
#define FSFX f32
#define FABS fabsf
#define EXP expf
#define STORE store_bf16
#define LD bf16_to_f32
#define RND rnd_bf16
#include "lif_cpu_template.h"

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
