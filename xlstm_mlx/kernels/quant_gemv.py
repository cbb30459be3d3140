"""y = x @ dequantize(w).T (+ bias) for 1-16 rows of x and MLX's affine 4-/8-bit weights: a bandwidth-bound CUDA kernel.

At decode each quantized matmul reads its packed weight once for a handful of rows, so its floor is the packed
bytes (weight + scales + biases) over the memory bandwidth (~7.5 us for the 28 MB of the 7B 4-bit 4096->12288 on
an H200). At 8-16 rows one float32 FMA per weight and row on the CUDA cores already costs more than the bytes
(16 rows of 4096->12288: 0.8 G FMAs, ~24 us at the H200's 67 TFLOPS), so this kernel multiplies on the tensor
cores (mma.sync m16n8k16, bf16 in, float32 accumulation), which also serve one row at no extra cost.

    quantized_matmul_ref(x, w, scales, biases, bias, group_size, bits, mode)   what nn.QuantizedLinear computes
    quantized_gemv_cuda(...)   the CUDA kernel (no fallback: callers check `applies`)
    quantized_gemv(...)        the kernel where it applies, else the reference

MLX's packing (the `convert -q` layout, mode "affine"), checked against mx.dequantize by
tests/kernels/test_quant_gemv.py (`unpack_codes`, a numpy model of exactly what the kernel reads):
  - w is uint32 [N, K * bits / 32]; word i of row n holds the 32 / bits consecutive weights k = i * 32/bits + j,
    j = 0 .. 32/bits - 1, weight j in bits [bits * j, bits * (j + 1)): LOWEST bits first (for 4-bit, the low
    nibble of the word is the first weight of the eight);
  - scales and biases are [N, K / group_size] in the weight's float dtype (bf16 after `convert -q`); weight k of
    row n is q * scales[n, k // group_size] + biases[n, k // group_size].
So a 16-byte vector of the packed row (4 words) holds VALS = 128 / bits consecutive weights (32 at 4-bit, 16 at
8-bit), always inside one group (group sizes 32, 64, 128 are multiples of those counts).

The sum, per 16-byte vector v of a row (codes q_k, its group's scale s and bias b):
    sum_{k in v} (q_k s + b) x_k = s * (sum_{k in v} q_k x_k) + b * (sum_{k in v} x_k)
The integer codes q_k (< 256) are exact in bf16, so the tensor cores compute the first sum with exact products
and float32 accumulation; the second (x's sum over the vector) is one more mma against a matrix of ones; the two
are folded into the float32 output accumulator with two FMAs per vector. No weight is ever rounded.

Kernel design:
  - mma tile: 16 weight rows (the mma's M) x 16 k; its N (8 columns) are the rows of x: one tile for M <= 8,
    two for M <= 16. A float32 x is split exactly into three bf16 parts (hi + lo + lo2 = x for normal floats:
    8 + 8 + 8 significand bits), each its own column, summed at the end: so 3M columns;
  - a warp owns R tiles of 16 consecutive rows and a KSPLIT-th of the row's 16-byte vectors, in steps of U units
    of 4 vectors; a block is WARPS warps (WARPS / KSPLIT row groups x KSPLIT K-parts), the K-parts summed through
    shared memory at the end, with the bias, and rounded once to x's dtype;
  - the weights stream global -> shared with cp.async.cg (16 bytes a thread, past L1), S steps in flight per
    warp (a ring of S stages; no block barrier in the loop: each warp waits for its own copies, then __syncwarp);
  - thread (g, c) of a warp (g = lane / 4, c = lane % 4) copies vector c of a unit for rows g and g + 8; then
    ldmatrix.x4 hands it word c of each of the unit's 4 vectors (a 4x4 transpose in the quad): so one mma's 16
    k-slots (4 per thread of a quad) all come from ONE vector, hence one group, whatever the group size (the
    copy swizzles the 16-byte slots so that neither the copy nor ldmatrix has bank conflicts);
  - the k order inside an mma is free as long as weights and x agree: 4-bit codes become bf16 pairs (code i,
    code i + 4) of a word with one shift and one lop3 (mask 0x000F000F | 0x43004300: the bf16 128 + q, exact),
    plus one bf16x2 fma (- 128, exact) for a float32 x; with bf16 x the 128 + q go into the mma as they are and
    the fold takes 128 * s * sum(x) off through the bias (b - 128 s). x's 8 values of the word are loaded with
    one 16-byte __ldg and paired the same way by two byte_perms a register. 8-bit codes go through float32
    (byte_perm into 0x4B0000qq = 2^23 + q, minus 2^23, exact) and one cvt to a bf16 pair, in natural order,
    against x's 4 values as they lie;
  - the sums of a group (or of its part in one step) are folded into the output accumulator once:
    acc += s * sum(q x) + b * sum(x), two FMAs an accumulator;
  - x (a few KB to 128 KB, read by every warp of a multiprocessor at about the same k: the K split interleaves
    steps) comes through L1 with __ldg, a unit's four loads issued before the first is used (XPRE = 1, x_prefetch:
    each used at once, they were four dependent L1/L2 round trips a step; 1.1-2.0x faster kernels on the H200,
    benchmarks/results/gpu_h200_2026-12-03b.md), or (XPRE = 2) a whole step's loads one step ahead, into
    registers, so that their round trip overlaps the previous step's work; the scales and biases of a step (16 rows x the step's groups) with
    coalesced __ldg SD steps ahead into registers (the step loop unrolled by SD: a register set per step in
    flight; scale_depth), then into per-warp shared memory as float32 (scale, bias) pairs;
  - the mask and the ones are kept in registers through a shuffle (xq_keep): ptxas otherwise re-materializes
    each constant before every use. The inner loop is ~40-57 sm_90 instructions per 16-row tile and 16-byte
    vector column (256 bytes of weight) with R=2, 1-16 rows, 4-bit; ~67 fit the issue slots at 4 TB/s.
Rows of x beyond MAX_ROWS go to MLX (quantized_matmul_ref): more rows need a real GEMM.

Numerics against the reference (MLX dequantizes w in float32, rounding q * s and then + b, and sums in float32):
the kernel never rounds a weight; its products q_k x_k are exact, the per-group sums are float32 (tensor-core
accumulation), and s * sum(q x) + b * sum(x) reassociates the per-weight sum; one rounding to x's dtype at the
end. So the output differs from quantized_matmul_ref by float32 rounding plus the reference's own per-weight
roundings: for weights q * s + b with q in [0, 2^bits) the two terms are each a few times the size of the group's
contribution (b ~ -2^(bits-1) s), so nothing cancels catastrophically; with bf16 x at 4 bits sum((128 + q) x)
is ~16x larger again. A numpy model of these float32 sums (per-16 products, group sums, the fold; K 4096, group
64, normal weights and x) is 3.3e-7 (relative Frobenius, against float64) with the exact codes and 3.7e-6 with
128 + q: both far below the output's own rounding to bf16 (~1e-3). A float32 x is exact in its three bf16 parts unless a part underflows (|x| < ~2^-110), far below
anything a decode step produces.
"""

from __future__ import annotations

import os

import mlx.core as mx
import numpy as np

from xlstm_mlx import env
from xlstm_mlx.errors import UsageError
from xlstm_mlx.kernels import quant_gemv_lab
from xlstm_mlx.kernels.add_rms_norm import THREADS as NORM_THREADS
from xlstm_mlx.kernels.add_rms_norm import TAIL_HEADER, AddNorm, tail_applies as norm_tail_applies
from xlstm_mlx.kernels.cuda_common import SMS, VEC_HEADER, as_rows, cuda_available, float_bits, from_rows

MAX_ROWS = 16  # x rows the kernel takes (decode batch): two 8-column mma tiles; beyond, MLX's quantized matmul
BITS = (4, 8)
GROUP_SIZES = (32, 64, 128)
DTYPES = (mx.bfloat16, mx.float32)  # x, scales, biases (and bias) share one of these
SMEM_LIMIT = 48 * 1024  # static shared memory per block: all mx.fast.cuda_kernel offers (no dynamic smem)

_HEADER = VEC_HEADER + r"""
// x's 16-byte loads: through L1's read-only path (__ldg), unless the includer defines XQ_X_LOAD first (a persistent
// kernel whose x was written by the same launch reads it through L2: kernels/decode_layer.py)
#ifndef XQ_X_LOAD
#define XQ_X_LOAD __ldg
#endif
// The PTX the kernel uses, behind small wrappers: the real instructions under NVRTC / nvcc, and a host build's
// stand-ins (tests/kernels/host_cuda.py: host_cp_async16, host_ldmatrix_x4, host_mma_16816) otherwise, which
// implement the same documented semantics with one std::thread per CUDA thread.
#if defined(__CUDACC__)
__device__ __forceinline__ unsigned xq_smem_addr(const void* p) {
    return static_cast<unsigned>(__cvta_generic_to_shared(p));
}
// 16 bytes global -> shared, asynchronous, cached in L2 only (.cg): the weight is read once
__device__ __forceinline__ void xq_cp_async16(void* dst, const void* src) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" :: "r"(xq_smem_addr(dst)), "l"(src) : "memory");
}
__device__ __forceinline__ void xq_cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int PENDING>
__device__ __forceinline__ void xq_cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" :: "n"(PENDING) : "memory");
}
// four 8x8 b16 matrices; lanes 8j..8j+7 give the 16-byte rows of matrix j; lane t receives in r[j] the 32-bit
// word t % 4 of row t / 4 of matrix j
__device__ __forceinline__ void xq_ldmatrix_x4(unsigned* r, const void* row) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(xq_smem_addr(row)) : "memory");
}
// d = a (16x16 bf16, row) * b (16x8 bf16, col) + c (16x8 float32), the PTX fragment layouts
__device__ __forceinline__ void xq_mma(float* d, const unsigned* a, const unsigned* b, const float* c) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%10, %11, %12, %13};\n"
        : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]),
          "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]));
}
// bf16 pair (128 + q0, 128 + q1) -> (q0, q1): u * 1 - 128, exact
__device__ __forceinline__ unsigned xq_minus128(unsigned u) {
    unsigned r;
    asm("fma.rn.bf16x2 %0, %1, %2, %3;\n" : "=r"(r) : "r"(u), "r"(0x3F803F80u), "r"(0xC300C300u));
    return r;
}
// (lo, hi) -> the bf16 pair, each rounded to nearest (cvt packs its FIRST operand into the upper half)
__device__ __forceinline__ unsigned xq_pack(float lo, float hi) {
    unsigned r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}
#define xq_syncwarp() __syncwarp()
// v, in a register ptxas cannot re-materialize: else it rebuilds a constant before every lop3 / mma that uses it,
// one more instruction each in the inner loop. A shuffle of a lane-varying value (v ^ lane, read from lane 0)
// is one it cannot fold (it folds a shuffle of a constant, and NVVM an __shfl_sync of one).
// (salt: different expressions for equal values, which need registers of their own, as an mma operand's four)
__device__ __forceinline__ unsigned xq_keep(unsigned v, int salt = 0) {
    return __shfl_sync(0xffffffffu, v ^ ((threadIdx.x & 31u) << salt), 0);
}
#else
inline unsigned xq_smem_addr(const void*) { return 0; }
inline void xq_cp_async16(void* dst, const void* src) { host_cp_async16(dst, src); }
inline void xq_cp_async_commit() {}
template <int PENDING> inline void xq_cp_async_wait() {}
inline void xq_ldmatrix_x4(unsigned* r, const void* row) { host_ldmatrix_x4(r, row); }
inline void xq_mma(float* d, const unsigned* a, const unsigned* b, const float* c) { host_mma_16816(d, a, b, c); }
inline unsigned xq_minus128(unsigned u) {
    const float lo = __bfloat162float(__nv_bfloat16{uint16_t(u & 0xFFFFu)}) - 128.0f;
    const float hi = __bfloat162float(__nv_bfloat16{uint16_t(u >> 16)}) - 128.0f;
    return unsigned(__float2bfloat16(lo).v) | (unsigned(__float2bfloat16(hi).v) << 16);
}
inline unsigned xq_pack(float lo, float hi) {
    return unsigned(__float2bfloat16(lo).v) | (unsigned(__float2bfloat16(hi).v) << 16);
}
#define xq_syncwarp() host_syncwarp()
inline unsigned xq_keep(unsigned v, int = 0) { return v; }
#endif

// 4-bit: the bf16 pair (code i, code i + 4) of a word (codes 0..7 in nibbles 0..7), exact; mask = 0x000F000F.
// SHIFTED: (128 + code i, 128 + code i + 4), also exact (the caller takes 128 * sum(x) off in float32)
template <bool SHIFTED>
__device__ __forceinline__ unsigned xq_pair4(unsigned word, int i, unsigned mask) {
    const unsigned biased = ((word >> (4 * i)) & mask) | 0x43004300u;
    return SHIFTED ? biased : xq_minus128(biased);
}
// 8-bit: code e (byte e) of a word as a float, exact: the bits 0x4B0000qq are the float 2^23 + q
__device__ __forceinline__ float xq_code8(unsigned word, int e) {
    return __uint_as_float(__byte_perm(word, 0x4B000000u, 0x7540u | unsigned(e))) - 8388608.0f;
}

// bf16 part p of a float32 x: x = part0 + part1 + part2 exactly (8 significand bits each, for normal floats)
__device__ __forceinline__ float xq_part(float f, int p) {
    const float hi = __uint_as_float(xq_pack(f, 0.f) << 16);
    if (p == 0) return hi;
    const float r1 = f - hi;                               // exact
    const float lo = __uint_as_float(xq_pack(r1, 0.f) << 16);
    return p == 1 ? lo : r1 - lo;                          // exact, and exactly a bf16
}

// The 8 (4-bit) or 4 (8-bit) x values of thread c's word of a vector, as the bf16 register pairs of the mma's B
// operand, in the k order the weights use: 4-bit: b[h] = {(x[2h], x[2h+4]), (x[2h+1], x[2h+5])}, h = 0, 1;
// 8-bit: b[0] = {(x[0], x[1]), (x[2], x[3])}. A float32 x gives its bf16 part p.
__device__ __forceinline__ void xq_bfrag4(const uint4& X, unsigned (*b)[2]) {
    b[0][0] = __byte_perm(X.x, X.z, 0x5410u);
    b[0][1] = __byte_perm(X.x, X.z, 0x7632u);
    b[1][0] = __byte_perm(X.y, X.w, 0x5410u);
    b[1][1] = __byte_perm(X.y, X.w, 0x7632u);
}
// A vector's x values as loaded (16 or 8 bytes of bf16, 32 or 16 of float32), then paired (xq_bfrag_raw): the
// two apart, so that a unit's four loads can be issued before the first is used (XPRE)
struct XRaw { uint4 a, e; };
template <int BITS>
__device__ __forceinline__ XRaw xq_xload(const __nv_bfloat16* p8) {
    XRaw r{};
    if constexpr (BITS == 4) {
        r.a = XQ_X_LOAD(reinterpret_cast<const uint4*>(p8));
    } else {
        const uint2 X = XQ_X_LOAD(reinterpret_cast<const uint2*>(p8));
        r.a.x = X.x;
        r.a.y = X.y;
    }
    return r;
}
template <int BITS>
__device__ __forceinline__ XRaw xq_xload(const float* pf) {
    XRaw r{};
    const uint4* v = reinterpret_cast<const uint4*>(pf);
    r.a = XQ_X_LOAD(v);
    if constexpr (BITS == 4) r.e = XQ_X_LOAD(v + 1);
    return r;
}
template <int BITS>
__device__ __forceinline__ void xq_bfrag_raw(const XRaw& X, const __nv_bfloat16*, int, unsigned (*b)[2]) {
    if constexpr (BITS == 4) {
        xq_bfrag4(X.a, b);
    } else {
        b[0][0] = X.a.x;
        b[0][1] = X.a.y;
    }
}
template <int BITS>
__device__ __forceinline__ void xq_bfrag_raw(const XRaw& X, const float*, int part, unsigned (*b)[2]) {
    const uint4 a = X.a;
    const unsigned w0 = xq_pack(xq_part(__uint_as_float(a.x), part), xq_part(__uint_as_float(a.y), part));
    const unsigned w1 = xq_pack(xq_part(__uint_as_float(a.z), part), xq_part(__uint_as_float(a.w), part));
    if constexpr (BITS == 4) {
        const uint4 e = X.e;
        const unsigned w2 = xq_pack(xq_part(__uint_as_float(e.x), part), xq_part(__uint_as_float(e.y), part));
        const unsigned w3 = xq_pack(xq_part(__uint_as_float(e.z), part), xq_part(__uint_as_float(e.w), part));
        xq_bfrag4(make_uint4(w0, w1, w2, w3), b);
    } else {
        b[0][0] = w0;
        b[0][1] = w1;
    }
}
// load and pair in one (each load used at once)
template <int BITS, typename T>
__device__ __forceinline__ void xq_bfrag(const T* p, int part, unsigned (*b)[2]) {
    xq_bfrag_raw<BITS>(xq_xload<BITS>(p), p, part, b);
}
"""

_SOURCE = r"""
    constexpr int VALS = 128 / BITS;                  // codes per 16-byte vector
    constexpr int KH = VALS / 16;                     // k16 mmas per vector (2 at 4-bit, 1 at 8-bit)
    constexpr int SPAN = 4 * U;                       // vectors of a row per pipeline step
    constexpr int NGS = SPAN * VALS / GS > 0 ? SPAN * VALS / GS : 1;   // groups of a row per step
    constexpr int SP = NGS | 1;                       // their pitch in float2 (odd: 8 rows, 8 distinct banks)
    constexpr int VPG = GS / VALS;                    // vectors per group (1 .. 8)
    // vectors summed before they are folded with their scale: a group, or a step where a group spans steps
    // (consecutive steps may belong to different warps of the K split)
    constexpr int FOLD = VPG < SPAN ? VPG : SPAN;
    // 4-bit codes with bf16 x enter the mma as 128 + q (one instruction less a pair), and the fold takes
    // 128 * s * sum(x) off through the bias: s * sum((128 + q) x) + (b - 128 s) * sum(x). Exact algebra; the
    // float32 sum(128 + q) x is ~16x the size of sum(q x), so its rounding is ~4e-6 of the output, against the
    // 2^-9 of the output's own rounding to bf16 (a numpy model: 3.7e-6 against 3.3e-7 with the exact q).
    // float32 x keeps the exact q (its tolerance is float32's).
    constexpr bool SHIFTED = BITS == 4 && P == 1;
    constexpr int STAGE = R * U * 64;                 // uint4 per ring stage: R tiles x U units x 2 halves x 32
    constexpr int RING = S * STAGE;
    constexpr int SBUF = 8 * R * SP;                  // uint4: R tiles x 16 rows x SP (scale, bias) pairs
    constexpr int RP = NT * 8 + 1;                    // pitch of a row of partial sums (floats; odd)
    constexpr int RED = (R * 16 * RP + 3) / 4;        // uint4: R x 16 rows x RP floats
    constexpr int PER_WARP = RING + SBUF > RED ? RING + SBUF : RED;
    constexpr int ROWS_BLK = 16 * R * (WARPS / KSPLIT);
    __shared__ __align__(128) uint4 smem[WARPS * PER_WARP];

    const int M = x_shape[0];                         // rows of x (at most NT * 8 / P)
    const int NCOL = M * P;                           // mma columns: rows of x (x P bf16 parts of a float32 x)
    const int K = x_shape[1];
    const int N = w_shape[0];
    const int CV = K / VALS;                          // 16-byte vectors per packed row
    const int G = scales_shape[1];                    // groups per row
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int g = lane / 4, c = lane % 4;             // the mma fragments' group and thread-in-group
    const int wn = warp / KSPLIT, wk = warp % KSPLIT;
    const int row0 = blockIdx.x * ROWS_BLK + wn * 16 * R;
    uint4* ring = smem + warp * PER_WARP;
    float* sbuf = reinterpret_cast<float*>(ring + RING);   // [R][16 rows][SP groups][scale, bias]
    const uint4* w4 = reinterpret_cast<const uint4*>(w);
    const int nsteps = (CV + SPAN - 1) / SPAN;        // steps of a row; this warp takes wk, wk + KSPLIT, ...
    const int my_n = wk < nsteps ? (nsteps - wk + KSPLIT - 1) / KSPLIT : 0;

    // the weights of the warp's step i into ring stage i % S: thread (g, c) copies vector c of each unit for
    // rows g and g + 8 of each tile, into 16-byte slot 4g + (c ^ ((g >> 1) & 3)) of the unit's half (swizzled:
    // the 8 rows an ldmatrix phase reads fall in 8 different bank quads)
    auto issue = [&](int i) {
        if (i < my_n) {
            const int v0 = (wk + i * KSPLIT) * SPAN;
            uint4* st = ring + (i % S) * STAGE;
#pragma unroll
            for (int r = 0; r < R; ++r)
#pragma unroll
                for (int u = 0; u < U; ++u)
#pragma unroll
                    for (int hf = 0; hf < 2; ++hf) {
                        const int v = v0 + 4 * u + c;
                        const int n = min(row0 + 16 * r + 8 * hf + g, N - 1);   // rows past N: dropped below
                        if (v < CV)
                            xq_cp_async16(st + ((r * U + u) * 2 + hf) * 32 + 4 * g + (c ^ ((g >> 1) & 3)),
                                          w4 + (size_t)n * CV + v);
                    }
        }
        xq_cp_async_commit();                         // empty groups too: the wait below counts groups
    };
    // the scales and biases of step i's groups (16 rows x NGS each, a tile): lane l holds elements l + 32q of
    // [scale/bias][row][group] (consecutive lanes: consecutive groups of a row, so the loads coalesce)
    // SD register sets: step i's pairs are loaded at step i - SD (a decode matrix is read once, so they come
    // from DRAM: loaded one step ahead, their latency stalled every step)
    float sreg[SD][R][NGS];
    auto load_scales = [&](int i, float (&dst)[R][NGS]) {
        if (i < my_n) {
            const int g0 = ((wk + i * KSPLIT) * SPAN * VALS) / GS;
#pragma unroll
            for (int r = 0; r < R; ++r)
#pragma unroll
                for (int q = 0; q < NGS; ++q) {
                    const int e = lane + 32 * q;
                    const int gi = e % NGS, rw = (e / NGS) % 16, a = e / (16 * NGS);
                    const size_t at = (size_t)min(row0 + 16 * r + rw, N - 1) * G + min(g0 + gi, G - 1);
                    dst[r][q] = a ? xl_float(biases[at]) : xl_float(scales[at]);
                }
        }
    };

    float acc[R][NT][4];
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
        for (int t = 0; t < NT; ++t)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[r][t][e] = 0.f;
    const unsigned mask4 = xq_keep(0x000F000Fu);      // the nibble mask of xq_pair4
    const unsigned ones[4] = {xq_keep(0x3F803F80u, 0), xq_keep(0x3F803F80u, 1), xq_keep(0x3F803F80u, 2),
                              xq_keep(0x3F803F80u, 3)};  // bf16 (1, 1) pairs: the A of x's sums

    // the x row and part of this thread's B column in each tile (-1: a padding column, zeros)
    int xm[NT], xp[NT];
    decltype(x) xr[NT];                               // x row of the column, at thread c's word of vector 0
#pragma unroll
    for (int t = 0; t < NT; ++t) {
        const int col = t * 8 + g;
        xm[t] = col < NCOL ? col % M : -1;
        xp[t] = col < NCOL ? col / M : 0;
        xr[t] = x + (size_t)(col < NCOL ? col % M : 0) * K + (VALS / 4) * c;
    }

    // XPRE == 2: the x values of a whole step loaded one step ahead, into registers (one step of latency hidden,
    // not one unit's: the loads of step i + 1 are in flight while step i computes)
    constexpr int XU = XPRE == 2 ? U : 1;
    XRaw xnext[XU][4][XPRE == 2 ? NT : 1];
    auto load_x = [&](int i) {
        if constexpr (XPRE == 2) {
            if (i < my_n) {
                const int v0 = (wk + i * KSPLIT) * SPAN;
#pragma unroll
                for (int u = 0; u < U; ++u)
#pragma unroll
                    for (int j = 0; j < 4; ++j)
#pragma unroll
                        for (int t = 0; t < NT; ++t) {
                            const int v = v0 + 4 * u + j;
                            xnext[u][j][t] = v < CV && xm[t] >= 0 ? xq_xload<BITS>(xr[t] + v * VALS) : XRaw{};
                        }
            }
        }
    };

    // the running sums of a group (or of its part in a step): sum of q * x per tile, and x's sum
    float d[R][NT][4], xs[NT][4];
#pragma unroll
    for (int i = 0; i < S - 1; ++i) issue(i);
    load_x(0);
#pragma unroll
    for (int sj = 0; sj < SD; ++sj) load_scales(sj, sreg[sj]);
    // the step loop, unrolled by SD so that each step's register set is a compile-time index
    for (int i0 = 0; i0 < my_n; i0 += SD) {
#pragma unroll
    for (int sj = 0; sj < SD; ++sj) {                  // sj: the step's register set
        const int i = i0 + sj;
        if (i >= my_n) break;                         // warp-uniform
        xq_syncwarp();                                // every lane is done with stage (i - 1) % S and sbuf
        issue(i + S - 1);                             // into stage (i - 1) % S
#pragma unroll
        for (int r = 0; r < R; ++r)
#pragma unroll
            for (int q = 0; q < NGS; ++q) {
                const int e = lane + 32 * q;
                const int gi = e % NGS, rw = (e / NGS) % 16, a = e / (16 * NGS);
                sbuf[((r * 16 + rw) * SP + gi) * 2 + a] = sreg[sj][r][q];
            }
        load_scales(i + SD, sreg[sj]);                 // SD steps ahead, in registers
        xq_cp_async_wait<S - 1>();                    // this thread's copies of step i have landed
        xq_syncwarp();                                // and every lane's (and sbuf)
        XRaw xstep[XU][4][XPRE == 2 ? NT : 1];        // XPRE == 2: this step's x, loaded a step ago
        if constexpr (XPRE == 2) {
#pragma unroll
            for (int u = 0; u < U; ++u)
#pragma unroll
                for (int j = 0; j < 4; ++j)
#pragma unroll
                    for (int t = 0; t < NT; ++t) xstep[u][j][t] = xnext[u][j][t];
            load_x(i + 1);
        }

        const int v0 = (wk + i * KSPLIT) * SPAN;
        const uint4* st = ring + (i % S) * STAGE;
#pragma unroll
        for (int u = 0; u < U; ++u) {
            const int vb = v0 + 4 * u;
            if (vb < CV) {                            // warp-uniform
                // word c of the unit's 4 vectors, rows g (lo) and g + 8 (hi) of each tile
                // XPRE: the unit's x loads all issued first (one L1/L2 latency a unit, not one a vector: the
                // loads are not hoisted over the warp-uniform `v < CV` branches otherwise)
                XRaw xv[XPRE == 1 ? 4 : 1][XPRE == 1 ? NT : 1];
                if constexpr (XPRE == 1) {
#pragma unroll
                    for (int j = 0; j < 4; ++j)
#pragma unroll
                        for (int t = 0; t < NT; ++t)
                            xv[j][t] = vb + j < CV && xm[t] >= 0 ? xq_xload<BITS>(xr[t] + (vb + j) * VALS) : XRaw{};
                }
                unsigned lo[R][4], hi[R][4];
                const int slot = 4 * (lane % 8) + ((lane / 8) ^ (((lane % 8) >> 1) & 3));
#pragma unroll
                for (int r = 0; r < R; ++r) {
                    xq_ldmatrix_x4(lo[r], st + ((r * U + u) * 2 + 0) * 32 + slot);
                    xq_ldmatrix_x4(hi[r], st + ((r * U + u) * 2 + 1) * 32 + slot);
                }
#pragma unroll
                for (int j = 0; j < 4; ++j) {
                    const int v = vb + j;
                    if (v < CV) {                     // warp-uniform
                        const int gi = ((u * 4 + j) * VALS) / GS;   // this vector's group in the step
                        unsigned b[NT][2][2];
                        if (v % FOLD == 0) {          // a group (or step) starts: fresh sums (warp-uniform)
#pragma unroll
                            for (int t = 0; t < NT; ++t)
#pragma unroll
                                for (int e = 0; e < 4; ++e) {
                                    xs[t][e] = 0.f;
#pragma unroll
                                    for (int r = 0; r < R; ++r) d[r][t][e] = 0.f;
                                }
                        }
#pragma unroll
                        for (int t = 0; t < NT; ++t) {
                            if constexpr (XPRE == 2) {
                                xq_bfrag_raw<BITS>(xstep[u][j][t], xr[t], xp[t], b[t]);   // zeros: padding column
                            } else if constexpr (XPRE == 1) {
                                xq_bfrag_raw<BITS>(xv[j][t], xr[t], xp[t], b[t]);   // zeros for a padding column
                            } else if (xm[t] >= 0) {
                                xq_bfrag<BITS>(xr[t] + v * VALS, xp[t], b[t]);
                            } else {
#pragma unroll
                                for (int h = 0; h < 2; ++h) b[t][h][0] = b[t][h][1] = 0u;
                            }
#pragma unroll
                            for (int h = 0; h < KH; ++h) xq_mma(xs[t], ones, b[t][h], xs[t]);
                        }
#pragma unroll
                        for (int r = 0; r < R; ++r) {
#pragma unroll
                            for (int h = 0; h < KH; ++h) {
                                unsigned a[4];        // A: rows g / g + 8, k-slots 2c, 2c+1 / 2c+8, 2c+9
                                if constexpr (BITS == 4) {
                                    a[0] = xq_pair4<SHIFTED>(lo[r][j], 2 * h, mask4);
                                    a[1] = xq_pair4<SHIFTED>(hi[r][j], 2 * h, mask4);
                                    a[2] = xq_pair4<SHIFTED>(lo[r][j], 2 * h + 1, mask4);
                                    a[3] = xq_pair4<SHIFTED>(hi[r][j], 2 * h + 1, mask4);
                                } else {
                                    a[0] = xq_pack(xq_code8(lo[r][j], 0), xq_code8(lo[r][j], 1));
                                    a[1] = xq_pack(xq_code8(hi[r][j], 0), xq_code8(hi[r][j], 1));
                                    a[2] = xq_pack(xq_code8(lo[r][j], 2), xq_code8(lo[r][j], 3));
                                    a[3] = xq_pack(xq_code8(hi[r][j], 2), xq_code8(hi[r][j], 3));
                                }
#pragma unroll
                                for (int t = 0; t < NT; ++t) xq_mma(d[r][t], a, b[t][h], d[r][t]);
                            }
                        }
                        if ((v + 1) % FOLD == 0) {    // it ends (K is a multiple of GS: so does the row)
#pragma unroll
                            for (int r = 0; r < R; ++r) {
                                float2 sb_lo = reinterpret_cast<const float2*>(sbuf)[(r * 16 + g) * SP + gi];
                                float2 sb_hi = reinterpret_cast<const float2*>(sbuf)[(r * 16 + g + 8) * SP + gi];
                                if constexpr (SHIFTED) {
                                    sb_lo.y = fmaf(-128.f, sb_lo.x, sb_lo.y);
                                    sb_hi.y = fmaf(-128.f, sb_hi.x, sb_hi.y);
                                }
#pragma unroll
                                for (int t = 0; t < NT; ++t) {   // acc += s * sum(q x) + b * sum(x)
                                    acc[r][t][0] = fmaf(sb_lo.x, d[r][t][0], fmaf(sb_lo.y, xs[t][0], acc[r][t][0]));
                                    acc[r][t][1] = fmaf(sb_lo.x, d[r][t][1], fmaf(sb_lo.y, xs[t][1], acc[r][t][1]));
                                    acc[r][t][2] = fmaf(sb_hi.x, d[r][t][2], fmaf(sb_hi.y, xs[t][2], acc[r][t][2]));
                                    acc[r][t][3] = fmaf(sb_hi.x, d[r][t][3], fmaf(sb_hi.y, xs[t][3], acc[r][t][3]));
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    }

    // partial sums -> this warp's shared memory (its ring is free: no copy is pending), then the block's sum
    xq_cp_async_wait<0>();
    xq_syncwarp();
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
        for (int kp = 0; kp < KSPLIT; ++kp) {
            const float* rd = reinterpret_cast<const float*>(smem + (gw * KSPLIT + kp) * PER_WARP) + rr * RP;
#pragma unroll
            for (int p = 0; p < P; ++p) s += rd[p * M + m];
        }
        if (n < N) {
            if (HAS_BIAS) s += xl_float(bias[n]);
            xl_set(y + (size_t)m * N + n, s);
        }
    }
"""

# The add-norm tail (kernels/add_rms_norm.py: AddNorm): the residual add, RMSNorm and cast of the product's rows, by
# the last of the launch's blocks to finish. Each block's outputs are made visible (fence), then the block is
# counted; the block that counts last (having reset the counter for the next launch) reads y back through L2 and
# runs add_rms_norm's own row function on each row, as that kernel's AN_VT (its THREADS) threads would: the same bits
# as that kernel after this one, one launch less (the step is bound by the host's encoding at one row:
# benchmarks/results/gpu_h200_2026-12-03d.md; measured end to end, the launch fewer did not show: -03e.md).
# One block does every row, so the tail's time grows with the rows: callers take it for few (TAIL_MAX_ROWS).
_TAIL = r"""
    __shared__ bool last_sh;
    __shared__ float part_sh[AN_VT / 32];
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) {
        unsigned* cnt = const_cast<unsigned*>(counter);
        last_sh = atomicAdd(cnt, 1u) == (unsigned)(AN_BLOCKS - 1);
        if (last_sh) *cnt = 0u;
    }
    __syncthreads();
    if (!last_sh) return;
    __threadfence();
    for (int m = 0; m < M; ++m)
        xl_add_rms_row<AN_DIM, AN_VT, WARPS * 32, true, AN_HAS_BIAS, AN_WRITE_Y>(
            res + (size_t)m * AN_DIM, y + (size_t)m * AN_DIM, nw, nb, r + (size_t)m * AN_DIM,
            yf + (size_t)(AN_WRITE_Y ? m : 0) * AN_DIM, y_c + (size_t)m * AN_DIM, __int_as_float(AN_EPS_BITS), part_sh);
"""

_kernel_cache = None
_tail_kernel_cache = None


def _kernel():
    global _kernel_cache
    if _kernel_cache is None:
        _kernel_cache = mx.fast.cuda_kernel(
            name="xlstm_quant_gemv_mma",
            input_names=["x", "w", "scales", "biases", "bias"],
            output_names=["y"],
            source=_SOURCE,
            header=_HEADER,
        )
    return _kernel_cache


def _tail_kernel():
    global _tail_kernel_cache
    if _tail_kernel_cache is None:
        _tail_kernel_cache = mx.fast.cuda_kernel(
            name="xlstm_quant_gemv_mma_add_norm",
            input_names=["x", "w", "scales", "biases", "bias", "res", "nw", "nb", "counter"],
            output_names=["y", "r", "yf", "y_c"],
            source=_SOURCE + _TAIL,
            header=_HEADER + TAIL_HEADER,
        )
    return _tail_kernel_cache


def quantized_matmul_ref(x: mx.array, w: mx.array, scales: mx.array, biases: mx.array | None,
                         bias: mx.array | None = None, group_size: int = 64, bits: int = 4,
                         mode: str = "affine") -> mx.array:
    """What nn.QuantizedLinear computes: MLX's quantized matmul against w transposed, then + bias."""
    y = mx.quantized_matmul(x, w, scales=scales, biases=biases, transpose=True, group_size=group_size, bits=bits,
                            mode=mode)
    return y if bias is None else y + bias


def _rows(x: mx.array) -> int:
    return x.size // x.shape[-1] if x.ndim and x.shape[-1] else 0


def applies(x: mx.array, w: mx.array, scales: mx.array, group_size: int, bits: int, mode: str = "affine",
            biases: mx.array | None = None, bias: mx.array | None = None) -> bool:
    """Whether the CUDA kernel runs for these operands (else quantized_gemv runs the reference): MLX's CUDA
    backend; affine mode with biases; bits 4 or 8; group size 32/64/128; x, scales, biases (and bias) all
    bfloat16 or all float32; 1..MAX_ROWS rows of x; shapes of the packed layout (K a multiple of the group).
    The kernel reads x and w in 16-byte vectors: MLX's buffers and their row slices are aligned so."""
    if not cuda_available() or mode != "affine" or bits not in BITS or group_size not in GROUP_SIZES:
        return False
    if x.ndim < 1 or w.ndim != 2 or scales.ndim != 2 or w.dtype != mx.uint32:
        return False
    if x.dtype not in DTYPES or scales.dtype != x.dtype:
        return False
    if biases is not None and (biases.dtype != x.dtype or biases.shape != scales.shape):
        return False
    if bias is not None and (bias.dtype != x.dtype or bias.shape != (w.shape[0],)):
        return False
    K, N = x.shape[-1], w.shape[0]
    return (1 <= _rows(x) <= MAX_ROWS and N >= 1 and K % group_size == 0 and w.shape[1] * 32 == K * bits
            and scales.shape == (N, K // group_size))


TARGET_WARPS = 8 * SMS  # warps wanted in the grid: ~8 a multiprocessor, each with (S - 1) steps of bytes in flight
RING_BUDGET = 96 * 1024  # shared memory a multiprocessor's weight rings may take at many rows (of its 228 KB)

# The configurations one lab run sweeps (benchmarks/gpu_quant_lab.py), all tested on the GPU
# (tests/kernels/test_quant_gemv.py). R: 16-row tiles a warp; U: 4-vector units a step (a step is R x U KB of
# weights); S: ring stages (S - 1 steps in flight a warp); KSPLIT: warps of a block splitting K; WARPS a block.
SWEEP_CONFIGS = [
    dict(R=1, U=2, S=4, KSPLIT=1, WARPS=4),
    dict(R=1, U=2, S=4, KSPLIT=2, WARPS=4),
    dict(R=1, U=2, S=4, KSPLIT=4, WARPS=4),
    dict(R=1, U=2, S=3, KSPLIT=1, WARPS=4),
    dict(R=1, U=1, S=4, KSPLIT=1, WARPS=4),
    dict(R=1, U=1, S=3, KSPLIT=1, WARPS=4),
    dict(R=1, U=1, S=4, KSPLIT=1, WARPS=8),
    dict(R=1, U=1, S=4, KSPLIT=4, WARPS=8),
    dict(R=1, U=4, S=3, KSPLIT=1, WARPS=2),
    dict(R=2, U=1, S=4, KSPLIT=1, WARPS=4),
    dict(R=2, U=1, S=4, KSPLIT=2, WARPS=4),
    dict(R=2, U=1, S=4, KSPLIT=4, WARPS=4),
    dict(R=2, U=1, S=3, KSPLIT=1, WARPS=4),
    dict(R=2, U=2, S=3, KSPLIT=2, WARPS=2),
    dict(R=4, U=1, S=3, KSPLIT=1, WARPS=2),
    dict(R=1, U=1, S=4, KSPLIT=8, WARPS=8),   # the 4,096-output matrices: 2 blocks a multiprocessor, not 1
]

# Measured best configuration per (bits, rows bucket, N, K) on the H200 (kernels/quant_gemv_lab.py, from the lab's
# JSON: benchmarks/gpu_quant_lab.py prints the table); a shape not listed takes the rule in default_config.
MEASURED: dict[tuple[int, int, int, int], dict] = {key: cfg for key, (cfg, _, _) in quant_gemv_lab.H200.items()}


def default_config(rows: int, n: int, k_vectors: int, bits: int | None = None, group_size: int = 64,
                   x_dtype=mx.bfloat16) -> dict:
    """The configuration for `rows` rows of x, n outputs and k_vectors 16-byte vectors a packed row (K * bits /
    128): the measured one where MEASURED has it (rows bucketed as quant_gemv_lab.bucket: 1, 2..8, 9..16), else
    the rule: R=2 tiles a warp (each x fragment and x sum serves two tiles: ~40 instructions a tile's vector column at 1 row, ~57 at
    16, against ~48 and ~75 with R=1, in the sm_90 SASS; ~67 fit in the issue slots at 4 TB/s), U=1, S=4 in
    blocks of 4 warps, with the smallest split of K over a block's warps (1, 2, 4) that puts TARGET_WARPS warps
    in the grid, as long as each warp keeps at least 2 steps; S=3 from 5 rows on where the warps' rings would
    take more than RING_BUDGET of a multiprocessor's shared memory (every block is resident at once at these
    sizes): shared memory is carved out of L1, which has to hold x (16 rows x 4096 x bf16 = 128 KB) for the
    warps that all read it."""
    if bits is not None:
        bucket = quant_gemv_lab.bucket(rows)
        k = k_vectors * 128 // bits
        # session 13's kernel-alone times first (with XPRE), then session 8's chains; both measured with bf16 x
        # and group 64: float32 x (3 parts a row) or another group may not fit them
        for cfg in (quant_gemv_lab.best_alone(bits, rows, n, k), MEASURED.get((bits, bucket, n, k))):
            if cfg is not None and config_problem(cfg, rows, bits, group_size, x_dtype) is None:
                return dict(cfg)
    r, u, warps = 2, 1, 4
    tiles = -(-n // (16 * r))                  # warp tasks before the split
    steps = -(-k_vectors // (4 * u))
    ksplit = 1
    for ks in (1, 2, 4):
        if ks > 1 and steps < 2 * ks:
            break
        ksplit = ks
        if -(-tiles // (warps // ks)) * warps >= TARGET_WARPS:
            break
    warps_per_sm = -(-tiles * ksplit // SMS)
    s = 3 if rows > 4 and warps_per_sm * 4 * r * u * 1024 > RING_BUDGET else 4
    return dict(R=r, U=u, S=s, KSPLIT=ksplit, WARPS=warps)


def smem_bytes(cfg: dict, rows: int, bits: int, group_size: int, x_dtype=mx.bfloat16) -> int:
    """The kernel's static shared memory for this configuration (the constexprs at the top of _SOURCE)."""
    R, U, S, W = cfg["R"], cfg["U"], cfg["S"], cfg["WARPS"]
    vals = 128 // bits
    ngs = max(1, 4 * U * vals // group_size)
    sp = ngs + 1 if ngs >= 8 else ngs
    nt = column_tiles(rows, x_dtype)
    red = -(-(R * 16 * (nt * 8 + 1)) // 4)
    return 16 * W * max(S * R * U * 64 + 8 * R * sp, red)


def _parts(dtype) -> int:
    return 3 if dtype == mx.float32 else 1


def column_tiles(rows: int, x_dtype=mx.bfloat16) -> int:
    """8-column mma tiles for `rows` rows of x (a template constant: rows 1..8 of bf16 x share one kernel)."""
    return -(-rows * _parts(x_dtype) // 8)


MAX_TILE_PRODUCT = 12  # R x column tiles a warp accumulates: ptxas (sm_90) spills R=4 x 6 tiles (float32 x, 16 rows)


def config_problem(cfg: dict, rows: int, bits: int, group_size: int, x_dtype=mx.bfloat16) -> str | None:
    """Why the kernel cannot take this configuration for these operands, or None."""
    R, U, S, KS, W = (cfg.get(k) for k in ("R", "U", "S", "KSPLIT", "WARPS"))
    if R not in (1, 2, 4) or U not in (1, 2, 4) or S not in range(2, 9) or W not in (1, 2, 4, 8):
        return "needs R and U in 1, 2, 4, S in 2..8, WARPS in 1, 2, 4, 8"
    if KS not in (1, 2, 4, 8) or W % KS:
        return "KSPLIT must divide WARPS"
    if cfg.get("SD") is not None and cfg["SD"] not in range(1, 5):
        return "needs SD (steps the scales are loaded ahead) in 1..4"
    if cfg.get("XPRE") not in (None, *XPRE_MODES):
        return "needs XPRE (how x is loaded: 0 at its use, 1 a unit's loads first, 2 a step ahead) 0, 1 or 2"
    if R * column_tiles(rows, x_dtype) > MAX_TILE_PRODUCT:
        return (f"R={R} x {column_tiles(rows, x_dtype)} column tiles ({rows} rows of {x_dtype}) is over "
                f"{MAX_TILE_PRODUCT} accumulator tiles a warp (the registers spill): lower R")
    nbytes = smem_bytes(cfg, rows, bits, group_size, x_dtype)
    if nbytes > SMEM_LIMIT:
        return (f"needs {nbytes} bytes of shared memory at {rows} rows, over the {SMEM_LIMIT} of a static block: "
                "lower S, U, R or WARPS")
    return None


def check_config(cfg: dict, rows: int, bits: int, group_size: int, x_dtype=mx.bfloat16) -> None:
    """UsageError unless the configuration is one the kernel is written for (config_problem)."""
    problem = config_problem(cfg, rows, bits, group_size, x_dtype)
    if problem:
        raise UsageError(f"quantized GEMV config {cfg}: {problem}")


DEPTH_ENV = "XLSTM_MLX_QUANT_SCALE_DEPTH"  # an A/B switch for measurements: SD for every call (1..4)


def scale_depth(cfg: dict, bits: int, group_size: int) -> int:
    """SD, the steps ahead a warp loads its (scale, bias) pairs: cfg["SD"] where given, else
    $XLSTM_MLX_QUANT_SCALE_DEPTH where set, else 1. Measured (H200, session 13, ncu, 4-bit, kernel alone): SD = 3
    costs registers (8-warp blocks 3 -> 2 a multiprocessor) and lost at one row (q|k|v|o 20.8 -> 31.1 us,
    FFN gate|up 35.6 -> 42.1) while it won on the lm_head (65.3 -> 58.6 us; 104.8 -> 91.9 at 16 rows): a step
    takes longer than the DRAM latency already, so one step ahead hides the scales' loads."""
    if cfg.get("SD"):
        return cfg["SD"]
    env = os.environ.get(DEPTH_ENV, "")
    if env:
        if env not in ("1", "2", "3", "4"):
            raise UsageError(f"{DEPTH_ENV}={env!r}: set it to 1, 2, 3 or 4 (steps ahead the quantized GEMV loads "
                             "its scales), or unset it for the default")
        return int(env)
    return 1


XPRE_ENV = "XLSTM_MLX_QUANT_XPRE"  # an A/B switch for measurements: 0, 1 or 2 for every call
XPRE_MODES = (0, 1, 2)  # x's loads: each at its use / a unit's issued first / a whole step's loaded a step ahead


def x_prefetch(cfg: dict, rows: int, x_dtype=mx.bfloat16) -> int:
    """XPRE, how the kernel loads x: 0 each 16-byte load at its use; 1 a unit's four loads issued before the first
    is used (one L1/L2 round trip a unit instead of four); 2 a whole step's loads issued one step ahead, into
    registers (the round trip hidden behind the previous step's work; 16 x U x NT more registers held).
    cfg["XPRE"] where given, else $XLSTM_MLX_QUANT_XPRE where set, else 1 for bf16 x and 0 for float32 x (a
    float32 x takes twice the registers a load and six column tiles at 16 rows)."""
    if cfg.get("XPRE") is not None:
        return int(cfg["XPRE"])
    env = os.environ.get(XPRE_ENV, "")
    if env:
        if env not in ("0", "1", "2"):
            raise UsageError(f"{XPRE_ENV}={env!r}: set it to 0, 1 or 2 (how the quantized GEMV loads x: at its use, "
                             "a unit's loads first, a step ahead), or unset it for the default")
        return int(env)
    return 1 if x_dtype == mx.bfloat16 else 0


def kernel_constants(x_dtype, rows: int, bits: int, group_size: int, has_bias: bool, cfg: dict) -> list:
    """The kernel's template constants, in order (the tests' host build uses the same list)."""
    return [("NT", column_tiles(rows, x_dtype)), ("P", _parts(x_dtype)), ("BITS", bits), ("GS", group_size),
            ("R", cfg["R"]), ("U", cfg["U"]), ("S", cfg["S"]), ("KSPLIT", cfg["KSPLIT"]), ("WARPS", cfg["WARPS"]),
            ("SD", scale_depth(cfg, bits, group_size)), ("XPRE", x_prefetch(cfg, rows, x_dtype)), ("HAS_BIAS", has_bias)]


def launch_blocks(n: int, cfg: dict) -> int:
    return -(-n // (16 * cfg["R"] * (cfg["WARPS"] // cfg["KSPLIT"])))


def quantized_gemv_cuda(x: mx.array, w: mx.array, scales: mx.array, biases: mx.array, bias: mx.array | None = None,
                        group_size: int = 64, bits: int = 4, mode: str = "affine", *, R: int | None = None,
                        KSPLIT: int | None = None, U: int | None = None, S: int | None = None,
                        WARPS: int | None = None, SD: int | None = None, XPRE: int | None = None) -> mx.array:
    """The CUDA kernel (no fallback: callers check `applies`); R / KSPLIT / U / S / WARPS / SD / XPRE override
    the defaults (default_config, scale_depth, x_prefetch)."""
    K, N = x.shape[-1], w.shape[0]
    lead = x.shape[:-1]
    x2 = as_rows(x)
    M = x2.shape[0]
    cfg = default_config(M, N, K * bits // 128, bits, group_size, x.dtype)
    for name, val in (("R", R), ("KSPLIT", KSPLIT), ("U", U), ("S", S), ("WARPS", WARPS), ("SD", SD),
                      ("XPRE", XPRE)):
        if val is not None:
            cfg[name] = val
    check_config(cfg, M, bits, group_size, x.dtype)
    b = bias if bias is not None else biases  # never read without HAS_BIAS; no extra allocation or launch
    (y,) = _kernel()(
        inputs=[x2, w, scales, biases, b],
        template=kernel_constants(x.dtype, M, bits, group_size, bias is not None, cfg),
        grid=(launch_blocks(N, cfg) * cfg["WARPS"] * 32, 1, 1),
        threadgroup=(cfg["WARPS"] * 32, 1, 1),
        output_shapes=[(M, N)],
        output_dtypes=[x.dtype],
    )
    return from_rows(y, lead)


# rows up to which the add-norm tail is taken: one block normalizes every row, so its time grows with them. H200,
# 7B 4-bit decode, alternating processes (benchmarks/results/gpu_h200_2026-12-03e.md): at one row within the host's
# spread either way (7 runs 195-278 tok/s on, 5 runs 175-260 off); at 2 and 4 rows slower in every round (B=2
# 336-405 against 385-444, B=4 761-833 against 934-1,012); at 16 rows 1,882-1,887 against 2,874-3,087.
TAIL_MAX_ROWS = 1
TAIL_ENV = "XLSTM_MLX_GEMV_ADD_NORM"  # 0: never (the separate norm.add_rms launch); an A/B switch for measurements
TAIL_ROWS_ENV = "XLSTM_MLX_GEMV_ADD_NORM_ROWS"  # 1..MAX_ROWS in place of TAIL_MAX_ROWS: for measurements


def tail_enabled() -> bool:
    return env.flag(TAIL_ENV)


def tail_max_rows() -> int:
    """TAIL_MAX_ROWS, or $XLSTM_MLX_GEMV_ADD_NORM_ROWS where set (1..MAX_ROWS; anything else a usage error)."""
    raw = os.environ.get(TAIL_ROWS_ENV, "").strip()
    if not raw:
        return TAIL_MAX_ROWS
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_ROWS:
        raise UsageError(f"{TAIL_ROWS_ENV}={raw!r}: set it to a row count from 1 to {MAX_ROWS} (the most rows a "
                         "quantized GEMV adds and normalizes in its last block), or unset it for the default "
                         f"{TAIL_MAX_ROWS}")
    return int(raw)


def tail_applies(x: mx.array, w: mx.array, scales: mx.array, biases: mx.array | None, bias: mx.array | None,
                 group_size: int, bits: int, mode: str, norm: AddNorm) -> bool:
    """Whether quantized_gemv_add_norm_cuda runs for these operands: the kernel's own conditions (applies), x as rows
    [M, K] with M <= tail_max_rows(), the tail's (add_rms_norm.tail_applies) and the switch
    (XLSTM_MLX_GEMV_ADD_NORM, on by default)."""
    return (biases is not None and tail_enabled() and x.ndim == 2 and x.shape[0] <= tail_max_rows()
            and applies(x, w, scales, group_size, bits, mode, biases=biases, bias=bias)
            and norm_tail_applies(norm, x.shape[0], w.shape[0]))


def quantized_gemv_add_norm_cuda(x: mx.array, w: mx.array, scales: mx.array, biases: mx.array,
                                 bias: mx.array | None, group_size: int, bits: int, mode: str,
                                 norm: AddNorm, **config):
    """The kernel with the add-norm tail (no fallback: callers check tail_applies): (r, y or None, y_c) as
    add_rms_norm(norm.residual, quantized_gemv_cuda(x, ...), ...) returns them, in one launch."""
    M, K, N = x.shape[0], x.shape[1], w.shape[0]
    cfg = default_config(M, N, K * bits // 128, bits, group_size, x.dtype)
    cfg.update({k: v for k, v in config.items() if v is not None})
    check_config(cfg, M, bits, group_size, x.dtype)
    blocks = launch_blocks(N, cfg)
    b = bias if bias is not None else biases
    nb = norm.bias if norm.bias is not None else norm.weight  # never read without AN_HAS_BIAS
    _, r, yf, y_c = _tail_kernel()(
        inputs=[x, w, scales, biases, b, norm.residual, norm.weight, nb, norm.counter],
        template=kernel_constants(x.dtype, M, bits, group_size, bias is not None, cfg)
        + [("AN_DIM", N), ("AN_VT", NORM_THREADS), ("AN_BLOCKS", blocks), ("AN_HAS_BIAS", norm.bias is not None),
           ("AN_WRITE_Y", norm.want_y), ("AN_EPS_BITS", float_bits(norm.eps))],
        grid=(blocks * cfg["WARPS"] * 32, 1, 1),
        threadgroup=(cfg["WARPS"] * 32, 1, 1),
        output_shapes=[(M, N), (M, N), (M, N) if norm.want_y else (1,), (M, N)],
        output_dtypes=[x.dtype, mx.float32, mx.float32, norm.out_dtype],
    )
    return r, yf if norm.want_y else None, y_c


def quantized_gemv(x: mx.array, w: mx.array, scales: mx.array, biases: mx.array | None,
                   bias: mx.array | None = None, group_size: int = 64, bits: int = 4,
                   mode: str = "affine") -> mx.array:
    """The kernel where it applies (see `applies`), else MLX's quantized matmul (+ bias)."""
    if biases is not None and applies(x, w, scales, group_size, bits, mode, biases=biases, bias=bias):
        return quantized_gemv_cuda(x, w, scales, biases, bias, group_size, bits, mode)
    return quantized_matmul_ref(x, w, scales, biases, bias, group_size, bits, mode)


def label() -> str:
    if cuda_available():
        return (f"CUDA quantized GEMV (mx.fast.cuda_kernel, tensor-core mma; affine {'/'.join(map(str, BITS))}-bit, "
                f"<= {MAX_ROWS} rows), MLX quantized_matmul beyond")
    return "MLX quantized_matmul (the CUDA quantized GEMV needs MLX's CUDA backend)"


def unpack_codes(w: np.ndarray, bits: int) -> np.ndarray:
    """Numpy model of the layout the kernel reads: packed uint32 [N, K*bits/32] -> integer codes [N, K].
    Weight j of each word sits in bits [bits*j, bits*(j+1)), lowest first, so the kernel's 16-byte vector v of a
    row (words 4v .. 4v+3) holds weights [v*128/bits, (v+1)*128/bits), and its word c the weights
    v*128/bits + c*32/bits + (0 .. 32/bits - 1)."""
    w = np.ascontiguousarray(w, dtype=np.uint32)
    per = 32 // bits
    mask = np.uint32((1 << bits) - 1)
    return np.stack([(w >> np.uint32(bits * j)) & mask for j in range(per)], axis=-1).reshape(w.shape[0], -1)


def _bf16_bits_to_f64(u: np.ndarray) -> np.ndarray:
    return (u.astype(np.uint32) << np.uint32(16)).view(np.float32).astype(np.float64)


def kernel_codes(w: np.ndarray, bits: int) -> np.ndarray:
    """Numpy model of how the kernel turns a word into the codes of its mma operand, step by step, placed back
    at their k: [N, K] float64. Word c of vector v (after the ldmatrix transpose: thread c of a quad) covers
    k0 = v*vals + c*32/bits. 4-bit: pair i (i = 0..3) is ((word >> 4i) & 0x000F000F) | 0x43004300 read as two
    bf16 (128 + code) minus 128: the codes of k0 + i (low half) and k0 + i + 4 (high half). 8-bit: byte e of
    the word into the float bits 0x4B0000qq, minus 2^23: the code of k0 + e."""
    w = np.ascontiguousarray(w, dtype=np.uint32)
    N = w.shape[0]
    words = w.reshape(N, -1)                                     # word index = 4v + c: k0 = (4v + c) * 32/bits
    per = 32 // bits
    out = np.empty((N, words.shape[1], per), np.float64)
    if bits == 4:
        for i in range(4):
            pair = ((words >> np.uint32(4 * i)) & np.uint32(0x000F000F)) | np.uint32(0x43004300)
            out[:, :, i] = _bf16_bits_to_f64(pair & np.uint32(0xFFFF)) - 128.0
            out[:, :, i + 4] = _bf16_bits_to_f64(pair >> np.uint32(16)) - 128.0
    else:
        for e in range(4):
            bits_ = np.uint32(0x4B000000) | ((words >> np.uint32(8 * e)) & np.uint32(0xFF))
            out[:, :, e] = bits_.view(np.float32).astype(np.float64) - 8388608.0
    return out.reshape(N, -1)


def dequantize_as_kernel(w: np.ndarray, scales: np.ndarray, biases: np.ndarray, group_size: int,
                         bits: int) -> np.ndarray:
    """Numpy model of the weight the kernel's sum effectively uses: its exact codes (kernel_codes) times the
    vector's group scale plus its bias, exactly (the kernel computes s * sum(q x) + b * sum(x) and never rounds a
    weight), here rounded once to float32 to compare with mx.dequantize (which rounds q*s, then + b: at most one
    rounding of q*s apart; equal for bf16 scales, where q*s is exact). float32 [N, K]."""
    q = kernel_codes(w, bits)
    g = np.arange(q.shape[1]) // group_size
    return (q * scales.astype(np.float64)[:, g] + biases.astype(np.float64)[:, g]).astype(np.float32)


def dequantize_reference(w: np.ndarray, scales: np.ndarray, biases: np.ndarray, group_size: int,
                         bits: int) -> np.ndarray:
    """float32 weights [N, K] = code * scale + bias of the code's group (k // group_size), in float32 as
    mx.dequantize computes them."""
    q = unpack_codes(w, bits).astype(np.float32)
    g = np.arange(q.shape[1]) // group_size
    return q * scales.astype(np.float32)[:, g] + biases.astype(np.float32)[:, g]
