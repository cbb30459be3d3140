"""The process group of a launched run: one `mx.distributed.init`, rank and size, and the few collectives
the commands need beyond gradient and activation all-reduces (a barrier, a broadcast of a small integer).

Which backend runs is the launcher's choice, not ours: `mlx.launch --backend ring|nccl|jaccl|mpi` sets the
environment (MLX_RANK + MLX_HOSTFILE for ring, NCCL_HOST_IP/NCCL_PORT/MLX_WORLD_SIZE for NCCL, ...) and
`mx.distributed.init(backend="any")` takes the first backend whose environment is there. A process that
was not launched gets MLX's one-member group, on which every collective is the identity.
"""

from __future__ import annotations

import os

import mlx.core as mx

from xlstm_mlx.errors import UsageError

# Variables a launcher sets in every rank (mlx.launch for ring/NCCL/JACCL, mpirun for MPI).
_LAUNCH_VARS = ("MLX_RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK")

_GROUP = None


def launched() -> bool:
    """True if this process is one rank of a launched run (mlx.launch, mpirun or a manual MLX_RANK launch)."""
    return any(v in os.environ for v in _LAUNCH_VARS)


def world():
    """The global group, initialised on first use. A launched rank that cannot join its group is an error
    (strict init), never a silent single-process run that would duplicate every row."""
    global _GROUP
    if _GROUP is None:
        if launched():
            try:
                _GROUP = mx.distributed.init(strict=True, backend="any")
            except RuntimeError as e:
                raise UsageError(f"this process was launched as a rank ({_launch_var()}) but could not join "
                                 f"its group: {e}. Check the hostfile and that every rank was started") from None
        else:
            _GROUP = mx.distributed.init(strict=False)
    return _GROUP


def _launch_var() -> str:
    return next(f"{v}={os.environ[v]}" for v in _LAUNCH_VARS if v in os.environ)


def rank() -> int:
    return world().rank()


def size() -> int:
    return world().size()


def barrier(group=None) -> None:
    """Wait until every rank gets here: a one-element all_sum, evaluated."""
    group = group or world()
    if group.size() > 1:
        mx.eval(mx.distributed.all_sum(mx.array([1.0], dtype=mx.float32), group=group))


def all_sum_int(value: int, group=None) -> int:
    """The sum over ranks of one integer per rank (int64, exact)."""
    group = group or world()
    if group.size() == 1:
        return int(value)
    return int(mx.distributed.all_sum(mx.array([int(value)], dtype=mx.int64), group=group).item())


def broadcast_int(value: int | None, group=None) -> int:
    """Rank 0's integer on every rank (other ranks' values are ignored)."""
    group = group or world()
    if group.size() == 1:
        return int(value)
    return all_sum_int(int(value) if group.rank() == 0 else 0, group)


def describe(group=None) -> str:
    group = group or world()
    if group.size() == 1:
        return "one process (not launched)"
    return f"rank {group.rank()} of {group.size()} (mx.distributed, backend chosen by the launcher)"
