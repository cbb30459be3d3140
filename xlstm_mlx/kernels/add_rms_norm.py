"""Residual add + RMSNorm (+ bias) + the cast for the next matmul, in one pass over the row.

    r   = x + h                       (h None: r = x)        x: the residual stream (float32)
    y   = r * rsqrt(mean(r^2) + eps) * weight (+ bias)       in r's dtype, as RMSNorm computes it
    y_c = y.astype(out_dtype)                                 the matmul input (bf16 under the 'fast' profile)

    add_rms_norm_ref(x, h, weight, bias, eps, out_dtype, want_y) -> (r, y, y_c)   MLX ops (mx.fast.rms_norm)
    add_rms_norm(...)                                                     one CUDA launch where it applies; elsewhere
                                                                          the same ops with norm.rms (kernels/norms.py)

Why: in a decode step each of these is its own launch (an add, MLX's rms_norm, a copy for the cast), ~2.5-6 us
each on an H200 at batch 1 whatever the size (benchmarks/results/gpu_kernels_h200.md: 65 rms_norm and 65 cast
launches per 7B step); fused, a block's two norms cost two launches instead of five. One CUDA block per row: a
pass that adds, writes r and sums r^2 (float32), a block reduction, and a pass that scales; rows of up to
32 x THREADS elements stay in registers between the passes, their loads all issued first (at decode a row per
block and a handful of blocks: the loads' latency sets the time, 6-8 us a call on an H200 before). The sums run in
another order than MLX's kernel, so y may differ from the reference in the last float32 bit (and y_c, rarely,
by one bf16 rounding). want_y=False: y is not needed (the FFN's norm feeds only its bf16 matmul), None is
returned in its place and the kernel does not write it (a 2,048-token prefill of the 7B shape: 1 GB of writes).
"""

from __future__ import annotations

from typing import NamedTuple

import mlx.core as mx
import numpy as np

from xlstm_mlx.kernels import norms
from xlstm_mlx.kernels.cuda_common import cuda_available, float_bits, VEC_HEADER

THREADS = 512
MAX_TAIL_DIM = 32 * THREADS  # rows the kernel keeps in registers (IN_REGISTERS); the product tail takes no longer ones

_SOURCE = """
    constexpr int WARPS = THREADS / 32;
    constexpr int D = DIM;
    constexpr int EPT = (D + THREADS - 1) / THREADS;  // elements per thread
    constexpr bool IN_REGISTERS = EPT <= 32;          // the row stays in registers between the two passes
    const size_t row = blockIdx.x;
    const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
    const auto* xr = x + row * D;
    auto* rr = r + row * D;
    float ss = 0.f;
    float v[IN_REGISTERS ? EPT : 1], wv[IN_REGISTERS ? EPT : 1], bv[IN_REGISTERS && HAS_BIAS ? EPT : 1];
    if constexpr (IN_REGISTERS) {
        // every load of the row issued before any arithmetic: at decode (one row a block, a handful of
        // blocks) the latency of the loads, not their bytes, sets the time
#pragma unroll
        for (int e = 0; e < EPT; ++e) {
            const int i = tid + e * THREADS;
            v[e] = i < D ? xl_float(xr[i]) : 0.f;
        }
        float hv[HAS_H ? EPT : 1];
        if (HAS_H) {
#pragma unroll
            for (int e = 0; e < EPT; ++e) {
                const int i = tid + e * THREADS;
                hv[e] = i < D ? xl_float(h[row * D + i]) : 0.f;
            }
        }
        // the norm's weight (and bias) too, before the reduction: loaded after it, they were one more memory
        // round trip on the row's critical path (a cold 16 KB per layer at decode)
#pragma unroll
        for (int e = 0; e < EPT; ++e) {
            const int i = tid + e * THREADS;
            wv[e] = i < D ? xl_float(weight[i]) : 0.f;
            if (HAS_BIAS) bv[e] = i < D ? xl_float(bias[i]) : 0.f;
        }
        if (HAS_H) {
#pragma unroll
            for (int e = 0; e < EPT; ++e) v[e] += hv[e];
        }
#pragma unroll
        for (int e = 0; e < EPT; ++e) {
            const int i = tid + e * THREADS;
            if (i < D) { xl_set(rr + i, v[e]); ss += v[e] * v[e]; }
        }
    } else {
        for (int i = tid; i < D; i += THREADS) {
            float vi = xl_float(xr[i]);
            if (HAS_H) vi += xl_float(h[row * D + i]);
            xl_set(rr + i, vi);
            ss += vi * vi;
        }
    }
    __shared__ float part[WARPS];
    ss = xl_warp_sum(ss);
    if (lane == 0) part[warp] = ss;
    __syncthreads();
    float tot = 0.f;
#pragma unroll
    for (int w = 0; w < WARPS; ++w) tot += part[w];
    const float inv = rsqrtf(tot / D + __int_as_float(EPS_BITS));
#pragma unroll
    for (int e = 0; e < (IN_REGISTERS ? EPT : 1); ++e) {
        for (int i = tid + e * THREADS; i < D; i += (IN_REGISTERS ? D : THREADS)) {
            float yv = IN_REGISTERS ? v[e] * inv * wv[e] : xl_float(rr[i]) * inv * xl_float(weight[i]);
            if (HAS_BIAS) yv += IN_REGISTERS ? bv[e] : xl_float(bias[i]);
            if (WRITE_Y) xl_set(y + row * D + i, yv);
            xl_set(y_c + row * D + i, yv);
        }
    }
"""

# The same row computation run by the last block of a product kernel (kernels/quant_gemv.py's add-norm tail): the
# NT threads of that block play the kernel's THREADS (VT) threads, thread t the virtual threads t, t + NT, ...; each
# virtual thread sums its elements i = vt + e * VT in the same order, the same warp shuffles reduce them, and the
# warps' sums are added in the same order, so r, y and y_c are bit for bit what the kernel above writes for the
# same x and h (tests/kernels/test_add_norm_tail.py). h is read through L2 (__ldcg): the other blocks of the launch
# wrote it; r is re-read by the thread that wrote it (no row kept in registers: the block's registers are the
# product's). D <= 32 * VT (the kernel's IN_REGISTERS rows, whose arithmetic this is).
TAIL_HEADER = r"""
template <int D, int VT, int NT, bool HAS_H, bool HAS_BIAS, bool WRITE_Y, class TX, class TH, class TW, class TY,
          class TC>
__device__ __forceinline__ void xl_add_rms_row(const TX* xr, const TH* hr, const TW* weight, const TW* bias, float* rr,
                                               TY* yr, TC* ycr, float eps, float* part) {
    static_assert(VT % NT == 0 && NT % 32 == 0 && D <= 32 * VT, "the add-norm row: VT a multiple of NT, D <= 32 VT");
    constexpr int EPT = (D + VT - 1) / VT;
    constexpr int J = VT / NT;
    const int tid = threadIdx.x, lane = tid % 32;
    for (int j = 0; j < J; ++j) {
        const int vt = tid + j * NT;
        float v[EPT], hv[HAS_H ? EPT : 1];
#pragma unroll
        for (int e = 0; e < EPT; ++e) {
            const int i = vt + e * VT;
            v[e] = i < D ? xl_float(xr[i]) : 0.f;
            if (HAS_H) hv[e] = i < D ? xl_float(__ldcg(hr + i)) : 0.f;
        }
        float ss = 0.f;
        if (HAS_H) {
#pragma unroll
            for (int e = 0; e < EPT; ++e) v[e] += hv[e];
        }
#pragma unroll
        for (int e = 0; e < EPT; ++e) {
            const int i = vt + e * VT;
            if (i < D) { rr[i] = v[e]; ss += v[e] * v[e]; }
        }
        ss = xl_warp_sum(ss);
        if (lane == 0) part[vt / 32] = ss;
    }
    __syncthreads();
    float tot = 0.f;
#pragma unroll
    for (int w = 0; w < VT / 32; ++w) tot += part[w];
    const float inv = rsqrtf(tot / D + eps);
    for (int j = 0; j < J; ++j) {
        const int vt = tid + j * NT;
#pragma unroll
        for (int e = 0; e < EPT; ++e) {
            const int i = vt + e * VT;
            if (i < D) {
                float yv = rr[i] * inv * xl_float(weight[i]);
                if (HAS_BIAS) yv += xl_float(bias[i]);
                if (WRITE_Y) xl_set(yr + i, yv);
                xl_set(ycr + i, yv);
            }
        }
    }
    __syncthreads();                                  // `part` is reused by the next row
}
"""


class AddNorm(NamedTuple):
    """What a product kernel's last block computes after the product y (kernels/quant_gemv.py, the add-norm tail):
    add_rms_norm(residual, y, weight, bias, eps, out_dtype, want_y), i.e. (residual + y, its RMSNorm (+ bias), that
    cast to out_dtype). `counter`: the launch's block counter (tail_counter), unused by the references."""
    residual: mx.array
    weight: mx.array
    bias: mx.array | None
    eps: float
    out_dtype: mx.Dtype
    want_y: bool = True
    counter: mx.array | None = None


def after_product_ref(y: mx.array, norm: AddNorm, rms_norm=norms.rms_norm_ref):
    """The add-norm tail's reference: add_rms_norm_ref on the product (the "norm.add_rms" reference)."""
    return add_rms_norm_ref(norm.residual, y, norm.weight, norm.bias, norm.eps, norm.out_dtype, norm.want_y, rms_norm)


# Words of a kernel's block counter: MLX's CUDA allocator serves allocations of up to 8 bytes from a pool of
# managed (host-visible) memory that it shares with the scalars the host reads, such as each decode step's sampled
# token; a counter there had its page migrate between host and GPU at every step (the 7B 4-bit step at one row went
# from 4.2 to 22-26 ms with one 4-byte counter per tail, session 16). 64 bytes are ordinary device memory.
COUNTER_WORDS = 16


def tail_counter(owner) -> mx.array:
    """The add-norm tail's block counter for `owner` (the layer whose product it follows): zeros (the kernel counts
    in word 0; COUNTER_WORDS words keep it out of MLX's managed small-allocation pool), kept on the owner and made
    from host data (mx.compile takes it as a constant, not a fill at every call). The last block of each launch
    resets it to zero. One per layer: two launches never share one (mlstm_decode.norm_counter)."""
    hit = owner.__dict__.get("_xlstm_add_norm_counter")
    if hit is None:
        hit = owner.__dict__["_xlstm_add_norm_counter"] = mx.array(np.zeros(COUNTER_WORDS, np.uint32))
    return hit


def tail_applies(norm: AddNorm, rows: int, n: int) -> bool:
    """Whether a product kernel can run the tail for `rows` rows of n outputs: the conditions of this module's kernel
    (float32 residual, weight and bias; the row in registers there, D <= MAX_TAIL_DIM) and a counter."""
    r = norm.residual
    return (applies(r, None, norm.weight, norm.bias) and r.ndim == 2 and r.shape == (rows, n) and n <= MAX_TAIL_DIM
            and norm.weight.shape == (n,) and (norm.bias is None or norm.bias.shape == (n,))
            and norm.out_dtype in (mx.bfloat16, mx.float32)
            and norm.counter is not None and norm.counter.dtype == mx.uint32 and norm.counter.size >= 1)


_kernel = None


def add_rms_norm_ref(x, h, weight, bias, eps: float, out_dtype, want_y: bool = True, rms_norm=norms.rms_norm_ref):
    r = x if h is None else x + h
    y = rms_norm(r, weight, eps)
    if bias is not None:
        y = y + bias
    return r, y if want_y else None, y.astype(out_dtype)


def applies(x, h, weight, bias) -> bool:
    ok = (mx.float32,)  # the residual stream of the shipped profiles; its weights and bias in float32 too
    return (cuda_available() and x.dtype in ok and weight.dtype in ok and (bias is None or bias.dtype in ok)
            and (h is None or (h.dtype in (mx.float32, mx.bfloat16) and h.shape == x.shape)) and x.ndim >= 1)



def add_rms_norm_cuda(x, h, weight, bias, eps: float, out_dtype, want_y: bool = True):
    global _kernel
    if _kernel is None:
        _kernel = mx.fast.cuda_kernel(name="xlstm_add_rms_norm", input_names=["x", "h", "weight", "bias"],
                                      output_names=["r", "y", "y_c"], source=_SOURCE, header=VEC_HEADER)
    rows = x.size // x.shape[-1]
    r, y, y_c = _kernel(
        # an absent h or bias is never read (HAS_H, HAS_BIAS): x and weight stand in, where a fresh mx.zeros
        # would be one more launch each call outside a compiled step (65 in a 7B prefill chunk)
        inputs=[x, h if h is not None else x, weight, bias if bias is not None else weight],
        template=[("DIM", x.shape[-1]), ("THREADS", THREADS), ("HAS_H", h is not None),
                  ("HAS_BIAS", bias is not None), ("EPS_BITS", float_bits(eps)), ("WRITE_Y", want_y)],
        grid=(rows * THREADS, 1, 1),
        threadgroup=(THREADS, 1, 1),
        output_shapes=[x.shape, x.shape if want_y else (1,), x.shape],  # (1,): never written
        output_dtypes=[x.dtype, x.dtype, out_dtype],
    )
    return r, y if want_y else None, y_c


def add_rms_norm(x, h, weight, bias, eps: float, out_dtype, want_y: bool = True):
    if applies(x, h, weight, bias):
        return add_rms_norm_cuda(x, h, weight, bias, eps, out_dtype, want_y)
    # elsewhere the same ops with the registry's norm.rms form (sums by BLAS on the CPU: kernels/norms.py)
    return add_rms_norm_ref(x, h, weight, bias, eps, out_dtype, want_y, rms_norm=norms.rms_norm)


def label() -> str:
    if cuda_available():
        return "fused CUDA kernel (mx.fast.cuda_kernel): residual add, RMSNorm and the cast in one launch"
    return f"MLX ops (add, RMSNorm: {norms.label()}, cast; the fused CUDA kernel needs MLX's CUDA backend)"
