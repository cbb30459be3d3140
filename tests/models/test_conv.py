"""CausalConv1d against the official module (forward and step), and masked positions as skips."""

import numpy as np
import torch
from xlstm.components.conv import CausalConv1d as OfficialConv
from xlstm.components.conv import CausalConv1dConfig

import mlx.core as mx
from xlstm_mlx.models.layers.conv import CausalConv1d

B, T, F, KS = 2, 11, 6, 4


def pair(seed=0):
    torch.manual_seed(seed)
    off = OfficialConv(CausalConv1dConfig(feature_dim=F, kernel_size=KS))
    with torch.no_grad():
        off.conv.weight.normal_()
        off.conv.bias.normal_()
    ours = CausalConv1d(F, KS)
    ours.update({"weight": mx.array(off.conv.weight.detach()[:, 0, :].T.numpy()), "bias": mx.array(off.conv.bias.detach().numpy())})
    return off, ours


def test_forward_and_step_match_official():
    off, ours = pair()
    x = np.random.default_rng(0).standard_normal((B, T, F)).astype(np.float32)
    with torch.no_grad():
        ref = off(torch.from_numpy(x)).numpy()
    y, state = ours(mx.array(x), ours.make_state(B))
    assert np.abs(np.array(y) - ref).max() <= 1e-5
    assert np.array_equal(np.array(state), x[:, -(KS - 1):])
    state, ys = ours.make_state(B), []
    conv_state = None
    for t in range(T):
        y, state = ours(mx.array(x[:, t : t + 1]), state)
        with torch.no_grad():
            r, conv_state = off.step(torch.from_numpy(x[:, t : t + 1]), conv_state)
        assert np.abs(np.array(y) - r.numpy()).max() <= 1e-5
        ys.append(np.array(y))
    assert np.abs(np.concatenate(ys, 1) - ref).max() <= 1e-5


def test_masked_positions_are_skipped_anywhere():
    _, ours = pair(1)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((B, T, F)).astype(np.float32)
    mask = np.ones((B, T), bool)
    mask[0, :3] = False
    mask[1, [2, 5, 6, 10]] = False
    start = mx.array(rng.standard_normal((B, KS - 1, F)).astype(np.float32))
    y, state = ours(mx.array(x), start, mx.array(mask))
    for row in range(B):
        keep = np.flatnonzero(mask[row]).tolist()
        y_r, s_r = ours(mx.array(x[row : row + 1, keep]), start[row : row + 1])
        assert np.abs(np.array(y[row : row + 1, keep]) - np.array(y_r)).max() <= 1e-6
        assert np.array_equal(np.array(state[row : row + 1]), np.array(s_r))
