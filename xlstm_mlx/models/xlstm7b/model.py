"""The xLSTM-7B-family language model: embedding -> blocks -> out_norm -> lm_head -> logit soft-cap.

No recurrence math lives here (see kernels/); this file only wires the pieces. Parameter names follow the
Hugging Face `xlstm` layout, so those checkpoints load without renaming.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from xlstm_mlx import kernels
from xlstm_mlx.models.base import RecurrentLM, soft_cap
from xlstm_mlx.models.describe import blocks_line
from xlstm_mlx.models.layers.norms import RMSNorm
from xlstm_mlx.models.numerics_check import assert_finite
from xlstm_mlx.models.xlstm7b.args import ModelArgs
from xlstm_mlx.models.xlstm7b.block import MLSTMBlock, linear
from xlstm_mlx.models.xlstm7b import fuse
from xlstm_mlx.profiles import NumericsProfile, load_profile

FAMILY_LABEL = "xLSTM-7B family (mLSTM blocks, Hugging Face xlstm / official xLSTMLarge layout)"


class Backbone(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.embeddings = nn.Embedding(args.vocab_size, args.hidden_size)
        self.blocks = [MLSTMBlock(args) for _ in range(args.num_blocks)]
        if args.add_out_norm:
            self.out_norm = RMSNorm(args.hidden_size, args.norm_eps, args.out_norm_bias)


class Model(RecurrentLM):
    embedding_param = "backbone.embeddings.weight"

    def __init__(self, args: ModelArgs, profile: NumericsProfile | None = None):
        super().__init__(args, profile or load_profile("parity"))
        self.backbone = Backbone(args)
        if not args.tie_word_embeddings:
            self.lm_head = nn.Linear(args.hidden_size, args.vocab_size, bias=False)

    @property
    def blocks(self) -> list:
        return self.backbone.blocks

    def fuse_projections(self) -> bool:
        """Called by `load`: fused arrays for a stored-single model's inference calls (models/xlstm7b/fuse.py)."""
        return fuse.fuse_model(self)

    def after_trace(self) -> None:
        fuse.rebind(self)  # the compiled step's trace re-wrapped the arrays (models/compiled.py)

    def __call__(self, input_ids, cache=None, mask=None, compiled=None, check_ids: bool = True,
                 last_only: bool = False):
        kw = dict(cache=cache, mask=mask, compiled=compiled, check_ids=check_ids, last_only=last_only)
        if cache is None:  # e.g. a training loss: the stored single layers, gradients to the parameters
            return super().__call__(input_ids, **kw)
        fuse.refresh(self)  # parts updated or quantized since the fusing: fuse them again / stop
        with fuse.inference_call():
            return super().__call__(input_ids, **kw)

    def forward(self, input_ids, states, mask, check: bool, last_only: bool = False):
        """(ids [B, T], per-block states) -> (float32 logits [B, T, V], new states); last_only: logits
        [B, 1, V] of the last position (the out_norm and the head see that row only)."""
        # the residual stream is carried in profile.residual_dtype (float32: a bf16 residual loses the
        # small sub-layer updates against the running sum; docs/numerics.md)
        x = kernels.get("embed.lookup")(self.backbone.embeddings, input_ids).astype(self.profile.mx_residual_dtype)
        # one token a row and the fused step in every block: the blocks run on [B, D] rows, so no product of the
        # step reshapes its input or output (each reshape is a node: host work at every step; docs/bench.md)
        rows = bool(self.backbone.blocks) and all(b.mlstm_layer.decodes_fused(input_ids.shape[1], mask, self.profile)
                                                  for b in self.backbone.blocks)
        if rows:
            x = x.reshape(x.shape[0], -1)
        if check:
            assert_finite("embeddings", x)
        new_states, carried = [], None
        blocks = self.backbone.blocks
        for idx, (block, state) in enumerate(zip(blocks, states)):
            # each block adds the previous block's FFN output inside its first norm (block.py: `carried`); at
            # decode (rows) the previous block does that add and norm with its FFN's down projection (next_norm)
            nxt = blocks[idx + 1].norm_mlstm if rows and not check and idx + 1 < len(blocks) else None
            x, carried, state = block(x, state, mask, self.profile, check=f"block {idx}" if check else None,
                                      carried=carried, next_norm=nxt)
            new_states.append(state)
            self.block_done(idx, [x, carried], new_states)
        if last_only and not rows:  # the blocks ran on every position (the state needs them); the head needs the last
            x = x[:, -1:]
            carried = None if carried is None else carried[:, -1:]
        if carried is not None:
            x = x + carried
        if self.args.add_out_norm:
            x = self.backbone.out_norm(x)
        head = self.backbone.embeddings if self.args.tie_word_embeddings else self.lm_head
        # the head's input takes the dtype of its float weight: float32 when the profile keeps the
        # lm_head in float32 (head_dtype), the compute dtype for a tied or quantized head
        x = x.astype(head.scales.dtype if "scales" in head else head.weight.dtype)
        logits = head.as_linear(x) if self.args.tie_word_embeddings else linear(head, x)
        # float32 before the cap, as transformers does (lm_head(h).float(), then soft-cap); with a
        # float32 head the logits are not rounded to bfloat16 first (docs/numerics.md)
        # (float64 in the exact profile: its logits are the oracle's)
        logits = soft_cap(logits.astype(mx.float64 if self.profile.exact else mx.float32),
                          self.args.output_logit_soft_cap)
        if check:
            assert_finite("logits", logits)
        return (logits[:, None] if rows else logits), new_states

    def kernel_names(self) -> list[str]:
        names = [f"mlstm.{self.profile.prefill_kernel}", f"mlstm.{self.profile.step_kernel}", "mlstm.headnorm_gate",
                 "mlstm.gate_preact", "embed.lookup", "rows.tiles"]
        if self.args.weight_mode == "fused" or fuse.is_fused(self):
            names += ["mlstm.decode_step", "ffn.swiglu"]
        quantized = any(type(m) is nn.QuantizedLinear for _, m in self.leaf_modules_flat())
        quant = ["matmul.quantized", "matmul.quantized_add_rms", "mlstm.decode_layer"] if quantized else []
        return names + ["matmul.skinny", *quant, *kernels.MATH, *kernels.NORMS]

    def describe(self) -> dict:
        a = self.args
        return {
            "family": FAMILY_LABEL,
            "architecture": f"{a.num_blocks} mLSTM blocks",
            "hidden_size": a.hidden_size,
            "num_blocks": a.num_blocks,
            "num_heads": a.num_heads,
            "qk_head_dim": a.qk_head_dim,
            "v_head_dim": a.v_head_dim,
            "ffn_dim": a.ffn_dim,
            "vocab_size": a.vocab_size,
            "weight_mode": a.weight_mode,
            "projections": fuse.describe(self),
            "use_bias": a.use_bias,
            "tie_word_embeddings": a.tie_word_embeddings,
            "gate_soft_cap": a.gate_soft_cap,
            "output_logit_soft_cap": a.output_logit_soft_cap,
            "state_floats_per_sequence": a.state_floats_per_sequence(),
        }

    def diagram(self) -> list[str]:
        a = self.args
        caps = f"gates soft-capped at {a.gate_soft_cap}" if a.gate_soft_cap is not None else "gates uncapped"
        lines = [
            f"  tokens -> embedding [{a.vocab_size} x {a.hidden_size}]",
            "     |",
            f"     +-- {blocks_line('mLSTM', 0, a.num_blocks - 1)}  (weights {a.weight_mode}, bias {a.use_bias})",
            f"     |     x + mLSTM(RMSNorm(x)): {a.num_heads} heads, per head q/k {a.qk_head_dim}, v {a.v_head_dim}; {caps}",
            f"     |     x + FFN(RMSNorm(x)):   SwiGLU FFN {a.hidden_size} -> {a.ffn_dim} -> {a.hidden_size}",
            "     |",
        ]
        head = "lm_head" if not a.tie_word_embeddings else "lm_head (tied to the embedding)"
        cap = f" -> soft-cap {a.output_logit_soft_cap}" if a.output_logit_soft_cap is not None else ""
        norm = "out_norm RMSNorm -> " if a.add_out_norm else ""
        lines.append(f"  {norm}{head} [{a.hidden_size} -> {a.vocab_size}]{cap} -> logits (float32)")
        return lines
