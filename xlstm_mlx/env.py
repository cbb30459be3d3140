"""The one parser of every XLSTM_MLX_* environment switch.

    switch                        default  meaning
    XLSTM_MLX_REFERENCE_KERNELS   off      run the reference form of every kernel (kernels/__init__.py)
    XLSTM_MLX_COMPILE_DECODE      on       compile the one-token decode step (models/compiled.py)
    XLSTM_MLX_QUANT_GEMV          on       the CUDA quantized GEMV for few rows (kernels/quant_matmul.py)
    XLSTM_MLX_GEMV_ADD_NORM       on       the residual add + RMSNorm after a quantized GEMV in that GEMV's launch
                                           (its last block: kernels/quant_gemv.py, the add-norm tail); off: its
                                           own norm.add_rms launch (for A/B timing)
    XLSTM_MLX_BF16_GEMV           off      the CUDA bf16 GEMV for few rows, where the H200 lab timed it faster than
                                           MLX's matmul (kernels/skinny_gemm.py; off by default: not faster end to
                                           end yet, kernels/bf16_gemv.py); off: MLX's matmul everywhere
    XLSTM_MLX_CHUNKWISE_CUDA      on       the fused CUDA chunkwise prefill kernels (kernels/mlstm_chunkwise_cuda.py);
                                           off: the MLX-ops chunk scan (for A/B timing)
    XLSTM_MLX_VERBOSE             off      print what the platform set-up did (the CPU BLAS) to stderr
    XLSTM_MLX_BLAS                auto     CPU BLAS for MLX's Linux wheel: auto | off | system | a path
                                           (platform/blas.py; not a true/false switch)
    XLSTM_MLX_BLAS_THREADS        auto     OpenBLAS threads: auto (one thread on <= 2 cores) or a count
    XLSTM_MLX_SKINNY_SGEMM        on       products with few rows (decode) through the streaming kernel;
                                           off: OpenBLAS' sgemm for every call (platform/skinny.py)
    XLSTM_MLX_SGEMM_K_BLOCKS      on       the other (many-row) float32 products summed in up to 16 K-blocks
                                           (more accurate); off: the library's own sum (platform/skinny_sgemm.c)
    XLSTM_MLX_CPU_CACHE_MB        auto     MLX's buffer-cache limit on a CPU-only build, in MiB: auto (a quarter of
                                           the physical memory unless MLX's is higher) or a number (platform/__init__.py)
    XLSTM_MLX_TEST_DEVICE         cpu      the device the test suite runs on: cpu | gpu (tests/conftest.py)

True is any of 1, true, yes, on; false is any of 0, false, no, off or the empty string (case and
surrounding spaces ignored). Any other value is an error that names the variable, not a silent guess.
"""

from __future__ import annotations

import contextlib
import os

from xlstm_mlx.errors import UsageError

TRUE = frozenset({"1", "true", "yes", "on"})
FALSE = frozenset({"0", "false", "no", "off", ""})

SWITCHES = {
    "XLSTM_MLX_REFERENCE_KERNELS": False,
    "XLSTM_MLX_COMPILE_DECODE": True,
    "XLSTM_MLX_QUANT_GEMV": True,
    "XLSTM_MLX_GEMV_ADD_NORM": True,
    "XLSTM_MLX_DECODE_LAYER": True,
    "XLSTM_MLX_BF16_GEMV": False,
    "XLSTM_MLX_CHUNKWISE_CUDA": True,
    "XLSTM_MLX_VERBOSE": False,
    "XLSTM_MLX_SKINNY_SGEMM": True,
    "XLSTM_MLX_SGEMM_K_BLOCKS": True,
}


def flag(name: str) -> bool:
    """The value of an on/off switch: its default when unset, else the parsed value."""
    if name not in SWITCHES:
        raise KeyError(f"{name} is not a documented XLSTM_MLX_* switch (known: {sorted(SWITCHES)})")
    raw = os.environ.get(name)
    if raw is None:
        return SWITCHES[name]
    value = raw.strip().lower()
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    raise UsageError(f"environment variable {name}={raw!r} is neither true (1, true, yes, on) nor false "
                     "(0, false, no, off, empty); set one of those or unset it")


def choice(name: str, default: str) -> str:
    """A switch that names a choice (e.g. XLSTM_MLX_BLAS): its stripped value, or `default` when unset."""
    raw = os.environ.get(name)
    return default if raw is None or not raw.strip() else raw.strip()


class Setting:
    """A process-wide setting that a `with setting.override(value):` block changes and then restores (the one
    shape of every such switch: forced reference kernels, projection fusing, ...)."""

    def __init__(self, value=None):
        self.value = value

    @contextlib.contextmanager
    def override(self, value):
        previous, self.value = self.value, value
        try:
            yield
        finally:
            self.value = previous
