"""The quantized GEMV's add-norm tail (kernels/quant_gemv.py: the residual add + RMSNorm + cast done by the
launch's last block, kernels/add_rms_norm.py AddNorm / xl_add_rms_row): against the two launches it replaces
(quantized_gemv_cuda, then add_rms_norm_cuda) BIT FOR BIT, since the tail runs that kernel's own sums in its own
order, and against the MLX-ops reference (quantized_matmul_ref, then add_rms_norm_ref) within the product's bf16
rounding. On the CPU the kernels' sources run through the SIMT emulator (cuda_emulator.py, the blocks in turn);
with XLSTM_MLX_TEST_DEVICE=gpu on a CUDA machine the real kernels run, at the 7B shapes too, each twice (the
counter is left at zero by the launch's last block: a second call must see a fresh count).
Also: the routing of "matmul.quantized_add_rms" (tail only where the GEMV runs, <= TAIL_MAX_ROWS rows, the
switch on), and a 4-bit model's decode with the fold against the same model without it (the same logits).
"""

import importlib

import mlx.core as mx
import numpy as np
import pytest

from xlstm_mlx import kernels
from xlstm_mlx.kernels import quant_gemv
from xlstm_mlx.kernels.cuda_common import cuda_available

import cuda_emulator
from cuda_checks import needs_cuda, rel_error

add_rms = importlib.import_module("xlstm_mlx.kernels.add_rms_norm")
quant_matmul = importlib.import_module("xlstm_mlx.kernels.quant_matmul")

emulated_only = pytest.mark.skipif(cuda_available() or not cuda_emulator.available(),
                                   reason="needs g++ and no CUDA (where CUDA runs, the real kernels are tested)")


def _operands(M, K, N, bits, bias, norm_bias, want_y, x_dtype, seed, out_dtype=mx.bfloat16):
    keys = mx.random.split(mx.random.key(seed), 6)
    x = mx.random.normal((M, K), key=keys[0]).astype(x_dtype)
    wq, s, b = mx.quantize(mx.random.normal((N, K), key=keys[1]) * 0.05, group_size=64, bits=bits)
    s, b = s.astype(x_dtype), b.astype(x_dtype)
    pb = (mx.random.normal((N,), key=keys[2]) * 0.1).astype(x_dtype) if bias else None
    # the residual stream a few times the product's size; the norm weight around 1, signed
    res = mx.random.normal((M, N), key=keys[3]) * 3.0
    nw = 1.0 + 0.5 * mx.random.normal((N,), key=keys[4])
    nb = 0.1 * mx.random.normal((N,), key=keys[5]) if norm_bias else None
    norm = add_rms.AddNorm(res, nw, nb, 1e-6, out_dtype, want_y, add_rms.tail_counter(type("Owner", (), {})()))
    return (x, wq, s, b, pb), norm


def _two_launches(ops, norm, bits, **cfg):
    x, wq, s, b, pb = ops
    y = quant_gemv.quantized_gemv_cuda(x, wq, s, b, pb, 64, bits, **cfg)
    return add_rms.add_rms_norm_cuda(norm.residual, y, norm.weight, norm.bias, norm.eps, norm.out_dtype,
                                     norm.want_y)


def _check(ops, norm, bits, fused, unfused):
    for name, a, b in zip(("r", "y", "y_c"), fused, unfused):
        if name == "y" and not norm.want_y:
            assert a is None and b is None
            continue
        assert a.dtype == b.dtype and a.shape == b.shape, name
        assert bool(mx.all(mx.isfinite(a.astype(mx.float32))).item()), f"NaN or inf in {name}"
        assert np.array_equal(np.array(a.astype(mx.float32)), np.array(b.astype(mx.float32))), name
    # against MLX's ops: the reference product is a float32 dequantized sum rounded to bf16 like ours, so
    # the product differs by its bf16 rounding (~2^-9 relative); the norm passes that on: 1e-2 on y_c in bf16
    x, wq, s, b, pb = ops
    r_ref, y_ref, c_ref = quant_matmul.quantized_matmul_add_rms_ref(x, wq, s, b, pb, 64, bits, "affine", norm)
    tol = 1e-2 if x.dtype == mx.bfloat16 else 1e-4
    assert rel_error(fused[0], r_ref) <= tol and rel_error(fused[2], c_ref) <= tol


CASES = [  # (M, K, N, bits, bias, norm bias, want_y, x dtype, config)
    (1, 256, 512, 4, False, False, True, mx.bfloat16, {}),
    (3, 512, 640, 4, True, True, False, mx.bfloat16, {}),
    (2, 256, 320, 8, False, True, True, mx.bfloat16, {}),
    (4, 192, 512, 4, False, False, True, mx.bfloat16, dict(R=1, U=1, S=4, KSPLIT=8, WARPS=8)),
    (2, 256, 384, 4, True, False, True, mx.bfloat16, dict(R=1, U=1, S=3, KSPLIT=1, WARPS=1)),
    (1, 256, 256, 4, False, False, True, mx.float32, {}),
]


@emulated_only
@pytest.mark.parametrize("M,K,N,bits,bias,norm_bias,want_y,x_dtype,cfg", CASES)
def test_tail_is_the_two_launches_bit_for_bit_emulated(monkeypatch, M, K, N, bits, bias, norm_bias, want_y, x_dtype,
                                                       cfg):
    monkeypatch.setenv(quant_gemv.TAIL_ROWS_ENV, "16")  # the kernel's own domain (the default routing takes 1 row)
    ops, norm = _operands(M, K, N, bits, bias, norm_bias, want_y, x_dtype, seed=M * 7 + N)
    with cuda_emulator.emulated(quant_gemv, add_rms):
        assert quant_gemv.tail_applies(*ops, 64, bits, "affine", norm)
        fused = quant_gemv.quantized_gemv_add_norm_cuda(*ops, 64, bits, "affine", norm, **cfg)
        unfused = _two_launches(ops, norm, bits, **cfg)
    _check(ops, norm, bits, fused, unfused)


@needs_cuda
@pytest.mark.parametrize("M", [1, 2, 4])
@pytest.mark.parametrize("K,N", [(4096, 4096), (10944, 4096), (512, 640)])
@pytest.mark.parametrize("bits", [4, 8])
def test_tail_is_the_two_launches_bit_for_bit_on_the_gpu(M, K, N, bits):
    """The 7B out_proj (4096 -> 4096) and FFN down (10944 -> 4096) at decode row counts, and a small shape; each
    twice through the same counter."""
    for call in range(2):
        ops, norm = _operands(M, K, N, bits, False, call == 1, True, mx.bfloat16, seed=call + 3 * M)
        fused = quant_gemv.quantized_gemv_add_norm_cuda(*ops, 64, bits, "affine", norm)
        unfused = _two_launches(ops, norm, bits)
        mx.eval(fused, unfused)
        assert not bool(mx.any(norm.counter).item()), "the last block leaves the counter at zero"
        _check(ops, norm, bits, fused, unfused)


def test_tail_conditions():
    """The tail needs float32 residual / weight / bias of the product's [M, N], a counter, <= TAIL_MAX_ROWS rows."""
    ops, norm = _operands(2, 128, 64, 4, False, False, True, mx.bfloat16, seed=1)
    assert add_rms.tail_applies(norm, 2, 64) == cuda_available()
    assert not add_rms.tail_applies(norm._replace(counter=None), 2, 64)
    assert not add_rms.tail_applies(norm._replace(residual=norm.residual.astype(mx.bfloat16)), 2, 64)
    assert not add_rms.tail_applies(norm, 3, 64)  # not the product's shape
    ops5, norm5 = _operands(quant_gemv.TAIL_MAX_ROWS + 1, 128, 64, 4, False, False, True, mx.bfloat16, seed=2)
    assert not quant_gemv.tail_applies(*ops5, 64, 4, "affine", norm5)


@emulated_only
@pytest.mark.parametrize("M,switch,rows,tail", [(1, None, None, True), (quant_gemv.TAIL_MAX_ROWS + 1, None, None, False),
                                                 (1, "0", None, False), (3, None, "4", True), (4, None, "3", False)])
def test_the_fast_form_takes_the_tail_where_it_applies(monkeypatch, M, switch, rows, tail):
    """matmul.quantized_add_rms: the tail where the GEMV runs for few rows (TAIL_MAX_ROWS, or
    XLSTM_MLX_GEMV_ADD_NORM_ROWS) and the switch is on; else the GEMV (or MLX's kernel) and then the add-norm
    kernel. The same values either way."""
    if switch is not None:
        monkeypatch.setenv(quant_gemv.TAIL_ENV, switch)
    if rows is not None:
        monkeypatch.setenv(quant_gemv.TAIL_ROWS_ENV, rows)
    ops, norm = _operands(M, 128, 128, 4, False, False, True, mx.bfloat16, seed=M)
    calls = []
    real = quant_gemv.quantized_gemv_add_norm_cuda
    monkeypatch.setattr(quant_gemv, "quantized_gemv_add_norm_cuda", lambda *a, **k: calls.append(1) or real(*a, **k))
    with cuda_emulator.emulated(quant_gemv, add_rms):
        out = kernels.get("matmul.quantized_add_rms")(*ops, 64, 4, "affine", norm)
        unfused = _two_launches(ops, norm, 4)
    assert bool(calls) == tail
    _check(ops, norm, 4, out, unfused)


@pytest.mark.parametrize("raw", ["0", "17", "four", "-1"])
def test_a_bad_tail_row_count_is_a_usage_error(monkeypatch, raw):
    from xlstm_mlx.errors import UsageError

    monkeypatch.setenv(quant_gemv.TAIL_ROWS_ENV, raw)
    with pytest.raises(UsageError, match=quant_gemv.TAIL_ROWS_ENV):
        quant_gemv.tail_max_rows()


def test_the_fast_form_without_cuda_is_the_two_fast_forms():
    """No CUDA: the product and the add + norm as the registry's own fast forms compute them (the same arrays)."""
    if cuda_available():
        pytest.skip("CUDA runs here: the tail is taken")
    ops, norm = _operands(2, 128, 64, 4, True, True, True, mx.bfloat16, seed=5)
    out = kernels.get("matmul.quantized_add_rms")(*ops, 64, 4, "affine", norm)
    y = kernels.get("matmul.quantized")(*ops, 64, 4, "affine")
    ref = kernels.get("norm.add_rms")(norm.residual, y, norm.weight, norm.bias, norm.eps, norm.out_dtype, True)
    for a, b in zip(out, ref):
        assert mx.array_equal(a, b)


def _quantized_tiny_model(seed=0):
    from xlstm_mlx.checkpoints.random import randomize, shape_args
    from xlstm_mlx.models import family_of
    from xlstm_mlx.models.xlstm7b.model import Model
    from xlstm_mlx.profiles import load_profile
    from xlstm_mlx.tools.bench import quantized

    prof = load_profile("fast")
    m = Model(shape_args("tiny", num_blocks=3), prof)
    # each parameter in the dtype a loaded checkpoint gives it (the norms' weights float32: what the tail takes)
    randomize(m, seed, dtype=lambda name: family_of(m).param_dtype(name, prof))
    m, _ = quantized(m, "", 4, 64)
    m.fuse_projections()
    return m


def _greedy_logits(model, prompt, steps=3):
    cache = model.make_cache(prompt.shape[0])
    outs = [model(prompt, cache=cache)[:, -1]]
    for _ in range(steps):
        tok = mx.argmax(outs[-1], axis=-1, keepdims=True).astype(mx.int32)
        outs.append(model(tok, cache=cache, compiled=not _EMULATING[0])[:, -1])
    return mx.stack(outs)


_EMULATING = [False]


@pytest.mark.parametrize("batch", [1, 3])
def test_a_quantized_model_decodes_the_same_with_the_fold(monkeypatch, batch):
    """A 4-bit model (3 blocks: out_proj and FFN down fold their block's FFN norm and the next block's first norm)
    gives the same logits with the fold as with XLSTM_MLX_GEMV_ADD_NORM=0: bit for bit where the kernels run
    (the emulated ones on the CPU, uncompiled: the emulator runs outside MLX's graph), and on the CPU's MLX ops
    (the fold there is the same two fast forms)."""
    emulate = not cuda_available() and cuda_emulator.available()
    _EMULATING[0] = emulate
    prompt = mx.random.randint(3, 259, (batch, 5), key=mx.random.key(4)).astype(mx.int32)
    monkeypatch.setenv(quant_gemv.TAIL_ROWS_ENV, "4")  # the tail at batch 3 too (the default takes one row)
    runs, calls = [], []
    real = quant_gemv.quantized_gemv_add_norm_cuda
    monkeypatch.setattr(quant_gemv, "quantized_gemv_add_norm_cuda", lambda *a, **k: calls.append(1) or real(*a, **k))
    for switch in ("1", "0"):
        monkeypatch.setenv(quant_gemv.TAIL_ENV, switch)
        model = _quantized_tiny_model()
        if emulate:
            with cuda_emulator.emulated(quant_gemv, add_rms):
                runs.append(_greedy_logits(model, prompt))
        else:
            runs.append(_greedy_logits(model, prompt))
    if emulate or cuda_available():  # 3 blocks: 3 out_proj + 2 down folds a decode step (uncompiled: each call)
        assert len(calls) == 3 * 5 if emulate else calls
    assert bool(mx.all(mx.isfinite(runs[0])).item())
    assert np.array_equal(np.array(runs[0]), np.array(runs[1]))


def test_block_counters_are_not_small_allocations():
    """MLX's CUDA allocator puts allocations of up to 8 bytes in managed memory shared with scalars the host reads
    (each step's sampled token): a counter there migrated between host and GPU at every decode step (4.2 -> 22 ms a
    7B 4-bit step). Both kernel counters are at least 64 bytes, at any row count."""
    from xlstm_mlx.kernels import mlstm_decode

    owner = type("Owner", (), {})()
    assert add_rms.tail_counter(owner).nbytes >= 64
    for rows in (1, 2, 8, 40):
        c = mlstm_decode.norm_counter(owner, rows)
        assert c.nbytes >= 64 and c.size >= rows and not bool(mx.any(c).item())
