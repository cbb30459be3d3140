"""FFN padding (models/xlstm7b/fuse.py): the down projection kept [D, F'] with zero columns past ffn_dim, its
stored parameter a view of the first ffn_dim columns, and the SwiGLU product written F' wide with zeros.

Forced on here with XLSTM_MLX_FFN_PAD=1 (its default, auto, pads only where MLX's CUDA backend runs), on fresh
random checkpoints of the tiny shape (ffn_dim 192 -> 256) and a 7B-like FFN width (10,944 -> 11,008), against the
same checkpoint loaded without it. Float32 ('parity'): each output is the same dot product plus exact zero terms,
only the BLAS blocking over K can change, so 1e-5 of the logits' scale (as the fused-projection tests);
bf16 ('fast'): the same bf16 products rounded once per output either way, a statistical 2e-2.
"""

import importlib

import mlx.core as mx
import mlx.nn as nn
import pytest
from mlx.utils import tree_flatten

from xlstm_mlx.checkpoints.load import describe_run, load
from xlstm_mlx.checkpoints.random import make_random_checkpoint, shape_args
from xlstm_mlx.checkpoints.save import save_checkpoint
from xlstm_mlx.errors import UsageError
from xlstm_mlx.generation.snapshot import model_fingerprint
from xlstm_mlx.models.xlstm7b import fuse
from xlstm_mlx.models.xlstm7b.fuse import fusing

from decode_runs import run_prompt

swiglu_module = importlib.import_module("xlstm_mlx.kernels.swiglu")  # the package re-exports the function by that name


def _rel(a, b):
    return float(mx.abs(a - b).max()) / max(float(mx.abs(b).max()), 1e-30)


@pytest.fixture
def pad_on(monkeypatch):
    monkeypatch.setenv("XLSTM_MLX_FFN_PAD", "1")


def _down_inputs(model):
    """The widths the down projections were called with in one inference call (a spy on FusedLinear)."""
    widths = []
    real = fuse.FusedLinear.__call__

    def spy(self, x):
        if self.weight.shape[0] == model.args.hidden_size and self.weight.shape[1] % fuse.PAD_MULTIPLE == 0:
            widths.append(x.shape[-1])
        return real(self, x)
    return widths, spy


@pytest.mark.parametrize("profile,tol", [("parity", 1e-5), ("fast", 2e-2)])
@pytest.mark.parametrize("weight_mode,use_bias,ffn_dim", [("single", False, 192), ("single", True, 192),
                                                          ("fused", True, 192), ("fused", False, 10944)])
def test_padded_model_matches_the_unpadded(tmp_path, monkeypatch, pad_on, profile, tol, weight_mode, use_bias,
                                           ffn_dim):
    args = shape_args("tiny", weight_mode=weight_mode, use_bias=use_bias, num_heads=4, ffn_dim=ffn_dim)
    d = make_random_checkpoint(tmp_path / "ck", args, seed=5)
    padded, _ = load(d, profile=profile)
    with fusing(False):
        plain, _ = load(d, profile=profile)
    width = fuse.padded_width(ffn_dim)
    assert fuse.padded_to(padded) == width and fuse.padded_to(plain) is None
    assert f"FFN down padded {ffn_dim} -> {width}" in describe_run(padded)
    # the stored model is unchanged: names, shapes, values, fingerprint
    got_params, ref_params = dict(tree_flatten(padded.parameters())), dict(tree_flatten(plain.parameters()))
    assert got_params.keys() == ref_params.keys()
    for k, v in ref_params.items():
        assert got_params[k].shape == v.shape and mx.array_equal(got_params[k], v), k
    assert model_fingerprint(padded) == model_fingerprint(plain)
    widths, spy = _down_inputs(padded)
    monkeypatch.setattr(fuse.FusedLinear, "__call__", spy)
    prompt = mx.random.randint(3, 259, (2, 11), key=mx.random.key(6)).astype(mx.int32)
    got, _ = run_prompt(padded, prompt)
    assert widths and set(widths) == {width}  # prefill and decode both ran the padded product
    ref, _ = run_prompt(plain, prompt)
    assert bool(mx.all(mx.isfinite(got)).item())
    assert _rel(got, ref) <= tol


def test_save_after_padding_writes_the_stored_tensors(tmp_path, pad_on):
    """The parameter is a strided view of the padded array: saving writes its ffn_dim columns, values intact."""
    args = shape_args("tiny", weight_mode="fused")
    d = make_random_checkpoint(tmp_path / "ck", args, seed=7)
    model, _ = load(d)
    assert fuse.padded_to(model) == 256
    save_checkpoint(model, tmp_path / "saved", tokenizer_dir=d)
    with fusing(False):
        again, _ = load(tmp_path / "saved")
    w, w2 = model.backbone.blocks[1].ffn.proj_down.weight, again.backbone.blocks[1].ffn.proj_down.weight
    assert w2.shape == (64, 192) and mx.array_equal(w, w2)


def test_an_updated_or_quantized_down_projection_is_padded_again_or_left_alone(tmp_path, pad_on):
    args = shape_args("tiny", weight_mode="fused")
    d = make_random_checkpoint(tmp_path / "ck", args, seed=8)
    model, _ = load(d)
    prompt = mx.array([[5, 6, 7, 8]], dtype=mx.int32)
    ffn = model.backbone.blocks[0].ffn
    new = mx.random.normal(ffn.proj_down.weight.shape, key=mx.random.key(9)) * 0.05
    ffn.proj_down.weight = new  # an update in place (a training step, model.update)
    got = model(prompt, cache=model.make_cache(1))
    hit = ffn.__dict__[fuse._KEY + fuse.PADDED][0]
    assert mx.array_equal(hit.weight[:, :192], new) and not bool(mx.any(hit.weight[:, 192:]).item())
    with fusing(False):
        ref_model, _ = load(d)
    ref_model.backbone.blocks[0].ffn.proj_down.weight = new
    assert _rel(got, ref_model(prompt, cache=ref_model.make_cache(1))) <= 1e-5
    nn.quantize(model, group_size=64, bits=8)  # quantized parts are not padded: the group is dropped
    out = model(prompt, cache=model.make_cache(1))
    assert fuse.padded_to(model) is None and bool(mx.all(mx.isfinite(out)).item())


def test_training_call_runs_the_stored_view_and_its_gradient(tmp_path, pad_on):
    args = shape_args("tiny", weight_mode="single")
    d = make_random_checkpoint(tmp_path / "ck", args, seed=10)
    model, _ = load(d)
    ids = mx.array([[3, 4, 5, 6, 7]], dtype=mx.int32)

    def loss(m):
        return m(ids).astype(mx.float32).square().mean()  # no cache: the stored layers, gradients to them
    value, grads = nn.value_and_grad(model, loss)(model)
    g = grads["backbone"]["blocks"][0]["ffn"]["proj_down"]["weight"]
    assert g.shape == (64, 192) and bool(mx.all(mx.isfinite(g)).item()) and float(mx.abs(g).max()) > 0


def test_the_switch(monkeypatch):
    monkeypatch.setenv("XLSTM_MLX_FFN_PAD", "auto")
    from xlstm_mlx.kernels.cuda_common import cuda_available
    assert fuse.padding_enabled() == cuda_available()
    monkeypatch.setenv("XLSTM_MLX_FFN_PAD", "0")
    assert not fuse.padding_enabled()
    monkeypatch.setenv("XLSTM_MLX_FFN_PAD", "sometimes")
    with pytest.raises(UsageError, match="XLSTM_MLX_FFN_PAD"):
        fuse.padding_enabled()
    assert fuse.padded_width(10944) == 11008 and fuse.padded_width(256) == 256


@pytest.mark.parametrize("dtype", [mx.bfloat16, mx.float32])
def test_swiglu_width_appends_zero_columns(dtype):
    gz = (mx.random.normal((2, 3, 2 * 48), key=mx.random.key(11)) * 3.0).astype(dtype)
    for fn in (swiglu_module.swiglu, swiglu_module.swiglu_ref):
        narrow, wide = fn(gz), fn(gz, 64)
        assert wide.shape == (2, 3, 64) and wide.dtype == dtype
        assert mx.array_equal(wide[..., :48], narrow) and not bool(mx.any(wide[..., 48:]).item())
        assert mx.array_equal(fn(gz, 48), narrow)
    with pytest.raises(ValueError, match="narrower"):
        swiglu_module.swiglu_ref(gz, 40)
