"""The generation loop's finiteness test of the logits, one scalar per step, beside its reference.

    all_finite(logits, axis=None)      on MLX's CPU backend, for a last axis that is a multiple of 8: max and
                                       min over column blocks of the rows (logits viewed [..., V / k, k]), then
                                       isfinite of the two small results; elsewhere all_finite_ref
    all_finite_ref(logits, axis=None)  mx.all(mx.isfinite(logits), axis=axis)

axis: None (one bool scalar: generate_step) or -1 (one bool a row: the server's batch sampler).

Both give the same answer on every input: a max (or min) over values holding a NaN is NaN (MLX's max and min
propagate NaN), +inf shows in the max and -inf in the min, and the max and min of finite values are finite.
No sum is involved, so no overflow of finite values can make a false alarm.

Why: MLX's Linux CPU build evaluates `isfinite` as a scalar element-wise op and `all` as a row reduction, about
1.4-2.2 ms over the [8, 50,304] logits of a batch-8 step on the 2-core Xeon VM (0.18-0.28 ms at batch 1), 5-9 %
of the step; MLX's reductions over a non-contiguous axis (the column blocks) run vectorized: the max and min
over the same values take ~0.12 ms each (benchmarks/probes/cpu_gen_vs_plain.py; docs/bench.md "CPU, 2026-12-03
session 14"). On Metal and CUDA MLX's reductions are fast and the reference stays in use.
"""

from __future__ import annotations

import mlx.core as mx

from xlstm_mlx.errors import UsageError
from xlstm_mlx.kernels.fastmath import on_cpu

# the column block: the logits [..., V] viewed [..., V / k, k] (the largest k of these dividing V)
BLOCKS = (64, 32, 16, 8)


def all_finite_ref(logits: mx.array, axis: int | None = None) -> mx.array:
    """True where every value (axis None: a bool scalar; -1: one bool a row) is finite."""
    return mx.all(mx.isfinite(logits), axis=axis)


def block(V: int) -> int:
    """The column block for a last axis of V values (0: none applies)."""
    return next((k for k in BLOCKS if V % k == 0), 0)


def applies(logits: mx.array) -> bool:
    return (on_cpu() and logits.ndim >= 1 and logits.size > 0 and mx.issubdtype(logits.dtype, mx.floating)
            and block(logits.shape[-1]) > 0)


def all_finite(logits: mx.array, axis: int | None = None) -> mx.array:
    """all_finite_ref(logits, axis), through vectorized column-block reductions on the CPU (module docstring)."""
    if axis not in (None, -1, logits.ndim - 1):
        raise UsageError(f"all_finite reduces over every axis (None) or the last one (-1), got axis={axis!r}")
    if not applies(logits):
        return all_finite_ref(logits, axis)
    V = logits.shape[-1]
    k = block(V)
    cols = logits.reshape(*logits.shape[:-1], V // k, k)
    ok = mx.isfinite(mx.max(cols, axis=-2)) & mx.isfinite(mx.min(cols, axis=-2))  # [..., k]
    return mx.all(ok) if axis is None else mx.all(ok, axis=-1)


def label() -> str:
    if on_cpu():
        return "max and min over column blocks of the logits (CPU; last axis a multiple of 8, else the reference)"
    return "reference (mx.all(mx.isfinite)): MLX's reductions on this backend"
