"""The xLSTM-7B block: pre-RMSNorm mLSTM layer + residual, pre-RMSNorm SwiGLU FFN + residual.

Parameter names follow the Hugging Face `xlstm` layout so that checkpoints load without renaming.
"""

from typing import NamedTuple

import mlx.core as mx
import mlx.nn as nn

from xlstm_mlx import kernels
from xlstm_mlx.kernels import mlstm_chunkwise_cuda as chunkwise_cuda
from xlstm_mlx.kernels import decode_layer, gate_preact
from xlstm_mlx.kernels import mlstm_decode as decode
from xlstm_mlx.kernels.add_rms_norm import AddNorm, tail_counter
from xlstm_mlx.kernels.mlstm_chunkwise import mlstm_chunkwise_flops
from xlstm_mlx.models.xlstm7b import fuse
from xlstm_mlx.models.xlstm7b.args import ModelArgs
from xlstm_mlx.models.base import soft_cap
from xlstm_mlx.models.layers.norms import HeadwiseLayerNorm, RMSNorm
from xlstm_mlx.models.numerics_check import assert_finite
from xlstm_mlx.profiles import NumericsProfile


def linear(layer: nn.Module, x: mx.array) -> mx.array:
    """layer(x), with a float nn.Linear routed through the "matmul.skinny" kernel (on MLX's CUDA backend the
    tensor-core bf16 GEMV for decode-sized bf16 inputs where it was measured faster, MLX's matmul otherwise:
    kernels/skinny_gemm.py) and an nn.QuantizedLinear through "matmul.quantized" (kernels/quant_matmul.py: the
    path by the rows of x)."""
    if type(layer) is nn.QuantizedLinear:
        return kernels.get("matmul.quantized")(x, layer.weight, layer.scales, layer.get("biases"), _bias(layer),
                                               layer.group_size, layer.bits, layer.mode)
    if type(layer) is not nn.Linear:  # any other module (or a FusedLinear): its own call
        return layer(x)
    return kernels.get("matmul.skinny")(x, layer.weight, _bias(layer))


def _bias(layer: nn.Module):
    return layer["bias"] if "bias" in layer else None


def add_norm(norm: RMSNorm, x, h, compute_dtype, want_y: bool = True):
    """(x + h, RMSNorm(x + h), that in the compute dtype): the "norm.add_rms" kernel (one launch on CUDA);
    float64 (the exact profile) takes the norm's own float64 formulas. want_y=False: the middle one is not
    needed (None; on CUDA it is never written)."""
    if x.dtype == mx.float64:
        r = x if h is None else x + h
        y = norm(r)
        return r, y, y.astype(compute_dtype)
    return kernels.get("norm.add_rms")(x, h, norm.weight, _bias(norm), norm.eps, compute_dtype, want_y)


class ThenAddNorm(NamedTuple):
    """The residual add + RMSNorm that follows a sub-layer's last product: add_norm(norm, x, product, ...)."""
    norm: RMSNorm
    x: mx.array
    compute_dtype: mx.Dtype
    want_y: bool = True


class Normed(NamedTuple):
    """A block's output already added to the residual stream and normalized by the next block's first norm (the
    three of add_norm: r, y, y_c), handed to that block as its `carried`."""
    x: mx.array
    y: mx.array | None
    y_c: mx.array


def linear_add_norm(layer: nn.Module, h: mx.array, then: ThenAddNorm):
    """add_norm(then.norm, then.x, linear(layer, h), ...): for an nn.QuantizedLinear the registry's
    "matmul.quantized_add_rms" (on CUDA at decode one launch: the quantized GEMV's last block adds and normalizes,
    kernels/quant_gemv.py), the same bits as the two launches."""
    x = then.x
    if type(layer) is nn.QuantizedLinear and x.dtype != mx.float64:
        norm = then.norm
        spec = AddNorm(x, norm.weight, _bias(norm), norm.eps, then.compute_dtype, then.want_y, tail_counter(layer))
        return kernels.get("matmul.quantized_add_rms")(h, layer.weight, layer.scales, layer.get("biases"),
                                                      _bias(layer), layer.group_size, layer.bits, layer.mode, spec)
    return add_norm(then.norm, x, linear(layer, h), then.compute_dtype, then.want_y)


def fused_or_layer(owner: nn.Module, name: str, x: mx.array) -> mx.array:
    """The fused projection `name` of `owner`: its own layer (stored fused), or the fused arrays of a stored-single
    model inside an inference call (fuse.py; float or quantized alike)."""
    if name in owner:
        return linear(owner[name], x)
    return fuse.group(owner, name)(x)


def has_fused(owner: nn.Module, name: str) -> bool:
    return name in owner or fuse.group(owner, name) is not None


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

    def _project(self, x, compute_dtype, state_dtype=mx.float32, xc=None):
        """x is the normalized input in the residual dtype (float32 in the shipped profiles).

        q, k, v, o take it in the compute dtype (the big matmuls at the weights' rate); the gate
        projections (NH outputs each, negligible work) take it as it is, so with a float32 residual the
        gate pre-activations are float32 end to end (docs/numerics.md); float64 in the exact profile.
        Returns ((q, k, v) as rows [B, T, *] and the columns where each starts, o, i, f): the fused projection
        output itself three times (offsets 0, qk_dim, 2 qk_dim), or the three projections (offsets 0).
        """
        a = self.args
        xc = x.astype(compute_dtype) if xc is None else xc
        if has_fused(self, "qkv_opreact"):
            qkvo = fused_or_layer(self, "qkv_opreact", xc)
            qkv = ((qkvo,) * 3, (0, a.qk_dim, 2 * a.qk_dim))  # q, k, v stay inside the fused output (no copy)
            o = (qkvo, 2 * a.qk_dim + a.v_dim)  # so does the output gate
        else:
            qkv = ((linear(self.q, xc), linear(self.k, xc), linear(self.v, xc)), (0, 0, 0))
            o = (linear(self.ogate_preact, xc), 0)
        proj = self._gate_projection(x) if has_fused(self, "ifgate_preact") else None
        if proj is not None and gate_preact.applies(x, proj.weight, proj.bias, a.num_heads, state_dtype):
            # float32 weights on CUDA: the projection and both soft caps in one launch (kernels/gate_preact.py);
            # elsewhere the layers below (on the CPU the few-row products take the skinny sgemm)
            i, f = kernels.get("mlstm.gate_preact")(x, proj.weight, proj.bias, a.num_heads, a.gate_soft_cap,
                                                   state_dtype)
            return qkv, o, i, f
        if has_fused(self, "ifgate_preact"):
            i, f = mx.split(fused_or_layer(self, "ifgate_preact", x), [a.num_heads], axis=-1)
        else:
            i, f = self.igate_preact(x), self.fgate_preact(x)
        i = soft_cap(i.astype(state_dtype), a.gate_soft_cap)
        f = soft_cap(f.astype(state_dtype), a.gate_soft_cap)
        return qkv, o, i, f

    def _rows_kernel(self, qkv, i, f, state, profile: NumericsProfile) -> bool:
        """Whether the prefill runs as the fused CUDA chunkwise kernels on the projection output in place
        (mlstm_chunkwise_cuda.mlstm_chunkwise_rows): the profile's chunkwise prefill, not the forced references,
        q/k/v already in the kernel dtype (else they need a cast, a copy anyway: the heads-first path makes it), and
        the kernels' own conditions (MLX's CUDA backend, bf16, ...). The rows are whole arrays (the fused output, a
        fresh matmul result), so the kernels read them where they are: a column slice such as q = qkvo[..., :qk_dim]
        is not row-contiguous, and mx.fast.cuda_kernel would copy it."""
        a = self.args
        (rows, offsets), kd = qkv, profile.mx_kernel_dtype
        return (profile.prefill_kernel == "chunkwise" and kernels.get("mlstm.chunkwise") is kernels.mlstm_chunkwise
                and all(x.dtype == kd for x in rows)
                and chunkwise_cuda.applies_rows(*rows, i, f, state, a.qk_head_dim, a.v_head_dim, offsets,
                                                profile.chunk_size))

    def _gate_projection(self, x):
        """The float i/f gate projection as a decode.GateProjection (the CUDA decode step computes it inside its
        own launch), or None where it is quantized."""
        layer = self["ifgate_preact"] if "ifgate_preact" in self else fuse.group(self, "ifgate_preact")
        if type(layer) is nn.Linear:
            return decode.GateProjection(x, layer.weight, layer["bias"] if "bias" in layer else None)
        if isinstance(layer, fuse.FusedLinear) and layer.quant is None:
            return decode.GateProjection(x, layer.weight, layer.bias)
        return None

    def decodes_fused(self, T: int, mask, profile: NumericsProfile) -> bool:
        """Whether a call with T steps per row takes the one-token fused step (_decode_fused)."""
        return (T == 1 and mask is None and profile.step_kernel == "step" and profile.state_dtype == "float32"
                and has_fused(self, "qkv_opreact") and has_fused(self, "ifgate_preact"))

    def _decode_fused(self, x, state, profile: NumericsProfile, xc=None, then: ThenAddNorm | None = None):
        """One token, no mask, fused weights: the "mlstm.decode_step" kernel straight from the projection
        outputs (one launch for gates, state update and read-out on CUDA; the same MLX ops as below elsewhere).
        x [B, D] (the model's one-token rows form: no reshape around any product) or [B, 1, D]."""
        a = self.args
        B = x.shape[0]
        cd, kd = profile.mx_compute_dtype, profile.mx_kernel_dtype
        rows = x.ndim == 2
        if not rows:
            x, xc = x.reshape(B, -1), None if xc is None else xc.reshape(B, -1)
        qkvo = fused_or_layer(self, "qkv_opreact", x.astype(cd) if xc is None else xc)
        qkv = qkvo.astype(kd)
        if state is None:
            state = kernels.mlstm_zero_state(B, a.num_heads, a.qk_head_dim, a.v_head_dim)
        eps = a.eps if profile.eps is None else profile.eps
        step = kernels.get("mlstm.decode_step")
        gates = self._gate_projection(x)
        if gates is None or step is not decode.mlstm_decode_step or not decode.applies(
                qkv, gates, state, a.num_heads, a.qk_dim, a.v_dim):
            gates = fused_or_layer(self, "ifgate_preact", x)  # its own matmul
        norm = self.multihead_norm  # its LayerNorm, weight and the output gate: one launch on CUDA
        hn = decode.HeadNormGate(norm.weight, norm["bias"] if "bias" in norm else None, norm.eps,
                                 2 * a.qk_dim + a.v_dim, decode.norm_counter(self, B * a.num_heads))
        if step is decode.mlstm_decode_step and qkv.dtype == qkvo.dtype and decode.fuses_norm(qkvo, hn, a.num_heads, a.v_dim):
            # the head norm and gate inside the step's own launch (the step's fast form; qkvo in the kernel dtype)
            h, state = step(qkv, gates, state, a.num_heads, a.qk_dim, a.v_dim, a.gate_soft_cap, eps, norm=hn)
        else:
            h, state = step(qkv, gates, state, a.num_heads, a.qk_dim, a.v_dim, a.gate_soft_cap, eps)
            h = kernels.get("mlstm.headnorm_gate")(h.astype(cd), qkvo, hn.o_offset, hn.weight, hn.bias, hn.eps)
        if then is not None:  # the block's residual add + FFN norm (rows form only: the model's decode)
            return linear_add_norm(self.out_proj, h, then), state
        out = linear(self.out_proj, h)
        return (out if rows else out[:, None]), state

    def __call__(self, x, state, mask, profile: NumericsProfile, x_compute=None, then: ThenAddNorm | None = None):
        """x: the normalized input in the residual dtype, [B, T, D], or [B, D] rows of one token each (the
        model's rows form, only where decodes_fused); x_compute: it already in the compute dtype, if at hand.
        `then` (rows form only): the residual add + norm that follows, done with the output projection; the call
        returns its three outputs (linear_add_norm) in place of the layer's output."""
        a = self.args
        if x.ndim == 2:
            return self._decode_fused(x, state, profile, x_compute, then)
        if then is not None:
            raise ValueError("MLSTMLayer: `then` (the add + norm after the output projection) needs the rows form")
        B, T, _ = x.shape
        if self.decodes_fused(T, mask, profile):
            return self._decode_fused(x, state, profile, x_compute)
        cd = profile.mx_compute_dtype
        qkv, o, i, f = self._project(x, cd, profile.mx_state_dtype, x_compute)
        eps = a.eps if profile.eps is None else profile.eps
        if T > 1 and self._rows_kernel(qkv, i, f, state, profile):
            # the CUDA kernels read q, k, v as the projection's [B, T, NH*D] rows and the gates as [B, T, NH], and
            # write h as [B, T, NH, Dv]: no transposed copy of any of them around the kernels
            i, f = kernels.mask_gates(i, f, mask, time_axis=1)
            h, state = chunkwise_cuda.mlstm_chunkwise_rows(*qkv[0], i, f, state, eps, dqk=a.qk_head_dim,
                                                           dv=a.v_head_dim, offsets=qkv[1],
                                                           chunk_size=profile.chunk_size)
        else:
            h, state = self._heads_first(qkv, i, f, state, mask, profile, eps)
        # per-head LayerNorm, weight and sigmoid output gate over all B*T rows: one launch on CUDA; on the CPU in
        # L2-sized tiles of rows (kernels/row_tiles.py)
        norm, (o, o_offset) = self.multihead_norm, o
        headnorm, bias = kernels.get("mlstm.headnorm_gate"), norm["bias"] if "bias" in norm else None
        h = kernels.get("rows.tiles")(lambda hh, oo: headnorm(hh, oo, o_offset, norm.weight, bias, norm.eps),
                                      h.astype(cd).reshape(B * T, a.num_heads, -1), o.reshape(B * T, -1))
        return linear(self.out_proj, h.reshape(B, T, -1)), state

    def _heads_first(self, qkv, i, f, state, mask, profile: NumericsProfile, eps):
        """The registry's step or prefill form on [B, NH, T, D] heads (every backend; the reference path):
        h [B, T, NH, Dv] (a transposed view) and the state."""
        a = self.args
        (rows, offsets), kd = qkv, profile.mx_kernel_dtype
        B, T, _ = rows[0].shape

        def heads(t, off, d):  # columns off.. of [B, T, *] -> [B, NH, T, d]
            return t[..., off:off + a.num_heads * d].reshape(B, T, a.num_heads, d).transpose(0, 2, 1, 3).astype(kd)

        q, k, v = (heads(t, off, d) for t, off, d in zip(rows, offsets, (a.qk_head_dim, a.qk_head_dim, a.v_head_dim)))
        i, f = kernels.mask_gates(i.transpose(0, 2, 1), f.transpose(0, 2, 1), mask)
        if T == 1:
            if state is None:
                state = kernels.mlstm_zero_state(B, a.num_heads, a.qk_head_dim, a.v_head_dim, profile.mx_state_dtype)
            step = kernels.get(f"mlstm.{profile.step_kernel}")
            h, state = step(q[:, :, 0], k[:, :, 0], v[:, :, 0], i[:, :, 0], f[:, :, 0], state, eps)
            h = h[:, :, None]
        else:
            seq = kernels.get(f"mlstm.{profile.prefill_kernel}")
            h, state = seq(q, k, v, i, f, state, eps=eps, chunk_size=profile.chunk_size)
        return h.transpose(0, 2, 1, 3), state


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

    def __call__(self, x, then: ThenAddNorm | None = None):
        """`then`: the residual add + norm that follows, done with the down projection (linear_add_norm): its
        three outputs are returned in place of the FFN's output."""
        # inside an inference call the down projection may run padded (fuse.py, "FFN padding"): its input is then
        # the product with zero columns appended, which the SwiGLU kernel writes in the same launch
        down = fuse.group(self, fuse.PADDED)
        width = None if down is None else down.weight.shape[1]
        # on the CPU the elementwise SwiGLU of a many-row input runs in L2-sized tiles of rows (kernels/row_tiles.py)
        if has_fused(self, "proj_up_gate_z"):  # silu(gate) * z straight from the fused output: one launch on CUDA
            swiglu, gz = kernels.get("ffn.swiglu"), fused_or_layer(self, "proj_up_gate_z", x)
            h = kernels.get("rows.tiles")(lambda t: swiglu(t, width), gz.reshape(-1, gz.shape[-1]))
            h = h.reshape(*gz.shape[:-1], h.shape[-1])
        else:
            silu, g, z = kernels.get("math.silu"), linear(self.proj_up_gate, x), linear(self.proj_up, x)
            h = kernels.get("rows.tiles")(lambda a, b: silu(a) * b, g.reshape(-1, g.shape[-1]),
                                          z.reshape(-1, z.shape[-1]))
            h = h.reshape(g.shape)
            if down is not None:
                h = mx.pad(h, [(0, 0)] * (h.ndim - 1) + [(0, width - h.shape[-1])])
        layer = self.proj_down if down is None else down
        return linear(layer, h) if then is None else linear_add_norm(layer, h, then)


def quant_matrix(owner: nn.Module, name: str) -> decode_layer.QuantMatrix | None:
    """The quantized operands of owner's product `name` (its nn.QuantizedLinear, or a quantized fused group), or
    None where it is a float one."""
    layer = owner[name] if name in owner else fuse.group(owner, name)
    if type(layer) is nn.QuantizedLinear:
        return decode_layer.QuantMatrix(layer.weight, layer.scales, layer.get("biases"), _bias(layer),
                                        layer.group_size, layer.bits, layer.mode)
    if isinstance(layer, fuse.FusedLinear) and layer.quant is not None:
        return decode_layer.QuantMatrix(layer.weight, layer.arrays["scales"], layer.arrays.get("biases"), layer.bias,
                                        *layer.quant)
    return None


def _norm(norm: nn.Module) -> decode_layer.Norm:
    return decode_layer.Norm(norm.weight, _bias(norm), norm.eps)


class MLSTMBlock(nn.Module):
    block_type = "mlstm"

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        self.norm_mlstm = RMSNorm(args.hidden_size, args.norm_eps, args.use_bias)
        self.mlstm_layer = MLSTMLayer(args)
        self.norm_ffn = RMSNorm(args.hidden_size, args.norm_eps, args.use_bias)
        self.ffn = FeedForward(args)

    def make_state(self, batch_size: int, dtype=mx.float32):
        a = self.args
        return kernels.mlstm_zero_state(batch_size, a.num_heads, a.qk_head_dim, a.v_head_dim, dtype)

    def decode_operands(self, next_norm: RMSNorm, rows: int, profile: NumericsProfile):
        """The block's operands for the persistent decode kernel (kernels/decode_layer.py), or None where a product
        is not quantized, the gate projection not float, or the FFN's down projection runs padded."""
        layer, ffn, a = self.mlstm_layer, self.ffn, self.args
        mats = (quant_matrix(layer, "qkv_opreact"), quant_matrix(layer, "out_proj"),
                quant_matrix(ffn, "proj_up_gate_z"), quant_matrix(ffn, "proj_down"))
        gates = layer["ifgate_preact"] if "ifgate_preact" in layer else fuse.group(layer, "ifgate_preact")
        if any(m is None for m in mats) or fuse.group(ffn, fuse.PADDED) is not None or gates is None:
            return None
        if type(gates) is nn.Linear:
            gate_w, gate_b = gates.weight, _bias(gates)
        elif isinstance(gates, fuse.FusedLinear) and gates.quant is None:
            gate_w, gate_b = gates.weight, gates.bias
        else:
            return None
        qkvo, out_proj, up, down = mats
        return decode_layer.LayerOperands(
            qkvo, gate_w, gate_b, _norm(layer.multihead_norm), out_proj, _norm(self.norm_ffn), up, down,
            _norm(next_norm), a.num_heads, a.qk_dim, a.v_dim, a.gate_soft_cap, a.eps if profile.eps is None else profile.eps,
            decode.norm_counter(layer, rows * a.num_heads), decode_layer.barrier_counter(self))

    def _decode_whole(self, x, y, y_c, state, next_norm: RMSNorm, profile: NumericsProfile):
        """The block's decode step in one launch (kernels/decode_layer.py) where it applies: (r, Normed, state), else
        None (the caller takes the separate launches)."""
        if y is None or kernels.reference_forced():
            return None
        B = x.shape[0]
        ops = self.decode_operands(next_norm, B, profile)
        if ops is None:
            return None
        if state is None:
            state = self.make_state(B)
        if not decode_layer.applies(x, y, y_c, state, ops):
            return None
        r, y2, yc2, state = kernels.get("mlstm.decode_layer")(x, y, y_c, state, ops)
        return r, Normed(r, y2, yc2), state

    def recurrence_flops(self, chunk_size: int) -> int:
        a = self.args
        return a.num_heads * mlstm_chunkwise_flops(a.qk_head_dim, a.v_head_dim, chunk_size)

    def __call__(self, x, state, mask, profile: NumericsProfile, check: str | None = None, carried=None,
                 next_norm: RMSNorm | None = None):
        """x is the residual stream (profile.residual_dtype); sub-layer outputs are added to it.

        `carried`: the previous block's FFN output, not yet added to x. It is added here by the first norm's
        fused add (the same float32 sum, one pass less over the residual stream: one launch and one read
        and write of x per block fewer on CUDA); or a Normed, that add and this block's first norm already done
        by the previous block (its `next_norm`). Returns (x, this block's FFN output still to add, state): the
        caller adds the last one (models/xlstm7b/model.py). With `next_norm` (the next block's first norm; the
        model passes it at decode, rows form) the FFN output comes back added and normalized by it, as a Normed.
        At decode (rows form) the mLSTM layer's output projection takes the FFN norm's add with it, and the FFN's
        down projection the next norm's: for quantized layers on CUDA the GEMV's own launch (linear_add_norm).
        `check`, when given, is this block's name for the NaN locator (forces evaluation; no fold).
        """
        cd = profile.mx_compute_dtype
        if isinstance(carried, Normed):
            x, h, hc = carried
        else:
            x, h, hc = add_norm(self.norm_mlstm, x, carried, cd)
        if check:
            assert_finite(f"{check}.norm_mlstm", h)
            h, state = self.mlstm_layer(h, state, mask, profile, x_compute=hc)
            assert_finite(f"{check}.mlstm_layer (state C, n, m)", *state)
            assert_finite(f"{check}.mlstm_layer (output)", h)
            x, h, hc = add_norm(self.norm_ffn, x, h, cd, want_y=True)
            assert_finite(f"{check}.norm_ffn", h)
            h = self.ffn(hc)
            assert_finite(f"{check}.ffn", h)
            return x, h, state
        if x.ndim == 2 and next_norm is not None:  # rows form: a quantized block's step in one launch on CUDA
            whole = self._decode_whole(x, h, hc, state, next_norm, profile)
            if whole is not None:
                return whole
        if x.ndim == 2:  # rows form: the adds and norms with the products before them
            (x, _, hc), state = self.mlstm_layer(h, state, mask, profile, x_compute=hc,
                                                 then=ThenAddNorm(self.norm_ffn, x, cd, want_y=False))
            if next_norm is not None:
                r, y, yc = self.ffn(hc, then=ThenAddNorm(next_norm, x, cd))
                return r, Normed(r, y, yc), state
            return x, self.ffn(hc), state
        h, state = self.mlstm_layer(h, state, mask, profile, x_compute=hc)
        x, _, hc = add_norm(self.norm_ffn, x, h, cd, want_y=False)  # the FFN takes hc only
        return x, self.ffn(hc), state
