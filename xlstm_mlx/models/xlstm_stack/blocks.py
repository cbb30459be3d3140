"""The official xLSTMBlock wrapper (blocks/xlstm_block.py), shared by its mLSTM and sLSTM blocks:

    x = x + layer(xlstm_norm(x))
    x = x + ffn(ffn_norm(x))              only when the block has a feed-forward (sLSTM blocks do
                                          by default; the official mLSTM block never has one)

Both norms are the official residual-weight LayerNorm (scale 1 + weight, no bias, eps 1e-5).
"""

import mlx.nn as nn

from xlstm_mlx.models.numerics_check import assert_finite
from xlstm_mlx.models.xlstm_stack.mlstm import MLSTMLayerV1
from xlstm_mlx.models.layers.ffn import GatedFeedForward
from xlstm_mlx.models.layers.norms import ResidualLayerNorm
from xlstm_mlx.models.xlstm_stack.slstm import SLSTMLayer
from xlstm_mlx.errors import UsageError


class XLSTMBlock(nn.Module):
    def __init__(self, block_type: str, dims: int, layer: nn.Module, ffn: GatedFeedForward | None):
        super().__init__()
        self.block_type = block_type
        self.xlstm_norm = ResidualLayerNorm(dims)
        self.xlstm = layer
        if ffn is not None:
            self.ffn_norm = ResidualLayerNorm(dims)
            self.ffn = ffn

    def make_state(self, batch_size: int):
        return self.xlstm.make_state(batch_size)

    def recurrence_flops(self, chunk_size: int) -> int:
        return self.xlstm.recurrence_flops(chunk_size)

    def __call__(self, x, state, mask, profile, check: str | None = None):
        """x is the residual stream (profile.residual_dtype, float32 in the shipped profiles); sub-layer
        outputs are added to it, big matmuls take their input in the compute dtype."""
        if state is None:
            state = self.make_state(x.shape[0])
        h, state = self.xlstm(self.xlstm_norm(x), state, mask, profile)
        if check:
            assert_finite(f"{check}.xlstm ({self.block_type} state)", *state)
            assert_finite(f"{check}.xlstm ({self.block_type} output)", h)
        x = x + h
        if "ffn" in self:
            h = self.ffn(self.ffn_norm(x).astype(profile.mx_compute_dtype))
            if check:
                assert_finite(f"{check}.ffn", h)
            x = x + h
        return x, state


def make_block(block_type: str, args) -> XLSTMBlock:
    """One block of an official stack from StackArgs (args.py)."""
    if block_type == "mlstm":
        a = args.mlstm
        layer = MLSTMLayerV1(args.embedding_dim, a.inner_dim, a.num_heads, a.qkv_proj_blocksize,
                             a.conv1d_kernel_size, a.bias)
        return XLSTMBlock("mlstm", args.embedding_dim, layer, None)
    if block_type == "slstm":
        a = args.slstm
        layer = SLSTMLayer(args.embedding_dim, a.num_heads, a.conv1d_kernel_size, a.group_norm_weight)
        ffn = None
        if a.ffn_up_dim:
            ffn = GatedFeedForward(args.embedding_dim, a.ffn_up_dim, a.ffn_act_fn, a.ffn_bias)
        return XLSTMBlock("slstm", args.embedding_dim, layer, ffn)
    raise UsageError(f"unknown block type {block_type!r} in an official xLSTM stack (known: mlstm, slstm)")
