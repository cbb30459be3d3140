"""Data-parallel training over the launched ranks (mlx.launch -n K ... xlstm-mlx train ...).

--batch-size stays the GLOBAL batch: every rank draws the same global batch (WindowSampler depends only on
seed and step), keeps rows [r*B/K, (r+1)*B/K), and the gradients of the K local mean losses are averaged
(nn.average_gradients). Equal shares make that average the gradient of the global mean loss, so the
trajectory is the one process's (up to float rounding in the sums). Clipping, AdamW and the schedule then
run identically on every rank, and the weights stay the same everywhere without being exchanged.

Rank 0 alone writes checkpoints, logs, plots and train_summary.json, and alone reads a run to resume: its
weights, optimizer state and history are broadcast to the other ranks, so OUT need not be on a shared
filesystem and a run saved under one world size resumes under any other (the saved state is global).
"""

from __future__ import annotations

import json

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten, tree_unflatten

from xlstm_mlx.distributed.rank_io import broadcast_text
from xlstm_mlx.errors import UsageError


def check_global_batch(batch_size: int, world_size: int) -> int:
    """The per-rank share of the global batch; an uneven split is an error (the trajectory would change)."""
    if batch_size % world_size:
        raise UsageError(f"--batch-size {batch_size} is the global batch and must be divisible by the "
                         f"{world_size} ranks (each rank takes an equal share); use a multiple of {world_size}")
    return batch_size // world_size


def local_rows(x: np.ndarray, rank: int, world_size: int) -> np.ndarray:
    """This rank's share of a global batch [B, ...]."""
    b = x.shape[0] // world_size
    return x[rank * b : (rank + 1) * b]


def broadcast_tree(tree, group):
    """Rank 0's arrays on every rank, for a tree whose structure only rank 0 needs to know (the others may
    hold a different or empty tree): the names, shapes and dtypes travel as JSON, then each array by all_sum."""
    if group.size() == 1:
        return tree
    flat = dict(tree_flatten(tree)) if group.rank() == 0 else {}
    spec = json.loads(broadcast_text(json.dumps([[k, list(v.shape), str(v.dtype)] for k, v in flat.items()])
                                     if group.rank() == 0 else None, group))
    dtypes = {str(getattr(mx, n)): getattr(mx, n) for n in ("float32", "float16", "bfloat16", "int32", "int64",
                                                             "uint32", "uint64", "uint8", "int8")}
    out = []
    for name, shape, dt in spec:
        if dt not in dtypes:
            raise UsageError(f"cannot broadcast {name}: dtype {dt}")
        a = flat[name] if group.rank() == 0 else mx.zeros(shape, dtype=dtypes[dt])
        out.append((name, mx.distributed.all_sum(a, group=group)))  # zeros elsewhere: rank 0's value
    mx.eval([a for _, a in out])
    return tree_unflatten(out)


def broadcast_json(obj, group):
    if group.size() == 1:
        return obj
    return json.loads(broadcast_text(json.dumps(obj) if group.rank() == 0 else None, group))

