"""Batch-first cache surgery for continuous batching (models/cache.py: every state array has batch first).

Rows are independent: joining, dropping or copying rows moves their state arrays and recomputes nothing.
A cache's `offset` counts tokens of a whole batch and means nothing per row here; it is left at 0.
"""

from __future__ import annotations

from typing import Sequence

import mlx.core as mx

from xlstm_mlx.models.cache import Cache


def join(caches: Sequence[Cache]) -> Cache:
    """One cache holding the rows of `caches` in order."""
    caches = [c for c in caches if c is not None and c.batch_size > 0]
    if len(caches) == 1:
        return caches[0]
    n_layers = len(caches[0].layers)
    layers = [tuple(mx.concatenate([c.layers[i][j] for c in caches], axis=0)
                    for j in range(len(caches[0].layers[i])))
              for i in range(n_layers)]
    return Cache(layers, sum(c.batch_size for c in caches))


def keep(cache: Cache, rows: Sequence[int]) -> Cache | None:
    """The cache restricted to `rows` (in that order); None when no row is left."""
    if not rows:
        return None
    if list(rows) == list(range(cache.batch_size)):
        return cache
    idx = mx.array(list(rows), dtype=mx.int32)
    return Cache([tuple(a[idx] for a in layer) for layer in cache.layers], len(rows))


def row(cache: Cache, b: int) -> Cache:
    """A one-row copy of row `b` (arrays are immutable: sharing is safe)."""
    return Cache([tuple(a[b : b + 1] for a in layer) for layer in cache.layers], 1)


def nbytes(cache: Cache) -> int:
    return sum(a.nbytes for a in cache.arrays())
