"""The fast CPU transcendentals (kernels/fastmath.py) against float64 and against MLX's own ops.

Bounds: measured worst cases (docs/numerics.md "Fast transcendentals on the CPU") with a margin of ~1 ulp, judged
in float32 ulps of the float64 value, over normal (not subnormal) results. The forms are tested as written
(`*_fast`) whatever the device, and the registry's choice (fast on the CPU, MLX's op on a GPU) separately.
"""

import numpy as np
import pytest

import mlx.core as mx

from xlstm_mlx import kernels
from xlstm_mlx.kernels import fastmath as fm

TINY = np.finfo(np.float32).tiny


def _exact(name, x):
    x = x.astype(np.float64)
    return {"exp": np.exp, "sigmoid": lambda v: 1 / (1 + np.exp(-v)), "silu": lambda v: v / (1 + np.exp(-v)),
            "tanh": np.tanh}[name](x)


def _ulps(got, want):
    want32 = want.astype(np.float32)
    ok = np.abs(want) >= TINY
    return np.abs(got.astype(np.float64) - want)[ok] / np.spacing(np.abs(want32[ok])).astype(np.float64)


def _inputs(name, rng):
    """Fresh random values over the range that matters, plus a dense grid of the whole normal range."""
    lo, hi = {"exp": (-103.0, 88.7), "sigmoid": (-87.0, 60.0), "silu": (-87.0, 60.0), "tanh": (-12.0, 12.0)}[name]
    return np.concatenate([rng.normal(0, 4, 200_000), rng.uniform(lo, hi, 200_000), np.linspace(lo, hi, 400_001),
                           np.geomspace(1e-30, 1, 20_000), -np.geomspace(1e-30, 1, 20_000)]).astype(np.float32)


BOUND_ULPS = {"exp": 2.5, "sigmoid": 3.5, "silu": 4.0, "tanh": 7.5}
FAST = {"exp": fm.exp_fast, "sigmoid": fm.sigmoid_fast, "silu": fm.silu_fast, "tanh": fm.tanh_fast}
REF = {"exp": fm.exp_ref, "sigmoid": fm.sigmoid_ref, "silu": fm.silu_ref, "tanh": fm.tanh_ref}


@pytest.mark.parametrize("name", sorted(FAST))
def test_fast_form_against_float64(name):
    x = _inputs(name, np.random.default_rng())
    got = np.array(FAST[name](mx.array(x)))
    want = _exact(name, x)
    assert not np.isnan(got).any()
    u = _ulps(got, want)
    assert u.max() <= BOUND_ULPS[name], f"{name}: {u.max():.2f} ulp"


@pytest.mark.parametrize("name", sorted(FAST))
def test_fast_form_against_mlx_op(name):
    """On N(0, 3) inputs (the activations' range) the fast form and MLX's op agree to a few ulp."""
    x = mx.array(np.random.default_rng().normal(0, 3, 100_000).astype(np.float32))
    a, b = np.array(FAST[name](x)), np.array(REF[name](x))
    rel = np.abs(a - b) / np.maximum(np.abs(b), TINY)
    assert rel.max() < 1e-6


@pytest.mark.parametrize("name", sorted(FAST))
def test_special_values(name):
    """Zeros (signed), infinities, NaN, subnormal inputs and large values: NaN where MLX's op gives NaN, else
    float64's value (MLX's own exp is 1.2e-6 off at 30, so float64 judges, not the op)."""
    xs = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-40, -1e-40, 30.0, -30.0], np.float32)
    got, ref = np.array(FAST[name](mx.array(xs))), np.array(REF[name](mx.array(xs)))
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    ok = ~np.isnan(ref)
    with np.errstate(invalid="ignore", over="ignore"):
        want = _exact(name, xs)
    np.testing.assert_allclose(got[ok], want[ok].astype(np.float32), rtol=3e-7, atol=1e-38)
    np.testing.assert_array_equal(np.signbit(got[:2]), np.signbit(ref[:2]))  # signed zeros


def test_exp_identity_step_values():
    """The masked-gate identity step needs exp(-inf) = 0 and exp(0) = 1 exactly."""
    got = np.array(fm.exp_fast(mx.array(np.array([-np.inf, 0.0], np.float32))))
    assert got[0] == 0.0 and got[1] == 1.0


def test_exp_range_ends():
    """exp keeps the float32 range of normal results: finite up to log(FLT_MAX), inf beyond; results below the
    smallest normal float32 are 0, from the float just below the least x with a normal exp (fastmath._EXP_LO) to -inf:
    a subnormal value is never made (x86 computes each with a slow microcode assist)."""
    lo = np.float32(fm._EXP_LO)
    below = np.nextafter(lo, np.float32(-np.inf))
    assert np.exp(np.float64(lo)) >= TINY > np.exp(np.float64(below)) and np.float32(fm._EXP_BELOW_LO) == below
    x = np.array([88.72, 88.7228, 88.73, -87.0, lo, np.nextafter(lo, np.float32(-np.inf)), -100.0, -103.9, -104.5,
                  -np.inf], np.float32)
    got = np.array(fm.exp_fast(mx.array(x)))
    with np.errstate(over="ignore"):
        want = np.exp(x.astype(np.float64))
        want = np.where(want < TINY, 0.0, want).astype(np.float32)
    np.testing.assert_allclose(got, want, rtol=3e-7, atol=0)
    assert got[4] >= TINY and (got[5:] == 0).all()


def test_exp_no_subnormal_results():
    """Fresh random inputs around where exp's results leave the normal range: every result is 0 or normal, within
    3e-7 relative of float64 where that is normal, and 0 where it is not."""
    x = np.random.default_rng().uniform(-120.0, -80.0, 200_000).astype(np.float32)
    got = np.array(fm.exp_fast(mx.array(x))).astype(np.float64)
    want = np.exp(x.astype(np.float64))
    assert ((got == 0) | (got >= TINY)).all()
    big = want >= TINY
    assert (np.abs(got - want)[big] <= 3e-7 * want[big]).all()
    assert (got[~big] == 0).all()


@pytest.mark.parametrize("shape", [(1, 1, 50304), (3, 7, 129), (5,)])
def test_soft_cap_shapes(shape):
    x = mx.random.normal(shape) * 40
    np.testing.assert_allclose(np.array(fm.soft_cap_fast(x, 30.0)), np.array(fm.soft_cap_ref(x, 30.0)),
                               rtol=1e-6, atol=2e-5)


def test_registry_picks_by_device_and_reference_switch():
    x = mx.random.normal((1000,))
    ref = np.array(fm.silu_ref(x))
    with kernels.use_reference():
        assert kernels.get("math.silu") is fm.silu_ref
        assert kernels.describe(["math.silu"])["math.silu"] == "reference (forced)"
    fast = np.array(kernels.get("math.silu")(x))
    if fm.on_cpu():
        assert kernels.describe(["math.silu"])["math.silu"].endswith("(CPU)")
        np.testing.assert_allclose(fast, ref, rtol=1e-6, atol=1e-30)
    else:  # a GPU keeps MLX's numerics bit for bit
        np.testing.assert_array_equal(fast, ref)


@pytest.mark.parametrize("dtype", [mx.bfloat16, mx.float16])
def test_other_dtypes_are_computed_in_float32(dtype):
    """The forms are float32 arithmetic: a bfloat16/float16 input is computed in float32 and rounded once to its
    dtype, so the result is within that dtype's unit roundoff of float64 (MLX's silu in bfloat16 rounds twice and
    can be off by more; float64 judges)."""
    x = (mx.random.normal((4096,)) * 6).astype(dtype)
    u = {mx.bfloat16: 2.0**-8, mx.float16: 2.0**-11}[dtype] * 1.05
    xf = np.array(x.astype(mx.float32)).astype(np.float64)
    cases = (("math.silu", lambda: kernels.get("math.silu")(x), xf / (1 + np.exp(-xf))),
             ("math.sigmoid", lambda: kernels.get("math.sigmoid")(x), 1 / (1 + np.exp(-xf))),
             ("math.soft_cap", lambda: kernels.get("math.soft_cap")(x, 3.0), 3.0 * np.tanh(xf / 3.0)))
    for name, fn, want in cases:
        got = fn()
        assert got.dtype == dtype, name
        g = np.array(got.astype(mx.float32)).astype(np.float64)
        assert (np.abs(g - want) <= u * np.abs(want) + 1e-7).all(), name


@pytest.mark.parametrize("name", sorted(FAST))
def test_gradients_follow_the_reference(name):
    """Training differentiates through the forms (mx.view's constant 2^n is cut from the graph): the gradient is the
    approximant's own slope, within 1e-6 absolute or 5e-4 relative (where the slope is >= 1e-3) of MLX's op's,
    and 2e-6 relative for exp."""
    x = mx.array(np.random.default_rng().normal(0, 4, 100_000).astype(np.float32))
    if name == "exp":
        x = mx.clip(x, -80, 80)
    ga = np.array(mx.grad(lambda v: FAST[name](v).sum())(x))
    gb = np.array(mx.grad(lambda v: REF[name](v).sum())(x))
    assert np.isfinite(ga).all()
    if name == "exp":
        assert (np.abs(ga - gb) <= 2e-6 * np.abs(gb)).all()
    else:
        assert (np.abs(ga - gb) <= np.maximum(1e-6, 5e-4 * np.abs(gb))).all()


@pytest.mark.parametrize("dtype", [mx.float32, mx.bfloat16])
@pytest.mark.parametrize("shape", [(2048, 16), (3, 7, 16), (1,)])
def test_soft_cap_one_kernel_is_the_reference_exactly(dtype, shape):
    """The GPU form of math.soft_cap: the reference's three ops compiled into one kernel: bit-equal to them on
    the default device (run with XLSTM_MLX_TEST_DEVICE=gpu on CUDA), special values included."""
    x = (mx.random.normal(shape, key=mx.random.key(len(shape))) * 40.0).astype(dtype)
    x = mx.concatenate([x.reshape(-1), mx.array([mx.inf, -mx.inf, mx.nan, 0.0, 1e-30], dtype)])
    got, ref = fm._soft_cap_one_kernel(x, 15.0), fm.soft_cap_ref(x, 15.0)
    assert got.dtype == ref.dtype == dtype
    assert mx.array_equal(got, ref, equal_nan=True)


@pytest.mark.parametrize("cap", [1.0, 15.0, 30.0, 50.0, 2000.0, 0.001])
def test_soft_cap_form_against_float64(cap):
    """soft_cap_fast (one kernel for caps in fastmath._CAP_RANGE, cap * tanh_fast(x / cap) outside: 2000 and 0.001
    take that path) against float64 cap * tanh(x / cap) on fresh random values and a dense grid: within the tanh
    bound (docs/numerics.md: worst 6.5 ulp over 12M points), never beyond +-cap."""
    rng = np.random.default_rng()
    x = np.concatenate([rng.normal(0, 4 * cap, 200_000), rng.uniform(-12 * cap, 12 * cap, 200_000),
                        np.linspace(-12 * cap, 12 * cap, 400_001), np.geomspace(1e-30, 1, 20_000) * cap,
                        -np.geomspace(1e-30, 1, 20_000) * cap]).astype(np.float32)
    got = np.array(fm.soft_cap_fast(mx.array(x), cap))
    want = cap * np.tanh(x.astype(np.float64) / cap)
    assert not np.isnan(got).any()
    u = _ulps(got, want)
    assert u.max() <= BOUND_ULPS["tanh"], f"cap {cap}: {u.max():.2f} ulp"
    assert np.abs(got).max() <= np.float32(cap)


@pytest.mark.parametrize("cap", [1.0, 30.0, 2000.0])
def test_soft_cap_edge_values(cap):
    """NaN in -> NaN out; +-inf and values past the clamp (9 cap, 3e38, where x^2 overflows) -> +-cap exactly
    or within 2.4e-7 relative (2 ulp: the form's value at the clamp is tanh(9) ~ 1 - 3e-8, one ulp below 1, and the
    fallback path's product with cap rounds once more); signed zeros pass through (x P(0) / Q(0) = x), subnormal
    inputs within the smallest normal float32."""
    c = np.float32(cap)
    xs = np.array([np.nan, -np.nan, np.inf, -np.inf, 3e38, -3e38, 1e20, -1e20, 9 * cap, -9 * cap, 9.5 * cap,
                   0.0, -0.0, 1e-40, -1e-40, 1e-30, 1.0], np.float32)
    got = np.array(fm.soft_cap_fast(mx.array(xs), cap))
    assert np.isnan(got[:2]).all() and not np.isnan(got[2:]).any()
    np.testing.assert_allclose(got[2:11], np.array([1, -1] * 4 + [1]) * c, rtol=2.4e-7, atol=0)
    assert (np.abs(got[2:8]) == c).all()  # far past the clamp: +-cap exactly
    np.testing.assert_array_equal(got[11:13], xs[11:13])
    np.testing.assert_array_equal(np.signbit(got[11:15]), np.signbit(xs[11:15]))
    assert (np.abs(got[13:15] - xs[13:15]) < TINY).all()  # subnormal: exact in one kernel, x / cap rounds otherwise
    want = cap * np.tanh(xs[15:].astype(np.float64) / cap)
    np.testing.assert_allclose(got[15:], want.astype(np.float32), rtol=3e-7)


@pytest.mark.parametrize("cap", [1.0, 30.0])
def test_soft_cap_form_is_one_kernel(cap):
    """The speed of the form rests on MLX's compiler fusing it into one element-wise kernel (fastmath._capped_tanh:
    it is laid out within mx.compile's fusion depth); a graph split would write and re-read intermediates (the
    previous Horner form ran as five kernels, ~4.7 ns a value against ~1). The 1-element reduction of the clamp
    bound is the one other node."""
    import io

    x = mx.random.normal((3, 257))
    buf = io.StringIO()
    mx.export_to_dot(buf, fm.soft_cap_fast(x, cap))
    text = buf.getvalue()
    assert text.count('label ="Compiled') + text.count('label="Compiled') == 1, text
