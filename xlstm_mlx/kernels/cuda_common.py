"""What every mx.fast.cuda_kernel of this package shares: where such a kernel can run, and small device helpers.

A CUDA kernel runs only on MLX's CUDA backend with the GPU as the default device; everywhere else (Metal, the
CPU) its MLX-ops reference is the path, and the registry label says so (kernels/__init__.py).

No per-call input of a kernel is made from host data (`mx.array(<Python or numpy value>)`): MLX's CUDA allocator
places such arrays in managed memory, and the first GPU read of each new one waits for a page migration. The
chunkwise prefill's 3-int segment array did that once a layer: kernel A took 192-540 us instead of 77 in layers
2-32 of a 2,048-token prefill (ncu, H200, benchmarks/results/gpu_h200_2026-12-03.md). Scalars reach a kernel as
template constants (float_bits for floats), sizes from the inputs' shapes; an array made from host data once and
kept (mlstm_decode.norm_counter) migrates once.
"""

from __future__ import annotations

import struct

import mlx.core as mx


SMS = 132  # multiprocessors of an H100 / H200 (SXM): the kernels' grid and tile choices are sized for it


def float_bits(x: float) -> int:
    """A float32's bit pattern as a signed int: how float constants (eps, a soft cap) reach a kernel as template
    constants (a small float32 input array made from Python would be host data read by the GPU at every call)."""
    return struct.unpack("<i", struct.pack("<f", x))[0]


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

// v rounded to the tag's type and back (where MLX's ops on arrays of that dtype round)
__device__ __forceinline__ float xl_round(float v, const __nv_bfloat16*) {
    return __bfloat162float(__float2bfloat16(v));
}
__device__ __forceinline__ float xl_round(float v, const float*) { return v; }

// float32 lanes packed into one 16-byte vector of the tag's type (bf16: 8 lanes rounded to nearest, float: 4)
__device__ __forceinline__ uint4 xl_pack(const float* f, const __nv_bfloat16*) {
    uint4 u;
    __nv_bfloat162* h = reinterpret_cast<__nv_bfloat162*>(&u);
#pragma unroll
    for (int e = 0; e < 4; ++e) h[e] = __floats2bfloat162_rn(f[2 * e], f[2 * e + 1]);
    return u;
}

__device__ __forceinline__ uint4 xl_pack(const float* f, const float*) {
    return make_uint4(__float_as_uint(f[0]), __float_as_uint(f[1]), __float_as_uint(f[2]), __float_as_uint(f[3]));
}
"""

# Warp-level tensor-core PTX with documented register layouts (the PTX ISA's), for kernels whose fragments are
# their own: the wmma API's fragments are opaque, and on sm_90 its bf16 loads from shared memory compile to
# generic 32-bit loads plus a MOVM transpose per register (an ncu source profile of the chunk recurrence:
# a quarter of its stall samples), where ldmatrix loads four 8x8 tiles in one instruction. Off the GPU (the
# tests' CPU harnesses) the host_* stand-ins of tests/kernels/cuda_emulator/ptx_standins.h implement the same
# documented semantics.
MMA_HEADER = r"""
#if defined(__CUDACC__)
__device__ __forceinline__ unsigned xl_smem_addr(const void* p) {
    return static_cast<unsigned>(__cvta_generic_to_shared(p));
}
// four 8x8 b16 tiles of shared memory: lanes 8j..8j+7 give the 16-byte rows of tile j; lane t receives in r[j]
// the 32-bit word t % 4 of row t / 4 of tile j
__device__ __forceinline__ void xl_ldmatrix_x4(unsigned* r, const void* row) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(xl_smem_addr(row)) : "memory");
}
// the same, transposed: lanes 8j..8j+7 give the 16-byte rows of tile j; lane t
// receives in r[j] the elements (row 2 (t % 4), column t / 4) (low half) and (row 2 (t % 4) + 1, column t / 4)
__device__ __forceinline__ void xl_ldmatrix_x4_trans(unsigned* r, const void* row) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(xl_smem_addr(row)) : "memory");
}
// d += a (16x16 bf16, row) * b (16x8 bf16, col), float32 accumulation (mma.sync m16n8k16; g = lane / 4,
// c = lane % 4: a[0] (row g, k 2c..2c+1), a[1] (g+8, 2c..), a[2] (g, 2c+8..), a[3] (g+8, 2c+8..); b0 (k 2c..2c+1,
// column g), b1 (k 2c+8..); d[e] (row g + 8 (e / 2), column 2c + e % 2))
__device__ __forceinline__ void xl_mma_bf16(float* d, const unsigned* a, unsigned b0, unsigned b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
#else
inline void xl_ldmatrix_x4(unsigned* r, const void* row) { host_ldmatrix_x4(r, row); }
inline void xl_ldmatrix_x4_trans(unsigned* r, const void* row) { host_ldmatrix_x4_trans(r, row); }
inline void xl_mma_bf16(float* d, const unsigned* a, unsigned b0, unsigned b1) {
    const unsigned b[2] = {b0, b1};
    host_mma_16816(d, a, b, d);
}
#endif
"""


def as_rows(x: mx.array) -> mx.array:
    """x as a matrix of rows [M, K]: x itself when it is one already. A reshape is a node of the lazy graph, and
    every node is host work at every decode step (built, then encoded; benchmarks/probes/decode_graph_census.py):
    the decode step's callers flatten once, the kernels' wrappers then add nothing."""
    return x if x.ndim == 2 else x.reshape(-1, x.shape[-1])


def from_rows(y: mx.array, lead: tuple) -> mx.array:
    """y [M, N] back to x's leading dimensions `lead` (+ [N]): y itself when x was a matrix."""
    return y if len(lead) == 1 else y.reshape(*lead, y.shape[-1])
