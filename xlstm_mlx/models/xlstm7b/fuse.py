"""Load-time fusing of the projections of a block: the stored 'single' layout becomes the official 'fused' one.

A stored-single block makes eight matmuls per token (q, k, v, output gate, input gate, forget gate, FFN gate,
FFN up); the fused layout makes three:
    qkv_opreact    = [q; k; v; ogate_preact]      (compute dtype: the big matmul, bf16 weights at the bf16 rate)
    ifgate_preact  = [igate_preact; fgate_preact] (takes the float32 residual input: docs/numerics.md)
    proj_up_gate_z = [proj_up_gate; proj_up]      (the FFN's gate and up halves)
Each output row of a fused matrix is the same dot product as the row it came from, so the logits agree with the
unfused model to float32 rounding (tests/models/test_fused_load.py); the unfused model stays the reference
(build it with weight_mode='single', or load inside `fusing(False)`).

The gate projections stay a matmul of their own because q/k/v/o take the normalized input rounded to the
compute dtype while the gates take it unrounded (float32); folding them into qkv_opreact would round the gate
input to bfloat16 under the 'fast' profile.

Quantized checkpoints keep their stored layout: their config.json names every quantized layer by path, and a
fused layer would have none of those names (a checkpoint quantized from a fused model is stored fused).
"""

from __future__ import annotations

import contextlib

import mlx.core as mx

from xlstm_mlx.errors import CheckpointError

# fused layer -> (the block's sub-module, the single layers it stacks, in the fused row order)
FUSED_PARTS = {
    "qkv_opreact": ("mlstm_layer", ("q", "k", "v", "ogate_preact")),
    "ifgate_preact": ("mlstm_layer", ("igate_preact", "fgate_preact")),
    "proj_up_gate_z": ("ffn", ("proj_up_gate", "proj_up")),
}

_enabled = True


def fusing_enabled() -> bool:
    return _enabled


@contextlib.contextmanager
def fusing(enabled: bool = True):
    """Load stored-single checkpoints fused (the default) or as stored, inside a `with` block."""
    global _enabled
    previous, _enabled = _enabled, enabled
    try:
        yield
    finally:
        _enabled = previous


def part_rows(args) -> dict[str, int]:
    """Output rows of each single layer that a fused layer stacks."""
    return {"q": args.qk_dim, "k": args.qk_dim, "v": args.v_dim, "ogate_preact": args.v_dim,
            "igate_preact": args.num_heads, "fgate_preact": args.num_heads, "proj_up_gate": args.ffn_dim,
            "proj_up": args.ffn_dim}


def fuse_single_weights(weights: dict[str, mx.array], args) -> dict[str, mx.array]:
    """Stored-single tensors -> the fused layout's tensors (lazy: concatenations, nothing read yet).

    Each part's shape is checked first, so that a wrong tensor is named as stored (the strict check after
    sanitize sees only the fused names)."""
    rows = part_rows(args)
    wrong = []
    for name, arr in weights.items():
        parts = name.split(".")
        if len(parts) == 6 and parts[:2] == ["backbone", "blocks"] and parts[4] in rows:  # backbone.blocks.N.sub.layer.w
            want = (rows[parts[4]], args.hidden_size) if parts[5] == "weight" else (rows[parts[4]],)
            if tuple(arr.shape) != want:
                wrong.append(f"{name}: expected {want}, found {tuple(arr.shape)}")
    if wrong:
        raise CheckpointError("checkpoint does not match the model built from it:\n  shape mismatch: "
                              + "; ".join(wrong[:20]))
    out = dict(weights)
    for b in range(args.num_blocks):
        for fused, (sub, parts) in FUSED_PARTS.items():
            prefix = f"backbone.blocks.{b}.{sub}."
            for suffix in ("weight", "bias"):
                names = [f"{prefix}{p}.{suffix}" for p in parts]
                have = [n for n in names if n in out]
                if not have:
                    continue
                if len(have) != len(names):
                    missing = sorted(set(names) - set(have))
                    raise CheckpointError(f"block {b}: {missing} missing while {have} are present; the checkpoint "
                                          "is truncated or mixes layouts (re-download or re-convert it)")
                out[f"{prefix}{fused}.{suffix}"] = mx.concatenate([out.pop(n) for n in names], axis=0)
    return out


def describe(args) -> str:
    """What the projections of a block run as, for the verbose line."""
    stored = args.stored_weight_mode or args.weight_mode
    if args.weight_mode == "fused":
        how = "fused at load" if stored == "single" else "fused (stored fused)"
        return f"{how}: q,k,v,o one matmul; i,f one float32-input matmul; FFN gate+up one matmul"
    return "single (stored single, not fused): q, k, v, o, i, f, FFN gate, FFN up each a matmul"
