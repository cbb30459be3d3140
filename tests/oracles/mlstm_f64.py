"""An independent float64 NumPy mLSTM (sequence form): the oracle the MLX forms are measured against."""

import numpy as np


def mlstm_sequence_f64(q, k, v, igate, fgate, state=None, eps=1e-6):
    q, k, v, i, f = (np.asarray(x, dtype=np.float64) for x in (q, k, v, igate, fgate))
    B, NH, T, Dqk = q.shape
    if state is None:
        C, n, m = np.zeros((B, NH, Dqk, v.shape[-1])), np.zeros((B, NH, Dqk)), np.zeros((B, NH, 1))
    else:
        C, n, m = (np.asarray(x, dtype=np.float64) for x in state)
    hs = []
    for t in range(T):
        lf = -np.logaddexp(0.0, -f[:, :, t])[..., None]
        it = i[:, :, t][..., None]
        m_new = np.maximum(lf + m, it)
        fa, ia = np.exp(lf + m - m_new), np.exp(it - m_new)
        C = fa[..., None] * C + ia[..., None] * (k[:, :, t, :, None] * v[:, :, t, None, :])
        n = fa * n + ia * k[:, :, t]
        m = m_new
        qh = q[:, :, t] / np.sqrt(Dqk)
        num = np.einsum("bhd,bhde->bhe", qh, C)
        den = np.maximum(np.abs(np.sum(qh * n, -1, keepdims=True)), np.exp(-m)) + eps
        hs.append(num / den)
    return np.stack(hs, 2), (C, n, m)
