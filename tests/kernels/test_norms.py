"""The norms' CPU forms (kernels/norms.py: sums by a BLAS matrix-vector product) against float64 and against
MLX's fused ops, on fresh random rows whose scales span e^-4..e^4 (and, for the LayerNorm, an offset mean).

Bounds: measured worst cases over 512 rows (docs/numerics.md "The norms' reductions") with a margin of ~1 ulp.
  - scale error: the per-row least-squares factor between the result and the float64 one, minus 1: the error
    a wrong mean puts on the whole vector. BLAS form <= 2.0e-7 at every length (float32 ulp 1.2e-7); MLX's
    running sum 2e-7 at 40 values, 8.5e-7 at 1,000, 1.6e-6 at 4,096.
  - element error, relative to the row's largest |value|: RMSNorm <= 2.3e-7; LayerNorm <= 2.4e-7 x (1 + |mean| / std)
    (the centring x - mean loses ~|mean| 2^-24 against a unit-scale output: in every float32 form).
The forms are tested as written (`*_blas`) whatever the device, and the registry's choice separately.
"""

import numpy as np
import pytest

import mlx.core as mx

from xlstm_mlx import kernels
from xlstm_mlx.kernels import norms

EPS = 1e-6


def _rows(D, rng, offset=0.0):
    x = rng.normal(0, 1, (512, D)) * rng.lognormal(0, 2, (512, 1)) + offset * rng.normal(0, 1, (512, 1))
    return x.astype(np.float32)


def _rms64(x, w):
    x = x.astype(np.float64)
    return x / np.sqrt((x ** 2).mean(-1, keepdims=True) + EPS) * w.astype(np.float64)


def _layer64(x):
    c = x.astype(np.float64)
    c = c - c.mean(-1, keepdims=True)
    return c / np.sqrt((c ** 2).mean(-1, keepdims=True) + EPS)


def _scale_err(y, want):
    return float(np.abs((y * want).sum(-1) / (want * want).sum(-1) - 1).max())


def _elem_err(y, want):
    return float((np.abs(y - want) / np.abs(want).max(-1, keepdims=True)).max())


@pytest.mark.parametrize("D", [40, 160, 1000, 4096])
def test_rms_norm_blas_against_float64(D):
    rng = np.random.default_rng()
    x, w = _rows(D, rng), (1 + 0.2 * rng.normal(size=D)).astype(np.float32)
    want = _rms64(x, w)
    got = np.array(norms.rms_norm_blas(mx.array(x), mx.array(w), EPS)).astype(np.float64)
    assert np.isfinite(got).all()
    assert _scale_err(got, want) <= 3e-7 and _elem_err(got, want) <= 3.5e-7
    if D >= 1000:  # where MLX's running sum is measurably worse: never worse than it
        ref = np.array(norms.rms_norm_ref(mx.array(x), mx.array(w), EPS)).astype(np.float64)
        assert _scale_err(got, want) < _scale_err(ref, want)


@pytest.mark.parametrize("D", [40, 160, 512, 4096])
def test_layer_norm_blas_against_float64(D):
    x = _rows(D, np.random.default_rng(), offset=0.5)
    want = _layer64(x)
    got = np.array(norms.layer_norm_blas(mx.array(x), EPS)).astype(np.float64)
    assert np.isfinite(got).all()
    # the mean itself is a float32 value: |mean| * 2^-24 is lost in x - mean, i.e. relative to the output's
    # unit scale an error of ~ulp * |mean| / std per element, whatever the summation
    x64 = x.astype(np.float64)
    cond = 1 + np.abs(x64.mean(-1)) / x64.std(-1)
    row_err = (np.abs(got - want) / np.abs(want).max(-1, keepdims=True)).max(-1)
    assert _scale_err(got, want) <= 3e-7 and (row_err / cond).max() <= 4e-7
    if D >= 512:
        ref = np.array(norms.layer_norm_ref(mx.array(x), EPS)).astype(np.float64)
        assert _scale_err(got, want) < _scale_err(ref, want)


def test_blas_forms_agree_with_mlx_fused_ops_and_keep_shapes_and_dtypes():
    rng = np.random.default_rng()
    x = mx.array(rng.normal(0, 1, (2, 3, 4, 96)).astype(np.float32))
    w = mx.array((1 + 0.2 * rng.normal(size=96)).astype(np.float32))
    for got, ref in ((norms.rms_norm_blas(x, w, EPS), mx.fast.rms_norm(x, w, EPS)),
                     (norms.rms_norm_blas(x, None, EPS), mx.fast.rms_norm(x, None, EPS)),
                     (norms.layer_norm_blas(x, EPS), mx.fast.layer_norm(x, None, None, EPS))):
        assert got.shape == ref.shape and got.dtype == mx.float32
        assert float(mx.abs(got - ref).max()) < 2e-6
    xb, wb = x.astype(mx.bfloat16), w.astype(mx.bfloat16)
    got = norms.rms_norm_blas(xb, wb, EPS)
    want = _rms64(np.array(xb.astype(mx.float32)), np.array(wb.astype(mx.float32)))
    assert got.dtype == mx.bfloat16  # computed in float32, rounded once
    assert np.abs(np.array(got.astype(mx.float32)) - want).max() <= 2 ** -8 * np.abs(want).max()


def test_nan_stays_nan_within_its_row():
    x = np.random.default_rng().normal(size=(3, 64)).astype(np.float32)
    x[1, 5] = np.nan
    for y in (norms.rms_norm_blas(mx.array(x), None, EPS), norms.layer_norm_blas(mx.array(x), EPS)):
        y = np.array(y)
        assert np.isnan(y[1]).all() and np.isfinite(y[[0, 2]]).all()


def test_registry_runs_the_blas_form_on_the_cpu_the_fused_op_elsewhere_and_float64_plainly():
    x = mx.array(np.random.default_rng().normal(size=(4, 160)).astype(np.float32))
    w = mx.ones((160,))
    fast = kernels.get("norm.rms")(x, w, EPS)
    expect = norms.rms_norm_blas(x, w, EPS) if norms.on_cpu() else mx.fast.rms_norm(x, w, EPS)
    assert mx.array_equal(fast, expect)
    with kernels.use_reference():
        assert mx.array_equal(kernels.get("norm.rms")(x, w, EPS), mx.fast.rms_norm(x, w, EPS))
        assert mx.array_equal(kernels.get("norm.layer")(x, EPS), mx.fast.layer_norm(x, None, None, EPS))
    if norms.on_cpu():  # MLX computes float64 on the CPU only
        x64 = x.astype(mx.float64)
        for name, want in (("norm.rms", _rms64(np.array(x), np.ones(160))), ("norm.layer", _layer64(np.array(x)))):
            args = (x64, w.astype(mx.float64), EPS) if name == "norm.rms" else (x64, EPS)
            got = kernels.get(name)(*args)
            assert got.dtype == mx.float64 and np.abs(np.array(got) - want).max() < 1e-13
