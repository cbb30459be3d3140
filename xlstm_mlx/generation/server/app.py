"""FastAPI routes of the OpenAI-compatible server; the engine (engine.py) does the work on its own thread.

Each request gets an asyncio.Queue; the engine thread puts plain event tuples on it through
loop.call_soon_threadsafe. A stream ending for any reason other than its natural end (client disconnect,
cancellation) cancels its row at once.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
import threading
import uuid
from dataclasses import dataclass, field

import anyio

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import ValidationError
from sse_starlette.sse import EventSourceResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from xlstm_mlx.generation.server import metrics as metrics_text
from xlstm_mlx.generation.server.engine import Engine, QueueFull, ShuttingDown
from xlstm_mlx.generation.server.protocol import (
    ChatRequest, CompletionRequest, Limits, RequestError, chat_job, completion_job, describe_validation_error,
    error_body,
)


@dataclass
class Settings:
    model_id: str
    api_key: str | None = None
    limits: Limits = None
    max_request_bytes: int = 1 << 20
    retry_after_s: int = 1
    drain_s: float = 3.0  # after a shutdown signal, open requests keep going this long, then end with an error
    draining: threading.Event = field(default_factory=threading.Event)  # set on SIGINT/SIGTERM (cli.py)

    def __post_init__(self):
        self.limits = self.limits or Limits()


def _error(status: int, message: str, kind: str = "invalid_request_error", param=None, code=None,
           headers=None) -> JSONResponse:
    return JSONResponse(error_body(message, kind, param, code), status_code=status, headers=headers)


async def _read_json(request: Request, limit: int):
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise RequestError(f"the request body is over {limit} bytes (--max-request-bytes)", None, 413)
    try:
        return json.loads(bytes(body))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RequestError(f"the request body is not valid JSON: {e}") from e


def create_app(engine: Engine, settings: Settings) -> FastAPI:
    app = FastAPI(title="xlstm-mlx", docs_url=None, redoc_url=None, openapi_url=None)
    tok = engine.tokenizer

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, exc):
        return _error(exc.status_code, str(exc.detail), "invalid_request_error" if exc.status_code < 500
                      else "server_error")

    @app.exception_handler(RequestError)
    async def request_error(request, exc: RequestError):
        if exc.status == 401:
            return _error(401, str(exc), code="invalid_api_key")
        return _error(exc.status, str(exc), param=exc.param)

    def authenticate(request: Request) -> None:
        if settings.api_key:
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {settings.api_key}".encode()):
                raise RequestError("invalid or missing API key (send Authorization: Bearer KEY)", None, 401)

    @app.get("/health")
    async def health():
        return {"status": "ok" if engine.alive else "stopping", **engine.health()}

    @app.get("/metrics")
    async def metrics():
        return PlainTextResponse(metrics_text.render(engine.metrics, engine.health(), engine.state_cache.stats()),
                                 media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    async def models(request: Request):
        authenticate(request)
        return {"object": "list", "data": [{"id": settings.model_id, "object": "model", "created": 0,
                                            "owned_by": "xlstm-mlx"}]}

    async def handle(request: Request, chat: bool):
        authenticate(request)
        data = await _read_json(request, settings.max_request_bytes)
        if not isinstance(data, dict):
            raise RequestError("the request body must be a JSON object")
        try:
            req = (ChatRequest if chat else CompletionRequest).model_validate(data)
        except ValidationError as e:
            message, param = describe_validation_error(e)
            raise RequestError(message, param) from None
        if req.model is not None and req.model != settings.model_id:
            # as OpenAI answers an unknown model; an absent field means the served model (curl users omit it)
            return _error(404, f"the model {req.model!r} does not exist: this server serves {settings.model_id!r} "
                          "(GET /v1/models lists it; --model-id sets it)", param="model", code="model_not_found")
        job = (chat_job if chat else completion_job)(req, tok, settings.limits)
        if settings.draining.is_set():
            return _error(503, "the server is shutting down", "server_error")
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()

        def sink(event):  # called on the engine thread
            loop.call_soon_threadsafe(events.put_nowait, event)

        try:
            rid = engine.submit(job, sink)
        except QueueFull as e:
            return _error(429, f"the server is busy: {e}; retry later", "rate_limit_exceeded",
                          code="rate_limit_exceeded", headers={"Retry-After": str(settings.retry_after_s)})
        except ShuttingDown as e:
            return _error(503, str(e), "server_error")
        reply = _Reply(chat, settings.model_id, tok, job.logprobs is not None)
        if req.stream:
            usage = bool(req.stream_options and req.stream_options.include_usage)
            # sse-starlette would cancel streams as soon as uvicorn is told to exit; give them the drain period
            return EventSourceResponse(_stream(engine, rid, events, reply, usage, settings),
                                       ping=15, shutdown_event=anyio.Event(), shutdown_grace_period=settings.drain_s + 1)
        return await _collect(engine, rid, events, reply, request, settings)

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await handle(request, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await handle(request, chat=True)

    return app


class _Reply:
    """Builds OpenAI response objects for one request."""

    def __init__(self, chat: bool, model_id: str, tokenizer, logprobs: bool):
        self.chat, self.model, self.tok, self.logprobs = chat, model_id, tokenizer, logprobs
        self.id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        self.created = int(time.time())
        self.offset = 0  # completions' text_offset

    def head(self, obj: str) -> dict:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model}

    def _token(self, tid: int) -> str:
        return self.tok.decode([tid], skip_special_tokens=False)

    def logprob_entry(self, text: str, tid: int, lp: float, top: list):
        if not self.logprobs:
            return None
        if self.chat:
            s = self._token(tid)
            return {"token": s, "logprob": lp, "bytes": list(s.encode()),
                    "top_logprobs": [{"token": self._token(i), "logprob": v, "bytes": list(self._token(i).encode())}
                                     for i, v in top]}
        entry = {"token": self._token(tid), "logprob": lp, "top": {self._token(i): v for i, v in top},
                 "offset": self.offset}
        self.offset += len(text)
        return entry

    def logprobs_block(self, entries: list):
        if not self.logprobs:
            return None
        if self.chat:
            return {"content": entries}
        return {"tokens": [e["token"] for e in entries], "token_logprobs": [e["logprob"] for e in entries],
                "top_logprobs": [e["top"] for e in entries], "text_offset": [e["offset"] for e in entries]}

    def chunk(self, text: str | None, finish: str | None, entries: list, first: bool = False) -> dict:
        if self.chat:
            delta = {"role": "assistant", "content": ""} if first else ({"content": text} if text else {})
            choice = {"index": 0, "delta": delta, "logprobs": self.logprobs_block(entries) if entries else None,
                      "finish_reason": finish}
            return {**self.head("chat.completion.chunk"), "choices": [choice]}
        choice = {"index": 0, "text": text or "", "logprobs": self.logprobs_block(entries) if entries else None,
                  "finish_reason": finish}
        return {**self.head("text_completion"), "choices": [choice]}

    def full(self, text: str, finish: str, entries: list, usage: dict) -> dict:
        if self.chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": text},
                      "logprobs": self.logprobs_block(entries), "finish_reason": finish}
            return {**self.head("chat.completion"), "choices": [choice], "usage": usage}
        choice = {"index": 0, "text": text, "logprobs": self.logprobs_block(entries), "finish_reason": finish}
        return {**self.head("text_completion"), "choices": [choice], "usage": usage}


def _usage(u: dict) -> dict:
    return {"prompt_tokens": u["prompt_tokens"], "completion_tokens": u["completion_tokens"],
            "total_tokens": u["total_tokens"], "prompt_tokens_details": {"cached_tokens": u["cached_tokens"]}}


def _drained(settings: Settings, since: list) -> bool:
    """True once the drain period after a shutdown signal is over (`since` holds when it was first seen)."""
    if not settings.draining.is_set():
        return False
    if not since:
        since.append(time.monotonic())
    return time.monotonic() - since[0] >= settings.drain_s


async def _stream(engine: Engine, rid: int, events: asyncio.Queue, reply: _Reply, include_usage: bool,
                  settings: Settings):
    """SSE data for one request. On shutdown the row keeps decoding for `drain_s` seconds; a stream still open
    then ends with an error event (and its row is cancelled), so the response completes cleanly."""
    finished = False
    since: list = []
    try:
        if reply.chat:
            yield json.dumps(reply.chunk(None, None, [], first=True))
        while True:
            if _drained(settings, since):
                yield json.dumps(error_body("the server is shutting down", "server_error"))
                return
            try:
                ev = await asyncio.wait_for(events.get(), timeout=0.25)
            except asyncio.TimeoutError:
                continue
            kind = ev[0]
            if kind == "token":
                _, text, tid, lp, top = ev
                entry = reply.logprob_entry(text, tid, lp, top)
                if text or entry is not None:
                    yield json.dumps(reply.chunk(text, None, [entry] if entry is not None else []))
            elif kind == "done":
                finished = True
                _, reason, usage = ev
                if reason == "cancelled":
                    yield json.dumps(error_body("the request was cancelled (server shutting down)", "server_error"))
                    return
                yield json.dumps(reply.chunk(None, reason, []))
                if include_usage:
                    yield json.dumps({**reply.head(reply.chunk(None, None, [])["object"]), "choices": [],
                                      "usage": _usage(usage)})
                yield "[DONE]"
                return
            elif kind == "error":
                finished = True
                yield json.dumps(error_body(ev[1], "server_error"))
                return
    finally:
        if not finished:  # the client went away (or the response was cancelled): free the row now
            engine.cancel(rid)


async def _collect(engine: Engine, rid: int, events: asyncio.Queue, reply: _Reply, request: Request,
                   settings: Settings):
    pieces, entries = [], []
    finished = False
    since: list = []
    try:
        while True:
            if _drained(settings, since):
                return _error(503, "the server is shutting down", "server_error")
            try:
                ev = await asyncio.wait_for(events.get(), timeout=0.25)
            except asyncio.TimeoutError:
                if await request.is_disconnected():
                    return JSONResponse(error_body("client disconnected"), status_code=499)
                continue
            kind = ev[0]
            if kind == "token":
                _, text, tid, lp, top = ev
                pieces.append(text)
                entry = reply.logprob_entry(text, tid, lp, top)
                if entry is not None:
                    entries.append(entry)
            elif kind == "done":
                finished = True
                _, reason, usage = ev
                if reason == "cancelled":
                    return _error(503, "the request was cancelled (server shutting down)", "server_error")
                return JSONResponse(reply.full("".join(pieces), reason, entries, _usage(usage)))
            elif kind == "error":
                finished = True
                return _error(500, ev[1], "server_error")
    finally:
        if not finished:
            engine.cancel(rid)
