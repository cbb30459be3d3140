"""State snapshots: resume equals re-running, continuation, refusal of other models and dtypes."""

import os

import mlx.core as mx
import numpy as np
import pytest

from xlstm_mlx import load, stream_generate
from xlstm_mlx.generation.generate import prefill
from xlstm_mlx.checkpoints.random import make_random_checkpoint
from xlstm_mlx.errors import SnapshotError
from xlstm_mlx.generation.snapshot import load_snapshot, model_fingerprint, save_snapshot


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_random_checkpoint(tmp_path_factory.mktemp("snap"), "tiny", seed=5)


@pytest.fixture(scope="module")
def tiny(ckpt):
    return load(ckpt, dtype="float32")


def tokens_of(model, tok, prompt, n, **kw):
    return [r.token for r in stream_generate(model, tok, prompt, n, **kw)]


def snapshot_prompt(model, tok, ids, path):
    """What `generate --save-state` does: the state after all but the last prompt token, that one pending."""
    saved = {}

    def on_prefill(cache):
        save_snapshot(path, model, cache, ids[:-1], ids[-1:])
        saved["done"] = True

    out = tokens_of(model, tok, ids, 12, on_prefill=on_prefill)
    assert saved
    return out


def test_resume_gives_the_same_tokens(tiny, tmp_path):
    model, tok = tiny
    ids = tok.encode("A long prompt whose state we keep. " * 8)
    direct = snapshot_prompt(model, tok, ids, tmp_path / "s.safetensors")
    snap = load_snapshot(tmp_path / "s.safetensors", model)
    assert snap.tokens == ids[:-1] and snap.pending == ids[-1:]
    assert snap.cache.offset == len(ids) - 1
    assert snap.metadata["token_count"] == str(len(ids) - 1)
    assert tokens_of(model, tok, snap.pending, 12, cache=snap.cache) == direct


def test_resume_then_continue(tiny, tmp_path):
    model, tok = tiny
    a = tok.encode("First part, ")
    b = tok.encode("second part.", add_special_tokens=False)
    snapshot_prompt(model, tok, a, tmp_path / "a.safetensors")
    snap = load_snapshot(tmp_path / "a.safetensors", model)
    resumed = tokens_of(model, tok, snap.pending + b, 10, cache=snap.cache)
    assert resumed == tokens_of(model, tok, a + b, 10)


def test_state_round_trip_is_exact(tiny, tmp_path):
    model, tok = tiny
    ids = tok.encode("exact bits")
    cache = model.make_cache(1)
    prefill(model, mx.array([ids]), cache)
    save_snapshot(tmp_path / "x.safetensors", model, cache, ids)
    snap = load_snapshot(tmp_path / "x.safetensors", model)
    assert snap.pending == []
    for x, y in zip(cache.arrays(), snap.cache.arrays()):
        assert x.dtype == y.dtype == mx.float32
        np.testing.assert_array_equal(np.array(x), np.array(y))


def test_size_does_not_depend_on_prompt_length(tiny, tmp_path):
    model, tok = tiny
    sizes = []
    for n in (10, 2000):
        ids = np.random.default_rng(n).integers(3, 259, size=n).tolist()
        cache = model.make_cache(1)
        prefill(model, mx.array([ids]), cache, prefill_step_size=512)
        p = save_snapshot(tmp_path / f"{n}.safetensors", model, cache, ids)
        sizes.append(os.path.getsize(p) - 4 * n)  # minus the stored token ids
    assert abs(sizes[0] - sizes[1]) < 64


def test_other_model_is_refused(tiny, tmp_path, tmp_path_factory):
    model, tok = tiny
    ids = tok.encode("mine")
    snapshot_prompt(model, tok, ids, tmp_path / "s.safetensors")
    other, _ = load(make_random_checkpoint(tmp_path_factory.mktemp("other"), "tiny", seed=6), dtype="float32")
    assert model_fingerprint(other) != model_fingerprint(model)
    with pytest.raises(SnapshotError, match="different model"):
        load_snapshot(tmp_path / "s.safetensors", other)


def test_other_dtype_is_refused(tiny, ckpt, tmp_path):
    model, tok = tiny
    snapshot_prompt(model, tok, tok.encode("f32"), tmp_path / "s.safetensors")
    bf16, _ = load(ckpt, dtype="bfloat16")
    with pytest.raises(SnapshotError, match="bfloat16.*--dtype float32"):
        load_snapshot(tmp_path / "s.safetensors", bf16)


def test_same_checkpoint_loaded_again_is_accepted(tiny, ckpt, tmp_path):
    model, tok = tiny
    ids = tok.encode("reload")
    direct = snapshot_prompt(model, tok, ids, tmp_path / "s.safetensors")
    again, _ = load(ckpt, dtype="float32")
    snap = load_snapshot(tmp_path / "s.safetensors", again)
    assert tokens_of(again, tok, snap.pending, 12, cache=snap.cache) == direct


def test_bad_files(tiny, tmp_path):
    model, tok = tiny
    with pytest.raises(FileNotFoundError):
        load_snapshot(tmp_path / "missing.safetensors", model)
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file at all")
    with pytest.raises(SnapshotError, match="not a readable safetensors"):
        load_snapshot(tmp_path / "junk.safetensors", model)
    mx.save_safetensors(str(tmp_path / "weights.safetensors"), {"a": mx.zeros((2,))})
    with pytest.raises(SnapshotError, match="not an xlstm-mlx state snapshot"):
        load_snapshot(tmp_path / "weights.safetensors", model)
    cache = model.make_cache(1)
    with pytest.raises(ValueError, match="consumed 0 tokens"):
        save_snapshot(tmp_path / "bad.safetensors", model, cache, [1, 2, 3])
    with pytest.raises(ValueError, match="extra metadata"):
        save_snapshot(tmp_path / "bad.safetensors", model, cache, [], extra={"format": "x"})
