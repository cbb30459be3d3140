"""The persistent decode-layer kernel inside a quantized model's decode step (models/xlstm7b/block.py `_decode_whole`).

A small quantized xLSTM-7B-family model whose shapes the kernel takes (dv a multiple of 256 bf16 columns, every
product's K a multiple of the group size 64): each one-token step runs blocks 0..n-2 as ONE launch each (the last
block's FFN output is added by the model, not by a next norm: it keeps the separate launches), and the logits
match the same steps with the switch off (the separate kernels). On the CPU the CUDA sources run through the SIMT
emulator with one resident block (XLSTM_MLX_DECODE_LAYER_GRID=1: the emulator runs blocks in turn, a grid barrier
of more would wait forever); with XLSTM_MLX_TEST_DEVICE=gpu the real kernels at the default grid.
"""

import importlib

import mlx.core as mx
import pytest

from xlstm_mlx.checkpoints.random import randomize
from xlstm_mlx.models import family_of
from xlstm_mlx.kernels import decode_layer as dl
from xlstm_mlx.kernels import quant_gemv
from xlstm_mlx.kernels.cuda_common import cuda_available
from xlstm_mlx.models.xlstm7b.args import ModelArgs
from xlstm_mlx.models.xlstm7b.model import Model
from xlstm_mlx.profiles import load_profile
from xlstm_mlx.tools.bench import quantized

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "kernels"))
import cuda_emulator  # noqa: E402
from cuda_checks import rel_error  # noqa: E402

MODULES = (dl, quant_gemv, importlib.import_module("xlstm_mlx.kernels.mlstm_decode"),
           importlib.import_module("xlstm_mlx.kernels.add_rms_norm"), importlib.import_module("xlstm_mlx.kernels.swiglu"))

runs_somewhere = pytest.mark.skipif(not cuda_available() and not cuda_emulator.available(),
                                    reason="needs CUDA, or g++ for the SIMT emulator")


def _model(bits: int, blocks: int = 3):
    prof = load_profile("fast")
    args = ModelArgs(vocab_size=259, hidden_size=256, num_blocks=blocks, num_heads=2, qk_dim=256, v_dim=512,
                     ffn_dim=384, weight_mode="single")
    m = Model(args, prof)
    randomize(m, 5, dtype=lambda name: family_of(m).param_dtype(name, prof))
    m.fuse_projections()
    quantized(m, "test", bits, 64)
    return m


class _Counting:
    """Counts the launches of the persistent kernel (decode_layer_cuda, which the registered entry calls)."""

    def __init__(self, monkeypatch):
        self.calls = 0
        launch = dl.decode_layer_cuda

        def counted(*a, **k):
            self.calls += 1
            return launch(*a, **k)

        monkeypatch.setattr(dl, "decode_layer_cuda", counted)


def _steps(m, compiled: bool, steps: int, B: int = 2):
    """Prefill a random prompt, then `steps` greedy one-token steps: their logits [steps, B, V]."""
    ids = mx.random.randint(3, 259, (B, 5), key=mx.random.key(11)).astype(mx.int32)
    cache = m.make_cache(B)
    logits = m(ids, cache=cache)[:, -1]
    outs = []
    for _ in range(steps):
        tok = mx.argmax(logits, axis=-1, keepdims=True).astype(mx.int32)
        logits = m(tok, cache=cache, compiled=compiled)[:, -1]
        mx.eval(logits)
        outs.append(logits)
    return mx.stack(outs)


def _context():
    if cuda_available():
        import contextlib

        return contextlib.nullcontext()
    return cuda_emulator.emulated(*MODULES)


@runs_somewhere
@pytest.mark.parametrize("bits", [4, pytest.param(8, marks=pytest.mark.skipif(
    not cuda_available(), reason="emulated: 4-bit only (minutes of CPU; tests/kernels/test_decode_layer.py checks "
                                 "the 8-bit launch bit for bit against the separate kernels)"))])
def test_the_step_runs_one_launch_a_block_and_matches_the_separate_kernels(bits, monkeypatch):
    """Switch on: n-1 launches of the persistent kernel a step; logits within 1e-2 (relative, norm-wise) of the
    switch off. Both run float32 sums of the same exactly dequantized weights; they differ in the GEMVs' split of
    K (the persistent kernel's 8-warp configurations) and so in where a float32 sum rounds to bf16 (2^-9 relative
    at a product's output), which the blocks and the head carry to ~1e-3; a wrong row, gate or state is O(1).
    Uncompiled both (the compiled step is cached per model, not per switch setting: the switch is read when a
    step is traced); on CUDA the compiled step too, against the uncompiled one."""
    on_gpu = cuda_available()
    if not on_gpu:
        monkeypatch.setenv(dl.GRID_ENV, "1")
    m = _model(bits, blocks=3 if on_gpu else 2)
    steps = 3 if on_gpu else 2
    count = _Counting(monkeypatch)
    with _context():
        monkeypatch.setenv(dl.SWITCH, "1")
        on = _steps(m, False, steps)
        assert count.calls == steps * (m.args.num_blocks - 1)
        if on_gpu:
            compiled = _steps(m, True, steps)
            assert rel_error(compiled, on) < 1e-3  # the same kernels; mx.compile fuses the elementwise ops between
        monkeypatch.setenv(dl.SWITCH, "0")
        calls = count.calls
        off = _steps(m, False, steps)
        assert count.calls == calls
    assert not mx.any(mx.isnan(on)).item()
    assert rel_error(on, off) < 1e-2


@runs_somewhere
def test_a_prompt_of_one_token_and_batch_one(monkeypatch):
    """B=1, the state made from zeros by the first step (no prefill): the kernel takes the zero state too."""
    if not cuda_available():
        monkeypatch.setenv(dl.GRID_ENV, "1")
    m = _model(4, blocks=2)
    count = _Counting(monkeypatch)
    tok = mx.array([[17]], dtype=mx.int32)
    with _context():
        monkeypatch.setenv(dl.SWITCH, "1")
        on = m(tok, cache=m.make_cache(1), compiled=False)
        mx.eval(on)
        assert count.calls == 1
        monkeypatch.setenv(dl.SWITCH, "0")
        off = m(tok, cache=m.make_cache(1), compiled=False)
    assert not mx.any(mx.isnan(on)).item()
    assert rel_error(on, off) < 1e-2
