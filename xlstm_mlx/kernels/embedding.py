"""The token embedding lookup: rows of the embedding table gathered by token id.

    embedding_lookup_ref(embedding, ids)   the module's own call (nn.Embedding: weight[ids]; nn.QuantizedEmbedding
                                           dequantizes its rows)
    embedding_lookup(embedding, ids)       a CUDA copy kernel for a float nn.Embedding where it applies, else the ref

Why: on an H200 (7B shape, Nsight Compute over one compiled decode step, benchmarks/results/) MLX's gather for
the [16, 1] token ids of a batch-16 step took 176-186 us (5.7 us at batch 1), 2.6 % of the step: about the time
to read the whole 412 MB bf16 table, for 16 rows of 8 KB. Here each thread copies one 16-byte vector of one
row: the bytes of the rows asked for and nothing else. An id outside the table is clamped to it so that the
copy stays inside the table's memory (the model checks ids before they get here: models/base.py).
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from xlstm_mlx.kernels.cuda_common import cuda_available

THREADS = 256

_SOURCE = """
    constexpr int VEC = 16 / sizeof(T);
    constexpr int VPR = D / VEC;                       // 16-byte vectors per row
    const size_t n = ids_shape[0];
    const size_t i = (size_t)blockIdx.x * THREADS + threadIdx.x;
    if (i >= n * VPR) return;
    const size_t t = i / VPR;
    const int c = (int)(i % VPR);
    long long id = (long long)ids[t];
    id = id < 0 ? 0 : (id >= VOCAB ? VOCAB - 1 : id);  // memory safety only: ids were checked upstream
    reinterpret_cast<uint4*>(out + t * D)[c] = __ldg(reinterpret_cast<const uint4*>(weight + (size_t)id * D) + c);
"""

_kernel = None


def embedding_lookup_ref(embedding: nn.Module, ids: mx.array) -> mx.array:
    return embedding(ids)


def applies(embedding: nn.Module, ids: mx.array) -> bool:
    if not cuda_available() or type(embedding) is not nn.Embedding or ids.size == 0:
        return False
    w = embedding.weight
    return (w.ndim == 2 and w.dtype in (mx.bfloat16, mx.float16, mx.float32) and w.shape[1] % (16 // w.dtype.size) == 0
            and ids.dtype in (mx.int32, mx.uint32, mx.int64, mx.uint64))


def embedding_lookup_cuda(embedding: nn.Module, ids: mx.array) -> mx.array:
    global _kernel
    if _kernel is None:
        _kernel = mx.fast.cuda_kernel(name="xlstm_embedding_lookup", input_names=["weight", "ids"],
                                      output_names=["out"], source=_SOURCE)
    w = embedding.weight
    V, D = w.shape
    vectors = ids.size * D // (16 // w.dtype.size)
    (out,) = _kernel(
        inputs=[w, ids.reshape(-1)],
        template=[("T", w.dtype), ("D", D), ("VOCAB", V), ("THREADS", THREADS)],
        grid=(-(-vectors // THREADS) * THREADS, 1, 1),
        threadgroup=(THREADS, 1, 1),
        output_shapes=[(*ids.shape, D)],
        output_dtypes=[w.dtype],
    )
    return out


def embedding_lookup(embedding: nn.Module, ids: mx.array) -> mx.array:
    if applies(embedding, ids):
        return embedding_lookup_cuda(embedding, ids)
    return embedding_lookup_ref(embedding, ids)


def label() -> str:
    if cuda_available():
        return "CUDA row copy (mx.fast.cuda_kernel) for a float table; the module's own call otherwise"
    return "the embedding module's own call (MLX gather; the CUDA row copy needs MLX's CUDA backend)"
