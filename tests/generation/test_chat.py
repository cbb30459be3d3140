"""Chat on the carried state: each turn equals a from-scratch run of the whole conversation; /save, /load."""

import copy
import io
import os
import string
import subprocess
import sys

import pytest

from xlstm_mlx import generate
from xlstm_mlx import load
from xlstm_mlx.generation.chat import PLAIN_STOP, ChatSession, render_plain, run_chat
from xlstm_mlx.checkpoints.random import make_random_checkpoint
from xlstm_mlx.generation.sample import LogitBias
from xlstm_mlx.generation.snapshot import save_snapshot
from xlstm_mlx.generation.generate import prefill

import mlx.core as mx

TEMPLATE = (
    "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}<eos>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_random_checkpoint(tmp_path_factory.mktemp("chat"), "tiny", seed=11)


@pytest.fixture(scope="module")
def tiny(ckpt):
    return load(ckpt)


def readable(tok):
    """Ban everything but letters, space and '.': readable replies that re-encode to the same bytes."""
    allowed = {tok.encode(c, add_special_tokens=False)[0] for c in string.ascii_letters + " ."}
    return LogitBias({i: -1e9 for i in range(tok.vocab_size) if i not in allowed})


def from_scratch(model, tok, text, n, bos=True, **kw):
    return generate(model, tok, tok.encode(text, add_special_tokens=bos), n, **kw)


def test_plain_turns_equal_from_scratch_runs(tiny):
    model, tok = tiny
    bias = readable(tok)
    s = ChatSession(model, tok, system="You are terse.", max_tokens=12, logits_processors=[bias])
    r1 = "".join(r.text for r in s.send("Hello there"))
    t1 = len(s.tokens)
    r2 = "".join(r.text for r in s.send("And again"))
    assert s.rebuilds == 0
    msgs = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hello there"}]
    assert r1 == from_scratch(model, tok, render_plain(msgs, True), 12, stop=PLAIN_STOP, logits_processors=[bias])
    msgs += [{"role": "assistant", "content": r1}, {"role": "user", "content": "And again"}]
    full = render_plain(msgs, True)
    assert r2 == from_scratch(model, tok, full, 12, stop=PLAIN_STOP, logits_processors=[bias])
    # the second turn fed only what the conversation grew by, not the whole transcript again
    # (one token per ASCII byte: the delta since the consumed text plus the reply's first 11 tokens)
    assert len(s.tokens) - t1 == len(full) - len(render_plain(msgs[:2], True))
    assert s.messages[-1] == {"role": "assistant", "content": r2}


def test_template_turns_equal_from_scratch_runs(tiny):
    model, tok = tiny
    tok = copy.copy(tok)
    tok.chat_template = TEMPLATE
    bias = readable(tok)
    s = ChatSession(model, tok, max_tokens=10, logits_processors=[bias])
    r1 = "".join(r.text for r in s.send("Hi"))
    r2 = "".join(r.text for r in s.send("More"))
    assert s.rebuilds == 0
    msgs = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": r1}, {"role": "user", "content": "More"}]
    full = tok.apply_chat_template(msgs)
    assert "<eos>" in full
    assert r2 == from_scratch(model, tok, full, 10, bos=False, logits_processors=[bias])


def test_template_that_rewrites_history_triggers_a_rebuild(tiny):
    model, tok = tiny
    tok = copy.copy(tok)
    tok.chat_template = TEMPLATE.replace("{{ m.content }}", "{{ m.content | trim | upper }}")
    bias = readable(tok)
    s = ChatSession(model, tok, max_tokens=10, logits_processors=[bias])
    r1 = "".join(r.text for r in s.send("hi"))
    assert r1 != r1.upper()  # the template will rewrite the reply, so the consumed text no longer matches
    r2 = "".join(r.text for r in s.send("more"))
    assert s.rebuilds == 1
    msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": r1}, {"role": "user", "content": "more"}]
    assert r2 == from_scratch(model, tok, tok.apply_chat_template(msgs), 10, bos=False, logits_processors=[bias])


def test_save_load_and_reset(tiny, tmp_path):
    model, tok = tiny
    s = ChatSession(model, tok, max_tokens=8)
    r1 = "".join(r.text for r in s.send("one"))
    s.save(tmp_path / "c.safetensors")
    r2 = "".join(r.text for r in s.send("two"))
    fresh = ChatSession(model, tok, max_tokens=8)
    fresh.load(tmp_path / "c.safetensors")
    assert fresh.messages == s.messages[:2]
    assert "".join(r.text for r in fresh.send("two")) == r2
    fresh.reset()
    assert fresh.messages == [] and fresh.cache.offset == 0
    assert "".join(r.text for r in fresh.send("one")) == r1


def test_chat_on_top_of_a_prompt_snapshot(tiny, tmp_path):
    model, tok = tiny
    bias = readable(tok)
    doc = tok.encode("A document the chat is about. " * 5)
    cache = model.make_cache(1)
    prefill(model, mx.array([doc[:-1]]), cache)
    save_snapshot(tmp_path / "doc.safetensors", model, cache, doc[:-1], doc[-1:])
    s = ChatSession(model, tok, max_tokens=10, logits_processors=[bias])
    s.load(tmp_path / "doc.safetensors")
    reply = "".join(r.text for r in s.send("Summarize"))
    turn = tok.encode(render_plain([{"role": "user", "content": "Summarize"}], True), add_special_tokens=False)
    assert reply == generate(model, tok, doc + turn, 10, stop=PLAIN_STOP, logits_processors=[bias])


def test_run_chat_commands_in_process(tiny, tmp_path):
    model, tok = tiny
    f = tmp_path / "s.safetensors"
    script = f"one\n/save {f}\ntwo\n/reset\none\n/load {f}\ntwo\n/load {tmp_path / 'none.safetensors'}\n/save\n/nope\n"
    out, err = io.StringIO(), io.StringIO()
    assert run_chat(ChatSession(model, tok, max_tokens=6), io.StringIO(script), out, err, interactive=False) == 0
    replies = out.getvalue().split("\n")[:-1]
    assert len(replies) == 4
    assert replies[0] == replies[2] and replies[1] == replies[3]
    e = err.getvalue()
    assert "saved the state" in e and "loaded" in e and "does not exist" in e
    assert "usage: /save FILE" in e and "unknown command /nope" in e


def test_cli_chat_through_stdin(ckpt, tmp_path):
    f = tmp_path / "cli.safetensors"
    script = f"hello\n/save {f}\nhow are you\n/reset\nhello\n/load {f}\nhow are you\n/quit\nnot read\n"
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    p = subprocess.run(
        [sys.executable, "-m", "xlstm_mlx.cli", "chat", "--model", str(ckpt), "--max-tokens", "6"],
        input=script.encode(), capture_output=True, env=env, timeout=120,
    )
    assert p.returncode == 0, p.stderr.decode()
    replies = p.stdout.decode("utf-8", errors="replace").split("\n")[:-1]
    assert len(replies) == 4
    assert replies[0] == replies[2] and replies[1] == replies[3] and replies[0] != replies[1]
    assert f.exists()


def test_cli_chat_on_a_pseudo_terminal(ckpt):
    """Interactive mode: a prompt marker per turn and the command help, driven through a pty."""
    import pty
    import select

    master, slave = pty.openpty()
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    p = subprocess.Popen(
        [sys.executable, "-m", "xlstm_mlx.cli", "chat", "--model", str(ckpt), "--max-tokens", "4"],
        stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True,
    )
    os.close(slave)
    out = b""

    def read_until(marker: bytes, count: int, timeout: float = 60.0):
        nonlocal out
        import time

        end = time.time() + timeout
        while out.count(marker) < count and time.time() < end:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    out += os.read(master, 4096)
                except OSError:
                    break

    try:
        read_until(b">> ", 1)
        os.write(master, b"hello\n")
        read_until(b">> ", 2)
        os.write(master, b"/quit\n")
        assert p.wait(timeout=60) == 0
    finally:
        if p.poll() is None:
            p.kill()
        os.close(master)
    assert b"/reset" in out and b"/save FILE" in out  # the help line shown at start
    assert out.count(b">> ") >= 2
