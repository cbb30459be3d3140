"""y = x @ dequantize(w).T (+ bias) for few rows of x and MLX's affine 4-/8-bit weights: a bandwidth-bound CUDA kernel.

At decode each quantized matmul reads its packed weight once for a handful of rows, so its floor is the packed
bytes (weight + scales + biases) over the memory bandwidth. MLX's own quantized matrix-vector kernel reads the
7B decode matrices at ~0.9 TB/s on an H200 (4-bit, one row), a quarter of what its bf16 GEMV reaches, so 4-bit
decode gains nothing from its 3.5x fewer bytes. This kernel dequantizes in registers while streaming the weight.

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
So a 16-byte vector of the packed row (4 words) holds 128 / bits consecutive weights (32 at 4-bit, 16 at 8-bit),
always inside one group (group sizes 32, 64, 128 are multiples of those counts).

Kernel design (kernels/skinny_gemm.py's, with the dequantization in registers):
  - a block of WARPS warps; each warp owns R consecutive output rows (R weight rows share every x load) and a
    KSPLIT-th of K (split-K where N / R warps would not fill the chip; a shared-memory sum across the split);
  - each lane streams 16-byte vectors of its R packed rows with __ldcs (read once: past the caches), U vectors
    per row in flight (all loads of a step issued before any arithmetic), plus each vector's group scale/bias;
  - a weight code becomes a float exactly through the exponent trick, with one mask per weight and one shift
    per 32-bit word (xq_dequant8): the bits 0x4B000000 | (word & (mask << bits*j)) are the float
    2^23 + q * 2^(bits*j) for the weights of the low 16 bits (j < 16/bits), minus 2^23 gives q * 2^(bits*j)
    exactly; the word's upper 16 bits, shifted down, the same; the scale comes pre-multiplied by 2^(-bits*j)
    (exact, a power of two, for |scale| >= 2^-114), so fmaf(q * 2^(bits*j), scale * 2^(-bits*j), bias) is
    fmaf(q, scale, bias): the exact q*scale + bias rounded once to float32 (mx.dequantize in float32 rounds
    q*scale and then the sum: at most 1 ulp apart); then acc += w * x in float32;
  - x (M rows of K, bf16 or float32) is read with __ldg in 16-byte vectors: the same few KB are read by every
    warp, so they stay in L1/L2;
  - a shuffle reduction per warp, bias added in float32, one rounding to x's dtype.
Rows of x beyond MAX_ROWS go to MLX (quantized_matmul_ref): more rows need the matrix units.
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np

from xlstm_mlx.kernels.cuda_common import VEC_HEADER, cuda_available

MAX_ROWS = 8  # x rows the kernel takes (decode batch); beyond, MLX's quantized matmul (matrix units)
WARPS = 8  # warps per block
BITS = (4, 8)
GROUP_SIZES = (32, 64, 128)
DTYPES = (mx.bfloat16, mx.float32)  # x, scales, biases (and bias) share one of these

_HEADER = VEC_HEADER + """
// The 8 weights of sub-vector q (0 .. 128/BITS/8 - 1) of a 16-byte packed vector, dequantized: q * scale + bias.
// Word layout (MLX affine): weight j of a word sits in bits [BITS*j, BITS*(j+1)), lowest first.
// A code becomes a float without a shift per weight: the bits 0x4B000000 | (word & (MASK << BITS*j)) are the
// float 2^23 + q * 2^(BITS*j) (exact while BITS*(j+1) <= 16 < 23, the mantissa's width), so subtracting 2^23
// gives q * 2^(BITS*j) exactly; the scale comes pre-multiplied by 2^(-BITS*j) (sj[j], exact: a power of two),
// so fmaf(q * 2^(BITS*j), scale * 2^(-BITS*j), bias) rounds the exact q * scale + bias once, as fmaf(q, scale,
// bias) would. The upper 16 bits of a word take one shift, then the same masks.
template <int BITS>
__device__ __forceinline__ void xq_dequant8(const uint4& v, int q, const float* sj, float bias, float* out) {
    constexpr int PER = 32 / BITS;                  // weights per 32-bit word
    constexpr int HALF = PER / 2;                   // weights per 16-bit half word
    constexpr unsigned int MASK = (1u << BITS) - 1u;
    const unsigned int words[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int e = 0; e < 8; ++e) {
        const unsigned int word = words[q * (8 / PER) + e / PER];
        const int j = e % PER;                      // position in the word
        const unsigned int half = j < HALF ? word : word >> 16;
        const int jh = j % HALF;                    // position in the half word
        const float code = __uint_as_float(0x4B000000u | (half & (MASK << (BITS * jh)))) - 8388608.0f;
        out[e] = fmaf(code, sj[jh], bias);
    }
}

// 2^(-n) for 0 <= n < 32, exact
#define XQ_POW2_NEG(n) (1.0f / (float)(1u << (n)))

// 8 consecutive x values as floats (16-byte aligned: K is a multiple of 16)
__device__ __forceinline__ void xq_load8(const __nv_bfloat16* p, float* out) {
    xl_to_float(__ldg(reinterpret_cast<const uint4*>(p)), out, p);
}
__device__ __forceinline__ void xq_load8(const float* p, float* out) {
    const uint4* v = reinterpret_cast<const uint4*>(p);
    xl_to_float(__ldg(v), out, p);
    xl_to_float(__ldg(v + 1), out + 4, p);
}
"""

_SOURCE = """
    constexpr int VALS = 128 / BITS;                // weights per 16-byte vector (32 or 16)
    constexpr int SUBS = VALS / 8;                  // 8-weight sub-vectors per vector
    constexpr int HALF = 16 / BITS;                 // weights per 16-bit half word
    constexpr int GROUPS = WARPS / KSPLIT;          // row groups per block
    const int K = x_shape[1];
    const int N = w_shape[0];
    const int CV = K / VALS;                        // 16-byte vectors per packed row
    const int G = scales_shape[1];                  // groups per row (K / GS)
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int group = warp / KSPLIT, kpart = warp % KSPLIT;
    const int row0 = (blockIdx.x * GROUPS + group) * R;

    float acc[R][M];
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
        for (int m = 0; m < M; ++m) acc[r][m] = 0.f;

    int nrow[R];
#pragma unroll
    for (int r = 0; r < R; ++r) nrow[r] = min(row0 + r, N - 1);   // rows past N read row N-1; dropped below
    const uint4* wv4 = reinterpret_cast<const uint4*>(w);

    const int step = 32 * KSPLIT;
    for (int c0 = kpart * 32 + lane; c0 < CV; c0 += step * U) {
        // loads first: U x R streaming 16-byte loads (and their scales/biases) in flight per lane
        uint4 wv[U][R];
        float sc[U][R], bi[U][R];
#pragma unroll
        for (int u = 0; u < U; ++u) {
            const int c = c0 + u * step;
            const int g = (c * VALS) / GS;
#pragma unroll
            for (int r = 0; r < R; ++r) {
                if (c < CV) {
                    wv[u][r] = __ldcs(wv4 + (size_t)nrow[r] * CV + c);
                    sc[u][r] = xl_float(scales[(size_t)nrow[r] * G + g]);
                    bi[u][r] = xl_float(biases[(size_t)nrow[r] * G + g]);
                } else {
                    wv[u][r] = uint4{0u, 0u, 0u, 0u};      // never used: c >= CV skips the arithmetic
                    sc[u][r] = 0.f;
                    bi[u][r] = 0.f;
                }
            }
        }
        // then the arithmetic
#pragma unroll
        for (int u = 0; u < U; ++u) {
            const int c = c0 + u * step;
            if (c < CV) {
                float sj[R][HALF];                  // scale * 2^(-BITS*j), j < HALF (see xq_dequant8)
#pragma unroll
                for (int r = 0; r < R; ++r)
#pragma unroll
                    for (int j = 0; j < HALF; ++j) sj[r][j] = sc[u][r] * XQ_POW2_NEG(BITS * j);
#pragma unroll
                for (int q = 0; q < SUBS; ++q) {
                    float wf[R][8];
#pragma unroll
                    for (int r = 0; r < R; ++r) xq_dequant8<BITS>(wv[u][r], q, sj[r], bi[u][r], wf[r]);
                    const int k = c * VALS + 8 * q;
#pragma unroll
                    for (int m = 0; m < M; ++m) {
                        float xf[8];
                        xq_load8(x + (size_t)m * K + k, xf);
#pragma unroll
                        for (int r = 0; r < R; ++r)
#pragma unroll
                            for (int e = 0; e < 8; ++e) acc[r][m] = fmaf(wf[r][e], xf[e], acc[r][m]);
                    }
                }
            }
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

_kernel_cache = None


def _kernel():
    global _kernel_cache
    if _kernel_cache is None:
        _kernel_cache = mx.fast.cuda_kernel(
            name="xlstm_quant_gemv",
            input_names=["x", "w", "scales", "biases", "bias"],
            output_names=["y"],
            source=_SOURCE,
            header=_HEADER,
        )
    return _kernel_cache


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


SMS = 132  # multiprocessors of an H100 / H200 (SXM): the wave size below
BLOCKS_PER_SM = 2  # the configs below stay within 128 registers a thread (nvcc -Xptxas -v, sm_90): 2 blocks of 8 warps


# One row, measured on the H200 (benchmarks/results/gpu_h200_2026-12-02.md, the quantized-matmul lab): the best
# of the configurations tried, against the register-count rule below: 4-bit R4/K1/U1 36.4 us on 4096->12288 (rule:
# 50.8), 49.8 on 4096->21888 (72.8), 95.5 on 4096->50304 (103.8); 8-bit R4/K2/U2 45.6 on 4096->12288 (53.6).
MEASURED_ONE_ROW = {4: {"R": 4, "KSPLIT": 1, "U": 1}, 8: {"R": 4, "KSPLIT": 2, "U": 2}}


def default_config(rows: int, n: int, k_vectors: int, bits: int | None = None) -> dict:
    """R weight rows per warp (each x vector loaded from L1 serves R rows), U 16-byte vectors per row in flight,
    picked to stay within 128 registers with bf16 x (2 blocks of 8 warps per SM; checked with nvcc for sm_90 by
    the tests): R=4, U=2 at one row; R=2, U=4 at two; R=2, U=2 at 3-5; R=2, U=1 at 6-8 (the R x M accumulators
    take the registers; there the FMAs, not the loads in flight, bound the time). KSPLIT (1, 2, 4, 8) fills the
    last wave of blocks best (equal blocks finish together, so a wave 1.45 full runs at 73%), the
    smallest of those within 3% of the best, among those that give every lane U vectors of the k_vectors of a
    row (16-byte vectors: K * bits / 128), so no warp of the split sits idle."""
    if rows == 1 and bits in MEASURED_ONE_ROW:
        cfg = dict(MEASURED_ONE_ROW[bits])
        if 32 * cfg["KSPLIT"] * cfg["U"] <= k_vectors:  # every lane of the split has its U vectors
            return cfg
    r, u = (4, 2) if rows <= 1 else (2, 4) if rows == 2 else (2, 2) if rows <= 5 else (2, 1)
    slots = SMS * BLOCKS_PER_SM

    def fill(ks):
        blocks = -(-n // ((WARPS // ks) * r))
        return blocks / (-(-blocks // slots) * slots)

    splits = [ks for ks in (1, 2, 4, 8) if ks == 1 or 32 * ks * u <= k_vectors]
    best = max(fill(ks) for ks in splits)
    ksplit = next(ks for ks in splits if fill(ks) >= best - 0.03)
    return {"R": r, "KSPLIT": ksplit, "U": u}


def quantized_gemv_cuda(x: mx.array, w: mx.array, scales: mx.array, biases: mx.array, bias: mx.array | None = None,
                        group_size: int = 64, bits: int = 4, mode: str = "affine", *, R: int | None = None,
                        KSPLIT: int | None = None, U: int | None = None) -> mx.array:
    """The CUDA kernel (no fallback: callers check `applies`); R / KSPLIT / U override the defaults."""
    K, N = x.shape[-1], w.shape[0]
    lead = x.shape[:-1]
    x2 = x.reshape(-1, K)
    M = x2.shape[0]
    cfg = default_config(M, N, K * bits // 128, bits)
    R, KSPLIT, U = R or cfg["R"], KSPLIT or cfg["KSPLIT"], U or cfg["U"]
    if WARPS % KSPLIT:
        raise ValueError(f"KSPLIT={KSPLIT} must divide the {WARPS} warps of a block")
    rows_per_block = (WARPS // KSPLIT) * R
    blocks = -(-N // rows_per_block)
    b = bias if bias is not None else mx.zeros((1,), x.dtype)
    (y,) = _kernel()(
        inputs=[x2, w, scales, biases, b],
        template=[("T", x.dtype), ("M", M), ("R", R), ("KSPLIT", KSPLIT), ("U", U), ("WARPS", WARPS),
                  ("BITS", bits), ("GS", group_size), ("HAS_BIAS", bias is not None)],
        grid=(blocks * WARPS * 32, 1, 1),
        threadgroup=(WARPS * 32, 1, 1),
        output_shapes=[(M, N)],
        output_dtypes=[x.dtype],
    )
    return y.reshape(*lead, N)


def quantized_gemv(x: mx.array, w: mx.array, scales: mx.array, biases: mx.array | None,
                   bias: mx.array | None = None, group_size: int = 64, bits: int = 4,
                   mode: str = "affine") -> mx.array:
    """The kernel where it applies (see `applies`), else MLX's quantized matmul (+ bias)."""
    if biases is not None and applies(x, w, scales, group_size, bits, mode, biases=biases, bias=bias):
        return quantized_gemv_cuda(x, w, scales, biases, bias, group_size, bits, mode)
    return quantized_matmul_ref(x, w, scales, biases, bias, group_size, bits, mode)


def label() -> str:
    if cuda_available():
        return (f"CUDA quantized GEMV (mx.fast.cuda_kernel; affine {'/'.join(map(str, BITS))}-bit, "
                f"<= {MAX_ROWS} rows), MLX quantized_matmul beyond")
    return "MLX quantized_matmul (the CUDA quantized GEMV needs MLX's CUDA backend)"


def unpack_codes(w: np.ndarray, bits: int) -> np.ndarray:
    """Numpy model of the layout the kernel reads: packed uint32 [N, K*bits/32] -> integer codes [N, K].
    Weight j of each word sits in bits [bits*j, bits*(j+1)), lowest first, so the kernel's 16-byte vector c of a
    row (words 4c .. 4c+3) holds weights [c*128/bits, (c+1)*128/bits), and its 8-weight sub-vector q the words
    q*bits/4 .. (q+1)*bits/4 - 1 (xq_unpack8)."""
    w = np.ascontiguousarray(w, dtype=np.uint32)
    per = 32 // bits
    mask = np.uint32((1 << bits) - 1)
    return np.stack([(w >> np.uint32(bits * j)) & mask for j in range(per)], axis=-1).reshape(w.shape[0], -1)


def dequantize_as_kernel(w: np.ndarray, scales: np.ndarray, biases: np.ndarray, group_size: int,
                         bits: int) -> np.ndarray:
    """Numpy model of the kernel's dequantization, step by step (xq_dequant8 and the loop that feeds it):
    16-byte vector c of a row = words 4c..4c+3, group (c * 128/bits) // group_size; its 8-weight sub-vector q,
    weight e = word q*(8/per) + e//per, position j = e % per; the 16-bit half (the word, or the word >> 16) and
    the position jh in it; the code through the exponent trick as q * 2^(bits*jh); then code * scale*2^(-bits*jh)
    + bias, rounded once to float32. Returns float32 [N, K] in the kernel's weight order (k = c*vals + 8q + e)."""
    w = np.ascontiguousarray(w, dtype=np.uint32)
    N = w.shape[0]
    per, vals = 32 // bits, 128 // bits
    half_n, mask = 16 // bits, (1 << bits) - 1
    vecs = w.reshape(N, -1, 4)                                   # [N, CV, 4]: the 16-byte vectors
    g = (np.arange(vecs.shape[1]) * vals) // group_size          # group of each vector
    s = scales.astype(np.float64)[:, g]                          # [N, CV]
    b = biases.astype(np.float64)[:, g]
    out = np.empty((N, vecs.shape[1], vals), np.float32)
    for q in range(vals // 8):
        for e in range(8):
            word = vecs[:, :, q * (8 // per) + e // per]
            j = e % per
            half = word if j < half_n else word >> np.uint32(16)
            jh = j % half_n
            bits_ = np.uint32(0x4B000000) | (half & np.uint32(mask << (bits * jh)))
            code = bits_.view(np.float32).astype(np.float64) - 8388608.0   # exact: q * 2^(bits*jh)
            sj = s * 2.0 ** (-bits * jh)
            out[:, :, 8 * q + e] = (code * sj + b).astype(np.float32)     # one rounding, as fmaf
    return out.reshape(N, -1)


def dequantize_reference(w: np.ndarray, scales: np.ndarray, biases: np.ndarray, group_size: int,
                         bits: int) -> np.ndarray:
    """float32 weights [N, K] = code * scale + bias of the code's group (k // group_size), in float32 as
    mx.dequantize computes them (the kernel's fmaf rounds once instead of twice: at most 1 ulp apart)."""
    q = unpack_codes(w, bits).astype(np.float32)
    g = np.arange(q.shape[1]) // group_size
    return q * scales.astype(np.float32)[:, g] + biases.astype(np.float32)[:, g]
