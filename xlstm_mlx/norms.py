"""Norm layers, on MLX's fused kernels (which reduce in float32 whatever the input dtype).

Canonical order: normalize (in float32), cast back to the input dtype, multiply the weight, add the
bias when use_bias is set. mx.fast.rms_norm folds the weight in before the cast; in float32 that is
the same arithmetic, in bfloat16 it rounds once instead of twice.
"""

import mlx.core as mx
import mlx.nn as nn


class RMSNorm(nn.Module):
    """x * rsqrt(mean(x^2) + eps) * weight (+ bias)."""

    def __init__(self, dims: int, eps: float = 1e-6, use_bias: bool = False):
        super().__init__()
        self.weight = mx.ones((dims,))
        if use_bias:
            self.bias = mx.zeros((dims,))
        self.eps = eps

    def __call__(self, x):
        y = mx.fast.rms_norm(x, self.weight, self.eps)
        return y + self.bias if "bias" in self else y


class MultiHeadLayerNorm(nn.Module):
    """Per-head LayerNorm (biased variance) of [B, T, NH, DH], then a weight (and bias) over NH*DH."""

    def __init__(self, num_heads: int, head_dim: int, eps: float = 1e-6, use_bias: bool = False):
        super().__init__()
        self.weight = mx.ones((num_heads * head_dim,))
        if use_bias:
            self.bias = mx.zeros((num_heads * head_dim,))
        self.eps = eps

    def __call__(self, x):
        B, T, NH, DH = x.shape
        y = mx.fast.layer_norm(x, None, None, self.eps).reshape(B, T, NH * DH) * self.weight
        return y + self.bias if "bias" in self else y
