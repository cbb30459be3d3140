"""Batch-first cache surgery for continuous batching (models/cache.py: every state array has batch first).

Rows are independent: joining, dropping or copying rows moves their state arrays and recomputes nothing.
A cache's `offset` counts tokens of a whole batch and means nothing per row here; it is left at 0.
RowState adds what the batched sampler carries per row (keys, token history) and moves it with the state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import mlx.core as mx

from xlstm_mlx.generation.batch_sample import join_histories
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


@dataclass
class RowState:
    """Everything a batch's rows carry from step to step on the device, batch-first: the recurrent state, each
    row's sampler key [B, 2] and its token history [B, W] (None while no row has a repetition penalty)."""

    cache: Cache
    keys: mx.array
    history: mx.array | None = None

    @property
    def batch_size(self) -> int:
        return self.cache.batch_size

    def arrays(self) -> list[mx.array]:
        return self.cache.arrays() + [self.keys] + ([self.history] if self.history is not None else [])


def join_states(states: Sequence[RowState]) -> RowState:
    states = [s for s in states if s is not None and s.batch_size > 0]
    if len(states) == 1:
        return states[0]
    return RowState(join([s.cache for s in states]), mx.concatenate([s.keys for s in states], axis=0),
                    join_histories([s.history for s in states], [s.batch_size for s in states]))


def keep_state(state: RowState, rows: Sequence[int]) -> RowState | None:
    if not rows:
        return None
    if list(rows) == list(range(state.batch_size)):
        return state
    idx = mx.array(list(rows), dtype=mx.int32)
    return RowState(keep(state.cache, rows), state.keys[idx], None if state.history is None else state.history[idx])


def state_row(state: RowState, b: int) -> RowState:
    return RowState(row(state.cache, b), state.keys[b : b + 1],
                    None if state.history is None else state.history[b : b + 1])
