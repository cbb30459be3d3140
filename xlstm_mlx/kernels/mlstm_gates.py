"""Gate helpers shared by every mLSTM form, and the float64 elementwise functions of the exact profile.

All gate math is float32 in the shipped profiles: the exponential gating of the mLSTM subtracts large
log-values (up to the soft cap of 15 per step, accumulated over thousands of steps) and bfloat16's 8-bit
mantissa would lose the stabilizer m entirely. The `exact` profile (profiles/exact.json) runs them in
float64: `state_dtype(x)` is float64 when its input is, float32 otherwise, so every kernel follows the
gates' dtype and the shipped profiles' float32 arithmetic is unchanged.

Why `exp` and `sigmoid` here: MLX's CPU exp (and so sigmoid, logaddexp, silu) is a float32-accurate
approximation even on float64 arrays (measured relative error ~1e-6 on float64, mlx 0.32), while
power, log1p, tanh, sqrt and the matmuls are float64-accurate. On float64 arrays these helpers use
e**x (mx.power: relative error ~1e-16 for |x| < 50, ~4e-14 at |x| = 700). On every other dtype they are
the plain MLX ops, bit for bit.
"""

import math

import mlx.core as mx
import mlx.nn as nn

_E64 = mx.array(math.e, dtype=mx.float64)


def state_dtype(x: mx.array):
    """dtype of the gates, stabilizers, states and normalizer for inputs like `x`: float64 if x is, else float32."""
    return mx.float64 if x.dtype == mx.float64 else mx.float32


def exp(x: mx.array) -> mx.array:
    """e**x: float64-accurate on float64 (see module doc), mx.exp otherwise."""
    return mx.power(_E64, x) if x.dtype == mx.float64 else mx.exp(x)


def sigmoid(x: mx.array) -> mx.array:
    """1 / (1 + e**-x): float64-accurate on float64, mx.sigmoid otherwise."""
    return 1.0 / (1.0 + exp(-x)) if x.dtype == mx.float64 else mx.sigmoid(x)


def silu(x: mx.array) -> mx.array:
    """x * sigmoid(x) (SwiGLU's activation): float64-accurate on float64, nn.silu's arithmetic otherwise."""
    return x * sigmoid(x) if x.dtype == mx.float64 else nn.silu(x)


def log_sigmoid(x: mx.array) -> mx.array:
    """log(sigmoid(x)) = -softplus(-x), written so that +inf -> 0 and -inf -> -inf exactly.

    logaddexp(0, -x) is the overflow-safe softplus; an identity step (see `mask_gates`) relies on
    log_sigmoid(+inf) being exactly 0. On float64: min(x, 0) - log1p(e**-|x|), the same function with
    float64-accurate pieces (+inf -> 0 - log1p(0) = 0, -inf -> -inf - 0).
    """
    if x.dtype == mx.float64:
        return mx.minimum(x, 0.0) - mx.log1p(exp(-mx.abs(x)))
    return -mx.logaddexp(mx.zeros_like(x), -x)


def log_decay_matrix(lf: mx.array) -> mx.array:
    """D[..., t, s] = sum_{s < j <= t} lf_j for s <= t (0 on the diagonal), -inf above it; lf [..., L].

    The log decay from step s to step t, summed over the segment itself (a masked cumulative sum) rather than
    formed as b_t - b_s of one running sum b: the difference carries the rounding of the whole prefix,
    ~|b_t| * 2^-24 in float32, and |b| reaches hundreds within a chunk when forget gates shut (|log f| up to
    the soft cap of 15), while the segment's own sum is as exact as its length allows. Same trick as the
    segment sum across chunks (mlstm_chunk_scan._segment_sum). Costs one L x L cumulative sum.
    """
    L = lf.shape[-1]
    t = mx.arange(L)
    below = t[:, None] > t[None, :]
    d = mx.cumsum(mx.where(below, lf[..., :, None], 0.0), axis=-2)  # d[t, s] = sum_{s < j <= t} lf_j
    return mx.where(below | (t[:, None] == t[None, :]), d, -mx.inf)


def log_decay_to_end(lf: mx.array) -> mx.array:
    """sum_{j > s} lf_j along the last axis (the log decay from step s to the end): a reverse exclusive
    cumulative sum, not the difference b_L - b_s of one running sum (see log_decay_matrix)."""
    return mx.cumsum(lf, axis=-1, reverse=True, inclusive=False)


def mask_gates(igate: mx.array, fgate: mx.array, mask: mx.array | None, time_axis: int = 2):
    """Turn masked positions into exact identity steps on the state.

    With i = -inf and f = +inf: log f = 0, m_t = max(m_{t-1}, -inf) = m_{t-1}, f' = exp(0) = 1,
    i' = exp(-inf) = 0, so C, n and m are carried bit-for-bit. `mask` is [B, T] with True for real
    tokens; gates are [B, NH, T] (time_axis 2), or [B, T, NH] (time_axis 1: the model's layout).
    """
    if mask is None:
        return igate, fgate
    keep = mask[:, None, :] if time_axis == 2 else mask[:, :, None]
    igate = mx.where(keep, igate, -mx.inf)
    fgate = mx.where(keep, fgate, mx.inf)
    return igate, fgate
