"""The logits' finiteness test (kernels/logits_check.py) against its reference on fresh random inputs.

The answers are booleans: the fast form must equal mx.all(mx.isfinite(.)) exactly, on every input, including
NaN / +inf / -inf at random places, huge finite values (a sum would overflow; max and min do not), signed zeros
and subnormals, several dtypes, non-contiguous views, and vocabularies that are not a multiple of 8 (the
reference runs there)."""

import numpy as np
import pytest

import mlx.core as mx

from xlstm_mlx import kernels
from xlstm_mlx.errors import UsageError
from xlstm_mlx.kernels import logits_check as lc

SPECIALS = (np.nan, np.inf, -np.inf)


def _cases(rng, B, V):
    """(name, array [B, V]) with fresh random values; some rows spoiled by a special value at a random place."""
    base = (rng.standard_normal((B, V)) * rng.choice([1.0, 30.0, 1e30])).astype(np.float32)
    yield "finite", base
    big = base.copy()
    big[:, rng.integers(0, V, size=max(1, V // 7))] = np.float32(3.0e38) * rng.choice([-1, 1])
    yield "huge finite", big  # their sum overflows; every value is finite
    tiny = base.copy()
    tiny[:, :: max(1, V // 5)] = np.float32(1e-42)  # subnormal
    tiny[:, -1] = -0.0
    yield "subnormal and -0", tiny
    for special in SPECIALS:
        one = base.copy()
        one[rng.integers(0, B), rng.integers(0, V)] = special
        yield f"one {special}", one
    mixed = base.copy()
    for _ in range(int(rng.integers(1, 4))):
        mixed[rng.integers(0, B), rng.integers(0, V)] = rng.choice(SPECIALS)
    yield "mixed", mixed
    both = base.copy()
    r = rng.integers(0, B)
    both[r, rng.integers(0, V)] = np.inf
    both[r, rng.integers(0, V)] = -np.inf
    yield "+inf and -inf", both
    edges = base.copy()
    edges[rng.integers(0, B), V - 1] = rng.choice(SPECIALS)  # the last column of the last block
    edges[rng.integers(0, B), 0] = rng.choice(SPECIALS)
    yield "edges", edges


def _check(x: mx.array, label: str):
    for axis in (None, -1):
        want = lc.all_finite_ref(x, axis)
        got = lc.all_finite(x, axis)
        assert got.dtype == want.dtype == mx.bool_, label
        assert got.shape == want.shape, label
        assert mx.array_equal(got, want).item(), (label, axis, got.tolist(), want.tolist())


@pytest.mark.parametrize("B,V", [(1, 50304), (8, 50304), (3, 1000), (5, 64), (2, 8), (4, 24), (1, 50257),
                                 (7, 13), (2, 1)])
def test_same_answer_as_the_reference(B, V):
    rng = np.random.default_rng()
    with mx.stream(mx.cpu):
        for name, a in _cases(rng, B, V):
            x = mx.array(a)
            _check(x, f"{name} {B}x{V}")
            _check(x.astype(mx.float16), f"{name} {B}x{V} float16")
            _check(x.astype(mx.bfloat16), f"{name} {B}x{V} bfloat16")
            _check(x[None], f"{name} 1x{B}x{V}")  # three axes


def test_views_and_column_blocks():
    """A non-contiguous view (the [B, T, V] logits' last position, a transposed array) and each block size."""
    rng = np.random.default_rng()
    with mx.stream(mx.cpu):
        for V in (64 * 5, 32 * 7, 16 * 9, 8 * 11):
            assert lc.block(V) > 0 and V % lc.block(V) == 0
            a = rng.standard_normal((3, 4, V)).astype(np.float32)
            a[1, 2, rng.integers(0, V)] = rng.choice(SPECIALS)
            x = mx.array(a)
            _check(x[:, -1], f"last position V={V}")
            _check(x[:, 2], f"position 2 V={V}")
            _check(mx.array(a[0].T.copy()).T, f"transposed V={V}")
    assert lc.block(50257) == 0 and lc.block(50304) == 64


def test_routing(monkeypatch):
    with mx.stream(mx.cpu):
        x = mx.zeros((2, 64))
    assert lc.applies(x) == lc.on_cpu()
    assert not lc.applies(mx.zeros((2, 63)))
    assert not lc.applies(mx.zeros((2, 64), dtype=mx.int32))
    monkeypatch.setattr(lc, "on_cpu", lambda: False)
    assert not lc.applies(x)
    assert "reference" in lc.label()
    with pytest.raises(UsageError):
        lc.all_finite(mx.zeros((2, 64)), axis=0)
    assert kernels.KERNELS["logits.all_finite"].reference is lc.all_finite_ref
    with kernels.use_reference():
        assert kernels.get("logits.all_finite") is lc.all_finite_ref
