"""Prefix-state cache: recurrent states keyed by the exact tokens they have consumed, LRU, bounded in bytes.

A recurrent state is constant-size whatever the context, so one entry serves any prefix length: when a stored
key is a prefix of a new prompt, the prompt starts from that state and only the rest is prefilled. The key must
be a *proper* prefix (at least one prompt token is left to feed, since the first sampled token needs its logits).

Values are opaque to this module (the engine stores one-row caches); `nbytes` is given by the caller. It is
touched by the engine thread only, so it needs no lock; `stats()` returns plain ints for other threads.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Sequence


class PrefixStateCache:
    def __init__(self, max_bytes: int):
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
            raise ValueError(f"max_bytes must be an integer >= 0, got {max_bytes!r}")
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[int, ...], tuple[Any, int]] = OrderedDict()
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, tokens: Sequence[int], state: Any, nbytes: int) -> bool:
        """Store `state` as having consumed `tokens`; False when it does not fit at all (or tokens is empty)."""
        key = tuple(tokens)
        if not key or nbytes > self.max_bytes:
            return False
        old = self._entries.pop(key, None)
        if old is not None:
            self.bytes -= old[1]
        self._entries[key] = (state, nbytes)
        self.bytes += nbytes
        while self.bytes > self.max_bytes:
            _, (_, freed) = self._entries.popitem(last=False)
            self.bytes -= freed
            self.evictions += 1
        return True

    def longest_prefix(self, prompt: Sequence[int]) -> tuple[int, Any]:
        """(n, state) for the longest stored key that is a proper prefix of `prompt`, else (0, None)."""
        prompt = tuple(prompt)
        best_key = None
        for key in self._entries:
            n = len(key)
            if n < len(prompt) and (best_key is None or n > len(best_key)) and prompt[:n] == key:
                best_key = key
        if best_key is None:
            self.misses += 1
            return 0, None
        self._entries.move_to_end(best_key)
        self.hits += 1
        return len(best_key), self._entries[best_key][0]

    def clear(self) -> None:
        self._entries.clear()
        self.bytes = 0

    def stats(self) -> dict[str, int]:
        return {"entries": len(self._entries), "bytes": self.bytes, "max_bytes": self.max_bytes,
                "hits": self.hits, "misses": self.misses, "evictions": self.evictions}
