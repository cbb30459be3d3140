"""Streaming detokenizer: turns token ids into text one token at a time.

Decoding tokens one by one is wrong in two ways: a multi-byte UTF-8 character split across tokens comes out as
U+FFFD halves, and sentencepiece-style decoders drop the leading space of the first token they see ("▁world"
alone decodes to "world"). This detokenizer decodes a short window of recent tokens twice — with and without
the newest tokens — and emits the difference, and only once that difference no longer ends in an incomplete
character (or, for byte-fallback tokenizers, until a run of byte tokens has ended). The window starts at a token boundary that was already emitted completely, so the decoder sees the
same context it would see in a full decode; the cost per token is constant (the window is reset on every
emission).

Invariant (tested): the concatenation of everything emitted plus `finalize()` equals `decode(all ids)` for
byte-level BPE and sentencepiece-style (Metaspace, byte-fallback) tokenizers.
"""

from __future__ import annotations

from typing import Callable, Iterable, Sequence

_REPLACEMENT = "\ufffd"


class StreamingDetokenizer:
    def __init__(
        self, decode: Callable[..., str], skip_special_tokens: bool = True, hold_ids: Iterable[int] = ()
    ):
        self._decode = decode
        self._skip = skip_special_tokens
        # Byte-fallback tokens (<0xNN>): a ByteFallback decoder turns a whole run of them into U+FFFDs when any
        # byte of the run is invalid, so a run is emitted only once it ends (a later token, or finalize()).
        self._hold = frozenset(int(i) for i in hold_ids)
        self.reset()

    def reset(self) -> None:
        self.tokens: list[int] = []
        self.text = ""  # everything emitted so far
        self._prefix = 0  # window start (a complete boundary)
        self._read = 0  # tokens up to here are emitted

    def _window(self, start: int, stop: int | None = None) -> str:
        return self._decode(self.tokens[start:stop], skip_special_tokens=self._skip)

    def add_token(self, token_id: int) -> str:
        """Append one id; return the newly completed text ('' while a character is still incomplete)."""
        self.tokens.append(int(token_id))
        if self.tokens[-1] in self._hold:
            return ""
        prefix_text = self._window(self._prefix, self._read)
        new_text = self._window(self._prefix)
        if new_text.endswith(_REPLACEMENT) or len(new_text) <= len(prefix_text):
            return ""
        if not new_text.startswith(prefix_text):
            # The decoder rewrote earlier text (a normalizing decoder): the suffix rule does not hold, so
            # fall back to a full decode of everything and emit what changed past the text already emitted.
            full = self._decode(self.tokens, skip_special_tokens=self._skip)
            if not full.startswith(self.text):
                return ""
            piece = full[len(self.text) :]
        else:
            piece = new_text[len(prefix_text) :]
        self._prefix, self._read = self._read, len(self.tokens)
        self.text += piece
        return piece

    def add_tokens(self, token_ids: Sequence[int]) -> str:
        return "".join(self.add_token(t) for t in token_ids)

    def finalize(self) -> str:
        """Emit whatever is pending (an incomplete character decodes to U+FFFD, as a full decode would)."""
        if self._read == len(self.tokens):
            return ""
        prefix_text = self._window(self._prefix, self._read)
        new_text = self._window(self._prefix)
        if new_text.startswith(prefix_text):
            piece = new_text[len(prefix_text) :]
        else:
            full = self._decode(self.tokens, skip_special_tokens=self._skip)
            piece = full[len(self.text) :] if full.startswith(self.text) else ""
        self._prefix, self._read = self._read, len(self.tokens)
        self.text += piece
        return piece
