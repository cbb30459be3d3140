import os
import sys
from pathlib import Path

# tests are CPU-only whatever the machine (CI has no GPU; a GPU run must not change tolerances)
os.environ.setdefault("OMP_NUM_THREADS", "2")
sys.path.insert(0, str(Path(__file__).parent))

import mlx.core as mx  # noqa: E402

mx.set_default_device(mx.cpu)
