"""xlstm-mlx: run xLSTM language models with MLX on Metal, CUDA and CPU."""

# Before anything runs on the CPU: give MLX's Linux wheel a fast BLAS (docs/cpu-blas.md).
from . import _blas

_blas.setup()

from .generate import batch_generate, generate, stream_generate
from .loading import load
from .model import Model
from .profiles import NumericsProfile, load_profile

__all__ = ["load", "generate", "stream_generate", "batch_generate", "Model", "NumericsProfile", "load_profile"]
__version__ = "0.1.0"
