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
