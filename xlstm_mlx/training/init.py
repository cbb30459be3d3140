"""Initial weights for training from scratch, as the canonical xLSTM-7B code draws them.

transformers' xLSTMPreTrainedModel._init_weights / official xLSTMLarge.reset_parameters:
  embeddings, q, k, v, output gate, FFN up-projections, lm_head: small init N(0, sqrt(2 / (5 d)))
  out_proj and FFN proj_down: "wang" init N(0, 2 / n_blocks / sqrt(d))
  input/forget gate weights zero; input gate bias -10; forget gate bias linspace(3, 6) over the heads
  norm weights one, other biases zero.
"""

from __future__ import annotations

import math

import mlx.core as mx
from mlx.utils import tree_flatten, tree_unflatten

from xlstm_mlx.models.xlstm7b.model import Model


def init_weights(model: Model, seed: int = 0) -> Model:
    a = model.args
    d = a.hidden_size
    small = math.sqrt(2.0 / (5.0 * d))
    new = []
    for idx, (name, p) in enumerate(tree_flatten(model.parameters())):
        k = mx.random.key(seed * 1_000_003 + idx)
        leaf = name.rsplit(".", 2)[-2] if "." in name else name
        if "norm" in name:
            v = mx.ones(p.shape) if name.endswith("weight") else mx.zeros(p.shape)
        elif leaf in ("igate_preact", "fgate_preact", "ifgate_preact"):
            if name.endswith("weight"):
                v = mx.zeros(p.shape)
            else:
                nh = a.num_heads
                ig = mx.full((nh,), -10.0)
                fg = mx.linspace(3.0, 6.0, nh)
                v = {"igate_preact": ig, "fgate_preact": fg, "ifgate_preact": mx.concatenate([ig, fg])}[leaf]
        elif name.endswith("bias"):
            v = mx.zeros(p.shape)
        elif leaf in ("out_proj", "proj_down"):
            fan = d if leaf == "out_proj" else p.shape[1]
            v = mx.random.normal(p.shape, key=k) * (2.0 / a.num_blocks / math.sqrt(fan))
        else:
            v = mx.random.normal(p.shape, key=k) * small
        new.append((name, v.astype(p.dtype)))
    model.update(tree_unflatten(new))
    mx.eval(model.parameters())
    return model
