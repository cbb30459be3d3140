"""Row tiles (kernels/row_tiles.py) against their reference (the function on the whole array) on fresh random inputs."""

import numpy as np
import pytest

import mlx.core as mx

from xlstm_mlx import kernels
from xlstm_mlx.kernels import row_tiles as rt
from xlstm_mlx.kernels.headnorm import headnorm_gate
from xlstm_mlx.kernels.swiglu import swiglu_ref


@pytest.mark.parametrize("n,rows", [(1, 64), (64, 64), (65, 64), (100, 32), (512, 64), (513, 64), (1000, 48)])
def test_tiles_cover_the_rows(n, rows):
    t = rt.tiles(n, rows)
    assert t[0][0] == 0 and t[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(t, t[1:]))
    if n > rows:
        assert all(rows / 2 <= e - s <= rows for s, e in t)  # never a few-row tile (the skinny kernel's domain)


@pytest.mark.parametrize("shape,rows", [((1, 512, 2 * 96), 64), ((3, 77, 2 * 40), 32), ((130, 2 * 16), 16),
                                        ((2, 5, 2 * 8), 64)])
def test_elementwise_same_bits(shape, rows):
    """An element-wise function (the SwiGLU, whatever form the registry runs here) gives the same bits tiled."""
    with mx.stream(mx.cpu):
        gz = mx.random.normal(shape) * 4
        fn = kernels.get("ffn.swiglu")
        want = rt.row_tiles_ref(fn, gz, rows=rows)
        got = rt.row_tiles(fn, gz.reshape(-1, gz.shape[-1]), rows=rows).reshape(want.shape)
        assert got.shape == want.shape
        assert mx.array_equal(got, want).item()


def test_two_inputs_and_a_product():
    """Two inputs tiled together, and a product inside the function: each row against float64."""
    rng = np.random.default_rng()
    with mx.stream(mx.cpu):
        g, z = (mx.array(rng.standard_normal((2, 300, 64)).astype(np.float32)) for _ in range(2))
        w = mx.array(rng.standard_normal((48, 64)).astype(np.float32))
        silu = kernels.get("math.silu")

        def fn(a, b):
            return (silu(a) * b) @ w.T

        got = np.array(rt.row_tiles(fn, g.reshape(600, 64), z.reshape(600, 64), rows=64)).reshape(2, 300, 48)
        want = np.array(rt.row_tiles_ref(fn, g, z, rows=64))
        g64, z64, w64 = (np.array(a).astype(np.float64) for a in (g, z, w))
        exact = ((g64 / (1 + np.exp(-g64))) * z64) @ w64.T
        bound = 70 * 2.0**-23 * ((np.abs(g64 * z64) @ np.abs(w64).T) + 1e-30)  # K + a few ulps of the SiLU
        assert got.shape == exact.shape
        assert np.all(np.abs(got - exact) <= bound)
        assert np.all(np.abs(want - exact) <= bound)


def test_cpu_only_and_off_switch(monkeypatch):
    x = mx.zeros((200, 8))
    monkeypatch.setattr(rt, "on_cpu", lambda: False)
    assert not rt.applies((x,), 64)
    monkeypatch.setattr(rt, "on_cpu", lambda: True)
    assert rt.applies((x,), 64) and not rt.applies((x,), 0) and not rt.applies((x,), 400)
    assert not rt.applies((x, mx.zeros((199, 8))), 64)  # rows that do not line up: no tiling


def test_registry_reference_is_the_whole_array():
    calls = []

    def fn(x):
        calls.append(x.shape)
        return x * 2

    x = mx.zeros((300, 4))
    with kernels.use_reference():
        kernels.get("rows.tiles")(fn, x, rows=64)
    assert calls == [(300, 4)]


def test_reference_swiglu_unchanged():
    """The reference path of the FFN's SwiGLU is untouched by the tiling (the registry's reference is whole)."""
    with mx.stream(mx.cpu):
        gz = mx.random.normal((1, 256, 64))
        assert mx.array_equal(rt.row_tiles(swiglu_ref, gz, rows=0), swiglu_ref(gz)).item()


@pytest.mark.parametrize("bias", [False, True])
def test_headnorm_gate_tiled(bias):
    """The head norm with its output gate (two inputs, the gate a column slice of the fused projection) tiled: the
    same values as on the whole array, within the norm's float32 rounding."""
    rng = np.random.default_rng()
    with mx.stream(mx.cpu):
        h = mx.array(rng.standard_normal((300, 4, 32)).astype(np.float32))
        qkvo = mx.array(rng.standard_normal((300, 3 * 128)).astype(np.float32))
        w = mx.array(rng.standard_normal(128).astype(np.float32))
        b = mx.array(rng.standard_normal(128).astype(np.float32)) if bias else None

        def fn(hh, oo):
            return headnorm_gate(hh, oo, 256, w, b, 1e-6)

        got, want = np.array(rt.row_tiles(fn, h, qkvo, rows=64)), np.array(rt.row_tiles_ref(fn, h, qkvo))
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=2e-6, atol=2e-6)


def test_model_prefill_tiled_matches_whole():
    """A whole prefill (the FFN's SwiGLU and the head norm tiled) against the same model untiled."""
    from xlstm_mlx.checkpoints.random import randomize, shape_args
    from xlstm_mlx.models.xlstm7b.model import Model

    model = randomize(Model(shape_args("tiny")))
    ids = mx.array(np.random.default_rng().integers(0, 259, (2, 150)))
    out = {}
    for rows in (0, 32):
        old, rt.TILE_ROWS = rt.TILE_ROWS, rows
        try:
            out[rows] = np.array(model(ids, cache=model.make_cache(2)))
        finally:
            rt.TILE_ROWS = old
    np.testing.assert_allclose(out[32], out[0], rtol=1e-5, atol=1e-5)
