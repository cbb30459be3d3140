"""Norm layers. The xLSTM-7B family's two (RMSNorm, HeadwiseLayerNorm) run the registry's norm.rms / norm.layer
(kernels/norms.py: sums by a BLAS matrix-vector product on the CPU, where MLX's own float32 mean is one running
sum; MLX's fused kernels on a GPU; float32 reductions whatever the input dtype, float64 in the exact profile).
The official-stack family's residual-weight norms stay on MLX's fused kernel.

Two scale rules, named apart: RMSNorm and HeadwiseLayerNorm (xLSTM-7B family) multiply by `weight`;
ResidualLayerNorm and ResidualHeadwiseLayerNorm (the official xlstm package's LayerNorm with
residual_weight=True) multiply by 1 + `weight`, the stored weight being the offset from 1.

Canonical order: normalize (in float32), cast back to the input dtype, multiply the weight, add the
bias when use_bias is set. mx.fast.rms_norm folds the weight in before the cast; in float32 that is
the same arithmetic, in bfloat16 it rounds once instead of twice.

float64 (the exact profile): MLX's fused norms reduce in float32 even on float64 input (measured ~2e-6
relative error, mlx 0.32), so float64 input takes the plain formulas, which are float64 throughout.
"""

import mlx.core as mx
import mlx.nn as nn

from xlstm_mlx import kernels


class RMSNorm(nn.Module):
    """x * rsqrt(mean(x^2) + eps) * weight (+ bias)."""

    def __init__(self, dims: int, eps: float = 1e-6, use_bias: bool = False):
        super().__init__()
        self.weight = mx.ones((dims,))
        if use_bias:
            self.bias = mx.zeros((dims,))
        self.eps = eps

    def __call__(self, x):
        y = kernels.get("norm.rms")(x, self.weight, self.eps)
        return y + self.bias if "bias" in self else y


class HeadwiseLayerNorm(nn.Module):
    """Per-head LayerNorm (biased variance) of [B, T, NH, DH], then a weight (and bias) over NH*DH: the
    xLSTM-7B cell-output norm (scale = weight)."""

    def __init__(self, num_heads: int, head_dim: int, eps: float = 1e-6, use_bias: bool = False):
        super().__init__()
        self.weight = mx.ones((num_heads * head_dim,))
        if use_bias:
            self.bias = mx.zeros((num_heads * head_dim,))
        self.eps = eps

    def __call__(self, x):
        B, T, NH, DH = x.shape
        y = kernels.get("norm.layer")(x, self.eps)
        y = y.reshape(B, T, NH * DH) * self.weight
        return y + self.bias if "bias" in self else y


NORM_EPS = 1e-5  # components/ln.py: LayerNorm(eps=1e-5), also for MultiHeadLayerNorm / group norm


class ResidualLayerNorm(nn.Module):
    """Official LayerNorm(weight=True, bias=False, residual_weight=True): the scale is 1 + weight.

    The stored `weight` is the offset from 1 (zeros at init), so we add 1 here rather than at load
    time: the parameter keeps the meaning it has in the checkpoint.
    """

    def __init__(self, dims: int):
        super().__init__()
        self.weight = mx.zeros((dims,))

    def __call__(self, x):
        y = mx.fast.layer_norm(x.astype(mx.float32), None, None, NORM_EPS).astype(x.dtype)
        return y * (1.0 + self.weight).astype(x.dtype)


class ResidualHeadwiseLayerNorm(nn.Module):
    """Official MultiHeadLayerNorm: F.group_norm with one group per head, i.e. a LayerNorm over each
    head's DH features (biased variance), then the residual scale 1 + weight over all NH*DH features.

    x [..., NH, DH] -> [..., NH*DH]. `weight=False` (sLSTM group_norm_weight=False) means no scale.
    """

    def __init__(self, dims: int, weight: bool = True):
        super().__init__()
        if weight:
            self.weight = mx.zeros((dims,))

    def __call__(self, x):
        y = mx.fast.layer_norm(x.astype(mx.float32), None, None, NORM_EPS)
        y = y.reshape(*y.shape[:-2], -1).astype(x.dtype)
        if "weight" in self:
            y = y * (1.0 + self.weight).astype(x.dtype)
        return y
