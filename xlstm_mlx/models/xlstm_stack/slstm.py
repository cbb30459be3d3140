"""sLSTM layer of the official `xlstm` package (blocks/slstm/layer.py), run by kernels/slstm.py.

    x_conv = swish(causal_conv(x))            (x itself when conv1d_kernel_size == 0)
    i~ = W_i x_conv,  f~ = W_f x_conv,  z~ = W_z x,  o~ = W_o x        (headwise, block-diagonal)
    y  = sLSTM cell over (i~, f~, z~, o~) with recurrent matrix R and bias b
    out = per-head group norm(y)                                       (no output projection)

Gate-naming quirk of the official layer: `i, f, z, o = (self.fgate(x_conv), self.igate(x_conv), ...)`.
The module *named* fgate produces the input-gate pre-activation and the one named igate the
forget-gate one. We keep the official names for the weights (so checkpoints load unchanged) and
reproduce the math: `fgate` feeds i~, `igate` feeds f~.

The block wrapper (pre-norm, residual, feed-forward) is blocks/xlstm_block.py.
"""

import mlx.core as mx
import mlx.nn as nn

from xlstm_mlx import kernels
from xlstm_mlx.models.layers.conv import CausalConv1d
from xlstm_mlx.models.layers.headwise import LinearHeadwise
from xlstm_mlx.models.layers.norms import ResidualHeadwiseLayerNorm
from xlstm_mlx.errors import UsageError


class SLSTMCellParams(nn.Module):
    """The cell's parameters in the engine layout (see kernels/slstm.py):
    recurrent_kernel [NH, DH, 4*DH], bias [NH, 4*DH], float32 (the loader converts either official
    backend layout to this one)."""

    def __init__(self, num_heads: int, head_dim: int):
        super().__init__()
        self.recurrent_kernel = mx.zeros((num_heads, head_dim, 4 * head_dim))
        self.bias = mx.zeros((num_heads, 4 * head_dim))


class SLSTMLayer(nn.Module):
    def __init__(self, dims: int, num_heads: int, conv_kernel_size: int, group_norm_weight: bool):
        super().__init__()
        if dims % num_heads:
            raise UsageError(f"sLSTM: embedding_dim {dims} is not divisible by num_heads {num_heads}")
        self.dims, self.num_heads, self.head_dim = dims, num_heads, dims // num_heads
        self.conv_kernel_size = conv_kernel_size
        if conv_kernel_size > 0:
            self.conv1d = CausalConv1d(dims, conv_kernel_size)
        dh = self.head_dim
        self.fgate = LinearHeadwise(num_heads, dh, dh, bias=False)  # feeds the INPUT gate (quirk)
        self.igate = LinearHeadwise(num_heads, dh, dh, bias=False)  # feeds the FORGET gate (quirk)
        self.zgate = LinearHeadwise(num_heads, dh, dh, bias=False)
        self.ogate = LinearHeadwise(num_heads, dh, dh, bias=False)
        self.slstm_cell = SLSTMCellParams(num_heads, dh)
        self.group_norm = ResidualHeadwiseLayerNorm(dims, weight=group_norm_weight)

    def recurrence_flops(self, chunk_size: int) -> int:
        """Per token: the block-diagonal recurrent product R y (the gates' elementwise work is small)."""
        return 2 * self.num_heads * self.head_dim * 4 * self.head_dim

    def make_state(self, batch_size: int):
        conv = (
            self.conv1d.make_state(batch_size)
            if self.conv_kernel_size > 0
            else mx.zeros((batch_size, 0, self.dims), mx.float32)
        )
        return (*kernels.slstm_zero_state(batch_size, self.num_heads, self.head_dim), conv)

    def __call__(self, x, state, mask=None, profile=None):
        """x [B, T, E] (already normed) -> (out [B, T, E], new state (y, c, n, m, conv))."""
        y0, c0, n0, m0, conv = state
        if self.conv_kernel_size > 0:
            x_conv, conv = self.conv1d(x, conv, mask)
            x_conv = kernels.get("math.silu")(x_conv)
        else:
            x_conv = x
        # per head, gate-major pre-activations [B, T, NH, 4*DH] in the order i, f, z, o
        wx = mx.concatenate(
            [self.fgate.heads(x_conv), self.igate.heads(x_conv), self.zgate.heads(x), self.ogate.heads(x)],
            axis=-1,
        )
        R = self.slstm_cell.recurrent_kernel.astype(mx.float32)
        b = self.slstm_cell.bias.astype(mx.float32)
        cell_state = (y0, c0, n0, m0)
        # `profile` has nothing to choose here: gate math and state are float32. kernels.use_reference()
        # swaps the fast forms (compiled step; the fused CUDA sequence kernel where available) for the
        # plain loop of reference steps.
        if x.shape[1] == 1:
            step = kernels.get("slstm.step")
            y, cell_state = step(wx[:, 0], R, b, cell_state, None if mask is None else mask[:, 0])
            y = y[:, None]
        else:
            y, cell_state = kernels.get("slstm.sequence")(wx, R, b, cell_state, mask)
        # y is float32: normalize it before casting to the activation dtype
        out = self.group_norm(y).astype(x.dtype)
        return out, (*cell_state, conv)
