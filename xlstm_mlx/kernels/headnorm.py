"""The mLSTM cell output at decode: per-head LayerNorm, its weight (and bias), times the sigmoid output gate.

    out = sigmoid(o) * (LayerNorm_head(h) * weight (+ bias))         h [B, NH, DH], o [B, NH*DH] -> [B, NH*DH]

After the fused decode step (mlstm_decode.py) these are MLX's layer_norm kernel, a broadcast multiply by the
weight, the sigmoid and the gate product: three or four launches per layer. Measured on an H200 (ncu, 7B
shape, benchmarks/results/gpu_kernels_h200.md): MLX's layer_norm<bf16> over the 8 x 512 head rows takes ~6 us
at batch 1 and ~43 us at batch 16 (0.33 us a row), 1.4 ms of a 9 ms step at batch 16. Here one launch does it
all: one warp per (sequence, head) row, the row in registers (16-byte loads), two-pass mean and variance by warp
shuffles, and every rounding of the reference in the same place (normalized value, times weight, plus bias,
sigmoid, product: each rounded to the input dtype, as MLX's ops on bf16 arrays round).

    headnorm_gate_ref(h, qkvo, o_offset, weight, bias, eps)   MLX ops (mx.fast.layer_norm, mx.sigmoid)
    headnorm_gate(...)                                        the CUDA kernel where it applies, else the same
                                                              MLX ops with the registry's math.sigmoid and
                                                              norm.layer forms

`qkvo` is the fused projection output [B, >= o_offset + NH*DH] holding the output-gate pre-activation o at
columns o_offset...; passing it whole saves the copy of a strided slice.
"""

from __future__ import annotations

import mlx.core as mx

from xlstm_mlx.kernels import fastmath, norms
from xlstm_mlx.kernels.cuda_common import cuda_available, float_bits, VEC_HEADER

THREADS = 256  # 8 warps: 8 (sequence, head) rows per block
FEW_ROWS = 264  # up to this many rows (2 per SM of an H200), one warp a block: the rows spread over the SMs

# One (sequence, head) row by one warp, shared with the decode step's fused tail (kernels/mlstm_decode.py), so
# that the two give the same bits: x holds this lane's DH / 32 values of h (16-byte vector v of the row at lane
# v * 32 + lane); orow the row's output-gate pre-activations, w / b the head's weight and bias (b unread without
# HAS_B). All are read, and out_row written, as 16-byte vectors, so orow and out_row must start 16-byte aligned
# (`applies` checks the o offset and the row length; out_row is a head of a fresh output, DH a multiple of 32
# vectors): 8 scalar loads a vector made the prefill's call over 2,048 x 8 rows run at ~1 TB/s, and so did element
# stores 16 bytes apart across the lanes (each store instruction touched 32 sectors for 64 bytes; ncu 2026-12-02).
# The gate, weight and bias are loaded before the reductions are waited for (at decode there are few rows, and
# the loads' latency, not their bytes, sets the time); two-pass mean and variance by warp shuffles; every
# rounding of the reference in the same place (normalized value, times weight, plus bias, sigmoid, product: each
# rounded to the row's dtype, as MLX's ops on bf16 arrays round).
ROW_HEADER = """

template <int DH, bool HAS_B, typename T>
__device__ __forceinline__ void xl_headnorm_row(const float* x, const T* orow, const T* w, const T* b, T* out_row,
                                                int lane, float eps) {
    constexpr int VEC = 16 / sizeof(T);
    constexpr int PER_LANE = DH / 32;
    constexpr int NV = PER_LANE / VEC;
    float o[PER_LANE], wt[PER_LANE], bs[HAS_B ? PER_LANE : 1];
#pragma unroll
    for (int v = 0; v < NV; ++v) {                            // 16-byte vectors (columns c0 .. c0 + VEC - 1)
        const int c0 = (v * 32 + lane) * VEC;
        xl_to_float(*reinterpret_cast<const uint4*>(orow + c0), o + v * VEC, orow);
        xl_to_float(*reinterpret_cast<const uint4*>(w + c0), wt + v * VEC, w);
        if constexpr (HAS_B) xl_to_float(*reinterpret_cast<const uint4*>(b + c0), bs + v * VEC, b);
    }
    float s = 0.f;
#pragma unroll
    for (int e = 0; e < PER_LANE; ++e) s += x[e];
    const float mean = xl_warp_sum(s) / DH;
    float s2 = 0.f;
#pragma unroll
    for (int e = 0; e < PER_LANE; ++e) { const float d = x[e] - mean; s2 += d * d; }
    const float inv = rsqrtf(xl_warp_sum(s2) / DH + eps);
#pragma unroll
    for (int v = 0; v < NV; ++v) {
        float r[VEC];
#pragma unroll
        for (int e = 0; e < VEC; ++e) {
            float y = xl_round((x[v * VEC + e] - mean) * inv, out_row);
            y = xl_round(y * wt[v * VEC + e], out_row);
            if (HAS_B) y = xl_round(y + bs[v * VEC + e], out_row);
            const float g = xl_round(1.f / (1.f + expf(-o[v * VEC + e])), out_row);
            r[e] = g * y;
        }
        *reinterpret_cast<uint4*>(out_row + (v * 32 + lane) * VEC) = xl_pack(r, out_row);
    }
}
"""

_HEADER = VEC_HEADER + ROW_HEADER

_SOURCE = """
    constexpr int VEC = 16 / sizeof(T);
    constexpr int PER_LANE = DH / 32;
    constexpr int NV = PER_LANE / VEC;                // 16-byte vectors per lane
    const int NH = h_shape[1];
    const int rows = h_shape[0] * NH;
    const int row = blockIdx.x * (THREADS / 32) + threadIdx.x / 32;   // sequence * NH + head
    const int lane = threadIdx.x % 32;
    if (row >= rows) return;                          // whole warps leave together
    const int b = row / NH, hd = row % NH;
    const int NQ = qkvo_shape[1];

    float x[PER_LANE];
    const uint4* hv = reinterpret_cast<const uint4*>(h + (size_t)row * DH);
#pragma unroll
    for (int v = 0; v < NV; ++v) xl_to_float(hv[v * 32 + lane], x + v * VEC, h);
    const auto* orow = qkvo + (size_t)b * NQ + O_OFF + hd * DH;
    xl_headnorm_row<DH, HAS_BIAS>(x, orow, weight + hd * DH, bias + hd * DH, out + (size_t)b * NH * DH + hd * DH,
                                  lane, __int_as_float(EPS_BITS));
"""

_kernel = None


def _ops(h, qkvo, o_offset: int, weight, bias, eps: float, sigmoid, layer_norm=norms.layer_norm_ref):
    B, NH, DH = h.shape
    y = layer_norm(h, eps).reshape(B, NH * DH) * weight
    if bias is not None:
        y = y + bias
    return sigmoid(qkvo[:, o_offset:o_offset + NH * DH]) * y


def headnorm_gate_ref(h, qkvo, o_offset: int, weight, bias, eps: float):
    """MLX ops, as MLSTMLayer computes its output before out_proj (HeadwiseLayerNorm, then sigmoid(o) * it)."""
    return _ops(h, qkvo, o_offset, weight, bias, eps, fastmath.sigmoid_ref)


def applies(h, qkvo, weight, bias, o_offset: int = 0) -> bool:
    if not cuda_available() or h.ndim != 3 or qkvo.ndim != 2:
        return False
    dt = h.dtype
    vec = 16 // dt.size if dt in (mx.bfloat16, mx.float32) else 0
    return (vec > 0 and qkvo.dtype == dt and weight.dtype == dt and (bias is None or bias.dtype == dt)
            and h.shape[2] % (32 * vec) == 0 and aligned_rows(qkvo, o_offset, vec))


def aligned_rows(qkvo, o_offset: int, vec: int) -> bool:
    """Every row's output-gate columns start on a 16-byte boundary (the kernel reads them as vectors): the o
    offset and the row length multiples of a vector's `vec` elements."""
    return o_offset % vec == 0 and qkvo.shape[1] % vec == 0



def headnorm_gate_cuda(h, qkvo, o_offset: int, weight, bias, eps: float):
    global _kernel
    if _kernel is None:
        _kernel = mx.fast.cuda_kernel(name="xlstm_headnorm_gate", input_names=["h", "qkvo", "weight", "bias"],
                                      output_names=["out"], source=_SOURCE, header=_HEADER)
    B, NH, DH = h.shape
    threads = 32 if B * NH <= FEW_ROWS else THREADS
    blocks = -(-(B * NH) // (threads // 32))
    (out,) = _kernel(
        inputs=[h, qkvo, weight, bias if bias is not None else weight],  # no bias: never read (HAS_BIAS)
        template=[("T", h.dtype), ("DH", DH), ("O_OFF", o_offset), ("THREADS", threads),
                  ("HAS_BIAS", bias is not None), ("EPS_BITS", float_bits(eps))],
        grid=(blocks * threads, 1, 1),
        threadgroup=(threads, 1, 1),
        output_shapes=[(B, NH * DH)],
        output_dtypes=[h.dtype],
    )
    return out


def headnorm_gate(h, qkvo, o_offset: int, weight, bias, eps: float):
    if applies(h, qkvo, weight, bias, o_offset):
        return headnorm_gate_cuda(h, qkvo, o_offset, weight, bias, eps)
    # elsewhere the same ops with the registry's fast forms (sigmoid, and the LayerNorm's sums by BLAS on the CPU)
    return _ops(h, qkvo, o_offset, weight, bias, eps, fastmath.sigmoid, norms.layer_norm)


def label() -> str:
    if cuda_available():
        return "fused CUDA kernel (mx.fast.cuda_kernel): head LayerNorm, weight and sigmoid gate in one launch"
    return "MLX ops (layer_norm, weight, gate; the fused CUDA kernel needs MLX's CUDA backend)"
