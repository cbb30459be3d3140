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
first checks that every part is still the plain nn.Linear whose weight is the recorded view: a part updated in
place (model.update, a training step) is fused again, a quantized part ends its group's fusing. Without a cache
(a training loss) the single layers run, so gradients flow to the stored parameters as always.

The gate projections stay a matmul of their own because q/k/v/o take the normalized input rounded to the
compute dtype while the gates take it unrounded (float32); folding them into qkv_opreact would round the gate
input to bfloat16 under the 'fast' profile. With float32 weights the two could be one matmul (not done).

`with fusing(False): load(...)` keeps a model unfused: the reference.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from xlstm_mlx import env

# fused layer -> (the block's sub-module, the single layers it stacks, in the fused row order)
FUSED_PARTS = {
    "qkv_opreact": ("mlstm_layer", ("q", "k", "v", "ogate_preact")),
    "ifgate_preact": ("mlstm_layer", ("igate_preact", "fgate_preact")),
    "proj_up_gate_z": ("ffn", ("proj_up_gate", "proj_up")),
}
_KEY = "_xlstm_fused_"  # + fused name: (weight, bias or None, [(part, weight view, bias view)]) in __dict__

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


def _parts_fusable(layers) -> bool:
    return (all(type(m) is nn.Linear for m in layers) and len({m.weight.dtype for m in layers}) == 1
            and len({"bias" in m for m in layers}) == 1)


def _fuse_group(owner: nn.Module, name: str, parts: tuple[str, ...]) -> bool:
    layers = [owner[p] for p in parts]
    if not _parts_fusable(layers):
        owner.__dict__.pop(_KEY + name, None)
        return False
    w = mx.concatenate([m.weight for m in layers], axis=0)
    b = mx.concatenate([m.bias for m in layers], axis=0) if "bias" in layers[0] else None
    mx.eval(w, *([b] if b is not None else []))
    rows, views, start = [m.weight.shape[0] for m in layers], [], 0
    for m, r in zip(layers, rows):
        m.weight = w[start:start + r]  # a view of the fused array: the stored weight, no second copy
        if b is not None:
            m.bias = b[start:start + r]
        views.append((m, m.weight, m.bias if b is not None else None))
        start += r
    mx.eval([v[1] for v in views] + [v[2] for v in views if v[2] is not None])
    owner.__dict__[_KEY + name] = (w, b, views)
    return True


def fuse_model(model) -> bool:
    """Fuse every block's projection groups (block by block, so the peak is one block's weights twice)."""
    if not fusing_enabled() or model.args.weight_mode != "single":
        return False
    done = False
    for block in model.backbone.blocks:
        for name, (sub, parts) in FUSED_PARTS.items():
            done |= _fuse_group(block[sub], name, parts)
    model.__dict__.pop("_xlstm_compiled_forward", None)
    return done


def refresh(model) -> bool:
    """Before an inference call: re-fuse a group whose parts were replaced; True if anything changed."""
    changed = False
    for block in model.backbone.blocks:
        for name, (sub, parts) in FUSED_PARTS.items():
            owner = block[sub]
            hit = owner.__dict__.get(_KEY + name)
            if hit is None:
                continue
            if any(owner[p] is not m or m.weight is not w or (b is not None and m.bias is not b)
                   for p, (m, w, b) in zip(parts, hit[2])):
                _fuse_group(owner, name, parts)
                changed = True
    if changed:
        model.__dict__.pop("_xlstm_compiled_forward", None)  # traced with the old arrays
    return changed


def adopt_traced(model) -> None:
    """After an inference call: record the single layers' current weight objects as the fused views.

    mx.compile (the compiled decode step, whose inputs are the parameter tree) swaps tracers into the tree while
    it traces and then puts the arrays back as *new Python objects* of the same arrays: same buffers, new
    identities. Without this, refresh() took every traced step for a weight update, fused every group again
    and dropped the compiled step, which traced again: measured 20-60 ms a token extra on the 64m model on a
    CPU. Nothing else can change a weight inside an inference call, so what differs here is that rewrap."""
    for block in model.backbone.blocks:
        for name, (sub, parts) in FUSED_PARTS.items():
            owner = block[sub]
            hit = owner.__dict__.get(_KEY + name)
            if hit is None:
                continue
            w, b, views = hit
            if all(owner[p] is m for p, (m, _, _) in zip(parts, views)):
                owner.__dict__[_KEY + name] = (w, b, [(m, m.weight, m.bias if vb is not None else None)
                                                      for m, _, vb in views])


def group(owner: nn.Module, name: str):
    """(weight, bias) of a fused group to use now, or None (not fused, or not inside an inference call)."""
    hit = owner.__dict__.get(_KEY + name) if _inference.value else None
    return None if hit is None else hit[:2]


def is_fused(model) -> bool:
    return any(k.startswith(_KEY) for b in model.backbone.blocks for k in b.mlstm_layer.__dict__)


def describe(model) -> str:
    """What the projections of a block run as, for the verbose line."""
    fused = "q,k,v,o one matmul; i,f one float32-input matmul; FFN gate+up one matmul"
    if model.args.weight_mode == "fused":
        return f"fused (stored fused): {fused}"
    if is_fused(model):
        return f"stored single, fused for inference: {fused}"
    return "single (as stored, not fused): q, k, v, o, i, f, FFN gate, FFN up each a matmul"
