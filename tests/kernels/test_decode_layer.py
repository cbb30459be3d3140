"""The persistent decode-layer kernel (kernels/decode_layer.py: a quantized block's decode step in one launch).

Against the chain of separate CUDA kernels it replaces (the quantized GEMV in the same configuration, the decode
step with its head norm, add + RMSNorm, SwiGLU) BIT FOR BIT: each phase runs that kernel's own source. Against the
MLX-ops reference chain and against float64 within bf16 statistics. On the CPU the sources run through the SIMT
emulator with one resident block (its blocks run in turn: a grid barrier of more would wait forever); with
XLSTM_MLX_TEST_DEVICE=gpu the real kernel runs at several grid sizes (the barrier across resident blocks), at the
7B shape too, twice through the same counters (each launch must leave them at zero).
"""

import importlib

import mlx.core as mx
import numpy as np
import pytest

from xlstm_mlx.errors import UsageError
from xlstm_mlx.kernels import decode_layer as dl
from xlstm_mlx.kernels import quant_gemv
from xlstm_mlx.kernels.cuda_common import SMS, cuda_available

import cuda_emulator
from cuda_checks import needs_cuda, rel_error

mlstm_decode = importlib.import_module("xlstm_mlx.kernels.mlstm_decode")
add_rms = importlib.import_module("xlstm_mlx.kernels.add_rms_norm")
swiglu = importlib.import_module("xlstm_mlx.kernels.swiglu")
MODULES = (dl, quant_gemv, mlstm_decode, add_rms, swiglu)

emulated_only = pytest.mark.skipif(cuda_available() or not cuda_emulator.available(),
                                   reason="needs g++ and no CUDA (where CUDA runs, the real kernels are tested)")


class _Owner:
    pass


def _quant(key, n, k, bits, bias, scale=0.05):
    k1, k2 = mx.random.split(key)
    w, s, b = mx.quantize(mx.random.normal((n, k), key=k1) * scale, group_size=64, bits=bits)
    pb = (mx.random.normal((n,), key=k2) * 0.05).astype(mx.bfloat16) if bias else None
    return dl.QuantMatrix(w, s.astype(mx.bfloat16), b.astype(mx.bfloat16), pb, 64, bits, "affine")


def _norm(key, dim, bias, dtype=mx.float32):
    k1, k2 = mx.random.split(key)
    w = (1.0 + 0.3 * mx.random.normal((dim,), key=k1)).astype(dtype)
    b = (0.1 * mx.random.normal((dim,), key=k2)).astype(dtype) if bias else None
    return dl.Norm(w, b, 1e-6)


def _case(B, D, NH, qk, vd, ffn, bits, bias, cap, seed):
    keys = mx.random.split(mx.random.key(seed), 14)
    owner = _Owner()
    dqk, dv = qk // NH, vd // NH
    layer = dl.LayerOperands(
        qkvo=_quant(keys[0], 2 * qk + 2 * vd, D, bits, bias),
        gate_w=mx.random.normal((2 * NH, D), key=keys[1]) * 0.05,
        gate_b=mx.random.normal((2 * NH,), key=keys[2]) if bias else None,
        head_norm=_norm(keys[3], vd, bias, mx.bfloat16),
        out_proj=_quant(keys[4], D, vd, bits, bias),
        norm_ffn=_norm(keys[5], D, bias),
        up=_quant(keys[6], 2 * ffn, D, bits, bias),
        down=_quant(keys[7], D, ffn, bits, bias),
        next_norm=_norm(keys[8], D, bias),
        num_heads=NH, qk_dim=qk, v_dim=vd, gate_soft_cap=cap, eps=1e-6,
        norm_counter=mlstm_decode.norm_counter(owner, B * NH), barrier=dl.barrier_counter(owner))
    x = mx.random.normal((B, D), key=keys[9]) * 2.0
    y = mx.random.normal((B, D), key=keys[10])
    state = (mx.random.normal((B, NH, dqk, dv), key=keys[11]) * 0.3, mx.random.normal((B, NH, dqk), key=keys[12]),
             mx.random.normal((B, NH, 1), key=keys[13]))
    return x, y, y.astype(mx.bfloat16), state, layer


def _separate_cuda(x, y, y_c, state, L):
    """The chain of separate CUDA kernels, each GEMV in the persistent kernel's configuration."""
    def matmul(a, w, s, b, bias, gs, bits, mode):
        cfg = dl.persistent_config(a.shape[0], w.shape[0], a.shape[1], bits, gs, a.dtype)
        return quant_gemv.quantized_gemv_cuda(a, w, s, b, bias, gs, bits, mode, **cfg)
    return dl._chain(x, y, y_c, state, L, matmul, mlstm_decode.mlstm_decode_step_cuda, add_rms.add_rms_norm_cuda,
                     swiglu.swiglu_cuda)


def _bits_equal(a, b, what):
    assert a.dtype == b.dtype and a.shape == b.shape, what
    fa = np.array(a.astype(mx.float32))
    assert np.isfinite(fa).all(), f"NaN or inf in {what}"
    assert np.array_equal(fa, np.array(b.astype(mx.float32))), what


def _outputs(res):
    r, y, yc, (C, n, m) = res
    return {"r": r, "y": y, "y_c": yc, "C": C, "n": n, "m": m}


SMALL = [  # B, D, NH, qk, vd, ffn, bits, bias, cap
    (1, 256, 2, 256, 512, 384, 4, False, 15.0),
    (3, 192, 1, 128, 256, 320, 8, True, None),
]


@emulated_only
@pytest.mark.parametrize("B,D,NH,qk,vd,ffn,bits,bias,cap", SMALL)
def test_the_launch_is_the_separate_kernels_bit_for_bit_emulated(B, D, NH, qk, vd, ffn, bits, bias, cap):
    x, y, yc, state, L = _case(B, D, NH, qk, vd, ffn, bits, bias, cap, seed=B * 11 + bits)
    with cuda_emulator.emulated(*MODULES):
        assert dl.applies(x, y, yc, state, L)
        one = dl.decode_layer_cuda(x, y, yc, state, L, grid=1)
        sep = _separate_cuda(x, y, yc, state, L)
    for (name, a), b in zip(_outputs(one).items(), _outputs(sep).values()):
        _bits_equal(a, b, name)
    _close_to_exact_products(_outputs(one), x, y, yc, state, L)


def _matmul_f32(a, w, s, b, bias, gs, bits, mode):
    """The quantized product with the weights dequantized exactly in float32 (bf16 scales and biases, codes < 256:
    q * s + b is exact in float32 up to one rounding) and float32 sums, rounded once to a's dtype, as the kernel
    rounds. MLX's own quantized matmul of bf16 operands rounds each dequantized weight to bf16 (1-2 % apart from
    this at these shapes): not the oracle for a kernel that never rounds a weight."""
    wd = mx.dequantize(w, s.astype(mx.float32), b.astype(mx.float32), group_size=gs, bits=bits, mode=mode)
    out = a.astype(mx.float32) @ wd.T
    return (out if bias is None else out + bias.astype(mx.float32)).astype(a.dtype)


def _close_to_exact_products(out, x, y, yc, state, L):
    """Against the MLX-ops chain with float32-exact products: the products' outputs round to bf16 in both, so they
    differ by a bf16 rounding (2^-9 relative) where a float32 sum lands on the other side of a rounding boundary;
    through the state update and two residual adds that stays ~1e-3 relative. 1e-2: well above, far below a
    wrong row, column or gate (O(1))."""
    ref = _outputs(dl._chain(x, y, yc, state, L, _matmul_f32, mlstm_decode.mlstm_decode_step_ref,
                             add_rms.add_rms_norm_ref, swiglu.swiglu_ref))
    for name, a in out.items():
        assert rel_error(a, ref[name]) < 1e-2, name


def test_conditions():
    x, y, yc, state, L = _case(1, 256, 2, 256, 512, 384, 4, False, 15.0, seed=1)
    assert not dl.applies(x, y, yc, state, L) or cuda_available()
    with cuda_emulator.emulated(*MODULES):
        assert dl.applies(x, y, yc, state, L)
        assert not dl.applies(x, y, yc.astype(mx.float32), state, L)         # y_c not the scales' dtype
        assert not dl.applies(x.astype(mx.bfloat16), y, yc, state, L)        # a bf16 residual
        assert not dl.applies(x, y, yc, state, L._replace(barrier=None))     # no counters
        bad = L._replace(down=L.down._replace(biases=None))                  # not affine with biases
        assert not dl.applies(x, y, yc, state, bad)
        big = mx.zeros((17, 256)), mx.zeros((17, 256))
        assert not dl.applies(big[0], big[1], big[1].astype(mx.bfloat16), state, L)   # over MAX_ROWS rows


def test_the_switch_and_the_grid_setting(monkeypatch):
    x, y, yc, state, L = _case(1, 256, 2, 256, 512, 384, 4, False, 15.0, seed=2)
    monkeypatch.setenv(dl.SWITCH, "0")
    with cuda_emulator.emulated(*MODULES):
        assert not dl.applies(x, y, yc, state, L)
    monkeypatch.setenv(dl.GRID_ENV, "0")
    with pytest.raises(UsageError, match=dl.GRID_ENV):
        dl.grid_blocks()
    monkeypatch.setenv(dl.GRID_ENV, "7")
    assert dl.grid_blocks() == 7
    monkeypatch.delenv(dl.GRID_ENV)
    assert dl.grid_blocks() == SMS


def test_the_fallback_is_the_separate_fast_forms():
    """Without CUDA: decode_layer is the chain of the fast forms (MLX ops here), close to the reference."""
    if cuda_available():
        pytest.skip("on CUDA the kernel runs (tested above)")
    x, y, yc, state, L = _case(2, 256, 2, 256, 512, 384, 4, True, 15.0, seed=3)
    fast = _outputs(dl.decode_layer(x, y, yc, state, L))
    ref = _outputs(dl.decode_layer_ref(x, y, yc, state, L))
    # the same chain, with the registry's CPU forms of the norms and the SiLU (float32-close to MLX's) feeding bf16
    # intermediates: where they land across a bf16 rounding boundary the products differ by 2^-9 relative
    for name in fast:
        assert rel_error(fast[name], ref[name]) < 1e-2, name


@needs_cuda
@pytest.mark.parametrize("B,D,NH,qk,vd,ffn,bits,bias,cap", SMALL + [
    (1, 4096, 8, 2048, 4096, 10944, 4, False, 15.0),   # the 7B shape
    (4, 4096, 8, 2048, 4096, 10944, 8, False, 15.0),
    (16, 4096, 8, 2048, 4096, 10944, 4, False, 15.0),
])
@pytest.mark.parametrize("grid", [1, 5, SMS])
def test_the_launch_is_the_separate_kernels_bit_for_bit_on_the_gpu(B, D, NH, qk, vd, ffn, bits, bias, cap, grid):
    x, y, yc, state, L = _case(B, D, NH, qk, vd, ffn, bits, bias, cap, seed=B * 11 + bits)
    assert dl.applies(x, y, yc, state, L)
    sep = _outputs(_separate_cuda(x, y, yc, state, L))
    for _ in range(2):  # the second launch sees the counters the first left
        one = _outputs(dl.decode_layer_cuda(x, y, yc, state, L, grid=grid))
        mx.eval(one)
        for name, a in one.items():
            _bits_equal(a, sep[name], name)
