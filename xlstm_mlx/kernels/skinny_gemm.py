"""y = x @ w.T (+ bias) for few rows of x (decode: one row per sequence): a bandwidth-bound CUDA kernel.

At decode the matmuls of a step read every weight once for a handful of rows, so their speed is the weight
bytes over the memory bandwidth. MLX's own matmul reads the 7B decode matrices at 2.5-3.3 TB/s on an H100/H200
(the GPU-decode measurements); this kernel aims at the copy bandwidth (~4.3 TB/s measured): 16-byte streaming loads of the
weight, R weight rows per warp so each loaded x vector is reused R times (x stays in L1), several loads in flight
per thread (unrolled), split-K across KSPLIT warps of a block where N is too small to fill the chip, float32
accumulation, a shuffle reduction per warp and a shared-memory one across the split.

    skinny_matmul_ref(x, w, bias=None, w_t=None)   MLX's matmul (what nn.Linear runs): the reference
    skinny_matmul(x, w, bias=None, w_t=None)       the "matmul.skinny" fast form: the tensor-core bf16 GEMV
                                         (kernels/bf16_gemv.py) for bf16 operands it applies to, exactly where
                                         its H200 table says it was timed faster than MLX's matmul
                                         (bf16_gemv.faster_than_mlx), when XLSTM_MLX_BF16_GEMV=1 (off by default:
                                         not faster end to end yet, see bf16_gemv); else
                                         MLX's matmul. This module's own CUDA-core kernel (skinny_matmul_cuda)
                                         stays off (DEFAULT_ON, below: measured slower than MLX's matmul)

x [..., K], w [N, K], bias [N] or None -> [..., N] in x's dtype. Rows beyond MAX_ROWS need the matrix units
(arithmetic per weight byte grows with the rows): those go to MLX's matmul.
"""

from __future__ import annotations

import mlx.core as mx

from xlstm_mlx import env
from xlstm_mlx.kernels import bf16_gemv
from xlstm_mlx.kernels.cuda_common import VEC_HEADER, cuda_available

MAX_ROWS = 8  # CUDA-core FMAs keep up with the weight bytes up to ~8-16 rows; beyond, MLX's GEMM
WARPS = 8  # warps per block

_SOURCE = """
    constexpr int VEC = 16 / sizeof(T);
    constexpr int GROUPS = WARPS / KSPLIT;          // row groups per block
    const int K = x_shape[1];
    const int N = w_shape[0];
    const int KV = K / VEC;                         // 16-byte vectors per row
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int group = warp / KSPLIT, kpart = warp % KSPLIT;
    const int row0 = (blockIdx.x * GROUPS + group) * R;

    float acc[R][M];
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
        for (int m = 0; m < M; ++m) acc[r][m] = 0.f;

    const uint4* wrow[R];
#pragma unroll
    for (int r = 0; r < R; ++r) {                   // rows past N read row N-1; their sums are dropped
        const int n = min(row0 + r, N - 1);
        wrow[r] = reinterpret_cast<const uint4*>(w + (size_t)n * K);
    }
    const uint4* xv = reinterpret_cast<const uint4*>(x);

#pragma unroll UNROLL
    for (int c = kpart * 32 + lane; c < KV; c += 32 * KSPLIT) {
        uint4 wv[R];
#pragma unroll
        for (int r = 0; r < R; ++r) wv[r] = __ldcs(wrow[r] + c);   // read once: stream past the caches
        float wf[R][VEC];
#pragma unroll
        for (int r = 0; r < R; ++r) xl_to_float(wv[r], wf[r], w);
#pragma unroll
        for (int m = 0; m < M; ++m) {
            const uint4 xu = __ldg(xv + (size_t)m * KV + c);          // reused by every warp: L1/L2
            float xf[VEC];
            xl_to_float(xu, xf, x);
#pragma unroll
            for (int r = 0; r < R; ++r)
#pragma unroll
                for (int e = 0; e < VEC; ++e) acc[r][m] = fmaf(wf[r][e], xf[e], acc[r][m]);
        }
    }

    __shared__ float part[WARPS][R * M];
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
        for (int m = 0; m < M; ++m) {
            const float s = xl_warp_sum(acc[r][m]);
            if (lane == 0) part[warp][r * M + m] = s;
        }
    __syncthreads();
    if (kpart == 0) {
        for (int t = lane; t < R * M; t += 32) {
            const int r = t / M, m = t % M, n = row0 + r;
            float s = 0.f;
#pragma unroll
            for (int kp = 0; kp < KSPLIT; ++kp) s += part[group * KSPLIT + kp][t];
            if (n < N) {
                if (HAS_BIAS) s += xl_float(bias[n]);
                xl_set(y + (size_t)m * N + n, s);
            }
        }
    }
"""

_kernels: dict[int, object] = {}


def _kernel(unroll: int):
    if unroll not in _kernels:
        _kernels[unroll] = mx.fast.cuda_kernel(
            name=f"xlstm_skinny_matmul_u{unroll}",
            input_names=["x", "w", "bias"],
            output_names=["y"],
            source=_SOURCE.replace("UNROLL", str(unroll)),
            header=VEC_HEADER,
        )
    return _kernels[unroll]


def skinny_matmul_ref(x: mx.array, w: mx.array, bias: mx.array | None = None, w_t: mx.array | None = None) -> mx.array:
    """MLX's matmul, as nn.Linear computes it. w_t: w.T made once (an evaluated view of w's buffer), so that a
    compiled step's graph has no Transpose node for it (models/xlstm7b/fuse.py FusedLinear); the same product."""
    wt = w.T if w_t is None else w_t
    return x @ wt if bias is None else mx.addmm(bias, x, wt)


def applies(x: mx.array, w: mx.array) -> bool:
    """Whether the CUDA kernel runs for these operands (else skinny_matmul runs the reference)."""
    if not cuda_available() or x.dtype != w.dtype or x.dtype not in (mx.bfloat16, mx.float32) or w.ndim != 2:
        return False
    rows = x.size // x.shape[-1] if x.shape[-1] else 0
    vec = 16 // x.dtype.size
    return 1 <= rows <= MAX_ROWS and x.shape[-1] == w.shape[1] and w.shape[1] % vec == 0


def default_config(rows: int, n: int) -> dict:
    """Rows per warp and split-K for a problem: R=4 reuses each x vector 4x (2 past 4 rows, to keep R*M <= 32
    accumulators); split-K where N/R warps would not fill 132 SMs x ~16 warps."""
    r = 4 if rows <= 4 else 2
    warps_needed = 132 * 16
    ksplit = 1 if n // r >= warps_needed else (2 if n // r >= warps_needed // 2 else 4)
    return {"R": r, "KSPLIT": ksplit, "UNROLL": 4}


def skinny_matmul_cuda(x: mx.array, w: mx.array, bias: mx.array | None = None, *, R: int | None = None,
                       KSPLIT: int | None = None, UNROLL: int | None = None) -> mx.array:
    """The CUDA kernel (no fallback: callers check `applies`); R / KSPLIT / UNROLL override the defaults."""
    K, N = x.shape[-1], w.shape[0]
    lead = x.shape[:-1]
    x2 = x.reshape(-1, K)
    M = x2.shape[0]
    cfg = default_config(M, N)
    R, KSPLIT, UNROLL = R or cfg["R"], KSPLIT or cfg["KSPLIT"], UNROLL or cfg["UNROLL"]
    rows_per_block = (WARPS // KSPLIT) * R
    blocks = -(-N // rows_per_block)
    b = bias if bias is not None else x  # never read without a bias (no mx.zeros launch)
    (y,) = _kernel(UNROLL)(
        inputs=[x2, w, b],
        template=[("T", x.dtype), ("M", M), ("R", R), ("KSPLIT", KSPLIT), ("WARPS", WARPS),
                  ("HAS_BIAS", bias is not None)],
        grid=(blocks * WARPS * 32, 1, 1),
        threadgroup=(WARPS * 32, 1, 1),
        output_shapes=[(M, N)],
        output_dtypes=[x.dtype],
    )
    return y.reshape(*lead, N)


# Measured on an H200 (benchmarks/results/gpu_kernels_h200.md, 2026-12-01): this kernel reads the 7B decode
# matrices at 0.8-3.3 TB/s (bf16, one row) where MLX's matmul reads them at 1.3-3.7 TB/s, and the model's decode
# step is faster with MLX's matmul. So it is not the default on any backend: the registry's fast form is MLX's
# matmul until a kernel beats it. skinny_matmul_cuda stays here, checked (tests/kernels/test_cuda_kernels.py)
# and timed (benchmarks/gpu_kernels.py), as the base for that work.
DEFAULT_ON = False


def uses_bf16_gemv(x: mx.array, w: mx.array, bias: mx.array | None = None) -> bool:
    """Whether skinny_matmul runs the bf16 GEMV: switched on, operands in its domain, and measured faster than
    MLX's matmul at this (rows, N, K) (with its H200 table empty: never)."""
    return (bf16_gemv.applies(x, w, bias) and bf16_gemv.faster_than_mlx(x.size // x.shape[-1], w.shape[0], w.shape[1])
            and env.flag("XLSTM_MLX_BF16_GEMV"))


def skinny_matmul(x: mx.array, w: mx.array, bias: mx.array | None = None, w_t: mx.array | None = None) -> mx.array:
    if uses_bf16_gemv(x, w, bias):
        return bf16_gemv.bf16_gemv_cuda(x, w, bias)
    if DEFAULT_ON and applies(x, w):
        return skinny_matmul_cuda(x, w, bias)
    return skinny_matmul_ref(x, w, bias, w_t)


def label() -> str:
    if not cuda_available():
        return "MLX matmul (the CUDA bf16 GEMV and skinny GEMM need MLX's CUDA backend)"
    if DEFAULT_ON:
        rest = f"the CUDA skinny GEMM (mx.fast.cuda_kernel) for <= {MAX_ROWS} rows, MLX matmul beyond"
    else:
        rest = "MLX matmul (the CUDA-core skinny GEMM is measured slower on the 7B matrices: off)"
    if not env.flag("XLSTM_MLX_BF16_GEMV"):
        return f"{rest}; the bf16 GEMV off (set XLSTM_MLX_BF16_GEMV=1 to try it: not faster end to end yet)"
    if not any(bf16_gemv.faster_than_mlx(*key) for key in bf16_gemv.H200):
        return f"{rest}; the bf16 GEMV nowhere: {bf16_gemv.label()}"
    return f"{bf16_gemv.label()} (bf16 x and w); elsewhere {rest}"
