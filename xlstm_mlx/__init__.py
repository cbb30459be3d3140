"""xlstm-mlx: run xLSTM language models with MLX on Metal, CUDA and CPU.

Importing the package has no side effects: the platform set-up (TF32 default, Linux CPU BLAS) runs from
`load()` and the CLI (xlstm_mlx/platform/).
"""

from xlstm_mlx.checkpoints.load import load
from xlstm_mlx.generation.generate import batch_generate, generate, stream_generate
from xlstm_mlx.models.xlstm7b.model import Model
from xlstm_mlx.models.xlstm_stack.model import StackModel
from xlstm_mlx.profiles import NumericsProfile, load_profile

__all__ = ["load", "generate", "stream_generate", "batch_generate", "Model", "StackModel", "NumericsProfile",
           "load_profile"]
__version__ = "0.1.0"
