"""The float64 `exact` profile: the in-engine oracle.

It must equal transformers' native code run with every dtype forced to float64 (tests/oracles/canonical_f64.py)
to float64 rounding: measured 1.9e-14..2.7e-14 max-abs on logits of magnitude ~1..30, so 1e-11 leaves three
orders of margin and still fails on any float32 step (which shows as >= 1e-7). Prefill + steps and the full
forward are the same function: measured 3.6e-14 apart, tolerance 1e-11.
"""

import numpy as np
import pytest

import mlx.core as mx
import xlstm_mlx
from oracles.canonical import make_hf_checkpoint
from oracles.canonical_f64 import hf_logits
from xlstm_mlx import profiles
from xlstm_mlx.errors import UsageError
from xlstm_mlx.profiles import NumericsProfile, default_profile, load_profile

F64_TOL = 1e-11

CASES = {
    "single_3_blocks": dict(hidden=64, heads=2, layers=3),
    "fused_bias_tied_h80": dict(hidden=80, heads=2, weight_mode="fused", use_bias=True, tie=True, vocab=77),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_exact_equals_transformers_in_float64(case, tmp_path):
    opts = CASES[case]
    path = make_hf_checkpoint(tmp_path / "ckpt", seed=sorted(CASES).index(case) + 11, **opts)
    ids = np.random.default_rng(4).integers(0, opts.get("vocab", 101), (2, 150))  # 2 chunks + a remainder
    ref = hf_logits(path, ids, tmp_path, "float64")
    assert ref.dtype == np.float64
    model, _ = xlstm_mlx.load(path, profile="exact")
    out = model(mx.array(ids))
    assert out.dtype == mx.float64
    err = np.abs(np.array(out) - ref).max()
    assert np.isfinite(ref).all() and err <= F64_TOL, f"exact vs transformers float64: {err:.3g}"


def test_exact_prefill_and_steps_equal_the_full_forward(tmp_path):
    path = make_hf_checkpoint(tmp_path / "ckpt", seed=3, hidden=64, heads=2, layers=2)
    model, _ = xlstm_mlx.load(path, profile="exact")
    ids = mx.array(np.random.default_rng(5).integers(0, 101, (2, 90)))
    full = np.array(model(ids))
    cache = model.make_cache(2)
    assert all(a.dtype == mx.float64 for a in cache.arrays())
    outs = [model(ids[:, :70], cache=cache)]
    outs += [model(ids[:, t:t + 1], cache=cache) for t in range(70, 90)]  # the compiled one-token step
    assert all(a.dtype == mx.float64 for a in cache.arrays())
    steps = np.array(mx.concatenate(outs, axis=1))
    assert np.abs(steps - full).max() <= F64_TOL


def test_every_parameter_and_activation_is_float64(tmp_path):
    from mlx.utils import tree_flatten

    path = make_hf_checkpoint(tmp_path / "ckpt", seed=4, hidden=64, heads=2, layers=1)
    model, _ = xlstm_mlx.load(path, profile="exact")
    assert {p.dtype for _, p in tree_flatten(model.parameters())} == {mx.float64}
    logits, states = model.forward(mx.array([[1, 2, 3]]), model.fresh_states(1), None, False)
    assert logits.dtype == mx.float64 and all(s.dtype == mx.float64 for st in states for s in st)


def test_shipped_profiles_keep_float32_state_and_logits(tmp_path):
    path = make_hf_checkpoint(tmp_path / "ckpt", seed=4, hidden=64, heads=2, layers=1)
    for name in ("parity", "fast"):
        model, _ = xlstm_mlx.load(path, profile=name)
        cache = model.make_cache(1)
        out = model(mx.array([[1, 2, 3]]), cache=cache)
        assert out.dtype == mx.float32 and all(a.dtype == mx.float32 for a in cache.arrays()), name


def test_exact_profile_fields():
    p = load_profile("exact")
    assert p.exact and p.mx_state_dtype == mx.float64
    assert {getattr(p, f) for f in profiles.DTYPE_FIELDS} == {"float64"}
    assert not load_profile("parity").exact and not load_profile("fast").exact


def test_float64_is_all_or_nothing():
    with pytest.raises(UsageError, match="all or nothing"):
        load_profile("exact").replace(compute_dtype="float32")
    with pytest.raises(UsageError, match="all or nothing"):
        NumericsProfile(name="half", state_dtype="float64")
    with pytest.raises(UsageError, match="all or nothing"):
        load_profile("parity").replace(compute_dtype="float64", kernel_dtype="float64")


def test_dtype_override_cannot_make_float64_or_break_exact(tmp_path):
    with pytest.raises(UsageError, match="exact"):
        default_profile("float64")
    path = make_hf_checkpoint(tmp_path / "ckpt", seed=4, hidden=64, heads=2, layers=1)
    with pytest.raises(UsageError, match="all or nothing"):
        xlstm_mlx.load(path, profile="exact", dtype="float32")


def test_exact_on_a_gpu_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(profiles.mx, "default_device", lambda: mx.Device(mx.gpu))
    with pytest.raises(UsageError, match="CPU only"):
        load_profile("exact")


def test_cli_exact_profile_on_a_gpu_exits_2(monkeypatch, capsys, tmp_path):
    from xlstm_mlx.cli import main

    monkeypatch.setattr(profiles.mx, "default_device", lambda: mx.Device(mx.gpu))
    path = make_hf_checkpoint(tmp_path / "ckpt", seed=4, hidden=64, heads=2, layers=1)
    rc = main(["generate", "--model", str(path), "--profile", "exact", "--prompt", "x", "--max-tokens", "1"])
    assert rc == 2 and "CPU only" in capsys.readouterr().err


def test_official_stack_refuses_exact():
    from xlstm_mlx.models.xlstm_stack import Model, example_args

    with pytest.raises(UsageError, match="xLSTM-7B family only"):
        Model(example_args(), load_profile("exact"))
