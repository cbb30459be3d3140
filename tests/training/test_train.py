"""Training (xlstm_mlx/training/trainer.py): loss goes down, checkpoints load, resuming is exact, options are checked.

Everything runs on a tiny model (1 block, hidden 128) with a tiny BPE tokenizer, on CPU, in seconds.
"""

import json
import math
import random

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

from xlstm_mlx import load
from xlstm_mlx.training.trainer import fit_steps_to_budget, train
from xlstm_mlx.training import data as tdata
from xlstm_mlx.training.bpe import build, save
from xlstm_mlx.training.config import TrainConfig, load_config, model_args
from xlstm_mlx.training.schedule import lr_at, warmup_cosine

WORDS = ("the king is dead long live the queen my lord I pray you speak good night sweet prince and "
         "flights of angels sing thee to thy rest").split()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    rng = random.Random(0)
    for split, n in (("train", 3), ("heldout", 1)):
        (root / split).mkdir()
        for d in range(n):
            lines = [f"{rng.choice(['ROMEO', 'JULIET', 'NURSE'])}.\n" + " ".join(rng.choice(WORDS) for _ in range(8))
                     + ".\n" for _ in range(120)]
            (root / split / f"doc{d}.txt").write_text("\n".join(lines))
    tok = build(sorted((root / "train").glob("*.txt")), vocab_size=300)
    save(tok, root / "tok")
    return root


def write_config(path, **train):
    cfg = {"model": {"hidden_size": 128, "num_blocks": 1, "num_heads": 2, "chunk_size": 16},
           "train": {"seq_len": 32, "batch_size": 4, "steps": 24, "lr": 1e-2, "warmup_steps": 3,
                     "eval_every": 12, "save_every": 12, "log_every": 4, "eval_windows": 4, **train}}
    path.write_text(json.dumps(cfg))
    return path


def run(corpus, out, cfg, **kw):
    return train(corpus / "train", cfg, corpus / "tok", out, eval_data=corpus / "heldout", progress=False, **kw)


def test_training_lowers_the_loss_and_writes_a_loadable_checkpoint(corpus, tmp_path):
    summary = run(corpus, tmp_path / "out", write_config(tmp_path / "c.json"))
    state = json.loads((tmp_path / "out" / "trainer" / "state.json").read_text())
    losses = [h["loss"] for h in state["history"]]
    assert losses[0] > 4.0 and losses[-1] < 0.6 * losses[0], losses
    assert summary["best"]["loss"] < summary["unigram_heldout"]["loss"]  # learned more than word frequencies
    assert [e["step"] for e in state["evals"]] == [12, 24]

    out = tmp_path / "out"
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "loss.png"):
        assert (out / name).is_file(), name
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_type"] == "xlstm" and cfg["num_hidden_layers"] == 1 and cfg["vocab_size"] == 300
    assert cfg["autocast_kernel_dtype"] == "float32" and cfg["bos_token_id"] == 0 and cfg["eos_token_id"] == 2

    # the exported model is the trained one: our loader gives the held-out loss the trainer measured
    model, tok = load(out, dtype="float32")
    stream = tdata.load_stream(corpus / "heldout", __import__("tokenizers").Tokenizer.from_file(
        str(out / "tokenizer.json")), eos_id=2)
    x, y = tdata.eval_windows(stream, 32, bos_id=0, max_windows=4)
    import mlx.nn as nn

    loss = nn.losses.cross_entropy(model(mx.array(x)), mx.array(y), reduction="mean").item()
    assert abs(loss - state["evals"][-1]["loss"]) < 1e-4
    assert tok.encode("ROMEO.")[0] == 0  # the tokenizer came along and prepends BOS


def test_interrupted_run_resumes_to_the_same_weights(corpus, tmp_path, monkeypatch):
    cfg = write_config(tmp_path / "c.json", steps=10, eval_every=100, save_every=100)
    run(corpus, tmp_path / "straight", cfg)

    real = tdata.WindowSampler.batch
    calls = {"n": 0}

    def interrupt_at_6(self, step):
        if step == 6 and calls["n"] == 0:
            calls["n"] += 1
            raise KeyboardInterrupt
        return real(self, step)

    monkeypatch.setattr(tdata.WindowSampler, "batch", interrupt_at_6)
    with pytest.raises(KeyboardInterrupt):
        run(corpus, tmp_path / "resumed", cfg)
    saved = json.loads((tmp_path / "resumed" / "trainer" / "state.json").read_text())
    assert saved["step"] == 6
    run(corpus, tmp_path / "resumed", cfg)

    a = mx.load(str(tmp_path / "straight" / "trainer" / "params.safetensors"))
    b = mx.load(str(tmp_path / "resumed" / "trainer" / "params.safetensors"))
    assert set(a) == set(b)
    for k in a:
        np.testing.assert_allclose(np.array(b[k]), np.array(a[k]), rtol=0, atol=1e-6, err_msg=k)
    opt = mx.load(str(tmp_path / "resumed" / "trainer" / "optimizer.safetensors"))
    assert int(opt["states.0.step"].item()) == 10


def test_bfloat16_compute_keeps_float32_master_weights(corpus, tmp_path):
    summary = run(corpus, tmp_path / "bf16", write_config(tmp_path / "c.json", steps=6, dtype="bfloat16",
                                                          save_dtype="bfloat16", eval_every=6))
    assert math.isfinite(summary["final_train_loss"])
    master = mx.load(str(tmp_path / "bf16" / "trainer" / "params.safetensors"))
    assert {v.dtype for v in master.values()} == {mx.float32}
    exported = mx.load(str(tmp_path / "bf16" / "model.safetensors"))
    assert {v.dtype for v in exported.values()} == {mx.bfloat16}
    model, _ = load(tmp_path / "bf16", dtype="float32")
    assert all(v.dtype == mx.float32 for _, v in tree_flatten(model.parameters()))


def test_cli_train_subcommand(corpus, tmp_path, capsys):
    from xlstm_mlx.cli import main

    cfg = write_config(tmp_path / "c.json", steps=4, eval_every=100, save_every=100)
    rc = main(["train", "--data", str(corpus / "train"), "--config", str(cfg), "--tokenizer", str(corpus / "tok"),
               "--out", str(tmp_path / "o"), "--no-progress", "--lr", "5e-3", "--steps", "5"])
    assert rc == 0
    summary = json.loads((tmp_path / "o" / "train_summary.json").read_text())
    assert summary["steps"] == 5
    state = json.loads((tmp_path / "o" / "trainer" / "state.json").read_text())
    assert state["train"]["lr"] == 5e-3
    rc = main(["train", "--data", str(tmp_path / "missing"), "--config", str(cfg), "--tokenizer",
               str(corpus / "tok"), "--out", str(tmp_path / "o2")])
    assert rc == 2 and "does not exist" in capsys.readouterr().err


def test_schedule_warms_up_then_decays_to_min_lr():
    lrs = [lr_at(s, 1e-3, 1e-4, 10, 100) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lr_at(100, 1e-3, 1e-4, 10, 100) == pytest.approx(1e-4)
    sched = warmup_cosine(1e-3, 1e-4, 10, 100)
    for s in (0, 5, 9, 10, 50, 99):
        assert sched(mx.array(s)).item() == pytest.approx(lrs[s], rel=1e-5)


def test_time_budget_cuts_the_step_count():
    cfg = TrainConfig(steps=1000, warmup_steps=10, time_budget_s=100)
    assert fit_steps_to_budget(cfg, step=50, elapsed=5.0, sec_per_step=0.5) == 50 + int((95 - 5) / 0.5)
    assert fit_steps_to_budget(cfg, step=50, elapsed=5.0, sec_per_step=0.001) == 1000
    assert fit_steps_to_budget(cfg, step=50, elapsed=200.0, sec_per_step=0.5) == 51


def test_windows_start_with_bos_and_shift_by_one():
    stream = np.arange(3, 103, dtype=np.int32)
    s = tdata.WindowSampler(stream, seq_len=8, batch_size=5, bos_id=0, seed=1)
    x, y = s.batch(7)
    assert (x[:, 0] == 0).all() and (x[:, 1:] == y[:, :-1]).all() and (np.diff(y, axis=1) == 1).all()
    assert (s.batch(7)[1] == y).all() and not (s.batch(8)[1] == y).all()
    xe, ye = tdata.eval_windows(stream, 8, bos_id=0)
    assert xe.shape == (12, 8) and (ye.reshape(-1) == stream[:96]).all() and (xe[:, 0] == 0).all()
    with pytest.raises(ValueError, match="fewer than seq_len"):
        tdata.WindowSampler(stream[:5], seq_len=8, batch_size=1, bos_id=0)


def test_unigram_baseline_is_the_smoothed_frequency_cross_entropy():
    train = np.array([3, 3, 3, 4], np.int32)
    held = np.array([3, 4], np.int32)
    # add-one over a vocabulary of 5: p(3) = 4/9, p(4) = 2/9
    assert tdata.unigram_cross_entropy(train, held, 5) == pytest.approx(-(math.log(4 / 9) + math.log(2 / 9)) / 2)


def test_configs_that_transformers_would_build_differently_are_refused(tmp_path):
    with pytest.raises(ValueError, match="multiple of 64"):
        model_args({"hidden_size": 192, "num_blocks": 1, "num_heads": 2}, 300, "float32")
    with pytest.raises(ValueError, match="unknown keys"):
        model_args({"hidden_size": 128, "num_blocks": 1, "num_heads": 2, "dropout": 0.1}, 300, "float32")
    with pytest.raises(ValueError, match="smaller than the tokenizer"):
        model_args({"hidden_size": 128, "num_blocks": 1, "num_heads": 2, "vocab_size": 100}, 300, "float32")
    p = tmp_path / "c.json"
    p.write_text(json.dumps({"model": {}, "train": {"stepz": 3}}))
    with pytest.raises(ValueError, match="stepz"):
        load_config(p)
    with pytest.raises(ValueError, match="warmup_steps"):
        TrainConfig(steps=10, warmup_steps=10)
    with pytest.raises(ValueError, match="dtype"):
        TrainConfig(dtype="float16")
