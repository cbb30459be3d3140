"""The bundled demo model (xlstm_mlx/demo_model): small enough, trained, the CLI's default, and read by
transformers' xLSTMForCausalLM with the same logits as ours."""

import json

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from xlstm_mlx import load
from xlstm_mlx.checkpoints.demo import DEMO_MODEL_DIR, demo_model_dir

# Held-out text (Julius Caesar, Act III, Scene 2; the work is in the held-out split, see data/splits.json)
HELD_OUT = """ANTONY.
Friends, Romans, countrymen, lend me your ears;
I come to bury Caesar, not to praise him.
The evil that men do lives after them;
The good is oft interred with their bones:
So let it be with Caesar. The noble Brutus
Hath told you Caesar was ambitious:
If it were so, it was a grievous fault;
And grievously hath Caesar answer'd it.
"""


@pytest.fixture(scope="module")
def demo():
    assert demo_model_dir() == DEMO_MODEL_DIR, "the bundled demo model is missing from xlstm_mlx/demo_model"
    return load(DEMO_MODEL_DIR, dtype="float32")


def test_demo_model_fits_in_25_megabytes():
    total = sum(f.stat().st_size for f in DEMO_MODEL_DIR.iterdir() if f.is_file())
    assert total <= 25_000_000, f"{total:,} bytes"


def test_demo_model_predicts_held_out_text_far_better_than_word_frequencies(demo):
    model, tok = demo
    ids = tok.encode(HELD_OUT)
    assert ids[0] == model.args.bos_token_id
    x, y = mx.array([ids[:-1]]), mx.array([ids[1:]])
    loss = nn.losses.cross_entropy(model(x), y, reduction="mean").item()
    # the recorded unigram baseline on the held-out works is 6.23 nats/token and the model 3.81
    # (docs/demo_model.md); on this passage the model scores 3.74 and its initial weights 8.45
    assert loss < 4.5, loss


def test_transformers_reads_the_demo_model_and_computes_the_same_logits(demo, tmp_path):
    from oracles.canonical import hf_native_logits

    model, tok = demo
    rng = np.random.default_rng(0)
    text_ids = tok.encode(HELD_OUT)
    # real text then random tokens: 64-token chunks plus a remainder, realistic and unusual inputs alike
    ids = np.array([text_ids + rng.integers(3, model.args.vocab_size, 150 - len(text_ids)).tolist()])
    ref = hf_native_logits(DEMO_MODEL_DIR, ids, tmp_path)
    ours = np.array(model(mx.array(ids.astype(np.int32))))
    assert ref.shape == ours.shape == (1, 150, model.args.vocab_size)
    err = np.abs(ours - ref).max()
    assert err <= 1e-4, f"max abs logit difference {err:.2e}"
    assert (ours.argmax(-1) == ref.argmax(-1)).mean() == 1.0


def test_generate_without_model_uses_the_demo_model(monkeypatch, capsys):
    from xlstm_mlx.cli import default_model_dir, main

    path, label = default_model_dir()
    assert path == DEMO_MODEL_DIR and "demo model" in label
    rc = main(["generate", "--prompt", "ROMEO.", "--max-tokens", "12"])
    out, err = capsys.readouterr()
    assert rc == 0 and "bundled demo model" in err and len(out.strip()) > 0


def test_demo_config_is_the_hugging_face_layout():
    cfg = json.loads((DEMO_MODEL_DIR / "config.json").read_text())
    assert cfg["model_type"] == "xlstm" and cfg["architectures"] == ["xLSTMForCausalLM"]
    assert cfg["torch_dtype"] == "float32" and cfg["inference_state_dtype"] == "float32"
    tcfg = json.loads((DEMO_MODEL_DIR / "tokenizer_config.json").read_text())
    assert (tcfg["bos_token"], tcfg["pad_token"], tcfg["eos_token"]) == ("<|bos|>", "<|pad|>", "<|eos|>")
