"""Platform set-up, run by `load()` and the CLI (never as a side effect of `import xlstm_mlx`):

- TF32: MLX's CUDA backend runs float32 matmuls as TF32 (10-bit mantissa) unless MLX_ENABLE_TF32=0 is in the
  environment before its first matmul. Our float32 paths (the parity profile, the float32 lm_head and gate
  projections of the fast profile) mean float32: measured on an H100, TF32 put an official [7:1] stack 0.2 off
  the canonical logits, full float32 6e-5. `setup()` sets MLX_ENABLE_TF32=0 unless the user set it.
- Linux CPU BLAS: MLX's Linux wheel links a reference BLAS; blas.py redirects it to OpenBLAS (docs/cpu-blas.md).

`describe()` reports the *effective* state: TF32 is probed with a float32 matmul whose result TF32 would
round, the BLAS by what blas.setup() found, not by what the environment asks for.
"""

from __future__ import annotations

import os

import mlx.core as mx

from xlstm_mlx.platform import blas

_done = False
_tf32: bool | None = None


def setup() -> None:
    """Idempotent: the TF32 default, then the CPU BLAS redirection."""
    global _done
    if _done:
        return
    os.environ.setdefault("MLX_ENABLE_TF32", "0")
    blas.setup()
    _done = True


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
