"""Cache: the recurrent state of every block, float32, advanced in place by model(ids, cache=cache).

Unlike a transformer's KV cache it does not grow with the context: for xLSTM-7B it is ~134 MB per
sequence whatever the length.
"""

from __future__ import annotations

import mlx.core as mx
from xlstm_mlx.errors import UsageError


class Cache:
    def __init__(self, layers: list, batch_size: int):
        self.layers = layers  # per block: a tuple of float32 arrays (mLSTM: C, n, m)
        self.batch_size = batch_size
        self.offset = 0  # tokens consumed so far

    def arrays(self) -> list[mx.array]:
        return [a for layer in self.layers for a in layer]

    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays())

    def copy(self) -> "Cache":
        c = Cache([tuple(layer) for layer in self.layers], self.batch_size)  # arrays are immutable
        c.offset = self.offset
        return c

    def state_dict(self) -> dict[str, mx.array]:
        return {f"layers.{i}.{j}": a for i, layer in enumerate(self.layers) for j, a in enumerate(layer)}

    def load_state_dict(self, tensors: dict[str, mx.array]) -> None:
        for i, layer in enumerate(self.layers):
            new = []
            for j, a in enumerate(layer):
                key = f"layers.{i}.{j}"
                if key not in tensors:
                    raise UsageError(f"state has no tensor {key!r}")
                if tuple(tensors[key].shape) != tuple(a.shape):
                    raise UsageError(f"state tensor {key!r} has shape {tuple(tensors[key].shape)}, "
                                     f"this model's cache needs {tuple(a.shape)}")
                new.append(tensors[key].astype(a.dtype))
            self.layers[i] = tuple(new)

