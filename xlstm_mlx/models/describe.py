"""Small text helpers shared by the families' `diagram()` (what `xlstm-mlx info` draws)."""

from __future__ import annotations

from itertools import groupby


def runs(types: list[str]) -> list[tuple[str, int, int]]:
    """Consecutive runs of equal block types: (type, first index, last index)."""
    out, i = [], 0
    for t, group in groupby(types):
        n = len(list(group))
        out.append((t, i, i + n - 1))
        i += n
    return out


def blocks_line(t: str, first: int, last: int) -> str:
    where = f"block {first}" if first == last else f"blocks {first}-{last} ({last - first + 1}x)"
    return f"{where} {t}"
