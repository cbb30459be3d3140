"""All recurrence numerics, in one registry chosen by name.

Every entry is (fast, reference, label): the fast form, a reference with the same signature beside it,
and what the fast form is on this backend (a string, or a function of nothing for backend-dependent forms):

    name              fast                          reference
    mlstm.chunkwise   mlstm_chunkwise (fused CUDA    mlstm_chunkwise_ref (the parallel form chunk by chunk)
                      kernels on CUDA where they
                      apply, else the closed-form
                      chunk scan in MLX ops)
    mlstm.parallel    mlstm_parallel                mlstm_parallel (quadratic; the reference of all forms)
    mlstm.sequence    mlstm_sequence                mlstm_sequence (a loop of reference steps)
    mlstm.step        mlstm_step (mx.compile)       mlstm_step_ref
    slstm.sequence    slstm_sequence (fused CUDA    slstm_sequence_ref (a loop of reference steps)
                      kernel on CUDA, else compiled
                      steps)
    slstm.step        slstm_step (mx.compile)       slstm_step_ref
    mlstm.decode_step mlstm_decode_step (fused CUDA  mlstm_decode_step_ref (soft cap + mlstm_step_ref)
                      kernel on CUDA, else the ref)
    mlstm.headnorm_gate headnorm_gate (fused CUDA    headnorm_gate_ref (layer_norm, weight, sigmoid gate)
                      kernel on CUDA, else MLX ops)
    mlstm.gate_preact gate_preact (fused CUDA       gate_preact_ref (nn.Linear's float32 matmul, the
                      kernel on CUDA, else MLX ops)  soft cap of each half)
    norm.add_rms      add_rms_norm (fused CUDA      add_rms_norm_ref (add, mx.fast.rms_norm, cast)
                      kernel on CUDA, else the ref)
    matmul.quantized_add_rms  quantized_matmul_add_rms   quantized_matmul_add_rms_ref (matmul.quantized's
                      (the quantized GEMV with the   reference, then norm.add_rms's)
                      residual add + RMSNorm in its
                      last block on CUDA at few rows,
                      else the two fast forms)
    ffn.swiglu        swiglu (fused CUDA kernel     swiglu_ref (math.silu's reference of the gate half
                      on CUDA, else MLX ops)        times the up half)
    embed.lookup      embedding_lookup (CUDA row    embedding_lookup_ref (the embedding module's own call)
                      copy on CUDA, else the ref)
    rows.tiles        row_tiles (fn on L2-sized     row_tiles_ref (fn on the whole array)
                      tiles of rows on the CPU,
                      concatenated; else fn(x))
    matmul.quantized  quantized_matmul (by rows:    quantized_matmul_ref (nn.QuantizedLinear's
                      dequantize + GEMM for many     mx.quantized_matmul + bias)
                      rows on CUDA)
    mlstm.decode_layer decode_layer (a quantized    decode_layer_ref (the chain of the references:
                      block's decode step in one     quantized matmuls, decode step + head norm,
                      persistent CUDA launch, else   add + RMSNorm, SwiGLU)
                      the separate fast forms)
    matmul.skinny     skinny_matmul (CUDA bf16      skinny_matmul_ref (MLX's matmul, as nn.Linear)
                      GEMV for <= 16 rows where
                      its H200 table says it is
                      faster, else the ref)

A CUDA kernel is the fast form only where MLX's CUDA backend runs (cuda_common.cuda_available()); on Metal
and the CPU the fast form of those names is their MLX-ops reference, and the label says so.
    math.sigmoid      fastmath.sigmoid (polynomial  fastmath.sigmoid_ref (mx.sigmoid)
                      form on the CPU, MLX's own
                      op on a GPU)
    math.silu         fastmath.silu                 fastmath.silu_ref (x * mx.sigmoid(x), as nn.silu)
    math.soft_cap     fastmath.soft_cap             fastmath.soft_cap_ref (cap * mx.tanh(x / cap))
    norm.rms          norms.rms_norm (sums by BLAS  norms.rms_norm_ref (mx.fast.rms_norm)
                      on the CPU, MLX's fused
                      kernel on a GPU)
    norm.layer        norms.layer_norm              norms.layer_norm_ref (mx.fast.layer_norm)
    logits.all_finite logits_check.all_finite (max  logits_check.all_finite_ref (mx.all(mx.isfinite)):
                      and min over column blocks     generate_step's one NaN/Inf test per step
                      on the CPU, else the ref)

`use_reference(True)` (or XLSTM_MLX_REFERENCE_KERNELS=1) makes `get` return the reference of every name:
tests use it to check a whole model on the slow, simple path. `describe()` says what each name runs here.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

from xlstm_mlx import env
from xlstm_mlx.kernels import mlstm_decode as _decode
from xlstm_mlx.kernels import skinny_gemm as _skinny
from xlstm_mlx.kernels import fastmath
from xlstm_mlx.kernels import norms
from xlstm_mlx.kernels import headnorm as _headnorm
from xlstm_mlx.kernels.headnorm import headnorm_gate, headnorm_gate_ref
from xlstm_mlx.kernels import quant_matmul as _quant
from xlstm_mlx.kernels import add_rms_norm as _add_rms
from xlstm_mlx.kernels import swiglu as _swiglu
from xlstm_mlx.kernels import gate_preact as _gate_preact
from xlstm_mlx.kernels import embedding as _embedding
from xlstm_mlx.kernels import row_tiles as _row_tiles
from xlstm_mlx.kernels import logits_check as _logits_check
from xlstm_mlx.kernels import decode_layer as _decode_layer
from xlstm_mlx.kernels.swiglu import swiglu, swiglu_ref
from xlstm_mlx.kernels.add_rms_norm import add_rms_norm, add_rms_norm_ref
from xlstm_mlx.kernels.quant_matmul import quantized_matmul, quantized_matmul_ref
from xlstm_mlx.kernels.mlstm_chunkwise import mlstm_chunkwise, mlstm_chunkwise_ref
from xlstm_mlx.kernels import mlstm_chunkwise_cuda as _chunkwise_cuda
from xlstm_mlx.kernels.mlstm_decode import mlstm_decode_step, mlstm_decode_step_ref
from xlstm_mlx.kernels.skinny_gemm import skinny_matmul, skinny_matmul_ref
from xlstm_mlx.kernels.mlstm_gates import log_sigmoid, mask_gates
from xlstm_mlx.kernels.mlstm_parallel import mlstm_parallel
from xlstm_mlx.kernels.mlstm_recurrent import mlstm_sequence, mlstm_step, mlstm_step_ref, mlstm_zero_state
from xlstm_mlx.kernels.slstm import (sequence_path, slstm_sequence, slstm_sequence_ref, slstm_step,
                                     slstm_step_ref, slstm_zero_state)
from xlstm_mlx.errors import UsageError


class Kernel(NamedTuple):
    fast: Callable
    reference: Callable
    label: str | Callable[[], str]

    def implementation(self) -> str:
        return self.label() if callable(self.label) else self.label


KERNELS: dict[str, Kernel] = {
    "mlstm.chunkwise": Kernel(mlstm_chunkwise, mlstm_chunkwise_ref, _chunkwise_cuda.label),
    "mlstm.parallel": Kernel(mlstm_parallel, mlstm_parallel, "quadratic parallel form (MLX ops)"),
    "mlstm.sequence": Kernel(mlstm_sequence, mlstm_sequence, "loop of reference steps (MLX ops)"),
    "mlstm.step": Kernel(mlstm_step, mlstm_step_ref, "compiled step (mx.compile)"),
    "slstm.sequence": Kernel(slstm_sequence, slstm_sequence_ref, sequence_path),
    "slstm.step": Kernel(slstm_step, slstm_step_ref, "compiled step (mx.compile)"),
    "mlstm.decode_step": Kernel(mlstm_decode_step, mlstm_decode_step_ref, _decode.label),
    "mlstm.headnorm_gate": Kernel(headnorm_gate, headnorm_gate_ref, _headnorm.label),
    "mlstm.gate_preact": Kernel(_gate_preact.gate_preact, _gate_preact.gate_preact_ref, _gate_preact.label),
    "matmul.skinny": Kernel(skinny_matmul, skinny_matmul_ref, _skinny.label),
    "matmul.quantized": Kernel(quantized_matmul, quantized_matmul_ref, _quant.label),
    "norm.add_rms": Kernel(add_rms_norm, add_rms_norm_ref, _add_rms.label),
    # a quantized product followed by the residual add + RMSNorm (the out_proj and the FFN down at decode: block.py)
    "matmul.quantized_add_rms": Kernel(_quant.quantized_matmul_add_rms, _quant.quantized_matmul_add_rms_ref,
                                       _quant.label_add_rms),
    # a quantized xLSTM-7B block's whole decode step (one persistent launch on CUDA, else the separate fast forms)
    "mlstm.decode_layer": Kernel(_decode_layer.decode_layer, _decode_layer.decode_layer_ref, _decode_layer.label),
    "ffn.swiglu": Kernel(swiglu, swiglu_ref, _swiglu.label),
    "embed.lookup": Kernel(_embedding.embedding_lookup, _embedding.embedding_lookup_ref, _embedding.label),
    # a row-local function over many rows in L2-sized tiles on the CPU (the SwiGLU, the head norm and gate)
    "rows.tiles": Kernel(_row_tiles.row_tiles, _row_tiles.row_tiles_ref, _row_tiles.label),
    # element-wise transcendentals: fast forms on the CPU only (MLX's Linux CPU ops are slow; docs/numerics.md)
    "math.sigmoid": Kernel(fastmath.sigmoid, fastmath.sigmoid_ref, fastmath.label),
    "math.silu": Kernel(fastmath.silu, fastmath.silu_ref, fastmath.label),
    "math.soft_cap": Kernel(fastmath.soft_cap, fastmath.soft_cap_ref, fastmath.label),
    # the norms' reductions: MLX's CPU mean is one running float32 sum, inexact at hidden sizes (docs/numerics.md)
    "norm.rms": Kernel(norms.rms_norm, norms.rms_norm_ref, norms.label),
    "norm.layer": Kernel(norms.layer_norm, norms.layer_norm_ref, norms.label),
    # generate_step's finiteness test of each step's logits: MLX's CPU isfinite + all is slow (kernels/logits_check.py)
    "logits.all_finite": Kernel(_logits_check.all_finite, _logits_check.all_finite_ref, _logits_check.label),
}

# the element-wise names (activations and soft-caps) a model lists in kernel_names() for the verbose line
MATH = ("math.sigmoid", "math.silu", "math.soft_cap")
# the norm names (RMSNorm, the per-head LayerNorm of the xLSTM-7B family)
NORMS = ("norm.rms", "norm.layer")

# mLSTM names a profile may choose for its prefill and its decode step (profiles.py)
SEQUENCE_FORMS = ("chunkwise", "parallel", "sequence")
STEP_FORMS = ("step",)

_force_reference = env.Setting(None)  # None: XLSTM_MLX_REFERENCE_KERNELS decides


def reference_forced() -> bool:
    forced = _force_reference.value
    return env.flag("XLSTM_MLX_REFERENCE_KERNELS") if forced is None else forced


def use_reference(enabled: bool = True):
    """Force (or stop forcing) the reference kernels inside a `with` block."""
    return _force_reference.override(enabled)


def get(name: str) -> Callable:
    """The kernel registered as `name` (e.g. 'mlstm.chunkwise'): its reference when references are forced."""
    if name not in KERNELS:
        raise UsageError(f"unknown kernel {name!r}; registered: {sorted(KERNELS)}")
    k = KERNELS[name]
    return k.reference if reference_forced() else k.fast


def describe(names: list[str] | None = None) -> dict[str, str]:
    """What each kernel name runs on this backend now."""
    forced = reference_forced()
    return {n: ("reference (forced)" if forced else KERNELS[n].implementation()) for n in (names or KERNELS)}


__all__ = [
    "KERNELS", "Kernel", "MATH", "NORMS", "get", "describe", "use_reference", "reference_forced", "SEQUENCE_FORMS", "STEP_FORMS",
    "log_sigmoid", "mask_gates", "mlstm_zero_state", "slstm_zero_state", "mlstm_chunkwise", "mlstm_chunkwise_ref",
    "mlstm_parallel", "mlstm_sequence", "mlstm_step", "mlstm_step_ref", "slstm_sequence", "slstm_sequence_ref",
    "slstm_step", "slstm_step_ref", "mlstm_decode_step", "mlstm_decode_step_ref", "skinny_matmul",
    "skinny_matmul_ref", "headnorm_gate", "headnorm_gate_ref",
    "quantized_matmul", "quantized_matmul_ref", "add_rms_norm", "add_rms_norm_ref", "swiglu", "swiglu_ref",
]
