"""What every mx.fast.cuda_kernel of this package shares: where such a kernel can run, and small device helpers.

A CUDA kernel runs only on MLX's CUDA backend with the GPU as the default device; everywhere else (Metal, the
CPU) its MLX-ops reference is the path, and the registry label says so (kernels/__init__.py).
"""

from __future__ import annotations

import mlx.core as mx


def cuda_available() -> bool:
    """True where a CUDA kernel can run: MLX's CUDA backend, the GPU the default device."""
    return mx.cuda.is_available() and mx.default_device().type == mx.gpu


# 16-byte vector loads turned into float32 lanes; the loaded type is a tag (bf16: 8 lanes, float: 4 lanes)
VEC_HEADER = """
#include <cuda_bf16.h>

__device__ __forceinline__ void xl_to_float(const uint4& u, float* out, const __nv_bfloat16*) {
    const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&u);
#pragma unroll
    for (int e = 0; e < 4; ++e) {
        const float2 f = __bfloat1622float2(h[e]);
        out[2 * e] = f.x;
        out[2 * e + 1] = f.y;
    }
}

__device__ __forceinline__ void xl_to_float(const uint4& u, float* out, const float*) {
    out[0] = __uint_as_float(u.x); out[1] = __uint_as_float(u.y);
    out[2] = __uint_as_float(u.z); out[3] = __uint_as_float(u.w);
}

__device__ __forceinline__ float xl_warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float xl_float(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float xl_float(float v) { return v; }
__device__ __forceinline__ void xl_set(__nv_bfloat16* p, float v) { *p = __float2bfloat16(v); }
__device__ __forceinline__ void xl_set(float* p, float v) { *p = v; }
"""


def as_rows(x: mx.array) -> mx.array:
    """x as a matrix of rows [M, K]: x itself when it is one already. A reshape is a node of the lazy graph, and
    every node is host work at every decode step (built, then encoded; benchmarks/probes/decode_graph_census.py):
    the decode step's callers flatten once, the kernels' wrappers then add nothing."""
    return x if x.ndim == 2 else x.reshape(-1, x.shape[-1])


def from_rows(y: mx.array, lead: tuple) -> mx.array:
    """y [M, N] back to x's leading dimensions `lead` (+ [N]): y itself when x was a matrix."""
    return y if len(lead) == 1 else y.reshape(*lead, y.shape[-1])
