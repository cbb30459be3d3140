/* One instance of the streaming kernels of skinny_sgemm.c, for one vector ISA.
 *
 * Included once per ISA with these macros set:
 *   KNAME(x)   name of function x in this instance (x ## _avx512, ...)
 *   TARGET     function attribute that enables the ISA (empty for the baseline)
 *   VL         float lanes per vector
 *   SB         dot form: rows of X per pass over one W row (2*SB + 1 vector registers); SB is 4 or 8
 *   NV, SA     axpy form: vectors of columns per tile, rows of X per tile (NV*SA + NV + 1 registers)
 *
 * Both forms read every element of W from memory once per call: the tile of W stays in L1 while the rows
 * of X (packed, a few KB) are swept over it. All loops below have compile-time trip counts once the
 * always_inline tiles are expanded with constant nb/sb, so the accumulators live in registers.
 */

typedef float KNAME(vec) __attribute__((vector_size(VL * sizeof(float))));

static inline __attribute__((always_inline)) TARGET KNAME(vec) KNAME(load)(const float *p) {
    KNAME(vec) v;
    __builtin_memcpy(&v, p, sizeof v); /* an unaligned vector load */
    return v;
}

typedef float KNAME(vec4) __attribute__((vector_size(4 * sizeof(float))));
#if VL >= 8
typedef float KNAME(vec8) __attribute__((vector_size(8 * sizeof(float))));
#endif

/* Sum of the lanes as a tree of half-width adds (a serial lane loop made the end of each tile cost as much
 * as its K loop at K = 512). */
static inline __attribute__((always_inline)) TARGET float KNAME(hsum)(KNAME(vec) v) {
    KNAME(vec4) q;
#if VL == 16
    KNAME(vec8) lo8, hi8;
    __builtin_memcpy(&lo8, &v, sizeof lo8);
    __builtin_memcpy(&hi8, (const float *)&v + 8, sizeof hi8);
    lo8 += hi8;
#elif VL == 8
    KNAME(vec8) lo8 = v;
#endif
#if VL >= 8
    KNAME(vec4) lo4, hi4;
    __builtin_memcpy(&lo4, &lo8, sizeof lo4);
    __builtin_memcpy(&hi4, (const float *)&lo8 + 4, sizeof hi4);
    q = lo4 + hi4;
#else
    q = v;
#endif
    return (q[0] + q[2]) + (q[1] + q[3]);
}

/* One row of X (batch-1 decode): W read strictly in order, one row at a time, four accumulators (the
 * memory streams at its sequential rate; four interleaved W rows ran at less than half of it). */
static TARGET void KNAME(dot1_range)(const problem *p, int n0, int n1) {
    const int K = p->K;
    const float *x = p->X;
    for (int n = n0; n < n1; ++n) {
        const float *w = p->W + (ptrdiff_t)n * p->wn;
        KNAME(vec) a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
        int k = 0;
        for (; k + 4 * VL <= K; k += 4 * VL) {
            a0 += KNAME(load)(w + k) * KNAME(load)(x + k);
            a1 += KNAME(load)(w + k + VL) * KNAME(load)(x + k + VL);
            a2 += KNAME(load)(w + k + 2 * VL) * KNAME(load)(x + k + 2 * VL);
            a3 += KNAME(load)(w + k + 3 * VL) * KNAME(load)(x + k + 3 * VL);
        }
        for (; k + VL <= K; k += VL) a0 += KNAME(load)(w + k) * KNAME(load)(x + k);
        float s = KNAME(hsum)((a0 + a1) + (a2 + a3));
        for (; k < K; ++k) s += w[k] * x[k];
        put(p, 0, n, s);
    }
}

/* C[s0 + i, n] for i < sb: W row n against sb rows of X (the row stays in L1 for the next sb rows). */
static inline __attribute__((always_inline)) TARGET void KNAME(dot_tile)(const problem *p, int n, int s0,
                                                                          const int sb) {
    const int K = p->K;
    const float *w = p->W + (ptrdiff_t)n * p->wn;
    const float *x[SB];
    KNAME(vec) acc[SB];
    for (int i = 0; i < sb; ++i) x[i] = p->X + (ptrdiff_t)(s0 + i) * K, acc[i] = (KNAME(vec)){0};
    int k = 0;
    for (; k + VL <= K; k += VL) {
        const KNAME(vec) wv = KNAME(load)(w + k);
        for (int i = 0; i < sb; ++i) acc[i] += wv * KNAME(load)(x[i] + k);
    }
    for (int i = 0; i < sb; ++i) {
        float s = KNAME(hsum)(acc[i]);
        for (int kk = k; kk < K; ++kk) s += w[kk] * x[i][kk];
        put(p, s0 + i, n, s);
    }
}

/* Several rows of X: W row by row (in order), SB rows of X at a time against it. */
static TARGET void KNAME(dot_range)(const problem *p, int n0, int n1) {
    if (p->S == 1) {
        KNAME(dot1_range)(p, n0, n1);
        return;
    }
    for (int n = n0; n < n1; ++n) {
        int s = 0;
        for (; s + SB <= p->S; s += SB) KNAME(dot_tile)(p, n, s, SB);
        switch (p->S - s) { /* the rest, with a constant count so the accumulators stay in registers */
#if SB > 7
        case 7: KNAME(dot_tile)(p, n, s, 7); break;
        case 6: KNAME(dot_tile)(p, n, s, 6); break;
        case 5: KNAME(dot_tile)(p, n, s, 5); break;
        case 4: KNAME(dot_tile)(p, n, s, 4); break;
#endif
#if SB > 3
        case 3: KNAME(dot_tile)(p, n, s, 3); break;
#endif
#if SB > 2
        case 2: KNAME(dot_tile)(p, n, s, 2); break;
#endif
        case 1: KNAME(dot_tile)(p, n, s, 1); break;
        default: break;
        }
    }
}

/* C[s0+i, n0 .. n0 + nv*VL) for i < sb, with W rows contiguous along N (wn == 1). */
static inline __attribute__((always_inline)) TARGET void KNAME(axpy_tile)(const problem *p, int n0, int s0,
                                                                           const int nv, const int sb) {
    const int K = p->K;
    KNAME(vec) acc[SA][NV];
    const float *x[SA];
    for (int i = 0; i < sb; ++i) x[i] = p->X + (ptrdiff_t)(s0 + i) * K;
    for (int i = 0; i < sb; ++i)
        for (int v = 0; v < nv; ++v) acc[i][v] = (KNAME(vec)){0};
    const float *wk = p->W + n0;
    for (int k = 0; k < K; ++k, wk += p->wk) {
        KNAME(vec) wv[NV];
        for (int v = 0; v < nv; ++v) wv[v] = KNAME(load)(wk + v * VL);
        for (int i = 0; i < sb; ++i) {
            const float xs = x[i][k];
            for (int v = 0; v < nv; ++v) acc[i][v] += xs * wv[v];
        }
    }
    for (int i = 0; i < sb; ++i)
        for (int v = 0; v < nv; ++v)
            for (int l = 0; l < VL; ++l) put(p, s0 + i, n0 + v * VL + l, acc[i][v][l]);
}

static inline __attribute__((always_inline)) TARGET void KNAME(axpy_cols)(const problem *p, int n0, const int nv) {
    int s = 0;
    for (; s + SA <= p->S; s += SA) KNAME(axpy_tile)(p, n0, s, nv, SA);
    switch (p->S - s) {
#if SA > 3
    case 3: KNAME(axpy_tile)(p, n0, s, nv, 3); break;
#endif
#if SA > 2
    case 2: KNAME(axpy_tile)(p, n0, s, nv, 2); break;
#endif
    case 1: KNAME(axpy_tile)(p, n0, s, nv, 1); break;
    default: break;
    }
}

static TARGET void KNAME(axpy_range)(const problem *p, int n0, int n1) {
    int n = n0;
    for (; n + NV * VL <= n1; n += NV * VL) KNAME(axpy_cols)(p, n, NV);
    for (; n + VL <= n1; n += VL) KNAME(axpy_cols)(p, n, 1);
    for (; n < n1; ++n) /* fewer than VL columns left: one dot product each, W read with stride wk */
        for (int s = 0; s < p->S; ++s) {
            const float *x = p->X + (ptrdiff_t)s * p->K;
            float acc = 0.0f;
            for (int k = 0; k < p->K; ++k) acc += x[k] * p->W[(ptrdiff_t)k * p->wk + n];
            put(p, s, n, acc);
        }
}
