"""The prefill's fused gate projection + soft cap (kernels/gate_preact.py) against float64 and its MLX-ops reference.

On a CUDA machine (XLSTM_MLX_TEST_DEVICE=gpu) the real kernel runs, at small shapes and the 7B shape; on the CPU
its own source runs through the SIMT emulator (tests/kernels/cuda_emulator.py) at small shapes: rows that do not
fill a block, columns that do not fill a tile, 1 to 16 heads, with and without bias and cap.

Tolerance: the kernel sums each dot product of length D in float32 in another order than MLX's matmul. Against
float64, both are judged relative to the scale of the terms, sum_k |x_k w_jk| (+ |b_j|), which bounds the error of
any float32 summation order by D * 2^-24 times it (5e-4 at D = 4096 worst case, ~sqrt(D) 2^-24 = 4e-6 typical):
the kernel must be within 2e-6 of that scale at every output, and no worse than 1.5x MLX's own float32 result
plus 1e-7 of the scale (so it is as exact as the matmul it replaces). The cap's tanh is Lipschitz 1, so the
bound carries through it.
"""

import mlx.core as mx
import numpy as np
import pytest

from xlstm_mlx.kernels import gate_preact as gp
from xlstm_mlx.kernels.cuda_common import cuda_available

import cuda_emulator
from cuda_checks import needs_cuda

emulated_only = pytest.mark.skipif(cuda_available() or not cuda_emulator.available(),
                                   reason="needs g++ and no CUDA (where CUDA runs, the real kernel is tested)")


def _make(seed, lead, D, NH, bias):
    k = mx.random.split(mx.random.key(seed), 3)
    x = mx.random.normal((*lead, D), key=k[0]) * 1.5
    w = mx.random.normal((2 * NH, D), key=k[1]) * (1.0 / D ** 0.5) * 3.0  # pre-activations of a few units
    b = mx.random.normal((2 * NH,), key=k[2]) if bias else None
    return x, w, b


def _float64(x, w, b, NH, cap):
    g = np.asarray(x, np.float64) @ np.asarray(w, np.float64).T
    scale = np.abs(np.asarray(x, np.float64)) @ np.abs(np.asarray(w, np.float64)).T
    if b is not None:
        g = g + np.asarray(b, np.float64)
        scale = scale + np.abs(np.asarray(b, np.float64))
    if cap is not None:
        g = cap * np.tanh(g / cap)
    return g[..., :NH], g[..., NH:], scale[..., :NH], scale[..., NH:]


def check(fn, seed, lead, D, NH, bias, cap):
    x, w, b = _make(seed, lead, D, NH, bias)
    i, f = fn(x, w, b, NH, cap)
    ri, rf = gp.gate_preact_ref(x, w, b, NH, cap)
    ei, ef, si, sf = _float64(x, w, b, NH, cap)
    for got, ref, exact, scale in ((i, ri, ei, si), (f, rf, ef, sf)):
        assert got.dtype == mx.float32 and got.shape == (*lead, NH)
        g = np.asarray(got, np.float64)
        assert np.isfinite(g).all()
        ours = np.abs(g - exact) / scale
        mlx = np.abs(np.asarray(ref, np.float64) - exact) / scale
        assert ours.max() <= 2e-6, ours.max()
        assert ours.max() <= 1.5 * mlx.max() + 1e-7, (ours.max(), mlx.max())


SMALL = [  # (lead dims, D, heads, bias, cap)
    ((3,), 40, 1, False, None),               # one partial row block, one partial tile
    ((2, 9), 300, 4, True, 15.0),             # 18 rows: a full block and a partial one; three tiles, the last partial
    ((1, 17), 256, 8, False, 15.0),           # the 7B head count, two whole tiles
    ((5,), 132, 16, True, 3.0),               # 32 outputs (the most), a small cap
]


CONFIGS = [(32, 2), (16, 1)]  # (PARTS, RPT): the default (a warp a row pair), and one thread a row


@pytest.fixture(params=CONFIGS, ids=lambda c: f"parts{c[0]}_rpt{c[1]}")
def config(request, monkeypatch):
    monkeypatch.setattr(gp, "PARTS", request.param[0])
    monkeypatch.setattr(gp, "RPT", request.param[1])
    return request.param


@emulated_only
@pytest.mark.parametrize("lead,D,NH,bias,cap", SMALL)
def test_gate_preact_emulated(lead, D, NH, bias, cap, config):
    with cuda_emulator.emulated(gp):
        check(gp.gate_preact_cuda, 1, lead, D, NH, bias, cap)


@needs_cuda
@pytest.mark.parametrize("lead,D,NH,bias,cap", SMALL + [((1, 2048), 4096, 8, True, 15.0),  # the 7B prefill
                                                        ((2, 1000), 4096, 8, False, 15.0),
                                                        ((1, 1), 4096, 8, True, 15.0)])
def test_gate_preact_cuda(lead, D, NH, bias, cap, config):
    assert gp.applies(*_make(0, lead, D, NH, bias), NH)
    check(gp.gate_preact_cuda, 2, lead, D, NH, bias, cap)


def test_gate_preact_applies_only_where_the_kernel_can_run():
    x, w, b = _make(0, (2, 3), 64, 4, True)
    assert not gp.applies(x.astype(mx.bfloat16), w, b, 4)             # float32 throughout
    assert not gp.applies(x, w, b, 4, mx.float64)                      # the state dtype too
    assert not gp.applies(x[..., :62], w[:, :62], b, 4)                 # 16-byte rows
    assert not gp.applies(*_make(0, (2,), 64, 17, False), 17)           # 34 outputs > MAX_OUT
    with pytest.raises(ValueError, match="weight"):
        gp.gate_preact(x, w[:4], b, 4, 15.0)                            # a weight of the wrong shape names it


def test_gate_preact_elsewhere_is_the_reference_ops():
    """Off CUDA the fast form is the same MLX ops with the registry's soft cap (on the CPU its polynomial form,
    within 7 float32 ulps of tanh: docs/numerics.md): the reference's values to that."""
    if cuda_available():
        pytest.skip("on CUDA the kernel runs (test_gate_preact_cuda)")
    x, w, b = _make(3, (2, 5), 48, 8, True)
    for a, r in zip(gp.gate_preact(x, w, b, 8, 15.0), gp.gate_preact_ref(x, w, b, 8, 15.0)):
        assert float(mx.max(mx.abs(a - r) / (mx.abs(r) + 1e-30)).item()) <= 8 * 2.0 ** -23
