"""Platform set-up, run by `load()` and the CLI (never as a side effect of `import xlstm_mlx`):

- TF32: MLX's CUDA backend runs float32 matmuls as TF32 (10-bit mantissa) unless MLX_ENABLE_TF32=0 is in the
  environment before its first matmul. Our float32 paths (the parity profile, the float32 lm_head and gate
  projections of the fast profile) mean float32: measured on an H100, TF32 put an official [7:1] stack 0.2 off
  the canonical logits, full float32 6e-5. `setup()` sets MLX_ENABLE_TF32=0 unless the user set it.
- Linux CPU BLAS: MLX's Linux wheel links a reference BLAS; blas.py redirects it to OpenBLAS (docs/cpu-blas.md).
- MLX's buffer cache on a CPU-only build: MLX keeps freed buffers for reuse only up to its cache limit, 32 MiB by
  default there (its GPU backends default to about the whole memory). A forward whose transient buffers exceed it
  hands the rest back to the operating system and page-faults fresh memory for them at the next allocation: on the
  2-core Intel VM ~3.6 us a 4 KB page, 13,074 faults (~47 ms) a 2,048-token 64m prefill, 3,720 a 512-token one
  (docs/bench.md "CPU, 2026-12-03 session 13"). `setup()` raises the limit to a quarter of the physical memory
  (never lowers it; XLSTM_MLX_CPU_CACHE_MB sets it in MiB instead). The cache holds only buffers a computation
  freed, so what it keeps is at most the transients' peak, which the computation reached anyway.

`describe()` reports the *effective* state: TF32 is probed with a float32 matmul whose result TF32 would
round, the BLAS by what blas.setup() found, not by what the environment asks for.
"""

from __future__ import annotations

import os

import mlx.core as mx

from xlstm_mlx import env
from xlstm_mlx.errors import UsageError
from xlstm_mlx.platform import blas

_done = False
_tf32: bool | None = None
_cache: dict = {"changed": False, "reason": "not set up"}


def setup() -> None:
    """Idempotent: the TF32 default, then the CPU BLAS redirection and MLX's CPU buffer-cache limit."""
    global _done
    if _done:
        return
    os.environ.setdefault("MLX_ENABLE_TF32", "0")
    blas.setup()
    set_cpu_cache_limit()
    _done = True


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def set_cpu_cache_limit() -> dict:
    """On a build whose only device is the CPU: MLX's buffer-cache limit to XLSTM_MLX_CPU_CACHE_MB MiB, or (auto, the
    default) to a quarter of the physical memory unless it is higher already. Returns `cache_info()`."""
    global _cache
    if mx.metal.is_available() or mx.cuda.is_available():
        _cache = {"changed": False, "reason": "a GPU backend: MLX's own allocator default"}
        return dict(_cache)
    raw = env.choice("XLSTM_MLX_CPU_CACHE_MB", "auto")
    if raw.lower() == "auto":
        ram = _physical_memory()
        previous = mx.set_cache_limit(0)
        target = max(previous, ram // 4) if ram else previous
        why = "a quarter of the physical memory" if ram and target > previous else "MLX's limit (higher already)"
    else:
        try:
            mib = int(raw)
        except ValueError:
            mib = -1
        if mib < 0:
            raise UsageError(f"XLSTM_MLX_CPU_CACHE_MB={raw!r} is neither auto nor a whole number of MiB (>= 0)")
        previous, target, why = mx.set_cache_limit(0), mib << 20, "XLSTM_MLX_CPU_CACHE_MB"
    mx.set_cache_limit(target)
    _cache = {"changed": target != previous, "limit": target, "previous": previous, "reason": why}
    blas._say(f"MLX CPU buffer cache limit {previous / 2**20:.0f} -> {target / 2**20:.0f} MiB ({why})")
    return dict(_cache)


def cache_info() -> dict:
    """What `setup()` did to MLX's buffer-cache limit: {'changed', 'limit', 'previous', 'reason'}."""
    return dict(_cache)


def tf32_active() -> bool | None:
    """Whether float32 matmuls on the GPU run as TF32 right now (None off CUDA). Probed once, on the GPU."""
    global _tf32
    if not (mx.default_device().type == mx.gpu and mx.cuda.is_available()):
        return None
    if _tf32 is None:
        # 1 + 2^-11 is exact in float32 but not in TF32 (10 mantissa bits): times the identity it survives only
        # a true float32 matmul
        a = mx.full((64, 64), 1.0 + 2.0**-11, mx.float32)
        _tf32 = bool((a @ mx.eye(64, dtype=mx.float32))[0, 0].item() != 1.0 + 2.0**-11)
    return _tf32


def describe() -> str:
    dev = mx.default_device()
    if dev.type == mx.gpu:
        if not mx.cuda.is_available():
            return "metal"
        return "cuda (float32 matmuls: TF32)" if tf32_active() else "cuda (float32 matmuls: full float32)"
    b = blas.info()
    if b["active"]:
        sk = b.get("skinny", {})
        path = f"skinny sgemm {sk.get('isa')}" if sk.get("active") else "no skinny sgemm"
        return f"cpu (BLAS: {b['library']}, core {b.get('core')}, {b.get('threads')} threads, {path})"
    return f"cpu (BLAS: MLX's bundled reference BLAS, slow: {b['reason']}; see docs/cpu-blas.md)"
