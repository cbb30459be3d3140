"""Loading: sharded checkpoints, both layouts, and a clear message for every kind of broken file."""

import json
import shutil

import mlx.core as mx
import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import xlstm_mlx
from xlstm_mlx.errors import CheckpointError
from oracles.canonical import make_hf_checkpoint


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    """A transformers checkpoint saved in several shards with an index."""
    from transformers import xLSTMForCausalLM

    src = make_hf_checkpoint(tmp_path_factory.mktemp("s") / "single", seed=4, hidden=64, heads=2)
    model = xLSTMForCausalLM.from_pretrained(src)
    out = src.parent / "sharded"
    model.save_pretrained(out, max_shard_size="60KB")
    assert (out / "model.safetensors.index.json").exists()
    return src, out


def copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_sharded_equals_single(sharded):
    single, shards = sharded
    ids = mx.array([[1, 5, 9, 33, 2]])
    a = np.array(xlstm_mlx.load(single)[0](ids))
    b = np.array(xlstm_mlx.load(shards)[0](ids))
    assert np.array_equal(a, b)


def test_missing_shard(sharded, tmp_path):
    d = copy(sharded[1], tmp_path / "c")
    victim = sorted(d.glob("model-*.safetensors"))[1]
    victim.unlink()
    with pytest.raises(CheckpointError, match=f"missing shard.*{victim.name}"):
        xlstm_mlx.load(d)


def test_truncated_file(sharded, tmp_path):
    d = copy(sharded[0], tmp_path / "c")
    f = d / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) - 1000])
    with pytest.raises(CheckpointError, match=r"model\.safetensors: file is truncated"):
        xlstm_mlx.load(d)


def test_garbage_header(sharded, tmp_path):
    d = copy(sharded[0], tmp_path / "c")
    (d / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    with pytest.raises(CheckpointError, match="header is not valid JSON"):
        xlstm_mlx.load(d)


def rewrite(d, fn):
    sd = load_file(str(d / "model.safetensors"))
    fn(sd)
    save_file(sd, str(d / "model.safetensors"))


def test_wrong_shape_names_tensor(sharded, tmp_path):
    d = copy(sharded[0], tmp_path / "c")
    key = "backbone.blocks.1.mlstm_layer.v.weight"
    rewrite(d, lambda sd: sd.__setitem__(key, torch.zeros(48, 64)))
    with pytest.raises(CheckpointError, match=rf"{key}: expected \(64, 64\), found \(48, 64\)"):
        xlstm_mlx.load(d)


def test_config_disagrees_with_tensors(sharded, tmp_path):
    d = copy(sharded[0], tmp_path / "c")
    cfg = json.loads((d / "config.json").read_text())
    cfg["hidden_size"] = 128
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"backbone\.embeddings\.weight has shape \(101, 128\).*\(101, 64\)"):
        xlstm_mlx.load(d)


def test_unknown_and_missing_keys(sharded, tmp_path):
    d = copy(sharded[0], tmp_path / "c")

    def edit(sd):
        sd["backbone.blocks.0.mystery.weight"] = torch.zeros(3)
        del sd["backbone.blocks.1.norm_ffn.weight"]

    rewrite(d, edit)
    with pytest.raises(CheckpointError) as e:
        xlstm_mlx.load(d)
    msg = str(e.value)
    assert "unexpected tensors (1): ['backbone.blocks.0.mystery.weight']" in msg
    assert "missing tensors (1): ['backbone.blocks.1.norm_ffn.weight']" in msg


def test_not_an_xlstm_checkpoint(tmp_path):
    save_file({"model.layers.0.self_attn.q_proj.weight": torch.zeros(4, 4)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match="no known model family matches.*known families: xlstm_stack.*xlstm7b"):
        xlstm_mlx.load(tmp_path)


def test_missing_directory_and_no_weights(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        xlstm_mlx.load(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="no \\*.safetensors"):
        xlstm_mlx.load(tmp_path)


def test_float16_on_disk(sharded, tmp_path):
    d = copy(sharded[0], tmp_path / "c")
    rewrite(d, lambda sd: sd.update({k: v.half() for k, v in sd.items()}))
    model, _ = xlstm_mlx.load(d, dtype="float32")
    assert model.stored_dtypes == ["float16"]
    assert np.isfinite(np.array(model(mx.array([[1, 2, 3]])))).all()


def test_repo_id_offline_gives_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match="could not be fetched from the Hugging Face Hub.*hf download"):
        xlstm_mlx.load("NX-AI/no-such-model-for-tests")
