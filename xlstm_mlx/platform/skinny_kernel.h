/* One instance of the streaming kernels of skinny_sgemm.c, for one vector ISA.
 *
 * Included once per ISA with these macros set:
 *   KNAME(x)   name of function x in this instance (x ## _avx512, ...)
 *   TARGET     function attribute that enables the ISA (empty for the baseline)
 *   VL         float lanes per vector
 *   SB         dot form: rows of X per pass over one W row (4*SB + 4 vector registers)
 *
 * Both forms read every element of W from memory once per call, while the packed rows of X (a few KB) stay
 * in cache. The loops over rows have compile-time trip counts once the always_inline tiles are expanded with
 * a constant sb, so the accumulators live in registers. Compiled without FMA contraction (setup.py): both
 * forms must round every element in the same order.
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

/* The order every element's sum follows, in both forms: four vector accumulators a0..a3, a_j taking the
 * VL-blocks k0 = 4*VL*q + j*VL (four independent chains per row, which is what lets one row stream W at the
 * memory's sequential rate); the remaining VL-blocks into a0; then (a0 + a1) + (a2 + a3), the lane tree of
 * hsum(), and the last K % VL products in order. */

/* C[s0 + i, n] for i < sb: W row n against sb rows of X (the row stays in L1 for the next sb rows). */
static inline __attribute__((always_inline)) TARGET void KNAME(dot_tile)(const problem *p, int n, int s0,
                                                                          const int sb) {
    const int K = p->K;
    const float *w = p->W + (ptrdiff_t)n * p->wn;
    const float *x[SB];
    KNAME(vec) a0[SB], a1[SB], a2[SB], a3[SB];
    for (int i = 0; i < sb; ++i) {
        x[i] = p->X + (ptrdiff_t)(s0 + i) * K;
        a0[i] = a1[i] = a2[i] = a3[i] = (KNAME(vec)){0};
    }
    int k = 0;
    for (; k + 4 * VL <= K; k += 4 * VL) {
        const KNAME(vec) w0 = KNAME(load)(w + k), w1 = KNAME(load)(w + k + VL);
        const KNAME(vec) w2 = KNAME(load)(w + k + 2 * VL), w3 = KNAME(load)(w + k + 3 * VL);
        for (int i = 0; i < sb; ++i) {
            a0[i] += w0 * KNAME(load)(x[i] + k);
            a1[i] += w1 * KNAME(load)(x[i] + k + VL);
            a2[i] += w2 * KNAME(load)(x[i] + k + 2 * VL);
            a3[i] += w3 * KNAME(load)(x[i] + k + 3 * VL);
        }
    }
    for (; k + VL <= K; k += VL) {
        const KNAME(vec) w0 = KNAME(load)(w + k);
        for (int i = 0; i < sb; ++i) a0[i] += w0 * KNAME(load)(x[i] + k);
    }
    for (int i = 0; i < sb; ++i) {
        float s = KNAME(hsum)((a0[i] + a1[i]) + (a2[i] + a3[i]));
        for (int kk = k; kk < K; ++kk) s += w[kk] * x[i][kk];
        put(p, s0 + i, n, s);
    }
}

/* W row by row (in order), SB rows of X at a time against it; one accumulator per element, so the sum of
 * each element is in the same order whatever the number of rows (batch 1 and batch 8 give the same bits). */
static TARGET void KNAME(dot_range)(const problem *p, int n0, int n1) {
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

/* C[s, n0 .. n0 + VL) with W contiguous along N (wn == 1), in exactly the dot form's order for each element
 * (the partial sums of its 4*VL accumulator lanes, kept here as 4*VL column vectors). So a product gives the
 * same bits whichever operand layout MLX passes: a transposed view of a weight and its contiguous copy agree
 * exactly, as they do with OpenBLAS' sgemm. (This layout is rare at decode: x @ W with W stored [K, N].) */
static inline __attribute__((always_inline)) TARGET void KNAME(axpy_cols)(const problem *p, int n0, int s) {
    const int K = p->K;
    const float *x = p->X + (ptrdiff_t)s * K;
    const float *w = p->W + n0;
    const ptrdiff_t wk = p->wk;
    KNAME(vec) acc[4 * VL]; /* acc[j*VL + l]: lane l of a_j of the dot form, for VL columns */
    for (int r = 0; r < 4 * VL; ++r) acc[r] = (KNAME(vec)){0};
    int k = 0;
    for (; k + 4 * VL <= K; k += 4 * VL)
        for (int r = 0; r < 4 * VL; ++r) acc[r] += KNAME(load)(w + (ptrdiff_t)(k + r) * wk) * x[k + r];
    for (; k + VL <= K; k += VL)
        for (int r = 0; r < VL; ++r) acc[r] += KNAME(load)(w + (ptrdiff_t)(k + r) * wk) * x[k + r];
    KNAME(vec) v[VL]; /* the vector (a0 + a1) + (a2 + a3), lane by lane */
    for (int l = 0; l < VL; ++l) v[l] = (acc[l] + acc[VL + l]) + (acc[2 * VL + l] + acc[3 * VL + l]);
#if VL == 16
    for (int l = 0; l < 8; ++l) v[l] += v[l + 8];
#endif
#if VL >= 8
    for (int l = 0; l < 4; ++l) v[l] += v[l + 4];
#endif
    KNAME(vec) t = (v[0] + v[2]) + (v[1] + v[3]);
    for (; k < K; ++k) t += KNAME(load)(w + (ptrdiff_t)k * wk) * x[k];
    for (int l = 0; l < VL; ++l) put(p, s, n0 + l, t[l]);
}

/* One column (fewer than VL left), the same order in scalars. */
static inline __attribute__((always_inline)) TARGET void KNAME(axpy_col1)(const problem *p, int n, int s) {
    const int K = p->K;
    const float *x = p->X + (ptrdiff_t)s * K;
    const float *w = p->W + n;
    const ptrdiff_t wk = p->wk;
    float acc[4 * VL];
    for (int r = 0; r < 4 * VL; ++r) acc[r] = 0.0f;
    int k = 0;
    for (; k + 4 * VL <= K; k += 4 * VL)
        for (int r = 0; r < 4 * VL; ++r) acc[r] += w[(ptrdiff_t)(k + r) * wk] * x[k + r];
    for (; k + VL <= K; k += VL)
        for (int r = 0; r < VL; ++r) acc[r] += w[(ptrdiff_t)(k + r) * wk] * x[k + r];
    float v[VL];
    for (int l = 0; l < VL; ++l) v[l] = (acc[l] + acc[VL + l]) + (acc[2 * VL + l] + acc[3 * VL + l]);
#if VL == 16
    for (int l = 0; l < 8; ++l) v[l] += v[l + 8];
#endif
#if VL >= 8
    for (int l = 0; l < 4; ++l) v[l] += v[l + 4];
#endif
    float t = (v[0] + v[2]) + (v[1] + v[3]);
    for (; k < K; ++k) t += w[(ptrdiff_t)k * wk] * x[k];
    put(p, s, n, t);
}

static TARGET void KNAME(axpy_range)(const problem *p, int n0, int n1) {
    int n = n0;
    for (; n + VL <= n1; n += VL)
        for (int s = 0; s < p->S; ++s) KNAME(axpy_cols)(p, n, s);
    for (; n < n1; ++n)
        for (int s = 0; s < p->S; ++s) KNAME(axpy_col1)(p, n, s);
}
