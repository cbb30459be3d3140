"""xlstm-mlx: run xLSTM language models with MLX on Metal, CUDA and CPU."""

from .loading import load
from .model import Model
from .profiles import NumericsProfile, load_profile

__all__ = ["load", "Model", "NumericsProfile", "load_profile"]
__version__ = "0.1.0"
