"""The official `xlstm` package's xLSTMLMModel (paper-style mixed mLSTM/sLSTM stacks) on MLX.

    token_embedding -> blocks (mLSTM or sLSTM, per the checkpoint) -> post_blocks_norm -> lm_head

The family contract is models/base.py. The module tree mirrors the official one so state_dict keys load as they
are; layout.py turns the few tensors whose official layout is not the one we compute with into ours
(conv weights, the sLSTM cell's recurrent kernel and bias) and back.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from xlstm_mlx.errors import UsageError
from xlstm_mlx.models.base import RecurrentLM
from xlstm_mlx.models.describe import blocks_line, runs
from xlstm_mlx.models.layers.ffn import ACT_KERNELS
from xlstm_mlx.models.layers.norms import ResidualLayerNorm
from xlstm_mlx.models.numerics_check import assert_finite
from xlstm_mlx.models.xlstm_stack.args import StackArgs
from xlstm_mlx.models.xlstm_stack.blocks import make_block
from xlstm_mlx.profiles import NumericsProfile, load_profile

FAMILY_LABEL = "official xLSTM stack (xlstm.xLSTMLMModel)"


class XLSTMBlockStack(nn.Module):
    def __init__(self, args: StackArgs):
        super().__init__()
        self.blocks = [make_block(t, args) for t in args.block_types]
        if args.add_post_blocks_norm:
            self.post_blocks_norm = ResidualLayerNorm(args.embedding_dim)


class StackModel(RecurrentLM):
    embedding_param = "token_embedding.weight"

    def __init__(self, args: StackArgs, profile: NumericsProfile | None = None):
        super().__init__(args, profile or load_profile("parity"))
        if self.profile.exact:  # its sLSTM cells, convolutions and norms compute in float32 (kernels/slstm.py)
            raise UsageError(f"profile {self.profile.name!r} (float64) supports the xLSTM-7B family only; this "
                             "checkpoint is an official xLSTM stack: use 'parity' (float32)")
        self.token_embedding = nn.Embedding(args.vocab_size, args.embedding_dim)
        self.xlstm_block_stack = XLSTMBlockStack(args)
        if not args.tie_weights:
            self.lm_head = nn.Linear(args.embedding_dim, args.vocab_size, bias=False)

    @property
    def blocks(self) -> list:
        return self.xlstm_block_stack.blocks

    def kernel_names(self) -> list[str]:
        names = []
        if "mlstm" in self.args.block_types:
            names += [f"mlstm.{self.profile.prefill_kernel}", f"mlstm.{self.profile.step_kernel}"]
        if "slstm" in self.args.block_types:
            names += ["slstm.sequence", "slstm.step"]
        s = self.args.slstm
        if "mlstm" in self.args.block_types or (s is not None and s.conv1d_kernel_size > 0):
            names.append("math.silu")  # the mLSTM layer's conv and output gate, the sLSTM conv
        if s is not None and s.ffn_up_dim and ACT_KERNELS.get(s.ffn_act_fn) not in (None, *names):
            names.append(ACT_KERNELS[s.ffn_act_fn])
        return names

    def describe(self) -> dict:
        """What `xlstm-mlx info` and the verbose line show for this family."""
        a = self.args
        d = {
            "family": FAMILY_LABEL,
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
                          f"{ffn} stored_layout={s.layout}")
        d["state_floats_per_sequence"] = a.state_floats_per_sequence()
        return d

    def diagram(self) -> list[str]:
        a = self.args
        lines = [f"  tokens -> token_embedding [{a.vocab_size} x {a.embedding_dim}]", "     |"]
        for t, first, last in runs(a.block_types):
            if t == "mlstm":
                m = a.mlstm
                detail = (f"x + mLSTM(LayerNorm(x)): up-projection to {m.inner_dim}, {m.num_heads} heads, "
                          f"causal conv {m.conv1d_kernel_size}, q/k/v blocksize {m.qkv_proj_blocksize}")
            else:
                s = a.slstm
                ffn = (f"; x + FFN(LayerNorm(x)) {a.embedding_dim} -> {s.ffn_up_dim} ({s.ffn_act_fn})"
                       if s.ffn_up_dim else "")
                detail = f"x + sLSTM(LayerNorm(x)): {s.num_heads} heads, causal conv {s.conv1d_kernel_size}{ffn}"
            lines += [f"     +-- {blocks_line(t.replace('lstm', 'LSTM'), first, last)}", f"     |     {detail}"]
        lines.append("     |")
        norm = "post_blocks_norm LayerNorm -> " if a.add_post_blocks_norm else ""
        head = "lm_head (tied to the embedding)" if a.tie_weights else "lm_head"
        lines.append(f"  {norm}{head} [{a.embedding_dim} -> {a.vocab_size}] -> logits (float32)")
        return lines

    def forward(self, input_ids, states, mask, check: bool, last_only: bool = False):
        """The whole model as a function of (ids, per-block states) -> (float32 logits, new states); last_only:
        the logits of the last position only, [B, 1, V] (the post-blocks norm and the head see that row only).

        `mask` [B, T] (True = real token) makes the other positions identity steps on every state
        (recurrent and convolution), wherever they sit in the row. Unlike xLSTM-7B there is no logit
        soft-cap (the official xLSTMLMModel has none)."""
        # the residual stream is carried in profile.residual_dtype (float32 in the shipped profiles)
        x = self.token_embedding(input_ids).astype(self.profile.mx_residual_dtype)
        stack = self.xlstm_block_stack
        new_states = []
        for idx, (block, state) in enumerate(zip(stack.blocks, states)):
            x, state = block(x, state, mask, self.profile, check=f"block {idx} ({block.block_type})" if check else None)
            new_states.append(state)
            self.block_done(idx, x, new_states)
        if last_only:  # the blocks ran on every position (the state needs them); the head needs the last one
            x = x[:, -1:]
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
