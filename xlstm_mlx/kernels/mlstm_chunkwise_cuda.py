"""mLSTM chunkwise prefill as three CUDA launches per segment: gate sums, the inter-chunk recurrence, the
intra-chunk output (the design of the official TFLA "limit_chunk" kernels; the math of mlstm_chunk_scan.py).

The MLX-ops form (mlstm_chunk_scan.py) costs ~60 small kernels per layer on an H200 at the 7B shape (~500-600 us:
an f32 SIMT sgemm for q @ C, the closed-form w @ X, the X = [C0, kv] copy, the kv cast, elementwise passes over
[B, NH, nc, L, L]). Here, per segment of at most MAX_SEGMENT_CHUNKS chunks of L = 64 steps, nc = ceil(T / L)
chunks in all: where L does not divide T the last chunk is partial, its steps past T identity steps inside the
kernels (so every T >= 1 runs here, T < 64 as one partial chunk):

  gates (one launch for the whole call; one block of L threads per (sequence*head, chunk)):
      lf = log sigmoid(f~) (float32; +inf -> 0 exactly, so masked steps are identities); a step past T is an
      identity step as a masked one is (lf = 0, i~ = -inf), its gates not read,
      a_s = sum_{j > s} lf_j + i~_s (log weight of key s at its chunk's end, summed directly from the end),
      g = sum_j lf_j (the chunk's total log decay), a* = max(max_s a_s, -1e30).
  kernel A, the recurrence (one block per (Dqk tile of 64, Dv tile of 64, sequence*head), walking the chunks in
  order; small tiles because the walk is latency-bound: 256 blocks at the 7B shape and batch 1, two per SM):
      writes the state at the START of every chunk (C_k in bfloat16, n_k and m_k float32), then
      m_next = max(g + m, a*),  C = e^{g+m-m_next} C + sum_s e^{a_s-m_next} k_s v_s^T,  n likewise.
      C lives in float32 mma.sync accumulators (PTX layout, cuda_common.MMA_HEADER) for the whole walk, stored
      from there as bf16 pairs; both operands come from the [step][column] tiles by transposed ldmatrix (the
      wmma API's bf16 loads compiled to generic loads and a MOVM transpose a register: a quarter of the stall
      samples of an ncu profile, 2026-12-02). k e^{a_s - m_next} is rounded to bf16
      for the tensor-core product (as the official does), n's sum is float32 from the bf16 k. Returns the final
      state in float32. a* is clamped, so a chunk of only masked steps (a_s = -inf, g = 0) gives weight 0, not NaN.
      k and v past T are not read (zeros in shared memory; their weight e^{a_s - m_next} = e^{-inf} is 0): the
      final state after a partial chunk is the state at step T.
  kernel B, the output (one block per (Dv tile of 128, or 64 where Dv % 128 != 0; chunk; sequence*head);
  128 registers a thread, so two blocks of 8 warps per SM: `cuda_compile_check.py --resources` reports it):
      S = q k^T and q C_k by bf16 mma.sync over Dqk in slices of 64 (float32 accumulators in the PTX layout,
      operands by ldmatrix: no wmma, see kernel A), then in shared memory
      log D[t, s] = sum_{s < j <= t} lf_j + i~_s (summed over the segment itself, never b_t - b_s: see
      mlstm_gates.log_decay_matrix), m_t = max(b_t + m_k, max_s log D[t, s]),
      h_t = (e^{b_t+m_k-m_t} q_t C_k * scale + sum_s e^{logD-m_t} (q_t.k_s * scale) v_s)
            / (max(|den_t|, e^{-m_t}) + eps),
      den_t the same sums against n_k and 1 (float32); S' = S e^{logD - m} scale is rounded to bf16 for S' V.
      D never reaches device memory. h is bfloat16 [B, NH, T, Dv]. In a partial chunk q, k, v past T are not read
      (zeros; i~ = -inf there, so log D = -inf in their columns) and h's rows past T are not written.

Two layouts (`Layout`, template constants of all three kernels):
    mlstm_chunkwise_cuda(q, k, v, igate, fgate, state, eps, chunk_size)     mlstm_chunkwise's: q, k [B, NH, T, Dqk],
        v [B, NH, T, Dv], gates [B, NH, T]; h [B, NH, T, Dv]
    mlstm_chunkwise_rows(q, k, v, igate, fgate, state, eps, dqk=, dv=, offsets=)    the model's: q, k, v as rows
        [B, T, row] with head hd's columns at offset + hd * D, read in place (the 7B block passes its fused
        projection output [B, T, 2 NH Dqk + 2 NH Dv] three times, offsets 0, NH Dqk, 2 NH Dqk), gates [B, T, NH];
        h [B, T, NH, Dv], the per-head norm's [B*T, NH, Dv] by a free reshape. No transposed copy around the
        kernels (three of q/k/v, one of h per layer in the heads-first layout); the same arithmetic, so the same
        bits. Its MLX-ops form, mlstm_chunkwise_rows_ops, is its VJP (and the reference it is tested against).
The state is [B, NH, ...] in both.

Where they apply (`applies`, `applies_rows`): MLX's CUDA backend, q/k/v bfloat16, gates float32, the state (if
given) float32 of the matching shapes, chunk_size 64, Dqk and Dv multiples of 64, T >= 1, and
XLSTM_MLX_CHUNKWISE_CUDA not off; rows: every row length and offset a multiple of 8 elements. Elsewhere
mlstm_chunkwise runs the MLX ops, and the block its heads-first path.
Inputs must start 16-byte aligned (uint4 loads): true of every MLX allocation and of whole-array views, and so of
the rows: the projection output is a fresh matmul result passed whole (a column slice of it would not be
row-contiguous, and mx.fast.cuda_kernel would copy it), and the offsets and row lengths are multiples of 8 bf16.
"""

from __future__ import annotations

from typing import NamedTuple

import mlx.core as mx

from xlstm_mlx import env
from xlstm_mlx.errors import UsageError
from xlstm_mlx.kernels.cuda_common import cuda_available, float_bits, MMA_HEADER, SMS, VEC_HEADER
from xlstm_mlx.kernels.mlstm_chunk_scan import MAX_SEGMENT_CHUNKS, mlstm_chunkwise_ops
from xlstm_mlx.kernels.mlstm_recurrent import ZeroState

L = 64  # chunk length of the kernels
KT = 64  # Dqk rows of kernel A's C tile; kernel B's Dqk slice
THREADS = 256  # 8 warps
# Dv tiles (64 or 128; 128 only where Dv % 128 == 0). Kernel A: "auto" = 128 where its grid of 128-wide tiles
# fits in one wave (at most SMS blocks: 128 registers a thread, one block per SM), else 64. Its walk over the
# chunks is latency-bound, and with the mma.sync form a warp's 8 tiles of 128 keep more independent mmas in
# flight than 4 of 64 (lab, H200 2026-12-02, 7B heads: B=1 T=2048 375 against 421 us, both kernels with the
# gates), while at B=8 T=8192 (1,024 blocks of 128) 64 is faster (6,627 against 6,769 us). Kernel B 128 (half the
# q k^T recomputation and q/k reads of 64). Module settings, so that the kernel lab (benchmarks/gpu_kernels.py)
# can time the other choices.
VT_A: int | str = "auto"
VT_B = 128
# kernel B: v fetched into registers before the decay-matrix steps instead of after them (a lab variant until
# a GPU measurement says which is faster; the same arithmetic either way)
PREFETCH_V = False

_HEADER = VEC_HEADER + MMA_HEADER + """

__device__ __forceinline__ float xl_neg_inf() { return __int_as_float(0xff800000); }

// where head bh's step 0 of q, k, v (columns 0..W-1) starts: [B, NH, T, W] (BTHD false), or the columns
// OFF + head * W of [B, T, ROW] rows (BTHD: the projection output, read in place); steps are BTHD ? ROW : W apart
template <bool BTHD, int W, int ROW, int OFF>
__device__ __forceinline__ size_t xl_head_base(int bh, int NH, int T) {
    if (BTHD) return (size_t)(bh / NH) * T * ROW + OFF + (size_t)(bh % NH) * W;
    return (size_t)bh * T * W;
}
"""

# one block of L threads per (sequence*head, chunk); gates [B, NH, T], or [B, T, NH] (BTHD)
_GATES_SOURCE = """
    const int T = BTHD ? fgate_shape[1] : fgate_shape[2];
    const int NH = BTHD ? fgate_shape[2] : fgate_shape[1];
    const int NC = (T + L - 1) / L;                   // chunks; the last one partial where L does not divide T
    const int bh = blockIdx.x / NC, c = blockIdx.x % NC;
    const int t = threadIdx.x, step = c * L + t;
    // steps past T are identity steps, as masked ones are (f = +inf gives lf = 0, i = -inf): nothing is read
    // for them, and kernels A and B then see a whole chunk whose tail adds nothing to the state or to h
    const bool real = step < T;
    const size_t src = BTHD ? ((size_t)(bh / NH) * T + step) * NH + bh % NH : (size_t)bh * T + step;
    const size_t dst = ((size_t)bh * NC + c) * L + t;
    __shared__ float lf_sh[L];
    __shared__ float max_sh[L / 32];
    const float f = real ? fgate[src] : __int_as_float(0x7f800000);
    const float lfv = -(fmaxf(-f, 0.f) + log1pf(expf(-fabsf(f))));   // log sigmoid: +inf -> 0, -inf -> -inf
    lf_sh[t] = lfv;
    lf_out[dst] = lfv;
    __syncthreads();
    float to_end = 0.f;                                // sum_{j > t} lf_j, from the chunk's end
    for (int j = L - 1; j > t; --j) to_end += lf_sh[j];
    const float av = to_end + (real ? igate[src] : xl_neg_inf());
    a_out[dst] = av;
    float am = av;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) am = fmaxf(am, __shfl_xor_sync(0xffffffffu, am, o));
    if (t % 32 == 0) max_sh[t / 32] = am;
    __syncthreads();
    if (t == 0) {
        float gs = 0.f;                                // b_L: summed from the chunk's start, as kernel B's b
        for (int j = 0; j < L; ++j) gs += lf_sh[j];
        float amax = max_sh[0];
        for (int w = 1; w < L / 32; ++w) amax = fmaxf(amax, max_sh[w]);
        g_out[(size_t)bh * NC + c] = gs;
        // clamped: a chunk of only masked steps (every a_s = -inf) must give e^{a_s - m_next} = 0, never NaN
        amax_out[(size_t)bh * NC + c] = fmaxf(amax, -1e30f);
    }
"""

# kernel A: the recurrence over the chunks of one segment; one block per (Dqk tile, Dv tile, sequence*head)
_RECURRENT_SOURCE = """
    constexpr int WARPS = THREADS / 32;
    constexpr int NTI = DQK / KT, NTJ = DV / VT;
    // the C tile (KT x VT) as mma.sync tiles of 16 rows x 8 columns: warp w owns rows 16 (w % 4) .. + 15 and
    // TPW consecutive 8-column tiles from column 8 TPW (w / 4); its accumulators hold them in the PTX layout
    // (xl_mma_bf16: element e of tile t at row g + 8 (e / 2), column 2c + e % 2; g = lane / 4, c = lane % 4)
    constexpr int TPW = (KT / 16) * (VT / 8) / WARPS;  // 4 at VT 64, 8 at VT 128
    constexpr int KU = L * KT / 8 / THREADS;          // uint4 of the k tile per thread
    constexpr int VU = L * VT / 8 / THREADS;          // uint4 of the v tile per thread
    static_assert(KT == 64 && WARPS == 8 && TPW % 2 == 0 && TPW * 8 * 2 == VT && KU >= 1 && VU >= 1, "tile shape");
    // rows of the staged tiles padded by 16 bytes: unpadded rows of 128/256 bytes all start in the same
    // shared-memory banks, and the 8 rows of an ldmatrix tile would serialize on them
    constexpr int KP = KT + 8, VP = VT + 8;
    const int tj = blockIdx.x % NTJ;
    const int ti = (blockIdx.x / NTJ) % NTI;
    const int bh = blockIdx.x / (NTJ * NTI);
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    const int i0 = ti * KT, j0 = tj * VT;
    const int NH = g_shape[1], NC = g_shape[2];      // chunks of the call (the last one may be partial)
    const int T = BTHD ? k_shape[1] : k_shape[2];     // steps of the call
    const int c0 = SEG * MSC, NCS = NC - c0 < MSC ? NC - c0 : MSC;   // this segment's first chunk and chunk count
    constexpr int KST = BTHD ? K_ROW : DQK, VST = BTHD ? V_ROW : DV;   // elements from one step to the next
    const size_t kb = xl_head_base<BTHD, DQK, K_ROW, K_OFF>(bh, NH, T) + i0;
    const size_t vb = xl_head_base<BTHD, DV, V_ROW, V_OFF>(bh, NH, T) + j0;
    const int mt = warp % 4, nt0 = (warp / 4) * TPW;  // this warp's row tile and first column tile
    const int g8 = lane / 4, c4 = lane % 4;           // the lane's row and column pair in a tile
    const int lm = lane / 8, lr8 = lane % 8;          // the ldmatrix tile this lane addresses, and its row
    const bool n_block = tj == 0 && tid < KT;         // the Dv-tile-0 blocks carry n
    const bool m_block = ti == 0 && tj == 0 && tid == 0;

    __shared__ __align__(16) __nv_bfloat16 kw_sh[L * KP];   // k_s e^{a_s - m_next} (bf16), [s][i]
    __shared__ __align__(16) __nv_bfloat16 k_sh[L * KT];    // k as loaded, for n's float32 sum
    __shared__ __align__(16) __nv_bfloat16 v_sh[L * VP];    // [s][j]
    __shared__ float w_sh[L];
    constexpr int NP = THREADS / KT;                  // n's sum over s in NP parts (all threads of a tile-0 block)
    static_assert(NP * KT == THREADS && L % NP == 0, "n parts");
    __shared__ float n_part[NP][KT];

    // element e of the lane's tile t: C row i0 + crow(e), column j0 + ccol(t)
    auto crow = [&](int e) { return 16 * mt + g8 + 8 * (e / 2); };
    auto ccol = [&](int t) { return 8 * (nt0 + t) + 2 * c4; };
    // the incoming state: C straight into the accumulators, n, m; without HAS_STATE zeros (a fresh state: C0, n0,
    // m0 are stand-ins, never read)
    float acc[TPW][4];
#pragma unroll
    for (int t = 0; t < TPW; ++t) {
#pragma unroll
        for (int h2 = 0; h2 < 2; ++h2) {
            const float2 x = HAS_STATE ? *reinterpret_cast<const float2*>(
                C0 + ((size_t)bh * DQK + i0 + crow(2 * h2)) * DV + j0 + ccol(t)) : make_float2(0.f, 0.f);
            acc[t][2 * h2] = x.x;
            acc[t][2 * h2 + 1] = x.y;
        }
    }
    float n_reg = HAS_STATE && n_block ? n0[(size_t)bh * DQK + i0 + tid] : 0.f;
    float m = HAS_STATE ? m0[bh] : 0.f;

    // next chunk's k, v tiles and gate values, fetched into registers while this chunk computes
    uint4 kr[KU], vr[VU];
    float ar[KU], aw = 0.f, gc = 0.f, ac = 0.f;
    // steps past T (a final partial chunk) are never read: k, v as zeros, their weight e^{a_s - m_next} is 0
    auto fetch = [&](int cg) {
        const int real = T - cg * L;                  // real steps of chunk cg (>= L but in a final partial one)
        const size_t arow = ((size_t)bh * NC + cg) * L;
#pragma unroll
        for (int r = 0; r < KU; ++r) {
            const int u = tid + r * THREADS, s = u / (KT / 8), col = (u % (KT / 8)) * 8;
            kr[r] = s < real ? *reinterpret_cast<const uint4*>(k + kb + (size_t)(cg * L + s) * KST + col)
                             : make_uint4(0u, 0u, 0u, 0u);
            ar[r] = alog[arow + s];
        }
#pragma unroll
        for (int r = 0; r < VU; ++r) {
            const int u = tid + r * THREADS, s = u / (VT / 8), col = (u % (VT / 8)) * 8;
            vr[r] = s < real ? *reinterpret_cast<const uint4*>(v + vb + (size_t)(cg * L + s) * VST + col)
                             : make_uint4(0u, 0u, 0u, 0u);
        }
        if (tid < L) aw = alog[arow + tid];
        gc = g[(size_t)bh * NC + cg];
        ac = amax[(size_t)bh * NC + cg];
    };
    if (NCS > 0) fetch(c0);

    float decay_prev = 0.f;
    auto n_combine = [&]() {                          // n = decay n + the previous chunk's parts
        float s = 0.f;
#pragma unroll
        for (int p = 0; p < NP; ++p) s += n_part[p][tid];
        n_reg = decay_prev * n_reg + s;
    };
    for (int c = 0; c < NCS; ++c) {
        const float m_next = fmaxf(gc + m, ac);
        const float decay = expf(gc + m - m_next);
        if (c > 0 && n_block) n_combine();            // the parts were written before the last __syncthreads

        // 1. the state at this chunk's start: C rounded to bf16 (kernel B's q C operand) from the accumulators,
        //    a bf16 pair a store, n and m float32
        const size_t st = (size_t)bh * NCS + c;
#pragma unroll
        for (int t = 0; t < TPW; ++t) {
#pragma unroll
            for (int h2 = 0; h2 < 2; ++h2)
                *reinterpret_cast<__nv_bfloat162*>(Cs + (st * DQK + i0 + crow(2 * h2)) * DV + j0 + ccol(t)) =
                    __floats2bfloat162_rn(acc[t][2 * h2], acc[t][2 * h2 + 1]);
        }
        if (n_block) ns[st * DQK + i0 + tid] = n_reg;
        if (m_block) ms[st] = m;

        // 2. stage k (as loaded and weighted by e^{a_s - m_next}, rounded to bf16) and v
#pragma unroll
        for (int r = 0; r < KU; ++r) {
            const int u = tid + r * THREADS;
            const float w = expf(ar[r] - m_next);
            float x[8];
            xl_to_float(kr[r], x, (const __nv_bfloat16*)nullptr);
#pragma unroll
            for (int e = 0; e < 8; ++e) x[e] *= w;
            *reinterpret_cast<uint4*>(kw_sh + (u / (KT / 8)) * KP + (u % (KT / 8)) * 8) = xl_pack(x, kw_sh);
            reinterpret_cast<uint4*>(k_sh)[u] = kr[r];
        }
#pragma unroll
        for (int r = 0; r < VU; ++r) {
            const int u = tid + r * THREADS;
            *reinterpret_cast<uint4*>(v_sh + (u / (VT / 8)) * VP + (u % (VT / 8)) * 8) = vr[r];
        }
        if (tid < L) w_sh[tid] = expf(aw - m_next);
        __syncthreads();
        if (c + 1 < NCS) fetch(c0 + c + 1);

        // 3. C = decay C + (k w)^T v on the tensor cores, float32 accumulation, 16 steps s an mma: the A operand
        //    (rows i, k = s) and the B operand (k = s, columns j) both from [s][.] tiles by transposed ldmatrix
#pragma unroll
        for (int t = 0; t < TPW; ++t) {
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[t][e] *= decay;
        }
#pragma unroll
        for (int kk = 0; kk < L / 16; ++kk) {
            // tiles 0..3: (s 0-7, i 0-7), (s 0-7, i 8-15), (s 8-15, i 0-7), (s 8-15, i 8-15) = a[0..3]
            unsigned a[4];
            xl_ldmatrix_x4_trans(a, kw_sh + (16 * kk + 8 * (lm / 2) + lr8) * KP + 16 * mt + 8 * (lm % 2));
#pragma unroll
            for (int t = 0; t < TPW; t += 2) {
                // tiles 0..3: (s 0-7, tile t), (s 8-15, tile t), (s 0-7, tile t+1), (s 8-15, tile t+1)
                unsigned b[4];
                xl_ldmatrix_x4_trans(b, v_sh + (16 * kk + 8 * (lm % 2) + lr8) * VP + 8 * (nt0 + t + lm / 2));
                xl_mma_bf16(acc[t], a, b[0], b[1]);
                xl_mma_bf16(acc[t + 1], a, b[2], b[3]);
            }
        }
        // n's sum_s w_s k_s in float32, in NP parts of L / NP steps (combined at the next chunk's start)
        if (tj == 0) {
            const int i = tid % KT, p = tid / KT;
            float s = 0.f;
#pragma unroll
            for (int j = p * (L / NP); j < (p + 1) * (L / NP); ++j) s += w_sh[j] * __bfloat162float(k_sh[j * KT + i]);
            n_part[p][i] = s;
        }
        decay_prev = decay;
        m = m_next;
        __syncthreads();                              // the next chunk overwrites the staged tiles
    }

    // the final state, float32
#pragma unroll
    for (int t = 0; t < TPW; ++t) {
#pragma unroll
        for (int h2 = 0; h2 < 2; ++h2)
            *reinterpret_cast<float2*>(C_out + ((size_t)bh * DQK + i0 + crow(2 * h2)) * DV + j0 + ccol(t)) =
                make_float2(acc[t][2 * h2], acc[t][2 * h2 + 1]);
    }
    if (NCS > 0 && n_block) n_combine();
    if (n_block) n_out[(size_t)bh * DQK + i0 + tid] = n_reg;
    if (m_block) m_out[bh] = m;
"""

# kernel B: the output of one chunk's Dv tile; one block per (Dv tile, chunk of the segment, sequence*head)
_PARALLEL_SOURCE = """
    constexpr int WARPS = THREADS / 32;
    constexpr int KS = 64;                            // Dqk slice
    constexpr int NTJ = DV / VT;
    // mma.sync tiles (16 rows x 8 columns, PTX layout: xl_mma_bf16): warp w owns rows t = 16 (w % 4) .. + 15, of S
    // the 4 column tiles s = 32 (w / 4) .., of the output the VT / 16 tiles j = (VT / 2) (w / 4) ..
    constexpr int SPW = L / 8 / 2;                    // S tiles per warp
    constexpr int OPW = VT / 8 / 2;                   // output tiles per warp
    constexpr int QU = L * KS / 8 / THREADS;          // uint4 of a q (or k) slice per thread
    constexpr int CU = KS * VT / 8 / THREADS;         // uint4 of a C slice per thread
    constexpr int VU = L * VT / 8 / THREADS;          // uint4 of the v tile per thread
    static_assert(L == 64 && WARPS == 8 && SPW % 2 == 0 && OPW % 2 == 0 && DQK % KS == 0, "tile shape");
    // rows of the staged tiles padded by 16 bytes (see kernel A)
    constexpr int QP = KS + 8, CP = VT + 8, SP = L + 8;
    // one buffer, three plans (bytes): step 1 q | k slices, C slice; steps 2-3 S (float) | log D (float) | S' (bf16);
    // step 4 v, S' kept
    constexpr int OFF_K = L * QP * 2, OFF_C = 2 * L * QP * 2, END1 = OFF_C + KS * CP * 2;
    constexpr int OFF_D = L * L * 4, OFF_SB = 2 * L * L * 4, END3 = OFF_SB + L * SP * 2;
    constexpr int END4 = L * CP * 2;
    constexpr int BUF = END1 > END3 ? END1 : END3;
    static_assert(END4 <= OFF_SB && OFF_C % 16 == 0 && OFF_K % 16 == 0, "shared memory plan");
    const int NCW = lf_shape[2] / L;                  // chunks of the call (the last one may be partial)
    const int c0 = SEG * MSC, NCS = NCW - c0 < MSC ? NCW - c0 : MSC;  // this segment's first chunk and chunk count
    const int tj = blockIdx.x % NTJ;
    const int c = (blockIdx.x / NTJ) % NCS;
    const int bh = blockIdx.x / (NTJ * NCS);
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    const int T = BTHD ? igate_shape[1] : igate_shape[2], NH = lf_shape[1];   // steps of the call
    const int cg = c0 + c;
    // this chunk's real steps: fewer than L in a final partial chunk, whose steps past T are never read (q, k, v
    // as zeros, i = -inf: identities, as the gates kernel made them) nor written
    const int real = T - cg * L < L ? T - cg * L : L;
    constexpr int QST = BTHD ? Q_ROW : DQK, KST = BTHD ? K_ROW : DQK, VST = BTHD ? V_ROW : DV;
    const __nv_bfloat16* qp = q + xl_head_base<BTHD, DQK, Q_ROW, Q_OFF>(bh, NH, T) + (size_t)cg * L * QST;
    const __nv_bfloat16* kp = k + xl_head_base<BTHD, DQK, K_ROW, K_OFF>(bh, NH, T) + (size_t)cg * L * KST;
    const size_t st = (size_t)bh * NCS + c;           // this chunk's start state
    const int j0 = tj * VT;
    const int mt = warp % 4;                          // this warp's row tile (16 steps t)
    const int s0 = (warp / 4) * (8 * SPW);            // its first S column (s)
    const int o0 = (warp / 4) * (8 * OPW);            // its first output column (of the Dv tile)
    const int g8 = lane / 4, c4 = lane % 4;           // the lane's row and column pair in a tile
    const int lm = lane / 8, lr8 = lane % 8;          // the ldmatrix tile this lane addresses, and its row
    const float scale = 1.0f / sqrtf((float)DQK);
    const float eps = __int_as_float(EPS_BITS);
    const float m_k = ms[st];

    __shared__ __align__(128) unsigned char smem[BUF];
    __nv_bfloat16* q_sh = reinterpret_cast<__nv_bfloat16*>(smem);
    __nv_bfloat16* k_sh = reinterpret_cast<__nv_bfloat16*>(smem + OFF_K);
    __nv_bfloat16* c_sh = reinterpret_cast<__nv_bfloat16*>(smem + OFF_C);
    float* s_f = reinterpret_cast<float*>(smem);
    float* d_f = reinterpret_cast<float*>(smem + OFF_D);
    __nv_bfloat16* s_b = reinterpret_cast<__nv_bfloat16*>(smem + OFF_SB);
    __nv_bfloat16* v_sh = reinterpret_cast<__nv_bfloat16*>(smem);
    __shared__ float lf_sh[L], i_sh[L], b_sh[L], e_sh[L], den_sh[L], di_sh[L], n_sh[KS];

    if (tid < L) {
        lf_sh[tid] = lf[(size_t)bh * NCW * L + (size_t)cg * L + tid];
        const size_t gi = BTHD ? ((size_t)(bh / NH) * T + cg * L + tid) * NH + bh % NH : (size_t)bh * T + cg * L + tid;
        i_sh[tid] = tid < real ? igate[gi] : xl_neg_inf();
    }

    // 1. S = q k^T and q C_k over Dqk slices (bf16 mma, float32 accumulators); q . n_k in float32
    float s_acc[SPW][4], o_acc[OPW][4];
#pragma unroll
    for (int f = 0; f < SPW; ++f)
#pragma unroll
        for (int e = 0; e < 4; ++e) s_acc[f][e] = 0.f;
#pragma unroll
    for (int f = 0; f < OPW; ++f)
#pragma unroll
        for (int e = 0; e < 4; ++e) o_acc[f][e] = 0.f;
    const int drow = tid / 4, dpart = tid % 4;        // q . n: 4 threads per row, 16 columns each
    float di = 0.f;
    const __nv_bfloat16* c_blk = Cs + st * DQK * DV + j0;
    for (int ks = 0; ks < DQK; ks += KS) {
#pragma unroll
        for (int r = 0; r < QU; ++r) {
            const int u = tid + r * THREADS, t = u / (KS / 8), col = (u % (KS / 8)) * 8;
            const uint4 zero = make_uint4(0u, 0u, 0u, 0u);
            *reinterpret_cast<uint4*>(q_sh + t * QP + col) =
                t < real ? *reinterpret_cast<const uint4*>(qp + t * QST + ks + col) : zero;
            *reinterpret_cast<uint4*>(k_sh + t * QP + col) =
                t < real ? *reinterpret_cast<const uint4*>(kp + t * KST + ks + col) : zero;
        }
#pragma unroll
        for (int r = 0; r < CU; ++r) {
            const int u = tid + r * THREADS, i = u / (VT / 8), col = (u % (VT / 8)) * 8;
            *reinterpret_cast<uint4*>(c_sh + i * CP + col) = *reinterpret_cast<const uint4*>(c_blk + (size_t)(ks + i) * DV + col);
        }
        if (tid < KS) n_sh[tid] = ns[st * DQK + ks + tid];
        __syncthreads();
#pragma unroll 1
        for (int kk = 0; kk < KS / 16; ++kk) {
            // A = q (rows t, k = i): tiles (t 0-7, i 0-7), (t 8-15, i 0-7), (t 0-7, i 8-15), (t 8-15, i 8-15)
            unsigned a[4];
            xl_ldmatrix_x4(a, q_sh + (16 * mt + 8 * (lm % 2) + lr8) * QP + 16 * kk + 8 * (lm / 2));
#pragma unroll
            for (int f = 0; f < SPW; f += 2) {
                // B = k^T (k = i, columns s), from k's rows: tiles (s of tile f, i 0-7), (same, i 8-15),
                // (s of tile f + 1, i 0-7), (same, i 8-15)
                unsigned b[4];
                xl_ldmatrix_x4(b, k_sh + (s0 + 8 * (f + lm / 2) + lr8) * QP + 16 * kk + 8 * (lm % 2));
                xl_mma_bf16(s_acc[f], a, b[0], b[1]);
                xl_mma_bf16(s_acc[f + 1], a, b[2], b[3]);
            }
#pragma unroll
            for (int f = 0; f < OPW; f += 2) {
                // B = C (k = i, columns j), transposed from C's rows i (as kernel A's v)
                unsigned b[4];
                xl_ldmatrix_x4_trans(b, c_sh + (16 * kk + 8 * (lm % 2) + lr8) * CP + o0 + 8 * (f + lm / 2));
                xl_mma_bf16(o_acc[f], a, b[0], b[1]);
                xl_mma_bf16(o_acc[f + 1], a, b[2], b[3]);
            }
        }
        {
            float x[8];
#pragma unroll
            for (int h2 = 0; h2 < 2; ++h2) {
                xl_to_float(*reinterpret_cast<const uint4*>(q_sh + drow * QP + dpart * 16 + h2 * 8), x,
                            (const __nv_bfloat16*)nullptr);
#pragma unroll
                for (int e = 0; e < 8; ++e) di += x[e] * n_sh[dpart * 16 + h2 * 8 + e];
            }
        }
        __syncthreads();                              // the next slice overwrites q, k, C, n
    }
    di += __shfl_xor_sync(0xffffffffu, di, 1);
    di += __shfl_xor_sync(0xffffffffu, di, 2);
    if (dpart == 0) di_sh[drow] = di;

    uint4 vr[PREFETCH_V ? VU : 1];
    if constexpr (PREFETCH_V) {
#pragma unroll
        for (int r = 0; r < VU; ++r) {
            const int u = tid + r * THREADS, t = u / (VT / 8), col = (u % (VT / 8)) * 8;
            const size_t vb = xl_head_base<BTHD, DV, V_ROW, V_OFF>(bh, NH, T) + (size_t)(cg * L + t) * VST + j0 + col;
            vr[r] = t < real ? *reinterpret_cast<const uint4*>(v + vb) : make_uint4(0u, 0u, 0u, 0u);
        }
    }

    // 2. S to shared memory; log D[t, s] = sum_{s < j <= t} lf_j + i_s by columns (the segment's own sum),
    //    b_t = sum_{j <= t} lf_j
#pragma unroll
    for (int f = 0; f < SPW; ++f)
#pragma unroll
        for (int h2 = 0; h2 < 2; ++h2)
            *reinterpret_cast<float2*>(s_f + (16 * mt + g8 + 8 * h2) * L + s0 + 8 * f + 2 * c4) =
                make_float2(s_acc[f][2 * h2], s_acc[f][2 * h2 + 1]);
    if (tid < L) {
        const int s = tid;
        const float is = i_sh[s];
        float acc = 0.f;
#pragma unroll
        for (int t = 0; t < L; ++t) {
            if (t > s) acc += lf_sh[t];
            d_f[t * L + s] = t >= s ? acc + is : xl_neg_inf();
        }
    } else if (tid == L) {
        float b = 0.f;
        for (int t = 0; t < L; ++t) { b += lf_sh[t]; b_sh[t] = b; }
    }
    __syncthreads();

    // 3. per row t (one warp): m_t, S' = S e^{logD - m_t} scale (bf16 for the product), the denominator
    for (int t = warp; t < L; t += WARPS) {
        const float d0 = d_f[t * L + lane], d1 = d_f[t * L + lane + 32];
        float rm = fmaxf(d0, d1);
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) rm = fmaxf(rm, __shfl_xor_sync(0xffffffffu, rm, o));
        const float bt = b_sh[t];
        const float mt_ = fmaxf(bt + m_k, rm);
        const float s0v = s_f[t * L + lane] * (expf(d0 - mt_) * scale);
        const float s1v = s_f[t * L + lane + 32] * (expf(d1 - mt_) * scale);
        s_b[t * SP + lane] = __float2bfloat16(s0v);
        s_b[t * SP + lane + 32] = __float2bfloat16(s1v);
        const float rs = xl_warp_sum(s0v + s1v);
        if (lane == 0) {
            const float et = expf(bt + m_k - mt_) * scale;    // weight of the chunk's start state, times scale
            e_sh[t] = et;
            den_sh[t] = fmaxf(fabsf(et * di_sh[t] + rs), expf(-mt_)) + eps;
        }
    }
    __syncthreads();
    // v: with PREFETCH_V fetched into registers before steps 2-3 (its load latency hidden behind them, VU uint4
    // more registers a thread), else loaded only now
#pragma unroll
    for (int r = 0; r < VU; ++r) {
        const int u = tid + r * THREADS, t = u / (VT / 8), col = (u % (VT / 8)) * 8;
        if constexpr (PREFETCH_V) {
            *reinterpret_cast<uint4*>(v_sh + t * CP + col) = vr[r];
        } else {
            const size_t vb = xl_head_base<BTHD, DV, V_ROW, V_OFF>(bh, NH, T) + (size_t)(cg * L + t) * VST + j0 + col;
            *reinterpret_cast<uint4*>(v_sh + t * CP + col) =
                t < real ? *reinterpret_cast<const uint4*>(v + vb) : make_uint4(0u, 0u, 0u, 0u);
        }
    }
    __syncthreads();

    // 4. h = (e_t scale q C + S' V) / den: the q C rows scaled in the accumulators, S' V accumulated on top
#pragma unroll
    for (int f = 0; f < OPW; ++f)
#pragma unroll
        for (int e = 0; e < 4; ++e) o_acc[f][e] *= e_sh[16 * mt + g8 + 8 * (e / 2)];
#pragma unroll
    for (int kk = 0; kk < L / 16; ++kk) {
        // A = S' (rows t, k = s), B = V (k = s, columns j) transposed from V's rows s
        unsigned a[4];
        xl_ldmatrix_x4(a, s_b + (16 * mt + 8 * (lm % 2) + lr8) * SP + 16 * kk + 8 * (lm / 2));
#pragma unroll
        for (int f = 0; f < OPW; f += 2) {
            unsigned b[4];
            xl_ldmatrix_x4_trans(b, v_sh + (16 * kk + 8 * (lm % 2) + lr8) * CP + o0 + 8 * (f + lm / 2));
            xl_mma_bf16(o_acc[f], a, b[0], b[1]);
            xl_mma_bf16(o_acc[f + 1], a, b[2], b[3]);
        }
    }
    // h of this segment's TS steps: [B, NH, TS, Dv], or [B, TS, NH, Dv] (BTHD); rows past T are not written
    const int TS = T - c0 * L < NCS * L ? T - c0 * L : NCS * L;
    const size_t hb = (BTHD ? (((size_t)(bh / NH) * TS + c * L) * NH + bh % NH) : (size_t)bh * TS + c * L) * DV + j0;
    const int hst = BTHD ? NH * DV : DV;              // elements from one step to the next
#pragma unroll
    for (int h2 = 0; h2 < 2; ++h2) {
        const int t = 16 * mt + g8 + 8 * h2;
        const float den = den_sh[t];
        if (t < real) {
#pragma unroll
            for (int f = 0; f < OPW; ++f)
                *reinterpret_cast<__nv_bfloat162*>(h + hb + (size_t)t * hst + o0 + 8 * f + 2 * c4) =
                    __floats2bfloat162_rn(o_acc[f][2 * h2] / den, o_acc[f][2 * h2 + 1] / den);
        }
    }
"""

_kernels: dict[str, object] = {}


def _kernel(name: str, inputs: list[str], outputs: list[str], source: str):
    if name not in _kernels:
        _kernels[name] = mx.fast.cuda_kernel(name=name, input_names=inputs, output_names=outputs, source=source,
                                             header=_HEADER)
    return _kernels[name]



def _v_tile(dv: int, wanted: int) -> int:
    return 128 if wanted == 128 and dv % 128 == 0 else 64


def recurrent_v_tile(B: int, NH: int, dqk: int, dv: int) -> int:
    """Kernel A's Dv tile: VT_A, or for "auto" 128 where its B * NH * (Dqk / KT) * (Dv / 128) blocks fit in
    one wave of SMS, else 64."""
    if VT_A != "auto":
        return _v_tile(dv, VT_A)
    one_wave = dv % 128 == 0 and B * NH * (dqk // KT) * (dv // 128) <= SMS
    return 128 if one_wave else 64


class Layout(NamedTuple):
    """Where the kernels find q, k, v and the gates and put h (template constants of the kernels).

    bthd False: q, k [B, NH, T, Dqk], v [B, NH, T, Dv], gates [B, NH, T], h [B, NH, T, Dv] (mlstm_chunkwise's).
    bthd True (the model's): q, k, v as rows [B, T, row] holding head hd's columns at offset + hd * D (the fused
    projection output passed whole, or one projection each), gates [B, T, NH], h [B, T, NH, Dv].
    """
    bthd: bool
    dqk: int
    dv: int
    rows: tuple[int, int, int] = (0, 0, 0)  # row lengths of the q, k, v arrays (bthd)
    offsets: tuple[int, int, int] = (0, 0, 0)  # their first columns (bthd)

    def template(self) -> list:
        rows = self.rows if self.bthd else (self.dqk, self.dqk, self.dv)
        offsets = self.offsets if self.bthd else (0, 0, 0)
        return [("BTHD", self.bthd), ("Q_ROW", rows[0]), ("Q_OFF", offsets[0]), ("K_ROW", rows[1]),
                ("K_OFF", offsets[1]), ("V_ROW", rows[2]), ("V_OFF", offsets[2])]

    def dims(self, igate) -> tuple[int, int, int]:
        """(B, NH, T) from the gates."""
        if self.bthd:
            B, T, NH = igate.shape
            return B, NH, T
        return igate.shape


def _state_applies(state, B: int, NH: int, dqk: int, dv: int) -> bool:
    return state is None or (all(s.dtype == mx.float32 for s in state)
                             and tuple(s.shape for s in state) == ((B, NH, dqk, dv), (B, NH, dqk), (B, NH, 1)))


def applies(q, k, v, igate, fgate, state, chunk_size: int) -> bool:
    """Where the kernels run: see the module doc (dtypes, Dqk and Dv multiples of 64, chunk_size 64, T >= 1)."""
    if not (cuda_available() and env.flag("XLSTM_MLX_CHUNKWISE_CUDA")):
        return False
    if chunk_size != L or q.ndim != 4 or k.ndim != 4 or v.ndim != 4 or igate.ndim != 3 or fgate.ndim != 3:
        return False
    B, NH, T, dqk = q.shape
    dv = v.shape[-1]
    return (q.dtype == k.dtype == v.dtype == mx.bfloat16 and igate.dtype == fgate.dtype == mx.float32
            and k.shape == q.shape and v.shape[:3] == (B, NH, T) and igate.shape == fgate.shape == (B, NH, T)
            and T >= 1 and dqk % KT == 0 and dv % 64 == 0 and _state_applies(state, B, NH, dqk, dv))


def applies_rows(q, k, v, igate, fgate, state, dqk: int, dv: int, offsets=(0, 0, 0), chunk_size: int = L) -> bool:
    """Where mlstm_chunkwise_rows runs: as `applies`, for q, k, v rows [B, T, row] and gates [B, T, NH]; every
    row length and offset a multiple of 8 elements, so that each head's row starts 16-byte aligned (uint4 loads)."""
    if not (cuda_available() and env.flag("XLSTM_MLX_CHUNKWISE_CUDA")):
        return False
    if chunk_size != L or q.ndim != 3 or k.ndim != 3 or v.ndim != 3 or igate.ndim != 3 or fgate.ndim != 3:
        return False
    B, T, NH = igate.shape
    widths = (NH * dqk, NH * dqk, NH * dv)
    return (q.dtype == k.dtype == v.dtype == mx.bfloat16 and igate.dtype == fgate.dtype == mx.float32
            and fgate.shape == igate.shape and all(x.shape[:2] == (B, T) for x in (q, k, v))
            and T >= 1 and dqk % KT == 0 and dv % 64 == 0 and _state_applies(state, B, NH, dqk, dv)
            and all(o >= 0 and o % 8 == 0 and x.shape[2] % 8 == 0 and o + w <= x.shape[2]
                    for x, o, w in zip((q, k, v), offsets, widths)))


def _gate_sums(igate, fgate, nc: int, layout: Layout):
    """lf, a [B, NH, nc*L]; g, a* [B, NH, nc] over the chunks, steps past T as identities (see the module doc)."""
    B, NH, _ = layout.dims(fgate)
    kern = _kernel("xlstm_mlstm_chunk_gates", ["igate", "fgate"], ["lf_out", "a_out", "g_out", "amax_out"],
                   _GATES_SOURCE)
    return kern(inputs=[igate, fgate], template=[("L", L), ("BTHD", layout.bthd)],
                grid=(B * NH * nc * L, 1, 1), threadgroup=(L, 1, 1),
                output_shapes=[(B, NH, nc * L), (B, NH, nc * L), (B, NH, nc), (B, NH, nc)],
                output_dtypes=[mx.float32] * 4)


def _segment_template(seg: int) -> list:
    """Segment `seg` of a call as template constants: its chunks are seg * MSC .. (kernels derive the chunk count
    and T from their inputs' shapes). Not an input array: an array made from host data lives in CUDA managed
    memory, and the first kernel to read it on the GPU waits for the page to migrate (an ncu profile of a 2,048-token
    prefill, 2026-12-02: kernel A 190-540 us in 31 of 32 layers against 78 us, its inputs otherwise alike)."""
    return [("SEG", seg), ("MSC", MAX_SEGMENT_CHUNKS)]


def _recurrent(k, v, gates, state, seg: int, ncs: int, layout: Layout):
    """Kernel A over segment `seg`: the chunk-start states (C_k bf16, n_k, m_k) and the final state (float32).
    state None: the zero state, never read (HAS_STATE false)."""
    B, NH, _ = gates[2].shape
    dqk, dv = layout.dqk, layout.dv
    vt = recurrent_v_tile(B, NH, dqk, dv)
    _, a, g, amax = gates
    C0, n0, m0 = (a, a, a) if state is None else state  # stand-ins of the right dtype: a fill would be a launch
    rec = _kernel("xlstm_mlstm_chunk_recurrent", ["k", "v", "alog", "g", "amax", "C0", "n0", "m0"],
                  ["Cs", "ns", "ms", "C_out", "n_out", "m_out"], _RECURRENT_SOURCE)
    Cs, ns, ms, C, n, m = rec(
        inputs=[k, v, a, g, amax, C0, n0, m0],
        template=[("DQK", dqk), ("DV", dv), ("L", L), ("KT", KT), ("VT", vt), ("THREADS", THREADS),
                  ("HAS_STATE", state is not None), *_segment_template(seg), *layout.template()],
        grid=((dqk // KT) * (dv // vt) * B * NH * THREADS, 1, 1), threadgroup=(THREADS, 1, 1),
        output_shapes=[(B, NH, ncs, dqk, dv), (B, NH, ncs, dqk), (B, NH, ncs), (B, NH, dqk, dv), (B, NH, dqk),
                       (B, NH, 1)],
        output_dtypes=[mx.bfloat16, mx.float32, mx.float32, mx.float32, mx.float32, mx.float32],
    )
    return (Cs, ns, ms), (C, n, m)


def _parallel(q, k, v, igate, gates, starts, seg: int, ncs: int, steps: int, eps: float, layout: Layout):
    """Kernel B over segment `seg`: h of its `steps` steps, [B, NH, steps, Dv] (or [B, steps, NH, Dv]: bthd)."""
    B, NH, _ = gates[2].shape
    dqk, dv = layout.dqk, layout.dv
    vt = _v_tile(dv, VT_B)
    Cs, ns, ms = starts
    par = _kernel("xlstm_mlstm_chunk_parallel", ["q", "k", "v", "lf", "igate", "Cs", "ns", "ms"], ["h"],
                  _PARALLEL_SOURCE)
    (h,) = par(
        inputs=[q, k, v, gates[0], igate, Cs, ns, ms],
        template=[("DQK", dqk), ("DV", dv), ("L", L), ("VT", vt), ("THREADS", THREADS),
                  ("EPS_BITS", float_bits(eps)), ("PREFETCH_V", PREFETCH_V), *_segment_template(seg),
                  *layout.template()],
        grid=((dv // vt) * ncs * B * NH * THREADS, 1, 1), threadgroup=(THREADS, 1, 1),
        output_shapes=[(B, steps, NH, dv) if layout.bthd else (B, NH, steps, dv)], output_dtypes=[mx.bfloat16],
    )
    return h


def _forward(q, k, v, igate, fgate, state, eps: float, layout: Layout):
    """Segments of at most MAX_SEGMENT_CHUNKS chunks, the last chunk partial where L does not divide T: per
    segment kernel A (chunk-start states, final state), then kernel B (h). state None: the zero state (the first
    segment's kernel A starts from zeros without reading any)."""
    _, _, T = layout.dims(igate)
    nc = -(-T // L)
    gates = _gate_sums(igate, fgate, nc, layout)
    hs = []
    for c0 in range(0, nc, MAX_SEGMENT_CHUNKS):
        ncs, seg = min(MAX_SEGMENT_CHUNKS, nc - c0), c0 // MAX_SEGMENT_CHUNKS
        starts, state = _recurrent(k, v, gates, state, seg, ncs, layout)
        hs.append(_parallel(q, k, v, igate, gates, starts, seg, ncs, min(T, (c0 + ncs) * L) - c0 * L, eps, layout))
    return (hs[0] if len(hs) == 1 else mx.concatenate(hs, axis=1 if layout.bthd else 2)), state


def with_ops_gradient(forward, eps: float, ops=None):
    """`forward` (q, k, v, igate, fgate, state, eps) -> (h, state) as an mx.custom_function whose VJP is that of
    `ops` (the same signature; default the MLX-ops scan): a cuda_kernel has no VJP of its own, and training in
    bfloat16 on CUDA differentiates through this path (the backward recomputes the forward in MLX ops).
    Called with (q, k, v, igate, fgate, C, n, m), or without the state (the zero state: both take state None)."""
    if ops is None:
        def ops(q, k, v, igate, fgate, state, eps):
            return mlstm_chunkwise_ops(q, k, v, igate, fgate, state, eps, L)

    @mx.custom_function
    def fused(q, k, v, igate, fgate, *state):
        h, (C1, n1, m1) = forward(q, k, v, igate, fgate, state or None, eps)
        return h, C1, n1, m1

    def by_ops(q, k, v, igate, fgate, *state):
        h, (C1, n1, m1) = ops(q, k, v, igate, fgate, state or None, eps)
        return h, C1, n1, m1

    @fused.vjp
    def fused_vjp(primals, cotangents, outputs):
        _, grads = mx.vjp(by_ops, list(primals), list(cotangents))
        return tuple(grads)

    return fused


_fused: dict[tuple, object] = {}  # (eps, layout) -> the custom function


def _run(layout: Layout, ops, q, k, v, igate, fgate, state, eps: float):
    """state None or a ZeroState: the zero state, passed as none at all (its arrays would be inputs of the
    custom function, so filled before the launch even though the kernels never read them)."""
    key = (eps, layout)
    if key not in _fused:
        _fused[key] = with_ops_gradient(lambda *a: _forward(*a, layout), eps, ops)
    fresh = state is None or isinstance(state, ZeroState)
    h, C, n, m = _fused[key](q, k, v, igate, fgate, *(() if fresh else state))
    return h, (C, n, m)


def mlstm_chunkwise_cuda(q, k, v, igate, fgate, state=None, eps: float = 1e-6, chunk_size: int = 64):
    """mlstm_chunkwise's signature and result (h, (C, n, m)) through the CUDA kernels, any T >= 1 (a final
    partial chunk inside the kernels). Differentiable (by the ops scan's VJP)."""
    dqk, dv = q.shape[-1], v.shape[-1]
    if not applies(q, k, v, igate, fgate, state, chunk_size):
        raise UsageError(f"mlstm_chunkwise_cuda does not apply to q {q.shape} {q.dtype}, v {v.shape} {v.dtype}, "
                         f"gates {igate.dtype}, chunk_size {chunk_size} (needs MLX's CUDA backend, bf16 q/k/v, "
                         f"float32 gates and state, chunk_size {L}, Dqk and Dv multiples of 64)")
    # Row-contiguous once here: transposed views ([B, T, NH, D] -> [B, NH, T, D]) would otherwise be copied by
    # every launch that reads them (each segment's kernels A and B). mlstm_chunkwise_rows reads the model's layout
    # in place instead.
    q, k, v, igate, fgate = (mx.contiguous(x) for x in (q, k, v, igate, fgate))
    return _run(Layout(False, dqk, dv), None, q, k, v, igate, fgate, state, eps)


def mlstm_chunkwise_rows_ops(q, k, v, igate, fgate, state=None, eps: float = 1e-6, *, dqk: int, dv: int,
                             offsets=(0, 0, 0), chunk_size: int = 64):
    """mlstm_chunkwise_rows in MLX ops (any backend, any dtype): the heads cut out of the rows and transposed to
    [B, NH, T, D], the MLX-ops scan, h transposed back to [B, T, NH, Dv]. The kernels' VJP in this layout."""
    B, T, NH = igate.shape

    def heads(x, off, d):
        return x[..., off:off + NH * d].reshape(B, T, NH, d).transpose(0, 2, 1, 3)

    h, state = mlstm_chunkwise_ops(heads(q, offsets[0], dqk), heads(k, offsets[1], dqk), heads(v, offsets[2], dv),
                                   igate.transpose(0, 2, 1), fgate.transpose(0, 2, 1), state, eps, chunk_size)
    return h.transpose(0, 2, 1, 3), state


def mlstm_chunkwise_rows(q, k, v, igate, fgate, state=None, eps: float = 1e-6, *, dqk: int, dv: int,
                         offsets=(0, 0, 0), chunk_size: int = 64):
    """The kernels on the model's layout, with no copy around them: q, k, v rows [B, T, row] holding head hd's
    columns at offsets[x] + hd * D (the fused projection output [B, T, 2 Dqk NH + 2 Dv NH] passed whole three
    times with offsets (0, NH Dqk, 2 NH Dqk), or one projection each with offsets 0), gates [B, T, NH] float32,
    state [B, NH, ...] as mlstm_chunkwise's. Returns h [B, T, NH, Dv] bf16 and the final state (C, n, m)."""
    if not applies_rows(q, k, v, igate, fgate, state, dqk, dv, offsets, chunk_size):
        raise UsageError(f"mlstm_chunkwise_rows does not apply to q {q.shape} {q.dtype}, k {k.shape}, v {v.shape}, "
                         f"gates {igate.shape} {igate.dtype}, Dqk {dqk}, Dv {dv}, offsets {offsets}, chunk_size "
                         f"{chunk_size} (needs MLX's CUDA backend, bf16 rows, float32 gates [B, T, NH] and state, "
                         f"chunk_size {L}, Dqk and Dv multiples of 64, rows and offsets multiples of 8)")
    layout = Layout(True, dqk, dv, (q.shape[2], k.shape[2], v.shape[2]), tuple(offsets))

    def ops(q, k, v, igate, fgate, state, eps):
        return mlstm_chunkwise_rows_ops(q, k, v, igate, fgate, state, eps, dqk=dqk, dv=dv, offsets=offsets)

    # Inputs reach the kernels row-contiguous (mx.fast.cuda_kernel copies any that are not): the fused projection
    # output is a fresh matmul result, so nothing is copied; the gates are [B, T, NH] results of the soft cap.
    return _run(layout, ops, q, k, v, igate, fgate, state, eps)


def label() -> str:
    if cuda_available() and env.flag("XLSTM_MLX_CHUNKWISE_CUDA"):
        return ("fused CUDA kernels (mx.fast.cuda_kernel): gate sums, chunk recurrence, bf16 mma.sync chunk output; "
                "MLX ops where they do not apply")
    why = "off: XLSTM_MLX_CHUNKWISE_CUDA=0" if cuda_available() else "the CUDA kernels need MLX's CUDA backend"
    return f"closed-form chunk scan (MLX ops; {why})"
