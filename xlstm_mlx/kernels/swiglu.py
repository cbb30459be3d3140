"""The SwiGLU product of the feed-forward: silu(gate) * z, from the fused up-projection's output in one pass.

    gate_z [..., 2d] = x @ [W_gate; W_up].T          (the FFN's fused proj_up_gate_z)
    out    [..., d]  = silu(gate_z[..., :d]) * gate_z[..., d:]

    swiglu_ref(gate_z, width=None)   MLX ops: the registry's math.silu (nn.silu, x * sigmoid(x)) of the left half,
                                     times the right half (both halves strided slices of gate_z)
    swiglu(gate_z, width=None)       one CUDA launch where it applies; elsewhere the same ops

width (>= d, default d): the output's last dimension; columns d.. are zeros. The FFN down projection of a model
whose inner dimension is padded for the matmul (models/xlstm7b/fuse.py, "FFN padding") takes its input that wide,
and the kernel writes the zeros in the same launch (a concatenate would be one more).

Why: measured on an H200 (7B shape, 2,048-token prefill, Nsight Compute; benchmarks/results/), MLX runs this as
three launches over strided bf16 halves of [2048, 21888]: sigmoid 63 us, two products 54 and 56 us, 5.5 ms of a
~80 ms prefill over 32 layers; the bytes (read gate_z once, write the product) take ~40 us a layer at the
measured bandwidth. At decode it is two launches fewer per layer. Each thread takes one 16-byte vector of each
half (8 bf16 or 4 float32 values) and rounds where MLX's ops on arrays of that dtype round: sigmoid, the
product with the gate, the product with z (each to the input dtype), so the result matches the reference up
to the last bit of the sigmoid's own evaluation.
"""

from __future__ import annotations

import mlx.core as mx

from xlstm_mlx.kernels import fastmath
from xlstm_mlx.kernels.cuda_common import VEC_HEADER, cuda_available

THREADS = 256

_HEADER = VEC_HEADER

_SOURCE = """
    constexpr int VEC = 16 / sizeof(T);
    constexpr int VPR = DP / VEC;                      // 16-byte vectors per row of the output (DP >= D: zeros past D)
    size_t rows = 1;                                   // every dimension but the last (a runtime shape: one
    for (int a = 0; a < gate_z_ndim - 1; ++a) rows *= gate_z_shape[a];   // compiled kernel serves every length)
    const size_t i = (size_t)blockIdx.x * THREADS + threadIdx.x;
    if (i >= rows * VPR) return;
    const size_t row = i / VPR;
    const int c = (int)(i % VPR) * VEC;
    if (c >= D) {                                      // the padding columns (D is a multiple of VEC)
        *reinterpret_cast<uint4*>(out + row * DP + c) = make_uint4(0u, 0u, 0u, 0u);
        return;
    }
    const uint4* g4 = reinterpret_cast<const uint4*>(gate_z + row * (2 * D) + c);
    const uint4* z4 = reinterpret_cast<const uint4*>(gate_z + row * (2 * D) + D + c);
    float g[VEC], z[VEC], y[VEC];
    xl_to_float(__ldcs(g4), g, gate_z);
    xl_to_float(__ldcs(z4), z, gate_z);
#pragma unroll
    for (int e = 0; e < VEC; ++e) {
        const float s = xl_round(1.f / (1.f + expf(-g[e])), gate_z);   // sigmoid(gate), rounded as MLX's op
        y[e] = xl_round(xl_round(g[e] * s, gate_z) * z[e], gate_z);     // silu = gate * sigmoid, then * z
    }
    *reinterpret_cast<uint4*>(out + row * DP + c) = xl_pack(y, gate_z);
"""

_kernel = None


def _half(gate_z: mx.array) -> int:
    if gate_z.shape[-1] % 2:
        raise ValueError(f"swiglu: the fused gate/up output has an odd last dimension {gate_z.shape[-1]}")
    return gate_z.shape[-1] // 2


def _width(gate_z: mx.array, width: int | None) -> int:
    d = _half(gate_z)
    if width is None:
        return d
    if width < d:
        raise ValueError(f"swiglu: width {width} is narrower than the product's {d} columns")
    return width


def _pad(out: mx.array, width: int) -> mx.array:
    d = out.shape[-1]
    if width == d:
        return out
    return mx.concatenate([out, mx.zeros((*out.shape[:-1], width - d), out.dtype)], axis=-1)


def swiglu_ref(gate_z: mx.array, width: int | None = None) -> mx.array:
    d, w = _half(gate_z), _width(gate_z, width)
    return _pad(fastmath.silu_ref(gate_z[..., :d]) * gate_z[..., d:], w)


def applies(gate_z: mx.array, width: int | None = None) -> bool:
    if not cuda_available() or gate_z.dtype not in (mx.bfloat16, mx.float32):
        return False
    vec = 16 // gate_z.dtype.size
    return _half(gate_z) % vec == 0 and _width(gate_z, width) % vec == 0 and gate_z.size > 0


def swiglu_cuda(gate_z: mx.array, width: int | None = None) -> mx.array:
    global _kernel
    d, dp = _half(gate_z), _width(gate_z, width)
    if _kernel is None:
        _kernel = mx.fast.cuda_kernel(name="xlstm_swiglu", input_names=["gate_z"], output_names=["out"],
                                      source=_SOURCE, header=_HEADER)
    rows = gate_z.size // gate_z.shape[-1]
    vectors = rows * dp // (16 // gate_z.dtype.size)
    (out,) = _kernel(
        inputs=[gate_z],
        template=[("T", gate_z.dtype), ("D", d), ("DP", dp), ("THREADS", THREADS)],
        grid=(-(-vectors // THREADS) * THREADS, 1, 1),
        threadgroup=(THREADS, 1, 1),
        output_shapes=[(*gate_z.shape[:-1], dp)],
        output_dtypes=[gate_z.dtype],
    )
    return out


def swiglu(gate_z: mx.array, width: int | None = None) -> mx.array:
    if applies(gate_z, width):
        return swiglu_cuda(gate_z, width)
    d, w = _half(gate_z), _width(gate_z, width)
    return _pad(fastmath.silu(gate_z[..., :d]) * gate_z[..., d:], w)  # the registry's silu form (fused on the CPU)


def label() -> str:
    if cuda_available():
        return "fused CUDA kernel (mx.fast.cuda_kernel): silu(gate) * z from the fused projection in one launch"
    return "MLX ops (math.silu of the gate half, times the up half; the fused CUDA kernel needs MLX's CUDA backend)"
