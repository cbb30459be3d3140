"""The mLSTM gate pre-activations of a prefill: the float32 input/forget-gate projection and its soft cap, in one pass.

    g      = x @ W.T (+ b)                       x [..., D] the normalized residual (float32), W [2 NH, D]
    i~, f~ = soft_cap(g[..., :NH]), soft_cap(g[..., NH:])      cap * tanh(. / cap); [..., NH] each, float32

    gate_preact_ref(x, weight, bias, num_heads, cap, dtype)   MLX ops, as the block computes them (nn.Linear's
                                                              addmm, the halves cast to the state dtype, then
                                                              math.soft_cap's reference)
    gate_preact(...)                                          one CUDA launch where it applies; elsewhere the same
                                                              ops with the registry's math.soft_cap form

Why: measured on an H200 (7B shape, 2,048-token prefill, Nsight Compute, 2026-12-02), MLX runs the projection as
an SIMT float32 GEMM with split-K (two launches, 21 + 11 us for an output only 16 wide), then one compiled
soft-cap launch per gate over strided halves: ~40 us and four launches a layer, 1.3 ms of the prefill's kernel
time, where the bytes (x read once, 32 MB a layer) take ~9 us. The gates stay float32 end to end
(docs/numerics.md: the projections whose input is the residual stream keep its dtype).

Here one block of THREADS threads takes rows_a_block() rows of x and all 2 NH outputs: x and W come through shared
memory in tiles of KT columns (the next tile's loads issued before the current tile's products, so that they overlap);
each of the PARTS threads of a row sums its own columns of the tile for every output with float32 fmaf (one
running sum per output over all tiles), and the parts are added by a butterfly of warp shuffles. The order of
the sums differs from cuBLAS's, so g differs from the reference in the last float32 bits (a dot product of length D:
|difference| <~ 1e-6 |x| |w| sqrt(D)); the bias, the division by the cap, tanhf and the product are the
reference's own operations in the same order.
Applies where x, W (and b) are float32, D a multiple of 4 (16-byte loads), 2 NH <= MAX_OUT, the state dtype float32.
"""

from __future__ import annotations

import mlx.core as mx

from xlstm_mlx.kernels import fastmath
from xlstm_mlx.kernels.cuda_common import cuda_available, float_bits

THREADS = 256
# PARTS threads share a row (lanes of one warp: the butterfly stays inside it), each summing RPT rows at once, so
# a block takes ROWS = THREADS / PARTS * RPT rows: 16 (a 2,048-row prefill is 128 blocks, one wave of 132 SMs).
# Module settings (the lab times the choices). (16, 1), one thread a row, is bound by the shared-memory reads of W
# (one per thread and row, ~2 TB/s of x and W); (32, 2), a warp a row pair, reads each W vector once for two
# rows: ncu timed 29.3-30.1 against 31.0-31.8 us at the 7B prefill (2,048 x 4,096, 16 outputs) and 149-150
# against 196 us at 8 x 2,048 rows (H200, 2026-12-03, benchmarks/probes/gate_preact_tiles.py).
PARTS, RPT = 32, 2
# columns of x and W a tile (float32), a module setting (the lab times the choices). 128: at the 7B prefill
# (2,048 x 4,096, 16 outputs) ncu timed 31-32 us against 37-38 us for 256 (and 195 against 273 us at 8 x 2,048
# rows; H200, 2026-12-02): the wider tile's 164 registers a thread and 33 KB of shared memory cost more than its
# bytes in flight gain.
KT = 128
MAX_OUT = 32  # 2 NH: one running sum per output a thread (registers)


def rows_a_block() -> int:
    return THREADS // PARTS * RPT


def tile(ng: int) -> int:
    """The tile width for 2 NH = ng outputs: KT, but 128 where ng > 16 (KT 256 would need 49 KB of shared
    memory, over the 48 KB a block may declare statically)."""
    return KT if ng <= 16 else 128

_SOURCE = """
    constexpr int Q = KT / 4;                        // float4 a row of a tile
    constexpr int QP = Q / PARTS;                    // float4 a part sums, per tile
    constexpr int XP = KT + 4;                       // padded x rows: the 8 threads of a quarter-warp phase that
                                                     // read one row hit 8 distinct 16-byte bank groups
    constexpr int XL = ROWS * Q / THREADS;           // float4 of the x tile a thread loads
    constexpr int WL = (NG * Q + THREADS - 1) / THREADS;   // float4 of the W tile a thread loads
    static_assert(Q % PARTS == 0 && (ROWS * Q) % THREADS == 0 && PARTS <= 32 && (32 % PARTS) == 0
                  && (THREADS / PARTS) * RPT == ROWS, "tiles");
    const int D = x_shape[x_ndim - 1];
    size_t rows = 1;
    for (int a = 0; a < x_ndim - 1; ++a) rows *= x_shape[a];
    const int tid = threadIdx.x, r0 = (tid / PARTS) * RPT, p = tid % PARTS;   // rows r0 .. r0 + RPT - 1
    const size_t row0 = (size_t)blockIdx.x * ROWS;

    __shared__ __align__(16) float xs[ROWS * XP];
    __shared__ __align__(16) float ws[NG * KT];
    float acc[RPT][NG];
#pragma unroll
    for (int i = 0; i < RPT; ++i) {
#pragma unroll
        for (int j = 0; j < NG; ++j) acc[i][j] = 0.f;
    }

    float4 xr[XL], wr[WL];
    const float4 zero = make_float4(0.f, 0.f, 0.f, 0.f);
    auto fetch = [&](int k0) {                       // columns k0 .. k0 + KT - 1 (zeros past D: D % 4 == 0)
#pragma unroll
        for (int u = 0; u < XL; ++u) {
            const int idx = tid + u * THREADS, rr = idx / Q, col = k0 + (idx % Q) * 4;
            xr[u] = row0 + rr < rows && col < D ? *reinterpret_cast<const float4*>(x + (row0 + rr) * D + col) : zero;
        }
#pragma unroll
        for (int u = 0; u < WL; ++u) {
            const int idx = tid + u * THREADS, j = idx / Q, col = k0 + (idx % Q) * 4;
            wr[u] = idx < NG * Q && col < D ? *reinterpret_cast<const float4*>(weight + (size_t)j * D + col) : zero;
        }
    };
    fetch(0);
    for (int k0 = 0; k0 < D; k0 += KT) {
#pragma unroll
        for (int u = 0; u < XL; ++u) {
            const int idx = tid + u * THREADS;
            *reinterpret_cast<float4*>(xs + (idx / Q) * XP + (idx % Q) * 4) = xr[u];
        }
#pragma unroll
        for (int u = 0; u < WL; ++u) {
            const int idx = tid + u * THREADS;
            if (idx < NG * Q) *reinterpret_cast<float4*>(ws + idx * 4) = wr[u];
        }
        __syncthreads();
        if (k0 + KT < D) fetch(k0 + KT);             // in flight while this tile's products run
#pragma unroll
        for (int e = 0; e < QP; ++e) {
            const int qq = e * PARTS + p;            // a part's float4: PARTS apart, so a phase reads consecutive ones
            float4 xv[RPT];
#pragma unroll
            for (int i = 0; i < RPT; ++i) xv[i] = *reinterpret_cast<const float4*>(xs + (r0 + i) * XP + qq * 4);
#pragma unroll
            for (int j = 0; j < NG; ++j) {           // each W vector read once for the thread's RPT rows
                const float4 wv = *reinterpret_cast<const float4*>(ws + j * KT + qq * 4);
#pragma unroll
                for (int i = 0; i < RPT; ++i) {
                    acc[i][j] = fmaf(xv[i].x, wv.x, acc[i][j]);
                    acc[i][j] = fmaf(xv[i].y, wv.y, acc[i][j]);
                    acc[i][j] = fmaf(xv[i].z, wv.z, acc[i][j]);
                    acc[i][j] = fmaf(xv[i].w, wv.w, acc[i][j]);
                }
            }
        }
        __syncthreads();                             // the next tile overwrites xs and ws
    }
    // the PARTS partial sums of each output: a butterfly inside the row's lanes (all of them end with the totals)
#pragma unroll
    for (int i = 0; i < RPT; ++i) {
#pragma unroll
        for (int j = 0; j < NG; ++j) {
#pragma unroll
            for (int o = PARTS / 2; o > 0; o >>= 1) acc[i][j] += __shfl_xor_sync(0xffffffffu, acc[i][j], o);
        }
    }
    const float cap = __int_as_float(CAP_BITS);
#pragma unroll
    for (int i = 0; i < RPT; ++i) {
        const size_t row = row0 + r0 + i;
        if (row >= rows) break;
#pragma unroll
        for (int j = 0; j < NG; ++j) {               // output j by the part j % PARTS (j known at compile time)
            if (j % PARTS != p) continue;
            float g = acc[i][j];
            if (HAS_BIAS) g += bias[j];
            if (HAS_CAP) g = tanhf(g / cap) * cap;
            if (j < NG / 2) igate[row * (NG / 2) + j] = g;
            else fgate[row * (NG / 2) + j - NG / 2] = g;
        }
    }
"""

_kernel = None


def _check(x, weight, num_heads: int) -> None:
    if weight.ndim != 2 or weight.shape != (2 * num_heads, x.shape[-1]):
        raise ValueError(f"gate_preact: weight {tuple(weight.shape)} is not [2 * {num_heads} heads, "
                         f"{x.shape[-1]}] for x {tuple(x.shape)}")


def _ops(x, weight, bias, num_heads: int, cap: float | None, dtype, soft_cap):
    _check(x, weight, num_heads)
    w = weight.T
    g = x @ w if bias is None else mx.addmm(bias, x, w)  # as nn.Linear
    i, f = g[..., :num_heads].astype(dtype), g[..., num_heads:].astype(dtype)
    return (i, f) if cap is None else (soft_cap(i, cap), soft_cap(f, cap))


def gate_preact_ref(x, weight, bias, num_heads: int, cap: float | None, dtype=mx.float32):
    """(i~, f~) [..., NH] each in `dtype`: the projection as nn.Linear computes it, then math.soft_cap's reference."""
    return _ops(x, weight, bias, num_heads, cap, dtype, fastmath.soft_cap_ref)


def applies(x, weight, bias, num_heads: int, dtype=mx.float32) -> bool:
    f32 = mx.float32
    return (cuda_available() and x.dtype == f32 and weight.dtype == f32 and dtype == f32 and x.ndim >= 1
            and (bias is None or (bias.dtype == f32 and bias.shape == (2 * num_heads,)))
            and weight.shape == (2 * num_heads, x.shape[-1]) and 2 * num_heads <= MAX_OUT
            and x.shape[-1] % 4 == 0 and x.size > 0)



def gate_preact_cuda(x, weight, bias, num_heads: int, cap: float | None, dtype=mx.float32):
    global _kernel
    if not applies(x, weight, bias, num_heads, dtype):
        _check(x, weight, num_heads)
        raise ValueError(f"gate_preact_cuda does not apply to x {tuple(x.shape)} {x.dtype}, weight {weight.dtype}, "
                         f"{num_heads} heads, state dtype {dtype} (needs MLX's CUDA backend, float32 throughout, "
                         f"the last dimension a multiple of 4, at most {MAX_OUT // 2} heads)")
    if _kernel is None:
        _kernel = mx.fast.cuda_kernel(name="xlstm_gate_preact", input_names=["x", "weight", "bias"],
                                      output_names=["igate", "fgate"], source=_SOURCE)
    rows = x.size // x.shape[-1]
    i, f = _kernel(
        inputs=[x, weight, bias if bias is not None else weight],  # no bias: never read (HAS_BIAS)
        template=[("NG", 2 * num_heads), ("THREADS", THREADS), ("PARTS", PARTS), ("RPT", RPT),
                  ("ROWS", rows_a_block()), ("KT", tile(2 * num_heads)),
                  ("HAS_BIAS", bias is not None), ("HAS_CAP", cap is not None),
                  ("CAP_BITS", float_bits(cap if cap is not None else 1.0))],
        grid=(-(-rows // rows_a_block()) * THREADS, 1, 1),
        threadgroup=(THREADS, 1, 1),
        output_shapes=[(*x.shape[:-1], num_heads)] * 2,
        output_dtypes=[mx.float32] * 2,
    )
    return i, f


def gate_preact(x, weight, bias, num_heads: int, cap: float | None, dtype=mx.float32):
    if applies(x, weight, bias, num_heads, dtype):
        return gate_preact_cuda(x, weight, bias, num_heads, cap, dtype)
    return _ops(x, weight, bias, num_heads, cap, dtype, fastmath.soft_cap)  # the registry's soft-cap form


def label() -> str:
    if cuda_available():
        return ("fused CUDA kernel (mx.fast.cuda_kernel): float32 gate projection and soft cap in one launch "
                "(prefill); MLX ops where it does not apply")
    return "MLX ops (float32 matmul, soft cap; the fused CUDA kernel needs MLX's CUDA backend)"
