"""y = x @ dequantize(w).T (+ bias) for MLX's affine-quantized weights: which path runs for how many rows.

    quantized_matmul_ref(x, w, scales, biases, bias, group_size, bits, mode)   what nn.QuantizedLinear computes
                                                                               (kernels/quant_gemv.py)
    quantized_matmul(...)                                                      the path chosen by the rows of x

On MLX's CUDA backend, mx.quantized_matmul is slow: measured on an H200 (7B shape, 4-bit,
benchmarks/results/gpu_h200_2026-12-02.md) its matrix-vector kernel reads the 4-bit weights at ~0.9 TB/s
(bf16: ~3.7), a decode step at batch 16 took 50.8 ms against 9.0 ms with the same weights in bf16, and a
2,048-token prefill ran at 6.6k tok/s against 15.7k. So on CUDA:
  - up to GEMV_MAX_ROWS rows and from GEMV_MIN_OUTPUTS outputs, our quantized GEMV (kernels/quant_gemv.py:
    the packed weight streamed through shared memory, exact codes on the tensor cores, up to 16 rows) where it
    applies, unless XLSTM_MLX_QUANT_GEMV=0; else MLX's kernel;
  - from DEQUANT_MIN_ROWS rows on, the weight dequantized to x's dtype and MLX's bf16 GEMM: one write and one
    read of the bf16 weight per call, small against a GEMM over many rows.
On Metal and the CPU MLX's quantized kernels run at every size.

Numerics: the dequantized weight is rounded once to x's dtype (bf16: 2^-9 relative per weight, independent
across weights), where mx.quantized_matmul keeps it in float32 registers: a statistical difference of the size of
one bf16 rounding of the output, tested against float32 (tests/kernels/test_cuda_kernels.py).
"""

from __future__ import annotations

import mlx.core as mx

from xlstm_mlx import env
from xlstm_mlx.kernels import quant_gemv
from xlstm_mlx.kernels.cuda_common import cuda_available
from xlstm_mlx.kernels.quant_gemv import quantized_matmul_ref

# Thresholds from the H200 quantized-matmul lab (benchmarks/gpu_quant_lab.py, which times our GEMV, MLX's qmm and
# the bf16 GEMM on the 7B decode matrices at 1/4/8/16 rows); the lead sets them from its table.
DEQUANT_MIN_ROWS = 256  # rows of x from which CUDA takes dequantize + GEMM (the H200 lab: see above)
# Where our GEMV runs: the domain where the kernel before this one was measured faster than MLX's qmm (<= 4 rows,
# >= 8,192 outputs). The tensor-core kernel (quant_gemv.py, up to 16 rows) has one end-to-end-free lab point on
# the H200 so far (2026-12-02, the lab's time guard stopped it after the first matrix): 4-bit 4096 -> 12288 at one
# row, 30.2 us against MLX's qmm 45.3 us and the old kernel's 36-51, every one of its 15 configurations exact
# against the float32 reference there. Widening to 16 rows and to the 4,096-output matrices waits for the lab's
# full table.
GEMV_MAX_ROWS = 4
GEMV_MIN_OUTPUTS = 8192


def dequantized_matmul(x, w, scales, biases, bias, group_size: int, bits: int, mode: str = "affine"):
    """The weight dequantized to x's dtype, then MLX's matmul."""
    wd = mx.dequantize(w, scales, biases, group_size=group_size, bits=bits, mode=mode).astype(x.dtype)
    return x @ wd.T if bias is None else mx.addmm(bias.astype(x.dtype), x, wd.T)


def _rows(x) -> int:
    return x.size // x.shape[-1] if x.shape[-1] else 0


def uses_dequantized(x) -> bool:
    return cuda_available() and _rows(x) >= DEQUANT_MIN_ROWS and x.dtype in (mx.bfloat16, mx.float16, mx.float32)


def uses_gemv(x, w, scales, biases, bias, group_size: int, bits: int, mode: str) -> bool:
    return (_rows(x) <= GEMV_MAX_ROWS and w.shape[0] >= GEMV_MIN_OUTPUTS and biases is not None
            and env.flag("XLSTM_MLX_QUANT_GEMV")
            and quant_gemv.applies(x, w, scales, group_size, bits, mode, biases=biases, bias=bias))


def quantized_matmul(x, w, scales, biases, bias, group_size: int, bits: int, mode: str = "affine"):
    if x.ndim > 2:  # [B, T, K] as [B*T, K]: one matrix product, whatever MLX does with leading dimensions
        y = quantized_matmul(x.reshape(-1, x.shape[-1]), w, scales, biases, bias, group_size, bits, mode)
        return y.reshape(*x.shape[:-1], y.shape[-1])
    if uses_dequantized(x):
        return dequantized_matmul(x, w, scales, biases, bias, group_size, bits, mode)
    if uses_gemv(x, w, scales, biases, bias, group_size, bits, mode):
        return quant_gemv.quantized_gemv_cuda(x, w, scales, biases, bias, group_size, bits, mode)
    return quantized_matmul_ref(x, w, scales, biases, bias, group_size, bits, mode)


def label() -> str:
    if cuda_available():
        few = (f"CUDA quantized GEMV (4/8-bit affine) up to {GEMV_MAX_ROWS} rows with >= {GEMV_MIN_OUTPUTS} outputs, "
               "MLX's quantized matmul for the rest" if env.flag("XLSTM_MLX_QUANT_GEMV")
               else "MLX's quantized matmul (XLSTM_MLX_QUANT_GEMV=0)")
        return (f"{few} below {DEQUANT_MIN_ROWS} rows; from {DEQUANT_MIN_ROWS} rows on, dequantize to the input "
                "dtype + MLX matmul (MLX's CUDA quantized GEMM is slow there)")
    return "MLX quantized matmul (mx.quantized_matmul)"
