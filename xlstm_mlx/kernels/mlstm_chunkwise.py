"""The mLSTM prefill form: chunkwise-parallel (parallel inside chunks of L steps, recurrent across them).

    mlstm_chunkwise(q, k, v, igate, fgate, state, eps, chunk_size)      the fused CUDA kernels
        (mlstm_chunkwise_cuda.py) where they apply, else the closed-form chunk scan in MLX ops
        (mlstm_chunk_scan.mlstm_chunkwise_ops; its module doc defines the math)
    mlstm_chunkwise_ref(...)                                            the parallel form applied chunk after
                                                                        chunk, passing the state (the reference)

q, k [B, NH, T, Dqk]; v [B, NH, T, Dv]; gates [B, NH, T]; state (C, n, m) or None. Returns (h, final state).
"""

import mlx.core as mx

from xlstm_mlx.errors import UsageError
from xlstm_mlx.kernels import mlstm_chunkwise_cuda as _cuda
from xlstm_mlx.kernels.mlstm_chunk_scan import MAX_SEGMENT_CHUNKS, mlstm_chunkwise_flops, mlstm_chunkwise_ops
from xlstm_mlx.kernels.mlstm_parallel import mlstm_parallel

__all__ = ["MAX_SEGMENT_CHUNKS", "mlstm_chunkwise", "mlstm_chunkwise_flops", "mlstm_chunkwise_ops",
           "mlstm_chunkwise_ref"]


def mlstm_chunkwise(q, k, v, igate, fgate, state=None, eps: float = 1e-6, chunk_size: int = 64):
    """The fused CUDA kernels where they apply (mlstm_chunkwise_cuda.applies), else the MLX-ops scan."""
    if chunk_size < 1:
        raise UsageError(f"chunk_size must be >= 1, got {chunk_size}")
    if _cuda.applies(q, k, v, igate, fgate, state, chunk_size):
        return _cuda.mlstm_chunkwise_cuda(q, k, v, igate, fgate, state, eps, chunk_size)
    return mlstm_chunkwise_ops(q, k, v, igate, fgate, state, eps, chunk_size)


def mlstm_chunkwise_ref(q, k, v, igate, fgate, state=None, eps: float = 1e-6, chunk_size: int = 64):
    """Chunkwise reference: the parallel form applied chunk after chunk, passing the state.

    Any length: whole chunks, then the remainder as one shorter chunk.
    """
    T = q.shape[2]
    hs = []
    for start in range(0, T, chunk_size):
        sl = slice(start, min(start + chunk_size, T))
        h, state = mlstm_parallel(
            q[:, :, sl], k[:, :, sl], v[:, :, sl], igate[:, :, sl], fgate[:, :, sl], state, eps
        )
        hs.append(h)
    return mx.concatenate(hs, axis=2), state
