"""The official xlstm package's LinearHeadwiseExpand (components/linear_headwise.py): a block-diagonal map.

The attribute names mirror the official module so that state_dict keys load without renaming.
"""

import mlx.core as mx
import mlx.nn as nn


class LinearHeadwise(nn.Module):
    """Official LinearHeadwiseExpand: a block-diagonal linear map, one dense block per head.

    weight [NH, out_per_head, in_per_head]; y[..., h, o] = sum_d x[..., h, d] * weight[h, o, d].
    """

    def __init__(self, num_heads: int, in_per_head: int, out_per_head: int, bias: bool):
        super().__init__()
        self.weight = mx.zeros((num_heads, out_per_head, in_per_head))
        if bias:
            self.bias = mx.zeros((num_heads * out_per_head,))

    def heads(self, x):
        """x [..., NH*in] -> [..., NH, out] (bias added)."""
        nh, out_ph, in_ph = self.weight.shape
        xh = x.reshape(*x.shape[:-1], nh, 1, in_ph)
        y = (xh @ self.weight.swapaxes(-1, -2).astype(x.dtype)).squeeze(-2)
        if "bias" in self:
            y = y + self.bias.reshape(nh, out_ph).astype(x.dtype)
        return y

    def __call__(self, x):
        y = self.heads(x)
        return y.reshape(*y.shape[:-2], -1)
