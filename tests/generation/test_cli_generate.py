"""`xlstm-mlx generate` and `xlstm-mlx info` (in process, stdin replaced)."""

import io
import sys

import pytest

from xlstm_mlx import generate
from xlstm_mlx import load
from xlstm_mlx.cli import main
from xlstm_mlx.checkpoints.random import make_random_checkpoint
from xlstm_mlx.checkpoints.safetensors import read_header


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_random_checkpoint(tmp_path_factory.mktemp("cli"), "tiny", seed=21)


@pytest.fixture(scope="module")
def tiny(ckpt):
    return load(ckpt)


def run(monkeypatch, capsys, args, stdin=""):
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def test_generate_flag_and_stdin_prompts(ckpt, tiny, monkeypatch, capsys):
    model, tok = tiny
    rc, out, _ = run(monkeypatch, capsys, ["generate", "--model", ckpt, "--prompt", "Hello", "--max-tokens", 9])
    assert rc == 0 and out == generate(model, tok, "Hello", 9) + "\n"
    rc, out2, _ = run(monkeypatch, capsys, ["generate", "--model", ckpt, "--max-tokens", 9], stdin="Hello")
    assert rc == 0 and out2 == out


def test_generate_sampling_flags_are_seeded(ckpt, tiny, monkeypatch, capsys):
    model, tok = tiny
    flags = ["--temp", 0.9, "--top-k", 50, "--top-p", 0.95, "--min-p", 0.01, "--repetition-penalty", 1.2,
             "--repetition-context-size", 8, "--seed", 4]
    args = ["generate", "--model", ckpt, "--prompt", "Seeded", "--max-tokens", 12] + flags
    rc, a, _ = run(monkeypatch, capsys, args)
    _, b, _ = run(monkeypatch, capsys, args)
    assert rc == 0 and a == b
    api = generate(model, tok, "Seeded", 12, temp=0.9, top_k=50, top_p=0.95, min_p=0.01, repetition_penalty=1.2,
                   repetition_context_size=8, seed=4)
    assert a == api + "\n"
    _, c, _ = run(monkeypatch, capsys, args[:-1] + [5])
    assert c != a


def test_generate_stop_and_verbose(ckpt, tiny, monkeypatch, capsys):
    model, tok = tiny
    full = generate(model, tok, "Stop", 20)
    stop = full[6:8]
    rc, out, err = run(monkeypatch, capsys, ["generate", "--model", ckpt, "--prompt", "Stop", "--max-tokens", 20,
                                             "--stop", stop, "--verbose"])
    assert rc == 0 and out == full[: full.index(stop)] + "\n"
    assert "tokens/s" in err and "peak memory" in err and "backend=" in err


def test_save_and_load_state(ckpt, tiny, monkeypatch, capsys, tmp_path):
    model, tok = tiny
    state = tmp_path / "p.safetensors"
    base = ["generate", "--model", ckpt, "--max-tokens", 10]
    rc, first, err = run(monkeypatch, capsys, base + ["--prompt", "A prompt to keep", "--save-state", state])
    assert rc == 0 and state.exists() and "saved the state" in err
    rc, resumed, _ = run(monkeypatch, capsys, base + ["--load-state", state])
    assert rc == 0 and resumed == first
    rc, cont, _ = run(monkeypatch, capsys, base + ["--load-state", state, "--prompt", " and more"])
    ids = tok.encode("A prompt to keep") + tok.encode(" and more", add_special_tokens=False)
    assert rc == 0 and cont == generate(model, tok, ids, 10) + "\n"


def test_load_state_of_another_model_is_refused(ckpt, monkeypatch, capsys, tmp_path):
    other = make_random_checkpoint(tmp_path / "other", "tiny", seed=22)
    state = tmp_path / "o.safetensors"
    assert run(monkeypatch, capsys, ["generate", "--model", other, "--prompt", "x", "--max-tokens", 1,
                                     "--save-state", state])[0] == 0
    rc, _, err = run(monkeypatch, capsys, ["generate", "--model", ckpt, "--load-state", state, "--max-tokens", 2])
    assert rc == 2 and "different model" in err


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--temp", -1], "temperature"),
        (["--top-p", 0], "top_p"),
        (["--top-k", -2], "top_k"),
        (["--min-p", 1.5], "min_p"),
        (["--repetition-penalty", 0], "repetition_penalty"),
        (["--repetition-context-size", 0], "repetition_context_size"),
        (["--max-tokens", -1], "max-tokens"),
        (["--prefill-step-size", 0], "prefill_step_size"),
        (["--stop", ""], "stop strings"),
    ],
)
def test_bad_flags_are_refused(ckpt, monkeypatch, capsys, flags, message):
    rc, out, err = run(monkeypatch, capsys, ["generate", "--model", ckpt, "--prompt", "x"] + flags)
    assert rc == 2 and message in err and out == ""


def test_info_describes_the_checkpoint(ckpt, tiny, monkeypatch, capsys):
    model, _ = tiny
    rc, out, _ = run(monkeypatch, capsys, ["info", "--model", ckpt])
    assert rc == 0
    a = model.args
    params = sum(
        __import__("math").prod(e["shape"]) for e in read_header(ckpt / "model.safetensors").values()
    )
    state = sum(x.nbytes for x in model.make_cache(1).arrays())
    assert f"{params:,}" in out
    assert f"blocks 0-{a.num_blocks - 1} ({a.num_blocks}x) mLSTM" in out
    assert f"{a.num_heads} heads, per head q/k {a.qk_head_dim}, v {a.v_head_dim}" in out
    assert f"{state / 1000:.2f} KB float32" in out
    assert "stored" in out and "float32" in out and "soft-cap 30" in out


def test_info_on_an_official_stack(monkeypatch, capsys, tmp_path):
    official_stacks = pytest.importorskip("official_stacks")
    from xlstm_mlx.checkpoints.convert_official import convert_official

    cfg = official_stacks.official_config(num_blocks=4, slstm_at=[1, 2])
    path = convert_official(tmp_path / "stack", model=official_stacks.official_model(cfg, seed=1))
    rc, out, _ = run(monkeypatch, capsys, ["info", "--model", path])
    assert rc == 0
    assert "xLSTM[2:2]" in out and "blocks 1-2 (2x) sLSTM" in out and "block 0 mLSTM" in out
    assert "block 3 mLSTM" in out and "per slstm block" in out and "tokenizer" in out


def test_generate_with_chat_template(tmp_path, monkeypatch, capsys):
    import json
    import shutil

    d = make_random_checkpoint(tmp_path / "tmpl", "tiny", seed=23)
    cfg = json.loads((d / "tokenizer_config.json").read_text())
    cfg["chat_template"] = "{% for m in messages %}[{{ m.role }}] {{ m.content }}<eos>{% endfor %}[assistant]"
    (d / "tokenizer_config.json").write_text(json.dumps(cfg))
    model, tok = load(d)
    rc, out, _ = run(monkeypatch, capsys, ["generate", "--model", d, "--prompt", "Hi", "--max-tokens", 8,
                                           "--chat-template"])
    ids = tok.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=True)
    assert ids[:4] == tok.encode("[use", add_special_tokens=False) and tok.eos_token_ids[0] in ids
    assert rc == 0 and out == generate(model, tok, ids, 8) + "\n"
    no_template = tmp_path / "plain"
    shutil.copytree(d, no_template)
    (no_template / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<bos>", "eos_token": "<eos>"}))
    rc, _, err = run(monkeypatch, capsys, ["generate", "--model", no_template, "--prompt", "Hi", "--chat-template"])
    assert rc == 2 and "no chat template" in err


def test_generate_profile_and_nan_locator_flags(ckpt, tiny, monkeypatch, capsys, tmp_path):
    model, tok = tiny
    rc, out, err = run(monkeypatch, capsys, ["generate", "--model", ckpt, "--prompt", "Hello", "--max-tokens", 5,
                                            "--profile", "parity", "--check-numerics", "--verbose"])
    assert rc == 0 and out.startswith(generate(model, tok, "Hello", 5))
    assert "profile=parity" in err and "state=float32" in err  # verbose says which path runs
    rc, _, err = run(monkeypatch, capsys, ["generate", "--model", ckpt, "--prompt", "x", "--profile", "turbo"])
    assert rc != 0 and "unknown numerics profile 'turbo'" in err
