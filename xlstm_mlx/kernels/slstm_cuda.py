"""sLSTM sequence form as one CUDA kernel (MLX's CUDA backend): the whole time loop in one launch.

The compiled-step loop launches a few kernels per token and block; at prefill that is thousands of
launches per sLSTM block, and launch latency, not arithmetic, sets the speed. Here one thread block
runs one (batch row, head) through all T steps: thread j owns unit j's c, n, m, y in registers, the
head's y_{t-1} is shared through shared memory, and R y_{t-1} reads the head's R slice (coalesced in j).
Same equations, same float32 arithmetic, as slstm_step_ref (kernels/slstm.py), which the tests
compare it against; only the summation order of R y differs.

Signature as slstm_sequence_ref: wx [B, T, NH, 4*DH], R [NH, DH, 4*DH], b [NH, 4*DH],
state (y, c, n, m) [B, NH, DH] float32 (required: the dispatcher in kernels/slstm.py makes a fresh
one), mask [B, T] bool or None.
"""

import mlx.core as mx
from xlstm_mlx.errors import UsageError

_SOURCE = """
    const int j = threadIdx.x;              // unit inside the head
    const int bh = blockIdx.x;              // (batch row, head)
    const int b = bh / NH, h = bh % NH;
    const int T = wx_shape[1];              // a runtime value: no recompilation per prompt length
    __shared__ float y_sh[DH];              // y_{t-1} of this head

    const int s = (b * NH + h) * DH + j;    // state index [B, NH, DH]
    float y = y0[s], c = c0[s], n = n0[s], m = m0[s];
    float bias_i = bias[h * 4 * DH + 0 * DH + j], bias_f = bias[h * 4 * DH + 1 * DH + j];
    float bias_z = bias[h * 4 * DH + 2 * DH + j], bias_o = bias[h * 4 * DH + 3 * DH + j];
    const float* Rh = R + (size_t)h * DH * 4 * DH;
    y_sh[j] = y;
    __syncthreads();
    for (int t = 0; t < T; ++t) {
        const float* w = wx + (((size_t)b * T + t) * NH + h) * 4 * DH;
        float ri = 0.f, rf = 0.f, rz = 0.f, ro = 0.f;
        for (int d = 0; d < DH; ++d) {
            const float yd = y_sh[d];
            const float* Rd = Rh + (size_t)d * 4 * DH;
            ri += yd * Rd[0 * DH + j];
            rf += yd * Rd[1 * DH + j];
            rz += yd * Rd[2 * DH + j];
            ro += yd * Rd[3 * DH + j];
        }
        const float i_raw = static_cast<float>(w[0 * DH + j]) + ri + bias_i;
        const float f_raw = static_cast<float>(w[1 * DH + j]) + rf + bias_f;
        const float z_raw = static_cast<float>(w[2 * DH + j]) + rz + bias_z;
        const float o_raw = static_cast<float>(w[3 * DH + j]) + ro + bias_o;
        // log sigmoid(x) = -softplus(-x), overflow-safe
        const float log_f = -(fmaxf(-f_raw, 0.f) + log1pf(expf(-fabsf(f_raw))));
        const float lfm = m + log_f;
        const float m_new = (n == 0.f) ? i_raw : fmaxf(i_raw, lfm);
        const float i_act = fminf(expf(i_raw - m_new), 1.f);
        const float f_act = fminf(expf(lfm - m_new), 1.f);
        const float c_new = f_act * c + i_act * tanhf(z_raw);
        const float n_new = f_act * n + i_act;
        const float y_new = (1.f / (1.f + expf(-o_raw))) * c_new / n_new;
        if (keep[(size_t)b * T + t]) {
            y = y_new; c = c_new; n = n_new; m = m_new;
        }
        ys[(((size_t)b * T + t) * NH + h) * DH + j] = y;
        __syncthreads();                    // every thread has read y_{t-1}
        y_sh[j] = y;
        __syncthreads();                    // y_t visible to all
    }
    y_out[s] = y; c_out[s] = c; n_out[s] = n; m_out[s] = m;
"""

_kernel = None


def cuda_available() -> bool:
    """True where this kernel can run: MLX's CUDA backend with the GPU as default device."""
    return mx.cuda.is_available() and mx.default_device().type == mx.gpu


def slstm_sequence_cuda(wx, R, b, state, mask=None):
    global _kernel
    if _kernel is None:
        _kernel = mx.fast.cuda_kernel(
            name="slstm_sequence",
            input_names=["wx", "R", "bias", "y0", "c0", "n0", "m0", "keep"],
            output_names=["ys", "y_out", "c_out", "n_out", "m_out"],
            source=_SOURCE,
        )
    B, T, NH, G = wx.shape
    DH = G // 4
    if DH > 1024:
        raise UsageError(f"slstm_sequence_cuda: head dim {DH} exceeds 1024 threads per block")
    keep = mx.ones((B, T), mx.bool_) if mask is None else mask.astype(mx.bool_)
    outs = _kernel(
        inputs=[wx.astype(mx.float32), R.astype(mx.float32), b.astype(mx.float32), *(s.astype(mx.float32) for s in state), keep],
        template=[("NH", NH), ("DH", DH)],
        grid=(B * NH * DH, 1, 1),
        threadgroup=(DH, 1, 1),
        output_shapes=[(B, T, NH, DH)] + [(B, NH, DH)] * 4,
        output_dtypes=[mx.float32] * 5,
    )
    return outs[0], tuple(outs[1:])
