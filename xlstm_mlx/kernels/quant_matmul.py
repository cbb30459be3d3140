"""y = x @ dequantize(w).T (+ bias) for MLX's affine-quantized weights: which path runs for how many rows.

    quantized_matmul_ref(x, w, scales, biases, bias, group_size, bits, mode)   what nn.QuantizedLinear computes
                                                                               (kernels/quant_gemv.py)
    quantized_matmul(...)                                                      the path chosen by the rows of x

On MLX's CUDA backend, mx.quantized_matmul is slow at few rows: on an H200 (7B decode matrices, group 64, 4-bit,
kernels/quant_gemv_lab.py, dependent chains) it takes 39-140 us a matrix at one row (0.2-0.8 TB/s of packed
bytes), 55-467 us at 4 rows and 72-203 us at 16 rows (for 4,096 outputs its GEMM has 32 blocks). So on CUDA:
  - up to quant_gemv.MAX_ROWS (16) rows, our quantized GEMV (kernels/quant_gemv.py: the packed weight streamed
    through shared memory, exact codes on the tensor cores) for 2..16 rows and for one row at 4 bits: session
    8's lab timed it faster than MLX's kernel in all 15 measured 4-bit cases and 2 of 3 8-bit ones (the third a
    tie); MLX's kernel for one row at 8 bits, which won the one measured case (q|k|v|o, 31.0 against 43.5 us).
    Session 13's kernel (x's loads of a unit issued first) takes that one in 22.5 us alone, but its five 8-bit
    one-row products add up to ~3.3 ms a step alone, about what MLX's take inside the 4.11 ms 8-bit step (243
    tok/s): not switched without an end-to-end A/B (the session's device time ran out before it).
    XLSTM_MLX_QUANT_GEMV=0 keeps MLX's kernel.
    End to end (7B, H200, 2026-12-02) batch 16 at 4 bits: 7.83 ms a step with this routing against 14.12 with
    MLX's kernel everywhere; batch 1 is host-bound there (the step's kernels add up to 4.19 ms under Nsight, the
    step takes 5-7 ms, and identical runs spread 160-199 tok/s): see docs/bench.md;
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
from xlstm_mlx.kernels.add_rms_norm import AddNorm, add_rms_norm, after_product_ref
from xlstm_mlx.kernels.add_rms_norm import label as add_rms_label
from xlstm_mlx.kernels.cuda_common import cuda_available
from xlstm_mlx.kernels.quant_gemv import quantized_matmul_ref

DEQUANT_MIN_ROWS = 256  # rows of x from which CUDA takes dequantize + GEMM (an H200 prefill: see above)


def dequantized_matmul(x, w, scales, biases, bias, group_size: int, bits: int, mode: str = "affine"):
    """The weight dequantized to x's dtype, then MLX's matmul."""
    wd = mx.dequantize(w, scales, biases, group_size=group_size, bits=bits, mode=mode).astype(x.dtype)
    return x @ wd.T if bias is None else mx.addmm(bias.astype(x.dtype), x, wd.T)


def _rows(x) -> int:
    return x.size // x.shape[-1] if x.shape[-1] else 0


def uses_dequantized(x) -> bool:
    return cuda_available() and _rows(x) >= DEQUANT_MIN_ROWS and x.dtype in (mx.bfloat16, mx.float16, mx.float32)


def gemv_faster(rows: int, n: int, k: int, bits: int) -> bool:
    """Whether our GEMV beats MLX's quantized matmul at this size (module doc): 2..MAX_ROWS rows at both bit
    widths, one row at 4 bits; MLX's kernel for one row at 8 bits."""
    return 2 <= rows <= quant_gemv.MAX_ROWS or (rows == 1 and bits == 4)


def uses_gemv(x, w, scales, biases, bias, group_size: int, bits: int, mode: str) -> bool:
    return (biases is not None and env.flag("XLSTM_MLX_QUANT_GEMV")
            and quant_gemv.applies(x, w, scales, group_size, bits, mode, biases=biases, bias=bias)
            and gemv_faster(_rows(x), w.shape[0], x.shape[-1], bits))


def quantized_matmul(x, w, scales, biases, bias, group_size: int, bits: int, mode: str = "affine"):
    if x.ndim > 2:  # [B, T, K] as [B*T, K]: one matrix product, whatever MLX does with leading dimensions
        y = quantized_matmul(x.reshape(-1, x.shape[-1]), w, scales, biases, bias, group_size, bits, mode)
        return y.reshape(*x.shape[:-1], y.shape[-1])
    if uses_dequantized(x):
        return dequantized_matmul(x, w, scales, biases, bias, group_size, bits, mode)
    if uses_gemv(x, w, scales, biases, bias, group_size, bits, mode):
        return quant_gemv.quantized_gemv_cuda(x, w, scales, biases, bias, group_size, bits, mode)
    return quantized_matmul_ref(x, w, scales, biases, bias, group_size, bits, mode)


def quantized_matmul_add_rms_ref(x, w, scales, biases, bias, group_size: int, bits: int, mode: str,
                                 norm: AddNorm):
    """The product, then the residual add + RMSNorm + cast: add_rms_norm_ref(norm.residual, quantized_matmul_ref(x,
    ...), ...) -> (r, y or None, y_c)."""
    return after_product_ref(quantized_matmul_ref(x, w, scales, biases, bias, group_size, bits, mode), norm)


def quantized_matmul_add_rms(x, w, scales, biases, bias, group_size: int, bits: int, mode: str,
                             norm: AddNorm):
    """The "matmul.quantized_add_rms" fast form: on CUDA, where our GEMV takes the product (uses_gemv) for at most
    quant_gemv.TAIL_MAX_ROWS rows, one launch (the GEMV's add-norm tail: the bits of the two launches below);
    else quantized_matmul, then the "norm.add_rms" fast form."""
    if uses_gemv(x, w, scales, biases, bias, group_size, bits, mode) and quant_gemv.tail_applies(
            x, w, scales, biases, bias, group_size, bits, mode, norm):
        return quant_gemv.quantized_gemv_add_norm_cuda(x, w, scales, biases, bias, group_size, bits, mode, norm)
    y = quantized_matmul(x, w, scales, biases, bias, group_size, bits, mode)
    return add_rms_norm(norm.residual, y, norm.weight, norm.bias, norm.eps, norm.out_dtype, norm.want_y)


def label_add_rms() -> str:
    if cuda_available() and env.flag(quant_gemv.TAIL_ENV):
        rows = quant_gemv.tail_max_rows()
        return (f"the quantized GEMV with the residual add + RMSNorm in its last block (<= {rows} rows where the "
                "GEMV runs: one launch); else the product, then norm.add_rms")
    return f"the product (matmul.quantized), then norm.add_rms ({add_rms_label()})"


def label() -> str:
    if cuda_available():
        few = (f"CUDA quantized GEMV (4/8-bit affine, 2 to {quant_gemv.MAX_ROWS} rows, or 1 row at 4 bits), MLX's "
               "quantized matmul for the rest" if env.flag("XLSTM_MLX_QUANT_GEMV")
               else "MLX's quantized matmul (XLSTM_MLX_QUANT_GEMV=0)")
        return (f"{few} below {DEQUANT_MIN_ROWS} rows; from {DEQUANT_MIN_ROWS} rows on, dequantize to the input "
                "dtype + MLX matmul (MLX's CUDA quantized GEMM is slow there)")
    return "MLX quantized matmul (mx.quantized_matmul)"
