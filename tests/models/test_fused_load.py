"""Fusing the projections of a loaded model (models/xlstm7b/fuse.py) against the unfused model, its reference.

Fresh random checkpoints, stored single (with and without biases) and stored fused: the model `load` returns
fuses itself at its first inference call and must give the logits and states of the same checkpoint kept as
stored. Float32 ('parity' profile): each fused output row is the dot product it was before, only the matmul's
blocking can change, so 1e-5 of the logits' scale; bf16 ('fast'): the same bf16 products, rounded once per output
either way, so a statistical 2e-2.
"""

import mlx.core as mx
import pytest
from mlx.utils import tree_flatten

from xlstm_mlx.checkpoints.convert import convert
from xlstm_mlx.checkpoints.load import describe_run, load
from xlstm_mlx.checkpoints.random import make_random_checkpoint, shape_args
from xlstm_mlx.checkpoints.save import save_checkpoint
from xlstm_mlx.models.xlstm7b import fuse
from xlstm_mlx.models.xlstm7b.fuse import fusing

SINGLE_NAMES = (".q.weight", "igate_preact.weight", "proj_up.weight")


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


def _names(model):
    return [k for k, _ in tree_flatten(model.parameters())]


@pytest.mark.parametrize("profile,tol", [("parity", 1e-5), ("fast", 2e-2)])
@pytest.mark.parametrize("weight_mode,use_bias", [("single", False), ("single", True), ("fused", True)])
def test_fused_model_matches_the_stored_layout(tmp_path, profile, tol, weight_mode, use_bias):
    args = shape_args("tiny", weight_mode=weight_mode, use_bias=use_bias, num_heads=4)
    d = make_random_checkpoint(tmp_path / "ck", args, seed=3)
    fused, _ = load(d, profile=profile)
    with fusing(False):
        stored, _ = load(d, profile=profile)
    assert fuse.pending(fused) == (weight_mode == "single") and not fuse.pending(stored)
    if weight_mode == "single":
        assert "fused at the first inference call" in describe_run(fused)
        assert "not fused" in describe_run(stored)
        assert any(k.endswith(SINGLE_NAMES) for k in _names(fused))  # as stored until the first call
    prompt = mx.random.randint(3, 259, (2, 11), key=mx.random.key(4)).astype(mx.int32)
    got, got_cache = _run(fused, prompt)
    ref, ref_cache = _run(stored, prompt)
    assert fused.args.weight_mode == "fused" and stored.args.weight_mode == weight_mode
    assert not any(k.endswith(SINGLE_NAMES) for k in _names(fused))
    assert bool(mx.all(mx.isfinite(got)).item())
    assert _rel(got, ref) <= tol
    for a, b in zip(got_cache.arrays(), ref_cache.arrays()):
        assert _rel(a, b) <= tol * 10  # states: the same equations, compared in float32 (m is O(10))


def test_fused_model_saves_and_reloads_as_the_fused_layout(tmp_path):
    d = make_random_checkpoint(tmp_path / "ck", shape_args("tiny", use_bias=True), seed=1)
    model, _ = load(d, profile="parity")
    prompt = mx.random.randint(3, 259, (1, 7), key=mx.random.key(2)).astype(mx.int32)
    first = _run(model, prompt)[0]  # fuses
    again, _ = load(save_checkpoint(model, tmp_path / "resaved"), profile="parity")
    assert again.args.weight_mode == "fused" and not fuse.pending(again)
    assert _rel(_run(again, prompt)[0], first) <= 1e-6


def test_convert_and_quantize_see_the_stored_layers(tmp_path):
    d = make_random_checkpoint(tmp_path / "ck", "tiny", seed=2)
    out = convert(d, tmp_path / "q", quantize=True, bits=8, group_size=64, progress=False)["out"]
    q, _ = load(out)
    assert not fuse.pending(q) and q.args.weight_mode == "single"  # quantized: kept as stored
    assert "backbone.blocks.0.mlstm_layer.q.scales" in _names(q)
    prompt = mx.random.randint(3, 259, (1, 5), key=mx.random.key(5)).astype(mx.int32)
    assert bool(mx.all(mx.isfinite(_run(q, prompt)[0])).item())
