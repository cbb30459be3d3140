"""Multi-turn chat on the carried recurrent state.

A recurrent model never re-reads the conversation: each turn feeds only the text the conversation grew by
(the rendered conversation minus the text the state has already consumed) and the reply is generated on top.
The conversation is rendered with the checkpoint's chat template when it has one, else with a plain
transcript ("User: ...\\nAssistant:...", stopping at "\\nUser:").

If the rendered conversation does not start with the consumed text (a template that rewrites earlier turns,
e.g. one that strips the assistant's reply), the state is rebuilt from the whole conversation, which is
correct but costs a full prefill; `rebuilds` counts those.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator, TextIO

import mlx.core as mx

from xlstm_mlx.generation.generate import GenerationResponse, make_sampling, prefill, stream_generate
from xlstm_mlx.generation.snapshot import load_snapshot, save_snapshot
from xlstm_mlx.errors import UsageError, XLSTMError
from xlstm_mlx.textinput import clean_text

PLAIN_STOP = "\nUser:"


def render_plain(messages: list[dict], add_generation_prompt: bool) -> str:
    parts = []
    for m in messages:
        role, content = m["role"], m.get("content", "")
        if role == "system":
            parts.append(f"{content}\n\n")
        elif role == "user":
            parts.append(f"User: {content}\n")
        elif role == "assistant":
            parts.append(f"Assistant:{content}\n")
        else:
            raise UsageError(f"the plain chat format knows roles system/user/assistant, got {role!r}")
    if add_generation_prompt:
        parts.append("Assistant:")
    return "".join(parts)


class ChatSession:
    def __init__(self, model, tokenizer, system: str | None = None, max_tokens: int = 512, stop=None,
                 prefill_step_size: int = 2048, progress: bool = False, **sampling):
        if tokenizer is None:
            raise UsageError("chat needs a tokenizer (the checkpoint has no tokenizer.json)")
        self.model, self.tokenizer = model, tokenizer
        self.system = system
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise UsageError(f"max_tokens must be an integer >= 1 for chat, got {max_tokens!r}")
        self.max_tokens = max_tokens
        self.templated = tokenizer.chat_template is not None
        self.stop = ([] if self.templated else [PLAIN_STOP]) + ([stop] if isinstance(stop, str) else list(stop or []))
        self.prefill_step_size = prefill_step_size
        self.progress = progress  # a progress bar on stderr for a long turn's prefill (generate.prefill)
        self.sampler, self.processors = make_sampling(**sampling)
        self.rebuilds = 0
        self.reset()

    def reset(self) -> None:
        """Forget everything: a fresh state, an empty conversation (the system prompt kept)."""
        self.messages = [{"role": "system", "content": self.system}] if self.system else []
        self.preamble = ""  # text consumed before the conversation (a loaded prompt snapshot)
        self.cache = self.model.make_cache(1)
        self.tokens: list[int] = []  # what the state has consumed
        self.consumed_text = ""

    def render(self, add_generation_prompt: bool = True) -> str:
        if self.templated:
            body = self.tokenizer.apply_chat_template(self.messages, add_generation_prompt=add_generation_prompt)
        else:
            body = render_plain(self.messages, add_generation_prompt)
        return self.preamble + body

    def _checkpoint(self) -> tuple:
        """What a turn changes, to put back if it is interrupted before the reply starts."""
        return (list(self.cache.layers), self.cache.offset, self.cache, list(self.tokens), self.consumed_text,
                [dict(m) for m in self.messages], self.preamble, self.rebuilds)

    def _restore(self, saved: tuple) -> None:
        layers, offset, self.cache, self.tokens, self.consumed_text, self.messages, self.preamble, \
            self.rebuilds = saved
        self.cache.layers[:], self.cache.offset = layers, offset

    def send(self, text: str) -> Iterator[GenerationResponse]:
        """Add a user turn and stream the reply; the state carries over to the next turn.

        Stopped early (the generator closed, Ctrl-C, an error), the session stays consistent: a reply that had
        begun is kept as far as it went (the state holds exactly its text); a turn stopped before its first
        token is taken back entirely (state, tokens and messages as before the turn)."""
        saved = self._checkpoint()
        self.messages.append({"role": "user", "content": text})
        full = self.render(True)
        if self.tokens and not full.startswith(self.consumed_text):
            self.rebuilds += 1
            self.cache, self.tokens, self.consumed_text = self.model.make_cache(1), [], ""
            if self.preamble:  # the preamble's text cannot be re-tokenized faithfully: keep only the chat
                self.preamble = ""
                full = self.render(True)
        delta = full[len(self.consumed_text):]
        ids = self.tokenizer.encode(delta, add_special_tokens=not self.tokens and not self.templated)
        start = self.cache.offset
        generated, pieces = [], []
        finished = False
        try:
            for r in stream_generate(
                self.model, self.tokenizer, ids, self.max_tokens, cache=self.cache, stop=self.stop,
                sampler=self.sampler, logits_processors=self.processors, prefill_step_size=self.prefill_step_size,
                progress=self.progress,
            ):
                generated.append(r.token)
                pieces.append(r.text)
                yield r
            finished = True
        finally:
            # the state consumed the delta and the generated tokens but (normally) the last, see generate.py; an
            # interruption can land on either side of that, so the cache's own count decides
            fed = self.cache.offset - start - len(ids)
            if not finished and (not generated or not 0 <= fed <= len(generated)):
                self._restore(saved)
            else:
                fed = len(generated) - 1 if finished else fed
                self.tokens += ids + generated[:fed]
                self.consumed_text = full + self.tokenizer.decode(generated[:fed])
                self.messages.append({"role": "assistant", "content": self.tokenizer.decode(generated[:fed])
                                      if not finished else "".join(pieces)})

    def save(self, path: str | Path) -> Path:
        extra = {
            "chat_messages": json.dumps(self.messages, ensure_ascii=False),
            "chat_consumed_text": self.consumed_text,
            "chat_preamble": self.preamble,
        }
        return save_snapshot(path, self.model, self.cache, self.tokens, [], extra)

    def load(self, path: str | Path) -> None:
        """Resume a chat saved with save(), or start a chat on top of a prompt snapshot (generate --save-state)."""
        snap = load_snapshot(path, self.model)
        if snap.cache.batch_size != 1:
            raise UsageError(f"{path} holds a batch of {snap.cache.batch_size} states; chat needs one")
        tokens = snap.tokens + snap.pending
        if snap.pending:
            prefill(self.model, _as_batch(snap.pending), snap.cache, None, self.prefill_step_size)
        self.cache, self.tokens = snap.cache, tokens
        if "chat_messages" in snap.metadata:
            self.messages = json.loads(snap.metadata["chat_messages"])
            self.consumed_text = snap.metadata.get("chat_consumed_text", "")
            self.preamble = snap.metadata.get("chat_preamble", "")
        else:
            self.messages = [{"role": "system", "content": self.system}] if self.system else []
            self.preamble = self.tokenizer.decode(tokens)
            self.consumed_text = self.preamble


def _as_batch(ids: list[int]) -> mx.array:
    return mx.array([ids], dtype=mx.int32)


HELP = "commands: /reset (forget the conversation), /save FILE, /load FILE, /help, /quit"


def run_chat(session: ChatSession, stdin: TextIO, stdout: TextIO, stderr: TextIO, interactive: bool,
             verbose: bool = False) -> int:
    """The REPL: one user turn per line; replies to stdout, notices to stderr."""
    from xlstm_mlx.generation.generate import format_stats

    if interactive:
        print(f"[chat] {HELP}", file=stderr)
    if not session.templated:
        print(f"[chat] this model has no chat template; the conversation is a plain transcript "
              f"('User: ...' / 'Assistant: ...')", file=stderr)
    while True:
        try:
            if interactive:
                line = input(">> ")  # readline's line editing and history where the CLI could import it
            else:
                line = stdin.readline()
                if not line:
                    return 0
        except EOFError:  # Ctrl-D at the prompt
            stdout.write("\n")
            return 0
        except KeyboardInterrupt:  # Ctrl-C at the prompt: leave
            stdout.write("\n")
            return 0
        line = clean_text(line.rstrip("\r\n"), "the chat input")
        if not line.strip():
            continue
        if line.startswith("/"):
            cmd, _, arg = line.partition(" ")
            arg = arg.strip()
            if cmd in ("/quit", "/exit"):
                return 0
            if cmd == "/help":
                print(HELP, file=stderr)
            elif cmd == "/reset":
                session.reset()
                print("[chat] conversation reset", file=stderr)
            elif cmd in ("/save", "/load"):
                if not arg:
                    print(f"[chat] usage: {cmd} FILE", file=stderr)
                    continue
                try:
                    if cmd == "/save":
                        session.save(arg)
                        print(f"[chat] saved the state ({len(session.tokens)} tokens) to {arg}", file=stderr)
                    else:
                        session.load(arg)
                        print(f"[chat] loaded {arg} ({len(session.tokens)} tokens)", file=stderr)
                except (OSError, XLSTMError) as e:  # a bad path or snapshot: say so, keep the session
                    print(f"[chat] {cmd} failed: {e}", file=stderr)
            else:
                print(f"[chat] unknown command {cmd}; {HELP}", file=stderr)
            continue
        last = None
        reply = session.send(line)
        try:
            for last in reply:
                stdout.write(last.text)
                stdout.flush()
        except KeyboardInterrupt:  # Ctrl-C during a reply: stop it, keep the conversation
            reply.close()
            stdout.write("\n")
            print("[chat] reply stopped (Ctrl-C); the conversation goes on (Ctrl-C at the prompt or /quit "
                  "leaves)", file=stderr)
            last = None
        stdout.write("\n")
        stdout.flush()
        if verbose and last is not None:
            print(format_stats(last), file=stderr)
