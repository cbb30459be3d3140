"""xlstm-mlx: run xLSTM language models with MLX on Metal, CUDA and CPU.

Importing the package has no side effects: the platform set-up (TF32 default, Linux CPU BLAS) runs from
`load()` and the CLI (xlstm_mlx/platform/). The layout is described in docs/architecture.md.
"""

from xlstm_mlx.checkpoints.convert import convert
from xlstm_mlx.checkpoints.demo import demo_model_dir
from xlstm_mlx.checkpoints.load import load
from xlstm_mlx.checkpoints.random import make_random_checkpoint
from xlstm_mlx.checkpoints.save import save_checkpoint
from xlstm_mlx.errors import CheckpointError, NumericsError, SnapshotError, UsageError, XLSTMError
from xlstm_mlx.generation.chat import ChatSession
from xlstm_mlx.generation.generate import (GenerationResponse, batch_generate, generate, generate_step, prefill,
                                           stream_generate)
from xlstm_mlx.generation.sample import Sampler, make_logits_processors, make_sampler
from xlstm_mlx.generation.snapshot import load_snapshot, save_snapshot
from xlstm_mlx.models.cache import Cache
from xlstm_mlx.models.xlstm7b.model import Model
from xlstm_mlx.models.xlstm_stack.model import StackModel
from xlstm_mlx.profiles import NumericsProfile, load_profile

__all__ = [
    "load", "generate", "stream_generate", "batch_generate", "generate_step", "prefill", "GenerationResponse",
    "Sampler", "make_sampler", "make_logits_processors", "ChatSession", "save_snapshot", "load_snapshot",
    "Model", "StackModel", "Cache", "NumericsProfile", "load_profile", "convert", "save_checkpoint",
    "make_random_checkpoint", "demo_model_dir", "XLSTMError", "CheckpointError", "SnapshotError", "NumericsError",
    "UsageError",
]
__version__ = "0.1.0"
