import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")
sys.path.insert(0, str(Path(__file__).parent))

import mlx.core as mx  # noqa: E402

# CI is CPU-only. XLSTM_MLX_TEST_DEVICE=gpu runs the same tests on MLX's GPU backend (CUDA or Metal),
# with the same tolerances: that is how the kernels are checked on a lent GPU.
from xlstm_mlx import env  # noqa: E402

mx.set_default_device(mx.gpu if env.choice("XLSTM_MLX_TEST_DEVICE", "cpu") == "gpu" else mx.cpu)

# What load() and the CLI do first (TF32 off, the CPU BLAS redirection); tests that build models directly
# would otherwise run on MLX's reference BLAS until some test loads a checkpoint.
import xlstm_mlx.platform  # noqa: E402

xlstm_mlx.platform.setup()
