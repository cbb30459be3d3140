"""Fused projections for a loaded stored-single model: eight matmuls per block become three at inference.

A stored-single block makes eight matmuls per token (q, k, v, output gate, input gate, forget gate, FFN gate,
FFN up); fused, it makes three:
    qkv_opreact    = [q; k; v; ogate_preact]      (compute dtype: the big matmul, bf16 weights at the bf16 rate)
    ifgate_preact  = [igate_preact; fgate_preact] (takes the float32 residual input: docs/numerics.md)
    proj_up_gate_z = [proj_up_gate; proj_up]      (the FFN's gate and up halves)
the official `weight_mode: fused` layout. Each output row is the same dot product as before, so the logits agree
with the unfused model to float32 rounding (tests/models/test_fused_load.py).

How, without changing what the model *is*: at load (`fuse_model`), each group's weights are concatenated into one
array, and the single layers' weights become row views of it (no copy, no extra memory). The parameter tree,
its names, `args` and the snapshot fingerprint stay those of the stored layout, so `convert` / `convert -q`,
`save`, snapshots and training see exactly the stored model. The fused arrays live outside the parameter tree
and are used only inside an inference call (`Model.__call__` with a cache: generation, bench), where the model
first checks that every part still holds the recorded views: a part updated in place (model.update, a training
step) or replaced by its quantized form (`convert -q`, quantize_model) is fused again. Quantized parts fuse the
same way (packed weights, scales and biases stacked along the output rows, which is exact: the quantization
groups run along the input dimension), provided all parts of a group share bits, group size and mode; a group
that mixes float and quantized parts, or different settings, runs unfused. Without a cache
(a training loss) the single layers run, so gradients flow to the stored parameters as always.

The gate projections stay a matmul of their own because q/k/v/o take the normalized input rounded to the
compute dtype while the gates take it unrounded (float32); folding them into qkv_opreact would round the gate
input to bfloat16 under the 'fast' profile. With float32 weights the two could be one matmul (not done).

FFN padding (MLX's CUDA backend): the FFN down projection of the 7B shape has K = ffn_dim = 10,944 inputs, and
MLX's one-row CUDA gemv (mlx/backend/cuda/gemms/gemv.cu) loads 4 values a thread only when K % 128 == 0, else 2:
inside a batch-1 step (Nsight, H200) that matrix took 30.6 us a call (2.9 TB/s) against 25.1 us (3.6 TB/s, the
other matrices' rate) with K = 11,008, i.e. -178 us a step; cuBLAS at 16 rows runs the same kernels either way
(benchmarks/results/gpu_h200_2026-12-02e.md). So `fuse_model` also keeps the down weight as [D, F'] with
F' = ffn_dim rounded up to a multiple of PAD_MULTIPLE (zero columns past ffn_dim), the stored parameter a view of
its first ffn_dim columns (no second copy), and inside an inference call the SwiGLU writes its product F' wide
with zeros past ffn_dim (kernels/swiglu.py, `width`): each output is the same dot product plus exact zero terms
(0.6% more weight bytes and prefill FLOPs for the down product at the 7B shape).
Outside an inference call (a training loss) the single layer runs on that strided view, which MLX's matmul may
copy to a contiguous array at each call (not measured; `fusing(False)` or XLSTM_MLX_FFN_PAD=0 at load avoids it).
Float (not quantized) down projections only; XLSTM_MLX_FFN_PAD=auto (the default: on where MLX's CUDA backend
runs), 1 (everywhere: the tests) or 0 (never).

`with fusing(False): load(...)` keeps a model unfused and unpadded: the reference.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from xlstm_mlx import env, kernels
from xlstm_mlx.errors import UsageError
from xlstm_mlx.kernels.cuda_common import cuda_available

# fused layer -> (the block's sub-module, the single layers it stacks, in the fused row order)
FUSED_PARTS = {
    "qkv_opreact": ("mlstm_layer", ("q", "k", "v", "ogate_preact")),
    "ifgate_preact": ("mlstm_layer", ("igate_preact", "fgate_preact")),
    "proj_up_gate_z": ("ffn", ("proj_up_gate", "proj_up")),
}
_KEY = "_xlstm_fused_"  # + fused name: (FusedLinear, [(part, {param name: its view})]) in __dict__
PADDED = "proj_down_padded"  # the FFN's padded down projection, under _KEY + PADDED in the FFN's __dict__
PAD_MULTIPLE = 256  # the FFN inner dimension the down projection is padded to a multiple of (see the docstring)

_enabled = env.Setting(True)
_inference = env.Setting(False)


def fusing_enabled() -> bool:
    return _enabled.value


def fusing(enabled: bool = True):
    """Let `load` fuse stored-single models (the default) or not, inside a `with` block."""
    return _enabled.override(enabled)


def inference_call(enabled: bool = True):
    """Inside: layers use their fused arrays (Model.__call__ with a cache opens it around the forward)."""
    return _inference.override(enabled)


_PARAMS = ("weight", "scales", "biases", "bias")  # a Linear's (weight, bias); a QuantizedLinear's packed
# weight, per-group scales and biases (affine mode), and its bias: all row-major in the output dimension, so a
# group of layers stacks along axis 0 exactly (quantization groups run along the input dimension)


def _quant_settings(m: nn.Module):
    return (m.group_size, m.bits, m.mode) if isinstance(m, nn.QuantizedLinear) else None


def _parts_fusable(layers) -> bool:
    """Plain nn.Linear parts, or nn.QuantizedLinear parts with one (group size, bits, mode), with the same
    parameters in the same dtypes."""
    kinds = {type(m) for m in layers}
    if kinds not in ({nn.Linear}, {nn.QuantizedLinear}) or len({_quant_settings(m) for m in layers}) != 1:
        return False
    names = {tuple(n for n in _PARAMS if n in m) for m in layers}
    return len(names) == 1 and all(len({m[n].dtype for m in layers}) == 1 for n in next(iter(names)))


class FusedLinear:
    """The stacked arrays of a fused group, called like the layers it stacks (nn.Linear / nn.QuantizedLinear)."""

    def __init__(self, arrays: dict, quant):
        self.arrays = arrays
        self.quant = quant  # (group_size, bits, mode) or None for float weights
        # a float weight's transpose made here, once, as an evaluated view of its buffer: the compiled decode step
        # captures it as it is, where `w.T` inside the step was one Transpose node of its graph per product (host
        # work at every step: 64 of the 7B bf16 step's 450 nodes in benchmarks/probes/decode_graph_census.py, stored
        # single, without the FFN padding the CPU census does not apply; the padded down is one more such group)
        self.weight_t = None
        if quant is None:
            self.weight_t = arrays["weight"].T
            mx.eval(self.weight_t)

    @property
    def weight(self):
        return self.arrays["weight"]

    @property
    def bias(self):
        return self.arrays.get("bias")

    def __call__(self, x: mx.array) -> mx.array:
        """A float group through the "matmul.skinny" kernel, a quantized one through "matmul.quantized" (what
        nn.QuantizedLinear computes), as the layers it stacks run (block.linear)."""
        if self.quant is None:
            return kernels.get("matmul.skinny")(x, self.weight, self.bias, self.weight_t)
        group_size, bits, mode = self.quant
        return kernels.get("matmul.quantized")(x, self.weight, self.arrays["scales"], self.arrays.get("biases"),
                                               self.bias, group_size, bits, mode)


def padding_enabled() -> bool:
    """XLSTM_MLX_FFN_PAD: auto (default; on where MLX's CUDA backend runs), or a forced true / false."""
    raw = env.choice("XLSTM_MLX_FFN_PAD", "auto").lower()
    if raw == "auto":
        return cuda_available()
    if raw in env.TRUE:
        return True
    if raw in env.FALSE:
        return False
    raise UsageError(f"environment variable XLSTM_MLX_FFN_PAD={raw!r} must be auto, a true value (1, true, yes, on) "
                     "or a false one (0, false, no, off); set one of those or unset it")


def padded_width(ffn_dim: int) -> int:
    return -(-ffn_dim // PAD_MULTIPLE) * PAD_MULTIPLE


def _pad_down(ffn: nn.Module) -> bool:
    """Keep the float down projection's weight [D, F] as the first F columns of a zero-padded [D, F'] array."""
    layer = ffn["proj_down"]
    if type(layer) is not nn.Linear or not padding_enabled() or layer.weight.shape[1] % PAD_MULTIPLE == 0:
        ffn.__dict__.pop(_KEY + PADDED, None)
        return False
    w = layer.weight
    rows, f = w.shape
    padded = mx.concatenate([w, mx.zeros((rows, padded_width(f) - f), w.dtype)], axis=1)
    mx.eval(padded)
    layer.weight = padded[:, :f]  # the stored parameter: a view, no second copy
    mx.eval(layer.weight)
    arrays = {"weight": padded}
    if "bias" in layer:  # its own array: the parameter itself is swapped for a tracer while mx.compile traces
        arrays["bias"] = layer["bias"] + 0
        mx.eval(arrays["bias"])
    names = [n for n in ("weight", "bias") if n in layer]
    ffn.__dict__[_KEY + PADDED] = (FusedLinear(arrays, None), [(layer, {n: layer[n] for n in names})])
    return True


def _fuse_group(owner: nn.Module, name: str, parts: tuple[str, ...]) -> bool:
    layers = [owner[p] for p in parts]
    if not _parts_fusable(layers):
        owner.__dict__.pop(_KEY + name, None)
        return False
    names = [n for n in _PARAMS if n in layers[0]]
    fused = {n: mx.concatenate([m[n] for m in layers], axis=0) for n in names}
    mx.eval(list(fused.values()))
    views, start = [], 0
    for m in layers:
        rows = m.weight.shape[0]
        for n in names:  # a view of the fused array: the stored parameter, no second copy
            m[n] = fused[n][start:start + rows]
        views.append((m, {n: m[n] for n in names}))
        start += rows
    mx.eval([a for _, arrays in views for a in arrays.values()])
    owner.__dict__[_KEY + name] = (FusedLinear(fused, _quant_settings(layers[0])), views)
    return True


def fuse_model(model) -> bool:
    """Fuse every block's projection groups (a stored-single model; block by block, so the peak is one block's
    weights twice) and pad every block's FFN down projection where padding_enabled()."""
    if not fusing_enabled():
        return False
    done = False
    for block in model.backbone.blocks:
        if model.args.weight_mode == "single":
            for name, (sub, parts) in FUSED_PARTS.items():
                done |= _fuse_group(block[sub], name, parts)
        done |= _pad_down(block["ffn"])
    model.__dict__.pop("_xlstm_compiled_forward", None)
    return done


def _groups(model):
    """(owner, fused name, its parts, the refusing function) of every fused or padded group of the model."""
    for block in model.backbone.blocks:
        for name, (sub, parts) in FUSED_PARTS.items():
            yield block[sub], name, parts, lambda owner, name=name, parts=parts: _fuse_group(owner, name, parts)
        yield block["ffn"], PADDED, ("proj_down",), _pad_down


def _stale(owner: nn.Module, parts, views) -> bool:
    """A part replaced (e.g. by its quantized form) or one of its arrays updated in place since the fusing."""
    return any(owner[p] is not m or any(n not in m or m[n] is not a for n, a in arrays.items())
               for p, (m, arrays) in zip(parts, views))


def refresh(model) -> bool:
    """Before an inference call: re-fuse a group whose parts were replaced or updated; True if anything changed.
    A group that stops being fusable (parts quantized differently) drops its fused arrays and runs unfused."""
    changed = False
    for owner, name, parts, again in _groups(model):
        hit = owner.__dict__.get(_KEY + name)
        if hit is not None and _stale(owner, parts, hit[1]):
            again(owner)
            changed = True
    if changed:
        model.__dict__.pop("_xlstm_compiled_forward", None)  # traced with the old arrays
    return changed


def rebind(model) -> None:
    """After an mx.compile trace: record the parts' arrays as they are now. The trace put the same arrays back
    as new Python objects (models/compiled.py), which the identity checks of `refresh` would take for updates."""
    for owner, name, parts, _ in _groups(model):
        hit = owner.__dict__.get(_KEY + name)
        if hit is not None and all(owner[p] is m for p, (m, _) in zip(parts, hit[1])):
            owner.__dict__[_KEY + name] = (hit[0], [(m, {n: m[n] for n in arrays}) for m, arrays in hit[1]])


def group(owner: nn.Module, name: str) -> FusedLinear | None:
    """The fused group `name` of `owner` to use now, or None (not fused, or not inside an inference call)."""
    hit = owner.__dict__.get(_KEY + name) if _inference.value else None
    return None if hit is None else hit[0]


def is_fused(model) -> bool:
    return any(k.startswith(_KEY) for b in model.backbone.blocks for k in b.mlstm_layer.__dict__)


def padded_to(model) -> int | None:
    """The padded FFN inner width the down projections run at, or None (not padded)."""
    widths = {hit[0].weight.shape[1] for b in model.backbone.blocks
              if (hit := b["ffn"].__dict__.get(_KEY + PADDED)) is not None}
    return max(widths) if widths else None


def describe(model) -> str:
    """What the projections of a block run as, for the verbose line."""
    width = padded_to(model)
    pad = (f"; FFN down padded {model.args.ffn_dim} -> {width} inputs (zeros; XLSTM_MLX_FFN_PAD)"
           if width else "")
    return _describe_fusing(model) + pad


def _describe_fusing(model) -> str:
    fused = "q,k,v,o one matmul; i,f one float32-input matmul; FFN gate+up one matmul"
    if model.args.weight_mode == "fused":
        return f"fused (stored fused): {fused}"
    if is_fused(model):
        quant = sorted({f"{hit[0].quant[1]}-bit group {hit[0].quant[0]}" for b in model.backbone.blocks
                        for sub in ("mlstm_layer", "ffn") for k, hit in b[sub].__dict__.items()
                        if k.startswith(_KEY) and hit[0].quant is not None})
        return f"stored single, fused for inference: {fused}" + (f" (quantized {', '.join(quant)})" if quant else "")
    return "single (as stored, not fused): q, k, v, o, i, f, FFN gate, FFN up each a matmul"
