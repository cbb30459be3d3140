"""mLSTM chunkwise-parallel form (prefill) in MLX ops: parallel inside chunks, recurrent across chunks.

(mlstm_chunkwise.py is the entry point: it runs the fused CUDA kernels of mlstm_chunkwise_cuda.py where they
apply, else this scan; the kernels handle any length themselves, a final partial chunk included.)

The sequence is cut into nc chunks of L tokens. With b the within-chunk cumulative log forget gate,
g_c = b_L of chunk c (its total log decay) and a_s = g - b_s + i~_s (log weight of key s at its chunk's end):
(every difference of cumulative sums here, b_t - b_s and g - b_s, is summed over its own segment instead:
mlstm_gates.log_decay_matrix says why; this is what makes the float32 logits at least as close to float64
as the canonical's, docs/numerics.md)

  across chunks, the recurrence m_next = max(g + m, a*), C_next = e^{g+m-m_next} C + e^{a*-m_next} KV
  (KV = sum_s e^{a_s - a*} k_s v_s^T, a* = max_s a_s, one batched matmul for all chunks) is unrolled
  in closed form. Sources are s = 0 (the incoming state, log weight m0) and s = c+1 (chunk c, log weight
  a*_c); targets are r = 0..nc-1 (chunk starts) and r = nc (the final state). With g' = [0, g]:
      Q[r, s]  = sum_{s < j <= r} g'_j                    (decay from source s to target r)
      logW     = Q[r, s] + base_s   for s <= r, else -inf   (base_0 = m0, base_{c+1} = a*_c)
      m_r      = max_s logW[r, s]                          (= the recurrent stabilizer at r)
      C_r      = sum_s e^{logW[r, s] - m_r} X_s            (X_0 = C0, X_{c+1} = KV_c; same for n)
  i.e. one small (nc+1) x (nc+1) matmul instead of nc sequential steps (which cost ~8 kernel launches
  each). Q is a segment sum computed by a masked cumulative sum, never as a difference of two long
  cumulative sums, so no precision is lost to cancellation however long the segment. Whole chunks
  are processed in segments of at most MAX_SEGMENT_CHUNKS, so the (nc+1)^2 * Dqk * Dv matmul stays a
  small fraction of the projections' work and the per-chunk KV stays bounded.
  inside a chunk, from the chunk's start state (C, n, m):
      log D[t, s] = b_t - b_s + i~_s (s <= t),   m_t = max(b_t + m, max_s log D[t, s])
      h_t = [e^{b_t+m-m_t} q^ C + sum_s e^{logD-m_t} (q^.k_s) v_s] / (max(|den|, e^{-m_t}) + eps)

m_t is exactly the recurrent stabilizer, so this equals the sequence form up to rounding; its
reference is mlstm_chunkwise.mlstm_chunkwise_ref (the parallel form applied chunk after chunk).
Any length works: whole chunks, then the remainder as one chunk of its own length. Memory per call:
O(T * L) for the intra-chunk matrices and O(segment chunks * Dqk * Dv) for the chunk start states.

exp is fastmath.exp: on the CPU in float32 the polynomial form (one 64 x 64 decay matrix per head and chunk,
131k values a block at the 64m shape: MLX's CPU exp took ~4-7 of the scan's ~36 ms for four blocks of a
512-token prefill; the form is also closer to float64, docs/numerics.md), elsewhere and on float64 the same
op as before (mlstm_gates.exp). It maps -inf (above the diagonal) to 0 exactly, as mx.exp does, and every
value whose exp is below the smallest normal float32 to 0 without making a subnormal (x86 computes those ~10x
slower: on the Intel VM the scan of four 64m layers at T = 512 took 39.7 ms with them, 23.5 ms without).

Matmul inputs keep the q/k/v dtype (bfloat16 in the fast profile: the matrix units' rate); gates,
stabilizers, states and the normalizer are float32 (float64 when the gates are: the exact profile).
"""

import mlx.core as mx

from xlstm_mlx.kernels.fastmath import exp
from xlstm_mlx.kernels.mlstm_gates import log_decay_matrix, log_decay_to_end, log_sigmoid, state_dtype
from xlstm_mlx.kernels.mlstm_recurrent import mlstm_zero_state
from xlstm_mlx.errors import UsageError

MAX_SEGMENT_CHUNKS = 32


def mlstm_chunkwise_flops(dqk: int, dv: int, chunk_size: int) -> int:
    """FLOPs per token and head of this form as implemented (dense L x L chunk matrices): q k^T, s v,
    q C and k v^T."""
    L = chunk_size
    return 2 * L * dqk + 2 * L * dv + 2 * dqk * dv + 2 * dqk * dv


def _segment_sum(g):
    """Q[..., r, s] = sum_{s < j <= r} g'_j with g' = [0, g]; shape [..., nc+1, nc+1] (0 where s >= r)."""
    gp = mx.concatenate([mx.zeros_like(g[..., :1]), g], axis=-1)  # [..., nc+1]
    n = gp.shape[-1]
    j = mx.arange(n)
    x = mx.where(j[:, None] > j[None, :], gp[..., :, None], 0.0)  # x[j, s] = g'_j for j > s
    return mx.cumsum(x, axis=-2)


def _chunk_start_states(kc, vc, b, i, to_end, state):
    """States at the start of every chunk and the final state, in closed form (see module doc).

    to_end [B, NH, nc, L] = g - b_s, the log decay from step s to its chunk's end, summed directly.
    """
    B, NH, nc, L, Dqk = kc.shape
    Dv = vc.shape[-1]
    g = b[..., -1]  # [B, NH, nc]
    a = to_end + i  # [B, NH, nc, L]
    # Clamped so that a chunk made only of masked (identity) steps, where every a_s = -inf, gives
    # e^{a - a*} = 0 instead of e^{-inf + inf} = NaN. Real gates never come near -1e30.
    a_max = mx.maximum(mx.max(a, axis=-1), -1e30)  # [B, NH, nc]
    kw = kc * exp(a - a_max[..., None])[..., None].astype(kc.dtype)
    sd = b.dtype
    kv = (kw.swapaxes(-1, -2) @ vc).astype(sd)  # [B, NH, nc, Dqk, Dv]
    ksum = mx.sum(kw.astype(sd), axis=-2)  # [B, NH, nc, Dqk]

    C0, n0, m0 = state
    base = mx.concatenate([m0, a_max], axis=-1)  # [B, NH, nc+1]
    r = mx.arange(nc + 1)
    log_w = mx.where(r[None, :] <= r[:, None], _segment_sum(g) + base[..., None, :], -mx.inf)
    m = mx.max(log_w, axis=-1)  # [B, NH, nc+1]
    w = exp(log_w - m[..., None])
    X = mx.concatenate([C0[:, :, None], kv], axis=2).reshape(B, NH, nc + 1, Dqk * Dv)
    N = mx.concatenate([n0[:, :, None], ksum], axis=2)  # [B, NH, nc+1, Dqk]
    # Chunk starts and the final state as separate products: a slice of one shared result would keep
    # that whole [nc+1, Dqk, Dv] buffer alive for as long as the cache holds the final state (measured:
    # +9 GB peak over 32 layers of the 7B shape).
    starts = ((w[..., :nc, :] @ X).reshape(B, NH, nc, Dqk, Dv), w[..., :nc, :] @ N, m[..., :nc])
    final = ((w[..., nc:, :] @ X).reshape(B, NH, Dqk, Dv), (w[..., nc:, :] @ N)[:, :, 0], m[..., nc:])
    return starts, final


def _chunks(q, k, v, igate, fgate, state, L: int, eps: float):
    B, NH, T, Dqk = q.shape
    Dv = v.shape[-1]
    nc = T // L
    qc = q.reshape(B, NH, nc, L, Dqk)
    kc = k.reshape(B, NH, nc, L, Dqk)
    vc = v.reshape(B, NH, nc, L, Dv)
    sd = state_dtype(igate)  # float32; float64 in the exact profile
    i = igate.astype(sd).reshape(B, NH, nc, L)
    lf = log_sigmoid(fgate.astype(sd)).reshape(B, NH, nc, L)
    b = mx.cumsum(lf, axis=-1)  # from the chunk's start

    (C_s, n_s, m_s), final = _chunk_start_states(kc, vc, b, i, log_decay_to_end(lf), state)

    # log D[t, s] = (b_t - b_s) + i~_s with b_t - b_s summed over the segment (mlstm_gates.log_decay_matrix)
    log_d = log_decay_matrix(lf) + i[..., None, :]  # [B, NH, nc, L, L], -inf above the diagonal
    m_inter = b + m_s[..., None]  # weight of the chunk's start state
    m = mx.maximum(m_inter, mx.max(log_d, axis=-1))  # [B, NH, nc, L]

    scale = Dqk**-0.5
    s = (qc @ kc.swapaxes(-1, -2)).astype(sd) * (exp(log_d - m[..., None]) * scale)
    q_inter = qc.astype(sd) * (exp(m_inter - m) * scale)[..., None]
    num = q_inter @ C_s + (s.astype(vc.dtype) @ vc).astype(sd)
    den = mx.sum(q_inter * n_s[..., None, :], axis=-1) + mx.sum(s, axis=-1)
    h = num / (mx.maximum(mx.abs(den), exp(-m)) + eps)[..., None]
    return h.reshape(B, NH, T, Dv).astype(v.dtype), final


def mlstm_chunkwise_ops(q, k, v, igate, fgate, state=None, eps: float = 1e-6, chunk_size: int = 64):
    """The closed-form chunk scan in MLX ops (any backend, any dtype)."""
    if chunk_size < 1:
        raise UsageError(f"chunk_size must be >= 1, got {chunk_size}")
    B, NH, T, Dqk = q.shape
    if state is None:
        state = mlstm_zero_state(B, NH, Dqk, v.shape[-1], state_dtype(igate))
    whole = (T // chunk_size) * chunk_size
    segment = MAX_SEGMENT_CHUNKS * chunk_size
    pieces = [(s, min(s + segment, whole), chunk_size) for s in range(0, whole, segment)]
    pieces.append((whole, T, T - whole))
    hs = []
    for start, stop, L in pieces:
        if stop > start:
            sl = slice(start, stop)
            h, state = _chunks(
                q[:, :, sl], k[:, :, sl], v[:, :, sl], igate[:, :, sl], fgate[:, :, sl], state, L, eps
            )
            hs.append(h)
    return (hs[0] if len(hs) == 1 else mx.concatenate(hs, axis=2)), state
