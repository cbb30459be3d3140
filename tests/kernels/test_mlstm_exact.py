"""The mLSTM forms in float64 (the exact profile) and the float64 elementwise helpers.

Every form run on float64 inputs must compute in float64 end to end: against the independent NumPy float64
oracle the normwise error is ~1e-15 (measured <= 4e-14 on these harsh gates), so 1e-12 passes only a fully
float64 path; a single float32 exp (MLX's CPU exp is float32-accurate even on float64 arrays) shows as ~1e-7.
The helpers must be the plain MLX ops, bit for bit, on float32 (the shipped profiles are unchanged).
"""

import math

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from kernels.test_mlstm import close, inputs
from oracles.mlstm_f64 import mlstm_sequence_f64
from xlstm_mlx.kernels import (mlstm_chunkwise, mlstm_chunkwise_ref, mlstm_parallel, mlstm_sequence, mlstm_step,
                               mlstm_step_ref)
from xlstm_mlx.kernels.mlstm_gates import exp, log_decay_matrix, log_decay_to_end, log_sigmoid, sigmoid, silu

F64_TOL = 1e-12


def f64(*xs):
    return tuple(None if x is None else (tuple(a.astype(mx.float64) for a in x) if isinstance(x, tuple)
                                         else x.astype(mx.float64)) for x in xs)


@pytest.mark.parametrize("form", [mlstm_sequence, mlstm_parallel, mlstm_chunkwise, mlstm_chunkwise_ref])
@pytest.mark.parametrize("T,chunk", [(1, 4), (45, 8), (130, 16)])
@pytest.mark.parametrize("with_state", [False, True])
def test_float64_forms_match_the_oracle(form, T, chunk, with_state):
    q, k, v, i, f, state = f64(*inputs(seed=T + chunk, T=T, with_state=with_state))
    h_ref, s_ref = mlstm_sequence_f64(q, k, v, i, f, state)
    h, s = form(q, k, v, i, f, state, chunk_size=chunk)
    assert h.dtype == mx.float64 and all(a.dtype == mx.float64 for a in s)
    close(h, h_ref, F64_TOL)
    for a, b in zip(s, s_ref):
        close(a, b, F64_TOL)


@pytest.mark.parametrize("step", [mlstm_step, mlstm_step_ref])
def test_float64_step_matches_the_oracle(step):
    q, k, v, i, f, state = f64(*inputs(seed=2, T=1))
    h_ref, s_ref = mlstm_sequence_f64(q, k, v, i, f, state)
    h, s = step(q[:, :, 0], k[:, :, 0], v[:, :, 0], i[:, :, 0], f[:, :, 0], state)
    assert h.dtype == mx.float64
    close(h, h_ref[:, :, 0], F64_TOL)
    for a, b in zip(s, s_ref):
        close(a, b, F64_TOL)


def test_float64_saturated_gates():
    B, NH, T = 2, 4, 96
    q, k, v, _, _, state = f64(*inputs(seed=5, B=B, NH=NH, T=T))
    pattern = mx.array([15.0, -15.0, 15.0, -15.0], dtype=mx.float64).reshape(1, NH, 1)
    i = mx.broadcast_to(pattern, (B, NH, T)) * mx.where(mx.arange(T) % 3 == 0, 1.0, -1.0).astype(mx.float64)
    f = mx.broadcast_to(-pattern, (B, NH, T))
    h_ref, s_ref = mlstm_sequence_f64(q, k, v, i, f, state)
    for form in (mlstm_chunkwise, mlstm_parallel, mlstm_sequence):
        h, s = form(q, k, v, i, f, state, chunk_size=16)
        close(h, h_ref, 1e-10)  # |h| ~ 600 here (|q.n| nearly cancels): float64 rounding amplified as in float32


def test_zero_state_takes_the_gates_dtype():
    q, k, v, i, f, _ = f64(*inputs(seed=1, T=5, with_state=False))
    for form in (mlstm_sequence, mlstm_parallel, mlstm_chunkwise):
        _, s = form(q, k, v, i, f, None, chunk_size=4)
        assert all(a.dtype == mx.float64 for a in s)
    _, s = mlstm_chunkwise(*inputs(seed=1, T=5, with_state=False)[:5], None, chunk_size=4)
    assert all(a.dtype == mx.float32 for a in s)


def test_helpers_are_float64_accurate():
    x = np.random.default_rng(0).standard_normal(4000) * 12
    xm = mx.array(x, dtype=mx.float64)
    ref_sig = 1 / (1 + np.exp(-x))
    checks = {"exp": (exp(xm), np.exp(x)), "sigmoid": (sigmoid(xm), ref_sig), "silu": (silu(xm), x * ref_sig),
              "log_sigmoid": (log_sigmoid(xm), -np.logaddexp(0, -x))}
    for name, (got, ref) in checks.items():
        got = np.array(got)
        rel = np.abs(got - ref).max() / np.abs(ref).max()
        assert got.dtype == np.float64 and rel <= 1e-14, f"{name}: relative error {rel:.3g}"
    edge = np.array(log_sigmoid(mx.array([math.inf, -math.inf], dtype=mx.float64)))
    assert edge[0] == 0.0 and edge[1] == -math.inf  # the identity step of a masked position


def test_helpers_are_the_plain_ops_in_float32():
    x = mx.random.normal((1000,)) * 10
    assert mx.array_equal(exp(x), mx.exp(x)).item()
    assert mx.array_equal(sigmoid(x), mx.sigmoid(x)).item()
    assert mx.array_equal(silu(x), nn.silu(x)).item()
    assert mx.array_equal(log_sigmoid(x), -mx.logaddexp(mx.zeros_like(x), -x)).item()


def test_log_decay_matrix_and_to_end():
    lf = np.random.default_rng(1).uniform(-15, 0, (3, 20))
    d = np.array(log_decay_matrix(mx.array(lf, dtype=mx.float64)))
    e = np.array(log_decay_to_end(mx.array(lf, dtype=mx.float64)))
    for t in range(20):
        for s in range(20):
            want = lf[:, s + 1:t + 1].sum(-1) if s <= t else np.full(3, -np.inf)
            np.testing.assert_allclose(d[:, t, s], want, rtol=1e-13, atol=1e-13)
        np.testing.assert_allclose(e[:, t], lf[:, t + 1:].sum(-1), rtol=1e-13, atol=1e-13)


def test_segment_sums_beat_differences_of_running_sums_in_float32():
    """The point of log_decay_matrix: against float64, the float32 segment sum has the relative error of the
    segment itself while b_t - b_s of a running sum carries the rounding of the whole prefix: measured 3.8e-7
    against 1.9e-5 (relative to max(|segment|, 1)), where a short segment after a long prefix matters most."""
    lf = np.random.default_rng(2).uniform(-15, 0, (64, 64)).astype(np.float32).astype(np.float64)  # exact inputs
    b64 = np.cumsum(lf, -1)
    exact = b64[:, :, None] - b64[:, None, :]
    b32 = np.array(mx.cumsum(mx.array(lf.astype(np.float32)), axis=-1)).astype(np.float64)
    diff = b32[:, :, None] - b32[:, None, :]
    seg = np.array(log_decay_matrix(mx.array(lf.astype(np.float32)))).astype(np.float64)
    lower = np.tril(np.ones((64, 64), bool), -1)
    scale = np.maximum(np.abs(exact), 1.0)
    err_seg = (np.abs(seg - exact) / scale)[:, lower].max()
    err_diff = (np.abs(diff - exact) / scale)[:, lower].max()
    assert err_seg <= 2e-6 and err_seg < err_diff / 10, (err_seg, err_diff)
