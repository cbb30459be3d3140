"""mLSTM parallel (quadratic) form: the reference every other form is checked against.

For a sequence of length T starting from state (C0, n0, m0), with b_t = sum_{r<=t} lf_r (b_t - b_s is summed
over its own segment, never subtracted: mlstm_gates.log_decay_matrix):
    log D[t, s] = b_t - b_s + i~_s            (s <= t; -inf above the diagonal)
    m_t         = max(b_t + m0, max_s log D[t, s])       (equals the recurrent m_t)
    h_t = [e^{b_t+m0-m_t} q^ C0 + sum_s e^{logD-m_t} (q^.k_s) v_s]
          / (max(|e^{b_t+m0-m_t} q^.n0 + sum_s e^{logD-m_t} (q^.k_s)|, e^{-m_t}) + eps)

Unlike the official parallel kernel, the m0 term is kept in the running max, so this form equals
the recurrent and chunkwise forms exactly even when the e^{-m} lower bound is active.
Memory is O(T^2) per head: use it for tests and as the per-chunk reference only.
"""

import mlx.core as mx

from xlstm_mlx.kernels.mlstm_gates import exp, log_decay_matrix, log_decay_to_end, log_sigmoid, state_dtype
from xlstm_mlx.kernels.mlstm_recurrent import mlstm_zero_state


def mlstm_parallel(q, k, v, igate, fgate, state=None, eps: float = 1e-6, chunk_size: int = 64):
    """q, k [B, NH, T, Dqk]; v [B, NH, T, Dv]; gates [B, NH, T]. Returns (h, final state)."""
    B, NH, T, Dqk = q.shape
    if state is None:
        state = mlstm_zero_state(B, NH, Dqk, v.shape[-1], state_dtype(igate))
    C0, n0, m0 = state
    sd = state_dtype(igate)  # float32; float64 in the exact profile
    i = igate.astype(sd)
    lf = log_sigmoid(fgate.astype(sd))
    b = mx.cumsum(lf, axis=-1)  # [B, NH, T]
    # b_t - b_s summed over each segment, not subtracted (mlstm_gates.log_decay_matrix): -inf above the diagonal
    log_d = log_decay_matrix(lf) + i[..., None, :]
    m_init = b + m0  # weight of the initial state at each t
    m = mx.maximum(m_init, mx.max(log_d, axis=-1))  # [B, NH, T]

    qf, kf, vf = q.astype(sd), k.astype(sd), v.astype(sd)
    q_hat = qf * (Dqk**-0.5)
    s = (q_hat @ kf.swapaxes(-1, -2)) * exp(log_d - m[..., None])
    w0 = exp(m_init - m)[..., None]
    num = w0 * (q_hat @ C0) + s @ vf
    den = w0 * (q_hat @ n0[..., None]) + mx.sum(s, axis=-1, keepdims=True)
    h = num / (mx.maximum(mx.abs(den), exp(-m)[..., None]) + eps)

    # final state at t = T: weights of C0 and of each k_s v_s^T, stabilized by m_T
    m_T = m[..., -1:]
    g0 = exp(b[..., -1:] + m0 - m_T)  # [B, NH, 1]
    w = exp(log_decay_to_end(lf) + i - m_T)  # [B, NH, T]: b_T - b_s summed directly
    kw = kf * w[..., None]
    C_T = g0[..., None] * C0 + kw.swapaxes(-1, -2) @ vf
    n_T = g0 * n0 + mx.sum(kw, axis=-2)
    return h.astype(v.dtype), (C_T, n_T, m_T)
