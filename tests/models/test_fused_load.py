"""Fused projections of a loaded model (models/xlstm7b/fuse.py) against the unfused model, its reference.

Fresh random checkpoints, stored single (with and without biases) and stored fused: the model `load` returns
runs its inference calls through the fused arrays and must give the logits and states of the same checkpoint
kept unfused, while its parameters, config and snapshot fingerprint stay those of the stored layout. Float32 ('parity' profile): each fused output row is the dot product it was before, only the matmul's
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
from xlstm_mlx.generation.snapshot import model_fingerprint
from xlstm_mlx.models.xlstm7b import fuse
from xlstm_mlx.models.xlstm7b.fuse import fusing

from decode_runs import run_prompt

SINGLE_NAMES = (".q.weight", "igate_preact.weight", "proj_up.weight")


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
    assert fuse.is_fused(fused) == (weight_mode == "single") and not fuse.is_fused(stored)
    if weight_mode == "single":
        assert "fused for inference" in describe_run(fused)
        assert "not fused" in describe_run(stored)
    assert _names(fused) == _names(stored) and fused.args == stored.args  # the stored model, unchanged
    assert model_fingerprint(fused) == model_fingerprint(stored)
    prompt = mx.random.randint(3, 259, (2, 11), key=mx.random.key(4)).astype(mx.int32)
    got, got_cache = run_prompt(fused, prompt)
    ref, ref_cache = run_prompt(stored, prompt)
    assert bool(mx.all(mx.isfinite(got)).item())
    assert _rel(got, ref) <= tol
    for a, b in zip(got_cache.arrays(), ref_cache.arrays()):
        assert _rel(a, b) <= tol * 10  # states: the same equations, compared in float32 (m is O(10))


def test_weight_updates_reach_the_fused_arrays(tmp_path):
    d = make_random_checkpoint(tmp_path / "ck", "tiny", seed=1)
    model, _ = load(d, profile="parity")
    with fusing(False):
        ref, _ = load(d, profile="parity")
    prompt = mx.random.randint(3, 259, (1, 7), key=mx.random.key(2)).astype(mx.int32)
    run_prompt(model, prompt)  # compiles the fused step
    new = {"backbone": {"blocks": [{"mlstm_layer": {"k": {"weight": mx.random.normal(b.mlstm_layer.k.weight.shape) * 0.1},
                                                    "fgate_preact": {"bias": mx.full(b.mlstm_layer.fgate_preact.bias.shape, 3.0)}},
                                    "ffn": {"proj_up": {"weight": mx.random.normal(b.ffn.proj_up.weight.shape) * 0.1}}}
                                   for b in model.backbone.blocks]}}
    model.update(new)
    ref.update(new)
    assert _rel(run_prompt(model, prompt)[0], run_prompt(ref, prompt)[0]) <= 1e-5


def test_training_gradients_reach_the_stored_parameters(tmp_path):
    import mlx.nn as nn

    d = make_random_checkpoint(tmp_path / "ck", "tiny", seed=6)
    model, _ = load(d, profile="parity")
    ids = mx.random.randint(3, 259, (1, 6), key=mx.random.key(7)).astype(mx.int32)

    def loss(m):
        return m(ids).astype(mx.float32).square().mean()  # no cache: the single layers

    _, grads = nn.value_and_grad(model, loss)(model)
    g = dict(tree_flatten(grads))
    assert float(mx.abs(g["backbone.blocks.0.mlstm_layer.q.weight"]).sum()) > 0


def test_save_and_convert_write_the_stored_layout(tmp_path):
    d = make_random_checkpoint(tmp_path / "ck", shape_args("tiny", use_bias=True), seed=1)
    model, _ = load(d, profile="parity")
    prompt = mx.random.randint(3, 259, (1, 7), key=mx.random.key(2)).astype(mx.int32)
    first = run_prompt(model, prompt)[0]
    again, _ = load(save_checkpoint(model, tmp_path / "resaved"), profile="parity")
    assert again.args.weight_mode == "single" and _names(again) == _names(model)
    assert _rel(run_prompt(again, prompt)[0], first) <= 1e-6
    out = convert(d, tmp_path / "q", quantize=True, bits=8, group_size=64, progress=False)["out"]
    q, _ = load(out)
    layer = q.backbone.blocks[0].mlstm_layer
    assert "backbone.blocks.0.mlstm_layer.q.scales" in _names(q)
    assert fuse._KEY + "qkv_opreact" in layer.__dict__  # quantized parts fuse too (next test: exactly)
    assert fuse._KEY + "ifgate_preact" in layer.__dict__  # the float gates fuse as float
    assert bool(mx.all(mx.isfinite(run_prompt(q, prompt)[0])).item())


@pytest.mark.parametrize("bits,group_size,use_bias", [(4, 64, False), (8, 32, True), (3, 64, False)])
def test_quantized_groups_fuse_exactly(tmp_path, bits, group_size, use_bias):
    """A quantized checkpoint, fused at load, against the same checkpoint kept unfused: every fused output row is
    the same quantized dot product (packed rows, scales and biases stacked; groups run along the inputs), so the
    float32 logits agree to the matmul's blocking, 1e-5 of their scale. The fused step runs the one-launch
    decode path (mlstm.decode_step) that an unfused quantized model cannot take."""
    d = make_random_checkpoint(tmp_path / "ck", shape_args("tiny", use_bias=use_bias, num_heads=4), seed=5)
    out = convert(d, tmp_path / "q", quantize=True, bits=bits, group_size=group_size, progress=False)["out"]
    fused, _ = load(out, profile="parity")
    with fusing(False):
        stored, _ = load(out, profile="parity")
    layer = fused.backbone.blocks[0].mlstm_layer
    hit = layer.__dict__[fuse._KEY + "qkv_opreact"][0]
    assert hit.quant == (group_size, bits, "affine") and hit.weight.dtype == mx.uint32
    assert fuse._KEY + "proj_up_gate_z" in fused.backbone.blocks[0].ffn.__dict__
    assert f"quantized {bits}-bit group {group_size}" in describe_run(fused)
    assert _names(fused) == _names(stored) and model_fingerprint(fused) == model_fingerprint(stored)
    prompt = mx.random.randint(3, 259, (2, 9), key=mx.random.key(8)).astype(mx.int32)
    got, got_cache = run_prompt(fused, prompt, steps=5)
    ref, ref_cache = run_prompt(stored, prompt, steps=5)
    assert bool(mx.all(mx.isfinite(got)).item())
    assert _rel(got, ref) <= 1e-5
    for a, b in zip(got_cache.arrays(), ref_cache.arrays()):
        assert _rel(a, b) <= 1e-4


def test_quantizing_a_loaded_float_model_fuses_the_quantized_parts(tmp_path):
    """quantize_model on a loaded (fused) float model replaces the parts: the next inference call fuses the
    quantized parts again, and the logits are those of the same quantization kept unfused."""
    from xlstm_mlx.checkpoints.quantize import plan_quantization, quantize_model

    d = make_random_checkpoint(tmp_path / "ck", "tiny", seed=9)
    model, _ = load(d, profile="parity")
    with fusing(False):
        ref, _ = load(d, profile="parity")
    prompt = mx.random.randint(3, 259, (1, 8), key=mx.random.key(1)).astype(mx.int32)
    run_prompt(model, prompt)  # fused float step compiled first: it must not be reused after quantizing
    for m in (model, ref):
        quantize_model(m, plan_quantization(m, bits=4, group_size=64), evaluate=True)
    got = run_prompt(model, prompt)[0]
    hit = model.backbone.blocks[0].mlstm_layer.__dict__[fuse._KEY + "qkv_opreact"][0]
    assert hit.quant == (64, 4, "affine")
    assert _rel(got, run_prompt(ref, prompt)[0]) <= 1e-5


def test_a_fused_float_group_keeps_its_transpose_made_once(tmp_path):
    """FusedLinear makes a float weight's transpose once, as an evaluated view (no Transpose node in a compiled
    step's graph per product), and the product through it is the one through w.T, bit for bit."""
    from xlstm_mlx.kernels.skinny_gemm import skinny_matmul_ref

    d = make_random_checkpoint(tmp_path / "ck", shape_args("tiny", num_heads=4), seed=2)
    model, _ = load(d, profile="fast")
    prompt = mx.random.randint(3, 259, (2, 5), key=mx.random.key(1)).astype(mx.int32)
    run_prompt(model, prompt, steps=1)  # an inference call: the groups are fused
    groups = [v[0] for b in model.backbone.blocks for m in (b.mlstm_layer, b.ffn)
              for k, v in m.__dict__.items() if k.startswith(fuse._KEY)]
    assert groups and all(g.weight_t is not None for g in groups if g.quant is None)
    x = mx.random.normal((3, groups[0].weight.shape[1]), key=mx.random.key(2)).astype(groups[0].weight.dtype)
    for g in groups:
        assert g.weight_t.shape == g.weight.shape[::-1] and bool(mx.array_equal(g.weight_t, g.weight.T).item())
    g = groups[0]
    assert bool(mx.array_equal(skinny_matmul_ref(x, g.weight, g.bias, g.weight_t), skinny_matmul_ref(x, g.weight, g.bias)).item())
