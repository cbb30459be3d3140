"""Gate helpers shared by every mLSTM form.

All gate math is float32: the exponential gating of the mLSTM subtracts large log-values
(up to the soft cap of 15 per step, accumulated over thousands of steps) and bfloat16's 8-bit
mantissa would lose the stabilizer m entirely.
"""

import mlx.core as mx


def log_sigmoid(x: mx.array) -> mx.array:
    """log(sigmoid(x)) = -softplus(-x), written so that +inf -> 0 and -inf -> -inf exactly.

    logaddexp(0, -x) is the overflow-safe softplus; an identity step (see `mask_gates`) relies on
    log_sigmoid(+inf) being exactly 0.
    """
    return -mx.logaddexp(mx.zeros_like(x), -x)


def mask_gates(igate: mx.array, fgate: mx.array, mask: mx.array | None):
    """Turn masked positions into exact identity steps on the state.

    With i = -inf and f = +inf: log f = 0, m_t = max(m_{t-1}, -inf) = m_{t-1}, f' = exp(0) = 1,
    i' = exp(-inf) = 0, so C, n and m are carried bit-for-bit. `mask` is [B, T] with True for real
    tokens; gates are [B, NH, T].
    """
    if mask is None:
        return igate, fgate
    keep = mask[:, None, :]
    igate = mx.where(keep, igate, -mx.inf)
    fgate = mx.where(keep, fgate, mx.inf)
    return igate, fgate
