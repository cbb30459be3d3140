"""y = x @ dequantize(w).T (+ bias) for MLX's affine-quantized weights: which path runs for how many rows.

    quantized_matmul_ref(x, w, scales, biases, bias, group_size, bits, mode)   what nn.QuantizedLinear computes
                                                                               (mx.quantized_matmul, then + bias)
    quantized_matmul(...)                                                      the path chosen by the rows of x

On MLX's CUDA backend, mx.quantized_matmul is slow past a few rows: measured on an H200 (7B shape, 4-bit,
benchmarks/results/gpu_kernels_h200.md) a decode step at batch 16 took 50.8 ms against 9.0 ms with the same
weights in bf16, and a 2,048-token prefill ran at 6.6k tok/s against 15.7k. There, from DEQUANT_MIN_ROWS rows
on, the weight is dequantized to x's dtype and multiplied with MLX's bf16 GEMM: the dequantized copy costs one
write and one read of the bf16 weight per call, small against a GEMM over many rows. Below that MLX's own
quantized matrix-vector kernel runs. On Metal and the CPU MLX's quantized kernels are the path at every size.

Numerics: the dequantized weight is rounded once to x's dtype (bf16: 2^-9 relative per weight, independent
across weights), where mx.quantized_matmul keeps it in float32 registers: a statistical difference of the size of
one bf16 rounding of the output, tested against float32 (tests/kernels/test_cuda_kernels.py).
"""

from __future__ import annotations

import mlx.core as mx

from xlstm_mlx.kernels.cuda_common import cuda_available

DEQUANT_MIN_ROWS = 8  # rows of x from which CUDA takes dequantize + GEMM (set from the H200 lab: see above)


def quantized_matmul_ref(x, w, scales, biases, bias, group_size: int, bits: int, mode: str = "affine"):
    """nn.QuantizedLinear's computation."""
    y = mx.quantized_matmul(x, w, scales=scales, biases=biases, transpose=True, group_size=group_size, bits=bits,
                            mode=mode)
    return y if bias is None else y + bias


def dequantized_matmul(x, w, scales, biases, bias, group_size: int, bits: int, mode: str = "affine"):
    """The weight dequantized to x's dtype, then MLX's matmul."""
    wd = mx.dequantize(w, scales, biases, group_size=group_size, bits=bits, mode=mode).astype(x.dtype)
    return x @ wd.T if bias is None else mx.addmm(bias.astype(x.dtype), x, wd.T)


def _rows(x) -> int:
    return x.size // x.shape[-1] if x.shape[-1] else 0


def uses_dequantized(x) -> bool:
    return cuda_available() and _rows(x) >= DEQUANT_MIN_ROWS and x.dtype in (mx.bfloat16, mx.float16, mx.float32)


def quantized_matmul(x, w, scales, biases, bias, group_size: int, bits: int, mode: str = "affine"):
    if uses_dequantized(x):
        return dequantized_matmul(x, w, scales, biases, bias, group_size, bits, mode)
    return quantized_matmul_ref(x, w, scales, biases, bias, group_size, bits, mode)


def label() -> str:
    if cuda_available():
        return (f"MLX quantized matmul below {DEQUANT_MIN_ROWS} rows; from {DEQUANT_MIN_ROWS} rows on, dequantize "
                "to the input dtype + MLX matmul (MLX's CUDA quantized GEMM is slow there)")
    return "MLX quantized matmul (mx.quantized_matmul)"
