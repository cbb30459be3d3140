"""sLSTM recurrence (the scalar-memory xLSTM cell): one step (decode) and the sequence form.

Per head h and unit j, with pre-activations summed from the input, the recurrent matrix and the bias
    raw_g = Wx_g + R_g y_{t-1} + b_g            g in (i, f, z, o)
the official `vanilla`/`cuda` sLSTM computes (xlstm 2.0.6, blocks/slstm/src/vanilla/slstm.py):
    lfm  = m_{t-1} + logsigmoid(f~)
    m_t  = i~                    where n_{t-1} == 0 (fresh state)
           max(i~, lfm)          elsewhere
    i'   = min(exp(i~ - m_t), 1);   f' = min(exp(lfm - m_t), 1)
    c_t  = f' c_{t-1} + i' tanh(z~);   n_t = f' n_{t-1} + i'
    y_t  = sigmoid(o~) c_t / n_t
The recurrent matrix is block-diagonal: head h only sees y_{t-1} of head h.

Why the details matter:
- The n == 0 test is per element, as the CUDA kernel does it (the vanilla torch code tests the whole
  batch at once, which is the same thing for a batch that starts together and makes rows of a batch
  depend on each other otherwise). It keeps m_1 = i~_1 so that left-padded rows equal unpadded ones.
- The min(., 1) clamps are no-ops except on the first step, where f' may overflow to inf; the clamp
  turns inf * 0 (c_0 = n_0 = 0) into 0 instead of NaN.

Layouts used here (the converter/loader produce them from either official backend layout):
    wx    [B, NH, 4*DH]  gate-major inside a head: i, f, z, o blocks of DH (any float dtype)
    R     [NH, DH, 4*DH] R[h, d, g*DH + j] = weight of y[h, d] on gate g, unit j (float32)
    b     [NH, 4*DH]     same gate-major layout (float32)
    state (y, c, n, m) each [B, NH, DH], float32 always
"""

import mlx.core as mx

from xlstm_mlx.kernels.slstm_cuda import cuda_available, slstm_sequence_cuda
from xlstm_mlx.kernels.mlstm_gates import log_sigmoid


def slstm_zero_state(batch: int, heads: int, head_dim: int):
    return tuple(mx.zeros((batch, heads, head_dim), mx.float32) for _ in range(4))


def slstm_step_ref(wx, R, b, state, mask=None):
    """One recurrent step. Returns (y_t [B, NH, DH] float32, new state).

    mask [B] bool (True = real token): where False the state is carried unchanged (identity step).
    """
    y, c, n, m = state
    # block-diagonal recurrence: one [1, DH] x [DH, 4*DH] product per head
    ry = (y[..., None, :] @ R).squeeze(-2)  # [B, NH, 4*DH]
    raw = wx.astype(mx.float32) + ry + b
    i_raw, f_raw, z_raw, o_raw = mx.split(raw, 4, axis=-1)
    lfm = m + log_sigmoid(f_raw)
    m_new = mx.where(n == 0, i_raw, mx.maximum(i_raw, lfm))
    i_act = mx.minimum(mx.exp(i_raw - m_new), 1.0)
    f_act = mx.minimum(mx.exp(lfm - m_new), 1.0)
    c_new = f_act * c + i_act * mx.tanh(z_raw)
    n_new = f_act * n + i_act
    y_new = mx.sigmoid(o_raw) * c_new / n_new
    new = (y_new, c_new, n_new, m_new)
    if mask is not None:
        keep = mask[:, None, None]
        new = tuple(mx.where(keep, a, old) for a, old in zip(new, state))
    return new[0], new


# The fast step is the same graph fused by mx.compile (fewer kernel launches per step); it must stay
# numerically identical to slstm_step_ref (tests/kernels/test_slstm.py checks it).
_step_compiled = mx.compile(slstm_step_ref)


def slstm_step(wx, R, b, state, mask=None):
    return _step_compiled(wx, R, b, state, mask)


def _sequence(step, wx, R, b, state, mask):
    B, T, NH, _ = wx.shape
    if state is None:
        state = slstm_zero_state(B, NH, R.shape[1])
    ys = []
    for t in range(T):
        y, state = step(wx[:, t], R, b, state, None if mask is None else mask[:, t])
        ys.append(y)
    return mx.stack(ys, axis=1), state


def slstm_sequence_ref(wx, R, b, state=None, mask=None):
    """Sequence form: wx [B, T, NH, 4*DH], mask [B, T]. Returns (y [B, T, NH, DH] float32, state).

    The sLSTM has no parallel form (its gates depend on y_{t-1}), so every form is a loop of steps.
    """
    return _sequence(slstm_step_ref, wx, R, b, state, mask)


def sequence_path() -> str:
    """Which code runs slstm_sequence on this backend (for run descriptions)."""
    return "fused CUDA kernel" if cuda_available() else "loop of compiled steps"


def slstm_sequence(wx, R, b, state=None, mask=None):
    """Fast sequence form, same signature as slstm_sequence_ref: the whole loop as one CUDA kernel on
    MLX's CUDA backend (kernels/slstm_cuda.py), elsewhere a loop of compiled steps."""
    if cuda_available():
        if state is None:
            state = slstm_zero_state(wx.shape[0], wx.shape[2], R.shape[1])
        return slstm_sequence_cuda(wx, R, b, state, mask)
    return _sequence(slstm_step, wx, R, b, state, mask)
