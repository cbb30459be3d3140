"""The official xlstm package's GatedFeedForward (components/feedforward.py) and its activations."""

import mlx.core as mx
import mlx.nn as nn
from xlstm_mlx import kernels
from xlstm_mlx.errors import UsageError


ACT_FNS = {
    # components/feedforward.py _act_fn_registry; torch's F.gelu default is the exact (erf) GELU
    "gelu": nn.gelu,
    "relu": nn.relu,
    "relu^2": lambda x: mx.square(nn.relu(x)),
    # looked up at each call, so the CPU's fused forms (and a forced reference) apply (kernels/fastmath.py)
    "sigmoid": lambda x: kernels.get("math.sigmoid")(x),
    "swish": lambda x: kernels.get("math.silu")(x),
    "selu": nn.selu,
}
# the registry kernel behind each activation that has one (for a model's kernel_names())
ACT_KERNELS = {"sigmoid": "math.sigmoid", "swish": "math.silu"}


def act_fn(name: str):
    if name not in ACT_FNS:
        raise UsageError(f"unknown feed-forward activation {name!r}; known: {sorted(ACT_FNS)}")
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
