"""mLSTM recurrent forms: one step (decode) and the sequence form (a loop of steps).

Shapes (per call): q, k [B, NH, Dqk]; v [B, NH, Dv]; igate, fgate [B, NH] (soft-capped
pre-activations); state (C [B, NH, Dqk, Dv], n [B, NH, Dqk], m [B, NH, 1]) in float32 (float64 in the
exact profile: the state dtype follows the gates', mlstm_gates.state_dtype).

Equations (per head; ../../docs/numerics.md derives them):
    lf  = log sigmoid(f~)
    m_t = max(lf + m_{t-1}, i~)
    f'  = exp(lf + m_{t-1} - m_t),   i' = exp(i~ - m_t)
    C_t = f' C_{t-1} + i' k v^T,     n_t = f' n_{t-1} + i' k
    h_t = (q^ C_t) / (max(|q^ . n_t|, exp(-m_t)) + eps),   q^ = q / sqrt(Dqk)

Everything here is float32 (float64 in the exact profile): k v^T and the read-out q^ C_t are done on the float32 state (the
canonical step casts C to the q/k/v dtype for the read-out; we keep float32, which is at least as
accurate and costs nothing extra since C is read in float32 anyway). h is cast back to v's dtype.
"""

import mlx.core as mx

from xlstm_mlx.kernels.mlstm_gates import exp, log_sigmoid, state_dtype


class ZeroState(tuple):
    """(C, n, m) all zeros, as mlstm_zero_state makes them: a plain tuple of lazy mx.zeros whose type says so.

    MLX arrays are immutable, so a ZeroState's arrays are zeros for as long as it exists, and a kernel given one may
    start from zeros without reading the arrays at all: the CUDA chunkwise prefill does (mlstm_chunkwise_cuda.py),
    which saves the three fill launches of a fresh cache's state per layer (~30 us a layer on an H200, 8 MB of
    C written and read back). Anything that replaces a state (a step, a snapshot load, a copy) makes a plain tuple
    again, so the form is only ever taken where the state is the one made here.
    """

    __slots__ = ()


def mlstm_zero_state(batch: int, heads: int, dqk: int, dv: int, dtype=mx.float32) -> ZeroState:
    return ZeroState((
        mx.zeros((batch, heads, dqk, dv), dtype),
        mx.zeros((batch, heads, dqk), dtype),
        mx.zeros((batch, heads, 1), dtype),
    ))


def mlstm_step_ref(q, k, v, igate, fgate, state, eps: float = 1e-6):
    """One recurrent step. Returns (h [B, NH, Dv] in v.dtype, new state)."""
    C, n, m = state
    sd = state_dtype(igate)
    i = igate.astype(sd)[..., None]
    lf = log_sigmoid(fgate.astype(sd))[..., None]
    m_new = mx.maximum(lf + m, i)
    f_act = exp(lf + m - m_new)
    i_act = exp(i - m_new)
    kf, vf = k.astype(sd), v.astype(sd)
    C_new = f_act[..., None] * C + i_act[..., None] * (kf[..., :, None] * vf[..., None, :])
    n_new = f_act * n + i_act * kf
    q_hat = q.astype(sd) * (q.shape[-1] ** -0.5)
    num = (q_hat[..., None, :] @ C_new).squeeze(-2)
    qn = mx.sum(q_hat * n_new, axis=-1, keepdims=True)
    den = mx.maximum(mx.abs(qn), exp(-m_new)) + eps
    h = num / den
    return h.astype(v.dtype), (C_new, n_new, m_new)


# The fast step is the same graph fused by mx.compile (one kernel launch per fused region instead of
# one per op). It must stay numerically identical to mlstm_step_ref: tests/kernels/test_mlstm.py checks it.
_step_compiled = mx.compile(mlstm_step_ref)


def mlstm_step(q, k, v, igate, fgate, state, eps: float = 1e-6):
    return _step_compiled(q, k, v, igate, fgate, state, eps)


def mlstm_sequence(q, k, v, igate, fgate, state=None, eps: float = 1e-6, chunk_size: int = 64):
    """Sequence form: a loop of reference steps. q, k [B, NH, T, Dqk]; gates [B, NH, T].

    `chunk_size` is accepted (and ignored) so that every sequence-level form shares one signature.
    """
    B, NH, T, Dqk = q.shape
    if state is None:
        state = mlstm_zero_state(B, NH, Dqk, v.shape[-1], state_dtype(igate))
    hs = []
    for t in range(T):
        h, state = mlstm_step_ref(
            q[:, :, t], k[:, :, t], v[:, :, t], igate[:, :, t], fgate[:, :, t], state, eps
        )
        hs.append(h)
    return mx.stack(hs, axis=2), state
