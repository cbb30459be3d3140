"""What the CUDA kernel tests share: the skip marker (with its reason) and the relative error they judge by."""

import mlx.core as mx
import pytest

from xlstm_mlx.kernels.cuda_common import cuda_available

needs_cuda = pytest.mark.skipif(not cuda_available(), reason="CUDA kernels need MLX's CUDA backend with the GPU as "
                                "default device (XLSTM_MLX_TEST_DEVICE=gpu on a CUDA machine); CPU CI cannot run them")


def rel_error(out, ref) -> float:
    """Relative Frobenius error of `out` against `ref`, in float32; NaN or inf in `out` fails."""
    o, r = out.astype(mx.float32), ref.astype(mx.float32)
    assert bool(mx.all(mx.isfinite(o)).item()), "NaN or inf in the kernel's output"
    return float(mx.linalg.norm((o - r).reshape(-1)).item() / mx.linalg.norm(r.reshape(-1)).item())
