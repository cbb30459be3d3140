"""Model-level behaviour: cache/state passing, profiles, the NaN locator, dtype fields."""

import json

import mlx.core as mx
import numpy as np
import pytest

import xlstm_mlx
from xlstm_mlx.errors import CheckpointError
from xlstm_mlx.errors import NumericsError
from xlstm_mlx.profiles import load_profile
from xlstm_mlx.checkpoints.random import make_random_checkpoint, shape_args


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_random_checkpoint(tmp_path_factory.mktemp("m") / "tiny", "tiny", seed=1)


def test_prefill_then_steps_equals_full_forward(ckpt):
    model, _ = xlstm_mlx.load(ckpt, dtype="float32")
    ids = mx.array(np.random.default_rng(0).integers(0, 259, (2, 90)))
    full = np.array(model(ids))
    cache = model.make_cache(2)
    parts = [np.array(model(ids[:, :77], cache=cache))]
    for t in range(77, 85):
        parts.append(np.array(model(ids[:, t:t + 1], cache=cache)))
    parts.append(np.array(model(ids[:, 85:], cache=cache)))  # and a short prefill after steps
    assert cache.offset == 90
    err = np.abs(np.concatenate(parts, axis=1) - full).max()
    assert err <= 1e-4, err


def test_cache_batch_mismatch_is_an_error(ckpt):
    model, _ = xlstm_mlx.load(ckpt)
    with pytest.raises(ValueError, match="batch size"):
        model(mx.array([[1, 2]]), cache=model.make_cache(2))


def test_chunk_size_does_not_change_results(ckpt):
    ids = mx.array(np.random.default_rng(1).integers(0, 259, (1, 150)))
    a = np.array(xlstm_mlx.load(ckpt, profile="parity")[0](ids))
    prof = load_profile("parity").replace(chunk_size=16)
    b = np.array(xlstm_mlx.load(ckpt, profile=prof)[0](ids))
    assert np.abs(a - b).max() <= 1e-4


def test_shipped_profiles():
    parity, fast = load_profile("parity"), load_profile("fast")
    assert (parity.compute_dtype, parity.state_dtype) == ("float32", "float32")
    assert (fast.compute_dtype, fast.kernel_dtype, fast.state_dtype) == ("bfloat16", "bfloat16", "float32")
    with pytest.raises(ValueError, match="unknown numerics profile"):
        load_profile("turbo")
    with pytest.raises(ValueError, match="state_dtype must be 'float32'"):
        parity.replace(state_dtype="bfloat16")


def test_profile_json_file(tmp_path):
    (tmp_path / "p.json").write_text(json.dumps({"name": "mine", "compute_dtype": "float16", "chunk_size": 32}))
    assert load_profile(str(tmp_path / "p.json")).chunk_size == 32
    (tmp_path / "bad.json").write_text(json.dumps({"chunk": 32}))
    with pytest.raises(ValueError, match="unknown fields"):
        load_profile(str(tmp_path / "bad.json"))


def test_dtype_argument(ckpt):
    model, _ = xlstm_mlx.load(ckpt, dtype="bfloat16")
    assert model.backbone.embeddings.weight.dtype == mx.bfloat16
    assert model(mx.array([[3, 4, 5]])).dtype == mx.float32  # logits always float32
    cache = model.make_cache(1)
    model(mx.array([[3, 4, 5]]), cache=cache)
    assert all(a.dtype == mx.float32 for a in cache.arrays())  # state float32 whatever the weights
    with pytest.raises(ValueError, match="dtype must be one of"):
        xlstm_mlx.load(ckpt, dtype="int8")


def test_config_dtype_fields_keep_their_meaning(tmp_path):
    """torch_dtype (storage) does not choose the compute dtype; inference_state_dtype != float32 is refused."""
    p = make_random_checkpoint(tmp_path / "c", "tiny", dtype="bfloat16")
    cfg = json.loads((p / "config.json").read_text())
    assert cfg["torch_dtype"] == "bfloat16"
    model, _ = xlstm_mlx.load(p, dtype="float32")
    assert model.backbone.embeddings.weight.dtype == mx.float32
    cfg["inference_state_dtype"] = "bfloat16"
    (p / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="inference_state_dtype"):
        xlstm_mlx.load(p)


def test_nan_locator_names_block_and_sublayer(ckpt):
    model, _ = xlstm_mlx.load(ckpt, check_numerics=True)
    ids = mx.array([[5, 6, 7, 8]])
    model(ids)  # finite: no error
    w = model.backbone.blocks[1].ffn.proj_down.weight
    model.backbone.blocks[1].ffn.proj_down.weight = mx.where(mx.arange(w.shape[1]) == 3, mx.nan, w)
    with pytest.raises(NumericsError, match=r"block 1\.ffn"):
        model(ids)
    model.check_numerics = False
    assert np.isnan(np.array(model(ids))).any()  # off: no check, the NaN flows through


def test_random_shapes_are_consistent():
    a = shape_args("7b")
    assert (a.qk_head_dim, a.v_head_dim) == (256, 512)
    assert a.state_floats_per_sequence() * 4 == pytest.approx(134e6, rel=0.01)
