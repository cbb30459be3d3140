"""The sLSTM recurrence alone: against the official vanilla kernel, compiled vs reference, masks."""

import numpy as np
import pytest
import torch
from xlstm.blocks.slstm.src.vanilla import slstm_forward, slstm_pointwise_function_registry

import mlx.core as mx
from xlstm_mlx.kernels.slstm import slstm_sequence, slstm_sequence_ref, slstm_step, slstm_step_ref, slstm_zero_state as zero_state
from xlstm_mlx.models.xlstm_stack.layout import _slstm_cell_to_engine, _slstm_cell_to_stored

B, T, NH, DH = 3, 12, 2, 8


def random_inputs(seed):
    rng = np.random.default_rng(seed)
    wx = rng.standard_normal((B, T, 4, NH, DH)).astype(np.float32) * 2.0  # official: gate-major [G, NH, DH]
    R_int = (rng.standard_normal((NH, 4 * DH, DH)) * DH**-0.5).astype(np.float32)  # vanilla internal layout
    b_int = (rng.standard_normal(4 * NH * DH) * 2.0).astype(np.float32)  # vanilla: [4, NH, DH] flattened
    return wx, R_int, b_int


def ours_from_official(wx, R_int, b_int):
    R, b = _slstm_cell_to_engine(mx.array(R_int), mx.array(b_int), "vanilla", NH)
    wx_ours = mx.array(wx.transpose(0, 1, 3, 2, 4).reshape(B, T, NH, 4 * DH))  # -> per head, gate-major
    return wx_ours, R, b


@pytest.mark.parametrize("seed", [0, 1])
def test_sequence_matches_official_vanilla_kernel(seed):
    wx, R_int, b_int = random_inputs(seed)
    x = torch.from_numpy(wx.reshape(B, T, -1)).transpose(0, 1).contiguous()  # [T, B, 4*NH*DH]
    states = torch.zeros(4, B, NH * DH)
    all_states, _, _ = slstm_forward(x, states, torch.from_numpy(R_int), torch.from_numpy(b_int),
                                     slstm_pointwise_function_registry["slstm"])
    ref_y = all_states[0, 1:].transpose(0, 1).reshape(B, T, NH, DH).numpy()
    ref_last = all_states[:, -1].reshape(4, B, NH, DH).numpy()

    y, state = slstm_sequence_ref(*ours_from_official(wx, R_int, b_int))
    assert np.abs(np.array(y) - ref_y).max() <= 1e-5
    for name, ours, ref in zip("ycnm", state, ref_last):
        assert np.abs(np.array(ours) - ref).max() <= 1e-4 * max(1.0, np.abs(ref).max()), name


def test_compiled_equals_reference_and_steps_equal_sequence():
    wx, R, b = ours_from_official(*random_inputs(2))
    y_ref, s_ref = slstm_sequence_ref(wx, R, b)
    y_fast, s_fast = slstm_sequence(wx, R, b)
    assert np.abs(np.array(y_ref) - np.array(y_fast)).max() <= 1e-6
    state, ys = zero_state(B, NH, DH), []
    for t in range(T):
        y, state = slstm_step(wx[:, t], R, b, state)
        ys.append(y)
    assert np.abs(np.array(mx.stack(ys, 1)) - np.array(y_ref)).max() <= 1e-6
    for a, c in zip(state, s_ref):
        assert np.array_equal(np.array(a), np.array(c))


def test_masked_positions_are_identity_steps():
    wx, R, b = ours_from_official(*random_inputs(3))
    mask = np.ones((B, T), bool)
    mask[0, :5] = False  # left padding
    mask[1, [3, 4, 9]] = False  # holes
    y, state = slstm_sequence_ref(wx, R, b, mask=mx.array(mask))
    for row in range(B):
        keep = np.flatnonzero(mask[row])
        y_r, s_r = slstm_sequence_ref(wx[row : row + 1, keep.tolist()], R, b)
        assert np.abs(np.array(y[row : row + 1, keep.tolist()]) - np.array(y_r)).max() <= 1e-6
        for a, c in zip(state, s_r):
            assert np.abs(np.array(a[row : row + 1]) - np.array(c)).max() <= 1e-6


def test_fresh_rows_use_the_first_step_rule_per_element():
    """Rows whose n is still 0 take m = i~ (as the CUDA kernel does per element), whatever the other rows hold."""
    wx, R, b = ours_from_official(*random_inputs(4))
    _, warm = slstm_sequence_ref(wx[:1, :6], R, b)
    fresh = zero_state(1, NH, DH)
    mixed = tuple(mx.concatenate([w, f], axis=0) for w, f in zip(warm, fresh))
    y_mixed, _ = slstm_step_ref(wx[:2, 6], R, b, mixed)
    y_alone, _ = slstm_step_ref(wx[1:2, 6], R, b, fresh)
    assert np.abs(np.array(y_mixed[1:]) - np.array(y_alone)).max() <= 1e-7


@pytest.mark.skipif(not mx.cuda.is_available(), reason="the fused sLSTM kernel needs MLX's CUDA backend")
def test_fused_cuda_sequence_equals_reference():
    from xlstm_mlx.kernels.slstm_cuda import slstm_sequence_cuda

    wx, R, b = ours_from_official(*random_inputs(5))
    mask = np.ones((B, T), bool)
    mask[0, :4] = False
    mask[2, [1, 7]] = False
    for m in (None, mx.array(mask)):
        y_ref, s_ref = slstm_sequence_ref(wx, R, b, mask=m)  # on the CPU: GPU float32 matmuls may be TF32
        with mx.stream(mx.gpu):
            y, s = slstm_sequence_cuda(wx, R, b, zero_state(B, NH, DH), mask=m)
        assert np.abs(np.array(y) - np.array(y_ref)).max() <= 1e-5
        for a, c in zip(s, s_ref):
            assert np.abs(np.array(a) - np.array(c)).max() <= 1e-5 * max(1.0, np.abs(np.array(c)).max())


@pytest.mark.parametrize("layout", ["vanilla", "cuda"])
def test_stored_layout_round_trips(layout):
    """convert writes stacks back in their own stored layout: _slstm_cell_to_stored inverts _slstm_cell_to_engine."""
    rng = np.random.default_rng(3)
    shape = (NH, 4 * DH, DH) if layout == "vanilla" else (NH, DH, 4 * DH)
    R, b = mx.array(rng.standard_normal(shape).astype(np.float32)), mx.array(rng.standard_normal(4 * NH * DH).astype(np.float32))
    R2, b2 = _slstm_cell_to_stored(*_slstm_cell_to_engine(R, b, layout, NH), layout, NH)
    assert np.array_equal(np.array(R2), np.array(R)) and np.array_equal(np.array(b2), np.array(b))
