"""Hardware floors for `xlstm-mlx bench`: measured memory bandwidth and matmul rate, and the counts
(bytes a decode step must move, FLOPs a prefill token must do) that turn them into best-possible times.

    decode floor  (tok/s) = B / ((weight bytes read + 2 * B * state bytes) / bandwidth)
    prefill floor (tok/s) = matmul rate / FLOPs per token (blocks only: prompt positions get no logits)

The counts come from the model family's cost model (`model.cost()`, models/base.py).
"""

from __future__ import annotations

import time

import mlx.core as mx


def _best_time(fn, min_reps: int = 3, budget_s: float = 1.0) -> float:
    fn()  # warm-up
    times = []
    end = time.perf_counter() + budget_s
    while len(times) < min_reps or (time.perf_counter() < end and len(times) < 100):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def on_gpu() -> bool:
    return mx.default_device().type == mx.gpu


def measure_bandwidth(nbytes: int | None = None) -> dict:
    """Read bandwidth (bytes/s): the better of a full reduction and a matrix-vector product (the decode
    access pattern) over an array far larger than the caches."""
    nbytes = nbytes or ((2 << 30) if on_gpu() else (512 << 20))
    n = nbytes // 4
    x = mx.random.uniform(shape=(n,), dtype=mx.float32)
    rows = 8192
    w = x[: (n // rows) * rows].reshape(rows, -1)
    v = mx.random.uniform(shape=(w.shape[1], 1), dtype=mx.float32)
    mx.eval(x, w, v)
    t_sum = _best_time(lambda: mx.eval(mx.sum(x)))
    t_mv = _best_time(lambda: mx.eval(w @ v))
    bw_sum, bw_mv = n * 4 / t_sum, w.size * 4 / t_mv
    del x, w, v
    return {"bytes_per_s": max(bw_sum, bw_mv), "sum_bytes_per_s": bw_sum, "matvec_bytes_per_s": bw_mv,
            "array_bytes": nbytes}


def measure_matmul_rate(dtype=mx.float32, n: int | None = None) -> dict:
    """Dense n x n matmul rate (FLOP/s) in `dtype`."""
    n = n or (8192 if on_gpu() else 2048)
    a = mx.random.normal((n, n)).astype(dtype)
    b = mx.random.normal((n, n)).astype(dtype)
    mx.eval(a, b)
    t = _best_time(lambda: mx.eval(a @ b))
    return {"flop_per_s": 2 * n**3 / t, "n": n, "dtype": str(dtype).removeprefix("mlx.core.")}


def decode_floor_tok_s(batch: int, read_bytes: int, state_bytes: int, bandwidth: float) -> float:
    return batch / ((read_bytes + 2 * batch * state_bytes) / bandwidth)


def prefill_floor_tok_s(flops_per_token: float, flop_rate: float) -> float:
    return flop_rate / flops_per_token
