"""One row's text: streaming detokenizer + stop strings, with exactly the rules of generate.stream_generate
(an EOS or a stop string ends the row and is never emitted; at max_tokens the pending text is flushed)."""

from __future__ import annotations

from typing import Sequence

from xlstm_mlx.generation.stopping import StopStringFilter


class TextStream:
    def __init__(self, tokenizer, stop: Sequence[str], eos_token_ids: Sequence[int], max_tokens: int):
        self.detok = tokenizer.detokenizer()
        self.stopper = StopStringFilter(list(stop))
        self.eos = frozenset(eos_token_ids)
        self.max_tokens = max_tokens
        self.n = 0  # tokens sampled so far

    def add(self, token: int) -> tuple[str, str | None]:
        """Feed one sampled token: (text safe to emit now, finish reason or None while going on)."""
        self.n += 1
        if token in self.eos:
            text, _ = self.stopper.feed(self.detok.finalize())
            return text + self.stopper.flush(), "stop"
        text, stopped = self.stopper.feed(self.detok.add_token(token))
        if stopped:
            return text, "stop"
        if self.n >= self.max_tokens:
            tail, stopped = self.stopper.feed(self.detok.finalize())
            return text + tail + self.stopper.flush(), "stop" if stopped else "length"
        return text, None
