"""Load-time fusing of the projections (models/xlstm7b/fuse.py) against the unfused model, its reference.

Fresh random checkpoints, stored single and fused, with and without biases: the fused-at-load model must give
the logits and states of the same checkpoint loaded as stored. Float32 ('parity' profile): each fused output row
is the dot product it was before, only the matmul's blocking can change, so 1e-5 of the logits' scale; bf16
('fast'): the same bf16 products, rounded once per output either way, so a statistical 2e-2.
"""

import mlx.core as mx
import pytest

from xlstm_mlx.checkpoints.load import describe_run, load
from xlstm_mlx.checkpoints.random import make_random_checkpoint, shape_args
from xlstm_mlx.checkpoints.save import save_checkpoint
from xlstm_mlx.models.xlstm7b.args import infer_args
from xlstm_mlx.models.xlstm7b.fuse import fusing


def _run(model, prompt, steps=4):
    cache = model.make_cache(prompt.shape[0])
    outs = [model(prompt, cache=cache)[:, -1]]
    tok = mx.argmax(outs[-1], axis=-1, keepdims=True).astype(mx.int32)
    for _ in range(steps):
        outs.append(model(tok, cache=cache)[:, -1])  # one-token calls: the compiled decode step
        tok = mx.argmax(outs[-1], axis=-1, keepdims=True).astype(mx.int32)
    return mx.stack(outs), cache


def _rel(a, b):
    return float(mx.abs(a - b).max()) / max(float(mx.abs(b).max()), 1e-30)


@pytest.mark.parametrize("profile,tol", [("parity", 1e-5), ("fast", 2e-2)])
@pytest.mark.parametrize("weight_mode,use_bias", [("single", False), ("single", True), ("fused", True)])
def test_fused_at_load_matches_the_stored_layout(tmp_path, profile, tol, weight_mode, use_bias):
    args = shape_args("tiny", weight_mode=weight_mode, use_bias=use_bias, num_heads=4)
    d = make_random_checkpoint(tmp_path / "ck", args, seed=3)
    fused, _ = load(d, profile=profile)
    with fusing(False):
        stored, _ = load(d, profile=profile)
    assert fused.args.weight_mode == "fused"
    assert stored.args.weight_mode == weight_mode
    assert "fused" in fused.describe()["projections"]
    if weight_mode == "single":
        assert fused.args.stored_weight_mode == "single"
        assert "fused at load" in describe_run(fused)
        assert "not fused" in describe_run(stored)
        assert not any(k.endswith((".q.weight", "igate_preact.weight", "proj_up.weight"))
                       for k in dict(_flat(fused)))
    prompt = mx.random.randint(3, 259, (2, 11), key=mx.random.key(4)).astype(mx.int32)
    got, got_cache = _run(fused, prompt)
    ref, ref_cache = _run(stored, prompt)
    assert bool(mx.all(mx.isfinite(got)).item())
    assert _rel(got, ref) <= tol
    for a, b in zip(got_cache.arrays(), ref_cache.arrays()):
        assert _rel(a, b) <= tol * 10  # states: the same equations, compared in float32 (m is O(10))


def _flat(model):
    from mlx.utils import tree_flatten

    return tree_flatten(model.parameters())


def test_fused_model_saves_and_reloads_as_the_fused_layout(tmp_path):
    d = make_random_checkpoint(tmp_path / "ck", shape_args("tiny", use_bias=True), seed=1)
    model, _ = load(d, profile="parity")
    out = save_checkpoint(model, tmp_path / "resaved")
    again, _ = load(out, profile="parity")
    assert again.args.weight_mode == "fused" and again.args.stored_weight_mode is None
    prompt = mx.random.randint(3, 259, (1, 7), key=mx.random.key(2)).astype(mx.int32)
    assert _rel(_run(again, prompt)[0], _run(model, prompt)[0]) <= 1e-6


def test_quantized_checkpoints_keep_their_stored_layout():
    shapes = {"backbone.embeddings.weight": (64, 32), "backbone.blocks.0.mlstm_layer.out_proj.weight": (32, 32),
              "backbone.blocks.0.mlstm_layer.q.weight": (16, 32),
              "backbone.blocks.0.mlstm_layer.igate_preact.weight": (2, 32),
              "backbone.blocks.0.ffn.proj_down.weight": (32, 64)}
    assert infer_args(shapes, {}).weight_mode == "fused"
    assert infer_args(shapes, {"quantization": {"layers": {}}}).weight_mode == "single"
    with fusing(False):
        assert infer_args(shapes, {}).weight_mode == "single"
