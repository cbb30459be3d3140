"""The compiled decode step (models/compiled.py) against its reference, the model's own call."""

import numpy as np
import pytest
import mlx.core as mx

from xlstm_mlx.models.compiled import decode_fn
from xlstm_mlx.generation.generate import generate_step
from xlstm_mlx.models.xlstm7b.model import Model
from xlstm_mlx.profiles import load_profile
from xlstm_mlx.checkpoints.random import randomize, shape_args


def _model(profile="parity", seed=0, **overrides):
    prof = load_profile(profile)
    m = Model(shape_args("tiny", **overrides), prof)
    return randomize(m, seed, dtype=prof.mx_compute_dtype)


def _max_diff(a, b):
    return float(mx.abs(a.astype(mx.float32) - b.astype(mx.float32)).max())


@pytest.mark.parametrize("profile,tol", [("parity", 1e-5), ("fast", 2e-2)])
@pytest.mark.parametrize("overrides", [{}, {"weight_mode": "fused"}, {"use_bias": True}])
def test_steps_match_the_model_call(profile, tol, overrides):
    m = _model(profile, **overrides)
    B = 3
    prompt = mx.random.randint(3, 259, (B, 21), key=mx.random.key(1)).astype(mx.int32)
    ref_cache, fast_cache = m.make_cache(B), m.make_cache(B)
    m(prompt, cache=ref_cache)
    m(prompt, cache=fast_cache)
    fast = decode_fn(m, use_compiled=True)
    assert fast.compiled
    tok = prompt[:, -1:]
    for _ in range(6):
        ref = m(tok, cache=ref_cache)
        got = fast(tok, fast_cache)
        scale = float(mx.abs(ref).max())
        assert _max_diff(ref, got) <= tol * scale
        for a, b in zip(ref_cache.arrays(), fast_cache.arrays()):
            assert a.dtype == b.dtype == mx.float32
            assert _max_diff(a, b) <= tol * max(1.0, float(mx.abs(a).max()))
        assert ref_cache.offset == fast_cache.offset
        tok = mx.argmax(ref[:, -1], axis=-1, keepdims=True).astype(mx.int32)


def test_generate_step_same_tokens_either_way(monkeypatch):
    m = _model()
    prompt = mx.random.randint(3, 259, (2, 9), key=mx.random.key(2)).astype(mx.int32)
    runs = {}
    for flag in ("0", "1"):
        monkeypatch.setenv("XLSTM_MLX_COMPILE_DECODE", flag)
        runs[flag] = np.array([y.tolist() for y in generate_step(m, prompt, max_tokens=24)])
    assert runs["0"].shape == (24, 2)
    assert (runs["0"] == runs["1"]).all()


def test_weight_updates_are_seen_without_recompiling():
    """The weights are inputs of the compiled graph (models/compiled.py): an in-place update is read at the
    next call, with no refresh and no retrace."""
    m = _model(seed=0)
    tok = mx.array([[5]], dtype=mx.int32)
    before = decode_fn(m, use_compiled=True)(tok, m.make_cache(1))
    fn = m.__dict__["_xlstm_compiled_forward"][1]
    randomize(m, seed=7)
    after = decode_fn(m, use_compiled=True)(tok, m.make_cache(1))
    assert m.__dict__["_xlstm_compiled_forward"][1] is fn  # the same compiled function
    want = m(tok, cache=m.make_cache(1), compiled=False)
    assert _max_diff(after, want) <= 1e-5 * float(mx.abs(want).max())
    assert _max_diff(before, want) > 1e-3  # the weights really changed (else the test proves nothing)


def test_reference_when_disabled_or_checking(monkeypatch):
    m = _model()
    monkeypatch.setenv("XLSTM_MLX_COMPILE_DECODE", "0")
    assert not decode_fn(m).compiled
    monkeypatch.setenv("XLSTM_MLX_COMPILE_DECODE", "1")
    assert decode_fn(m).compiled
    m.check_numerics = True
    assert not decode_fn(m).compiled


def test_model_and_weights_are_freed_after_use():
    """Freed by reference counting alone, as soon as the last reference goes (no cycle left for the collector:
    until it runs, a cycle would keep every model's weights alive)."""
    import gc

    gc.collect()
    mx.clear_cache()
    before = mx.get_active_memory()
    gc.disable()
    try:
        m = _model()
        cache = m.make_cache(2)
        decode_fn(m, use_compiled=True)(mx.array([[4], [9]], dtype=mx.int32), cache)
        mx.eval(cache.arrays())
        assert mx.get_active_memory() > before + 50_000  # the tiny model's weights (else the test proves nothing)
        del m, cache
        assert mx.get_active_memory() <= before + 4_096
    finally:
        gc.enable()


def test_a_loaded_fused_model_traces_once_and_never_refuses(tmp_path, monkeypatch):
    """A stored-single checkpoint is fused at load (models/xlstm7b/fuse.py), and its weights are inputs of the
    compiled step. A trace hands the arrays back as new Python objects: that must not look like a weight update
    (it once made every step re-fuse the projections, drop the compiled step and trace again). Steps after the
    first: no re-fusing, the same compiled function, no trace; a real update is still seen."""
    from xlstm_mlx import load
    from xlstm_mlx.checkpoints.random import make_random_checkpoint
    from xlstm_mlx.models.xlstm7b import fuse

    model, _ = load(make_random_checkpoint(tmp_path / "ck", "tiny", seed=2), profile="parity")
    assert fuse.is_fused(model)
    cache = model.make_cache(1)
    tok = mx.array([[5]], dtype=mx.int32)
    mx.eval(model(tok, cache=cache))  # the trace
    fn = model.__dict__["_xlstm_compiled_forward"][1]
    fused = []
    real = fuse._fuse_group
    monkeypatch.setattr(fuse, "_fuse_group", lambda *a: (fused.append(a[1]), real(*a))[1])
    traces = []
    real_forward = type(model).forward
    monkeypatch.setattr(type(model), "forward", lambda self, *a: (traces.append(1), real_forward(self, *a))[1])
    for _ in range(4):
        mx.eval(model(tok, cache=cache))
    assert fused == [] and traces == []
    assert model.__dict__["_xlstm_compiled_forward"][1] is fn
    layer = model.backbone.blocks[0].mlstm_layer
    model.update({"backbone": {"blocks": [{"mlstm_layer": {"k": {"weight": layer.k.weight * 2.0}}}]}})
    mx.eval(model(tok, cache=cache))
    assert "qkv_opreact" in fused  # an update is still seen and fused again
