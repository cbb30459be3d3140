"""One mLSTM decode step of a whole layer, from the fused projection outputs: one CUDA launch.

The MLX-ops step (mlstm_recurrent.py) is a chain of small kernels per layer (soft cap, log-sigmoid, stabilizer,
the C/n/m update, the read-out matmul, q.n, the denominator): at decode, launches and not bytes set its speed,
and C is read once for the update and again for the read-out. Here one launch does it all, reading C once and
writing it once.

    mlstm_decode_step_ref(qkvo, gates, state, num_heads, qk_dim, v_dim, gate_soft_cap, eps)   MLX ops
    mlstm_decode_step(...)                                                                   the CUDA kernel where
                                                                                             it applies, else the ref

qkvo [B, >= 2*qk_dim + v_dim]: the qkv_opreact output, q | k | v (| o, ignored here) in the kernel dtype;
gates [B, 2*NH]: the ifgate_preact output (input gates, then forget gates), before the soft cap; or a
GateProjection(x, weight, bias) of that layer (float32), which the kernel computes itself (no launch of its own);
state (C [B, NH, Dqk, Dv], n [B, NH, Dqk], m [B, NH, 1]) float32.
Returns h [B, NH, Dv] in qkvo's dtype and the new state: the equations and roundings of mlstm_step_ref, the
gates soft-capped in float32 first as MLSTMLayer does. With norm=HeadNormGate(weight, bias, eps, o_offset,
counter) it returns the layer's cell output sigmoid(o) * (LayerNorm_head(h) * weight (+ bias)) [B, NH*Dv]
instead (what headnorm.headnorm_gate computes from h; the reference runs exactly that): on CUDA the last of a
head's column-tile blocks to finish (an atomic count per (sequence, head) in `counter`, reset by that block)
reads the head's h back from L2 and applies it, in the step's own launch: one launch a layer fewer.

CUDA layout: one block per (sequence, head, TJ-column tile of C); 8 warps split the Dqk rows, each lane owns
TJ/32 columns (TJ=32/64/128: 4-/8-/16-byte accesses; default_tj picks 32 for small batches, where more blocks
are needed to spread the state over the SMs, else 64), and loads a batch of up to 32 rows before any arithmetic
so that all of them are in flight at once (an H200 at batch 1 was latency-bound with 8 rows in flight: 35 us a
layer for 8 MB of state traffic; benchmarks/results/gpu_kernels_h200.md). Every block recomputes the head's gate scalars and q.n (Dqk products: cheap); the
tile-0 block writes n and m.
"""

from __future__ import annotations

from typing import NamedTuple

import mlx.core as mx
import numpy as np

from xlstm_mlx.kernels import headnorm
from xlstm_mlx.kernels.add_rms_norm import COUNTER_WORDS
from xlstm_mlx.kernels.cuda_common import cuda_available, float_bits, VEC_HEADER
from xlstm_mlx.kernels.mlstm_recurrent import mlstm_step, mlstm_step_ref

TJS = (32, 64, 128)  # columns of C per block: 32 lanes x 1, 2 or 4 floats (4-, 8-, 16-byte accesses)
SMALL_BATCH = 4  # up to this batch, TJ = 32: more, smaller blocks (batch 1, 7B: 8 heads x 16 tiles = 128 blocks)
THREADS = 256


def default_tj(batch: int, dv: int) -> int:
    """Columns per block: 32 for small batches (blocks enough to spread the state over the SMs), else 64."""
    tj = 32 if batch <= SMALL_BATCH else 64
    return tj if dv % tj == 0 else 32

_SOURCE = """
    constexpr int WARPS = THREADS / 32;
    constexpr int TILES = DV / TJ;
    const int tile = blockIdx.x % TILES;
    const int bh = blockIdx.x / TILES;               // sequence * NH + head
    const int b = bh / NH, hd = bh % NH;
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    const int NQ = qkvo_shape[1];                     // row stride of the projection output

    constexpr int CPL = TJ / 32;                      // columns per lane: 1, 2 or 4 (4-, 8-, 16-byte accesses)
    using VecC = typename XlVec<CPL>::type;
    const int j = tile * TJ + lane * CPL;
    const float* Cin = C + (size_t)bh * DQK * DV + j;
    float* Cout = C_out + (size_t)bh * DQK * DV + j;
    // Rows i = warp, warp + WARPS, ...: a batch of up to RB rows per lane is loaded before any arithmetic, so all
    // of a batch's loads are in flight together (at batch 1 there are few blocks: the bytes in flight per lane
    // set the bandwidth). The sums run in the same row order as one row at a time. The first batch (all of C's
    // rows at the 7B shape) is requested before anything else, so that its loads are in flight while the gate
    // scalars and q.n are computed (an L2 round trip and a block reduction each).
    constexpr int RPW = (DQK + WARPS - 1) / WARPS;    // rows per warp
    constexpr int RB = RPW < 32 ? RPW : 32;
    VecC cv[RB];
#pragma unroll
    for (int r = 0; r < RB; ++r) {
        const int i = warp + r * WARPS;
        if (i < DQK) cv[r] = __ldcs(reinterpret_cast<const VecC*>(Cin + (size_t)i * DV));
    }

    // gate pre-activations of this head (float32, as mlstm_step_ref): given, or projected here from the layer's
    // normalized input x [B, H] by the two rows hd and NH + hd of w_if [2 NH, H] (+ b_if): every block of the
    // head computes the same two dot products (16 KB of x and 32 KB of w_if from L2 at the 7B shape), in place of
    // a float32 matmul launch of its own (a cuBLAS dot and reduce pair at batch 1, ~6 us a layer on an H200)
    float i_raw, f_raw;
    if constexpr (GATE_PROJ) {
        __shared__ float gate_sh[2][WARPS];
        const float* xr = x + (size_t)b * HID;
        const float* wi = w_if + (size_t)hd * HID;
        const float* wf = w_if + (size_t)(NH + hd) * HID;
        float si = 0.f, sf = 0.f;
#pragma unroll 8
        for (int k = tid; k < HID; k += THREADS) {
            const float xk = xr[k];
            si = fmaf(xk, wi[k], si);
            sf = fmaf(xk, wf[k], sf);
        }
        si = xl_warp_sum(si);
        sf = xl_warp_sum(sf);
        if (lane == 0) { gate_sh[0][warp] = si; gate_sh[1][warp] = sf; }
        __syncthreads();
        i_raw = HAS_GATE_BIAS ? b_if[hd] : 0.f;
        f_raw = HAS_GATE_BIAS ? b_if[NH + hd] : 0.f;
        float ti = 0.f, tf = 0.f;
#pragma unroll
        for (int w = 0; w < WARPS; ++w) { ti += gate_sh[0][w]; tf += gate_sh[1][w]; }
        i_raw += ti;
        f_raw += tf;
    } else {
        i_raw = gates[b * 2 * NH + hd];
        f_raw = gates[b * 2 * NH + NH + hd];
    }
    if (HAS_CAP) {
        const float cap = __int_as_float(CAP_BITS);
        i_raw = cap * tanhf(i_raw / cap);
        f_raw = cap * tanhf(f_raw / cap);
    }
    const float eps = __int_as_float(EPS_BITS);
    const float lf = -(fmaxf(-f_raw, 0.f) + log1pf(expf(-fabsf(f_raw))));    // log sigmoid
    const float m_old = m[bh];
    const float m_new = fmaxf(lf + m_old, i_raw);
    const float fa = expf(lf + m_old - m_new);
    const float ia = expf(i_raw - m_new);

    const auto* qrow = qkvo + (size_t)b * NQ + hd * DQK;
    const auto* krow = qkvo + (size_t)b * NQ + QK_DIM + hd * DQK;
    const auto* vrow = qkvo + (size_t)b * NQ + 2 * QK_DIM + hd * DV;
    __shared__ float q_sh[DQK], k_sh[DQK];
    __shared__ float red[WARPS][TJ];
    __shared__ float qn_sh[WARPS];
    const float scale = 1.0f / sqrtf((float)DQK);
    float qn = 0.f;
    for (int i = tid; i < DQK; i += THREADS) {
        const float qi = xl_float(qrow[i]) * scale, ki = xl_float(krow[i]);
        q_sh[i] = qi;
        k_sh[i] = ki;
        const float nn = fa * n[(size_t)bh * DQK + i] + ia * ki;
        qn += qi * nn;
        if (tile == 0) n_out[(size_t)bh * DQK + i] = nn;
    }
    qn = xl_warp_sum(qn);
    if (lane == 0) qn_sh[warp] = qn;
    __syncthreads();
    qn = 0.f;
#pragma unroll
    for (int w = 0; w < WARPS; ++w) qn += qn_sh[w];

    float vj[CPL], num[CPL];
#pragma unroll
    for (int c = 0; c < CPL; ++c) { vj[c] = xl_float(vrow[j + c]); num[c] = 0.f; }
    for (int r0 = 0; r0 < RPW; r0 += RB) {
        if (r0 > 0) {                                 // later batches (Dqk > 32 x WARPS): loaded here
#pragma unroll
            for (int r = 0; r < RB; ++r) {
                const int i = warp + (r0 + r) * WARPS;
                if (i < DQK) cv[r] = __ldcs(reinterpret_cast<const VecC*>(Cin + (size_t)i * DV));
            }
        }
#pragma unroll
        for (int r = 0; r < RB; ++r) {
            const int i = warp + (r0 + r) * WARPS;
            if (i >= DQK) break;
            const float ki = k_sh[i], qi = q_sh[i];
            float* c = reinterpret_cast<float*>(&cv[r]);
#pragma unroll
            for (int e = 0; e < CPL; ++e) {
                c[e] = fa * c[e] + ia * (ki * vj[e]);
                num[e] += qi * c[e];
            }
            __stcs(reinterpret_cast<VecC*>(Cout + (size_t)i * DV), cv[r]);
        }
    }
#pragma unroll
    for (int c = 0; c < CPL; ++c) red[warp][lane * CPL + c] = num[c];
    __syncthreads();
    if (warp == 0) {
        const float den = fmaxf(fabsf(qn), expf(-m_new)) + eps;
#pragma unroll
        for (int c = 0; c < CPL; ++c) {
            float s = 0.f;
#pragma unroll
            for (int w = 0; w < WARPS; ++w) s += red[w][lane * CPL + c];
            xl_set(h + (size_t)bh * DV + j + c, s / den);
        }
        if (tile == 0 && lane == 0) m_out[bh] = m_new;
    }

    if constexpr (FUSE_NORM) {
        // The head's LayerNorm, weight (+ bias) and sigmoid output gate, by the last of the head's TILES blocks to
        // finish: each block's h tile is made visible (fence), then counted; the block that counts last reads the
        // whole row of h back from L2 and writes `out` with kernels/headnorm.py's own row function (one warp, the
        // same sums and roundings), having reset the counter for the next call. One launch a layer fewer.
        __shared__ bool last_sh;
        __threadfence();
        __syncthreads();
        if (tid == 0) {
            unsigned* cnt = const_cast<unsigned*>(counter) + bh;
            last_sh = atomicAdd(cnt, 1u) == (unsigned)(TILES - 1);
            if (last_sh) *cnt = 0u;
        }
        __syncthreads();
        if (!last_sh || warp != 0) return;
        __threadfence();
        constexpr int VEC = 16 / sizeof(*h);
        float x[DV / 32];
        const uint4* hv = reinterpret_cast<const uint4*>(h + (size_t)bh * DV);
#pragma unroll
        for (int v = 0; v < DV / 32 / VEC; ++v) xl_to_float(__ldcg(hv + v * 32 + lane), x + v * VEC, h);
        xl_headnorm_row<DV, NORM_BIAS>(x, qkvo + (size_t)b * NQ + O_OFF + hd * DV, nw + hd * DV, nb + hd * DV,
                                       out + (size_t)bh * DV, lane, __int_as_float(NORM_EPS_BITS));
    }
"""

XLVEC_HEADER = """
template <int N> struct XlVec;                        // CPL float32 columns as one load: 4, 8 or 16 bytes
template <> struct XlVec<1> { using type = float; };
template <> struct XlVec<2> { using type = float2; };
template <> struct XlVec<4> { using type = float4; };
"""
_HEADER = VEC_HEADER + headnorm.ROW_HEADER + XLVEC_HEADER

_kernel = None
_kernel_scratch = type("Scratch", (), {})()  # owner of the placeholder counter of launches without the norm



def _soft_cap(x: mx.array, cap: float | None) -> mx.array:
    return x if cap is None else cap * mx.tanh(x / cap)  # models/base.py soft_cap, the same arithmetic


class GateProjection(NamedTuple):
    """The gate pre-activations still to compute: x [B, H] @ weight.T [H, 2 NH] (+ bias), all float32."""
    x: mx.array
    weight: mx.array
    bias: mx.array | None


class HeadNormGate(NamedTuple):
    """The layer's per-head LayerNorm, its weight (+ bias) [NH*Dv] and the sigmoid output gate (qkvo's columns
    o_offset...), to apply to h inside the step (headnorm.headnorm_gate's arithmetic): the step then returns
    sigmoid(o) * (LayerNorm_head(h) * weight (+ bias)) [B, NH*Dv] in place of h. `counter`: the launch's scratch
    (norm_counter), unused by the reference."""
    weight: mx.array
    bias: mx.array | None
    eps: float
    o_offset: int
    counter: mx.array | None = None


def norm_counter(owner, rows: int) -> mx.array:
    """The fused norm's per-(sequence, head) tile counter for `owner` (a layer): zeros, kept on the owner and made
    from host data (so that mx.compile takes it as a constant, not a fill at every call). The kernel leaves it at
    zero after each launch. One per layer: two layers' steps never share one, even if a graph ran them at once."""
    key = f"_xlstm_decode_counter_{rows}"
    hit = owner.__dict__.get(key)
    if hit is None:  # at least 64 bytes: not MLX's managed small-allocation pool (add_rms_norm.COUNTER_WORDS)
        hit = owner.__dict__[key] = mx.array(np.zeros(max(rows, COUNTER_WORDS), np.uint32))
    return hit


def gate_preactivations(gates) -> mx.array:
    """gates as given, or the projection computed (MLX's float32 matmul, as the ifgate_preact layer runs it)."""
    if not isinstance(gates, GateProjection):
        return gates
    w = gates.weight.T
    return gates.x @ w if gates.bias is None else mx.addmm(gates.bias, gates.x, w)  # as nn.Linear


def mlstm_decode_step_ref(qkvo, gates, state, num_heads: int, qk_dim: int, v_dim: int,
                          gate_soft_cap: float | None, eps: float = 1e-6, step=mlstm_step_ref,
                          norm: HeadNormGate | None = None):
    """MLX ops: split the projections into heads, soft-cap the gates, then `step` (mlstm_step_ref), then with
    `norm` headnorm.headnorm_gate_ref on h in qkvo's dtype (as MLSTMLayer does after the step).
    `gates`: the pre-activations [B, 2 NH] or a GateProjection to compute them from."""
    if norm is not None:
        h, new_state = mlstm_decode_step_ref(qkvo, gates, state, num_heads, qk_dim, v_dim, gate_soft_cap, eps, step)
        return headnorm.headnorm_gate_ref(h.astype(qkvo.dtype), qkvo, norm.o_offset, norm.weight, norm.bias,
                                          norm.eps), new_state
    gates = gate_preactivations(gates)
    B = qkvo.shape[0]
    dqk, dv = qk_dim // num_heads, v_dim // num_heads
    q = qkvo[:, :qk_dim].reshape(B, num_heads, dqk)
    k = qkvo[:, qk_dim:2 * qk_dim].reshape(B, num_heads, dqk)
    v = qkvo[:, 2 * qk_dim:2 * qk_dim + v_dim].reshape(B, num_heads, dv)
    i = _soft_cap(gates[:, :num_heads].astype(mx.float32), gate_soft_cap)
    f = _soft_cap(gates[:, num_heads:2 * num_heads].astype(mx.float32), gate_soft_cap)
    return step(q, k, v, i, f, state, eps)


def applies(qkvo, gates, state, num_heads: int, qk_dim: int, v_dim: int) -> bool:
    dqk, dv = qk_dim // num_heads, v_dim // num_heads
    if isinstance(gates, GateProjection):
        g = gates
        if not (g.x.ndim == 2 and g.x.dtype == mx.float32 and g.weight.dtype == mx.float32
                and g.weight.shape == (2 * num_heads, g.x.shape[1]) and g.x.shape[0] == qkvo.shape[0]
                and (g.bias is None or (g.bias.dtype == mx.float32 and g.bias.shape == (2 * num_heads,)))):
            return False
    return (cuda_available() and qkvo.dtype in (mx.bfloat16, mx.float32) and qkvo.ndim == 2
            and dv % 32 == 0 and dqk <= 4096 and all(s.dtype == mx.float32 for s in state))


def fuses_norm(qkvo, norm: HeadNormGate | None, num_heads: int, v_dim: int) -> bool:
    """Whether the CUDA step can take the head norm (the headnorm kernel's conditions: weight, bias in qkvo's dtype,
    Dv a multiple of 32 16-byte vectors; the o columns inside qkvo, each row's starting 16-byte aligned)."""
    if norm is None or qkvo.dtype not in (mx.bfloat16, mx.float32):
        return False
    dv, vec = v_dim // num_heads, 16 // qkvo.dtype.size
    return (norm.weight.dtype == qkvo.dtype and norm.weight.shape == (v_dim,) and dv % (32 * vec) == 0
            and (norm.bias is None or (norm.bias.dtype == qkvo.dtype and norm.bias.shape == (v_dim,)))
            and norm.o_offset + v_dim <= qkvo.shape[1] and headnorm.aligned_rows(qkvo, norm.o_offset, vec)
            and norm.counter is not None
            and norm.counter.dtype == mx.uint32 and norm.counter.size >= qkvo.shape[0] * num_heads)


def mlstm_decode_step_cuda(qkvo, gates, state, num_heads: int, qk_dim: int, v_dim: int,
                           gate_soft_cap: float | None, eps: float = 1e-6, *, tj: int | None = None,
                           norm: HeadNormGate | None = None):
    global _kernel
    if _kernel is None:
        _kernel = mx.fast.cuda_kernel(
            name="xlstm_mlstm_decode_step",
            input_names=["qkvo", "gates", "x", "w_if", "b_if", "C", "n", "m", "nw", "nb", "counter"],
            output_names=["h", "C_out", "n_out", "m_out", "out"],
            source=_SOURCE,
            header=_HEADER,
        )
    if norm is not None and not fuses_norm(qkvo, norm, num_heads, v_dim):
        raise ValueError("mlstm_decode_step_cuda: this head norm cannot be fused (fuses_norm is False)")
    C, n, m = state
    B = qkvo.shape[0]
    dqk, dv = qk_dim // num_heads, v_dim // num_heads
    tj = tj or default_tj(B, dv)
    if tj not in TJS or dv % tj:
        raise ValueError(f"tj must be one of {TJS} and divide Dv {dv}, got {tj}")
    blocks = B * num_heads * (dv // tj)
    proj = isinstance(gates, GateProjection)
    dummy = m  # stands in for the inputs the variant never reads (float32; no mx.zeros launch)
    g_in = [dummy, gates.x, gates.weight, gates.bias if gates.bias is not None else dummy] if proj else \
        [gates.astype(mx.float32), dummy, dummy, dummy]
    fused = norm is not None
    n_in = [norm.weight, norm.bias if norm.bias is not None else norm.weight, norm.counter] if fused else \
        [qkvo, qkvo, norm_counter(_kernel_scratch, 1)]  # never read without FUSE_NORM
    h, C_new, n_new, m_new, out = _kernel(
        inputs=[qkvo, *g_in, C, n, m, *n_in],
        template=[("NH", num_heads), ("DQK", dqk), ("DV", dv), ("QK_DIM", qk_dim), ("TJ", tj),
                  ("GATE_PROJ", proj), ("HAS_GATE_BIAS", proj and gates.bias is not None),
                  ("HID", gates.x.shape[1] if proj else 1),
                  ("THREADS", THREADS), ("HAS_CAP", gate_soft_cap is not None),
                  ("CAP_BITS", float_bits(gate_soft_cap or 0.0)), ("EPS_BITS", float_bits(eps)),
                  ("FUSE_NORM", fused), ("NORM_BIAS", fused and norm.bias is not None),
                  ("O_OFF", norm.o_offset if fused else 0), ("NORM_EPS_BITS", float_bits(norm.eps if fused else 0.0))],
        grid=(blocks * THREADS, 1, 1),
        threadgroup=(THREADS, 1, 1),
        output_shapes=[(B, num_heads, dv), C.shape, n.shape, m.shape, (B, v_dim) if fused else (1,)],
        output_dtypes=[qkvo.dtype, mx.float32, mx.float32, mx.float32, qkvo.dtype],
    )
    return (out if fused else h), (C_new, n_new, m_new)


def mlstm_decode_step(qkvo, gates, state, num_heads: int, qk_dim: int, v_dim: int,
                      gate_soft_cap: float | None, eps: float = 1e-6, norm: HeadNormGate | None = None):
    if applies(qkvo, gates, state, num_heads, qk_dim, v_dim):
        if norm is None or fuses_norm(qkvo, norm, num_heads, v_dim):
            return mlstm_decode_step_cuda(qkvo, gates, state, num_heads, qk_dim, v_dim, gate_soft_cap, eps, norm=norm)
        h, state = mlstm_decode_step_cuda(qkvo, gates, state, num_heads, qk_dim, v_dim, gate_soft_cap, eps)
        return headnorm.headnorm_gate(h.astype(qkvo.dtype), qkvo, norm.o_offset, norm.weight, norm.bias,
                                      norm.eps), state
    # elsewhere: the same ops, the step compiled (as the "mlstm.step" kernel) for uncompiled model calls, and the
    # head norm's fast form (headnorm.headnorm_gate)
    h, state = mlstm_decode_step_ref(qkvo, gates, state, num_heads, qk_dim, v_dim, gate_soft_cap, eps, step=mlstm_step)
    if norm is None:
        return h, state
    return headnorm.headnorm_gate(h.astype(qkvo.dtype), qkvo, norm.o_offset, norm.weight, norm.bias, norm.eps), state


def label() -> str:
    if cuda_available():
        return ("fused CUDA kernel (mx.fast.cuda_kernel): gates, C/n/m update and read-out in one launch (with the "
                "head LayerNorm and output gate where the block passes them)")
    return "MLX ops (soft cap + compiled step; the fused CUDA kernel needs MLX's CUDA backend)"
