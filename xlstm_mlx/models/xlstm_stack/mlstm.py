"""The original mLSTM layer of the official `xlstm` package (blocks/mlstm/layer.py and cell.py).

    x_m, z  = split(proj_up(x))                              inner dim D = proj_factor * E (rounded)
    x_c     = swish(causal_conv(x_m))
    q, k    = headwise(x_c),  v = headwise(x_m)              blocks of qkv_proj_blocksize features
    i~, f~  = Linear(cat[q, k, v]) -> one scalar per head    (full Linear over 3D, with bias)
    h~      = mLSTM cell(q, k, v, i~, f~)  ->  per-head LayerNorm (residual scale 1 + w, no bias)
    y       = proj_down((h~ + learnable_skip * x_c) * swish(z))

The official cell (backends.py, eps 1e-6, no gate soft-cap) scales k by 1/sqrt(DH) where our
kernels scale q; q.(k/sqrt d) = (q/sqrt d).k, so outputs are equal (our C and n are sqrt(DH) larger
than the official state, which never leaves the engine). The official full-sequence form is the
parallel one whose running max leaves out the m0 = 0 term, its step keeps it; the two differ only in
the eps term, by at most ~1e-6 relative (see docs/official-stacks.md). We use the engine's kernels
(chunkwise prefill, compiled step), which keep the m0 term, so prefill and decode agree exactly.
"""

import mlx.core as mx
import mlx.nn as nn

from xlstm_mlx import kernels
from xlstm_mlx.models.layers.conv import CausalConv1d
from xlstm_mlx.kernels.mlstm_chunkwise import mlstm_chunkwise_flops
from xlstm_mlx.models.layers.headwise import LinearHeadwise
from xlstm_mlx.models.layers.norms import ResidualHeadwiseLayerNorm
from xlstm_mlx.errors import UsageError

CELL_EPS = 1e-6  # blocks/mlstm/backends.py: parallel_stabilized_simple / recurrent_step_stabilized_simple


class MLSTMCellParams(nn.Module):
    def __init__(self, inner_dim: int, num_heads: int):
        super().__init__()
        self.igate = nn.Linear(3 * inner_dim, num_heads, bias=True)
        self.fgate = nn.Linear(3 * inner_dim, num_heads, bias=True)
        self.outnorm = ResidualHeadwiseLayerNorm(inner_dim, weight=True)


class MLSTMLayerV1(nn.Module):
    def __init__(self, dims: int, inner_dim: int, num_heads: int, qkv_blocksize: int,
                 conv_kernel_size: int, bias: bool):
        super().__init__()
        if inner_dim % num_heads:
            raise UsageError(f"mLSTM: inner dim {inner_dim} is not divisible by num_heads {num_heads}")
        if inner_dim % qkv_blocksize:
            raise UsageError(f"mLSTM: inner dim {inner_dim} is not divisible by qkv_proj_blocksize {qkv_blocksize}")
        self.dims, self.inner_dim, self.num_heads = dims, inner_dim, num_heads
        self.head_dim = inner_dim // num_heads
        nb = inner_dim // qkv_blocksize
        self.proj_up = nn.Linear(dims, 2 * inner_dim, bias=bias)
        self.q_proj = LinearHeadwise(nb, qkv_blocksize, qkv_blocksize, bias)
        self.k_proj = LinearHeadwise(nb, qkv_blocksize, qkv_blocksize, bias)
        self.v_proj = LinearHeadwise(nb, qkv_blocksize, qkv_blocksize, bias)
        self.conv1d = CausalConv1d(inner_dim, conv_kernel_size)
        self.mlstm_cell = MLSTMCellParams(inner_dim, num_heads)
        self.learnable_skip = mx.ones((inner_dim,))
        self.proj_down = nn.Linear(inner_dim, dims, bias=bias)

    def make_state(self, batch_size: int):
        dh = self.head_dim
        return (*kernels.mlstm_zero_state(batch_size, self.num_heads, dh, dh), self.conv1d.make_state(batch_size))

    def recurrence_flops(self, chunk_size: int) -> int:
        return self.num_heads * mlstm_chunkwise_flops(self.head_dim, self.head_dim, chunk_size)

    def __call__(self, x, state, mask, profile):
        """x [B, T, E] (normed, residual dtype) -> (y [B, T, E] in the compute dtype, new state (C, n, m, conv))."""
        B, T, _ = x.shape
        C, n, m, conv = state
        cd = profile.mx_compute_dtype
        x_m, z = mx.split(self.proj_up(x.astype(cd)), 2, axis=-1)
        x_c, conv = self.conv1d(x_m, conv, mask)
        x_c = kernels.get("math.silu")(x_c)  # the fused form on the CPU (kernels/fastmath.py)
        q, k, v = self.q_proj(x_c), self.k_proj(x_c), self.v_proj(x_m)

        cell = self.mlstm_cell
        # gate pre-activations in float32 (NH outputs each: negligible work, and exponential gating
        # magnifies their rounding)
        qkv = mx.concatenate([q, k, v], axis=-1).astype(mx.float32)
        i = cell.igate(qkv).astype(mx.float32).transpose(0, 2, 1)  # [B, NH, T]
        f = cell.fgate(qkv).astype(mx.float32).transpose(0, 2, 1)
        i, f = kernels.mask_gates(i, f, mask)

        kd = profile.mx_kernel_dtype

        def heads(t):  # [B, T, D] -> [B, NH, T, DH]
            return t.reshape(B, T, self.num_heads, self.head_dim).transpose(0, 2, 1, 3).astype(kd)

        qh, kh, vh = heads(q), heads(k), heads(v)
        eps = CELL_EPS if profile.eps is None else profile.eps
        if T == 1:
            step = kernels.get(f"mlstm.{profile.step_kernel}")
            h, (C, n, m) = step(qh[:, :, 0], kh[:, :, 0], vh[:, :, 0], i[:, :, 0], f[:, :, 0], (C, n, m), eps)
            h = h[:, :, None]
        else:
            seq = kernels.get(f"mlstm.{profile.prefill_kernel}")
            h, (C, n, m) = seq(qh, kh, vh, i, f, (C, n, m), eps=eps, chunk_size=profile.chunk_size)
        h = cell.outnorm(h.transpose(0, 2, 1, 3).astype(mx.float32)).astype(cd)  # [B, T, D]
        h = (h + self.learnable_skip.astype(cd) * x_c) * kernels.get("math.silu")(z)
        return self.proj_down(h), (C, n, m, conv)
