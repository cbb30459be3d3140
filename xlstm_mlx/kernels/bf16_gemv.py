"""y = x @ w.T (+ bias) for 1-16 rows of x and bf16 weights: a bandwidth-bound CUDA kernel on the tensor cores.

At decode a float matmul reads its weight once for a handful of rows, so its floor is the weight bytes over the
memory bandwidth: 4096->12288 in bf16 is 100.7 MB, ~24 us at the H200's ~4.2 TB/s. MLX's matmul (cuBLAS gemv at
one row) reads the 7B decode matrices at ~3.8 TB/s, the FFN down (10944 -> 4096) at 2.9 TB/s, and at 16 rows
cuBLAS adds split-K reduction kernels. A CUDA-core kernel (kernels/skinny_gemm.py: 16-byte loads, R rows a warp,
x through __ldg, a shuffle reduction) was slower than MLX everywhere; this one has the structure of the quantized
GEMV (kernels/quant_gemv.py), which processes ~2e12 weights/s on the H200: 4 TB/s of bf16.

    bf16_gemv_ref(x, w, bias=None)               MLX's matmul (x @ w.T, mx.addmm with a bias): what nn.Linear runs
    bf16_gemv_cuda(x, w, bias=None, **config)    the CUDA kernel (no fallback: callers check `applies`)
    applies(x, w, bias=None)                     CUDA, bf16 x / w (/ bias), 1..MAX_ROWS rows, K a multiple of 8
    faster_than_mlx(rows, n, k)                  where the H200 lab timed the kernel faster than MLX (table below)
    default_config(rows, n, k), SWEEP_CONFIGS    the measured configuration, else a rule; the lab's sweep

Kernel design:
  - mma.sync m16n8k16 (bf16 in, float32 accumulation): 16 weight rows are the mma's M, the rows of x its 8
    columns (one column tile for M <= 8, two for M <= 16; a padding column is zeros). With one row of x 7/8 of the
    tensor-core work is padding, but the tensor cores have ~100x the FLOPs this needs: they make 16 rows cost what
    one costs, and cost the loop almost no instructions (2 mma a 16-row tile and 32 k);
  - a warp owns R tiles of 16 consecutive weight rows and a KSPLIT-th of each row, in steps of U units; a unit is
    4 16-byte vectors (32 k, 64 contiguous bytes) of each of the tile's 16 rows: 1 KB a tile. A block is WARPS
    warps (WARPS / KSPLIT row groups x KSPLIT K parts, which take alternate steps so that the warps of a block
    read the same stretch of x at about the same time); the K parts are summed through shared memory at the end,
    the bias added in float32 and each output rounded once to bf16;
  - the weights stream global -> shared with cp.async.cg (16 bytes a thread, cached in L2 only: read once), S
    steps in flight a warp in a ring of S stages; no block barrier in the loop;
  - thread (g, c) of a warp (g = lane / 4, c = lane % 4: the mma fragments' group and thread-in-group) copies
    vector c of each unit for the tile's rows g and g + 8, and reads back exactly what it copied. Unlike the
    quantized GEMV (which needs ldmatrix's transpose so that one mma covers one quantization group), a bf16 tile
    has no groups and the order of k inside an mma is free as long as weights and x agree: so the 4 words of
    thread c's vector of row g / g + 8 ARE its A fragments, two mmas' worth (words 0, 1 for the first, 2, 3 for
    the second), and its B fragments are the same 16 bytes (vector c of the unit) of its x row: one 16-byte
    __ldg. No ldmatrix, no shuffle, no swizzle (each 8-lane phase of a 16-byte shared load or copy is 128
    contiguous bytes: no bank conflict), and no lane reads another lane's copy, so the ring needs only each
    thread's own cp.async.wait_group (plus one __syncwarp a step, which orders the reuse of a stage);
  - x (a few KB to 350 KB: 16 rows x 10944) comes through L1 with __ldg, one 16-byte load per column tile and
    unit, reused by the warp's R tiles: at 16 rows and R = 1 that is as many bytes of x as of weight per step,
    R = 2 or 4 halves or quarters it (x is read by every warp of a multiprocessor at about the same k);
  - K must be a multiple of 8 (whole 16-byte vectors, 16-byte aligned rows); a row that ends inside a unit
    zeroes the lanes past its end (their A and B fragments), rows past N read row N - 1 and are dropped.
Per 16-row tile and unit (1 KB of weight) a thread issues 2 cp.async, 2 shared loads and 2 mmas per column tile,
plus one x load per column tile for the warp's R tiles: the loop is far below the issue rate, so what decides the
speed is the bytes in flight (ring depth, warps in the grid: KSPLIT) and the DRAM access pattern (U, R), which the
lab sweeps. Rows of x beyond MAX_ROWS go to MLX's matmul (they need a real GEMM).

Numerics: products of bf16 are exact in float32, summed in float32 by the tensor cores (16 products a slot, then
the accumulator: ~1e-6 relative for K = 4096-10944); the K parts and the bias are summed in float32 and each output
is rounded ONCE to bf16 (2^-9 relative at most, ~1.5e-3 relative Frobenius for random data). The tests compare
against the float32 product of the same bf16 operands (tests/kernels/test_bf16_gemv.py).

Routing (kernels/skinny_gemm.skinny_matmul, the "matmul.skinny" registry entry that FusedLinear and block.linear
use for float weights): OFF by default. With XLSTM_MLX_BF16_GEMV=1 the kernel runs for bf16 operands it applies
to exactly where faster_than_mlx says so, i.e. where H200 below has an entry whose kernel time is under MLX's.
Why off: the H200 lab (benchmarks/gpu_bf16_gemv_lab.py, dependent chains, 2026-12-02) times it faster than MLX's
matmul for 9 of 15 (rows bucket, matrix) pairs (1.07-1.43x; q|k|v|o at every row count, the FFN down and out_proj
from 2 rows on), but the 7B decode did not get faster end to end: batch 1 230.7 / 223.5 tok/s with it against
234.2 / 237.6 without, batch 16 2,334 / 2,334 against 1,850 / 2,444, batch 64 equal (alternating runs, one
machine; benchmarks/results/gpu_h200_2026-12-02d.md). At one row it only takes q|k|v|o (33.4 against 35.8 us),
and the step lost more than those 2.4 us x 32: what a kernel costs inside the step is not yet what the lab
measures (an Nsight timeline of the step is the next question). Its best configs at one row move ~3.0 TB/s:
short of the 3.6 TB/s the decode issue asks for.
"""

from __future__ import annotations

import os

import mlx.core as mx

from xlstm_mlx.errors import UsageError
from xlstm_mlx.kernels.cuda_common import SMS, VEC_HEADER, as_rows, cuda_available, from_rows

MAX_ROWS = 16  # x rows the kernel takes (decode batch): two 8-column mma tiles; beyond, MLX's matmul
VEC = 8  # bf16 values a 16-byte vector: K must be a multiple of it
SMEM_LIMIT = 48 * 1024  # static shared memory per block: all mx.fast.cuda_kernel offers (no dynamic smem)

_HEADER = VEC_HEADER + r"""
// The PTX the kernel uses, behind small wrappers: the real instructions under NVRTC / nvcc, and a host build's
// stand-ins (tests/kernels/host_cuda.py: host_cp_async16, host_mma_16816, host_syncwarp) otherwise, which
// implement the same documented semantics with one std::thread per CUDA thread.
#if defined(__CUDACC__)
// 16 bytes global -> shared, asynchronous, cached in L2 only (.cg): the weight is read once
__device__ __forceinline__ void bg_cp_async16(void* dst, const void* src) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n"
                 :: "r"(static_cast<unsigned>(__cvta_generic_to_shared(dst))), "l"(src) : "memory");
}
__device__ __forceinline__ void bg_cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
// at most PENDING of this thread's commit groups still in flight; the landed ones are visible to this thread
template <int PENDING>
__device__ __forceinline__ void bg_cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" :: "n"(PENDING) : "memory");
}
// d = a (16x16 bf16, row) * b (16x8 bf16, col) + c (16x8 float32), the PTX fragment layouts
__device__ __forceinline__ void bg_mma(float* d, const unsigned* a, const unsigned* b) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
#define bg_syncwarp() __syncwarp()
#else
inline void bg_cp_async16(void* dst, const void* src) { host_cp_async16(dst, src); }
inline void bg_cp_async_commit() {}
template <int PENDING> inline void bg_cp_async_wait() {}
inline void bg_mma(float* d, const unsigned* a, const unsigned* b) { host_mma_16816(d, a, b, d); }
#define bg_syncwarp() host_syncwarp()
#endif
"""

_SOURCE = r"""
    constexpr int SPAN = 4 * U;                       // 16-byte vectors of a row per pipeline step
    constexpr int STAGE = R * 2 * U * 32;             // uint4 per ring stage: R tiles x 2 halves x U units x 32 lanes
    constexpr int RING = S * STAGE;
    constexpr int RP = NT * 8 + 1;                    // pitch of a row of partial sums (floats; odd)
    constexpr int RED = (R * 16 * RP + 3) / 4;        // uint4: R tiles x 16 rows x RP floats
    constexpr int PER_WARP = RING > RED ? RING : RED;
    constexpr int ROWS_BLK = 16 * R * (WARPS / KSPLIT);
    __shared__ __align__(128) uint4 smem[WARPS * PER_WARP];

    const int M = x_shape[0];                         // rows of x (at most NT * 8)
    const int K = x_shape[1];
    const int N = w_shape[0];
    const int CV = K / 8;                             // 16-byte vectors a row
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int g = lane / 4, c = lane % 4;             // the mma fragments' group and thread-in-group
    const int wn = warp / KSPLIT, wk = warp % KSPLIT;
    const int row0 = blockIdx.x * ROWS_BLK + wn * 16 * R;
    uint4* ring = smem + warp * PER_WARP;
    const int nsteps = (CV + SPAN - 1) / SPAN;        // steps of a row; this warp takes wk, wk + KSPLIT, ...
    const int my_n = wk < nsteps ? (nsteps - wk + KSPLIT - 1) / KSPLIT : 0;

    // this thread's weight rows (g and g + 8 of each tile; past N: row N - 1, dropped at the end), at vector c
    const uint4* wrow[R][2];
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
        for (int hf = 0; hf < 2; ++hf)
            wrow[r][hf] = reinterpret_cast<const uint4*>(w) + (size_t)min(row0 + 16 * r + 8 * hf + g, N - 1) * CV + c;
    // this thread's x row in each column tile (column g), at vector c; a padding column reads nothing (zeros)
    const uint4* xrow[NT];
    bool xlive[NT];
#pragma unroll
    for (int t = 0; t < NT; ++t) {
        xlive[t] = t * 8 + g < M;
        xrow[t] = reinterpret_cast<const uint4*>(x) + (size_t)(xlive[t] ? t * 8 + g : 0) * CV + c;
    }

    // the weights of the warp's step i into ring stage i % S: thread (g, c) copies vector c of each unit for rows
    // g and g + 8 of each tile into slot `lane` of its (tile, half, unit) block of 32 (consecutive lanes:
    // consecutive 16 bytes); u innermost, so the two halves of a row's 128-byte line at U = 2 go out back to back
    auto issue = [&](int i) {
        if (i < my_n) {
            const int v0 = (wk + i * KSPLIT) * SPAN;
            uint4* st = ring + (i % S) * STAGE;
#pragma unroll
            for (int r = 0; r < R; ++r)
#pragma unroll
                for (int hf = 0; hf < 2; ++hf)
#pragma unroll
                    for (int u = 0; u < U; ++u)
                        if (v0 + 4 * u + c < CV)
                            bg_cp_async16(st + ((r * 2 + hf) * U + u) * 32 + lane, wrow[r][hf] + v0 + 4 * u);
        }
        bg_cp_async_commit();                         // empty groups too: the wait below counts groups
    };

    float acc[R][NT][4];
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
        for (int t = 0; t < NT; ++t)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[r][t][e] = 0.f;

    // XAHEAD: step i + 1's x loaded while step i computes (its L1/L2 round trip off the step's critical path);
    // else each unit's x at its use. One 16-byte load a unit and column tile; zeros past the row's end and for
    // a padding column
    constexpr int XU = XAHEAD ? U : 1;
    const uint4 zero = make_uint4(0u, 0u, 0u, 0u);
    uint4 Xnext[XU][NT];
    auto load_x = [&](int i) {                        // step i's x into Xnext (XAHEAD only)
        const int v0 = (wk + i * KSPLIT) * SPAN;
#pragma unroll
        for (int u = 0; u < XU; ++u)
#pragma unroll
            for (int t = 0; t < NT; ++t)
                Xnext[u][t] = (i < my_n && v0 + 4 * u + c < CV && xlive[t]) ? __ldg(xrow[t] + v0 + 4 * u) : zero;
    };
    if constexpr (XAHEAD) load_x(0);

#pragma unroll
    for (int i = 0; i < S - 1; ++i) issue(i);
    for (int i = 0; i < my_n; ++i) {
        // every lane is done reading stage (i - 1) % S (its own copies: program order already says so; this
        // also keeps the warp converged for the mmas) before the next copies go into it
        bg_syncwarp();
        issue(i + S - 1);
        uint4 Xstep[XU][NT];
        if constexpr (XAHEAD) {
#pragma unroll
            for (int u = 0; u < XU; ++u)
#pragma unroll
                for (int t = 0; t < NT; ++t) Xstep[u][t] = Xnext[u][t];
            load_x(i + 1);
        }
        bg_cp_async_wait<S - 1>();                    // this thread's copies of step i have landed
        const int v0 = (wk + i * KSPLIT) * SPAN;
        const uint4* st = ring + (i % S) * STAGE;
#pragma unroll
        for (int u = 0; u < U; ++u) {
            if (v0 + 4 * u < CV) {                    // warp-uniform: the unit has at least one vector
                const int v = v0 + 4 * u + c;
                const bool live = v < CV;             // a row that ends inside the unit: zeros past its end
                uint4 X[NT];
#pragma unroll
                for (int t = 0; t < NT; ++t)
                    X[t] = XAHEAD ? Xstep[XAHEAD ? u : 0][t] : (live && xlive[t]) ? __ldg(xrow[t] + v0 + 4 * u) : zero;
                uint4 lo[R], hi[R];
#pragma unroll
                for (int r = 0; r < R; ++r) {
                    lo[r] = live ? st[((r * 2 + 0) * U + u) * 32 + lane] : zero;
                    hi[r] = live ? st[((r * 2 + 1) * U + u) * 32 + lane] : zero;
                }
                // k order: mma 0 takes words 0, 1 of the vector (k-slots 2c, 2c+1 and 2c+8, 2c+9), mma 1 words
                // 2, 3; A and B read the same words, so each product pairs a weight with its own x
#pragma unroll
                for (int r = 0; r < R; ++r) {
                    const unsigned a0[4] = {lo[r].x, hi[r].x, lo[r].y, hi[r].y};
                    const unsigned a1[4] = {lo[r].z, hi[r].z, lo[r].w, hi[r].w};
#pragma unroll
                    for (int t = 0; t < NT; ++t) {
                        const unsigned b0[2] = {X[t].x, X[t].y};
                        const unsigned b1[2] = {X[t].z, X[t].w};
                        bg_mma(acc[r][t], a0, b0);
                        bg_mma(acc[r][t], a1, b1);
                    }
                }
            }
        }
    }

    // partial sums -> this warp's shared memory (its ring is free: no copy is pending), then the block's sum.
    // Accumulator e of tile (r, t): weight row 16 r + g + 8 (e / 2), x row t * 8 + 2 c + e % 2
    bg_cp_async_wait<0>();
    bg_syncwarp();
    float* red = reinterpret_cast<float*>(ring);
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
        for (int t = 0; t < NT; ++t)
#pragma unroll
            for (int e = 0; e < 4; ++e)
                red[(r * 16 + g + 8 * (e >> 1)) * RP + t * 8 + 2 * c + (e & 1)] = acc[r][t][e];
    __syncthreads();
    for (int o = threadIdx.x; o < ROWS_BLK * M; o += WARPS * 32) {
        const int rb = o % ROWS_BLK, m = o / ROWS_BLK;   // consecutive threads: consecutive outputs n
        const int n = blockIdx.x * ROWS_BLK + rb;
        const int gw = rb / (16 * R), rr = rb % (16 * R);
        float s = 0.f;
#pragma unroll
        for (int kp = 0; kp < KSPLIT; ++kp)
            s += reinterpret_cast<const float*>(smem + (gw * KSPLIT + kp) * PER_WARP)[rr * RP + m];
        if (n < N) {
            if (HAS_BIAS) s += xl_float(bias[n]);
            xl_set(y + (size_t)m * N + n, s);
        }
    }
"""

_kernel_cache = None


def _kernel():
    global _kernel_cache
    if _kernel_cache is None:
        _kernel_cache = mx.fast.cuda_kernel(
            name="xlstm_bf16_gemv_mma",
            input_names=["x", "w", "bias"],
            output_names=["y"],
            source=_SOURCE,
            header=_HEADER,
        )
    return _kernel_cache


def bf16_gemv_ref(x: mx.array, w: mx.array, bias: mx.array | None = None) -> mx.array:
    """MLX's matmul, as nn.Linear computes it (the same as skinny_gemm.skinny_matmul_ref)."""
    return x @ w.T if bias is None else mx.addmm(bias, x, w.T)


def _rows(x: mx.array) -> int:
    return x.size // x.shape[-1] if x.ndim and x.shape[-1] else 0


def applies(x: mx.array, w: mx.array, bias: mx.array | None = None) -> bool:
    """Whether the CUDA kernel can run for these operands: MLX's CUDA backend; x, w (and bias) bfloat16; w [N, K]
    with K = x.shape[-1] a multiple of 8 (whole 16-byte vectors: MLX's buffers and their row slices are then
    16-byte aligned); 1..MAX_ROWS rows of x; bias None or [N]. Any N (a partial 16-row tile is masked)."""
    if not cuda_available() or x.ndim < 1 or w.ndim != 2 or x.dtype != mx.bfloat16 or w.dtype != mx.bfloat16:
        return False
    if bias is not None and (bias.dtype != mx.bfloat16 or bias.shape != (w.shape[0],)):
        return False
    K = x.shape[-1]
    return K == w.shape[1] and K >= VEC and K % VEC == 0 and w.shape[0] >= 1 and 1 <= _rows(x) <= MAX_ROWS


TARGET_WARPS = 8 * SMS  # warps wanted in the grid: ~8 a multiprocessor, each with (S - 1) steps of bytes in flight

# The configurations one lab run sweeps (benchmarks/gpu_bf16_gemv_lab.py), all tested on the GPU
# (tests/kernels/test_bf16_gemv.py). R: 16-row tiles a warp; U: 4-vector units a step (a step is R x U KB of
# weight a warp); S: ring stages (S - 1 steps in flight a warp); KSPLIT: warps of a block splitting K; WARPS a
# block. The first six are what default_config's rule picks for the 7B decode matrices (R=1 U=2 to 8 rows, R=2
# U=1 beyond, KSPLIT by the grid); the last two a deeper ring in smaller steps and four tiles a warp (x reuse
# at 16 rows). Shared memory a block: WARPS x S x R x U KB (32-48 KB here, of the 48 KB limit).
SWEEP_CONFIGS = [
    dict(R=1, U=2, S=4, KSPLIT=1, WARPS=4),
    dict(R=1, U=2, S=4, KSPLIT=2, WARPS=4),
    dict(R=1, U=2, S=4, KSPLIT=4, WARPS=4),
    dict(R=2, U=1, S=4, KSPLIT=1, WARPS=4),
    dict(R=2, U=1, S=4, KSPLIT=2, WARPS=4),
    dict(R=2, U=1, S=4, KSPLIT=4, WARPS=4),
    dict(R=1, U=1, S=6, KSPLIT=4, WARPS=8),
    dict(R=4, U=1, S=3, KSPLIT=2, WARPS=4),
    # more warps in the grid for one kernel alone (a decode step runs its products one after another): K split
    # 8 ways over 8-warp blocks, and a deep ring
    dict(R=1, U=1, S=4, KSPLIT=8, WARPS=8),
    dict(R=1, U=2, S=3, KSPLIT=4, WARPS=8),
    dict(R=1, U=1, S=8, KSPLIT=2, WARPS=4),
]

# What the H200 lab measured (benchmarks/gpu_bf16_gemv_lab.py prints this table from its run, in this format):
# (rows bucket, N, K) -> (best config of SWEEP_CONFIGS, its us per call, MLX matmul's us per call). Rows bucket: 1;
# 4 for 2..8 rows (the kernel takes rows 2..8 in one 8-column tile: the same kernel and bytes as 4 rows); 16 for
# 9..16. From the session-8 lab run (benchmarks/results/gpu_bf16_gemv_lab_h200_s8.json: dependent chains; the
# session's first run, with chains of independent calls, is gpu_bf16_gemv_lab_h200_s8_independent.json).
H200: dict[tuple[int, int, int], tuple[dict, float, float]] = {
    (1, 12288, 4096): (dict(R=1, U=2, S=4, KSPLIT=4, WARPS=4), 33.4, 35.8),
    (4, 12288, 4096): (dict(R=1, U=1, S=6, KSPLIT=4, WARPS=8), 36.0, 46.0),
    (16, 12288, 4096): (dict(R=1, U=2, S=4, KSPLIT=4, WARPS=4), 46.2, 55.9),
    (1, 21888, 4096): (dict(R=1, U=1, S=4, KSPLIT=8, WARPS=8), 53.1, 52.3),
    (4, 21888, 4096): (dict(R=1, U=1, S=4, KSPLIT=8, WARPS=8), 57.8, 63.6),
    (16, 21888, 4096): (dict(R=1, U=1, S=4, KSPLIT=8, WARPS=8), 73.5, 60.3),
    (1, 4096, 10944): (dict(R=1, U=1, S=4, KSPLIT=8, WARPS=8), 47.4, 35.4),
    (4, 4096, 10944): (dict(R=1, U=1, S=4, KSPLIT=8, WARPS=8), 39.5, 48.0),
    (16, 4096, 10944): (dict(R=1, U=1, S=4, KSPLIT=8, WARPS=8), 61.7, 44.5),
    (1, 4096, 4096): (dict(R=1, U=1, S=4, KSPLIT=8, WARPS=8), 27.0, 18.4),
    (4, 4096, 4096): (dict(R=1, U=1, S=4, KSPLIT=8, WARPS=8), 28.8, 41.1),
    (16, 4096, 4096): (dict(R=1, U=1, S=4, KSPLIT=8, WARPS=8), 33.5, 43.4),
    (1, 50304, 4096): (dict(R=1, U=1, S=4, KSPLIT=8, WARPS=8), 108.7, 97.1),
    (4, 50304, 4096): (dict(R=1, U=1, S=4, KSPLIT=8, WARPS=8), 107.4, 117.0),
    (16, 50304, 4096): (dict(R=1, U=1, S=4, KSPLIT=8, WARPS=8), 146.3, 101.5),
}

# The measured best configuration per (rows bucket, N, K), from H200.
MEASURED: dict[tuple[int, int, int], dict] = {key: cfg for key, (cfg, _, _) in H200.items()}

# Kernels ALONE under Nsight Compute (benchmarks/probes/gemv_ncu_probe.py --kernel bf16: the median of 2
# marker-bracketed calls after a compile call, gpu__time_duration summed over the call's kernels), ours per config
# tag ("R1U1S4K8W8", suffix "A1": x loaded a step ahead, XAHEAD) and "mlx" (MLX's matmul, whatever kernels it
# launches for the call): (rows bucket, N, K) -> {tag: us}. Where a shape has an entry, default_config takes its
# fastest tag of ours and faster_than_mlx compares that with "mlx"; the H200 chains above serve the rest.
# Session 14 (one NVIDIA H200, 2026-12-03; benchmarks/results/gpu_h200_2026-12-03c.md, gpu_h200_s14_ncu_bf16.md):
# x a step ahead made 16 rows 1.2-1.9x faster (FFN down 59.3 -> 31.5 us), and still MLX's matmul (cuBLAS) was
# faster alone on 13 of 15 shapes: ours wins only out_proj at 4 and 16 rows.
ALONE_H200: dict[tuple[int, int, int], dict[str, float]] = {
    (1, 12288, 4096): {"R1U2S4K4W4A0": 29.36, "R1U2S4K4W4A1": 28.4, "R1U1S4K8W8A0": 34.1, "R1U1S4K8W8A1": 33.36, "mlx": 26.69},
    (4, 12288, 4096): {"R1U1S6K4W8A0": 31.25, "R1U1S6K4W8A1": 29.28, "R1U1S4K8W8A0": 34.0, "R1U1S4K8W8A1": 33.3, "mlx": 28.42},
    (16, 12288, 4096): {"R1U2S4K4W4A0": 51.3, "R1U2S4K4W4A1": 30.86, "R1U1S4K8W8A0": 45.97, "R1U1S4K8W8A1": 32.0, "mlx": 28.5},
    (1, 21888, 4096): {"R1U1S4K8W8A0": 49.17, "R1U1S4K8W8A1": 49.54, "mlx": 44.61},
    (4, 21888, 4096): {"R1U1S4K8W8A0": 49.42, "R1U1S4K8W8A1": 50.3, "mlx": 44.85},
    (16, 21888, 4096): {"R1U1S4K8W8A0": 72.51, "R1U1S4K8W8A1": 55.5, "mlx": 46.19},
    (1, 4096, 10944): {"R1U1S4K8W8A0": 37.9, "R1U1S4K8W8A1": 30.05, "mlx": 29.7},
    (4, 4096, 10944): {"R1U1S4K8W8A0": 37.12, "R1U1S4K8W8A1": 29.66, "mlx": 29.23},
    (16, 4096, 10944): {"R1U1S4K8W8A0": 59.55, "R1U1S4K8W8A1": 32.37, "mlx": 28.83},
    (1, 4096, 4096): {"R1U1S4K8W8A0": 14.85, "R1U1S4K8W8A1": 12.99, "mlx": 10.98},
    (4, 4096, 4096): {"R1U1S4K8W8A0": 14.99, "R1U1S4K8W8A1": 13.31, "mlx": 15.14},
    (16, 4096, 4096): {"R1U1S4K8W8A0": 23.26, "R1U1S4K8W8A1": 14.48, "mlx": 15.39},
    (1, 50304, 4096): {"R1U1S4K8W8A0": 109.82, "R1U1S4K8W8A1": 112.34, "mlx": 96.08},
    (4, 50304, 4096): {"R1U1S4K8W8A0": 113.7, "R1U1S4K8W8A1": 112.75, "mlx": 104.62},
    (16, 50304, 4096): {"R1U1S4K8W8A0": 143.7, "R1U1S4K8W8A1": 116.78, "mlx": 102.61},
}


def parse_tag(tag: str) -> dict:
    """"R1U1S4K8W8" -> dict(R=1, U=1, S=4, KSPLIT=8, WARPS=8); a suffix "A1" / "A0" sets XAHEAD."""
    import re
    m = re.fullmatch(r"R(\d+)U(\d+)S(\d+)K(\d+)W(\d+)(?:A([01]))?", tag)
    if m is None:
        raise ValueError(f"not a config tag: {tag!r}")
    cfg = dict(zip(("R", "U", "S", "KSPLIT", "WARPS"), map(int, m.groups()[:5])))
    if m.group(6) is not None:
        cfg["XAHEAD"] = int(m.group(6))
    return cfg


def _alone_best(rows: int, n: int, k: int) -> tuple[str, float, float] | None:
    """(our fastest tag, its us, MLX's us) from ALONE_H200 for this shape's row bucket, or None."""
    times = ALONE_H200.get((bucket(rows), n, k))
    if not times:
        return None
    ours = {t: us for t, us in times.items() if t != "mlx"}
    tag = min(ours, key=ours.get)
    return tag, ours[tag], times.get("mlx", float("inf"))


def bucket(rows: int) -> int:
    """The measured row count standing for `rows` (1, 4 for 2..8, 16 for 9..16; rows itself beyond)."""
    return 1 if rows <= 1 else 4 if rows <= 8 else 16 if rows <= 16 else rows


def faster_than_mlx(rows: int, n: int, k: int) -> bool:
    """True only where the H200 lab timed the kernel faster than MLX's matmul for this (rows bucket, N, K);
    False for every shape it did not measure (with the table empty: everywhere)."""
    alone = _alone_best(rows, n, k)
    if alone is not None:
        return alone[1] < alone[2]
    entry = H200.get((bucket(rows), n, k))
    return entry is not None and entry[1] < entry[2]


def default_config(rows: int, n: int, k: int) -> dict:
    """The configuration for `rows` rows of x, n outputs and k inputs: the measured one where MEASURED has it, else
    the rule: up to 8 rows (one column tile) R=1 tile a warp in steps of U=2 units (128 contiguous bytes of each
    row: whole cache lines); at 9-16 rows R=2, U=1 (each x load serves two tiles: x's L1 traffic at 16 rows is as
    large as the weight's at R=1); S=4 stages (3 steps, 6 KB of a warp's weight in flight at R x U = 2), blocks
    of 4 warps (32 KB of shared memory), and the smallest split of K over the block's warps (1, 2, 4) that puts
    TARGET_WARPS warps in the grid (so that ~5-6 MB of weight is in flight over the chip: the bandwidth times
    the ~1-1.5 us loaded latency), as long as each warp keeps at least 2 S steps."""
    alone = _alone_best(rows, n, k)
    if alone is not None:
        return parse_tag(alone[0])
    cfg = MEASURED.get((bucket(rows), n, k))
    if cfg is not None:
        return dict(cfg)
    r, u = (1, 2) if rows <= 8 else (2, 1)
    s, warps = 4, 4
    tiles = -(-n // (16 * r))                  # warp tasks before the split
    vectors = -(-k // VEC)                     # 16-byte vectors a row
    steps = -(-vectors // (4 * u))
    ksplit = 1
    for ks in (1, 2, 4):
        if ks > 1 and steps < 2 * s * ks:
            break
        ksplit = ks
        if -(-tiles // (warps // ks)) * warps >= TARGET_WARPS:
            break
    return dict(R=r, U=u, S=s, KSPLIT=ksplit, WARPS=warps)


def column_tiles(rows: int) -> int:
    """8-column mma tiles for `rows` rows of x (a template constant: rows 1..8 share one kernel)."""
    return -(-rows // 8)


def smem_bytes(cfg: dict, rows: int) -> int:
    """The kernel's static shared memory for this configuration (the constexprs at the top of _SOURCE)."""
    R, U, S, W = cfg["R"], cfg["U"], cfg["S"], cfg["WARPS"]
    red = -(-(R * 16 * (column_tiles(rows) * 8 + 1)) // 4)
    return 16 * W * max(S * R * 2 * U * 32, red)


def config_problem(cfg: dict, rows: int) -> str | None:
    """Why the kernel cannot take this configuration for `rows` rows of x, or None."""
    R, U, S, KS, W = (cfg.get(k) for k in ("R", "U", "S", "KSPLIT", "WARPS"))
    if R not in (1, 2, 4) or U not in (1, 2, 4) or S not in range(2, 9) or W not in (1, 2, 4, 8):
        return "needs R and U in 1, 2, 4, S in 2..8, WARPS in 1, 2, 4, 8"
    if KS not in (1, 2, 4, 8) or W % KS:
        return "KSPLIT must divide WARPS"
    if cfg.get("XAHEAD") not in (None, 0, 1, False, True):
        return "needs XAHEAD (x loaded a step ahead) 0 or 1"
    nbytes = smem_bytes(cfg, rows)
    if nbytes > SMEM_LIMIT:
        return f"needs {nbytes} bytes of shared memory, over the {SMEM_LIMIT} of a static block: lower S, U, R or WARPS"
    return None


def check_config(cfg: dict, rows: int) -> None:
    """UsageError unless the configuration is one the kernel is written for (config_problem)."""
    problem = config_problem(cfg, rows)
    if problem:
        raise UsageError(f"bf16 GEMV config {cfg}: {problem}")


XAHEAD_ENV = "XLSTM_MLX_BF16_XAHEAD"  # an A/B switch for measurements: 0 or 1 for every call


def x_ahead(cfg: dict) -> bool:
    """XAHEAD: whether a warp loads step i + 1's x (U x NT 16-byte loads into registers) while step i computes,
    instead of each unit's at its use (one L1/L2 round trip a step on the critical path: x at 16 rows is 128-350
    KB, more than L1 holds next to the rings). $XLSTM_MLX_BF16_XAHEAD where set (an A/B switch: every call),
    else cfg["XAHEAD"] (the kernel-alone table's tag, or the caller's), else off."""
    env = os.environ.get(XAHEAD_ENV, "")
    if env:
        if env not in ("0", "1"):
            raise UsageError(f"{XAHEAD_ENV}={env!r}: set it to 0 or 1 (whether the bf16 GEMV loads x a step ahead), "
                             "or unset it for the default")
        return env == "1"
    return bool(cfg.get("XAHEAD", False))


def kernel_constants(rows: int, has_bias: bool, cfg: dict) -> list:
    """The kernel's template constants, in order (the tests' host build uses the same list)."""
    return [("NT", column_tiles(rows)), ("R", cfg["R"]), ("U", cfg["U"]), ("S", cfg["S"]),
            ("KSPLIT", cfg["KSPLIT"]), ("WARPS", cfg["WARPS"]), ("XAHEAD", x_ahead(cfg)), ("HAS_BIAS", has_bias)]


def launch_blocks(n: int, cfg: dict) -> int:
    return -(-n // (16 * cfg["R"] * (cfg["WARPS"] // cfg["KSPLIT"])))


def bf16_gemv_cuda(x: mx.array, w: mx.array, bias: mx.array | None = None, *, R: int | None = None,
                   U: int | None = None, S: int | None = None, KSPLIT: int | None = None,
                   WARPS: int | None = None, XAHEAD: bool | None = None) -> mx.array:
    """The CUDA kernel (no fallback: callers check `applies`); R / U / S / KSPLIT / WARPS / XAHEAD override the
    configuration default_config (and x_ahead) picks. x [..., K], w [N, K], bias [N] or None -> [..., N] bf16."""
    K, N = x.shape[-1], w.shape[0]
    lead = x.shape[:-1]
    x2 = as_rows(x)
    M = x2.shape[0]
    cfg = default_config(M, N, K)
    for name, val in (("R", R), ("U", U), ("S", S), ("KSPLIT", KSPLIT), ("WARPS", WARPS), ("XAHEAD", XAHEAD)):
        if val is not None:
            cfg[name] = val
    check_config(cfg, M)
    b = bias if bias is not None else w  # never read without HAS_BIAS; no extra allocation or launch
    (y,) = _kernel()(
        inputs=[x2, w, b],
        template=kernel_constants(M, bias is not None, cfg),
        grid=(launch_blocks(N, cfg) * cfg["WARPS"] * 32, 1, 1),
        threadgroup=(cfg["WARPS"] * 32, 1, 1),
        output_shapes=[(M, N)],
        output_dtypes=[mx.bfloat16],
    )
    return from_rows(y, lead)


def label() -> str:
    n = sum(1 for key in H200 if faster_than_mlx(key[0], key[1], key[2]))
    return (f"CUDA bf16 GEMV (mx.fast.cuda_kernel, tensor-core mma, <= {MAX_ROWS} rows) for the {n} shapes the "
            "H200 lab timed it faster than MLX's matmul" if n else
            "no shape measured faster than MLX's matmul yet (the bf16 GEMV's H200 table is empty)")
