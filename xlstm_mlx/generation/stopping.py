"""Stop strings over streamed text: the stop string and what follows are never emitted.

Text is held back only while it could still be the start of a stop string, so streaming stays as prompt as it
can be: `feed(piece)` returns what is safe to show and whether a stop string was completed.
"""

from __future__ import annotations

from typing import Sequence
from xlstm_mlx.errors import UsageError


def check_stop_strings(stop: str | Sequence[str] | None) -> list[str]:
    if stop is None:
        return []
    items = [stop] if isinstance(stop, str) else list(stop)
    for s in items:
        if not isinstance(s, str) or s == "":
            raise UsageError(f"stop strings must be non-empty strings, got {s!r}")
    return items


class StopStringFilter:
    def __init__(self, stop: str | Sequence[str] | None):
        self.stop = check_stop_strings(stop)
        self._held = ""
        self.stopped = False

    def feed(self, piece: str) -> tuple[str, bool]:
        """Return (text safe to emit, True when a stop string just completed)."""
        if self.stopped:
            return "", True
        text = self._held + piece
        if not self.stop:
            self._held = ""
            return text, False
        cut = min((i for i in (text.find(s) for s in self.stop) if i >= 0), default=-1)
        if cut >= 0:
            self._held = ""
            self.stopped = True
            return text[:cut], True
        keep = 0  # longest suffix of text that is a proper prefix of some stop string
        for s in self.stop:
            for n in range(min(len(s) - 1, len(text)), keep, -1):
                if text.endswith(s[:n]):
                    keep = n
                    break
        self._held = text[len(text) - keep :] if keep else ""
        return text[: len(text) - keep], False

    def flush(self) -> str:
        """At the end of generation, the held text was not a stop string after all."""
        held, self._held = self._held, ""
        return "" if self.stopped else held
