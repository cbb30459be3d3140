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
typedef float KNAME(vec8) __attribute__((vector_size(8 * sizeof(float))));

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

/* The sums of four vectors' lanes at once, each in exactly hsum()'s tree (the same pairs of lanes added at each
 * level; a + b and b + a round alike): half-width adds over pairs of vectors, so a 4-row tile's end is a few
 * shuffles and adds in registers instead of four lane trees through the stack. */
#if defined(__clang__) || __GNUC__ >= 12
static inline __attribute__((always_inline)) TARGET KNAME(vec4) KNAME(hsum4)(KNAME(vec) v0, KNAME(vec) v1,
                                                                          KNAME(vec) v2, KNAME(vec) v3) {
#define SHUF __builtin_shufflevector
#if VL == 16 /* [lo8 + hi8 of v0 | of v1], [of v2 | of v3] */
    KNAME(vec) t01 = SHUF(v0, v1, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23) +
                     SHUF(v0, v1, 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
    KNAME(vec) t23 = SHUF(v2, v3, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23) +
                     SHUF(v2, v3, 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
    /* q = lo4 + hi4 of each: [q(v0) | q(v1) | q(v2) | q(v3)] */
    KNAME(vec) u = SHUF(t01, t23, 0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27) +
                   SHUF(t01, t23, 4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31);
    KNAME(vec8) r = SHUF(u, u, 0, 1, 4, 5, 8, 9, 12, 13) + SHUF(u, u, 2, 3, 6, 7, 10, 11, 14, 15);
#elif VL == 8 /* [q(v0) | q(v1)], [q(v2) | q(v3)] */
    KNAME(vec) t01 = SHUF(v0, v1, 0, 1, 2, 3, 8, 9, 10, 11) + SHUF(v0, v1, 4, 5, 6, 7, 12, 13, 14, 15);
    KNAME(vec) t23 = SHUF(v2, v3, 0, 1, 2, 3, 8, 9, 10, 11) + SHUF(v2, v3, 4, 5, 6, 7, 12, 13, 14, 15);
    KNAME(vec8) r = SHUF(t01, t23, 0, 1, 4, 5, 8, 9, 12, 13) + SHUF(t01, t23, 2, 3, 6, 7, 10, 11, 14, 15);
#else /* VL == 4: q is the vector itself */
    KNAME(vec4) r01 = SHUF(v0, v1, 0, 1, 4, 5) + SHUF(v0, v1, 2, 3, 6, 7);
    KNAME(vec4) r23 = SHUF(v2, v3, 0, 1, 4, 5) + SHUF(v2, v3, 2, 3, 6, 7);
    KNAME(vec8) r = SHUF(r01, r23, 0, 1, 2, 3, 4, 5, 6, 7);
#endif
    /* r = [q0 + q2, q1 + q3] of each vector; the last level adds each pair */
    return SHUF(r, r, 0, 2, 4, 6) + SHUF(r, r, 1, 3, 5, 7);
#undef SHUF
}
#define HAVE_HSUM4 1
#endif

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
        x[i] = p->X + (ptrdiff_t)(s0 + i) * p->xr;
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
    float s[SB];
#ifdef HAVE_HSUM4
    if (sb >= 2) {
        KNAME(vec) v[SB];
        for (int i = 0; i < sb; ++i) v[i] = (a0[i] + a1[i]) + (a2[i] + a3[i]);
        for (int i = 0; i < sb; i += 4) { /* a short group repeats its last rows; their sums are not used */
            const int i1 = i + 1 < sb ? i + 1 : sb - 1, i2 = i + 2 < sb ? i + 2 : sb - 1;
            const int i3 = i + 3 < sb ? i + 3 : sb - 1;
            const KNAME(vec4) t = KNAME(hsum4)(v[i], v[i1], v[i2], v[i3]);
            for (int l = 0; l < 4 && i + l < sb; ++l) s[i + l] = t[l];
        }
    } else
#endif
        for (int i = 0; i < sb; ++i) s[i] = KNAME(hsum)((a0[i] + a1[i]) + (a2[i] + a3[i]));
    for (int i = 0; i < sb; ++i) {
        for (int kk = k; kk < K; ++kk) s[i] += w[kk] * x[i][kk];
        put(p, s0 + i, n, s[i]);
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
/* VL lane vectors v[0..VL-1] summed pairwise to one: (v[l] + v[l + 8]) at VL 16, then + v[l + 4] from VL 8, then
   (v0 + v2) + (v1 + v3); v is overwritten. One order for every caller, so the sums keep their bits. */
static inline __attribute__((always_inline)) TARGET KNAME(vec) KNAME(fold_lanes)(KNAME(vec) *v) {
#if VL == 16
    for (int l = 0; l < 8; ++l) v[l] += v[l + 8];
#endif
#if VL >= 8
    for (int l = 0; l < 4; ++l) v[l] += v[l + 4];
#endif
    return (v[0] + v[2]) + (v[1] + v[3]);
}

static inline __attribute__((always_inline)) TARGET void KNAME(axpy_cols)(const problem *p, int n0, int s) {
    const int K = p->K;
    const float *x = p->X + (ptrdiff_t)s * p->xr;
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
    KNAME(vec) t = KNAME(fold_lanes)(v);
    for (; k < K; ++k) t += KNAME(load)(w + (ptrdiff_t)k * wk) * x[k];
    for (int l = 0; l < VL; ++l) put(p, s, n0 + l, t[l]);
}

/* One column (fewer than VL left), the same order in scalars. */
static inline __attribute__((always_inline)) TARGET void KNAME(axpy_col1)(const problem *p, int n, int s) {
    const int K = p->K;
    const float *x = p->X + (ptrdiff_t)s * p->xr;
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

/* C[s, n0 .. n0 + VL) for every row s, the same values as axpy_cols, for K < 4*VL: then the dot form's first loop
 * never runs and its a1..a3 stay zero, so each element's VL partial sums are the VL-blocks of a0 (acc[0..VL) of
 * axpy_cols; none once K < VL), combined with the zero accumulators exactly as there ((a0 + 0) + (0 + 0): the
 * same additions, signed zeros included), then the lane tree and the last K % VL products in order. With K < VL
 * the rows share each W vector load (up to MAX_ROWS vector accumulators). Without this, each call of axpy_cols
 * kept 4*VL accumulator vectors in memory for a handful of products (the chunk scan's [nc, nc + 1] x [nc + 1,
 * Dqk*Dv] products: docs/cpu-blas.md). */
static inline __attribute__((always_inline)) TARGET void KNAME(store_cols)(const problem *p, int s, int n0,
                                                                            KNAME(vec) t) {
    if (p->cn == 1) { /* put()'s arithmetic, lane by lane, on a contiguous row of C */
        float *c = p->C + (ptrdiff_t)s * p->cs + n0;
        KNAME(vec) r = p->alpha * t;
        if (p->beta != 0.0f) r = p->alpha * t + p->beta * KNAME(load)(c);
        __builtin_memcpy(c, &r, sizeof r);
    } else {
        for (int l = 0; l < VL; ++l) put(p, s, n0 + l, t[l]);
    }
}

static TARGET void KNAME(axpy_short)(const problem *p, int n0) {
    const int K = p->K, S = p->S;
    const float *w = p->W + n0;
    const ptrdiff_t wk = p->wk;
    const KNAME(vec) z = {0};
    if (K < VL) { /* only the last K % VL products: t = 0, then each product in order */
        KNAME(vec) t[MAX_ROWS];
        for (int s = 0; s < S; ++s) t[s] = z;
        for (int k = 0; k < K; ++k) {
            const KNAME(vec) wv = KNAME(load)(w + (ptrdiff_t)k * wk);
            for (int s = 0; s < S; ++s) t[s] += wv * p->X[(ptrdiff_t)s * p->xr + k];
        }
        for (int s = 0; s < S; ++s) KNAME(store_cols)(p, s, n0, t[s]);
        return;
    }
    for (int s = 0; s < S; ++s) {
        const float *x = p->X + (ptrdiff_t)s * p->xr;
        KNAME(vec) acc[VL];
        for (int r = 0; r < VL; ++r) acc[r] = z;
        int k = 0;
        for (; k + VL <= K; k += VL)
            for (int r = 0; r < VL; ++r) acc[r] += KNAME(load)(w + (ptrdiff_t)(k + r) * wk) * x[k + r];
        KNAME(vec) v[VL];
        for (int l = 0; l < VL; ++l) v[l] = (acc[l] + z) + (z + z);
        KNAME(vec) t = KNAME(fold_lanes)(v);
        for (; k < K; ++k) t += KNAME(load)(w + (ptrdiff_t)k * wk) * x[k];
        KNAME(store_cols)(p, s, n0, t);
    }
}

static TARGET void KNAME(dot_range)(const problem *p, int n0, int n1);

/* W contiguous along N with K >= VL: each block of VL columns of W is copied into VL rows of a buffer (W(k, n) at
 * buf[(n - n0) * kp + k]) and handed to the dot form, which then computes exactly what it computes for a weight
 * stored that way (so the same bits as axpy_cols), at its speed: its accumulators stay in registers and a W row
 * serves SB rows of X at once (docs/cpu-blas.md has the figures). For K >= 4*VL and more than one row of X;
 * returns 0 when the buffer cannot be had (the caller then runs axpy_cols). */
static TARGET int KNAME(axpy_packed)(const problem *p, int n0, int n1) {
    const int K = p->K;
    const ptrdiff_t kp = ((ptrdiff_t)K + XALIGN - 1) / XALIGN * XALIGN;
    float *buf = (float *)aligned_alloc(64, (size_t)VL * (size_t)kp * sizeof(float));
    if (!buf) return 0;
    problem q = *p;
    q.W = buf, q.wk = 1, q.wn = kp;
    for (int n = n0; n < n1; n += VL) {
        const int cols = n1 - n < VL ? n1 - n : VL;
        const float *w = p->W + n;
        for (int k = 0; k < K; ++k)
            for (int l = 0; l < cols; ++l) buf[l * kp + k] = w[(ptrdiff_t)k * p->wk + l];
        q.C = p->C + (ptrdiff_t)n * p->cn, q.N = cols;
        KNAME(dot_range)(&q, 0, cols);
    }
    free(buf);
    return 1;
}

static TARGET void KNAME(axpy_range)(const problem *p, int n0, int n1) {
    int n = n0;
    if (p->K < 4 * VL) /* a handful of products an element: the short form */
        for (; n + VL <= n1; n += VL) KNAME(axpy_short)(p, n);
    else if (p->S > 1 && KNAME(axpy_packed)(p, n0, n1)) /* one row: the copy costs more than it saves */
        return;
    for (; n + VL <= n1; n += VL)
        for (int s = 0; s < p->S; ++s) KNAME(axpy_cols)(p, n, s);
    for (; n < n1; ++n)
        for (int s = 0; s < p->S; ++s) KNAME(axpy_col1)(p, n, s);
}
