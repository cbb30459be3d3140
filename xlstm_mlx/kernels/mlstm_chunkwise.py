"""mLSTM chunkwise-parallel form (prefill): parallel inside chunks, recurrent across chunks.

The sequence is cut into nc chunks of L tokens. With b the within-chunk cumulative log forget gate,
g = b_L (a chunk's total decay) and a_s = g - b_s + i~_s (log weight of key s at the chunk's end):

  across chunks (a scan over nc, elementwise work only; the k v^T products of all chunks are
  computed in one batched matmul beforehand, stabilized by their own max a*):
      m_next = max(g + m, a*)
      C_next = e^{g + m - m_next} C + e^{a* - m_next} sum_s e^{a_s - a*} k_s v_s^T      (same for n)
  inside a chunk, from the chunk's start state (C, n, m):
      log D[t, s] = b_t - b_s + i~_s (s <= t),   m_t = max(b_t + m, max_s log D[t, s])
      h_t = [e^{b_t+m-m_t} q^ C + sum_s e^{logD-m_t} (q^.k_s) v_s] / (max(|den|, e^{-m_t}) + eps)

m_t is exactly the recurrent stabilizer, so this equals the sequence form up to rounding.
Any length works: whole chunks, then the remainder as one chunk of its own length. Memory per call:
O(T * L) for the intra-chunk matrices and O(nc * Dqk * Dv) for the chunk start states.

Matmul inputs keep the q/k/v dtype (bfloat16 in the fast profile: the matrix units' rate); gates,
stabilizers, states and the normalizer are float32.
"""

import mlx.core as mx

from .mlstm_gates import log_sigmoid
from .mlstm_recurrent import F32, zero_state


def _chunk_start_states(kc, vc, b, i, state):
    """Scan over chunks. Returns the state at the start of every chunk and the final state."""
    g = b[..., -1]  # [B, NH, nc]
    a = g[..., None] - b + i  # [B, NH, nc, L]
    # Clamped so that a chunk made only of masked (identity) steps, where every a_s = -inf, gives
    # e^{a - a*} = 0 instead of e^{-inf + inf} = NaN. Real gates never come near -1e30.
    a_max = mx.maximum(mx.max(a, axis=-1), -1e30)  # [B, NH, nc]
    kw = kc * mx.exp(a - a_max[..., None])[..., None].astype(kc.dtype)
    kv = (kw.swapaxes(-1, -2) @ vc).astype(F32)  # [B, NH, nc, Dqk, Dv]
    ksum = mx.sum(kw.astype(F32), axis=-2)  # [B, NH, nc, Dqk]

    C, n, m = state
    starts_C, starts_n, starts_m = [], [], []
    for c in range(kc.shape[2]):
        starts_C.append(C)
        starts_n.append(n)
        starts_m.append(m)
        g_c, a_c = g[:, :, c, None], a_max[:, :, c, None]  # [B, NH, 1]
        m_next = mx.maximum(g_c + m, a_c)
        decay = mx.exp(g_c + m - m_next)
        scale = mx.exp(a_c - m_next)
        C = decay[..., None] * C + scale[..., None] * kv[:, :, c]
        n = decay * n + scale * ksum[:, :, c]
        m = m_next
    starts = (mx.stack(starts_C, 2), mx.stack(starts_n, 2), mx.concatenate(starts_m, -1))
    return starts, (C, n, m)


def _chunks(q, k, v, igate, fgate, state, L: int, eps: float):
    B, NH, T, Dqk = q.shape
    Dv = v.shape[-1]
    nc = T // L
    qc = q.reshape(B, NH, nc, L, Dqk)
    kc = k.reshape(B, NH, nc, L, Dqk)
    vc = v.reshape(B, NH, nc, L, Dv)
    i = igate.astype(F32).reshape(B, NH, nc, L)
    b = mx.cumsum(log_sigmoid(fgate.astype(F32)).reshape(B, NH, nc, L), axis=-1)

    (C_s, n_s, m_s), final = _chunk_start_states(kc, vc, b, i, state)

    log_d = b[..., :, None] - b[..., None, :] + i[..., None, :]  # [B, NH, nc, L, L]
    log_d = mx.where(mx.tril(mx.ones((L, L), dtype=mx.bool_)), log_d, -mx.inf)
    m_inter = b + m_s[..., None]  # weight of the chunk's start state
    m = mx.maximum(m_inter, mx.max(log_d, axis=-1))  # [B, NH, nc, L]

    scale = Dqk**-0.5
    s = (qc @ kc.swapaxes(-1, -2)).astype(F32) * (mx.exp(log_d - m[..., None]) * scale)
    q_inter = qc.astype(F32) * (mx.exp(m_inter - m) * scale)[..., None]
    num = q_inter @ C_s + (s.astype(vc.dtype) @ vc).astype(F32)
    den = mx.sum(q_inter * n_s[..., None, :], axis=-1) + mx.sum(s, axis=-1)
    h = num / (mx.maximum(mx.abs(den), mx.exp(-m)) + eps)[..., None]
    return h.reshape(B, NH, T, Dv).astype(v.dtype), final


def mlstm_chunkwise(q, k, v, igate, fgate, state=None, eps: float = 1e-6, chunk_size: int = 64):
    """q, k [B, NH, T, Dqk]; v [B, NH, T, Dv]; gates [B, NH, T]. Returns (h, final state)."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    B, NH, T, Dqk = q.shape
    if state is None:
        state = zero_state(B, NH, Dqk, v.shape[-1])
    whole = (T // chunk_size) * chunk_size
    hs = []
    for start, stop, L in ((0, whole, chunk_size), (whole, T, T - whole)):
        if stop > start:
            sl = slice(start, stop)
            h, state = _chunks(
                q[:, :, sl], k[:, :, sl], v[:, :, sl], igate[:, :, sl], fgate[:, :, sl], state, L, eps
            )
            hs.append(h)
    return (hs[0] if len(hs) == 1 else mx.concatenate(hs, axis=2)), state
