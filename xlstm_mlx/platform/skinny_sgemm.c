/* cblas_sgemm for skinny products: libmlx's cblas_sgemm import is pointed here (platform/skinny.py).
 *
 * Why: at decode every nn.Linear is x @ W.T with a few rows of x (one per sequence). MLX sends it to
 * cblas_sgemm with M = rows; OpenBLAS' sgemm then packs all of W into its panel layout on every call, which
 * costs more than the product (measured on a 2-core EPYC VM, W = 50304 x 512 float32, one thread: sgemm with
 * M = 1 18 ms, M = 8 21 ms; sgemv 8.8 ms). The kernels here stream W from memory once and keep the few rows
 * of x in L1, M accumulators per W row.
 *
 * What it computes: exactly cblas_sgemm's contract, C = alpha * op(A) op(B) + beta * C (beta == 0: C is
 * written without being read), row- or column-major, either transpose, any lda/ldb/ldc. The kernels run when
 * M <= MAX_ROWS (op(A) becomes the rows of X, op(B) is W; or, where N < M, the transposed product); everything else,
 * and every degenerate or invalid call (alpha == 0, K == 0, bad leading dimension: the library reports it),
 * goes to the real sgemm unchanged. Each element is one float32 dot product over K, summed in one fixed
 * order whatever the layout and row count (skinny_kernel.h): within the usual K * eps * sum |a||b| bound.
 *
 * Loaded with ctypes (it is not a Python module). Built at install time by setup.py (optional).
 */

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { ROW_MAJOR = 101, COL_MAJOR = 102, NO_TRANS = 111, TRANS = 112, CONJ_TRANS = 113 };

#define MAX_ROWS 8
#define MAX_THREADS 64
#define XALIGN 16 /* floats: the packed rows of X start on 64-byte boundaries */
/* Splitting N over threads costs a thread start per extra thread (~20-50 us): only worth it for big W. */
#define THREAD_MIN_WORK (1LL << 22)

typedef void (*sgemm_fn)(int, int, int, int, int, int, float, const float *, int, const float *, int, float,
                         float *, int);
typedef int (*threads_fn)(void);

typedef struct {
    int S, N, K;              /* C is S x N: S the small side */
    const float *X;           /* packed X, S x K, row s at X + s*xr (64-byte aligned rows) */
    ptrdiff_t xr;
    const float *W;           /* W(k, n) at W[k*wk + n*wn]; one of wk, wn is 1 */
    ptrdiff_t wk, wn;
    float *C;                 /* C(s, n) at C[s*cs + n*cn] */
    ptrdiff_t cs, cn;
    float alpha, beta;
} problem;

typedef void (*range_fn)(const problem *, int, int);

static inline __attribute__((always_inline)) void put(const problem *p, int s, int n, float v) {
    float *c = p->C + (ptrdiff_t)s * p->cs + (ptrdiff_t)n * p->cn;
    *c = p->beta == 0.0f ? p->alpha * v : p->alpha * v + p->beta * *c;
}

/* ---- one kernel instance per vector ISA ---- */

#if defined(__x86_64__) || defined(__i386__)
#define KNAME(x) x##_avx512
#define TARGET __attribute__((target("avx512f,avx2,fma")))
#define VL 16
#define SB 4
#include "skinny_kernel.h"
#undef KNAME
#undef TARGET
#undef VL
#undef SB

#define KNAME(x) x##_avx2
#define TARGET __attribute__((target("avx2,fma")))
#define VL 8
#define SB 2
#include "skinny_kernel.h"
#undef KNAME
#undef TARGET
#undef VL
#undef SB
#endif

/* The baseline of the compiler's target: SSE2 on x86-64, NEON (Advanced SIMD, 32 registers) on aarch64. */
#define KNAME(x) x##_base
#define TARGET
#define VL 4
#if defined(__aarch64__)
#define SB 4
#else
#define SB 2
#endif
#include "skinny_kernel.h"
#undef KNAME
#undef TARGET
#undef VL
#undef SB

/* ---- state ---- */

#define BASE_ISA_UNSET "unset"

static sgemm_fn real_sgemm;
static threads_fn real_threads;
static int enabled;                       /* 0: every call goes to real_sgemm (the reference path) */
static range_fn dot_range = dot_range_base, axpy_range = axpy_range_base;
static const char *isa = BASE_ISA_UNSET;
static unsigned long long calls_kernel, calls_forwarded;

#if defined(__x86_64__) || defined(__i386__)
#define BASE_ISA "sse2"
#elif defined(__aarch64__)
#define BASE_ISA "neon"
#else
#define BASE_ISA "generic"
#endif

/* Use the kernels for `name` if this CPU runs them; returns 1 on success. */
int xl_skinny_set_isa(const char *name) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    if (!strcmp(name, "avx512f") && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx2") &&
        __builtin_cpu_supports("fma")) {
        dot_range = dot_range_avx512, axpy_range = axpy_range_avx512, isa = "avx512f";
        return 1;
    }
    if (!strcmp(name, "avx2+fma") && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        dot_range = dot_range_avx2, axpy_range = axpy_range_avx2, isa = "avx2+fma";
        return 1;
    }
#endif
    if (!strcmp(name, BASE_ISA)) {
        dot_range = dot_range_base, axpy_range = axpy_range_base, isa = BASE_ISA;
        return 1;
    }
    return 0;
}

/* The widest instruction set this CPU runs (tests switch to the others with xl_skinny_set_isa). */
static void pick_isa(void) {
    if (!xl_skinny_set_isa("avx512f") && !xl_skinny_set_isa("avx2+fma")) xl_skinny_set_isa(BASE_ISA);
}

/* ---- threads ---- */

typedef struct {
    const problem *p;
    range_fn f;
    int n0, n1;
} job;

static void *run_job(void *arg) {
    job *j = (job *)arg;
    j->f(j->p, j->n0, j->n1);
    return NULL;
}

/* f over [0, N), split in `align`-multiples over the library's thread count when the product is big. */
static void run(const problem *p, range_fn f, int align) {
    int t = real_threads ? real_threads() : 1;
    long long work = (long long)p->S * p->N * p->K;
    int blocks = (p->N + align - 1) / align;
    if (t > MAX_THREADS) t = MAX_THREADS;
    if (t > blocks) t = blocks;
    if (t <= 1 || work < THREAD_MIN_WORK) {
        f(p, 0, p->N);
        return;
    }
    job jobs[MAX_THREADS];
    pthread_t tid[MAX_THREADS];
    int started[MAX_THREADS] = {0};
    for (int i = 0; i < t; ++i) {
        int b0 = (int)((long long)blocks * i / t), b1 = (int)((long long)blocks * (i + 1) / t);
        jobs[i] = (job){p, f, b0 * align, b1 * align < p->N ? b1 * align : p->N};
    }
    for (int i = 1; i < t; ++i) started[i] = pthread_create(&tid[i], NULL, run_job, &jobs[i]) == 0;
    run_job(&jobs[0]);
    for (int i = 1; i < t; ++i) {
        if (started[i])
            pthread_join(tid[i], NULL);
        else
            run_job(&jobs[i]); /* no thread to be had: this one does the part */
    }
}

/* ---- the cblas_sgemm entry ---- */

static int max1(int v) { return v > 1 ? v : 1; }

/* cblas_sgemm's argument checks; an invalid call is forwarded so the library reports it its own way. */
static int valid(int order, int ta, int tb, int M, int N, int K, int lda, int ldb, int ldc) {
    if ((order != ROW_MAJOR && order != COL_MAJOR) || M < 0 || N < 0 || K < 0) return 0;
    if ((ta != NO_TRANS && ta != TRANS && ta != CONJ_TRANS) || (tb != NO_TRANS && tb != TRANS && tb != CONJ_TRANS))
        return 0;
    int an = ta == NO_TRANS, bn = tb == NO_TRANS;
    if (order == ROW_MAJOR)
        return lda >= max1(an ? K : M) && ldb >= max1(bn ? N : K) && ldc >= max1(N);
    return lda >= max1(an ? M : K) && ldb >= max1(bn ? K : N) && ldc >= max1(M);
}

/* ---- many rows: the library's sgemm, in K-blocks ----
 *
 * Why: a BLAS GEMM kernel gives each element of C one register lane and adds the K products into it one after
 * the other, over each of the library's K-panels (OpenBLAS' Haswell kernel, which it picks on AMD Zen as well:
 * ~384; MKL's: ~128, measured from their errors). The rounding error of such a running sum grows with its
 * length, so the error of a product depends on the library and the CPU it chose a kernel for: measured
 * (rms of |error| / sum |a||b|, benchmarks/results/sgemm_accuracy.md) OpenBLAS Haswell 2.7e-8 at K = 256 and
 * 2.0e-8 at K = 512, torch's MKL 2.0e-8 and 1.7e-8, on one AMD EPYC. Here the sum over K is cut into blocks of
 * K / 8 products, but at least k_block (16) and at most LONG_K_BLOCK (64) long, and at most MAX_K_BLOCKS (16) of
 * them (at least 2 once K >= k_block; each a multiple of 8 long): one library call each, every block after the
 * first added into C by the library (beta = 1). So blocks of 16 up to K = 128, 8 blocks up to K = 512, blocks of
 * 64 up to K = 1,024, 16 blocks beyond: each element a running sum of <= 64 terms (K / 16 beyond 1,024), then a
 * short one over the blocks, whatever the library's panel size. 1.6e-8 at K = 64, 1.0e-8 at K = 512. The cost
 * is C re-read and re-written once per block and more calls for the small products: +1-3 % on the 64m prefill
 * (benchmarks/results/sgemm_k_block_speed.md); the caps keep the passes over C few for long K (7B widths:
 * 256-long blocks at K = 4,096). Blocks of 16 throughout (16 of them) measured +3 % there; of 64 throughout,
 * +1 % but less accurate for small K (docs/numerics.md). */
#define MAX_K_BLOCKS 16
#define LONG_K_BLOCK 64
/* Products whose C has at most this many elements (32 KB: the chunkwise cell's per-head, per-chunk L x L and
 * L x Dv products at the 64m shape) stay one call: there a library call's fixed cost is comparable to a block's
 * work (measured: splitting them cost ~2 % of the 64m prefill), and making the cell correctly rounded did not
 * change the logits' typical error (docs/numerics.md). Matrix-vector products (N == 1: the norms' sums over a
 * prompt, kernels/norms.py) are blocked whatever their size: blocking re-reads only their one-column C. */
#define MAX_UNBLOCKED_C 8192
static int k_block = 16;                  /* shortest block length; 0: forward unchanged */

static void blocked_sgemm(int order, int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                          const float *B, int ldb, float beta, float *C, int ldc) {
    int shortest = __atomic_load_n(&k_block, __ATOMIC_RELAXED);
    if (N > 1 && M > 1 && (long long)M * N <= MAX_UNBLOCKED_C) shortest = 0;
    int len = K / 8;
    if (len > LONG_K_BLOCK) len = LONG_K_BLOCK;
    if (len < shortest) len = shortest;
    int nb = shortest > 0 ? (K + len - 1) / len : 1;
    if (shortest > 0 && nb < 2 && K >= shortest) nb = 2; /* K = shortest: two halves still halve the running sum */
    if (nb > MAX_K_BLOCKS) nb = MAX_K_BLOCKS;
    int kb = (K + nb - 1) / nb;
    kb = (kb + 7) / 8 * 8; /* whole 8-float groups: the library's packing stays aligned */
    if (nb < 2 || kb >= K) {
        real_sgemm(order, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    /* step along K of op(A) (M x K) and op(B) (K x N) in their storage */
    int an = ta == NO_TRANS, bn = tb == NO_TRANS, row = order == ROW_MAJOR;
    ptrdiff_t a_step = (row == an) ? 1 : lda, b_step = (row == bn) ? ldb : 1;
    for (int k0 = 0; k0 < K; k0 += kb) {
        int kk = K - k0 < kb ? K - k0 : kb;
        real_sgemm(order, ta, tb, M, N, kk, alpha, A + k0 * a_step, lda, B + k0 * b_step, ldb, k0 ? 1.0f : beta,
                   C, ldc);
    }
}

void xl_skinny_sgemm(int order, int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                     const float *B, int ldb, float beta, float *C, int ldc) {
    /* Only a few rows of op(A): the activations of x @ W.T. A product with few columns and many rows (gate
     * projections and norm sums over a prompt) stays with the library, in K-blocks (blocked_sgemm): its FMA
     * accumulation over short blocks is more accurate than this kernel's (no contraction, for the same bits in
     * both forms) and than the canonical's MKL (tests/models/test_parity_f64.py). */
    int small = M <= MAX_ROWS ? M : MAX_ROWS + 1;
    if (!__atomic_load_n(&enabled, __ATOMIC_RELAXED) || small == 0 || N == 0 || K == 0 || alpha == 0.0f ||
        !valid(order, ta, tb, M, N, K, lda, ldb, ldc)) {
        __atomic_fetch_add(&calls_forwarded, 1, __ATOMIC_RELAXED);
        real_sgemm(order, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    if (small > MAX_ROWS) {
        __atomic_fetch_add(&calls_forwarded, 1, __ATOMIC_RELAXED);
        blocked_sgemm(order, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    /* op(A)(m, k) at A[m*ar + k*ac], op(B)(k, n) at B[k*br + n*bc], C(m, n) at C[m*cr + n*cc] */
    int an = ta == NO_TRANS, bn = tb == NO_TRANS;
    ptrdiff_t ar, ac, br, bc, cr, cc;
    if (order == ROW_MAJOR) {
        ar = an ? lda : 1, ac = an ? 1 : lda;
        br = bn ? ldb : 1, bc = bn ? 1 : ldb;
        cr = ldc, cc = 1;
    } else {
        ar = an ? 1 : lda, ac = an ? lda : 1;
        br = bn ? 1 : ldb, bc = bn ? ldb : 1;
        cr = 1, cc = ldc;
    }
    problem p = {.K = K, .alpha = alpha, .beta = beta, .C = C};
    const float *X;
    ptrdiff_t xs, xk;
    if (M <= N) { /* X = op(A) (M x K), W = op(B) */
        p.S = M, p.N = N, X = A, xs = ar, xk = ac;
        p.W = B, p.wk = br, p.wn = bc, p.cs = cr, p.cn = cc;
    } else { /* C^T = op(B)^T op(A)^T: X = op(B)^T (N x K), W = op(A)^T (K x M) */
        p.S = N, p.N = M, X = B, xs = bc, xk = br;
        p.W = A, p.wk = ac, p.wn = ar, p.cs = cc, p.cn = cr;
    }
    /* pack X (S*K floats: small next to W's N*K) into rows that start on 64-byte boundaries. Every X load of the
     * kernels is then a whole aligned vector; MLX's buffers are 8-byte aligned, and a vector load that crosses
     * a cache line costs two: with X at MLX's alignment the 8-row lm_head took 1.6-1.9x as long (AVX-512, one
     * core of the EPYC VM, 2026-12-02 session 9). W stays where it is (4 of the 20 loads per 16 multiply-adds). */
    p.xr = ((ptrdiff_t)K + XALIGN - 1) / XALIGN * XALIGN;
    size_t bytes = (size_t)p.S * (size_t)p.xr * sizeof(float);
    float stack_buf[4096] __attribute__((aligned(64)));
    float *xp = bytes <= sizeof stack_buf ? stack_buf : (float *)aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (!xp) {
        __atomic_fetch_add(&calls_forwarded, 1, __ATOMIC_RELAXED);
        real_sgemm(order, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    for (int s = 0; s < p.S; ++s) {
        float *row = xp + (size_t)s * p.xr;
        if (xk == 1)
            memcpy(row, X + s * xs, (size_t)K * sizeof(float));
        else
            for (int k = 0; k < K; ++k) row[k] = X[s * xs + k * xk];
    }
    p.X = xp;
    __atomic_fetch_add(&calls_kernel, 1, __ATOMIC_RELAXED);
    if (p.wk == 1) /* W contiguous along K (x @ W.T, W @ x): dot products; else along N (x @ W): axpys */
        run(&p, dot_range, 16);
    else
        run(&p, axpy_range, 16);
    if (xp != stack_buf) free(xp);
}

/* ---- control, called from Python through ctypes ---- */

void xl_skinny_init(sgemm_fn sgemm, threads_fn threads) {
    real_sgemm = sgemm;
    real_threads = threads;
    pick_isa();
}

void xl_skinny_set_enabled(int on) { __atomic_store_n(&enabled, on ? 1 : 0, __ATOMIC_RELAXED); }

int xl_skinny_enabled(void) { return __atomic_load_n(&enabled, __ATOMIC_RELAXED); }

int xl_skinny_max_rows(void) { return MAX_ROWS; }

/* the K-block length of the many-row products (0: one library call, as the library would sum); returns the old */
int xl_skinny_set_k_block(int n) { return __atomic_exchange_n(&k_block, n > 0 ? n : 0, __ATOMIC_RELAXED); }

void *xl_skinny_real(void) { return (void *)real_sgemm; }

const char *xl_skinny_isa(void) { return isa; }

/* out[0]: calls the kernels computed, out[1]: calls forwarded to the library's sgemm (since the last reset) */
void xl_skinny_counts(unsigned long long *out, int reset) {
    out[0] = __atomic_load_n(&calls_kernel, __ATOMIC_RELAXED);
    out[1] = __atomic_load_n(&calls_forwarded, __ATOMIC_RELAXED);
    if (reset) {
        __atomic_store_n(&calls_kernel, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&calls_forwarded, 0, __ATOMIC_RELAXED);
    }
}
