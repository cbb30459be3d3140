"""The quantized GEMV (kernels/quant_gemv.py) against what nn.QuantizedLinear computes, on fresh random inputs.

On the CPU (CI): MLX's affine bit layout, pinned twice against mx.dequantize: the plain layout model
(`unpack_codes`: weight j of a uint32 word in bits [bits*j, bits*(j+1)), lowest first) on hand-packed codes and
on mx.quantize output, and the numpy model of the kernel's own code extraction (`kernel_codes` /
`dequantize_as_kernel`: the bf16 magic-number pairs at 4 bits, the float32 exponent trick at 8, placed back at
their k): equal to MLX for bf16 scales, within one rounding of q*s for float32 ones (the kernel never rounds a
weight, MLX rounds q*s and then + b); that the kernel's CUDA source itself, built for the host with stand-ins for
the CUDA built-ins and the PTX it uses (tests/kernels/host_cuda.py: one thread per CUDA thread, real barriers,
cp.async as a copy, ldmatrix and mma.sync by their documented fragment layouts), matches the reference on small
odd shapes: tails, split-K, two and six column tiles, float32 x (same tolerances as on the GPU); that every
config the lab sweeps or default_config picks fits the kernel's limits; that it compiles for sm_90 without
spills where nvcc is installed; and that the fast form falls back to the reference without CUDA.

On MLX's CUDA backend (XLSTM_MLX_TEST_DEVICE=gpu on a CUDA machine; skipped elsewhere with the reason): the
kernel against the reference evaluated on the CPU stream in float32 (so no bf16 rounding of intermediates or TF32
blurs it), at 1, 2, 3, 4, 8, 13, 16 rows, bits 4 and 8, groups 32/64/128, with and without bias, odd N, bf16
and float32 x, the default config and every config the lab sweeps. Tolerance: relative Frobenius error 1e-2 for
bf16 outputs: the kernel's float32 sum is exact to ~1e-6, and its single rounding of each output to bf16 gives
~2^-9 / sqrt(3) ~ 1.1e-3 relative (~2e-3 with bias and cancellation); 1e-2 is 5x that, and far below what a
wrong nibble order, group index or scale would give (O(1)). float32 x: 1e-5 (float32 sums in a different order,
the fold s * sum(q x) + b * sum(x) cancelling a factor ~2-3 per group: ~1e-7). NaN or inf never passes.
"""

import numpy as np
import pytest
import mlx.core as mx

import host_cuda
from xlstm_mlx.kernels import quant_gemv
from xlstm_mlx.kernels.cuda_common import cuda_available

from cuda_checks import needs_cuda, rel_error as _rel


@pytest.mark.parametrize("bits", [4, 8])
def test_layout_of_hand_packed_codes(bits):
    """Codes packed by the documented rule, dequantized by MLX with scale 1 and bias 0, come back in order."""
    per = 32 // bits
    rng = np.random.default_rng(bits)
    codes = rng.integers(0, 2**bits, size=(3, 128), dtype=np.uint32)
    words = np.zeros((3, 128 // per), np.uint32)
    for j in range(per):
        words |= codes[:, j::per] << np.uint32(bits * j)
    ones, zeros = mx.ones((3, 128 // 64)), mx.zeros((3, 128 // 64))
    back = np.array(mx.dequantize(mx.array(words), ones, zeros, group_size=64, bits=bits))
    assert np.array_equal(back, codes.astype(np.float32))
    assert np.array_equal(quant_gemv.unpack_codes(words, bits), codes)


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("group_size", [32, 64, 128])
@pytest.mark.parametrize("dtype", [mx.float32, mx.bfloat16])
def test_numpy_models_match_mx_dequantize(bits, group_size, dtype):
    key = mx.random.key(100 * bits + group_size)
    w = (mx.random.normal((7, 1024), key=key) * 0.05 + 0.01).astype(dtype)
    W, S, B = mx.quantize(w, group_size=group_size, bits=bits)
    assert W.dtype == mx.uint32 and W.shape == (7, 1024 * bits // 32) and S.shape == (7, 1024 // group_size)
    S32, B32 = S.astype(mx.float32), B.astype(mx.float32)  # exact: bf16 -> float32
    ref = np.array(mx.dequantize(W, S32, B32, group_size=group_size, bits=bits))
    Wn, Sn, Bn = np.array(W), np.array(S32), np.array(B32)
    assert np.array_equal(quant_gemv.dequantize_reference(Wn, Sn, Bn, group_size, bits), ref)
    kern = quant_gemv.dequantize_as_kernel(Wn, Sn, Bn, group_size, bits)
    assert np.isfinite(kern).all()
    # MLX rounds q*s, then q*s + b; the kernel rounds q*s + b once: apart by at most one rounding of q*s (zero
    # where q*s is exact in float32, as for bf16 scales: 8-bit code x 8-bit mantissa)
    qs = quant_gemv.unpack_codes(Wn, bits).astype(np.float32) * np.repeat(Sn, group_size, axis=1)
    assert np.all(np.abs(kern - ref) <= np.spacing(np.abs(qs)) + np.spacing(np.abs(ref))), "kernel model off"
    if dtype == mx.bfloat16:
        assert np.array_equal(kern, ref)


def _bits(a: mx.array) -> tuple[np.ndarray, bool]:
    return (np.array(a.view(mx.uint16)), True) if a.dtype == mx.bfloat16 else (np.array(a), False)


def _host_run(x, W, S, B, b, M, N, bits, group_size, cfg):
    """The kernel's CUDA source built for the host (host_cuda), as quantized_gemv_cuda would launch it."""
    dtype = x.dtype
    bf16 = dtype == mx.bfloat16
    inputs = [("x", *_bits(x)), ("w", np.array(W), False), ("scales", *_bits(S)), ("biases", *_bits(B)),
              ("bias", *_bits(b if b is not None else B))]
    consts = dict(quant_gemv.kernel_constants(dtype, M, bits, group_size, b is not None, cfg))
    raw = host_cuda.run(quant_gemv._SOURCE, quant_gemv._HEADER, inputs, ("y", M * N, bf16), consts,
                        quant_gemv.launch_blocks(N, cfg), cfg["WARPS"] * 32)
    return (mx.array(raw).view(mx.bfloat16) if bf16 else mx.array(raw)).reshape(M, N)


@pytest.mark.skipif(not host_cuda.available(), reason="needs a C++20 host compiler (g++ or clang++) to build the "
                    "kernel source for the CPU")
@pytest.mark.parametrize("dtype,M,K,N,bits,group_size,bias,cfg", [
    (mx.bfloat16, 3, 384, 37, 4, 64, True, {}),                               # the default config
    (mx.bfloat16, 1, 352, 37, 4, 32, False, dict(KSPLIT=4)),                  # split-K, a unit's tail vectors
    (mx.bfloat16, 2, 640, 45, 8, 128, True, dict(R=2, U=1, S=4, KSPLIT=1, WARPS=4)),   # groups span 2 steps
    (mx.bfloat16, 4, 1024, 40, 8, 128, False, dict(R=1, U=1, S=3, KSPLIT=2, WARPS=4)),  # ... of 2 warps
    (mx.bfloat16, 9, 768, 50, 4, 128, True, dict(R=4, U=1, S=3, KSPLIT=1, WARPS=2)),
    (mx.bfloat16, 8, 512, 19, 8, 32, False, dict(R=1, U=4, S=3, KSPLIT=1, WARPS=2)),
    (mx.bfloat16, 13, 256, 33, 4, 128, True, dict(R=2, U=2, S=3, KSPLIT=2, WARPS=2)),   # two column tiles
    (mx.bfloat16, 16, 1024, 17, 4, 64, True, dict(R=1, U=1, S=4, KSPLIT=4, WARPS=8)),
    (mx.float32, 5, 256, 33, 4, 128, True, dict(KSPLIT=2)),                   # 15 columns: x's bf16 parts
    (mx.float32, 2, 640, 21, 8, 64, False, {}),
    (mx.float32, 16, 128, 18, 8, 32, True, dict(R=1, U=1, S=2, KSPLIT=1, WARPS=2)),     # 6 column tiles
    # the scales' prefetch depth: one step ahead (the old kernel), and 3 steps over 8 (and 4) steps a warp, so
    # the loop's last round of 3 is cut short
    (mx.bfloat16, 1, 1024, 37, 4, 64, True, dict(R=1, U=1, S=4, KSPLIT=1, WARPS=4, SD=1)),
    (mx.bfloat16, 1, 1024, 37, 4, 64, False, dict(R=1, U=1, S=4, KSPLIT=1, WARPS=4, SD=3)),
    (mx.bfloat16, 4, 1024, 29, 8, 32, True, dict(R=2, U=1, S=4, KSPLIT=2, WARPS=4, SD=3)),
    (mx.float32, 2, 1024, 21, 4, 64, False, dict(R=1, U=2, S=4, KSPLIT=1, WARPS=4, SD=2)),
    # x's loads of a unit issued first, or each at its use (the default is on for bf16 x, off for float32)
    (mx.bfloat16, 3, 352, 37, 4, 32, True, dict(KSPLIT=4, XPRE=0)),
    (mx.bfloat16, 13, 640, 45, 8, 128, True, dict(R=2, U=1, S=4, KSPLIT=1, WARPS=4, XPRE=1)),
    (mx.float32, 5, 384, 33, 4, 64, True, dict(KSPLIT=2, XPRE=1)),
    (mx.float32, 2, 640, 21, 8, 64, False, dict(R=1, U=2, S=4, KSPLIT=1, WARPS=4, XPRE=1)),
    # a whole step's x loaded a step ahead: K split (a warp's steps interleave), a unit's tail vectors, two units a
    # step, two column tiles, float32 x's parts, the last step of a warp with nothing ahead
    (mx.bfloat16, 1, 352, 37, 4, 32, True, dict(KSPLIT=4, XPRE=2)),
    (mx.bfloat16, 13, 640, 45, 8, 128, False, dict(R=2, U=2, S=3, KSPLIT=2, WARPS=2, XPRE=2)),
    (mx.bfloat16, 16, 1024, 17, 4, 64, True, dict(R=1, U=1, S=4, KSPLIT=8, WARPS=8, XPRE=2)),
    (mx.float32, 5, 384, 33, 4, 64, True, dict(R=1, U=2, S=4, KSPLIT=1, WARPS=4, XPRE=2)),
    (mx.float32, 2, 640, 21, 8, 64, False, dict(KSPLIT=2, XPRE=2, SD=2)),
])
def test_kernel_source_runs_right_on_the_host(dtype, M, K, N, bits, group_size, bias, cfg):
    x, W, S, B, b = _operands(M, K, N, bits, group_size, bias, dtype, seed=M * 31 + N)
    c = quant_gemv.default_config(M, N, K * bits // 128, bits)
    c.update(cfg)
    quant_gemv.check_config(c, M, bits, group_size, dtype)
    y = _host_run(x, W, S, B, b, M, N, bits, group_size, c)
    ref = _cpu_ref(x, W, S, B, b, group_size, bits)
    assert _rel(y, ref) <= (1e-2 if dtype == mx.bfloat16 else 1e-5)


@pytest.mark.skipif(not host_cuda.nvcc_available(), reason="needs CUDA's compiler (nvcc) to build the kernel for "
                    "the GPU; no GPU is needed")
@pytest.mark.parametrize("dtype", [mx.bfloat16, mx.float32])
def test_kernel_source_builds_for_hopper_without_spills(dtype):
    """Every configuration the lab sweeps (and the defaults) at rows 1, 8, 16, bits 4/8, compile for sm_90 (one
    nvcc run) and ptxas spills nothing."""
    bf16 = dtype == mx.bfloat16
    K = 4096
    zeros = lambda *shape: np.zeros(shape, np.uint16 if bf16 else np.float32)  # noqa: E731
    inputs = [("x", zeros(16, K), bf16), ("w", np.zeros((16, K // 8), np.uint32), False),
              ("scales", zeros(16, K // 64), bf16), ("biases", zeros(16, K // 64), bf16), ("bias", zeros(16), bf16)]
    variants = []
    for bits in quant_gemv.BITS:
        for M in (1, 8, 16):
            for cfg in quant_gemv.SWEEP_CONFIGS + [quant_gemv.default_config(M, 12288, K * bits // 128, bits)]:
                if quant_gemv.config_problem(cfg, M, bits, 64, dtype) is None:
                    variants.append(dict(quant_gemv.kernel_constants(dtype, M, bits, 64, True, cfg)))
    reports = host_cuda.device_build(quant_gemv._SOURCE, quant_gemv._HEADER, inputs, ("y", 1, bf16), variants)
    for v, report in zip(variants, reports):
        assert " 0 bytes spill stores" in report, (v, report)


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("group_size", [32, 64, 128])
def test_every_config_the_lab_or_the_default_may_pick_fits(bits, group_size):
    """Each sweep config and each default (the 7B decode matrices and small ones) is one the kernel takes at
    every row count with bf16 x (the lab's dtype), and the defaults with float32 x too."""
    for M in range(1, quant_gemv.MAX_ROWS + 1):
        for cfg in quant_gemv.SWEEP_CONFIGS:
            quant_gemv.check_config(cfg, M, bits, group_size, mx.bfloat16)
        for K, N in [(4096, 12288), (4096, 21888), (10944, 4096), (4096, 4096), (4096, 50304), (256, 33)]:
            for dtype in quant_gemv.DTYPES:
                cfg = quant_gemv.default_config(M, N, K * bits // 128, bits, group_size, dtype)
                quant_gemv.check_config(cfg, M, bits, group_size, dtype)
                if K != 256:  # the 7B decode matrices: their defaults are among the configs the GPU tests cover
                    assert cfg in quant_gemv.SWEEP_CONFIGS, (K, N, M, bits, cfg)
    for cfg in quant_gemv.MEASURED.values():
        assert cfg in quant_gemv.SWEEP_CONFIGS, f"{cfg}: MEASURED names a config the GPU tests do not cover"


def test_the_lab_tables_set_configs_and_routing():
    """quant_gemv_lab: each shape session 13 timed alone takes the faster of its configs (bf16 x, group 64), the
    other shapes session 8's chain table; matmul.quantized takes our GEMV at 2..16 rows and at one row for 4 bits,
    MLX's kernel at one row for 8 bits and beyond 16 rows."""
    from xlstm_mlx.kernels import quant_gemv_lab, quant_matmul
    assert [quant_gemv_lab.bucket(r) for r in (1, 2, 5, 8, 9, 16)] == [1, 4, 4, 4, 16, 16]
    assert quant_gemv_lab.parse_tag("R1U2S4K8W8") == dict(R=1, U=2, S=4, KSPLIT=8, WARPS=8)
    for (bits, bucket, N, K), times in quant_gemv_lab.ALONE_H200.items():
        best = quant_gemv_lab.parse_tag(min(times, key=times.get))
        assert best in quant_gemv.SWEEP_CONFIGS, f"{best}: ALONE_H200 names a config the GPU tests do not cover"
        for rows in {1: [1], 4: [2, 4, 8], 16: [9, 16]}[bucket]:
            assert quant_gemv.default_config(rows, N, K * bits // 128, bits) == best
    for (bits, bucket, N, K), (cfg, _, _) in quant_gemv_lab.H200.items():
        if (bits, bucket, N, K) not in quant_gemv_lab.ALONE_H200:
            for rows in {1: [1], 4: [2, 4, 8], 16: [9, 16]}[bucket]:
                assert quant_gemv.default_config(rows, N, K * bits // 128, bits) == cfg
    assert all(quant_matmul.gemv_faster(r, 1000, 512, b) for r in range(2, 17) for b in (4, 8))
    assert quant_matmul.gemv_faster(1, 12288, 4096, 4) and not quant_matmul.gemv_faster(1, 12288, 4096, 8)
    assert not any(quant_matmul.gemv_faster(r, 1000, 512, b) for r in (17, 64) for b in (4, 8))


def test_a_config_the_kernel_cannot_take_is_a_usage_error():
    from xlstm_mlx.errors import UsageError
    with pytest.raises(UsageError, match="KSPLIT"):
        quant_gemv.check_config(dict(R=1, U=2, S=4, KSPLIT=3, WARPS=4), 1, 4, 64)
    with pytest.raises(UsageError, match="shared memory"):
        quant_gemv.check_config(dict(R=4, U=4, S=8, KSPLIT=1, WARPS=8), 1, 4, 64)
    with pytest.raises(UsageError, match="spill"):
        quant_gemv.check_config(dict(R=4, U=1, S=3, KSPLIT=1, WARPS=2), 16, 4, 64, mx.float32)


def test_fast_form_falls_back_to_the_reference_without_cuda():
    if cuda_available():
        pytest.skip("CUDA present: the kernel runs (tested below)")
    x = mx.random.normal((3, 256)).astype(mx.bfloat16)
    W, S, B = mx.quantize(mx.random.normal((40, 256)).astype(mx.bfloat16), group_size=64, bits=4)
    bias = mx.random.normal((40,)).astype(mx.bfloat16)
    assert not quant_gemv.applies(x, W, S, 64, 4, "affine", biases=B, bias=bias)
    out = quant_gemv.quantized_gemv(x, W, S, B, bias, 64, 4)
    assert mx.array_equal(out, quant_gemv.quantized_matmul_ref(x, W, S, B, bias, 64, 4))
    assert "MLX" in quant_gemv.label()


def test_reference_is_what_quantized_linear_computes():
    import mlx.nn as nn
    lin = nn.Linear(256, 48)
    q = nn.QuantizedLinear.from_linear(lin, group_size=64, bits=4)
    x = mx.random.normal((2, 256))
    ref = quant_gemv.quantized_matmul_ref(x, q.weight, q.scales, q.biases, q.bias, 64, 4)
    assert mx.array_equal(q(x), ref)


def _operands(M, K, N, bits, group_size, bias, dtype, seed):
    ks = [mx.random.key(seed + i) for i in range(4)]
    x = mx.random.normal((M, K), key=ks[0]).astype(dtype)
    w = (mx.random.normal((N, K), key=ks[1]) * K**-0.5).astype(dtype)
    W, S, B = mx.quantize(w, group_size=group_size, bits=bits)
    b = mx.random.normal((N,), key=ks[2]).astype(dtype) if bias else None
    mx.eval(x, W, S, B)
    return x, W, S, B, b


def _cpu_ref(x, W, S, B, b, group_size, bits):
    with mx.stream(mx.cpu):
        f = lambda a: None if a is None else a.astype(mx.float32)  # noqa: E731
        ref = quant_gemv.quantized_matmul_ref(f(x), W, f(S), f(B), f(b), group_size, bits)
        mx.eval(ref)
    return ref


ROWS = [1, 2, 3, 4, 8, 13, 16]


def _check(M, K, N, bits, group_size, bias, dtype, seed, **cfg):
    """The kernel (default config, or cfg) against the float32 CPU reference: shape, dtype, tolerance."""
    x, W, S, B, b = _operands(M, K, N, bits, group_size, bias, dtype, seed=seed)
    assert quant_gemv.applies(x, W, S, group_size, bits, "affine", biases=B, bias=b)
    ref = _cpu_ref(x, W, S, B, b, group_size, bits)
    y = quant_gemv.quantized_gemv_cuda(x, W, S, B, b, group_size, bits, **cfg)
    assert y.shape == (M, N) and y.dtype == dtype
    assert _rel(y, ref) <= (1e-2 if dtype == mx.bfloat16 else 1e-5), (M, K, N, bits, group_size, bias, cfg)


@needs_cuda
@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("group_size", [32, 64, 128])
@pytest.mark.parametrize("M", ROWS)
@pytest.mark.parametrize("bias", [False, True])
def test_kernel_matches_quantized_linear(bits, group_size, M, bias):
    """The default config, odd N (a partial 16-row tile, a partial block)."""
    _check(M, 4096, 1001, bits, group_size, bias, mx.bfloat16, seed=M * 7919 + bits + group_size)


@needs_cuda
@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("group_size", [32, 64])  # 10944 is no multiple of 128
@pytest.mark.parametrize("M", [1, 4, 16])
def test_kernel_7b_ffn_down(bits, group_size, M):
    """K = 10944: the row's vectors end inside a pipeline step (342 4-bit vectors, steps of 8)."""
    _check(M, 10944, 4096, bits, group_size, True, mx.bfloat16, seed=M + bits + group_size)


@needs_cuda
@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("M", [1, 8, 16])
def test_kernel_7b_lm_head(bits, M):
    _check(M, 4096, 50304, bits, 64, False, mx.bfloat16, seed=M + bits)


@needs_cuda
@pytest.mark.parametrize("cfg", quant_gemv.SWEEP_CONFIGS, ids=lambda c: "R{R}U{U}S{S}K{KSPLIT}W{WARPS}".format(**c))
@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("M", ROWS)
def test_every_lab_config(cfg, bits, M):
    """Every config the lab sweeps (and MEASURED may name), at every row count, on odd N and K = 10944 / 4096."""
    _check(M, 10944 if M % 2 else 4096, 1001, bits, 64, True, mx.bfloat16, seed=17 + M, **cfg)


@needs_cuda
@pytest.mark.parametrize("cfg", quant_gemv.SWEEP_CONFIGS, ids=lambda c: "R{R}U{U}S{S}K{KSPLIT}W{WARPS}".format(**c))
@pytest.mark.parametrize("bits,group_size", [(4, 32), (4, 128), (8, 32), (8, 128)])
def test_every_lab_config_every_group(cfg, bits, group_size):
    """The other group sizes: a group of one vector (4-bit, 32) up to one spanning pipeline steps (8-bit, 128);
    13 rows: two column tiles, one partly padding."""
    _check(13, 4096, 1001, bits, group_size, True, mx.bfloat16, seed=41 + bits + group_size, **cfg)


@needs_cuda
@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("M", ROWS)
@pytest.mark.parametrize("group_size", [32, 64, 128])
def test_float32_kernel(bits, M, group_size):
    """float32 x, scales, biases: x in three exact bf16 parts (3M columns: up to 6 column tiles)."""
    _check(M, 4096, 1001, bits, group_size, M % 2 == 1, mx.float32, seed=23 + M)


@needs_cuda
@pytest.mark.parametrize("cfg", quant_gemv.SWEEP_CONFIGS, ids=lambda c: "R{R}U{U}S{S}K{KSPLIT}W{WARPS}".format(**c))
@pytest.mark.parametrize("M", [1, 16])
def test_float32_every_lab_config(cfg, M):
    problem = quant_gemv.config_problem(cfg, M, 4, 64, mx.float32)
    if problem:
        pytest.skip(f"check_config refuses it: {problem}")
    _check(M, 4096, 1001, 4, 64, True, mx.float32, seed=29 + M, **cfg)


@needs_cuda
@pytest.mark.parametrize("xpre", quant_gemv.XPRE_MODES)
@pytest.mark.parametrize("bits,M,dtype", [(4, 1, mx.bfloat16), (8, 16, mx.bfloat16), (4, 5, mx.float32)])
@pytest.mark.parametrize("cfg", [dict(R=1, U=1, S=4, KSPLIT=8, WARPS=8), dict(R=2, U=2, S=3, KSPLIT=2, WARPS=2)],
                         ids=["R1U1S4K8W8", "R2U2S3K2W2"])
def test_every_x_load_mode(xpre, bits, M, dtype, cfg):
    """x at its use, a unit's loads first, a whole step's a step ahead: the same sums (K = 10944: a row ends inside
    a step)."""
    if quant_gemv.config_problem(dict(cfg, XPRE=xpre), M, bits, 64, dtype):
        pytest.skip("check_config refuses it")
    _check(M, 10944, 1001, bits, 64, True, dtype, seed=53 + M + xpre, XPRE=xpre, **cfg)


@needs_cuda
def test_fast_form_routing():
    x, W, S, B, b = _operands(1, 512, 300, 4, 64, True, mx.bfloat16, seed=31)
    x3 = x.reshape(1, 1, 512)
    assert quant_gemv.quantized_gemv(x3, W, S, B, b, 64, 4).shape == (1, 1, 300)
    big = mx.random.normal((quant_gemv.MAX_ROWS + 1, 512)).astype(mx.bfloat16)
    assert not quant_gemv.applies(big, W, S, 64, 4, "affine", biases=B)
    assert not quant_gemv.applies(x.astype(mx.float32), W, S, 64, 4, "affine", biases=B)  # mixed dtypes
    assert not quant_gemv.applies(x, W, S, 64, 4, "mxfp4", biases=B)
    assert quant_gemv.quantized_gemv(big, W, S, B, b, 64, 4).shape == (quant_gemv.MAX_ROWS + 1, 300)


def test_scale_depth_rule_override_and_bad_env(monkeypatch):
    """SD: the config's own, else $XLSTM_MLX_QUANT_SCALE_DEPTH, else 1; XPRE: the config's, else
    $XLSTM_MLX_QUANT_XPRE, else on for bf16 x; a bad value of either variable is a UsageError that names it."""
    from xlstm_mlx.errors import UsageError
    monkeypatch.delenv(quant_gemv.DEPTH_ENV, raising=False)
    monkeypatch.delenv(quant_gemv.XPRE_ENV, raising=False)
    base = dict(R=1, U=1, S=4, KSPLIT=4, WARPS=8)
    assert quant_gemv.scale_depth(base, 4, 64) == 1
    assert quant_gemv.scale_depth(dict(base, SD=2), 4, 64) == 2
    assert quant_gemv.x_prefetch(base, 1, mx.bfloat16) == 1 and quant_gemv.x_prefetch(base, 1, mx.float32) == 0
    assert quant_gemv.x_prefetch(dict(base, XPRE=0), 1, mx.bfloat16) == 0
    assert quant_gemv.x_prefetch(dict(base, XPRE=2), 1, mx.float32) == 2
    monkeypatch.setenv(quant_gemv.XPRE_ENV, "0")
    assert quant_gemv.x_prefetch(base, 1, mx.bfloat16) == 0
    monkeypatch.setenv(quant_gemv.XPRE_ENV, "2")
    assert dict(quant_gemv.kernel_constants(mx.bfloat16, 1, 4, 64, False, base))["XPRE"] == 2
    assert quant_gemv.config_problem(dict(base, XPRE=3), 1, 4, 64) is not None
    monkeypatch.setenv(quant_gemv.XPRE_ENV, "yes")
    with pytest.raises(UsageError, match=quant_gemv.XPRE_ENV):
        quant_gemv.x_prefetch(base, 1, mx.bfloat16)
    monkeypatch.delenv(quant_gemv.XPRE_ENV)
    monkeypatch.setenv(quant_gemv.DEPTH_ENV, "1")
    assert quant_gemv.scale_depth(base, 4, 64) == 1
    assert dict(quant_gemv.kernel_constants(mx.bfloat16, 1, 4, 64, False, base))["SD"] == 1
    monkeypatch.setenv(quant_gemv.DEPTH_ENV, "7")
    with pytest.raises(UsageError, match=quant_gemv.DEPTH_ENV):
        quant_gemv.scale_depth(base, 4, 64)
    with pytest.raises(UsageError, match="SD"):
        quant_gemv.check_config(dict(base, SD=5), 1, 4, 64)
