"""The official `xlstm` package's xLSTMLMModel (paper-style mixed mLSTM/sLSTM stacks) on MLX.

    token_embedding -> blocks (mLSTM or sLSTM, per the checkpoint) -> post_blocks_norm -> lm_head

Same Model API as model.py: `model(ids, cache=None, mask=None) -> float32 logits`, `make_cache()`,
`model.args` (StackArgs), `model.profile`. Unlike xLSTM-7B there is no logit soft-cap (the official
xLSTMLMModel has none). The module tree mirrors the official one so state_dict keys load as they
are; `sanitize` turns the few tensors whose official layout is not the one we compute with into
ours (conv weights, the sLSTM cell's recurrent kernel and bias).
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from . import kernels
from .blocks.official_layers import ResidualLayerNorm
from .blocks.xlstm_block import make_block
from .cache import Cache, check_model_inputs
from .kernels.slstm import sequence_path
from .numerics_check import assert_finite
from .profiles import NumericsProfile, load_profile
from .stack_config import StackArgs


class xLSTMBlockStack(nn.Module):
    def __init__(self, args: StackArgs):
        super().__init__()
        self.blocks = [make_block(t, args) for t in args.block_types]
        if args.add_post_blocks_norm:
            self.post_blocks_norm = ResidualLayerNorm(args.embedding_dim)


class StackModel(nn.Module):
    def __init__(self, args: StackArgs, profile: NumericsProfile | None = None):
        super().__init__()
        self.args = args
        self.profile = profile or load_profile("parity")
        self.check_numerics = False
        self.token_embedding = nn.Embedding(args.vocab_size, args.embedding_dim)
        self.xlstm_block_stack = xLSTMBlockStack(args)
        if not args.tie_weights:
            self.lm_head = nn.Linear(args.embedding_dim, args.vocab_size, bias=False)

    @property
    def block_types(self) -> list[str]:
        return list(self.args.block_types)

    def describe(self) -> dict:
        """What `xlstm-mlx info` shows for this family."""
        a = self.args
        d = {
            "family": "official xLSTM stack (xlstm.xLSTMLMModel)",
            "architecture": a.ratio(),
            "block_types": ",".join(a.block_types),
            "embedding_dim": a.embedding_dim,
            "num_blocks": a.num_blocks,
            "vocab_size": a.vocab_size,
            "tie_weights": a.tie_weights,
            "post_blocks_norm": a.add_post_blocks_norm,
        }
        if a.mlstm:
            m = a.mlstm
            d["mlstm"] = (f"inner={m.inner_dim} heads={m.num_heads} qkv_blocksize={m.qkv_proj_blocksize} "
                          f"conv={m.conv1d_kernel_size} bias={m.bias}")
        if a.slstm:
            s = a.slstm
            ffn = f"ffn={s.ffn_up_dim}({s.ffn_act_fn})" if s.ffn_up_dim else "ffn=none"
            d["slstm"] = (f"heads={s.num_heads} conv={s.conv1d_kernel_size} group_norm_weight={s.group_norm_weight} "
                          f"{ffn} stored_layout={s.layout} prefill={sequence_path()}")
        d["state_floats_per_sequence"] = a.state_floats_per_sequence()
        return d

    def make_cache(self, batch_size: int = 1) -> Cache:
        return Cache([b.make_state(batch_size) for b in self.xlstm_block_stack.blocks], batch_size)

    def __call__(self, input_ids: mx.array, cache: Cache | None = None, mask: mx.array | None = None):
        """input_ids [B, T] -> float32 logits [B, T, V]; `cache` is advanced in place.

        `mask` [B, T] (True = real token) makes the other positions identity steps on every state
        (recurrent and convolution), wherever they sit in the row.
        """
        B, T = check_model_inputs(input_ids, cache)
        blocks = self.xlstm_block_stack.blocks
        states = list(cache.layers) if cache is not None else [b.make_state(B) for b in blocks]
        if T == 1 and mask is None and not self.check_numerics and not kernels.reference_forced():
            logits, states = self._compiled_step()(input_ids, states)
        else:
            logits, states = self._forward(input_ids, states, mask, self.check_numerics)
        if cache is not None:
            cache.layers[:] = states
            cache.offset += T
        return logits

    def _forward(self, input_ids, states, mask, check: bool):
        """The whole model as a function of (ids, per-block states) -> (float32 logits, new states)."""
        # the residual stream is carried in profile.residual_dtype (float32 in the shipped profiles)
        x = self.token_embedding(input_ids).astype(self.profile.mx_residual_dtype)
        stack = self.xlstm_block_stack
        new_states = []
        for idx, (block, state) in enumerate(zip(stack.blocks, states)):
            x, state = block(x, state, mask, self.profile, check=f"block {idx} ({block.block_type})" if check else None)
            new_states.append(state)
        if self.args.add_post_blocks_norm:
            x = stack.post_blocks_norm(x)
        head = self.token_embedding if self.args.tie_weights else self.lm_head
        # the head takes its input in the dtype of its (float) weight, or of its scales when quantized
        x = x.astype(head.scales.dtype if "scales" in head else head.weight.dtype)
        logits = head.as_linear(x) if self.args.tie_weights else head(x)
        logits = logits.astype(mx.float32)
        if check:
            assert_finite("logits", logits)
        return logits, new_states

    def _compiled_step(self):
        """The decode step (T = 1, no mask) as one compiled graph: a decode step is a few hundred tiny
        ops over all blocks, so launch overhead, not arithmetic, sets its speed. The weights are
        compile inputs (read at every call), so updating them needs no recompilation; the profile
        is baked in at trace time, so a new profile gets a new compiled function."""
        key = id(self.profile)
        if getattr(self, "_step_key", None) != key:
            self._step_fn = mx.compile(lambda ids, states: self._forward(ids, states, None, False), inputs=self)
            self._step_key = key
        return self._step_fn

    def sanitize(self, weights: dict[str, mx.array]) -> dict[str, mx.array]:
        """Official state_dict (names and layouts) -> this module tree."""
        return sanitize(weights, self.args)


def _slstm_cell_to_engine(R: mx.array, b: mx.array, layout: str, num_heads: int):
    """Official internal layouts -> ours: R [NH, DH_in, 4*DH_out], b [NH, 4*DH] (gate-major per head).

    vanilla backend: R [NH, 4*DH_out, DH_in] (gate, unit) x input; b [4, NH, DH] flattened
    cuda backend:    R [NH, DH_in, 4*DH_out] (already ours);      b [NH, 4, DH] flattened
    (xlstm 2.0.6, blocks/slstm/cell.py: _recurrent_kernel_ext2int / _bias_ext2int of each class)
    """
    if layout == "vanilla":
        R = R.swapaxes(1, 2)
        b = b.reshape(4, num_heads, -1).transpose(1, 0, 2)
    elif layout != "cuda":
        raise ValueError(f"unknown sLSTM layout {layout!r}")
    return R, b.reshape(num_heads, -1)


def sanitize(weights: dict[str, mx.array], args: StackArgs) -> dict[str, mx.array]:
    out = {}
    for k, v in weights.items():
        if k.endswith("conv1d.conv.weight"):  # torch depthwise [F, 1, KS] -> [KS, F]
            out[k.replace("conv1d.conv.weight", "conv1d.weight")] = v[:, 0, :].T
        elif k.endswith("conv1d.conv.bias"):
            out[k.replace("conv1d.conv.bias", "conv1d.bias")] = v
        elif k.endswith("slstm_cell._recurrent_kernel_"):
            pre = k[: -len("_recurrent_kernel_")]
            R, b = _slstm_cell_to_engine(v, weights[pre + "_bias_"], args.slstm.layout, args.slstm.num_heads)
            out[pre + "recurrent_kernel"] = R
            out[pre + "bias"] = b
        elif k.endswith("slstm_cell._bias_"):
            continue  # converted with its recurrent kernel
        elif k == "lm_head.weight" and args.tie_weights:
            continue  # the state_dict of a tied model lists the embedding twice
        else:
            out[k] = v
    return out
