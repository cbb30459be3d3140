"""What the GPU kernel labs share (benchmarks/gpu_quant_lab.py, benchmarks/gpu_bf16_gemv_lab.py): the relative
error against a float32 reference, chains of independent calls timed with the weights rotated past the L2, and the
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


def chain_time(call, copies: int, calls: int, reps: int) -> float:
    """Median seconds per call of `call(i)` (i picks the weight copy, mod copies): chains of independent calls.
    Each chain's lazy graph is built before the clock starts, so the time is the launches and the kernels, not
    Python's dispatch (tens of microseconds a call, about a small decode kernel's time)."""
    mx.eval([call(i) for i in range(copies)])  # warm-up: compile, allocate, touch every copy
    times = []
    for _ in range(reps):
        outs = [call(i) for i in range(calls)]
        mx.synchronize()
        t = time.perf_counter()
        mx.eval(outs)
        mx.synchronize()
        times.append((time.perf_counter() - t) / calls)
        del outs
    return statistics.median(times)


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
