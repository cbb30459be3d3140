"""The one-token rows form of the xLSTM-7B family's decode step (models/xlstm7b/model.py `rows`): the blocks run
on [B, D] rows instead of [B, 1, D], so no product of the step reshapes its input or output. The same arithmetic
(the products see the same rows): bit-identical to the [B, 1, D] form, and no product in the step's graph
flattens and unflattens its rows per block (each node is host work at every decode step:
benchmarks/probes/decode_graph_census.py)."""

import re
import tempfile
from collections import Counter
from pathlib import Path

import mlx.core as mx
import pytest
from mlx.utils import tree_flatten

from xlstm_mlx.checkpoints.random import randomize, shape_args
from xlstm_mlx.models.compiled import decode_fn
from xlstm_mlx.models.xlstm7b import fuse
from xlstm_mlx.models.xlstm7b.model import Model
from xlstm_mlx.profiles import load_profile


def _model(profile="parity", seed=0, **overrides):
    prof = load_profile(profile)
    m = Model(shape_args("tiny", **overrides), prof)
    randomize(m, seed, dtype=prof.mx_compute_dtype)
    m.fuse_projections()
    return m


@pytest.mark.parametrize("profile", ["parity", "fast"])
@pytest.mark.parametrize("overrides", [{"weight_mode": "fused"}, {"weight_mode": "single", "use_bias": True}])
def test_rows_form_is_bit_identical_to_the_token_axis_form(profile, overrides):
    """Each block's fused step on [B, D] rows gives exactly the outputs and states of the same step on [B, 1, D],
    on fresh random inputs and a random incoming state."""
    m = _model(profile, seed=3, **overrides)
    B, D = 3, m.args.hidden_size
    prof = m.profile
    x = mx.random.normal((B, D), key=mx.random.key(7)).astype(prof.mx_residual_dtype)
    carried = mx.random.normal((B, D), key=mx.random.key(8)).astype(prof.mx_residual_dtype)
    cache = m.make_cache(B)
    m(mx.random.randint(3, 259, (B, 9), key=mx.random.key(9)).astype(mx.int32), cache=cache)  # a real state
    for block, state in zip(m.backbone.blocks, cache.layers):
        with fuse.inference_call():  # a stored-single model's fused arrays are used inside a model call
            assert block.mlstm_layer.decodes_fused(1, None, prof)
            r_x, r_h, r_state = block(x, state, None, prof, carried=carried)
            t_x, t_h, t_state = block(x[:, None], state, None, prof, carried=carried[:, None])
        assert r_x.shape == (B, D) and t_x.shape == (B, 1, D)
        assert mx.array_equal(r_x, t_x[:, 0]) and mx.array_equal(r_h, t_h[:, 0])
        for a, b in zip(tree_flatten(r_state), tree_flatten(t_state)):
            assert mx.array_equal(a[1], b[1]), a[0]


def test_the_model_call_returns_the_token_axis():
    """model(ids [B, 1], cache) keeps its [B, 1, V] logits, compiled or not, and equals the prompt's own last
    position when that token is fed alone (the same state, the same step)."""
    m = _model("parity", weight_mode="fused")
    B = 2
    prompt = mx.random.randint(3, 259, (B, 12), key=mx.random.key(1)).astype(mx.int32)
    c1, c2 = m.make_cache(B), m.make_cache(B)
    m(prompt[:, :-1], cache=c1)
    m(prompt[:, :-1], cache=c2)
    plain = m(prompt[:, -1:], cache=c1)
    compiled = decode_fn(m, use_compiled=True)(prompt[:, -1:], c2)
    assert plain.shape == compiled.shape == (B, 1, m.args.vocab_size)
    assert mx.allclose(plain, compiled, rtol=1e-5, atol=1e-5)


def _step_nodes(blocks: int) -> Counter:
    m = _model("fast", num_blocks=blocks, weight_mode="fused")
    cache = m.make_cache(2)
    step = decode_fn(m, use_compiled=True)
    tok = mx.zeros((2, 1), dtype=mx.int32)
    mx.eval(step(tok, cache), [v for _, v in tree_flatten(cache.layers)])
    out = step(tok, cache)
    with tempfile.NamedTemporaryFile(suffix=".dot") as f:
        mx.export_to_dot(f.name, out, *[v for _, v in tree_flatten(cache.layers)])
        return Counter(re.findall(r'label\s*=\s*"([A-Za-z_]+)', Path(f.name).read_text()))


def test_no_product_reshapes_its_rows_per_block():
    """In the compiled step no matrix product flattens a [B, 1, K] input and unflattens its output (MLX's
    Flatten / Unflatten nodes around a 3-D matmul, two a product before the rows form): their count is a
    constant of the model, not a number per block. (The CPU's MLX-ops recurrence keeps its own head reshapes.)"""
    views = ("Flatten", "Unflatten")
    small, deep = _step_nodes(2), _step_nodes(6)
    assert sum(deep[v] for v in views) == sum(small[v] for v in views), (small, deep)
    assert deep["Matmul"] > small["Matmul"]  # the census sees the blocks
