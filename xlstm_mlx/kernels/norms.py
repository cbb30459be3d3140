"""The norms' reductions: RMSNorm (x * rsqrt(mean(x^2) + eps) * weight) and LayerNorm without affine
((x - mean) * rsqrt(biased var + eps)), each beside MLX's fused op it replaces on the CPU.

    name        fast                                          reference
    norm.rms    rms_norm: CPU: sums by a BLAS matrix-vector   rms_norm_ref: mx.fast.rms_norm
                product; GPU: mx.fast.rms_norm
    norm.layer  layer_norm: CPU: two-pass, sums by BLAS;      layer_norm_ref: mx.fast.layer_norm
                GPU: mx.fast.layer_norm

Why: MLX's CPU backend has no kernel of its own for mx.fast.rms_norm / layer_norm; it runs them as plain ops,
whose float32 `mean` is one running sum. Its rounding error grows with the length: measured relative error of
the mean of squares 1.5e-7 at 160 values, 7.3e-7 at 4,096 (torch's CPU reduction: 4e-8 at every length;
docs/numerics.md). An error in the mean is one scale error on the whole normalized vector, which every
projection after the norm inherits: at hidden 512 it was the whole gap between our float32 steps and the
canonical's (measured against float64). The sum of the n values is instead formed as x^2 @ ones[n, 1]: the
BLAS accumulates in blocks with FMA (relative error ~1e-8 at 4,096) and runs as fast or faster than the
running sum. The ones are exact and the division by n rounds once, so no constant's rounding enters the scale.

On a GPU, MLX's fused kernels reduce in a tree (as accurate) and stay in use, bit for bit as before. float64
(the exact profile) takes the plain formulas on every path: MLX's fused norms reduce in float32 even on
float64 input. Other dtypes (bfloat16 under the fast profile) are computed in float32 and rounded once.
"""

from __future__ import annotations

import mlx.core as mx

from xlstm_mlx.kernels.fastmath import on_cpu


def _sum_last(x: mx.array) -> mx.array:
    """sum over the last axis, keepdims, as a BLAS matrix-vector product (blocked FMA accumulation). The rows are
    flattened first: one [rows, n] @ [n, 1] product, not one small product per leading index (per-head norms)."""
    n = x.shape[-1]
    return (x.reshape(-1, n) @ mx.ones((n, 1), dtype=x.dtype)).reshape(*x.shape[:-1], 1)


def _rms_f64(x, weight, eps: float):
    y = x * mx.rsqrt(mx.mean(mx.square(x), axis=-1, keepdims=True) + eps)
    return y if weight is None else y * weight


def _layer_f64(x, eps: float):
    d = x - mx.mean(x, axis=-1, keepdims=True)
    return d * mx.rsqrt(mx.mean(mx.square(d), axis=-1, keepdims=True) + eps)


def rms_norm_ref(x: mx.array, weight: mx.array | None, eps: float) -> mx.array:
    """MLX's fused RMSNorm (weight folded in before the cast); float64: the plain formula."""
    return _rms_f64(x, weight, eps) if x.dtype == mx.float64 else mx.fast.rms_norm(x, weight, eps)


def layer_norm_ref(x: mx.array, eps: float) -> mx.array:
    """MLX's fused LayerNorm without affine; float64: the plain two-pass formula."""
    return _layer_f64(x, eps) if x.dtype == mx.float64 else mx.fast.layer_norm(x, None, None, eps)


def _fast(x: mx.array) -> bool:
    return on_cpu() and x.dtype != mx.float64


def rms_norm_blas(x: mx.array, weight: mx.array | None, eps: float) -> mx.array:
    """The CPU form, as written (any device): float32 arithmetic, the sum of squares by BLAS, one final cast."""
    xf = x.astype(mx.float32)
    y = xf * mx.rsqrt(_sum_last(mx.square(xf)) / x.shape[-1] + eps)
    if weight is not None:
        y = y * weight.astype(mx.float32)
    return y.astype(x.dtype)


def layer_norm_blas(x: mx.array, eps: float) -> mx.array:
    """The CPU form, as written (any device): two passes, both sums by BLAS, one final cast."""
    xf = x.astype(mx.float32)
    n = x.shape[-1]
    d = xf - _sum_last(xf) / n  # two passes, as the canonical (x - mean, then the mean of its squares)
    return (d * mx.rsqrt(_sum_last(mx.square(d)) / n + eps)).astype(x.dtype)


# what the registry calls "fast": the BLAS-summed forms on the CPU (float32 and narrower), MLX's fused kernels on a
# GPU, the plain float64 formulas on float64
def rms_norm(x: mx.array, weight: mx.array | None, eps: float) -> mx.array:
    return rms_norm_blas(x, weight, eps) if _fast(x) else rms_norm_ref(x, weight, eps)


def layer_norm(x: mx.array, eps: float) -> mx.array:
    return layer_norm_blas(x, eps) if _fast(x) else layer_norm_ref(x, eps)


def label() -> str:
    """What the norm.* registry entries run on this backend now (for the verbose line)."""
    return "sums by BLAS matrix-vector product (CPU)" if on_cpu() else "MLX fused kernel"
