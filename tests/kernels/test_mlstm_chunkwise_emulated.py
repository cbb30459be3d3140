"""The CUDA chunkwise kernels' own sources, run on the CPU through the SIMT emulator (cuda_emulator.py), against
the MLX-ops scan and float64, with the tolerances of test_mlstm_chunkwise_cuda.py. This checks indexing, tiling,
segment handling, the final partial chunk (every T >= 1 runs in the kernels), the model's [B, T, NH, D] layout
(mlstm_chunkwise_rows) and synchronization on any machine with g++; the GPU tests check the real thing.
Skipped where CUDA runs (the real kernels are tested there) or g++ is missing.
"""

import mlx.core as mx
import pytest

from xlstm_mlx.kernels import mlstm_chunkwise_cuda as cwc
from xlstm_mlx.kernels.cuda_common import cuda_available
from xlstm_mlx.kernels.mlstm_chunkwise import mlstm_chunkwise_ops

import cuda_emulator
from test_mlstm_chunkwise_cuda import (check, check_block_rows_path, check_left_padding, check_rows_layout,
                                       check_zero_state, make, truth)

pytestmark = pytest.mark.skipif(cuda_available() or not cuda_emulator.available(),
                                reason="needs g++ and no CUDA (where CUDA runs, the real kernels are tested)")

# (id, B, NH, T, Dqk, Dv, options): Dv tiles of 128 and of 64 (three of them), two segments, and final partial
# chunks (T mod 64 != 0: masked inside the kernels) from T = 1 up, one of them a segment of its own
CASES = [
    ("emu_T130_B2_pad_state", 2, 1, 130, 64, 128, dict(pad=[0, 70], state=True)),
    ("emu_T64_dqk128_dv192_saturated", 1, 2, 64, 128, 192, dict(saturate=True)),
    ("emu_two_segments", 1, 1, 64 * 33, 64, 64, dict(typical=True, state=True)),
    ("emu_T1", 1, 2, 1, 64, 64, {}),
    ("emu_T1_state", 2, 1, 1, 64, 128, dict(state=True)),
    ("emu_T5_state", 1, 2, 5, 64, 128, dict(state=True)),
    ("emu_T63_typical", 1, 2, 63, 64, 64, dict(typical=True)),
    ("emu_T64_state", 1, 1, 64, 64, 64, dict(state=True)),
    ("emu_T65_dv128", 1, 2, 65, 64, 128, {}),
    ("emu_T130_dqk128_dv192_state", 1, 1, 130, 128, 192, dict(state=True)),
    ("emu_T127_saturated_state", 1, 1, 127, 64, 64, dict(saturate=True, state=True)),
    ("emu_partial_segment", 1, 1, 64 * 32 + 5, 64, 64, dict(typical=True, state=True)),
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


# (id, B, NH, T, Dqk, Dv, options) of the model's layout: partial chunks, a state, padding, two segments
ROWS_CASES = [
    ("emu_rows_T5", 1, 2, 5, 64, 64, dict(state=True)),
    ("emu_rows_T130_B2_pad", 2, 2, 130, 64, 128, dict(pad=[0, 70], state=True)),
    ("emu_rows_T64_dqk128_dv192", 1, 2, 64, 128, 192, {}),
    ("emu_rows_two_segments", 1, 1, 64 * 32 + 5, 64, 64, dict(typical=True)),
    ("emu_rows_7b_heads_T70", 1, 2, 70, 256, 512, dict(state=True, typical=True)),  # the 7B head shape
]


@pytest.mark.parametrize("case", ROWS_CASES, ids=[c[0] for c in ROWS_CASES])
def test_emulated_rows_layout_is_the_heads_first_result(case):
    with cuda_emulator.emulated(cwc):
        check_rows_layout(*case)


@pytest.mark.parametrize("weight_mode", ["fused", "single"])
def test_emulated_block_runs_the_rows_kernels_on_the_projection_output(weight_mode, monkeypatch):
    with cuda_emulator.emulated(cwc):
        check_block_rows_path(weight_mode, monkeypatch, T=64 + 7)


def test_recurrent_v_tile_rule():
    """Kernel A takes 128-wide Dv tiles where that grid fits in one wave of the GPU's multiprocessors, else 64
    (and 64 wherever Dv is not a multiple of 128); a fixed VT_A overrides the rule (the kernel lab's variants)."""
    assert cwc.VT_A == "auto"
    assert cwc.recurrent_v_tile(1, 8, 256, 512) == 128      # 7B heads at batch 1: 128 blocks
    assert cwc.recurrent_v_tile(8, 8, 256, 512) == 64       # batch 8: 1,024 blocks of 128
    assert cwc.recurrent_v_tile(1, 2, 64, 192) == 64        # Dv 192: no 128-wide tiling
    saved = cwc.VT_A
    try:
        cwc.VT_A = 64
        assert cwc.recurrent_v_tile(1, 8, 256, 512) == 64
    finally:
        cwc.VT_A = saved


@pytest.mark.parametrize("case", [c for c in CASES if c[0] in ("emu_T130_B2_pad_state", "emu_T65_dv128")],
                         ids=lambda c: c[0])
def test_emulated_output_kernel_with_v_prefetched_is_the_same(case):
    """PREFETCH_V (the lab's variant of kernel B: v fetched into registers before the decay-matrix steps) computes
    the same bits as the default."""
    name, B, NH, T, dqk, dv, opts = case
    q, k, v, i, f, st = make(23, B, NH, T, dqk, dv, **opts)
    outs = []
    for pv in (False, True):
        cwc.PREFETCH_V = pv
        try:
            with cuda_emulator.emulated(cwc):
                h, s = cwc.mlstm_chunkwise_cuda(q, k, v, i, f, st)
                mx.eval(h, *s)
        finally:
            cwc.PREFETCH_V = False
        outs.append((h, s))
    assert mx.array_equal(outs[0][0], outs[1][0])
    assert all(mx.array_equal(a, b) for a, b in zip(outs[0][1], outs[1][1]))


def test_emulated_zero_state_is_not_read():
    with cuda_emulator.emulated(cwc):
        check_zero_state(130)
