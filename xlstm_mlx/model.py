"""The xLSTM-7B-family language model: embedding -> blocks -> out_norm -> lm_head -> logit soft-cap.

No recurrence math lives here (see kernels/); this file only wires the pieces and the cache.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from .blocks.mlstm import MLSTMBlock, soft_cap
from .cache import Cache, check_model_inputs
from .config import ModelArgs
from .norms import RMSNorm
from .numerics_check import assert_finite
from .profiles import NumericsProfile, load_profile


class Backbone(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.embeddings = nn.Embedding(args.vocab_size, args.hidden_size)
        self.blocks = [MLSTMBlock(args) for _ in range(args.num_blocks)]
        if args.add_out_norm:
            self.out_norm = RMSNorm(args.hidden_size, args.norm_eps, args.out_norm_bias)


class Model(nn.Module):
    def __init__(self, args: ModelArgs, profile: NumericsProfile | None = None):
        super().__init__()
        self.args = args
        self.profile = profile or load_profile("parity")
        self.check_numerics = False
        self.backbone = Backbone(args)
        if not args.tie_word_embeddings:
            self.lm_head = nn.Linear(args.hidden_size, args.vocab_size, bias=False)

    @property
    def block_types(self) -> list[str]:
        return [b.block_type for b in self.backbone.blocks]

    def make_cache(self, batch_size: int = 1) -> Cache:
        return Cache([b.make_state(batch_size) for b in self.backbone.blocks], batch_size)

    def __call__(self, input_ids: mx.array, cache: Cache | None = None, mask: mx.array | None = None):
        """input_ids [B, T] -> float32 logits [B, T, V]. `cache` is advanced in place.

        `mask` [B, T] (True = real token) turns the other positions into identity steps on the state.
        """
        B, T = check_model_inputs(input_ids, cache)
        check = self.check_numerics
        # the residual stream is carried in profile.residual_dtype (float32: a bf16 residual loses the
        # small sub-layer updates against the running sum; docs/numerics.md)
        x = self.backbone.embeddings(input_ids).astype(self.profile.mx_residual_dtype)
        if check:
            assert_finite("embeddings", x)
        for idx, block in enumerate(self.backbone.blocks):
            state = cache.layers[idx] if cache is not None else None
            x, state = block(x, state, mask, self.profile, check=f"block {idx}" if check else None)
            if cache is not None:
                cache.layers[idx] = state
        if cache is not None:
            cache.offset += T
        if self.args.add_out_norm:
            x = self.backbone.out_norm(x)
        head = self.backbone.embeddings if self.args.tie_word_embeddings else self.lm_head
        # the head's input takes the dtype of its float weight: float32 when the profile keeps the
        # lm_head in float32 (head_dtype), the compute dtype for a tied or quantized head
        x = x.astype(head.scales.dtype if "scales" in head else head.weight.dtype)
        logits = head.as_linear(x) if self.args.tie_word_embeddings else head(x)
        # float32 before the cap, as transformers does (lm_head(h).float(), then soft-cap); with a
        # float32 head the logits are not rounded to bfloat16 first (docs/numerics.md)
        logits = soft_cap(logits.astype(mx.float32), self.args.output_logit_soft_cap)
        if check:
            assert_finite("logits", logits)
        return logits
