"""The CUDA kernels (mx.fast.cuda_kernel) against their MLX-ops references, on fresh random inputs.

They run only on MLX's CUDA backend: XLSTM_MLX_TEST_DEVICE=gpu on a CUDA machine. CPU CI skips them (a CUDA
kernel cannot run there) and checks instead that the registry's fast form falls back to the reference.
References are evaluated on the CPU stream in float32, so the GPU's TF32 matmul mode does not blur them.
Tolerances: skinny GEMM, relative Frobenius error 1e-2 for bf16 (one bf16 rounding of each output: ~2e-3) and
1e-5 for float32 (float32 accumulation, different summation order); decode step, 1e-5 on C, n, m (float32,
same equations) and 1e-2 on h (rounded to bf16 like the reference's h); head norm + gate, the same roundings as
the reference in the same places, so 1e-2 for bf16 (an occasional one-ulp difference where MLX's mean/variance
or sigmoid order rounds the other way: 2^-8 relative on that element) and 1e-5 for float32.
"""

import importlib

import pytest
import mlx.core as mx

from xlstm_mlx import kernels
from xlstm_mlx.kernels import headnorm, mlstm_decode, skinny_gemm as skinny_matmul
from xlstm_mlx.kernels.cuda_common import cuda_available

from cuda_checks import needs_cuda, rel_error as _rel


def test_fast_forms_fall_back_to_their_references_without_cuda():
    if cuda_available():
        pytest.skip("CUDA present: the kernels run (tested below)")
    x, w = mx.random.normal((3, 64)), mx.random.normal((40, 64))
    assert not skinny_matmul.applies(x, w)
    assert mx.array_equal(kernels.get("matmul.skinny")(x, w), skinny_matmul.skinny_matmul_ref(x, w))
    assert "MLX" in kernels.describe(["matmul.skinny"])["matmul.skinny"]
    assert "MLX ops" in kernels.describe(["mlstm.decode_step"])["mlstm.decode_step"]
    assert "MLX ops" in kernels.describe(["mlstm.headnorm_gate"])["mlstm.headnorm_gate"]


@pytest.mark.parametrize("bias", [False, True])
def test_headnorm_gate_fast_form_matches_its_reference(bias):
    """Any backend: the registry's fast form (the CUDA kernel, or MLX ops with the CPU's polynomial sigmoid)
    against the MLX-ops reference in float32: the polynomial sigmoid differs by <= 3e-7 relative."""
    B, NH, DH = 3, 4, 256
    ks = [mx.random.key(60 + i) for i in range(4)]
    h = mx.random.normal((B, NH, DH), key=ks[0]) * 3.0 + 1.0
    qkvo = mx.random.normal((B, 100 + NH * DH + 7), key=ks[1]) * 4.0
    w = mx.random.normal((NH * DH,), key=ks[2]) + 1.0
    b = mx.random.normal((NH * DH,), key=ks[3]) if bias else None
    ref = headnorm.headnorm_gate_ref(h, qkvo, 100, w, b, 1e-6)
    got = kernels.get("mlstm.headnorm_gate")(h, qkvo, 100, w, b, 1e-6)
    assert got.shape == (B, NH * DH) and _rel(got, ref) <= 1e-5


@needs_cuda
@pytest.mark.parametrize("dtype,tol", [(mx.bfloat16, 1e-2), (mx.float32, 1e-5)])
@pytest.mark.parametrize("M", [1, 3, 8])
@pytest.mark.parametrize("K,N", [(256, 1000), (1024, 4096), (2048, 33)])
@pytest.mark.parametrize("bias", [False, True])
def test_skinny_matmul_matches_mlx_matmul(dtype, tol, M, K, N, bias):
    x = mx.random.normal((M, K), key=mx.random.key(M * 1000 + N)).astype(dtype)
    w = (mx.random.normal((N, K), key=mx.random.key(M * 1000 + N + 1)) * K**-0.5).astype(dtype)
    b = mx.random.normal((N,), key=mx.random.key(M * 1000 + N + 2)).astype(dtype) if bias else None
    assert skinny_matmul.applies(x, w)
    with mx.stream(mx.cpu):
        ref = skinny_matmul.skinny_matmul_ref(x.astype(mx.float32), w.astype(mx.float32),
                                              None if b is None else b.astype(mx.float32))
        mx.eval(ref)
    for cfg in ({}, dict(R=1, KSPLIT=1, UNROLL=2), dict(R=4, KSPLIT=4, UNROLL=8), dict(R=2, KSPLIT=2, UNROLL=4)):
        y = skinny_matmul.skinny_matmul_cuda(x, w, b, **cfg)
        assert y.shape == (M, N) and y.dtype == dtype
        assert _rel(y, ref) <= tol, cfg


@needs_cuda
def test_skinny_matmul_keeps_leading_dims_and_routes_big_batches_to_mlx():
    x, w = mx.random.normal((2, 1, 512)).astype(mx.bfloat16), mx.random.normal((300, 512)).astype(mx.bfloat16)
    assert kernels.get("matmul.skinny")(x, w).shape == (2, 1, 300)
    big = mx.random.normal((skinny_matmul.MAX_ROWS + 1, 512)).astype(mx.bfloat16)
    assert not skinny_matmul.applies(big, w)
    assert not skinny_matmul.applies(x.astype(mx.float32), w)  # mixed dtypes: MLX's promotion rules decide


@needs_cuda
@pytest.mark.parametrize("B", [1, 5])
@pytest.mark.parametrize("cap", [15.0, None])
@pytest.mark.parametrize("dtype", [mx.bfloat16, mx.float32])
@pytest.mark.parametrize("tj", [32, 64, 128, None])
@pytest.mark.parametrize("dqk", [32, 300])  # 300: rows per warp not a multiple of the 32-row load batch
def test_decode_step_kernel_matches_the_reference(B, cap, dtype, tj, dqk):
    NH, dv = 4, 128
    qk, v = NH * dqk, NH * dv
    ks = [mx.random.key(100 * B + 10 * (cap is None) + i) for i in range(5)]
    qkvo = mx.random.normal((B, 2 * qk + 2 * v), key=ks[0]).astype(dtype)
    gates = mx.random.normal((B, 2 * NH), key=ks[1]) * 6.0
    state = (mx.random.normal((B, NH, dqk, dv), key=ks[2]), mx.random.normal((B, NH, dqk), key=ks[3]),
             mx.random.normal((B, NH, 1), key=ks[4]) * 3.0)
    assert mlstm_decode.applies(qkvo, gates, state, NH, qk, v)
    with mx.stream(mx.cpu):
        h_ref, s_ref = mlstm_decode.mlstm_decode_step_ref(qkvo, gates, state, NH, qk, v, cap, 1e-6)
        mx.eval(h_ref, *s_ref)
    h, s = mlstm_decode.mlstm_decode_step_cuda(qkvo, gates, state, NH, qk, v, cap, 1e-6, tj=tj)
    assert h.dtype == dtype and h.shape == (B, NH, dv)
    assert _rel(h, h_ref) <= (1e-2 if dtype == mx.bfloat16 else 1e-5)
    for a, b in zip(s, s_ref):
        assert a.shape == b.shape and _rel(a, b) <= 1e-5


@needs_cuda
@pytest.mark.parametrize("B", [1, 16, 64])
@pytest.mark.parametrize("dtype,tol", [(mx.bfloat16, 1e-2), (mx.float32, 1e-5)])
@pytest.mark.parametrize("bias", [False, True])
def test_headnorm_gate_kernel_matches_the_reference(B, dtype, tol, bias):
    NH, DH, off = 8, 512, 3 * 2048
    ks = [mx.random.key(7 * B + i) for i in range(4)]
    h = (mx.random.normal((B, NH, DH), key=ks[0]) * 2.0 + 0.5).astype(dtype)
    qkvo = (mx.random.normal((B, off + NH * DH), key=ks[1]) * 3.0).astype(dtype)
    w = (mx.random.normal((NH * DH,), key=ks[2]) * 0.3 + 1.0).astype(dtype)
    b = mx.random.normal((NH * DH,), key=ks[3]).astype(dtype) if bias else None
    assert headnorm.applies(h, qkvo, w, b, off)
    with mx.stream(mx.cpu):
        ref = headnorm.headnorm_gate_ref(h, qkvo, off, w, b, 1e-6)
        mx.eval(ref)
    out = headnorm.headnorm_gate_cuda(h, qkvo, off, w, b, 1e-6)
    assert out.dtype == dtype and out.shape == (B, NH * DH)
    assert _rel(out, ref) <= tol


@needs_cuda
def test_whole_model_decode_with_the_kernels_matches_the_references():
    from xlstm_mlx.checkpoints.random import randomize, shape_args
    from xlstm_mlx.models.xlstm7b.model import Model
    from xlstm_mlx.profiles import load_profile

    model = randomize(Model(shape_args("tiny", weight_mode="fused", num_heads=1, v_dim=64, qk_dim=32),
                            load_profile("parity")), 3)
    prompt = mx.random.randint(3, 259, (2, 9), key=mx.random.key(3)).astype(mx.int32)
    runs = []
    for forced in (False, True):
        with kernels.use_reference(forced):
            model.__dict__.pop("_xlstm_compiled_forward", None)
            cache = model.make_cache(2)
            model(prompt, cache=cache)
            tok, outs = prompt[:, -1:], []
            for _ in range(4):
                outs.append(model(tok, cache=cache))
                tok = mx.argmax(outs[-1][:, -1], axis=-1, keepdims=True).astype(mx.int32)
            runs.append(mx.concatenate(outs, axis=1))
    assert _rel(runs[0], runs[1]) <= 1e-3  # float32 weights; TF32 matmuls on the reference side


def _quantized_operands(M, K, N, bits, group_size, dtype, seed):
    ks = [mx.random.key(seed + i) for i in range(3)]
    x = mx.random.normal((M, K), key=ks[0]).astype(dtype)
    w, scales, biases = mx.quantize((mx.random.normal((N, K), key=ks[1]) * K**-0.5).astype(dtype),
                                    group_size=group_size, bits=bits)
    bias = mx.random.normal((N,), key=ks[2]).astype(dtype)
    return x, w, scales, biases, bias


def test_quantized_matmul_routes_and_falls_back():
    """The row threshold decides on CUDA only; elsewhere the fast form is nn.QuantizedLinear's computation."""
    from xlstm_mlx.kernels import quant_matmul

    x, w, s, b, bias = _quantized_operands(quant_matmul.DEQUANT_MIN_ROWS + 2, 128, 96, 4, 64, mx.float32, 5)
    fast = kernels.get("matmul.quantized")(x, w, s, b, bias, 64, 4, "affine")
    ref = quant_matmul.quantized_matmul_ref(x, w, s, b, bias, 64, 4, "affine")
    assert quant_matmul.uses_dequantized(x) == cuda_available()
    if not cuda_available():
        assert mx.array_equal(fast, ref)
    # the dequantized path is the same function on any backend (float32: the same products, another order)
    deq = quant_matmul.dequantized_matmul(x, w, s, b, bias, 64, 4, "affine")
    assert _rel(deq, ref) <= 1e-5


@needs_cuda
@pytest.mark.parametrize("M", [1, 8, 13, 16, 17, 64, 300])  # 13, 16: the GEMV; 17: past it
@pytest.mark.parametrize("bits,group_size", [(4, 64), (8, 64), (4, 128)])
def test_quantized_matmul_paths_match_float32(M, bits, group_size):
    """Both CUDA paths against nn.QuantizedLinear's computation in float32 on the CPU: bf16 output rounding and
    (dequantized path) the bf16 rounding of each weight: relative Frobenius error 1e-2."""
    from xlstm_mlx.kernels import quant_matmul

    x, w, s, b, bias = _quantized_operands(M, 4096, 1000, bits, group_size, mx.bfloat16, 11 * M + bits)
    with mx.stream(mx.cpu):
        ref = quant_matmul.quantized_matmul_ref(x.astype(mx.float32), w, s.astype(mx.float32),
                                                b.astype(mx.float32), bias.astype(mx.float32), group_size, bits)
        mx.eval(ref)
    for fn in (quant_matmul.quantized_matmul, quant_matmul.dequantized_matmul, quant_matmul.quantized_matmul_ref):
        y = fn(x, w, s, b, bias, group_size, bits)
        assert y.shape == (M, 1000) and _rel(y, ref) <= 1e-2, fn.__name__


@needs_cuda
@pytest.mark.parametrize("rows", [1, 16, 2048])
@pytest.mark.parametrize("D", [4096, 1000, 20000])  # 20000: beyond the in-register row (32 x 512 elements)
@pytest.mark.parametrize("h_dtype", [None, mx.bfloat16, mx.float32])
@pytest.mark.parametrize("bias", [False, True])
def test_add_rms_norm_kernel_matches_the_reference(rows, D, h_dtype, bias):
    """r = x + h: the same float32 sum, exact. y against float64 (numpy): the kernel's sums (per thread, then a
    tree) are accurate to ~1e-7 relative; MLX's CPU rms_norm, the MLX-ops reference, is one running float32 sum,
    off by ~5e-6 at D = 20,000 (it failed this test's former 1e-6 against it), so it is not the judge here. y_c in
    bf16: the rounding of y, 1e-2 (statistical: a last-bit float32 difference can flip a bf16 rounding)."""
    import numpy as np

    arn = importlib.import_module("xlstm_mlx.kernels.add_rms_norm")  # the package re-exports the function

    ks = [mx.random.key(rows + D + i) for i in range(4)]
    x = mx.random.normal((rows, 1, D), key=ks[0]) * 3.0
    h = None if h_dtype is None else mx.random.normal((rows, 1, D), key=ks[1]).astype(h_dtype)
    w = mx.random.normal((D,), key=ks[2]) * 0.2 + 1.0
    b = mx.random.normal((D,), key=ks[3]) if bias else None
    assert arn.applies(x, h, w, b)
    with mx.stream(mx.cpu):
        r_ref = x if h is None else x + h
        mx.eval(r_ref)
    r64 = np.array(r_ref).astype(np.float64)
    y64 = r64 / np.sqrt((r64 ** 2).mean(-1, keepdims=True) + 1e-6) * np.array(w).astype(np.float64)
    if b is not None:
        y64 = y64 + np.array(b).astype(np.float64)
    got = arn.add_rms_norm_cuda(x, h, w, b, 1e-6, mx.bfloat16)
    assert [g.dtype for g in got] == [mx.float32, mx.float32, mx.bfloat16]
    assert mx.array_equal(got[0], r_ref)
    y_err = float(np.linalg.norm(np.array(got[1]).astype(np.float64) - y64) / np.linalg.norm(y64))
    yc_err = float(np.linalg.norm(np.array(got[2].astype(mx.float32)).astype(np.float64) - y64) / np.linalg.norm(y64))
    assert y_err <= 1e-6 and yc_err <= 1e-2, (y_err, yc_err)
    r2, y2, c2 = arn.add_rms_norm_cuda(x, h, w, b, 1e-6, mx.bfloat16, want_y=False)  # y not written: the rest equal
    assert y2 is None and mx.array_equal(r2, got[0]) and mx.array_equal(c2, got[2])


def test_add_rms_norm_fast_form_without_cuda_is_the_reference_ops_with_norm_rms():
    """Without CUDA: the reference's ops, its RMSNorm the registry's norm.rms (BLAS sums on the CPU,
    kernels/norms.py), so equal to the reference up to the float32 rounding of the sums."""
    if cuda_available():
        pytest.skip("CUDA present: the kernel runs (tested above)")
    from xlstm_mlx.kernels import norms
    from xlstm_mlx.kernels.add_rms_norm import add_rms_norm_ref
    x, h, w = mx.random.normal((2, 3, 64)), mx.random.normal((2, 3, 64)).astype(mx.bfloat16), mx.ones((64,))
    fast = kernels.get("norm.add_rms")(x, h, w, None, 1e-5, mx.bfloat16)
    for a, b in zip(fast, add_rms_norm_ref(x, h, w, None, 1e-5, mx.bfloat16, rms_norm=norms.rms_norm)):
        assert mx.array_equal(a, b)
    r, y, _ = fast
    r_ref, y_ref, _ = kernels.KERNELS["norm.add_rms"].reference(x, h, w, None, 1e-5, mx.bfloat16)
    assert mx.array_equal(r, r_ref) and float(mx.abs(y - y_ref).max()) < 2e-6


@needs_cuda
@pytest.mark.parametrize("shape", [(1, 21888), (16, 1, 21888), (2, 2048, 21888), (3, 5, 144)])  # halves: whole 16-byte vectors
@pytest.mark.parametrize("dtype", [mx.bfloat16, mx.float32])
def test_swiglu_kernel_matches_the_reference(shape, dtype):
    """The kernel rounds where MLX's ops round (sigmoid, gate product, z product), so it differs from the
    reference only where its expf and MLX's sigmoid differ in the last float32 bit and that flips a rounding:
    bf16 1e-3 relative (statistical: a few flipped roundings of 2^-9 among millions), float32 1e-6."""
    sw = importlib.import_module("xlstm_mlx.kernels.swiglu")  # the package re-exports the function by that name

    d = shape[-1] // 2
    gz = (mx.random.normal(shape, key=mx.random.key(shape[-1] + len(shape))) * 3.0).astype(dtype)
    assert sw.applies(gz)
    with mx.stream(mx.cpu):
        ref = sw.swiglu_ref(gz)
        mx.eval(ref)
    out = sw.swiglu_cuda(gz)
    assert out.dtype == dtype and out.shape == (*shape[:-1], d)
    assert _rel(out, ref) <= (1e-3 if dtype == mx.bfloat16 else 1e-6)


@needs_cuda
@pytest.mark.parametrize("shape,width", [((1, 21888), 11008), ((16, 21888), 11008), ((3, 5, 144), 80)])
def test_swiglu_kernel_padded_width(shape, width):
    """width > d (the padded FFN down's input): the product as above, zeros past d."""
    sw = importlib.import_module("xlstm_mlx.kernels.swiglu")
    d = shape[-1] // 2
    gz = (mx.random.normal(shape, key=mx.random.key(width)) * 3.0).astype(mx.bfloat16)
    assert sw.applies(gz, width)  # halves and width whole 16-byte vectors (the kernel has no fallback)
    with mx.stream(mx.cpu):
        ref = sw.swiglu_ref(gz, width)
        mx.eval(ref)
    out = sw.swiglu_cuda(gz, width)
    assert out.shape == (*shape[:-1], width) and not bool(mx.any(out[..., d:]).item())
    assert _rel(out, ref) <= 1e-3


def test_swiglu_fast_form_is_silu_times_z_and_names_its_path():
    """Any backend: the registry's ffn.swiglu against math.silu's reference of the gate half times the up half.
    Float32: the CPU's fused silu polynomial differs by <= 3e-7 relative (kernels/fastmath.py)."""
    gz = mx.random.normal((2, 7, 96), key=mx.random.key(3)) * 4.0
    ref = kernels.KERNELS["ffn.swiglu"].reference(gz)
    assert mx.allclose(ref, gz[..., :48] * mx.sigmoid(gz[..., :48]) * gz[..., 48:], rtol=1e-6, atol=1e-7)
    assert _rel(kernels.get("ffn.swiglu")(gz), ref) <= 1e-6
    want = "CUDA" if cuda_available() else "MLX ops"
    assert want in kernels.describe(["ffn.swiglu"])["ffn.swiglu"]


@needs_cuda
@pytest.mark.parametrize("dtype,tol", [(mx.bfloat16, 1e-2), (mx.float32, 1e-5)])
def test_headnorm_gate_kernel_over_a_prefill_s_rows(dtype, tol):
    """Prefill passes every (token, head) row at once: B*T = 2 x 2048 rows of the 7B head shape."""
    NH, DH, off = 8, 512, 3 * 2048
    ks = [mx.random.key(90 + i) for i in range(3)]
    h = (mx.random.normal((4096, NH, DH), key=ks[0]) * 2.0 + 0.5).astype(dtype)
    qkvo = (mx.random.normal((4096, off + NH * DH), key=ks[1]) * 3.0).astype(dtype)
    w = (mx.random.normal((NH * DH,), key=ks[2]) * 0.3 + 1.0).astype(dtype)
    with mx.stream(mx.cpu):
        ref = headnorm.headnorm_gate_ref(h, qkvo, off, w, None, 1e-6)
        mx.eval(ref)
    assert _rel(headnorm.headnorm_gate_cuda(h, qkvo, off, w, None, 1e-6), ref) <= tol


@needs_cuda
@pytest.mark.parametrize("B", [1, 5])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("hidden", [4096, 1000])
def test_decode_step_kernel_projects_its_own_gates(B, bias, hidden):
    """The gate projection computed inside the kernel (decode.GateProjection) against the reference, which runs it
    as the ifgate_preact layer does (MLX's float32 matmul): float32 sums in another order, 1e-5 on the state."""
    NH, dqk, dv = 8, 64, 128
    qk, v = NH * dqk, NH * dv
    ks = [mx.random.key(300 + 10 * B + hidden + i) for i in range(7)]
    qkvo = mx.random.normal((B, 2 * qk + 2 * v), key=ks[0]).astype(mx.bfloat16)
    proj = mlstm_decode.GateProjection(mx.random.normal((B, hidden), key=ks[1]),
                                       mx.random.normal((2 * NH, hidden), key=ks[2]) * hidden**-0.5 * 3.0,
                                       mx.random.normal((2 * NH,), key=ks[3]) if bias else None)
    state = (mx.random.normal((B, NH, dqk, dv), key=ks[4]), mx.random.normal((B, NH, dqk), key=ks[5]),
             mx.random.normal((B, NH, 1), key=ks[6]) * 3.0)
    assert mlstm_decode.applies(qkvo, proj, state, NH, qk, v)
    with mx.stream(mx.cpu):
        h_ref, s_ref = mlstm_decode.mlstm_decode_step_ref(qkvo, proj, state, NH, qk, v, 15.0, 1e-6)
        mx.eval(h_ref, *s_ref)
    h, s = mlstm_decode.mlstm_decode_step_cuda(qkvo, proj, state, NH, qk, v, 15.0, 1e-6)
    assert _rel(h, h_ref) <= 1e-2
    for a, b in zip(s, s_ref):
        assert _rel(a, b) <= 1e-5


@needs_cuda
@pytest.mark.parametrize("B", [1, 16])
@pytest.mark.parametrize("bias", [False, True])
def test_decode_step_kernel_with_fused_head_norm(B, bias):
    """norm=HeadNormGate at the 7B head shape (Dqk 256, Dv 512, 8 heads): bit-identical to the step followed by the
    headnorm kernel (the same sums and roundings), within the two kernels' own tolerances of the MLX-ops reference
    (bf16 2e-2), three calls in a row (each needs the tile counter the previous one left at zero, checked last)."""
    NH, dqk, dv, H = 8, 256, 512, 4096
    qk, v = NH * dqk, NH * dv
    ks = [mx.random.key(500 + B + i) for i in range(9)]
    qkvo = mx.random.normal((B, 2 * qk + 2 * v), key=ks[0]).astype(mx.bfloat16)
    proj = mlstm_decode.GateProjection(mx.random.normal((B, H), key=ks[1]),
                                       mx.random.normal((2 * NH, H), key=ks[2]) * H**-0.5 * 3.0, None)
    state = (mx.random.normal((B, NH, dqk, dv), key=ks[4]), mx.random.normal((B, NH, dqk), key=ks[5]),
             mx.random.normal((B, NH, 1), key=ks[6]))
    w = (mx.random.normal((v,), key=ks[7]) * 0.2 + 1.0).astype(mx.bfloat16)
    b = (mx.random.normal((v,), key=ks[8]) * 0.1).astype(mx.bfloat16) if bias else None
    layer = type("Layer", (), {})()
    norm = mlstm_decode.HeadNormGate(w, b, 1e-5, 2 * qk + v, mlstm_decode.norm_counter(layer, B * NH))
    with mx.stream(mx.cpu):
        ref, _ = mlstm_decode.mlstm_decode_step_ref(qkvo, proj, state, NH, qk, v, 15.0, 1e-6, norm=norm)
        mx.eval(ref)
    h, _ = mlstm_decode.mlstm_decode_step_cuda(qkvo, proj, state, NH, qk, v, 15.0, 1e-6)
    pair = headnorm.headnorm_gate_cuda(h, qkvo, norm.o_offset, w, b, 1e-5)
    for _ in range(3):
        out, _ = mlstm_decode.mlstm_decode_step_cuda(qkvo, proj, state, NH, qk, v, 15.0, 1e-6, norm=norm)
        mx.eval(out)
        assert mx.array_equal(out, pair)
    assert _rel(out, ref) <= 2e-2
    assert not bool(mx.any(norm.counter).item())


def test_decode_step_reference_takes_a_gate_projection():
    """Any backend: the reference with a GateProjection is the reference with the projection's output."""
    NH, dqk, dv, H = 2, 8, 16, 24
    qkvo = mx.random.normal((3, 2 * NH * dqk + 2 * NH * dv))
    proj = mlstm_decode.GateProjection(mx.random.normal((3, H)), mx.random.normal((2 * NH, H)),
                                       mx.random.normal((2 * NH,)))
    state = (mx.zeros((3, NH, dqk, dv)), mx.zeros((3, NH, dqk)), mx.zeros((3, NH, 1)))
    gates = mx.addmm(proj.bias, proj.x, proj.weight.T)
    a = mlstm_decode.mlstm_decode_step_ref(qkvo, proj, state, NH, NH * dqk, NH * dv, 15.0, 1e-6)
    b = mlstm_decode.mlstm_decode_step_ref(qkvo, gates, state, NH, NH * dqk, NH * dv, 15.0, 1e-6)
    assert mx.array_equal(a[0], b[0]) and all(mx.array_equal(x, y) for x, y in zip(a[1], b[1]))


@needs_cuda
@pytest.mark.parametrize("dtype", [mx.bfloat16, mx.float32])
@pytest.mark.parametrize("ids_shape", [(1, 1), (16, 1), (3, 700)])
def test_embedding_lookup_kernel_copies_the_rows(dtype, ids_shape):
    """A copy: bit-identical to the module's gather, any id shape."""
    emb = importlib.import_module("xlstm_mlx.kernels.embedding")
    import mlx.nn as nn
    table = nn.Embedding(5003, 264)
    table.weight = table.weight.astype(dtype)
    ids = mx.random.randint(0, 5003, ids_shape, key=mx.random.key(ids_shape[0])).astype(mx.int32)
    assert emb.applies(table, ids)
    out = emb.embedding_lookup_cuda(table, ids)
    assert out.shape == (*ids_shape, 264) and mx.array_equal(out, table(ids))


def test_embedding_lookup_fast_form_is_the_module_call():
    import mlx.nn as nn
    table = nn.Embedding(50, 16)
    ids = mx.array([[3, 7, 49]])
    assert mx.array_equal(kernels.get("embed.lookup")(table, ids), table(ids))
    q = nn.QuantizedEmbedding(64, 64)  # never the CUDA copy: its rows need dequantizing
    assert not importlib.import_module("xlstm_mlx.kernels.embedding").applies(q, ids)
