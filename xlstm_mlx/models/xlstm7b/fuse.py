"""Fusing the projections of a loaded stored-single model: eight matmuls per block become three.

A stored-single block makes eight matmuls per token (q, k, v, output gate, input gate, forget gate, FFN gate,
FFN up); the fused layout (the official `weight_mode: fused`) makes three:
    qkv_opreact    = [q; k; v; ogate_preact]      (compute dtype: the big matmul, bf16 weights at the bf16 rate)
    ifgate_preact  = [igate_preact; fgate_preact] (takes the float32 residual input: docs/numerics.md)
    proj_up_gate_z = [proj_up_gate; proj_up]      (the FFN's gate and up halves)
Each output row of a fused matrix is the same dot product as the row it came from, so the logits agree with the
unfused model to float32 rounding (tests/models/test_fused_load.py); the unfused model stays the reference
(`with fusing(False): load(...)`, or a model built with weight_mode='single').

The gate projections stay a matmul of their own because q/k/v/o take the normalized input rounded to the
compute dtype while the gates take it unrounded (float32); folding them into qkv_opreact would round the gate
input to bfloat16 under the 'fast' profile.

When: `load` marks a float stored-single model (`request`), and the model fuses itself, in place and once, at its
first call with a cache (generation, bench, perplexity: inference). Until then it is exactly the stored layout,
so `convert`/`quantize` see and write the layers the checkpoint stores (config.json's quantization section names
layers by path) and a training step never meets a parameter tree that changes under it. Quantized models are not
fused (their packed layers are kept as stored).
"""

from __future__ import annotations

import contextlib

import mlx.core as mx
import mlx.nn as nn

# fused layer -> (the block's sub-module, the single layers it stacks, in the fused row order)
FUSED_PARTS = {
    "qkv_opreact": ("mlstm_layer", ("q", "k", "v", "ogate_preact")),
    "ifgate_preact": ("mlstm_layer", ("igate_preact", "fgate_preact")),
    "proj_up_gate_z": ("ffn", ("proj_up_gate", "proj_up")),
}
_PENDING = "_xlstm_fuse_pending"

_enabled = True


def fusing_enabled() -> bool:
    return _enabled


@contextlib.contextmanager
def fusing(enabled: bool = True):
    """Let `load` mark stored-single models for fusing (the default) or not, inside a `with` block."""
    global _enabled
    previous, _enabled = _enabled, enabled
    try:
        yield
    finally:
        _enabled = previous


def can_fuse(model) -> bool:
    """A stored-single model whose parts are all plain float nn.Linear layers."""
    if model.args.weight_mode != "single":
        return False
    for block in model.backbone.blocks:
        for sub, parts in FUSED_PARTS.values():
            if any(type(block[sub][p]) is not nn.Linear for p in parts):
                return False
    return True


def request(model) -> bool:
    """Mark a loaded model to fuse at its first inference call (when enabled and possible)."""
    pending = fusing_enabled() and can_fuse(model)
    model.__dict__[_PENDING] = pending  # a plain attribute: nn.Module keeps it out of its parameters
    return pending


def pending(model) -> bool:
    return bool(model.__dict__.get(_PENDING))


def _stack(layers: list[nn.Linear]) -> nn.Linear:
    w = mx.concatenate([m.weight for m in layers], axis=0)
    fused = nn.Linear(w.shape[1], w.shape[0], bias="bias" in layers[0])
    fused.weight = w
    if "bias" in layers[0]:
        fused.bias = mx.concatenate([m.bias for m in layers], axis=0)
    return fused


def fuse_model(model) -> None:
    """Replace each block's single projections by the fused ones, in place (block by block, evaluated, so the
    single weights are freed as it goes: the peak is one block's projections twice)."""
    if not can_fuse(model):
        model.__dict__[_PENDING] = False
        return
    for block in model.backbone.blocks:
        for fused_name, (sub, parts) in FUSED_PARTS.items():
            owner = block[sub]
            fused = _stack([owner[p] for p in parts])
            mx.eval(fused.parameters())
            for p in parts:
                owner.pop(p)
            setattr(owner, fused_name, fused)
        block.ffn.fused = True
    model.args.stored_weight_mode, model.args.weight_mode = "single", "fused"  # one args object for all blocks
    model.__dict__[_PENDING] = False
    model.__dict__.pop("_xlstm_compiled_forward", None)  # a step compiled before would hold the old tree


def describe(model) -> str:
    """What the projections of a block run as, for the verbose line."""
    a = model.args
    fused = "q,k,v,o one matmul; i,f one float32-input matmul; FFN gate+up one matmul"
    if pending(model):
        return f"stored single, fused at the first inference call: {fused}"
    if a.weight_mode == "fused":
        return f"fused{' at the first inference call' if a.stored_weight_mode == 'single' else ' (stored fused)'}: {fused}"
    return "single (as stored, not fused): q, k, v, o, i, f, FFN gate, FFN up each a matmul"
