"""A whole quantized xLSTM-7B block's decode step in ONE CUDA launch: a persistent kernel with grid barriers.

At decode with few rows the step is bound by the host, not the GPU: every node of the lazy graph is built and
then encoded into MLX's CUDA graph at every step (~4 ms for the 7B 4-bit step's ~290 nodes and ~195 launches at
one row, while its kernels take ~2.7 ms; benchmarks/results/gpu_h200_2026-12-03d.md, -03e.md). This kernel does a
block's six launches (the q|k|v|o GEMV, the decode cell with its head norm, the out projection, the FFN norm, the
gate|up GEMV, the SwiGLU, the down projection and the next block's norm) as phases of one launch: a grid of
resident blocks (one per multiprocessor) walks each phase's work items ("virtual blocks": exactly the blocks the
separate kernels would have launched), and waits at a grid barrier between phases, where one kernel ended and
the next began.

    decode_layer_ref(x, y, y_c, state, layer)   the chain of the MLX-ops references (quantized matmuls, the decode
                                                step, the norms, the SwiGLU): what the block computes
    decode_layer_cuda(x, y, y_c, state, layer)  the persistent kernel (no fallback: callers check `applies`)
    decode_layer(...)                           the kernel where it applies, else the chain of the fast forms

x [B, D] float32: the residual stream before the block; y [B, D] float32 and y_c [B, D] (the compute dtype): its
first norm's output (the previous block's next norm). Returns (r, y_next, y_c_next, state): the residual after the
block and the next block's first norm of it (float32, and in the compute dtype), as MLSTMBlock.__call__ returns
them in the rows form (r, Normed(r, y, y_c)).

Bits: each phase runs the source of the kernel it replaces (quant_gemv._SOURCE, mlstm_decode._SOURCE,
swiglu._SOURCE, add_rms_norm's row function), with blockIdx.x replaced by the virtual block's index, so the
outputs are bit for bit those of the chain of separate CUDA kernels (tests/kernels/test_decode_layer.py, emulated
on the CPU and on the GPU). Two things differ from the separate kernels, neither in the arithmetic:
  - x reads of the GEMVs go through L2 (__ldcg, XQ_X_LOAD): their x was written by another block of the same
    launch, and the read-only path (__ldg) is only defined for data that no thread writes during the launch;
  - the GEMVs run in blocks of 8 warps (a persistent block has one size); a measured configuration of 4 warps is
    replaced by the 8-warp rule (persistent_config).
The grid barrier: every block counts itself in at an arrival counter (after a fence), then waits for the count of
the phase (blocks x phases so far); the last block out resets the counter for the next launch. All blocks must be
resident at once: one 256-thread block a multiprocessor (static shared memory <= 48 KB, <= 255 registers a thread),
grid = the multiprocessor count. A barrier that waits longer than ~2 s traps (a CUDA error, never a hang and
never silently wrong output).
"""

from __future__ import annotations

import importlib
import os
from typing import NamedTuple

import mlx.core as mx
import numpy as np

from xlstm_mlx import env
from xlstm_mlx.errors import UsageError
from xlstm_mlx.kernels import headnorm, mlstm_decode, quant_gemv
from xlstm_mlx.kernels.add_rms_norm import COUNTER_WORDS, TAIL_HEADER
from xlstm_mlx.kernels.cuda_common import SMS, cuda_available, float_bits

# the modules (the package exports functions of these names)
add_norm_mod = importlib.import_module("xlstm_mlx.kernels.add_rms_norm")
swiglu_mod = importlib.import_module("xlstm_mlx.kernels.swiglu")

THREADS = 256  # threads of a persistent block: the decode cell's and SwiGLU's block, 8-warp GEMVs
POOL_BYTES = 40 * 1024  # the GEMVs' shared ring and reduction space (the one shared pool of every GEMV phase)
SWITCH = "XLSTM_MLX_DECODE_LAYER"  # 0: the separate launches (an A/B switch for measurements)
GRID_ENV = "XLSTM_MLX_DECODE_LAYER_GRID"  # resident blocks (default SMS): for tests and measurements


class QuantMatrix(NamedTuple):
    """One nn.QuantizedLinear's operands (or a fused group's): x @ dequantize(w).T (+ bias)."""
    w: mx.array
    scales: mx.array
    biases: mx.array | None
    bias: mx.array | None
    group_size: int
    bits: int
    mode: str


class Norm(NamedTuple):
    weight: mx.array
    bias: mx.array | None
    eps: float


class LayerOperands(NamedTuple):
    """What one block's decode step reads besides x and the state (MLSTMBlock.decode_operands builds it)."""
    qkvo: QuantMatrix             # q | k | v | o rows (2 qk_dim + 2 v_dim outputs)
    gate_w: mx.array              # the float32 input / forget gate projection [2 NH, D] (+ gate_b)
    gate_b: mx.array | None
    head_norm: Norm               # per-head LayerNorm weight (+ bias) [v_dim], in the compute dtype
    out_proj: QuantMatrix
    norm_ffn: Norm
    up: QuantMatrix               # the FFN's gate | z rows (2 ffn_dim outputs)
    down: QuantMatrix
    next_norm: Norm               # the next block's first norm
    num_heads: int
    qk_dim: int
    v_dim: int
    gate_soft_cap: float | None
    eps: float                    # the cell's denominator eps
    norm_counter: mx.array | None = None    # the head norm's per-(sequence, head) tile counter (mlstm_decode)
    barrier: mx.array | None = None         # the grid barrier's counters (barrier_counter)


def barrier_counter(owner) -> mx.array:
    """The grid barrier's two counters (arrivals, departures) for `owner` (a block), zeros made from host data
    once (COUNTER_WORDS words: ordinary device memory, add_rms_norm.COUNTER_WORDS); each launch leaves them zero."""
    hit = owner.__dict__.get("_xlstm_decode_layer_barrier")
    if hit is None:
        hit = owner.__dict__["_xlstm_decode_layer_barrier"] = mx.array(np.zeros(COUNTER_WORDS, np.uint32))
    return hit


# ---------------------------------------------------------------------------------------------------------------
# The chain (reference and fast forms)

def _chain(x, y, y_c, state, L: LayerOperands, matmul, step, add_rms, glu):
    cd = y_c.dtype
    q = L.qkvo
    qkvo = matmul(y_c, q.w, q.scales, q.biases, q.bias, q.group_size, q.bits, q.mode)
    hn = mlstm_decode.HeadNormGate(L.head_norm.weight, L.head_norm.bias, L.head_norm.eps, 2 * L.qk_dim + L.v_dim,
                                   L.norm_counter)
    h, state = step(qkvo, mlstm_decode.GateProjection(y, L.gate_w, L.gate_b), state, L.num_heads, L.qk_dim, L.v_dim,
                    L.gate_soft_cap, L.eps, norm=hn)
    o = L.out_proj
    a = matmul(h, o.w, o.scales, o.biases, o.bias, o.group_size, o.bits, o.mode)
    r1, _, yc1 = add_rms(x, a, L.norm_ffn.weight, L.norm_ffn.bias, L.norm_ffn.eps, cd, False)
    u = L.up
    gz = matmul(yc1, u.w, u.scales, u.biases, u.bias, u.group_size, u.bits, u.mode)
    hf = glu(gz)
    d = L.down
    dd = matmul(hf, d.w, d.scales, d.biases, d.bias, d.group_size, d.bits, d.mode)
    r2, y2, yc2 = add_rms(r1, dd, L.next_norm.weight, L.next_norm.bias, L.next_norm.eps, cd, True)
    return r2, y2, yc2, state


def decode_layer_ref(x, y, y_c, state, layer: LayerOperands):
    """The MLX-ops references in the block's order (quant_gemv.quantized_matmul_ref, the decode step's reference
    with the head norm, add_rms_norm_ref, swiglu_ref)."""
    return _chain(x, y, y_c, state, layer, quant_gemv.quantized_matmul_ref, mlstm_decode.mlstm_decode_step_ref,
                  add_norm_mod.add_rms_norm_ref, swiglu_mod.swiglu_ref)


def decode_layer_separate(x, y, y_c, state, layer: LayerOperands):
    """The separate fast forms in the same order (each its own launch where it runs on CUDA): the chain this
    kernel replaces, and its fallback."""
    return _chain(x, y, y_c, state, layer, quant_gemv.quantized_gemv, mlstm_decode.mlstm_decode_step,
                  add_norm_mod.add_rms_norm, swiglu_mod.swiglu)


# ---------------------------------------------------------------------------------------------------------------
# Device functions made from the separate kernels' sources

def _replace(body: str, subs) -> str:
    for old, new in subs:
        if old not in body:
            raise RuntimeError(f"decode_layer: the kernel source changed, {old!r} is not in it")  # a bug, not input
        body = body.replace(old, new)
    return body


_GEMV_FN = ("template <int NT, int P, int BITS, int GS, int R, int U, int S, int KSPLIT, int WARPS, int SD, int XPRE,"
            " bool HAS_BIAS, class TX, class TS>\n"
            "__device__ void xl_gemv_vblock(const TX* x, const uint32_t* w, const TS* scales, const TS* biases,"
            " const TS* bias, TX* y, int xM, int xK, int wN, int sG, int vb, uint4* pool) {\n"
            "    const int x_shape[2] = {xM, xK};\n    const int w_shape[2] = {wN, 0};\n"
            "    const int scales_shape[2] = {wN, sG};\n"
            + _replace(quant_gemv._SOURCE, [
                ("__shared__ __align__(128) uint4 smem[WARPS * PER_WARP];",
                 "static_assert(WARPS * PER_WARP * 16 <= XL_POOL_BYTES, \"the GEMV's shared memory is over the pool\");\n"
                 "    uint4* smem = pool;"),
                ("blockIdx.x", "vb")])
            + "}\n")

_CELL_FN = ("template <int NH, int DQK, int DV, int QK_DIM, int TJ, bool GATE_PROJ, bool HAS_GATE_BIAS, int HID,"
            " int THREADS, bool HAS_CAP, int CAP_BITS, int EPS_BITS, bool FUSE_NORM, bool NORM_BIAS, int O_OFF,"
            " int NORM_EPS_BITS, class TQ>\n"
            "__device__ void xl_cell_vblock(const TQ* qkvo, const float* gates, const float* x, const float* w_if,"
            " const float* b_if, const float* C, const float* n, const float* m, const TQ* nw, const TQ* nb,"
            " const uint32_t* counter, TQ* h, float* C_out, float* n_out, float* m_out, TQ* out, int nq, int vb) {\n"
            "    const int qkvo_shape[2] = {0, nq};\n"
            + _replace(mlstm_decode._SOURCE, [("blockIdx.x", "vb")])
            + "}\n")

_GLU_FN = ("template <class T, int D, int DP, int THREADS>\n"
           "__device__ void xl_swiglu_vblock(const T* gate_z, T* out, int nrows, int vb) {\n"
           "    const int gate_z_ndim = 2;\n    const int gate_z_shape[2] = {nrows, 2 * D};\n"
           + _replace(swiglu_mod._SOURCE, [("blockIdx.x", "vb")])
           + "}\n")

# one row of add_rms_norm's kernel (its THREADS virtual threads played by this block's THREADS): the same bits
_NORM_FN = r"""
template <int D, bool HAS_BIAS, bool WRITE_Y, class TX, class TH, class TW, class TY, class TC>
__device__ void xl_add_norm_vblock(const TX* x, const TH* h, const TW* weight, const TW* bias, float* r, TY* y,
                                   TC* y_c, float eps, int row) {
    __shared__ float part[XL_NORM_VT / 32];
    xl_add_rms_row<D, XL_NORM_VT, XL_THREADS, true, HAS_BIAS, WRITE_Y>(
        x + (size_t)row * D, h + (size_t)row * D, weight, bias, r + (size_t)row * D, y + (size_t)(WRITE_Y ? row : 0) * D,
        y_c + (size_t)row * D, eps, part);
}
"""

_BARRIER = r"""
#if defined(__CUDACC__)
__device__ __forceinline__ unsigned xl_spin_load(const unsigned* p) { return *reinterpret_cast<const volatile unsigned*>(p); }
__device__ __forceinline__ void xl_spin_pause() { __nanosleep(32); }
__device__ __forceinline__ void xl_barrier_timeout() { __trap(); }
#else
inline unsigned xl_spin_load(const unsigned* p) { return std::atomic_ref<unsigned>(*const_cast<unsigned*>(p)).load(); }
inline void xl_spin_pause() { std::this_thread::yield(); }
inline void xl_barrier_timeout() { fprintf(stderr, "decode_layer: grid barrier timed out\n"); abort(); }
#endif
// All blocks of the grid meet here: the writes of every block before it are visible to every block after it
// (the pattern of cooperative groups' grid sync: block barrier, one thread's fence + arrival + wait + fence).
// `target`: the arrivals to wait for, gridDim.x more each barrier of the launch (the counter only grows in one).
__device__ __forceinline__ void xl_grid_barrier(unsigned* bar, unsigned& target) {
    target += gridDim.x;
    __syncthreads();
    if (threadIdx.x == 0) {
        __threadfence();
        atomicAdd(bar, 1u);
        unsigned long long spins = 0;
        while (xl_spin_load(bar) < target) {
            if (++spins > (1ull << 26)) xl_barrier_timeout();   // ~2 s: a block that never came (not resident)
            xl_spin_pause();
        }
        __threadfence();
    }
    __syncthreads();
}
// the last block to leave resets both counters for the next launch (every other block has passed its last wait)
__device__ __forceinline__ void xl_grid_done(unsigned* bar) {
    __syncthreads();
    if (threadIdx.x == 0 && atomicAdd(bar + 1, 1u) == gridDim.x - 1) {
        bar[0] = 0u;
        bar[1] = 0u;
        __threadfence();
    }
}
"""

_HEADER = ("#define XQ_X_LOAD __ldcg\n" + quant_gemv._HEADER + headnorm.ROW_HEADER + mlstm_decode.XLVEC_HEADER
           + TAIL_HEADER + f"#define XL_POOL_BYTES {POOL_BYTES}\n#define XL_THREADS {THREADS}\n"
           f"#define XL_NORM_VT {add_norm_mod.THREADS}\n" + _BARRIER + _GEMV_FN + _CELL_FN + _GLU_FN + _NORM_FN)

_GEMV_T = ("NT", "P", "BITS", "GS", "R", "U", "S", "KSPLIT", "WARPS", "SD", "XPRE", "HAS_BIAS")
_PHASES = ("Q", "O", "U", "D")  # the four GEMVs: q|k|v|o, out_proj, gate|up, down


def _gemv_call(p: str, x: str, M: str, K: str, N: str, out: str) -> str:
    t = ", ".join(f"{p}_{n}" for n in _GEMV_T)
    return (f"    for (int vb = blockIdx.x; vb < {p}_BLOCKS; vb += gridDim.x) {{\n"
            f"        xl_gemv_vblock<{t}>({x}, w_{p}, s_{p}, b_{p}, bias_{p}, {out}, {M}, {K}, {N}, {p}_G, vb, pool);\n"
            "        __syncthreads();\n    }\n")


_SOURCE = (r"""
    __shared__ __align__(128) uint4 pool[XL_POOL_BYTES / 16];
    unsigned* bar = const_cast<unsigned*>(barrier);
    unsigned target = 0;
    const int B = y_c_shape[0];
    TX* qkvo_s = work + OFF_QKVO;
    TX* h_s = work + OFF_H;
    TX* cell_s = work + OFF_CELL;
    TX* a_s = work + OFF_A;
    float* r1_s = reinterpret_cast<float*>(work + OFF_R1);
    TX* yc1_s = work + OFF_YC1;
    TX* gz_s = work + OFF_GZ;
    TX* hf_s = work + OFF_HF;
    TX* d_s = work + OFF_DD;
    // 1. q | k | v | o = y_c @ W_qkvo
""" + _gemv_call("Q", "y_c", "B", "DIM", "NQ", "qkvo_s") + r"""    xl_grid_barrier(bar, target);
    // 2. gates, C / n / m update, read-out, head norm and output gate (the decode step with its norm)
    for (int vb = blockIdx.x; vb < CELL_BLOCKS; vb += gridDim.x) {
        xl_cell_vblock<NH, DQK, DV, QK_DIM, TJ, true, HAS_GATE_BIAS, DIM, XL_THREADS, HAS_CAP, CAP_BITS, EPS_BITS,
                       true, NORM_BIAS, O_OFF, NORM_EPS_BITS, TX>(
            qkvo_s, y, y, w_if, b_if, C, n, m, hn_w, hn_b, hn_counter, h_s, C_out, n_out, m_out, cell_s, NQ, vb);
        __syncthreads();
    }
    xl_grid_barrier(bar, target);
    // 3. the out projection, then the residual add + the FFN norm (a row a block)
""" + _gemv_call("O", "cell_s", "B", "V_DIM", "DIM", "a_s") + r"""    xl_grid_barrier(bar, target);
    for (int row = blockIdx.x; row < B; row += gridDim.x) {
        xl_add_norm_vblock<DIM, NF_BIAS, false>(x, a_s, nf_w, nf_b, r1_s, yc1_s, yc1_s, __int_as_float(NF_EPS_BITS),
                                                row);
        __syncthreads();
    }
    xl_grid_barrier(bar, target);
    // 4. gate | z = y_c1 @ W_up, then silu(gate) * z
""" + _gemv_call("U", "yc1_s", "B", "DIM", "2 * FFN", "gz_s") + r"""    xl_grid_barrier(bar, target);
    for (int vb = blockIdx.x; vb < GLU_BLOCKS; vb += gridDim.x) {
        xl_swiglu_vblock<TX, FFN, FFN, XL_THREADS>(gz_s, hf_s, B, vb);
        __syncthreads();
    }
    xl_grid_barrier(bar, target);
    // 5. the down projection, then the residual add + the next block's first norm
""" + _gemv_call("D", "hf_s", "B", "FFN", "DIM", "d_s") + r"""    xl_grid_barrier(bar, target);
    for (int row = blockIdx.x; row < B; row += gridDim.x) {
        xl_add_norm_vblock<DIM, NN_BIAS, true>(r1_s, d_s, nn_w, nn_b, r_out, y_out, y_c_out,
                                               __int_as_float(NN_EPS_BITS), row);
        __syncthreads();
    }
    xl_grid_done(bar);
""")

_INPUTS = ["x", "y", "y_c", "C", "n", "m", "w_if", "b_if", "hn_w", "hn_b", "hn_counter", "nf_w", "nf_b", "nn_w",
           "nn_b", "barrier"] + [f"{a}_{p}" for p in _PHASES for a in ("w", "s", "b", "bias")]
_OUTPUTS = ["C_out", "n_out", "m_out", "r_out", "y_out", "y_c_out", "work"]

_kernel = None


def _get_kernel():
    global _kernel
    if _kernel is None:
        _kernel = mx.fast.cuda_kernel(name="xlstm_decode_layer", input_names=_INPUTS, output_names=_OUTPUTS,
                                      source=_SOURCE, header=_HEADER)
    return _kernel


# ---------------------------------------------------------------------------------------------------------------
# Configuration and applicability

def persistent_config(rows: int, n: int, k: int, bits: int, group_size: int, x_dtype) -> dict:
    """The GEMV configuration inside the persistent block: quant_gemv.default_config where it is an 8-warp one and
    fits the pool, else 8 warps with one 16-row tile and one unit a step, K split 4 ways (8 for short outputs,
    <= 8,192, as the measured 4,096-output configurations)."""
    cfg = quant_gemv.default_config(rows, n, k * bits // 128, bits, group_size, x_dtype)
    if cfg["WARPS"] != 8 or quant_gemv.smem_bytes(cfg, rows, bits, group_size, x_dtype) > POOL_BYTES:
        cfg = dict(R=1, U=1, S=4, KSPLIT=8 if n <= 8192 else 4, WARPS=8)
    return cfg


def _matrix_ok(m: QuantMatrix, x_dtype, rows: int, k: int, n: int) -> bool:
    if m.biases is None or m.mode != "affine" or m.bits not in quant_gemv.BITS:
        return False
    if m.w.dtype != mx.uint32 or m.w.shape != (n, k * m.bits // 32) or m.scales.dtype != x_dtype:
        return False
    if m.scales.shape != (n, k // m.group_size) or m.biases.shape != m.scales.shape or m.biases.dtype != x_dtype:
        return False
    if m.bias is not None and (m.bias.dtype != x_dtype or m.bias.shape != (n,)):
        return False
    if m.group_size not in quant_gemv.GROUP_SIZES or k % m.group_size:
        return False
    cfg = persistent_config(rows, n, k, m.bits, m.group_size, x_dtype)
    return (quant_gemv.config_problem(cfg, rows, m.bits, m.group_size, x_dtype) is None
            and quant_gemv.smem_bytes(cfg, rows, m.bits, m.group_size, x_dtype) <= POOL_BYTES)


def _norm_ok(nm: Norm, dim: int) -> bool:
    return (nm.weight.dtype == mx.float32 and nm.weight.shape == (dim,)
            and (nm.bias is None or (nm.bias.dtype == mx.float32 and nm.bias.shape == (dim,))))


def enabled() -> bool:
    return env.flag(SWITCH)


def applies(x, y, y_c, state, L: LayerOperands) -> bool:
    """Whether the persistent kernel runs: MLX's CUDA backend and the switch on; x, y float32 [B, D] and y_c
    bf16 / float32 rows, B <= quant_gemv.MAX_ROWS; all four products quantized (affine, with biases, scales in
    y_c's dtype) in shapes the GEMV takes; the float32 gate projection; the decode step's and its head norm's
    conditions; float32 norms with D <= add_rms_norm.MAX_TAIL_DIM; the SwiGLU's 16-byte columns; the counters."""
    if not (cuda_available() and enabled()):
        return False
    if x.ndim != 2 or y_c.ndim != 2 or x.dtype != mx.float32 or y.dtype != mx.float32 or y.shape != x.shape:
        return False
    B, D = x.shape
    cd = y_c.dtype
    NH, qk, vd = L.num_heads, L.qk_dim, L.v_dim
    if cd not in quant_gemv.DTYPES or y_c.shape != x.shape or not 1 <= B <= quant_gemv.MAX_ROWS:
        return False
    if NH < 1 or qk % NH or vd % NH or D > add_norm_mod.MAX_TAIL_DIM:
        return False
    nq = L.qkvo.w.shape[0]
    ffn2 = L.up.w.shape[0]
    vec = 16 // cd.size
    if ffn2 % 2 or (ffn2 // 2) % vec or nq < 2 * qk + 2 * vd:
        return False
    ffn = ffn2 // 2
    if not (_matrix_ok(L.qkvo, cd, B, D, nq) and _matrix_ok(L.out_proj, cd, B, vd, D)
            and _matrix_ok(L.up, cd, B, D, ffn2) and _matrix_ok(L.down, cd, B, ffn, D)):
        return False
    if not (_norm_ok(L.norm_ffn, D) and _norm_ok(L.next_norm, D)):
        return False
    if L.gate_w.dtype != mx.float32 or L.gate_w.shape != (2 * NH, D):
        return False
    if L.gate_b is not None and (L.gate_b.dtype != mx.float32 or L.gate_b.shape != (2 * NH,)):
        return False
    dqk, dv = qk // NH, vd // NH
    C, n, m = state
    if any(s.dtype != mx.float32 for s in state) or C.shape != (B, NH, dqk, dv) or n.shape != (B, NH, dqk) \
            or m.shape[:2] != (B, NH) or m.size != B * NH:
        return False
    hn = L.head_norm
    if dv % (32 * vec) or dqk > 4096 or hn.weight.dtype != cd or hn.weight.shape != (vd,) \
            or (hn.bias is not None and (hn.bias.dtype != cd or hn.bias.shape != (vd,))) or (nq * cd.size) % 16:
        return False
    return (L.norm_counter is not None and L.norm_counter.dtype == mx.uint32 and L.norm_counter.size >= B * NH
            and L.barrier is not None and L.barrier.dtype == mx.uint32 and L.barrier.size >= 2)


def grid_blocks() -> int:
    """Resident blocks of the launch: SMS (one a multiprocessor), or $XLSTM_MLX_DECODE_LAYER_GRID (1..SMS)."""
    raw = os.environ.get(GRID_ENV, "").strip()
    if not raw:
        return SMS
    if not raw.isdigit() or not 1 <= int(raw) <= SMS:
        raise UsageError(f"{GRID_ENV}={raw!r}: set it to a block count from 1 to {SMS} (the persistent decode "
                         "kernel's resident blocks), or unset it for the default")
    return int(raw)


def _aligned(n: int) -> int:
    return -(-n // 8) * 8  # a multiple of 8 elements: 16 bytes of bf16, 32 of float32


def decode_layer_cuda(x, y, y_c, state, L: LayerOperands, *, grid: int | None = None):
    """The persistent kernel (no fallback: callers check `applies`)."""
    B, D = x.shape
    cd = y_c.dtype
    NH, qk, vd = L.num_heads, L.qk_dim, L.v_dim
    dqk, dv = qk // NH, vd // NH
    nq, ffn = L.qkvo.w.shape[0], L.up.w.shape[0] // 2
    C, n, m = state
    tj = mlstm_decode.default_tj(B, dv)
    glu_vec = 16 // cd.size
    # the scratch of the launch, one buffer (in cd elements; float32 r1 takes two a value)
    sizes = [("QKVO", B * nq), ("H", B * vd), ("CELL", B * vd), ("A", B * D), ("R1", B * D * 4 // cd.size),
             ("YC1", B * D), ("GZ", B * 2 * ffn), ("HF", B * ffn), ("DD", B * D)]
    offsets, at = [], 0
    for name, size in sizes:  # each segment starts 16-byte aligned (the kernels' vector loads)
        offsets.append((f"OFF_{name}", at))
        at += _aligned(size)
    template = [("TX", cd), ("DIM", D), ("NQ", nq), ("V_DIM", vd), ("FFN", ffn), ("NH", NH), ("DQK", dqk),
                ("DV", dv), ("QK_DIM", qk), ("TJ", tj), ("HAS_GATE_BIAS", L.gate_b is not None),
                ("HAS_CAP", L.gate_soft_cap is not None), ("CAP_BITS", float_bits(L.gate_soft_cap or 0.0)),
                ("EPS_BITS", float_bits(L.eps)), ("NORM_BIAS", L.head_norm.bias is not None),
                ("O_OFF", 2 * qk + vd), ("NORM_EPS_BITS", float_bits(L.head_norm.eps)),
                ("NF_BIAS", L.norm_ffn.bias is not None), ("NF_EPS_BITS", float_bits(L.norm_ffn.eps)),
                ("NN_BIAS", L.next_norm.bias is not None), ("NN_EPS_BITS", float_bits(L.next_norm.eps)),
                ("CELL_BLOCKS", B * NH * (dv // tj)), ("GLU_BLOCKS", -(-B * ffn // glu_vec // THREADS))] + offsets
    mats = []
    for p, mat, k, nn_ in (("Q", L.qkvo, D, nq), ("O", L.out_proj, vd, D), ("U", L.up, D, 2 * ffn),
                           ("D", L.down, ffn, D)):
        cfg = persistent_config(B, nn_, k, mat.bits, mat.group_size, cd)
        consts = quant_gemv.kernel_constants(cd, B, mat.bits, mat.group_size, mat.bias is not None, cfg)
        template += [(f"{p}_{name}", v) for name, v in consts]
        template += [(f"{p}_BLOCKS", quant_gemv.launch_blocks(nn_, cfg)), (f"{p}_G", mat.scales.shape[1])]
        mats += [mat.w, mat.scales, mat.biases, mat.bias if mat.bias is not None else mat.biases]
    hn = L.head_norm
    dummy = m  # stands in for an absent bias (never read)
    inputs = [x, y, y_c, C, n, m, L.gate_w, L.gate_b if L.gate_b is not None else dummy, hn.weight,
              hn.bias if hn.bias is not None else hn.weight, L.norm_counter, L.norm_ffn.weight,
              L.norm_ffn.bias if L.norm_ffn.bias is not None else L.norm_ffn.weight, L.next_norm.weight,
              L.next_norm.bias if L.next_norm.bias is not None else L.next_norm.weight, L.barrier, *mats]
    blocks = grid or grid_blocks()
    C2, n2, m2, r, y2, yc2, _ = _get_kernel()(
        inputs=inputs,
        template=template,
        grid=(blocks * THREADS, 1, 1),
        threadgroup=(THREADS, 1, 1),
        output_shapes=[C.shape, n.shape, m.shape, (B, D), (B, D), (B, D), (at,)],
        output_dtypes=[mx.float32, mx.float32, mx.float32, mx.float32, mx.float32, cd, cd],
    )
    return r, y2, yc2, (C2, n2, m2)


def decode_layer(x, y, y_c, state, layer: LayerOperands):
    """The persistent kernel where it applies, else the separate fast forms (decode_layer_separate)."""
    if applies(x, y, y_c, state, layer):
        return decode_layer_cuda(x, y, y_c, state, layer)
    return decode_layer_separate(x, y, y_c, state, layer)


def label() -> str:
    if cuda_available():
        state = "on" if enabled() else f"off ({SWITCH}=0)"
        return (f"persistent CUDA kernel (mx.fast.cuda_kernel): a quantized block's decode step in one launch, "
                f"grid barriers between its phases, <= {quant_gemv.MAX_ROWS} rows; {state}")
    return "the separate fast forms (the persistent decode kernel needs MLX's CUDA backend)"
