"""xlstm-mlx: run xLSTM language models with MLX on Metal, CUDA and CPU."""

import os as _os

# MLX's CUDA backend runs float32 matmuls as TF32 (10-bit mantissa) unless MLX_ENABLE_TF32=0 is in the
# environment when MLX starts. Our float32 paths (the parity profile, the float32 lm_head and gate
# projections of the fast profile) mean float32: measured on an H100, TF32 put an official [7:1] stack
# 0.2 off the canonical logits, full float32 6e-5. A value the user set explicitly wins.
_os.environ.setdefault("MLX_ENABLE_TF32", "0")

# Before anything runs on the CPU: give MLX's Linux wheel a fast BLAS (docs/cpu-blas.md).
from . import _blas

_blas.setup()

from .generate import batch_generate, generate, stream_generate
from .loading import load
from .model import Model
from .profiles import NumericsProfile, load_profile

__all__ = ["load", "generate", "stream_generate", "batch_generate", "Model", "NumericsProfile", "load_profile"]
__version__ = "0.1.0"
