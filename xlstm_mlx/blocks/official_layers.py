"""Small layers of the official `xlstm` package (components/ln.py, linear_headwise.py, feedforward.py).

Attribute names mirror the official module tree so that state_dict keys load without renaming.
Norms normalize in float32 and cast back, like the rest of the engine.
"""

import mlx.core as mx
import mlx.nn as nn

NORM_EPS = 1e-5  # components/ln.py: LayerNorm(eps=1e-5), also for MultiHeadLayerNorm / group norm


class ResidualLayerNorm(nn.Module):
    """Official LayerNorm(weight=True, bias=False, residual_weight=True): the scale is 1 + weight.

    The stored `weight` is the offset from 1 (zeros at init), so we add 1 here rather than at load
    time: the parameter keeps the meaning it has in the checkpoint.
    """

    def __init__(self, dims: int):
        super().__init__()
        self.weight = mx.zeros((dims,))

    def __call__(self, x):
        y = mx.fast.layer_norm(x.astype(mx.float32), None, None, NORM_EPS).astype(x.dtype)
        return y * (1.0 + self.weight).astype(x.dtype)


class MultiHeadLayerNorm(nn.Module):
    """Official MultiHeadLayerNorm: F.group_norm with one group per head, i.e. a LayerNorm over each
    head's DH features (biased variance), then the residual scale 1 + weight over all NH*DH features.

    x [..., NH, DH] -> [..., NH*DH]. `weight=False` (sLSTM group_norm_weight=False) means no scale.
    """

    def __init__(self, dims: int, weight: bool = True):
        super().__init__()
        if weight:
            self.weight = mx.zeros((dims,))

    def __call__(self, x):
        y = mx.fast.layer_norm(x.astype(mx.float32), None, None, NORM_EPS)
        y = y.reshape(*y.shape[:-2], -1).astype(x.dtype)
        if "weight" in self:
            y = y * (1.0 + self.weight).astype(x.dtype)
        return y


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


ACT_FNS = {
    # components/feedforward.py _act_fn_registry; torch's F.gelu default is the exact (erf) GELU
    "gelu": nn.gelu,
    "relu": nn.relu,
    "relu^2": lambda x: mx.square(nn.relu(x)),
    "sigmoid": mx.sigmoid,
    "swish": nn.silu,
    "selu": nn.selu,
}


def act_fn(name: str):
    if name not in ACT_FNS:
        raise ValueError(f"unknown feed-forward activation {name!r}; known: {sorted(ACT_FNS)}")
    return ACT_FNS[name]


class GatedFeedForward(nn.Module):
    """Official GatedFeedForward: proj_up -> (gate, up) -> proj_down(act(gate) * up)."""

    def __init__(self, dims: int, up_dim: int, act: str, bias: bool):
        super().__init__()
        self.up_dim = up_dim
        self.act_name = act
        self._act = act_fn(act)
        self.proj_up = nn.Linear(dims, 2 * up_dim, bias=bias)
        self.proj_down = nn.Linear(up_dim, dims, bias=bias)

    def __call__(self, x):
        gate, up = mx.split(self.proj_up(x), 2, axis=-1)
        return self.proj_down(self._act(gate) * up)
