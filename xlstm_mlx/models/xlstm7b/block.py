"""The xLSTM-7B block: pre-RMSNorm mLSTM layer + residual, pre-RMSNorm SwiGLU FFN + residual.

Parameter names follow the Hugging Face `xlstm` layout so that checkpoints load without renaming.
"""

import mlx.core as mx
import mlx.nn as nn

from xlstm_mlx import kernels
from xlstm_mlx.kernels.mlstm_chunkwise import mlstm_chunkwise_flops
from xlstm_mlx.models.xlstm7b.args import ModelArgs
from xlstm_mlx.models.base import soft_cap
from xlstm_mlx.models.layers.norms import HeadwiseLayerNorm, RMSNorm
from xlstm_mlx.models.numerics_check import assert_finite
from xlstm_mlx.profiles import NumericsProfile


class MLSTMLayer(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        h, b = args.hidden_size, args.use_bias
        self.args = args
        if args.weight_mode == "single":
            self.q = nn.Linear(h, args.qk_dim, bias=b)
            self.k = nn.Linear(h, args.qk_dim, bias=b)
            self.v = nn.Linear(h, args.v_dim, bias=b)
            self.ogate_preact = nn.Linear(h, args.v_dim, bias=b)
            self.igate_preact = nn.Linear(h, args.num_heads, bias=True)
            self.fgate_preact = nn.Linear(h, args.num_heads, bias=True)
        else:
            self.qkv_opreact = nn.Linear(h, 2 * args.qk_dim + 2 * args.v_dim, bias=b)
            self.ifgate_preact = nn.Linear(h, 2 * args.num_heads, bias=True)
        self.multihead_norm = HeadwiseLayerNorm(args.num_heads, args.v_head_dim, args.norm_eps, b)
        self.out_proj = nn.Linear(args.v_dim, h, bias=b)

    def _project(self, x, compute_dtype):
        """x is the normalized input in the residual dtype (float32 in the shipped profiles).

        q, k, v, o take it in the compute dtype (the big matmuls at the weights' rate); the gate
        projections (NH outputs each, negligible work) take it as it is, so with a float32 residual the
        gate pre-activations are float32 end to end (docs/numerics.md).
        """
        a = self.args
        xc = x.astype(compute_dtype)
        if a.weight_mode == "single":
            q, k, v, o = self.q(xc), self.k(xc), self.v(xc), self.ogate_preact(xc)
            i, f = self.igate_preact(x), self.fgate_preact(x)
        else:
            q, k, v, o = mx.split(self.qkv_opreact(xc), [a.qk_dim, 2 * a.qk_dim, 2 * a.qk_dim + a.v_dim], axis=-1)
            i, f = mx.split(self.ifgate_preact(x), [a.num_heads], axis=-1)
        i = soft_cap(i.astype(mx.float32), a.gate_soft_cap)
        f = soft_cap(f.astype(mx.float32), a.gate_soft_cap)
        return q, k, v, o, i, f

    def __call__(self, x, state, mask, profile: NumericsProfile):
        a = self.args
        B, T, _ = x.shape
        cd = profile.mx_compute_dtype
        q, k, v, o, i, f = self._project(x, cd)
        kd = profile.mx_kernel_dtype

        def heads(t, d):  # [B, T, NH*d] -> [B, NH, T, d]
            return t.reshape(B, T, a.num_heads, d).transpose(0, 2, 1, 3).astype(kd)

        q, k, v = heads(q, a.qk_head_dim), heads(k, a.qk_head_dim), heads(v, a.v_head_dim)
        i, f = kernels.mask_gates(i.transpose(0, 2, 1), f.transpose(0, 2, 1), mask)
        eps = a.eps if profile.eps is None else profile.eps
        if T == 1:
            if state is None:
                state = kernels.mlstm_zero_state(B, a.num_heads, a.qk_head_dim, a.v_head_dim)
            step = kernels.get(f"mlstm.{profile.step_kernel}")
            h, state = step(q[:, :, 0], k[:, :, 0], v[:, :, 0], i[:, :, 0], f[:, :, 0], state, eps)
            h = h[:, :, None]
        else:
            seq = kernels.get(f"mlstm.{profile.prefill_kernel}")
            h, state = seq(q, k, v, i, f, state, eps=eps, chunk_size=profile.chunk_size)
        h = self.multihead_norm(h.transpose(0, 2, 1, 3).astype(cd))
        return self.out_proj(kernels.get("math.sigmoid")(o) * h), state


class FeedForward(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x)); silu is the registry's math.silu (a fused polynomial form on the CPU)."""

    def __init__(self, args: ModelArgs):
        super().__init__()
        h, d, b = args.hidden_size, args.ffn_dim, args.use_bias
        self.fused = args.weight_mode == "fused"
        if self.fused:
            self.proj_up_gate_z = nn.Linear(h, 2 * d, bias=b)
        else:
            self.proj_up_gate = nn.Linear(h, d, bias=b)
            self.proj_up = nn.Linear(h, d, bias=b)
        self.proj_down = nn.Linear(d, h, bias=b)

    def __call__(self, x):
        if self.fused:
            gate, z = mx.split(self.proj_up_gate_z(x), 2, axis=-1)
        else:
            gate, z = self.proj_up_gate(x), self.proj_up(x)
        return self.proj_down(kernels.get("math.silu")(gate) * z)


class MLSTMBlock(nn.Module):
    block_type = "mlstm"

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        self.norm_mlstm = RMSNorm(args.hidden_size, args.norm_eps, args.use_bias)
        self.mlstm_layer = MLSTMLayer(args)
        self.norm_ffn = RMSNorm(args.hidden_size, args.norm_eps, args.use_bias)
        self.ffn = FeedForward(args)

    def make_state(self, batch_size: int):
        a = self.args
        return kernels.mlstm_zero_state(batch_size, a.num_heads, a.qk_head_dim, a.v_head_dim)

    def recurrence_flops(self, chunk_size: int) -> int:
        a = self.args
        return a.num_heads * mlstm_chunkwise_flops(a.qk_head_dim, a.v_head_dim, chunk_size)

    def __call__(self, x, state, mask, profile: NumericsProfile, check: str | None = None):
        """x is the residual stream (profile.residual_dtype); sub-layer outputs are added to it.

        `check`, when given, is this block's name for the NaN locator (forces evaluation).
        """
        h = self.norm_mlstm(x)
        if check:
            assert_finite(f"{check}.norm_mlstm", h)
        h, state = self.mlstm_layer(h, state, mask, profile)
        if check:
            assert_finite(f"{check}.mlstm_layer (state C, n, m)", *state)
            assert_finite(f"{check}.mlstm_layer (output)", h)
        x = x + h
        h = self.norm_ffn(x)
        if check:
            assert_finite(f"{check}.norm_ffn", h)
        h = self.ffn(h.astype(profile.mx_compute_dtype))
        if check:
            assert_finite(f"{check}.ffn", h)
        return x + h, state
