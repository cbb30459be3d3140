"""All recurrence numerics, chosen by name.

Every fast form has a reference with the same signature beside it:

    name        fast                      reference
    step        mlstm_step (mx.compile)   mlstm_step_ref
    chunkwise   mlstm_chunkwise           mlstm_chunkwise_ref (parallel form chunk by chunk)
    sequence    mlstm_sequence            mlstm_sequence (it is the reference for state passing)
    parallel    mlstm_parallel            mlstm_parallel (quadratic; the reference)

`use_reference(True)` (or XLSTM_MLX_REFERENCE_KERNELS=1 in the environment) makes `get` return the
reference of every name: tests use it to check a whole model on the slow, simple path.
"""

import contextlib
import os

from .mlstm_chunkwise import mlstm_chunkwise
from .mlstm_gates import log_sigmoid, mask_gates
from .mlstm_parallel import mlstm_chunkwise_ref, mlstm_parallel
from .mlstm_recurrent import mlstm_sequence, mlstm_step, mlstm_step_ref, zero_state

SEQUENCE_KERNELS = {
    "chunkwise": (mlstm_chunkwise, mlstm_chunkwise_ref),
    "sequence": (mlstm_sequence, mlstm_sequence),
    "parallel": (mlstm_parallel, mlstm_parallel),
}
STEP_KERNELS = {"step": (mlstm_step, mlstm_step_ref)}

_force_reference = os.environ.get("XLSTM_MLX_REFERENCE_KERNELS", "0") not in ("", "0")


def reference_forced() -> bool:
    return _force_reference


@contextlib.contextmanager
def use_reference(enabled: bool = True):
    """Force (or stop forcing) the reference kernels inside a `with` block."""
    global _force_reference
    previous, _force_reference = _force_reference, enabled
    try:
        yield
    finally:
        _force_reference = previous


def _pick(table: dict, name: str, kind: str):
    if name not in table:
        raise ValueError(f"unknown {kind} kernel {name!r}; choose one of {sorted(table)}")
    fast, ref = table[name]
    return ref if _force_reference else fast


def get_sequence_kernel(name: str):
    return _pick(SEQUENCE_KERNELS, name, "sequence")


def get_step_kernel(name: str):
    return _pick(STEP_KERNELS, name, "step")


__all__ = [
    "get_sequence_kernel", "get_step_kernel", "use_reference", "reference_forced", "log_sigmoid",
    "mask_gates", "zero_state", "mlstm_chunkwise", "mlstm_chunkwise_ref", "mlstm_parallel",
    "mlstm_sequence", "mlstm_step", "mlstm_step_ref", "SEQUENCE_KERNELS", "STEP_KERNELS",
]
