"""OpenAI request bodies (pydantic, strict types) and their translation into an engine Job.

Strict: a string where a number belongs is an error, not a coercion; unknown fields are ignored (clients send
fields like `user`); fields we cannot honour (n > 1, echo, suffix, presence/frequency penalties) are refused
with a message rather than silently dropped. Nothing here names a file: the `model` field is only compared with the served model's id (app.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from xlstm_mlx.generation.chat import PLAIN_STOP, render_plain
from xlstm_mlx.generation.server.engine import Job

Number = float  # strict: an int is accepted, a string or a bool is not


class RequestError(Exception):
    """A request we refuse: 400 with an OpenAI-style body naming `param`."""

    def __init__(self, message: str, param: str | None = None, status: int = 400):
        super().__init__(message)
        self.param = param
        self.status = status


@dataclass
class Limits:
    max_prompt_tokens: int = 8192
    max_tokens: int = 4096  # the cap on max_tokens / max_completion_tokens
    default_max_tokens: int = 256


class StreamOptions(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    include_usage: StrictBool = False


class _Sampling(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    model: StrictStr | None = None
    max_tokens: StrictInt | None = Field(None, ge=1)
    temperature: Number | None = Field(None, ge=0, le=2)
    top_p: Number | None = Field(None, gt=0, le=1)
    top_k: StrictInt | None = Field(None, ge=0)
    min_p: Number | None = Field(None, ge=0, le=1)
    repetition_penalty: Number | None = Field(None, gt=0, le=10)
    repetition_context_size: StrictInt | None = Field(None, ge=1, le=4096)
    seed: StrictInt | None = Field(None, ge=0, le=2**63 - 1)
    stop: StrictStr | list[StrictStr] | None = None
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    n: StrictInt = Field(1, ge=1)
    logit_bias: dict[StrictStr, Number] | None = None
    presence_penalty: Number | None = Field(None, ge=-2, le=2)
    frequency_penalty: Number | None = Field(None, ge=-2, le=2)
    user: StrictStr | None = None


class CompletionRequest(_Sampling):
    prompt: StrictStr | list[StrictInt] | list[StrictStr]
    logprobs: StrictInt | None = Field(None, ge=0, le=20)
    echo: StrictBool = False
    suffix: StrictStr | None = None


class TextPart(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    type: StrictStr
    text: StrictStr | None = None


class Message(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    role: Literal["system", "developer", "user", "assistant"]
    content: StrictStr | list[TextPart] | None = None


class ChatRequest(_Sampling):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: StrictInt | None = Field(None, ge=1)
    logprobs: StrictBool = False
    top_logprobs: StrictInt | None = Field(None, ge=0, le=20)


# -------------------------------------------------------------------------------------------- translation
def _stops(stop) -> list[str]:
    items = [] if stop is None else [stop] if isinstance(stop, str) else list(stop)
    if len(items) > 4:
        raise RequestError(f"at most 4 stop strings, got {len(items)}", "stop")
    for s in items:
        if not s or len(s) > 256:
            raise RequestError("stop strings must be 1 to 256 characters long", "stop")
    return items


def _common(req: _Sampling, tokenizer, limits: Limits, prompt: list[int], max_tokens: int | None,
            logprobs: int | None, extra_stop: list[str], save_at: list[int] | None = None) -> Job:
    if req.n != 1:
        raise RequestError("only n=1 is supported (send several requests: they are batched)", "n")
    for name in ("presence_penalty", "frequency_penalty"):
        if getattr(req, name):
            raise RequestError(f"{name} is not supported; use repetition_penalty (> 1 discourages repeats)", name)
    if not prompt:
        raise RequestError("the prompt encodes to no tokens; give at least one token", "prompt")
    if len(prompt) > limits.max_prompt_tokens:
        raise RequestError(f"the prompt has {len(prompt)} tokens; this server accepts at most "
                           f"{limits.max_prompt_tokens} (--max-prompt-tokens)", "prompt")
    if max_tokens is None:
        max_tokens = limits.default_max_tokens
    if max_tokens > limits.max_tokens:
        raise RequestError(f"max_tokens {max_tokens} is above this server's cap {limits.max_tokens} "
                           "(--max-tokens-cap)", "max_tokens")
    bias = None
    if req.logit_bias:
        bias = {}
        for key, value in req.logit_bias.items():
            if not key.isdigit() or int(key) >= tokenizer.vocab_size:
                raise RequestError(f"logit_bias key {key!r} is not a token id below {tokenizer.vocab_size}",
                                   "logit_bias")
            if not -100 <= value <= 100:
                raise RequestError(f"logit_bias values must be in [-100, 100], got {value}", "logit_bias")
            bias[int(key)] = float(value)
    return Job(
        prompt=prompt, max_tokens=max_tokens,
        temperature=1.0 if req.temperature is None else float(req.temperature),
        top_p=1.0 if req.top_p is None else float(req.top_p), top_k=req.top_k or 0,
        min_p=0.0 if req.min_p is None else float(req.min_p), seed=req.seed,
        repetition_penalty=None if req.repetition_penalty is None else float(req.repetition_penalty),
        repetition_context_size=req.repetition_context_size or 20, logit_bias=bias,
        stop=extra_stop + _stops(req.stop), logprobs=logprobs, save_at=save_at or [],
    )


def completion_job(req: CompletionRequest, tokenizer, limits: Limits) -> Job:
    if req.echo:
        raise RequestError("echo is not supported", "echo")
    if req.suffix:
        raise RequestError("suffix is not supported", "suffix")
    p = req.prompt
    if isinstance(p, list) and p and isinstance(p[0], str):
        if len(p) != 1:
            raise RequestError("give one prompt per request (several requests run batched)", "prompt")
        p = p[0]
    if isinstance(p, str):
        ids = tokenizer.encode(p)  # BOS as the tokenizer says: the same ids as `xlstm-mlx generate`
    else:
        bad = [t for t in p if not 0 <= t < tokenizer.vocab_size]
        if bad:
            raise RequestError(f"token id {bad[0]} is outside the vocabulary (size {tokenizer.vocab_size})", "prompt")
        ids = list(p)
    return _common(req, tokenizer, limits, ids, req.max_tokens, req.logprobs, [])


def _content(m: Message) -> str:
    if m.content is None:
        return ""
    if isinstance(m.content, str):
        return m.content
    parts = []
    for part in m.content:
        if part.type != "text" or part.text is None:
            raise RequestError(f"only text content parts are supported, got type {part.type!r}", "messages")
        parts.append(part.text)
    return "".join(parts)


def _chat_ids(tokenizer, messages: list[dict], add_generation_prompt: bool) -> list[int]:
    if tokenizer.chat_template is not None:
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt)
        return tokenizer.encode(text, add_special_tokens=False)
    # the plain transcript of `xlstm-mlx chat` (generation/chat.py)
    return tokenizer.encode(render_plain(messages, add_generation_prompt=add_generation_prompt))


def chat_boundaries(tokenizer, messages: list[dict], ids: list[int]) -> list[int]:
    """Prompt lengths worth a stored state: the end of the leading system messages (shared by conversations with
    the same system prompt) and the end of all messages but the last (an edited or regenerated last message starts
    there). A boundary counts only where the rendered prefix tokenizes to a prefix of the prompt (a template or a
    BPE merge across the boundary can make it differ); one that does not is skipped."""
    n_system = next((i for i, m in enumerate(messages) if m["role"] != "system"), len(messages))
    out = set()
    for upto in {n_system, len(messages) - 1}:
        if not 0 < upto < len(messages):
            continue
        try:
            head = _chat_ids(tokenizer, messages[:upto], add_generation_prompt=False)
        except Exception:  # a template that refuses a partial conversation: no boundary there
            continue
        if 0 < len(head) < len(ids) - 1 and ids[: len(head)] == head:
            out.add(len(head))
    return sorted(out)


def chat_job(req: ChatRequest, tokenizer, limits: Limits) -> Job:
    messages = [{"role": "system" if m.role == "developer" else m.role, "content": _content(m)}
                for m in req.messages]
    try:
        ids = _chat_ids(tokenizer, messages, add_generation_prompt=True)
    except Exception as e:  # the template's own raise_exception, or a message it cannot render
        raise RequestError(f"the chat template refused these messages: {e}", "messages") from e
    stops = [] if tokenizer.chat_template is not None else [PLAIN_STOP]
    max_tokens = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
    logprobs = (req.top_logprobs or 0) if req.logprobs else None
    if req.top_logprobs and not req.logprobs:
        raise RequestError("top_logprobs needs logprobs: true", "top_logprobs")
    return _common(req, tokenizer, limits, ids, max_tokens, logprobs, stops, chat_boundaries(tokenizer, messages, ids))


def error_body(message: str, kind: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def describe_validation_error(e) -> tuple[str, str | None]:
    """One readable message and the first offending field from a pydantic ValidationError."""
    msgs, param = [], None
    for err in e.errors()[:5]:
        loc = ".".join(str(x) for x in err.get("loc", ()))
        param = param or (loc or None)
        msgs.append(f"{loc}: {err.get('msg')}" if loc else err.get("msg", ""))
    return "; ".join(msgs), param
