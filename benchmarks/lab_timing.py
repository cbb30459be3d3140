"""What the GPU kernel labs share (benchmarks/gpu_quant_lab.py, benchmarks/gpu_bf16_gemv_lab.py): the relative
error against a float32 reference, chains of dependent calls timed with the weights rotated past the L2, and the
atomic JSON write."""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import mlx.core as mx

MIN_COPIES = 3
ROTATE_BYTES = 128e6  # weight bytes a chain rotates over: twice the H200's L2
MAX_COPIES = 16


def rel_err(out, ref) -> float:
    o, r = out.astype(mx.float32), ref.astype(mx.float32)
    if not bool(mx.all(mx.isfinite(o)).item()):
        return float("nan")
    return float((mx.linalg.norm((o - r).reshape(-1)) / mx.maximum(mx.linalg.norm(r.reshape(-1)), 1e-30)).item())


def copies_for(nbytes: int) -> int:
    return max(MIN_COPIES, min(MAX_COPIES, -(-int(ROTATE_BYTES) // max(nbytes, 1))))


@mx.compile
def _tie(x: mx.array, first: mx.array) -> mx.array:
    return x + (first * 0).astype(x.dtype)


def after(x: mx.array, prev: mx.array) -> mx.array:
    """x again (its values unchanged: prev's first element times 0 is added), but computed from `prev` (any
    shape): a call fed with it cannot start before the call that produced `prev` has ended. One small fused
    kernel, a pass over x: tie the smallest input of a call (rows of x, gates), not a weight."""
    return _tie(x, prev.reshape(-1)[:1])


def _chain(step, x: mx.array, calls: int, reps: int) -> float:
    times = []
    for _ in range(reps):
        xi, outs = x, []
        for i in range(calls):
            y = step(i, xi)
            outs.append(y)
            xi = after(x, y)
        mx.synchronize()
        t = time.perf_counter()
        mx.eval(outs)
        mx.synchronize()
        times.append((time.perf_counter() - t) / calls)
        del outs
    return statistics.median(times)


def chain_time(call, x: mx.array, copies: int, calls: int, reps: int) -> float:
    """Median seconds per call of `call(i, x)` (i picks the weight copy, mod copies) in chains of DEPENDENT calls:
    call i + 1's input is computed from call i's output (`after`), as in a model's decode step, where each matrix
    product waits for the one before. Chains of independent calls overstate a kernel with a small grid: MLX's CUDA
    backend lets independent kernels of one graph run at the same time, so on an H200 MLX's quantized GEMM at 16
    rows (32 blocks for 4,096 outputs) timed 21-37 us in independent chains and 58-180 us in the model's step
    (Nsight). The glue kernel's own time (a chain of `after` alone) is subtracted. Each chain's lazy graph is built
    before the clock starts, so the time is the launches and the kernels, not Python's dispatch."""
    mx.eval([call(i, x) for i in range(copies)])  # warm-up: compile, allocate, touch every copy
    glue = _chain(lambda i, xi: xi, x, calls, reps)
    return max(_chain(call, x, calls, reps) - glue, 1e-9)


def cfg_tag(cfg: dict) -> str:
    return "cfg:R{R}U{U}S{S}K{KSPLIT}W{WARPS}".format(**cfg)


def _err(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"[:400]


def write_json(path: str, out: dict) -> None:
    p = Path(path)
    fd, tmp = tempfile.mkstemp(dir=p.parent if str(p.parent) else ".", prefix=p.name + ".", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(out, indent=1, default=str) + "\n")
    os.replace(tmp, p)
