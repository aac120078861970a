/* The portable LIF kernels of one storage type, included by lif_cpu.c once per type with:

   ST      storage type of x, spikes, membranes and gradients (float, double, uint16_t for bfloat16)
   FT      arithmetic type (float, double)
   SFX     suffix of the kernels' names: lif_fwd_<SFX>, lif_bwd_<SFX>
   FSFX    suffix of FT's helpers (f32, f64); with FT_HELPERS defined, this inclusion also
           defines them (chunk_amps_<FSFX>, partials_<FSFX>)
   FABS, EXP    FT's fabs and exp
   STORE   writes a chunk from FT registers to ST memory (times the amplitude)
   LD, RND      ST -> FT, and the rounding of an FT result to ST's precision (identity for
           float32 / float64: ID)
   STEP_SFX     where defined (float32 / float64, ST = FT), also the one-step kernels
           lif_step_fwd_<STEP_SFX> / lif_step_bwd_<STEP_SFX>

   The parameters are #undef'd at the end, ready for the next inclusion. */

#define NAME(base, sfx) NAME_(base, sfx)
#define NAME_(base, sfx) base##_##sfx

#ifdef FT_HELPERS
/* The amplitude of each element of the chunk at step offset n0: av[i] = amp[c], c = ((n0 + i) / div) % mod,
   written in runs of constant c (no division per element). With ch, also the index c. */
static inline void NAME(chunk_amps, FSFX)(FT *restrict av, int32_t *restrict ch, const FT *restrict amp,
                                          int64_t n0, int64_t len, int64_t div, int64_t mod) {
    int64_t r = n0 % div, c = (n0 / div) % mod;
    if (div == 1 && !ch) {  /* channels last: one period of mod values, then copies of it */
        const int64_t period = mod < len ? mod : len;
        for (int64_t i = 0; i < period; ++i) { av[i] = amp[c]; if (++c == mod) c = 0; }
        for (int64_t i = period; i < len; i += period)
            memcpy(av + i, av, (size_t)(len - i < period ? len - i : period) * sizeof(FT));
        return;
    }
    for (int64_t i = 0; i < len;) {
        int64_t run = div - r < len - i ? div - r : len - i;
        const FT v = amp[c];
        for (int64_t j = 0; j < run; ++j) av[i + j] = v;
        if (ch) for (int64_t j = 0; j < run; ++j) ch[i + j] = (int32_t)c;
        i += run; r = 0; if (++c == mod) c = 0;
    }
}

/* A block's partial sums of dL/da in double: per channel (ch[i] = channel of element i) or all. */
static inline void NAME(partials, FSFX)(double *restrict part, const FT *restrict ga,
                                        const int32_t *restrict ch, int64_t len, int per_channel) {
    if (per_channel) {
        for (int64_t i = 0; i < len; ++i) part[ch[i]] += (double)ga[i];
    } else {
        double sum = 0;
        for (int64_t i = 0; i < len; ++i) sum += (double)ga[i];
        part[0] = sum;
    }
}
#endif

/* ds/dx of the smooth surrogates, x = u - th, in the operation order of surrogate.py. */
static inline FT NAME(sg, SFX)(int sg, FT x, FT p, FT k, FT half_alpha) {
    if (sg == SG_TRIANGLE) {
        FT v = (FT)1 - FABS(x) / p;
        v = v < (FT)0 ? (FT)0 : v;
        return v / p;
    }
    if (sg == SG_ATAN) {
        FT y = k * x;
        return ((FT)1 / ((FT)1 + y * y)) * half_alpha;
    }
    FT s = (FT)1 / ((FT)1 + EXP(-(p * x)));
    return p * s * ((FT)1 - s);
}

void NAME(lif_fwd, SFX)(const ST *restrict x, ST *restrict b_out, uint8_t *restrict code,
                        ST *restrict u_out, const FT *restrict amp, const lif_args *a) {
    const int64_t T = a->T, N = a->N, xs = a->x_stride, ur = a->u_rows;
    const FT beta = (FT)a->beta, th = (FT)a->threshold, nth = -th;
    const FT lim = (FT)a->sg_param * th;
    const int ternary = a->ternary, subtract = a->subtract, ste = a->sg == SG_STE;
    const int stream = a->stream, per_channel = amp && a->a_mod > 1;
    const FT A = amp ? amp[0] : (FT)1;
    const int64_t nchunks = (N + CHUNK - 1) / CHUNK;
    #pragma omp parallel for schedule(static) num_threads(a->threads)
    for (int64_t c = 0; c < nchunks; ++c) {
        const int64_t n0 = c * CHUNK, len = N - n0 < CHUNK ? N - n0 : CHUNK;
        FT u[CHUNK], b[CHUNK], av[CHUNK];
        for (int64_t i = 0; i < len; ++i) { u[i] = 0; b[i] = 0; }
        if (per_channel) NAME(chunk_amps, FSFX)(av, 0, amp, n0, len, a->a_div, a->a_mod);
        for (int64_t t = 0; t < T; ++t) {
            const ST *restrict xt = x + t * xs + n0;
            ST *restrict bt = b_out + t * N + n0;
            if (subtract) {
                for (int64_t i = 0; i < len; ++i) {
                    const FT v = RND(RND(RND(beta * u[i]) - RND(b[i] * th)) + LD(xt[i]));
                    FT s = (FT)(v >= th);
                    if (ternary) s -= (FT)(v <= nth);
                    u[i] = v; b[i] = s;
                }
            } else {
                for (int64_t i = 0; i < len; ++i) {
                    const FT v = RND(RND(beta * u[i]) * ((FT)1 - FABS(b[i])) + LD(xt[i]));
                    FT s = (FT)(v >= th);
                    if (ternary) s -= (FT)(v <= nth);
                    u[i] = v; b[i] = s;
                }
            }
            STORE(bt, b, per_channel ? av : 0, A, len, stream);  /* a * b, or b (A = 1) */
            if (code) {
                uint8_t ct[CHUNK];
                if (ste && ternary) {
                    for (int64_t i = 0; i < len; ++i)
                        ct[i] = (uint8_t)((int)(b[i] + (FT)1) | ((FABS(u[i]) <= lim) << 2));
                } else if (ste) {
                    for (int64_t i = 0; i < len; ++i)
                        ct[i] = (uint8_t)((int)(b[i] + (FT)1)
                                          | (((u[i] >= (FT)0) & (u[i] <= lim)) << 2));
                } else {
                    for (int64_t i = 0; i < len; ++i) ct[i] = (uint8_t)(int)(b[i] + (FT)1);
                }
                store_u8(code + t * N + n0, ct, len, stream);
            }
            if (u_out && t < ur) STORE(u_out + t * N + n0, u, 0, (FT)1, len, stream);
        }
        store_fence(stream);
    }
}

void NAME(lif_bwd, SFX)(const ST *restrict g_out, const uint8_t *restrict code,
                        const ST *restrict u_in, ST *restrict g_x, const FT *restrict amp,
                        double *restrict ga_part, const lif_args *a) {
    const int64_t T = a->T, N = a->N, ur = a->u_rows;
    const FT beta = (FT)a->beta, th = (FT)a->threshold, p = (FT)a->sg_param;
    const FT k = (FT)(1.5707963267948966 * a->sg_param), half_alpha = (FT)(a->sg_param / 2);
    const int ternary = a->ternary, subtract = a->subtract, detach = a->detach, sg = a->sg;
    const int stream = a->stream, per_channel = amp && a->a_mod > 1;
    const FT A = amp ? amp[0] : (FT)1;
    const int64_t nchunks = (N + CHUNK - 1) / CHUNK;
    #pragma omp parallel for schedule(static) num_threads(a->threads)
    for (int64_t c = 0; c < nchunks; ++c) {
        const int64_t n0 = c * CHUNK, len = N - n0 < CHUNK ? N - n0 : CHUNK;
        /* only the arrays an option uses are touched: the STE path keeps gn (+ a) in L1 */
        FT gn[CHUNK], s[CHUNK], av[CHUNK], ga[CHUNK];
        int32_t ch[CHUNK];
        for (int64_t i = 0; i < len; ++i) gn[i] = 0;
        if (ga_part) for (int64_t i = 0; i < len; ++i) ga[i] = 0;
        if (per_channel)
            NAME(chunk_amps, FSFX)(av, ga_part ? ch : 0, amp, n0, len, a->a_div, a->a_mod);
        for (int64_t t = T - 1; t >= 0; --t) {
            const uint8_t *restrict ct = code + t * N + n0;
            const ST *restrict G = g_out + t * N + n0;
            const ST *restrict ut = t < ur ? u_in + t * N + n0 : 0;
            ST *restrict gx = g_x + t * N + n0;
            if (ga_part)  /* out = a * b: dL/da += dL/dout * b */
                for (int64_t i = 0; i < len; ++i)
                    ga[i] += LD(G[i]) * (FT)((int)(ct[i] & 3) - 1);
            if (sg == SG_STE) {
                BWD_STEP_AMP((FT)((ct[i] >> 2) & 1))
            } else {
                if (ternary) {
                    for (int64_t i = 0; i < len; ++i)
                        s[i] = NAME(sg, SFX)(sg, LD(ut[i]) - th, p, k, half_alpha)
                             + NAME(sg, SFX)(sg, -LD(ut[i]) - th, p, k, half_alpha);
                } else {
                    for (int64_t i = 0; i < len; ++i)
                        s[i] = NAME(sg, SFX)(sg, LD(ut[i]) - th, p, k, half_alpha);
                }
                BWD_STEP_AMP(s[i])
            }
            STORE(gx, gn, 0, (FT)1, len, stream);
        }
        store_fence(stream);
        if (ga_part) NAME(partials, FSFX)(ga_part + c * a->a_mod, ga, ch, len, per_channel);
    }
}

#ifdef STEP_SFX
/* One step of TernaryLeaky / BinaryLeaky (neurons.py, reset_delay=True, scalar beta and threshold):
   every operation of the neuron's general path, in its order, with its masks, so spikes and
   membranes are its bits, NaN and signed zeros included:

       r = b(m);  w = 1 - zer |r|;  u = ((beta m) w + x) - (sub r) th;  b = b(u)

   code (one byte per element): bit 0-1 b + 1, bit 2 the STE window at u, bit 3-4 r + 1, bit 5 the
   STE window at m. The backward replays autograd's chain through those operations (see lif_step_bwd). */
#define SNAME(base) NAME(base, STEP_SFX)

/* d b / d u of one of our surrogates at u (threshold th), the operations of surrogate.py in their order:
   Triangle (1 - |x| / w).clamp_min(0) / w; ATan reciprocal(1 + (k x)^2) * (alpha / 2);
   Sigmoid k s (1 - s) (torch.sigmoid: not bit for bit). Ternary: g(u - th) + g(-u - th). */
typedef struct { FT p, k, half; } SNAME(step_sg_params);  /* p = (FT)param; ATan: k = pi/2 alpha, alpha/2 in double */

static inline FT SNAME(step_sg1)(int sg, FT x, SNAME(step_sg_params) q) {
    if (sg == SG_TRIANGLE) {
        FT v = (FT)1 - FABS(x) / q.p;
        v = v < (FT)0 ? (FT)0 : v;  /* clamp_min: NaN stays NaN */
        return v / q.p;
    }
    if (sg == SG_ATAN) {
        const FT y = q.k * x;
        return ((FT)1 / ((FT)1 + y * y)) * q.half;
    }
    const FT s = (FT)1 / ((FT)1 + EXP(-(q.p * x)));
    return q.p * s * ((FT)1 - s);
}

static inline FT SNAME(step_sg)(int sg, int ternary, FT v, FT th, SNAME(step_sg_params) q) {
    const FT g = SNAME(step_sg1)(sg, v - th, q);
    return ternary ? g + SNAME(step_sg1)(sg, -v - th, q) : g;
}

#define STEP_BLOCK 8192

/* The loops below are written once per case (no branch inside), so the compiler vectorises them. */
#define STEP_FOR for (int64_t i = i0; i < i1; ++i)
#define STEP_FWD_LOOP(CODE)                                                         \
    STEP_FOR {                                                                      \
        const FT mi = m[i];                                                         \
        const FT r = (FT)(mi >= th) - tern * (FT)(mi <= nth);                       \
        const FT w = (FT)1 - zer * FABS(r);                                         \
        const FT v = ((beta * mi) * w + x[i]) - (sub * r) * th;                     \
        const FT s = (FT)(v >= th) - tern * (FT)(v <= nth);                         \
        b_out[i] = s;                                                               \
        u_out[i] = v;                                                               \
        CODE;                                                                       \
    }
#define STEP_CODE(WIN_U, WIN_M) \
    code[i] = (uint8_t)((int)(s + (FT)1) | ((WIN_U) << 2) | ((int)(r + (FT)1) << 3) | ((WIN_M) << 5))

void SNAME(lif_step_fwd)(const ST *restrict x, const ST *restrict m, ST *restrict b_out, ST *restrict u_out,
                         uint8_t *restrict code, const lif_step_args *a) {
    const int64_t N = a->N, nblocks = (N + STEP_BLOCK - 1) / STEP_BLOCK;
    const FT beta = (FT)a->beta, th = (FT)a->threshold, nth = -th, lim = (FT)a->sg_param * th;
    const FT sub = (FT)a->sub, zer = (FT)a->zer, tern = (FT)a->ternary;
    const int ternary = a->ternary, ste = a->sg == SG_STE;
    #pragma omp parallel for schedule(static) num_threads(a->threads)
    for (int64_t c = 0; c < nblocks; ++c) {
        const int64_t i0 = c * STEP_BLOCK, i1 = N - i0 < STEP_BLOCK ? N : i0 + STEP_BLOCK;
        if (!code) STEP_FWD_LOOP((void)0)
        else if (ste && ternary) STEP_FWD_LOOP(STEP_CODE(FABS(v) <= lim, FABS(mi) <= lim))
        else if (ste) STEP_FWD_LOOP(STEP_CODE((v >= (FT)0) & (v <= lim), (mi >= (FT)0) & (mi <= lim)))
        else STEP_FWD_LOOP(STEP_CODE(0, 0))
    }
}

/* The gradients autograd forms through the forward's operations, in its order: with G = dL/db
   (NULL: none) and M = dL/du from later uses of u (NULL: none),

       gu = M + G s(u);  gx = gu;  gm = (gu w) beta + [(((-(gu (beta m))) zer) sgn(r) + ((-gu) th) sub) s(m)]

   (sgn(r) = r for r in {-1, 0, 1}); the bracket only without detach (r detached: no path). gm may
   be NULL (not wanted); m is read without detach (and for a smooth surrogate), u for a smooth
   surrogate only. */
#define STEP_BWD_LOOP(GU, SM)                                                                    \
    if (!gm) {                                                                                   \
        STEP_FOR { const int ci = code[i]; (void)ci; gx[i] = GU; }                               \
    } else if (detach) {                                                                         \
        STEP_FOR {                                                                               \
            const int ci = code[i];                                                              \
            const FT gu = GU, r = (FT)(((ci >> 3) & 3) - 1);                                     \
            gx[i] = gu;                                                                          \
            gm[i] = (gu * ((FT)1 - zer * FABS(r))) * beta;                                       \
        }                                                                                        \
    } else {                                                                                     \
        STEP_FOR {                                                                               \
            const int ci = code[i];                                                              \
            const FT gu = GU, r = (FT)(((ci >> 3) & 3) - 1);                                     \
            const FT gr = ((-(gu * (beta * m[i]))) * zer) * r + ((-gu) * th) * sub;              \
            gx[i] = gu;                                                                          \
            gm[i] = (gu * ((FT)1 - zer * FABS(r))) * beta + gr * (SM);                           \
        }                                                                                        \
    }
#define STEP_SU_STE ((FT)((ci >> 2) & 1))
#define STEP_SM_STE ((FT)((ci >> 5) & 1))
#define STEP_SU_SG SNAME(step_sg)(sg, ternary, u[i], th, p)
#define STEP_SM_SG SNAME(step_sg)(sg, ternary, m[i], th, p)

void SNAME(lif_step_bwd)(const ST *restrict G, const ST *restrict M, const uint8_t *restrict code,
                         const ST *restrict m, const ST *restrict u, ST *restrict gx, ST *restrict gm,
                         const lif_step_args *a) {
    const int64_t N = a->N, nblocks = (N + STEP_BLOCK - 1) / STEP_BLOCK;
    const FT beta = (FT)a->beta, th = (FT)a->threshold, sub = (FT)a->sub, zer = (FT)a->zer;
    const SNAME(step_sg_params) p = {(FT)a->sg_param, (FT)(1.5707963267948966 * a->sg_param), (FT)(a->sg_param / 2)};
    const int ternary = a->ternary, detach = a->detach, sg = a->sg;
    #pragma omp parallel for schedule(static) num_threads(a->threads)
    for (int64_t c = 0; c < nblocks; ++c) {
        const int64_t i0 = c * STEP_BLOCK, i1 = N - i0 < STEP_BLOCK ? N : i0 + STEP_BLOCK;
        if (sg == SG_STE) {
            if (G && M) STEP_BWD_LOOP(M[i] + G[i] * STEP_SU_STE, STEP_SM_STE)
            else if (G) STEP_BWD_LOOP(G[i] * STEP_SU_STE, STEP_SM_STE)
            else if (M) STEP_BWD_LOOP(M[i], STEP_SM_STE)
            else STEP_BWD_LOOP((FT)0, STEP_SM_STE)
        } else {
            if (G && M) STEP_BWD_LOOP(M[i] + G[i] * STEP_SU_SG, STEP_SM_SG)
            else if (G) STEP_BWD_LOOP(G[i] * STEP_SU_SG, STEP_SM_SG)
            else if (M) STEP_BWD_LOOP(M[i], STEP_SM_SG)
            else STEP_BWD_LOOP((FT)0, STEP_SM_SG)
        }
    }
}

#undef STEP_FOR
#undef STEP_FWD_LOOP
#undef STEP_CODE
#undef STEP_BWD_LOOP
#undef STEP_SU_STE
#undef STEP_SM_STE
#undef STEP_SU_SG
#undef STEP_SM_SG
#undef STEP_BLOCK
#undef SNAME
#endif

#undef NAME
#undef NAME_
#undef ST
#undef FT
#undef SFX
#undef FSFX
#undef FT_HELPERS
#undef FABS
#undef EXP
#undef STORE
#undef LD
#undef RND
#undef STEP_SFX
