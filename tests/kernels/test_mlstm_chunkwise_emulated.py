"""The CUDA chunkwise kernels' own sources, run on the CPU through the SIMT emulator (cuda_emulator.py), against
the MLX-ops scan and float64, with the tolerances of test_mlstm_chunkwise_cuda.py. This checks indexing, tiling,
segment handling and synchronization on any machine with g++; the GPU tests check the real thing.
Skipped where CUDA runs (the real kernels are tested there) or g++ is missing.
"""

import mlx.core as mx
import pytest

from xlstm_mlx.kernels import mlstm_chunkwise_cuda as cwc
from xlstm_mlx.kernels.cuda_common import cuda_available
from xlstm_mlx.kernels.mlstm_chunkwise import mlstm_chunkwise_ops

import cuda_emulator
from test_mlstm_chunkwise_cuda import check, check_left_padding, make, truth

pytestmark = pytest.mark.skipif(cuda_available() or not cuda_emulator.available(),
                                reason="needs g++ and no CUDA (where CUDA runs, the real kernels are tested)")

# (id, B, NH, T, Dqk, Dv, options): Dv tiles of 128 and of 64 (three of them), a remainder, two segments
CASES = [
    ("emu_T130_B2_pad_state", 2, 1, 130, 64, 128, dict(pad=[0, 70], state=True)),
    ("emu_T64_dqk128_dv192_saturated", 1, 2, 64, 128, 192, dict(saturate=True)),
    ("emu_two_segments", 1, 1, 64 * 33, 64, 64, dict(typical=True, state=True)),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_emulated_kernels_match_ops_and_float64(case):
    name, B, NH, T, dqk, dv, opts = case
    q, k, v, i, f, st = make(21, B, NH, T, dqk, dv, **opts)
    with cuda_emulator.emulated(cwc):
        assert cwc.applies(q, k, v, i, f, st, 64)
        out = cwc.mlstm_chunkwise_cuda(q, k, v, i, f, st)
        mx.eval(out)
    ops = mlstm_chunkwise_ops(q, k, v, i, f, st)
    mx.eval(ops)
    check(name, out, ops, truth(q, k, v, i, f, st), opts, (B, NH, T, dqk, dv))


def test_emulated_kernels_take_the_models_transposed_views():
    """q/k/v as [B, T, NH, D] -> [B, NH, T, D] views, gates as [B, T, NH] -> [B, NH, T] (what the 7B block passes)."""
    q, k, v, i, f, st = make(22, 1, 2, 64 + 3, 64, 64, state=True)
    view = lambda x: mx.contiguous(x.swapaxes(1, 2)).swapaxes(1, 2)  # noqa: E731  (same values, strided)
    with cuda_emulator.emulated(cwc):
        h, s = cwc.mlstm_chunkwise_cuda(q, k, v, i, f, st)
        hv, sv = cwc.mlstm_chunkwise_cuda(view(q), view(k), view(v), view(i[..., None])[..., 0],
                                          view(f[..., None])[..., 0], st)
        mx.eval(h, s, hv, sv)
    assert mx.array_equal(h, hv) and all(mx.array_equal(a, b) for a, b in zip(s, sv))


@pytest.mark.parametrize("with_state", [False, True])
def test_emulated_left_padding_is_an_identity(with_state):
    with cuda_emulator.emulated(cwc):
        check_left_padding(cwc.mlstm_chunkwise_cuda, with_state, T=64 * 3, dv=64, pad=130)
