"""Bad input, interrupts, pipes and NaN: every case ends in a clear message (exit 2), a quiet exit, or the work
kept, and never in a traceback (cli.py's one error path).

Cases that depend on the process itself (Ctrl-C, a closed pipe, a full or closed stdout, bytes in argv) run the
CLI in a subprocess (`python -m xlstm_mlx.cli`); the rest call `main()` in process, where a traceback would be an
exception escaping main(). Checkpoints are made once per module.
"""

from __future__ import annotations

import io
import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import mlx.core as mx
import pytest

from xlstm_mlx import load
from xlstm_mlx.checkpoints.random import make_random_checkpoint
from xlstm_mlx.cli import main
from xlstm_mlx.errors import NumericsError, UsageError

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
CLI = [sys.executable, "-m", "xlstm_mlx.cli"]


# ------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_random_checkpoint(tmp_path_factory.mktemp("bad") / "tiny", "tiny", seed=3)


@pytest.fixture(scope="module")
def nan_ckpt(tmp_path_factory):
    """A checkpoint whose weights hold one NaN: every output is NaN."""
    d = make_random_checkpoint(tmp_path_factory.mktemp("nan") / "nan", "tiny", seed=4)
    w = dict(mx.load(str(d / "model.safetensors")))
    k = "backbone.blocks.0.mlstm_layer.out_proj.weight"
    w[k] = mx.where(mx.arange(w[k].size).reshape(w[k].shape) == 3, mx.array(float("nan")), w[k])
    mx.save_safetensors(str(d / "model.safetensors"), w, metadata={"format": "pt"})
    return d


@pytest.fixture(scope="module")
def text(tmp_path_factory):
    f = tmp_path_factory.mktemp("text") / "t.txt"
    f.write_text("To be, or not to be, that is the question.\n" * 20)
    return f


def copy_ckpt(src: Path, dst: Path, config=None) -> Path:
    dst.mkdir(parents=True)
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    if config is not None:
        (dst / "config.json").write_text(config if isinstance(config, str) else json.dumps(config))
    return dst


def run_main(capsys, monkeypatch, *args, stdin: str = ""):
    """main() in process: (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return rc, out, err


def refused(capsys, monkeypatch, *args, message: str, stdin: str = ""):
    rc, out, err = run_main(capsys, monkeypatch, *args, stdin=stdin)
    assert rc == 2, (rc, out, err)
    assert message in err, err
    assert err.count("error: ") == 1
    return err


def run_cli(*args, stdin: bytes | None = None, timeout: float = 180, **kw):
    p = subprocess.run(CLI + [str(a) for a in args], input=stdin, capture_output=True, env=ENV, timeout=timeout,
                       cwd=ROOT, **kw)
    err = p.stderr.decode("utf-8", "replace")
    assert "Traceback" not in err, err
    return p.returncode, p.stdout.decode("utf-8", "replace"), err


# ------------------------------------------------------------------------------------------ options
@pytest.mark.parametrize("flags, message", [
    (["--seed", str(2**70)], "seed must be an integer in [0, 2**64)"),
    (["--seed", "-1"], "seed must be an integer in [0, 2**64)"),
    (["--max-tokens", "-1"], "--max-tokens must be >= 0"),
    (["--temp", "-0.5"], "temperature must be >= 0"),
    (["--top-p", "0"], "top_p must be in (0, 1]"),
    (["--repetition-penalty", "0"], "repetition_penalty must be > 0"),
    (["--temp", "nan"], "temperature must not be NaN"),
    (["--prefill-step-size", "0"], "prefill_step_size must be an integer >= 1"),
])
def test_bad_generation_options(ckpt, capsys, monkeypatch, flags, message):
    refused(capsys, monkeypatch, "generate", "--model", ckpt, "--prompt", "hi", *flags, message=message)


def test_chat_system_and_system_prompt_together(ckpt, capsys, monkeypatch):
    refused(capsys, monkeypatch, "chat", "-m", ckpt, "--system", "a", "--system-prompt", "b",
            message="not both")


def test_version_and_short_flags(ckpt, capsys, monkeypatch):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.startswith("xlstm-mlx ")
    rc, out, _ = run_main(capsys, monkeypatch, "generate", "-m", ckpt, "-p", "hi", "--max-tokens", 3)
    rc2, out2, _ = run_main(capsys, monkeypatch, "generate", "-m", ckpt, "--prompt", "-", "--max-tokens", 3,
                            stdin="hi")
    assert rc == rc2 == 0 and out == out2


# ------------------------------------------------------------------------------------------ paths
def test_missing_model_directory(capsys, monkeypatch, tmp_path):
    refused(capsys, monkeypatch, "generate", "--model", tmp_path / "nope", "-p", "x", message="does not exist")
    f = tmp_path / "file"
    f.write_text("x")
    refused(capsys, monkeypatch, "info", "--model", f, message="is a file")


def test_model_not_on_the_hub_says_how_to_download_it():
    rc, _, err = run_cli("generate", "--model", "nobody-xyz/no-such-model", "-p", "x")
    assert rc == 2 and "hf download nobody-xyz/no-such-model --local-dir DIR" in err
    assert len(err.strip().splitlines()) == 1


def test_prompt_file(ckpt, capsys, monkeypatch, tmp_path):
    f = tmp_path / "p.txt"
    f.write_bytes(b"hi")
    rc, out, _ = run_main(capsys, monkeypatch, "generate", "-m", ckpt, "--prompt-file", f, "--max-tokens", 3)
    rc2, out2, _ = run_main(capsys, monkeypatch, "generate", "-m", ckpt, "-p", "hi", "--max-tokens", 3)
    assert rc == rc2 == 0 and out == out2
    refused(capsys, monkeypatch, "generate", "-m", ckpt, "--prompt-file", tmp_path / "missing.txt",
            message="does not exist")
    refused(capsys, monkeypatch, "generate", "-m", ckpt, "--prompt-file", tmp_path, message="is a directory")
    refused(capsys, monkeypatch, "generate", "-m", ckpt, "--prompt-file", f, "-p", "x", message="not both")


def test_state_paths_are_checked_before_the_prompt_runs(ckpt, capsys, monkeypatch, tmp_path):
    refused(capsys, monkeypatch, "generate", "-m", ckpt, "-p", "hi", "--load-state", tmp_path / "none.safetensors",
            message="does not exist")
    refused(capsys, monkeypatch, "generate", "-m", ckpt, "-p", "hi", "--load-state", tmp_path,
            message="is a directory")
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    refused(capsys, monkeypatch, "generate", "-m", ckpt, "-p", "hi", "--save-state", blocker / "s.safetensors",
            message="is a file, not a directory")
    refused(capsys, monkeypatch, "generate", "-m", ckpt, "-p", "hi", "--save-state", tmp_path,
            message="is a directory")
    # checked first: the model directory does not even exist, yet the state path is what gets reported
    refused(capsys, monkeypatch, "generate", "-m", tmp_path / "no-model", "-p", "hi", "--save-state", tmp_path,
            message="--save-state")
    refused(capsys, monkeypatch, "chat", "-m", ckpt, "--load-state", tmp_path, message="is a directory")


def test_snapshot_that_is_not_a_snapshot(ckpt, capsys, monkeypatch, tmp_path):
    f = tmp_path / "junk.safetensors"
    f.write_bytes(b"not a safetensors file at all")
    refused(capsys, monkeypatch, "generate", "-m", ckpt, "-p", "hi", "--load-state", f,
            message="not a readable safetensors file")


def test_chat_save_to_an_unwritable_path_keeps_the_session(ckpt, tmp_path):
    from xlstm_mlx.generation.chat import ChatSession, run_chat

    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    good = tmp_path / "chat.safetensors"
    script = f"hello\n/save {blocker}/x.safetensors\n/save {good}\n/load {tmp_path}\nagain\n"
    model, tok = load(ckpt)
    session = ChatSession(model, tok, max_tokens=4)
    out, err = io.StringIO(), io.StringIO()
    assert run_chat(session, io.StringIO(script), out, err, interactive=False) == 0
    e = err.getvalue()
    assert "/save failed" in e and "is a file" in e and "/load failed" in e and "is a directory" in e
    assert "saved the state" in e and good.is_file()
    assert [m["role"] for m in session.messages] == ["user", "assistant"] * 2  # both turns, one conversation


def test_atomic_snapshot_write_leaves_no_partial_file(ckpt, tmp_path, monkeypatch):
    from xlstm_mlx.generation import snapshot

    model, _ = load(ckpt)
    cache = model.make_cache(1)
    target = tmp_path / "s.safetensors"
    target.write_bytes(b"old")

    def boom(path, *a, **k):
        Path(path).write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(mx, "save_safetensors", boom)
    with pytest.raises(KeyboardInterrupt):
        snapshot.save_snapshot(target, model, cache, [], [])
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["s.safetensors"]


# ------------------------------------------------------------------------------------------ checkpoint files
@pytest.mark.parametrize("config, message", [
    ({"eps": "small"}, "eps must be a number"),
    ({"num_heads": True}, "num_heads must be an integer"),
    ({"hidden_size": 32.5}, "hidden_size must be an integer"),
    ({"gate_soft_cap": [15]}, "gate_soft_cap must be a number or null"),
    ({"norm_eps": -1e-6}, "norm_eps must be > 0"),
    ({"chunk_size": 0}, "chunk_size must be > 0"),
    ({"weight_mode": "triple"}, "weight_mode must be 'single' or 'fused'"),
    ({"eos_token_id": ["2"]}, "eos_token_id must be an integer or a list of integers"),
    ([1, 2, 3], "expected a JSON object"),
    ("{not json", "not valid JSON"),
])
def test_config_json_of_the_wrong_type(ckpt, capsys, monkeypatch, tmp_path, config, message):
    d = copy_ckpt(ckpt, tmp_path / "m", config)
    refused(capsys, monkeypatch, "generate", "-m", d, "-p", "hi", message=message)


def test_unknown_config_keys_and_a_missing_config_are_warned_about(ckpt, capsys, monkeypatch, tmp_path):
    cfg = json.loads((ckpt / "config.json").read_text())
    d = copy_ckpt(ckpt, tmp_path / "m", {**cfg, "gate_sofft_cap": 3})
    with pytest.warns(UserWarning, match=r"unknown keys \['gate_sofft_cap'\]"):
        rc, _, _ = run_main(capsys, monkeypatch, "generate", "-m", d, "-p", "hi", "--max-tokens", 2)
    assert rc == 0
    rc, _, err = run_cli("info", "-m", d)  # outside pytest's warning capture: one plain line on stderr
    assert rc == 0 and err.count("warning: ") == 1 and "unknown keys ['gate_sofft_cap']" in err
    (d / "config.json").unlink()
    with pytest.warns(UserWarning, match="has no config.json.*eps"):
        rc, _, _ = run_main(capsys, monkeypatch, "info", "-m", d)
    assert rc == 0


def _header_file(path: Path, header) -> Path:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * 64)
    return path


@pytest.mark.parametrize("header, message", [
    ({"backbone.embeddings.weight": {"dtype": "F32"}}, "has no shape, data_offsets"),
    ({"backbone.embeddings.weight": {"dtype": "F32", "shape": ["4"], "data_offsets": [0, 16]}},
     "not a list of non-negative integers"),
    ({"backbone.embeddings.weight": {"dtype": "F33", "shape": [4], "data_offsets": [0, 16]}}, "has dtype 'F33'"),
    ({"backbone.embeddings.weight": {"dtype": "F32", "shape": [4], "data_offsets": [16]}}, "data_offsets [16]"),
    ({"backbone.embeddings.weight": [1, 2]}, "is not an object"),
    ([1, 2], "header is not a JSON object"),
])
def test_safetensors_header_with_incomplete_entries(capsys, monkeypatch, tmp_path, header, message):
    d = tmp_path / "m"
    d.mkdir()
    _header_file(d / "model.safetensors", header)
    refused(capsys, monkeypatch, "info", "-m", d, message=message)


def test_official_stack_config_of_the_wrong_type():
    from xlstm_mlx.errors import CheckpointError
    from xlstm_mlx.models.xlstm_stack.args import check_stack_config

    for cfg, message in (({"embedding_dim": "64"}, "embedding_dim must be an integer"),
                         ({"mlstm_block": {"mlstm": {"num_heads": 2.5}}}, "mlstm_block.mlstm.num_heads"),
                         ({"slstm_block": {"slstm": 3}}, "slstm_block.slstm must be an object"),
                         ({"slstm_at": "some"}, "slstm_at must be a list")):
        with pytest.raises(CheckpointError) as e:
            check_stack_config(cfg)
        assert message in str(e.value)
    with pytest.warns(UserWarning, match="unknown keys"):
        check_stack_config({"num_blocks": 2, "embeding_dim": 3})


# ------------------------------------------------------------------------------------------ token ids (API)
def test_token_ids_outside_the_vocabulary_are_refused(ckpt):
    from xlstm_mlx import generate
    from xlstm_mlx.generation.generate import generate_step

    model, tok = load(ckpt)
    V = model.args.vocab_size
    for ids in ([[V]], [[-1]], [[0, 1, V + 5]]):
        with pytest.raises(UsageError, match="outside this model's vocabulary"):
            model(mx.array(ids, dtype=mx.int32))
        with pytest.raises(UsageError, match="outside this model's vocabulary"):
            model(mx.array(ids, dtype=mx.int32), cache=model.make_cache(1))
        with pytest.raises(UsageError, match="outside this model's vocabulary"):
            next(generate_step(model, mx.array(ids, dtype=mx.int32)))
    with pytest.raises(UsageError, match="integer token ids"):
        model(mx.array([[1.0, 2.0]]))
    with pytest.raises(UsageError, match="token ids must be in"):
        generate(model, tok, [3, 2**40], max_tokens=2)
    with pytest.raises(UsageError, match="outside this model's vocabulary"):
        generate(model, tok, [3, V], max_tokens=2)
    assert len(generate(model, tok, [3, V - 1], max_tokens=2)) >= 0  # the largest id is fine


# ------------------------------------------------------------------------------------------ NaN
def test_nan_never_exits_zero(nan_ckpt, text, capsys, monkeypatch, tmp_path):
    fix = "--check-numerics"
    err = refused(capsys, monkeypatch, "generate", "-m", nan_ckpt, "-p", "hello", message="NaN or Inf logits")
    assert fix in err and "--dtype float32" in err
    rc, out, err = run_main(capsys, monkeypatch, "perplexity", "-m", nan_ckpt, "--data", text)
    assert rc == 2 and "NaN or Inf" in err and "perplexity:" not in out
    refused(capsys, monkeypatch, "generate", "-m", nan_ckpt, "-p", "hello", "--check-numerics",
            message="first non-finite value (NaN) at block 0")
    refused(capsys, monkeypatch, "perplexity", "-m", nan_ckpt, "--data", text, "--check-numerics",
            message="first non-finite value (NaN) at block 0")
    refused(capsys, monkeypatch, "generate", "-m", nan_ckpt, "-p", "hello there", "--max-tokens", 0,
            message="recurrent state holds NaN")
    refused(capsys, monkeypatch, "chat", "-m", nan_ckpt, stdin="hi\n", message="NaN or Inf logits")


def test_nan_in_the_api_raises_numerics_error(nan_ckpt):
    from xlstm_mlx import generate

    model, tok = load(nan_ckpt)
    with pytest.raises(NumericsError, match="generated token 1"):
        generate(model, tok, "hello", max_tokens=4)


# ------------------------------------------------------------------------------------------ tools
def test_perplexity_inputs(ckpt, capsys, monkeypatch, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    refused(capsys, monkeypatch, "perplexity", "-m", ckpt, "--data", empty, message="is empty")
    refused(capsys, monkeypatch, "perplexity", "-m", ckpt, "--data", tmp_path / "none.txt", message="does not exist")
    (tmp_path / "d").mkdir()
    refused(capsys, monkeypatch, "perplexity", "-m", ckpt, "--data", tmp_path / "d", message="holds no .txt files")
    refused(capsys, monkeypatch, "perplexity", "-m", ckpt, "--data", empty, "--chunk-size", 0,
            message="--chunk-size >= 1")


@pytest.mark.parametrize("flags, message", [
    (["--decode-steps", "0"], "--decode-steps must be >= 1"),
    (["--prefill-grid", "1x"], "is not BATCHxLENGTH"),
    (["--prefill-grid", "ax8"], "is not BATCHxLENGTH"),
    (["--prefill-grid", "0x8"], "must be >= 1"),
    (["--prefill-len", "0"], "--prefill-len values must be >= 1"),
    (["--decode-batch", "0"], "--decode-batch values must be >= 1"),
    (["--reps", "0"], "--reps must be >= 1"),
    (["--budget", "-1"], "--budget must be >= 0"),
    (["--ttft-len", "-5"], "--ttft-len must be >= 0"),
])
def test_bench_options_are_checked_before_the_run(capsys, monkeypatch, flags, message):
    refused(capsys, monkeypatch, "bench", "--shape", "tiny", "--cpu", *flags, message=message)


def test_bench_output_paths_are_checked_before_the_run(capsys, monkeypatch, tmp_path):
    blocker = tmp_path / "f"
    blocker.write_text("x")
    refused(capsys, monkeypatch, "bench", "--shape", "tiny", "--json", blocker / "out.json", message="--json")
    refused(capsys, monkeypatch, "bench", "--shape", "tiny", "--json", tmp_path, message="is a directory")
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if matplotlib were not installed
    refused(capsys, monkeypatch, "bench", "--shape", "tiny", "--plot", tmp_path / "p.png",
            message="--plot needs matplotlib")


def test_convert_official_inputs(capsys, monkeypatch, tmp_path):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"embedding_dim": 64}))
    pt = tmp_path / "m.pt"
    pt.write_bytes(b"x")
    out = tmp_path / "out"
    refused(capsys, monkeypatch, "convert-official", "--state-dict", tmp_path / "none.pt", "--config", cfg,
            "--out", out, message="--state-dict")
    refused(capsys, monkeypatch, "convert-official", "--state-dict", pt, "--config", tmp_path / "none.json",
            "--out", out, message="--config")
    lst = tmp_path / "list.json"
    lst.write_text("[1]")
    refused(capsys, monkeypatch, "convert-official", "--state-dict", pt, "--config", lst, "--out", out,
            message="expected a mapping")
    refused(capsys, monkeypatch, "convert-official", "--state-dict", pt, "--config", cfg, "--out", out,
            message="torch could not read it")
    monkeypatch.setitem(sys.modules, "torch", None)  # as if torch were not installed
    refused(capsys, monkeypatch, "convert-official", "--state-dict", pt, "--config", cfg, "--out", out,
            message="needs PyTorch (pip install torch)")
    (out / "x").mkdir(parents=True)
    refused(capsys, monkeypatch, "convert-official", "--state-dict", pt, "--config", cfg, "--out", out,
            message="already exists; pass --force")
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())


def test_convert_refuses_to_overwrite_and_reports_the_source_size(ckpt, capsys, monkeypatch, tmp_path):
    out = tmp_path / "c"
    rc, stdout, _ = run_main(capsys, monkeypatch, "convert", "-m", ckpt, "--out", out, "--dtype", "bfloat16")
    stored = sum(v.nbytes for v in mx.load(str(ckpt / "model.safetensors")).values())
    assert rc == 0 and f"{stored / 1e6:,.1f} MB stored (float32)" in stdout
    refused(capsys, monkeypatch, "convert", "-m", ckpt, "--out", out, message="pass --force")


# ------------------------------------------------------------------------------------------ train
@pytest.fixture
def train_args(ckpt, text, tmp_path):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"model": {"hidden_size": 128, "num_blocks": 1, "num_heads": 2},
                               "train": {"seq_len": 16, "batch_size": 2, "steps": 2, "warmup_steps": 0,
                                         "eval_every": 10, "save_every": 10, "log_every": 1}}))
    return ["train", "--data", text, "--config", cfg, "--tokenizer", ckpt, "--no-progress", "--no-compile"]


@pytest.mark.parametrize("flags, message", [
    (["--lr", "-1"], "train.lr must be > 0"),
    (["--lr", "0"], "train.lr must be > 0"),
    (["--min-lr", "1"], "train.min_lr must be in [0, lr]"),
    (["--grad-clip", "0"], "train.grad_clip must be > 0"),
    (["--weight-decay", "-0.1"], "train.weight_decay must be >= 0"),
    (["--time-budget", "0"], "must be > 0 seconds"),
    (["--seed", "-3"], "train.seed must be in"),
])
def test_train_config_values(train_args, capsys, monkeypatch, tmp_path, flags, message):
    refused(capsys, monkeypatch, *train_args, "--out", tmp_path / "run", *flags, message=message)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("section, value, message", [
    ("train", {"steps": "10"}, "train.steps must be an integer"),
    ("train", {"lr": True}, "train.lr must be a number"),
    ("train", {"stepz": 10}, "unknown keys in the config's \"train\" section: ['stepz']"),
    ("model", {"hidden_size": "128", "num_blocks": 1, "num_heads": 2}, "model.hidden_size in the training config"),
    ("model", {"hidden_size": 128, "num_blocks": 1, "num_heads": 2, "hiden": 1}, "unknown keys"),
])
def test_train_config_types(train_args, capsys, monkeypatch, tmp_path, section, value, message):
    cfg = Path(train_args[4])
    raw = json.loads(cfg.read_text())
    raw[section] = {**raw[section], **value} if section == "train" else value
    cfg.write_text(json.dumps(raw))
    refused(capsys, monkeypatch, *train_args, "--out", tmp_path / "run", message=message)


def test_train_never_overwrites_a_model(train_args, ckpt, capsys, monkeypatch, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    refused(capsys, monkeypatch, *train_args, "--out", blocker, message="is a file")
    model_dir = copy_ckpt(ckpt, tmp_path / "model")
    before = (model_dir / "model.safetensors").read_bytes()
    refused(capsys, monkeypatch, *train_args, "--out", model_dir, message="already holds a model")
    assert (model_dir / "model.safetensors").read_bytes() == before
    run = tmp_path / "run"
    rc, _, _ = run_main(capsys, monkeypatch, *train_args, "--out", run)
    assert rc == 0
    rc, out, _ = run_main(capsys, monkeypatch, *train_args, "--out", run)  # its own run: resumed (done already)
    assert rc == 0 and "already finished" in out
    refused(capsys, monkeypatch, *train_args, "--out", run, "--no-resume", message="pass --force as well")
    rc, _, _ = run_main(capsys, monkeypatch, *train_args, "--out", model_dir, "--force")
    assert rc == 0 and (model_dir / "trainer").is_dir()


# ------------------------------------------------------------------------------------------ encoding
def test_invalid_utf8_in_argv_stdin_and_chat_is_replaced_with_one_warning(ckpt, tmp_path):
    rc, out, err = run_cli("generate", "-m", ckpt, "-p", os.fsdecode(b"ab\xff\xfecd"), "--max-tokens", 3)
    assert rc == 0 and err.count("not valid UTF-8") == 1
    rc, out, err = run_cli("generate", "-m", ckpt, "--max-tokens", 3, stdin=b"ab\xffcd")
    assert rc == 0 and err.count("not valid UTF-8") == 1
    rc, out, err = run_cli("chat", "-m", ckpt, "--max-tokens", 3, stdin=b"hi \xff\n\xfe again\n")
    assert rc == 0 and err.count("not valid UTF-8") == 1


# ------------------------------------------------------------------------------------------ stdout
def test_closed_pipe_ends_quietly():
    p = subprocess.Popen(CLI + ["generate", "-p", "ROMEO.", "--max-tokens", "400"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         stdin=subprocess.DEVNULL, env=ENV, cwd=ROOT)
    p.stdout.read(10)  # like `| head -c 10`
    p.stdout.close()
    err = p.stderr.read().decode()
    assert p.wait(timeout=180) in (0, 141) and "Traceback" not in err and "Broken pipe" not in err


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_full_disk_and_closed_stdout_get_a_message(ckpt):
    with open("/dev/full", "w") as full:
        p = subprocess.run(CLI + ["generate", "-m", str(ckpt), "-p", "hi", "--max-tokens", "3"], stdout=full,
                           stderr=subprocess.PIPE, env=ENV, cwd=ROOT, timeout=180)
    err = p.stderr.decode()
    assert p.returncode == 2 and "no space left" in err and "Traceback" not in err
    p = subprocess.run(" ".join(CLI + ["info", "-m", str(ckpt)]) + " >&-", shell=True, stderr=subprocess.PIPE,
                       env=ENV, cwd=ROOT, timeout=180)
    assert p.returncode == 2 and "stdout is closed" in p.stderr.decode()


# ------------------------------------------------------------------------------------------ Ctrl-C
def _interrupt(args, wait_for: bytes = b"", stream: str = "stdout", then: bytes = b"", stdin: bytes = b""):
    """Start the CLI, wait until `stream` shows `wait_for` (or any byte), send SIGINT, feed `then` on stdin."""
    p = subprocess.Popen(CLI + [str(a) for a in args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=ENV, cwd=ROOT)
    if stdin:
        p.stdin.write(stdin)
        p.stdin.flush()
    src = p.stdout if stream == "stdout" else p.stderr
    seen = b""
    while not seen or (wait_for and wait_for not in seen):
        chunk = os.read(src.fileno(), 4096)
        if not chunk:
            break
        seen += chunk
    os.kill(p.pid, signal.SIGINT)
    if then:
        time.sleep(0.5)
        p.stdin.write(then)
    p.stdin.close()
    p.stdin = None  # closed: communicate() only reads
    out, err = p.communicate(timeout=180)
    if stream == "stdout":
        out = seen + out
    else:
        err = seen + err
    err = err.decode("utf-8", "replace")
    assert "Traceback" not in err, err
    return p.returncode, out.decode("utf-8", "replace"), err


def test_ctrl_c_in_generate_keeps_the_text_and_exits_130():
    rc, out, err = _interrupt(["generate", "-p", "ROMEO.", "--max-tokens", "5000"])
    assert rc == 130 and len(out) > 0 and "interrupted" in err


def test_ctrl_c_in_chat_stops_the_reply_and_keeps_the_session(tmp_path):
    f = tmp_path / "chat.safetensors"
    rc, out, err = _interrupt(["chat", "--max-tokens", "5000"], stdin=b"hello\n",
                              then=f"/save {f}\n/quit\n".encode())
    assert rc == 0 and "reply stopped" in err and "saved the state" in err and f.is_file()
    from xlstm_mlx.checkpoints.demo import demo_model_dir
    from xlstm_mlx.generation.chat import ChatSession

    model, tok = load(demo_model_dir())
    s = ChatSession(model, tok)
    s.load(f)
    assert [m["role"] for m in s.messages] == ["user", "assistant"]
    assert len(s.tokens) == s.cache.offset  # the state holds exactly what the session says it consumed


def test_ctrl_c_at_the_chat_prompt_exits_cleanly(ckpt):
    rc, out, err = _interrupt(["chat", "-m", ckpt], wait_for=b"plain transcript", stream="stderr")
    assert rc in (0, 130) and "Traceback" not in err


def test_ctrl_c_in_perplexity_prints_the_score_so_far(tmp_path):
    f = tmp_path / "long.txt"
    f.write_text((ROOT / "tests" / "data" / "heldout_excerpt.txt").read_text() * 8)
    rc, out, err = _interrupt(["perplexity", "--data", f, "--chunk-size", "128"], wait_for=b"scoring",
                              stream="stderr")
    assert rc == 130 and "perplexity so far:" in out and "interrupted: scored" in out


def test_ctrl_c_in_bench_prints_the_figures_so_far():
    rc, out, err = _interrupt(["bench", "--shape", "tiny", "--cpu", "--prefill-len", "64", "4096", "8192",
                               "--prefill-batch", "1", "--budget", "5"], wait_for=b"prefill B=1 T=64",
                              stream="stderr")
    assert rc == 130
    figures = json.loads(out)
    assert figures["interrupted"] is True and figures["prefill"][0]["length"] == 64
