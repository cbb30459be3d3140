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
from test_mlstm_chunkwise_cuda import check, make, truth

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
