"""`xlstm-mlx serve` end to end: a live server on 127.0.0.1 (a subprocess, as users run it) driven by the official
`openai` client (max_retries=0), on the bundled demo model (real text, deterministic greedy tokens).

Greedy references are computed in this process with generate(..., temp=0), which is what `xlstm-mlx generate
--temp 0` runs (tests/generation/test_cli_generate.py covers the CLI against it).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

openai = pytest.importorskip("openai")

from xlstm_mlx.checkpoints.demo import demo_model_dir  # noqa: E402

DEMO = demo_model_dir()
pytestmark = pytest.mark.skipif(DEMO is None, reason="the bundled demo model is not installed")
API_KEY = "test-key-123"
MODEL = "demo_model"  # the id the server reports: its checkpoint directory's name
BANNED_EOS = {"2": -100}  # the demo model's EOS id: keeps a row running until max_tokens


def _start(log_dir, *flags: str) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, "-m", "xlstm_mlx.cli", "serve", "--model", str(DEMO), "--port", "0", *flags]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    log = log_dir / "server.log"
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=f, env=env)
    proc.log = log
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        m = re.search(r"on (http://127\.0\.0\.1:\d+)/v1", log.read_text())
        if m:
            return proc, m.group(1)
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("the server did not start:\n" + log.read_text())


def _stop(proc: subprocess.Popen, sig=signal.SIGINT, timeout: float = 15) -> tuple[int, float]:
    t0 = time.monotonic()
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        rc = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"the server did not stop within {timeout} s of {sig!r}")
    return rc, time.monotonic() - t0


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    proc, url = _start(tmp_path_factory.mktemp("server"), "--max-batch", "8", "--max-queue", "64")
    yield url
    rc, _ = _stop(proc)
    assert rc == 0, proc.log.read_text()


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """One row, one waiting request, an API key: for overload, disconnect, auth and shutdown."""
    proc, url = _start(tmp_path_factory.mktemp("small"), "--max-batch", "1", "--max-queue", "1", "--api-key", API_KEY,
                       "--shutdown-timeout", "1")
    yield proc, url
    if proc.poll() is None:
        _stop(proc)


@pytest.fixture(scope="module")
def reference():
    from xlstm_mlx.checkpoints.load import load
    from xlstm_mlx.generation.generate import generate

    model, tok = load(DEMO)
    return lambda prompt, n: generate(model, tok, prompt, n, temp=0.0)


def _client(url, key="none", async_=False):
    cls = openai.AsyncOpenAI if async_ else openai.OpenAI
    return cls(base_url=url + "/v1", api_key=key, max_retries=0, timeout=60)


def _get(url: str, key: str | None = None) -> dict:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"} if key else {})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def _post_raw(url: str, body: bytes) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _wait_for(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


PROMPTS = ["ROMEO:", "To be, or not to be", "KING HENRY:\nNow", "O", "My lord, the", "First Citizen:\nBefore we",
           "What light", "Friends, Romans, countrymen,", "JULIET:\nAy me!", "Exeunt", "Good night, good night!",
           "Now is the winter of our discontent"]


# ------------------------------------------------------------------------------------------------ basics
def test_prefix_state_cache_is_lru_bounded_in_bytes():
    from xlstm_mlx.generation.server.state_cache import PrefixStateCache

    c = PrefixStateCache(max_bytes=100)
    assert c.put([1, 2], "s12", 40) and c.put([1, 2, 3, 4], "s1234", 40)
    assert c.longest_prefix([1, 2, 3, 4, 5]) == (4, "s1234")
    assert c.longest_prefix([1, 2, 3, 4]) == (2, "s12")  # a proper prefix only: one token is left to feed
    assert c.longest_prefix([9]) == (0, None)
    assert c.put([7], "s7", 40)  # 120 bytes > 100: the least recently used entry goes
    assert c.longest_prefix([1, 2, 3, 4, 5]) == (2, "s12") and c.stats()["bytes"] == 80
    assert not c.put([8], "big", 101) and not c.put([], "empty", 1)
    assert c.stats() == {"entries": 2, "bytes": 80, "max_bytes": 100, "hits": 3, "misses": 1, "evictions": 1}


def test_models_and_health(server):
    models = _client(server).models.list()
    assert [m.id for m in models.data] == ["demo_model"]
    h = _get(server + "/health")
    assert h["status"] == "ok" and h["active"] == 0 and h["queued"] == 0


def test_non_streaming_completion_equals_solo_greedy(server, reference):
    c = _client(server)
    r = c.completions.create(model="demo_model", prompt=PROMPTS[0], max_tokens=24, temperature=0)
    assert r.choices[0].text == reference(PROMPTS[0], 24)
    assert r.choices[0].finish_reason in ("length", "stop")
    assert r.usage.completion_tokens <= 24 and r.usage.prompt_tokens > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_concurrent_streams_equal_solo_greedy(server, reference):
    """12 streams at once (up to 8 decoding, the rest queued and joining as rows leave): each text equals its
    solo greedy run, whatever else was in the batch."""
    lengths = [8 + 5 * i for i in range(len(PROMPTS))]

    async def one(client, prompt, n):
        stream = await client.completions.create(model=MODEL, prompt=prompt, max_tokens=n, temperature=0, stream=True,
                                                 stream_options={"include_usage": True})
        pieces, finish, usage = [], None, None
        async for chunk in stream:
            if chunk.usage is not None:
                usage = chunk.usage
            for choice in chunk.choices:
                pieces.append(choice.text)
                finish = choice.finish_reason or finish
        return "".join(pieces), finish, usage

    async def main():
        client = _client(server, async_=True)
        try:
            return await asyncio.gather(*(one(client, p, n) for p, n in zip(PROMPTS, lengths)))
        finally:
            await client.close()

    results = asyncio.run(asyncio.wait_for(main(), 120))
    for (text, finish, usage), prompt, n in zip(results, PROMPTS, lengths):
        assert text == reference(prompt, n), prompt
        assert finish in ("length", "stop")
        assert usage is not None and usage.completion_tokens <= n


def test_64_concurrent_streams_and_16_concurrent_chats(server, reference):
    """The bar for serving: 64 streamed completions at once (8 rows, the rest queued) all finish and equal solo greedy;
    16 streamed chats at once each equal the same chat asked alone."""
    n = 6

    async def stream_text(make):
        pieces = []
        async for chunk in await make():
            for choice in chunk.choices:
                pieces.append((choice.text if hasattr(choice, "text") else choice.delta.content) or "")
        return "".join(pieces)

    chats = [[{"role": "user", "content": f"{PROMPTS[i % len(PROMPTS)]} ({i})"}] for i in range(16)]

    async def main():
        client = _client(server, async_=True)
        try:
            completions = [stream_text(lambda p=PROMPTS[i % len(PROMPTS)]: client.completions.create(
                model=MODEL, prompt=p, max_tokens=n, temperature=0, stream=True)) for i in range(64)]
            texts = await asyncio.gather(*completions)
            chat_texts = await asyncio.gather(*(stream_text(lambda m=m: client.chat.completions.create(
                model=MODEL, messages=m, max_tokens=n, temperature=0, stream=True)) for m in chats))
            return texts, chat_texts
        finally:
            await client.close()

    texts, chat_texts = asyncio.run(asyncio.wait_for(main(), 300))
    assert texts == [reference(PROMPTS[i % len(PROMPTS)], n) for i in range(64)]
    c = _client(server)
    assert chat_texts == [c.chat.completions.create(model=MODEL, messages=m, max_tokens=n, temperature=0)
                          .choices[0].message.content for m in chats]


def _metric(url: str, name: str) -> float:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    return float(re.search(rf"^{name} (\S+)$", text, re.M).group(1))


SAMPLED = [dict(temperature=0.9, top_p=0.9, seed=7, top_k=40, min_p=0.05, repetition_penalty=1.3),
           dict(temperature=1.2, seed=123),
           dict(temperature=0.7, top_k=5, seed=2**40 + 1, repetition_penalty=0.9, repetition_context_size=4),
           dict(temperature=1.0, min_p=0.1, seed=0)]


def test_seeded_sampling_is_the_same_solo_in_a_batch_and_as_generate(server):
    """Sampled rows are drawn in the batched decode step, each with its own key: a seeded request gives the same
    text alone, inside a batch of other sampled and greedy requests, and as generate() with the same settings."""
    from xlstm_mlx.checkpoints.load import load
    from xlstm_mlx.generation.generate import generate

    model, tok = load(DEMO)
    n = 24
    prompts = PROMPTS[:len(SAMPLED)]
    expected = [generate(model, tok, p, n, logit_bias={2: -100.0}, temp=kw["temperature"],
                         **{k: v for k, v in kw.items() if k != "temperature"}) for p, kw in zip(prompts, SAMPLED)]
    greedy = [generate(model, tok, p, n, temp=0.0, logit_bias={2: -100.0}) for p in PROMPTS[4:8]]

    def body(kw):
        extra = {k: v for k, v in kw.items() if k in ("top_k", "min_p", "repetition_penalty", "repetition_context_size")}
        return dict(temperature=kw["temperature"], top_p=kw.get("top_p", 1.0), seed=kw["seed"], extra_body=extra)

    c = _client(server)
    solo = [c.completions.create(model=MODEL, prompt=p, max_tokens=n, logit_bias=BANNED_EOS, **body(kw)).choices[0].text
            for p, kw in zip(prompts, SAMPLED)]
    assert solo == expected

    async def main():
        client = _client(server, async_=True)
        try:
            sampled = [client.completions.create(model=MODEL, prompt=p, max_tokens=n, logit_bias=BANNED_EOS, **body(kw))
                       for p, kw in zip(prompts, SAMPLED)]
            plain = [client.completions.create(model=MODEL, prompt=p, max_tokens=n, temperature=0,
                                               logit_bias=BANNED_EOS) for p in PROMPTS[4:8]]
            return await asyncio.gather(*sampled, *plain)
        finally:
            await client.close()

    steps, rows = _metric(server, "xlstm_mlx_decode_steps_total"), _metric(server, "xlstm_mlx_decode_batch_rows_total")
    results = asyncio.run(asyncio.wait_for(main(), 120))
    texts = [r.choices[0].text for r in results]
    assert texts[: len(SAMPLED)] == expected and texts[len(SAMPLED):] == greedy
    steps = _metric(server, "xlstm_mlx_decode_steps_total") - steps
    rows = _metric(server, "xlstm_mlx_decode_batch_rows_total") - rows
    assert rows / steps > 2, (rows, steps)  # they did decode together


def test_stop_strings_and_sampling_fields(server, reference):
    c = _client(server)
    full = reference(PROMPTS[0], 24)
    stop = full[5:8]
    r = c.completions.create(model=MODEL, prompt=PROMPTS[0], max_tokens=24, temperature=0, stop=[stop])
    assert r.choices[0].text == full[: full.find(stop)] and r.choices[0].finish_reason == "stop"
    kw = dict(model=MODEL, prompt=PROMPTS[1], max_tokens=16, temperature=0.9, top_p=0.9, seed=7,
              extra_body={"top_k": 40, "min_p": 0.05, "repetition_penalty": 1.3})
    a, b = c.completions.create(**kw), c.completions.create(**kw)
    assert a.choices[0].text == b.choices[0].text  # a seed makes sampling reproducible
    r = c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_completion_tokens=3,
                                  temperature=0, logit_bias=BANNED_EOS)
    assert r.usage.completion_tokens == 3 and r.choices[0].finish_reason == "length"


def test_chat_streaming_equals_non_streaming_and_reuses_the_prefix_state(server):
    c = _client(server)
    turn1 = [{"role": "system", "content": "You are a player."}, {"role": "user", "content": "Speak the speech."}]
    r1 = c.chat.completions.create(model=MODEL, messages=turn1, max_tokens=20, temperature=0)
    reply = r1.choices[0].message.content
    assert r1.choices[0].message.role == "assistant" and reply
    stream = c.chat.completions.create(model=MODEL, messages=turn1, max_tokens=20, temperature=0, stream=True,
                                       stream_options={"include_usage": True})
    pieces, usage = [], None
    for chunk in stream:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
    assert "".join(pieces) == reply
    # the repeated turn 1 started from the state stored at its prompt boundary
    assert usage.prompt_tokens_details.cached_tokens == usage.prompt_tokens - 1

    turn2 = turn1 + [{"role": "assistant", "content": reply}, {"role": "user", "content": "Again, softly."}]
    r2 = c.chat.completions.create(model=MODEL, messages=turn2, max_tokens=10, temperature=0)
    cached = r2.usage.prompt_tokens_details.cached_tokens
    assert cached >= r1.usage.prompt_tokens - 1, (cached, r1.usage.prompt_tokens)
    assert cached < r2.usage.prompt_tokens
    metrics = urllib.request.urlopen(server + "/metrics", timeout=10).read().decode()
    hits = re.search(r"^xlstm_mlx_state_cache_hits_total (\d+)", metrics, re.M)
    assert hits and int(hits.group(1)) >= 2
    assert re.search(r"^xlstm_mlx_state_cache_bytes \d+", metrics, re.M)
    assert "xlstm_mlx_time_to_first_token_seconds_count" in metrics


def test_a_shared_system_prompt_and_an_edited_last_message_start_from_stored_states(server):
    """States are stored at a chat's boundaries (end of the system prompt, start of the last message): another
    conversation with the same system prompt, or the same one with its last message edited, starts there; the
    text equals generate() on the whole prompt from a zero state."""
    from xlstm_mlx.checkpoints.load import load
    from xlstm_mlx.generation.generate import generate
    from xlstm_mlx.generation.server.protocol import _chat_ids

    model, tok = load(DEMO)
    c = _client(server)
    system = {"role": "system", "content": "You are the Chorus, and you speak in verse of Verona and its feuds."}

    def ask(messages):
        r = c.chat.completions.create(model=MODEL, messages=messages, max_tokens=12, temperature=0)
        ids = _chat_ids(tok, messages, add_generation_prompt=True)
        assert r.choices[0].message.content == generate(model, tok, ids, 12, temp=0.0, stop=["\nUser:"])
        return r.usage.prompt_tokens_details.cached_tokens

    head = len(_chat_ids(tok, [system], add_generation_prompt=False))
    assert ask([system, {"role": "user", "content": "Who are the lovers?"}]) < head  # (a BOS state may be stored)
    assert ask([system, {"role": "user", "content": "Where do we lay our scene?"}]) == head
    convo = [system, {"role": "user", "content": "Tell the tale."}, {"role": "assistant", "content": "Two houses."},
             {"role": "user", "content": "Go on."}]
    ask(convo)
    before_last = len(_chat_ids(tok, convo[:-1], add_generation_prompt=False))
    assert ask(convo[:-1] + [{"role": "user", "content": "Say more, softly."}]) == before_last


def test_prefix_state_gives_the_same_text_as_a_fresh_prefill(server, reference):
    """A prompt that extends a finished one starts from its stored state: same text as from scratch."""
    c = _client(server)
    base = "Now is the winter of our discontent made glorious summer"
    first = c.completions.create(model=MODEL, prompt=base, max_tokens=6, temperature=0)
    extended = base + first.choices[0].text + " by this sun"
    r = c.completions.create(model=MODEL, prompt=extended, max_tokens=16, temperature=0)
    assert r.usage.prompt_tokens_details.cached_tokens > 0
    assert r.choices[0].text == reference(extended, 16)


def test_disconnects_while_greedy_batches_are_pipelined(server, reference):
    """Plain greedy rows run pipelined (the next step starts before the tokens are read): streams closed
    mid-flight are dropped, a request joining meanwhile still gets its solo text, the rows all come back."""
    c = _client(server)
    streams = [c.completions.create(model=MODEL, prompt=p, max_tokens=1500, temperature=0, stream=True)
               for p in ("ROMEO:", "HAMLET:")]  # greedy, no EOS within 1500 tokens on the demo model
    iters = [iter(s) for s in streams]
    for it in iters:
        next(it), next(it)
    assert _get(server + "/health")["active"] == 2
    r = c.completions.create(model=MODEL, prompt=PROMPTS[6], max_tokens=20, temperature=0)
    assert r.choices[0].text == reference(PROMPTS[6], 20)
    for s in streams:
        s.close()
    assert _wait_for(lambda: _get(server + "/health")["active"] == 0, timeout=5), _get(server + "/health")


def test_logprobs(server):
    c = _client(server)
    r = c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Speak"}], max_tokens=6,
                                  temperature=0, logprobs=True, top_logprobs=3)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens
    for entry in content:
        assert len(entry.top_logprobs) == 3 and entry.logprob <= 0
        values = [t.logprob for t in entry.top_logprobs]
        assert values == sorted(values, reverse=True)
        assert entry.logprob == pytest.approx(values[0])  # greedy picks the most likely token
    r = c.completions.create(model=MODEL, prompt="ROMEO:", max_tokens=4, temperature=0, logprobs=2)
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 4
    assert all(len(t) <= 2 for t in lp.top_logprobs)


# ------------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("body, needle", [
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "JSON object"),
    (b'{"max_tokens": 4}', "prompt"),
    (b'{"prompt": "x", "temperature": "hot"}', "temperature"),
    (b'{"prompt": "x", "max_tokens": "5"}', "max_tokens"),
    (b'{"prompt": "x", "top_p": 1.5}', "top_p"),
    (b'{"prompt": "x", "temperature": -1}', "temperature"),
    (b'{"prompt": "x", "max_tokens": 0}', "max_tokens"),
    (b'{"prompt": "x", "max_tokens": 100000}', "--max-tokens-cap"),
    (b'{"prompt": "x", "n": 2}', "n=1"),
    (b'{"prompt": [99999999]}', "vocabulary"),
    (b'{"prompt": "x", "stop": ["a", "b", "c", "d", "e"]}', "stop"),
    (b'{"prompt": "x", "logit_bias": {"abc": 1}}', "logit_bias"),
    (b'{"prompt": "x", "presence_penalty": 0.5}', "repetition_penalty"),
])
def test_malformed_completion_requests_get_openai_errors(server, body, needle):
    status, err = _post_raw(server + "/v1/completions", body)
    assert 400 <= status < 500
    assert set(err["error"]) >= {"message", "type", "param", "code"}
    assert needle in err["error"]["message"] or needle == err["error"]["param"], err


def test_malformed_chat_requests_and_unknown_routes(server):
    for body in (b'{"messages": []}', b'{"messages": [{"role": "wizard", "content": "x"}]}',
                 b'{"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}',
                 b'{"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2}'):
        status, err = _post_raw(server + "/v1/chat/completions", body)
        assert status == 400 and err["error"]["type"] == "invalid_request_error", (body, err)
    with pytest.raises(openai.BadRequestError):
        _client(server).completions.create(model=MODEL, prompt="x", max_tokens=-3)
    status, err = _post_raw(server + "/v1/nowhere", b"{}")
    assert status == 404 and "message" in err["error"]
    status, err = _post_raw(server + "/v1/completions", b'{"prompt": "' + b"x" * (2 << 20) + b'"}')
    assert status == 413 and "--max-request-bytes" in err["error"]["message"]
    assert _get(server + "/health")["status"] == "ok"  # and the server is still serving


def test_unknown_model_gets_404_model_not_found_and_an_absent_model_means_the_served_one(server, reference):
    for create in (lambda c: c.completions.create(model="gpt-4o", prompt="x", max_tokens=2),
                   lambda c: c.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])):
        with pytest.raises(openai.NotFoundError) as e:
            create(_client(server))
        assert e.value.code == "model_not_found" and e.value.param == "model"
        assert "'gpt-4o'" in e.value.message and MODEL in e.value.message
    status, r = _post_raw(server + "/v1/completions", b'{"prompt": "ROMEO:", "max_tokens": 5, "temperature": 0}')
    assert status == 200 and r["model"] == MODEL and r["choices"][0]["text"] == reference("ROMEO:", 5)


# ------------------------------------------------------------------------------------------------ limits
def test_api_key_is_required(small):
    _, url = small
    with pytest.raises(openai.AuthenticationError):
        _client(url, key="wrong").models.list()
    assert _client(url, key=API_KEY).models.list().data[0].id == "demo_model"


def test_disconnect_frees_the_row(small):
    _, url = small
    c = _client(url, key=API_KEY)
    stream = c.completions.create(model=MODEL, prompt="ROMEO:", max_tokens=4000, temperature=0, stream=True,
                                  logit_bias=BANNED_EOS)
    it = iter(stream)
    next(it), next(it)
    assert _get(url + "/health")["active"] == 1
    t0 = time.monotonic()
    stream.close()
    assert _wait_for(lambda: _get(url + "/health")["active"] == 0, timeout=5), _get(url + "/health")
    assert time.monotonic() - t0 < 1.0  # a dropped stream frees its row within a second


def test_overload_gets_429_with_retry_after(small):
    _, url = small
    c = _client(url, key=API_KEY)
    running = c.completions.create(model=MODEL, prompt="ROMEO:", max_tokens=4000, temperature=0, stream=True,
                                   logit_bias=BANNED_EOS)
    next(iter(running))  # holds the only row
    waiting = c.completions.with_raw_response.create
    box = {}
    t = threading.Thread(target=lambda: box.setdefault("r", waiting(model=MODEL, prompt="O", max_tokens=2,
                                                                    temperature=0)), daemon=True)
    t.start()
    assert _wait_for(lambda: _get(url + "/health")["queued"] == 1, timeout=10)
    with pytest.raises(openai.RateLimitError) as e:
        c.completions.create(model=MODEL, prompt="x", max_tokens=2)
    assert e.value.response.headers.get("retry-after") == "1"
    assert e.value.code == "rate_limit_exceeded"
    running.close()  # the waiting request gets the row and finishes
    t.join(30)
    assert box["r"].parse().usage.completion_tokens <= 2
    assert _wait_for(lambda: (lambda h: (h["active"], h["queued"]) == (0, 0))(_get(url + "/health")))


def test_sigint_stops_the_server_within_seconds(small):
    proc, url = small
    c = _client(url, key=API_KEY)
    stream = c.completions.create(model=MODEL, prompt="ROMEO:", max_tokens=4000, temperature=0, stream=True,
                                  logit_bias=BANNED_EOS)
    it = iter(stream)
    next(it)
    rc, seconds = _stop(proc, signal.SIGINT)
    assert rc == 0, proc.log.read_text()
    assert seconds < 10  # the drain period (--shutdown-timeout 1) and the engine's exit
    with pytest.raises(openai.APIError, match="shutting down"):  # the open stream was told, not cut
        for _ in it:
            pass
    err = proc.log.read_text()
    assert "[xlstm-mlx serve] stopped" in err and "Traceback" not in err, err
