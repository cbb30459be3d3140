"""Quantized conversion and loading (xlstm_mlx/checkpoints/quantize.py, convert.py, loading.py), and perplexity.

Tolerances, and why:
- A quantized model must compute exactly the function of its dequantized weights: its logits are compared
  with a float model holding mx.dequantize(...) of every quantized layer, to 1e-4 of the logits' scale
  (float32 rounding of quantized_matmul vs matmul). A wrong group size, bit width or scales/biases layout
  changes the weights themselves and fails this by orders of magnitude.
- Against the original float model the error is the quantization noise. Affine quantization of a group
  of 64 normal weights (range ~5 sigma) has an RMS error of range/(2^bits-1)/sqrt(12): 0.57 % of sigma at
  8 bits, 9.6 % at 4 bits. The tiny model chains ~7 quantized matmuls from embedding to logits, so the
  median logit error lands near sqrt(7) times that: measured 1.5-2 % (8-bit) and 24-36 % (4-bit) of the
  logits' RMS over 6 random models. The bounds, 5 % and 60 %, keep a 2-3x margin; top-1 agreement
  >= 85 % (8-bit) and >= 20 % (4-bit, 50x chance over 259 tokens) rules out a scrambled layout.
"""

import json
import math
import struct
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten

from xlstm_mlx import load
from xlstm_mlx.cli import main as cli_main
from xlstm_mlx.errors import CheckpointError
from xlstm_mlx.checkpoints.convert import convert
from xlstm_mlx.models.xlstm7b.model import Model
from xlstm_mlx.tools.perplexity import perplexity, read_tokens
from xlstm_mlx.checkpoints.quantize import dequantized_copy, parameter_bytes, plan_quantization, quantize_model
from xlstm_mlx.checkpoints.random import make_random_checkpoint, shape_args


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    return make_random_checkpoint(tmp_path_factory.mktemp("q") / "src", "tiny", seed=3)


@pytest.fixture(scope="module")
def tokens():
    return mx.array(np.random.default_rng(7).integers(3, 259, (2, 96)), dtype=mx.int32)


def quantized_layers(model: Model) -> dict[str, tuple[int, int]]:
    return {p: (m.bits, m.group_size) for p, m in tree_flatten(model.leaf_modules(), is_leaf=nn.Module.is_module)
            if isinstance(m, (nn.QuantizedLinear, nn.QuantizedEmbedding))}


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("group_size", [32, 64, 128])
def test_each_setting_loads_and_is_its_dequantized_model(src, tmp_path, tokens, bits, group_size):
    out = convert(src, tmp_path / "q", quantize=True, bits=bits, group_size=group_size, progress=False)["out"]
    cfg = json.loads((out / "config.json").read_text())["quantization"]
    q, tok = load(out)
    assert tok is not None  # tokenizer files were copied
    assert quantized_layers(q) == {p: (s["bits"], s["group_size"]) for p, s in cfg["layers"].items()}
    assert all(b == bits for b, _ in quantized_layers(q).values())
    a, b = q(tokens), dequantized_copy(q)(tokens)
    assert mx.abs(a - b).max().item() <= 1e-4 * mx.abs(b).max().item()


@pytest.mark.parametrize("bits,median_bound,top1_bound", [(8, 0.05, 0.85), (4, 0.60, 0.20)])
def test_logits_close_to_float_model(src, tmp_path, tokens, bits, median_bound, top1_bound):
    ref = load(src)[0](tokens)
    q = load(convert(src, tmp_path / "q", quantize=True, bits=bits, group_size=64, progress=False)["out"])[0]
    out = q(tokens)
    rms = mx.sqrt(mx.mean(ref * ref)).item()
    median = float(np.median(np.abs(np.array(out - ref)))) / rms
    top1 = (out.argmax(-1) == ref.argmax(-1)).mean().item()
    assert not mx.isnan(out).any().item()
    assert median <= median_bound and top1 >= top1_bound, (median, top1)


def test_layer_choice_gates_norms_fallbacks(tmp_path):
    # ffn 192: 128 does not divide it (fallback to 64); ffn 200: no group size divides it (kept float)
    for ffn, expect in ((192, 64), (200, None)):
        s = make_random_checkpoint(tmp_path / f"s{ffn}", shape_args("tiny", hidden_size=128, ffn_dim=ffn,
                                                                     qk_dim=64, v_dim=128))
        out = convert(s, tmp_path / f"q{ffn}", quantize=True, bits=4, group_size=128, progress=False)["out"]
        cfg = json.loads((out / "config.json").read_text())["quantization"]
        q = load(out)[0]
        got = quantized_layers(q)
        down = "backbone.blocks.0.ffn.proj_down"
        if expect is None:
            assert down not in got and "not a multiple of 32" in cfg["not_quantized"][down]
        else:
            assert got[down] == (4, 64) and "group size 64" in cfg["group_size_fallbacks"][down]
        assert got["backbone.blocks.0.mlstm_layer.q"] == (4, 128)
        assert {"backbone.embeddings", "lm_head", "backbone.blocks.1.mlstm_layer.out_proj"} <= set(got)
        for gate in ("igate_preact", "fgate_preact"):
            layer = getattr(q.backbone.blocks[0].mlstm_layer, gate)
            assert type(layer) is nn.Linear and f"backbone.blocks.0.mlstm_layer.{gate}" in cfg["not_quantized"]
        assert "backbone.out_norm" in cfg["not_quantized"]


@pytest.mark.parametrize("overrides", [dict(weight_mode="fused"), dict(tie_word_embeddings=True)])
def test_fused_and_tied_models(tmp_path, tokens, overrides):
    s = make_random_checkpoint(tmp_path / "s", shape_args("tiny", **overrides))
    out = convert(s, tmp_path / "q", quantize=True, bits=8, group_size=32, progress=False)["out"]
    q = load(out)[0]
    assert "backbone.blocks.0.mlstm_layer.ifgate_preact" not in quantized_layers(q) or not overrides.get("weight_mode")
    a, b = q(tokens), dequantized_copy(q)(tokens)
    assert mx.abs(a - b).max().item() <= 1e-4 * mx.abs(b).max().item()


def test_keep_embeddings_and_dtype(src, tmp_path):
    out = convert(src, tmp_path / "q", dtype="bfloat16", quantize=True, bits=4, group_size=64,
                  embeddings=False, progress=False)["out"]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["torch_dtype"] == "bfloat16"
    assert "backbone.embeddings" in cfg["quantization"]["not_quantized"]
    tensors = mx.load(str(out / "model.safetensors"))
    assert tensors["backbone.embeddings.weight"].dtype == mx.bfloat16
    assert tensors["lm_head.weight"].dtype == mx.bfloat16
    assert tensors["backbone.blocks.0.mlstm_layer.q.weight"].dtype == mx.uint32
    assert tensors["backbone.blocks.0.mlstm_layer.q.scales"].dtype == mx.bfloat16
    assert isinstance(load(out)[0].backbone.embeddings, nn.Embedding)


def test_lazy_size_equals_file_size(src, tmp_path):
    out = convert(src, tmp_path / "q", quantize=True, bits=4, group_size=64, progress=False)["out"]
    f = out / "model.safetensors"
    with open(f, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
    lazy = Model(shape_args("tiny"))  # never evaluated
    quantize_model(lazy, plan_quantization(lazy, 4, 64))
    assert parameter_bytes(lazy) == f.stat().st_size - 8 - n


def _rewrite(out, change):
    """Apply change(tensors) and write model.safetensors back."""
    tensors = dict(mx.load(str(out / "model.safetensors")))
    change(tensors)
    mx.save_safetensors(str(out / "model.safetensors"), tensors)


@pytest.fixture
def q4(src, tmp_path):
    return convert(src, tmp_path / "q4", quantize=True, bits=4, group_size=64, progress=False)["out"]


def test_truncated_quantized_file(q4):
    f = q4 / "model.safetensors"
    f.write_bytes(f.read_bytes()[:-1000])
    with pytest.raises(CheckpointError, match="truncated"):
        load(q4)


def test_quantized_weight_stored_as_float(q4):
    key = "backbone.blocks.1.ffn.proj_up.weight"
    _rewrite(q4, lambda t: t.__setitem__(key, t[key].astype(mx.float32)))
    with pytest.raises(CheckpointError, match="should hold packed 4-bit integers"):
        load(q4)


def test_scales_missing(q4):
    _rewrite(q4, lambda t: t.pop("lm_head.scales"))
    with pytest.raises(CheckpointError, match=r"lm_head is quantized .* no \['lm_head.scales'\]"):
        load(q4)


def _edit_config(out, change):
    cfg = json.loads((out / "config.json").read_text())
    change(cfg)
    (out / "config.json").write_text(json.dumps(cfg))


@pytest.mark.parametrize("change,message", [
    (lambda c: c["quantization"]["layers"]["backbone.blocks.0.mlstm_layer.k"].update(bits=8),
     r"backbone.blocks.0.mlstm_layer.k: config.json says 8-bit, group size 64.*does not match"),
    (lambda c: c["quantization"]["layers"]["lm_head"].update(group_size=32), r"lm_head: config.json says 4-bit, group size 32"),
    (lambda c: c["quantization"]["layers"].pop("backbone.blocks.1.ffn.proj_down"),
     r"quantized layers that config.json's quantization section does not list: \['backbone.blocks.1.ffn.proj_down'\]"),
    (lambda c: c.pop("quantization"), r"no `quantization` section"),
    (lambda c: c["quantization"].pop("layers"), r"without its `layers` map"),
    (lambda c: c["quantization"]["layers"].update({"backbone.blocks.0.mlstm_layer.q": {"bits": 3, "group_size": 16}}),
     r"expected \{'bits'"),
    (lambda c: c["quantization"].update(mode="mxfp4"), r"mode 'mxfp4' is not supported"),
])
def test_mismatching_quantization_config(q4, change, message):
    _edit_config(q4, change)
    with pytest.raises(CheckpointError, match=message):
        load(q4)


def test_config_names_a_layer_the_model_lacks(q4):
    def change(c):
        c["quantization"]["layers"]["backbone.blocks.0.mlstm_layer.out_proj"] = {"bits": 4, "group_size": 64}
        c["quantization"]["layers"]["backbone.blocks.0.mlstm_layer.nonexistent"] = {"bits": 4, "group_size": 64}

    _edit_config(q4, change)
    with pytest.raises(CheckpointError, match="nonexistent"):
        load(q4)


def test_cli_refuses_to_overwrite(src, tmp_path, capsys):
    out = tmp_path / "q"
    assert cli_main(["convert", "--model", str(src), "--out", str(out), "-q", "--bits", "8"]) == 0
    before = (out / "model.safetensors").read_bytes()
    assert cli_main(["convert", "--model", str(src), "--out", str(out), "-q", "--bits", "4"]) == 2
    assert "already exists; pass --force" in capsys.readouterr().err
    assert (out / "model.safetensors").read_bytes() == before
    assert cli_main(["convert", "--model", str(src), "--out", str(out), "-q", "--bits", "4", "--force"]) == 0
    assert json.loads((out / "config.json").read_text())["quantization"]["bits"] == 4
    other = tmp_path / "notes"
    other.mkdir()
    (other / "a.txt").write_text("mine")
    assert cli_main(["convert", "--model", str(src), "--out", str(other), "--force"]) == 2
    assert "not a model directory" in capsys.readouterr().err and (other / "a.txt").exists()
    assert cli_main(["convert", "--model", str(src), "--out", str(src), "--force"]) == 2
    assert cli_main(["convert", "--model", str(src), "--out", str(tmp_path / "x"), "--bits", "4"]) == 2
    assert "only apply with -q" in capsys.readouterr().err
    assert cli_main(["convert", "--model", str(out), "--out", str(tmp_path / "y"), "-q"]) == 2
    assert "already quantized" in capsys.readouterr().err


def test_info_describes_quantized_checkpoint(src, q4):
    from xlstm_mlx.tools.info import describe_checkpoint

    text, float_text = describe_checkpoint(q4), describe_checkpoint(src)
    assert "quantization       quantized" in text and "4-bit (group size 64, affine)" in text
    params = [ln for ln in float_text.splitlines() if "parameters" in ln]
    assert params and params[0] in text  # the float parameter count, not the packed one


def test_sharded_output(src, tmp_path, tokens, monkeypatch):
    import xlstm_mlx.checkpoints.convert as conv

    monkeypatch.setattr(conv, "SHARD_BYTES", 40_000)
    out = convert(src, tmp_path / "q", quantize=True, bits=8, group_size=64, progress=False)["out"]
    shards = sorted(out.glob("model-*-of-*.safetensors"))
    assert len(shards) > 1 and (out / "model.safetensors.index.json").exists()
    q = load(out)[0]
    assert mx.allclose(q(tokens), dequantized_copy(q)(tokens), rtol=1e-4, atol=1e-4).item()


def test_float_conversion_roundtrip(src, tmp_path, tokens):
    out = convert(src, tmp_path / "f", progress=False)["out"]
    assert "quantization" not in json.loads((out / "config.json").read_text())
    assert mx.array_equal(load(out)[0](tokens), load(src)[0](tokens)).item()


# ---- perplexity -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    rng = np.random.default_rng(1)
    words = ["the", "king", "doth", "speak", "and", "fair", "night", "o", "love", "\n"]
    f = tmp_path_factory.mktemp("t") / "a.txt"
    f.write_text(" ".join(rng.choice(words, 300)))
    return f


def _manual_nll(model, inputs, targets) -> float:
    """Summed NLL from one whole-sequence forward pass and a float64 log-softmax in NumPy."""
    logits = np.array(model(mx.array(np.asarray(inputs, np.int32)[None]))[0], dtype=np.float64)
    top = logits.max(-1, keepdims=True)
    logp = logits - (top + np.log(np.exp(logits - top).sum(-1, keepdims=True)))
    return -float(logp[np.arange(len(targets)), np.asarray(targets)].sum())


def test_perplexity_is_chunk_invariant_and_exact(src, text_file):
    model, tok = load(src)
    stream, _ = read_tokens(text_file, tok)
    assert stream[-1] == tok.eos_token_id
    bos = tok.bos_token_id
    full = perplexity(model, stream, bos, context=0, chunk_size=4096)
    for chunk in (1, 7, 64):
        assert math.isclose(perplexity(model, stream, bos, chunk_size=chunk).nll, full.nll, rel_tol=1e-5)
    assert full.tokens == len(stream)
    assert math.isclose(full.nll, _manual_nll(model, [bos] + list(stream[:-1]), stream), rel_tol=1e-5)
    manual = sum(_manual_nll(model, [bos] + list(stream[s : s + 99]), stream[s : s + 100])
                 for s in range(0, len(stream), 100))
    for chunk in (32, 350):  # one window at a time in pieces; three windows side by side
        win = perplexity(model, stream, bos, context=100, chunk_size=chunk)
        assert win.tokens == len(stream) and math.isclose(win.nll, manual, rel_tol=1e-5)


def test_perplexity_cli_last_line(src, text_file, capsys):
    assert cli_main(["perplexity", "--model", str(src), "--data", str(text_file), "--context", "64"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("perplexity: ") and float(last.split()[-1]) > 1
    assert cli_main(["perplexity", "--model", str(src), "--data", str(text_file.parent / "none.txt")]) == 2
    assert "does not exist" in capsys.readouterr().err


# ---- the quality bars on the bundled demo model, on the committed held-out excerpt ----------

DEMO = Path(__file__).resolve().parents[2] / "xlstm_mlx" / "demo_model"
EXCERPT = Path(__file__).resolve().parents[1] / "data" / "heldout_excerpt.txt"


@pytest.mark.skipif(not (DEMO / "model.safetensors").exists(), reason="the bundled demo model is not present")
@pytest.mark.parametrize("bits,bar", [(8, 0.005), (4, 0.05)])
def test_demo_model_quality_bar(tmp_path, bits, bar):
    """Held-out perplexity of the quantized demo model within the bar of the float model's (8-bit 0.5 %,
    4-bit 5 %; measured on the whole held-out split: -0.01 % and +1.11 %, docs/quantization.md). Scored
    through dequantized_copy, which the tests above show computes the quantized model's function."""
    model, tok = load(DEMO, dtype="float32")
    tokens, _ = read_tokens(EXCERPT, tok)
    ref = perplexity(model, tokens, tok.bos_token_id).perplexity
    q = load(convert(DEMO, tmp_path / "q", quantize=True, bits=bits, group_size=64, progress=False)["out"],
             dtype="float32")[0]
    got = perplexity(dequantized_copy(q), tokens, tok.bos_token_id).perplexity
    assert abs(got / ref - 1) <= bar, (ref, got)
