"""The decode-path CUDA kernels' own sources run on the CPU through the SIMT emulator (cuda_emulator.py), against
their MLX-ops references: swiglu, the embedding row copy, the decode step (given gates and its own gate
projection, every column tile), add + RMSNorm and the head norm + gate. Small shapes (the emulator runs one
OS thread per CUDA thread). Tolerances as in test_cuda_kernels.py. Skipped where CUDA runs (the real kernels are
tested there) or g++ is missing.
"""

import importlib

import mlx.core as mx
import mlx.nn as nn
import pytest

from xlstm_mlx.kernels import headnorm, mlstm_decode
from xlstm_mlx.kernels.cuda_common import cuda_available

import cuda_emulator
from cuda_checks import rel_error

pytestmark = pytest.mark.skipif(cuda_available() or not cuda_emulator.available(),
                                reason="needs g++ and no CUDA (where CUDA runs, the real kernels are tested)")
swiglu = importlib.import_module("xlstm_mlx.kernels.swiglu")
embedding = importlib.import_module("xlstm_mlx.kernels.embedding")
add_rms = importlib.import_module("xlstm_mlx.kernels.add_rms_norm")


@pytest.mark.parametrize("dtype", [mx.bfloat16, mx.float32])
def test_swiglu_emulated(dtype):
    gz = (mx.random.normal((2, 3, 2 * 48), key=mx.random.key(1)) * 3.0).astype(dtype)
    with cuda_emulator.emulated(swiglu):
        assert swiglu.applies(gz)
        out = swiglu.swiglu_cuda(gz)
    ref = swiglu.swiglu_ref(gz)
    assert out.shape == (2, 3, 48) and rel_error(out, ref) <= (1e-3 if dtype == mx.bfloat16 else 1e-6)


@pytest.mark.parametrize("dtype", [mx.bfloat16, mx.float32])
def test_swiglu_padded_width_emulated(dtype):
    """width > d: the kernel writes zeros past d in the same launch (the padded FFN down's input)."""
    gz = (mx.random.normal((3, 2 * 48), key=mx.random.key(2)) * 3.0).astype(dtype)
    with cuda_emulator.emulated(swiglu):
        assert swiglu.applies(gz, 64)
        out = swiglu.swiglu_cuda(gz, 64)
    ref = swiglu.swiglu_ref(gz, 64)
    assert out.shape == (3, 64) and not bool(mx.any(out[:, 48:]).item())
    assert rel_error(out, ref) <= (1e-3 if dtype == mx.bfloat16 else 1e-6)


def test_embedding_emulated():
    table = nn.Embedding(37, 24)
    table.weight = table.weight.astype(mx.bfloat16)
    ids = mx.array([[0, 36, 5], [7, 7, 1]], dtype=mx.int32)
    with cuda_emulator.emulated(embedding):
        out = embedding.embedding_lookup_cuda(table, ids)
    assert mx.array_equal(out, table(ids))


@pytest.mark.parametrize("tj", [32, 64, 128])
@pytest.mark.parametrize("proj", [False, True])
@pytest.mark.parametrize("dqk", [20, 300])  # 20: rows per warp uneven (8 warps); 300: two 32-row load batches
def test_decode_step_emulated(tj, proj, dqk):
    B, NH, dv, H = 2, 2, 128, 40
    qk, v = NH * dqk, NH * dv
    ks = [mx.random.key(40 + i) for i in range(8)]
    qkvo = mx.random.normal((B, 2 * qk + 2 * v), key=ks[0]).astype(mx.bfloat16)
    gates = (mlstm_decode.GateProjection(mx.random.normal((B, H), key=ks[1]),
                                         mx.random.normal((2 * NH, H), key=ks[2]), mx.random.normal((2 * NH,), key=ks[3]))
             if proj else mx.random.normal((B, 2 * NH), key=ks[1]) * 5.0)
    state = (mx.random.normal((B, NH, dqk, dv), key=ks[4]), mx.random.normal((B, NH, dqk), key=ks[5]),
             mx.random.normal((B, NH, 1), key=ks[6]))
    h_ref, s_ref = mlstm_decode.mlstm_decode_step_ref(qkvo, gates, state, NH, qk, v, 15.0, 1e-6)
    with cuda_emulator.emulated(mlstm_decode):
        assert mlstm_decode.applies(qkvo, gates, state, NH, qk, v)
        h, s = mlstm_decode.mlstm_decode_step_cuda(qkvo, gates, state, NH, qk, v, 15.0, 1e-6, tj=tj)
    assert rel_error(h, h_ref) <= 1e-2
    for a, b in zip(s, s_ref):
        assert rel_error(a, b) <= 1e-5


@pytest.mark.parametrize("tj", [32, 64, 128])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("dtype", [mx.bfloat16, mx.float32])
def test_decode_step_with_fused_head_norm_emulated(tj, bias, dtype):
    """norm=HeadNormGate: the last of a head's tile blocks applies the head LayerNorm, weight (+ bias) and sigmoid
    gate in the step's own launch. Against the unfused pair (the step, then the headnorm kernel, both emulated):
    the same arithmetic in the same order, so bit-identical; against the MLX-ops reference as the two kernels'
    own tests: bf16 2e-2 (one bf16 rounding of h before the norm, a few of the norm), float32 1e-5. (The emulator
    hands the kernel copies of its inputs: that the counter is left at zero is the GPU test's check.)"""
    B, NH, dqk, dv, H = 2, 2, 20, 256, 40
    qk, v = NH * dqk, NH * dv
    ks = [mx.random.key(60 + i) for i in range(10)]
    qkvo = mx.random.normal((B, 2 * qk + 2 * v + 8), key=ks[0]).astype(dtype)
    gates = mlstm_decode.GateProjection(mx.random.normal((B, H), key=ks[1]),
                                        mx.random.normal((2 * NH, H), key=ks[2]), None)
    state = (mx.random.normal((B, NH, dqk, dv), key=ks[4]), mx.random.normal((B, NH, dqk), key=ks[5]),
             mx.random.normal((B, NH, 1), key=ks[6]))
    w = (mx.random.normal((v,), key=ks[7]) * 0.2 + 1.0).astype(dtype)
    b = (mx.random.normal((v,), key=ks[8]) * 0.1).astype(dtype) if bias else None
    owner = type("Layer", (), {})()
    norm = mlstm_decode.HeadNormGate(w, b, 1e-5, 2 * qk + v, mlstm_decode.norm_counter(owner, B * NH))
    assert mlstm_decode.fuses_norm(qkvo, norm, NH, v)
    ref, s_ref = mlstm_decode.mlstm_decode_step_ref(qkvo, gates, state, NH, qk, v, 15.0, 1e-6, norm=norm)
    with cuda_emulator.emulated(mlstm_decode, headnorm):
        out, s = mlstm_decode.mlstm_decode_step_cuda(qkvo, gates, state, NH, qk, v, 15.0, 1e-6, tj=tj, norm=norm)
        h, _ = mlstm_decode.mlstm_decode_step_cuda(qkvo, gates, state, NH, qk, v, 15.0, 1e-6, tj=tj)
        pair = headnorm.headnorm_gate_cuda(h, qkvo, norm.o_offset, w, b, 1e-5)
    assert out.shape == (B, v) and out.dtype == dtype
    assert mx.array_equal(out, pair)
    assert rel_error(out, ref) <= (2e-2 if dtype == mx.bfloat16 else 1e-5)
    for a, r in zip(s, s_ref):
        assert rel_error(a, r) <= 1e-5


@pytest.mark.parametrize("D", [300, 40, 1100])  # 1100: three elements a thread (registers), the last one partial
@pytest.mark.parametrize("with_h", [False, True])
@pytest.mark.parametrize("with_bias", [False, True])
def test_add_rms_norm_emulated(D, with_h, with_bias):
    x = mx.random.normal((3, D), key=mx.random.key(D)) * 2.0
    h = mx.random.normal((3, D), key=mx.random.key(D + 1)).astype(mx.bfloat16) if with_h else None
    w = mx.random.normal((D,), key=mx.random.key(D + 2)) * 0.2 + 1.0
    b = mx.random.normal((D,), key=mx.random.key(D + 3)) * 0.1 if with_bias else None
    ref = add_rms.add_rms_norm_ref(x, h, w, b, 1e-6, mx.bfloat16)
    with cuda_emulator.emulated(add_rms):
        got = add_rms.add_rms_norm_cuda(x, h, w, b, 1e-6, mx.bfloat16)
        r2, y2, c2 = add_rms.add_rms_norm_cuda(x, h, w, b, 1e-6, mx.bfloat16, want_y=False)
    # float32 sums in another order than MLX's: r is one addition (exact to 1e-7), y within a few float32
    # roundings, y_c within one bf16 rounding
    assert rel_error(got[0], ref[0]) <= 1e-7 and rel_error(got[1], ref[1]) <= 1e-6 and rel_error(got[2], ref[2]) <= 1e-2
    assert y2 is None and mx.array_equal(r2, got[0]) and mx.array_equal(c2, got[2])  # want_y=False: y only dropped


@pytest.mark.parametrize("rows", [3, 40])  # one warp a block / eight
def test_headnorm_gate_emulated(rows):
    NH, DH, off = 2, 256, 100
    h = (mx.random.normal((rows, NH, DH), key=mx.random.key(rows)) * 2.0 + 0.5).astype(mx.bfloat16)
    qkvo = (mx.random.normal((rows, off + NH * DH), key=mx.random.key(rows + 1)) * 3.0).astype(mx.bfloat16)
    w = (mx.random.normal((NH * DH,), key=mx.random.key(rows + 2)) * 0.3 + 1.0).astype(mx.bfloat16)
    ref = headnorm.headnorm_gate_ref(h, qkvo, off, w, None, 1e-6)
    old = headnorm.FEW_ROWS
    headnorm.FEW_ROWS = 8  # 40 rows take the eight-warp blocks
    try:
        with cuda_emulator.emulated(headnorm):
            out = headnorm.headnorm_gate_cuda(h, qkvo, off, w, None, 1e-6)
    finally:
        headnorm.FEW_ROWS = old
    assert rel_error(out, ref) <= 1e-2


def test_headnorm_needs_vector_aligned_gate_columns():
    """The head norm reads o, the weight and the bias as 16-byte vectors: an o offset or a row length that is not
    a multiple of a vector's elements leaves the kernel (applies / fuses_norm False: the MLX ops run instead)."""
    q = mx.zeros((2, 6144 + 4096), dtype=mx.bfloat16)
    assert headnorm.aligned_rows(q, 6144, 8)
    assert not headnorm.aligned_rows(q, 6148, 8)                                   # offset off a vector
    assert not headnorm.aligned_rows(mx.zeros((2, 6144 + 4100), dtype=mx.bfloat16), 6144, 8)   # row length
    assert headnorm.aligned_rows(mx.zeros((2, 10244), dtype=mx.float32), 6144, 4)
