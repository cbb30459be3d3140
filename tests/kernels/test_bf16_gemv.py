"""The bf16 GEMV (kernels/bf16_gemv.py) against the exact (float64) product of the same bf16 operands, and its routing.

On the CPU (CI): the kernel's CUDA source itself, built for the host with stand-ins for the CUDA built-ins and the
PTX it uses (tests/kernels/host_cuda.py: one std::thread per CUDA thread, real barriers, cp.async as a copy, mma.sync
by its documented fragment layouts) and launched by bf16_gemv_cuda's own wrapper (its grid, template constants,
leading dimensions, bias stand-in): rows 1, 3, 8, 9, 16 (one and two column tiles), odd N (a partial 16-row tile
and block), K that ends inside a unit, a single vector, K parts with no step, bias on and off, several configs; that
every config the lab sweeps or default_config picks fits the kernel's limits; that it compiles for sm_90 without
spills where nvcc is installed; the routing of "matmul.skinny" (an empty measured table: MLX's matmul; a table
entry with the kernel faster: the kernel, through the host build; XLSTM_MLX_BF16_GEMV=0: MLX's matmul); and the
fallback without CUDA.

On MLX's CUDA backend (XLSTM_MLX_TEST_DEVICE=gpu on a CUDA machine; skipped elsewhere with the reason): every
config the lab sweeps at rows 1, 4, 16 on the four 7B decode matrices (4096->12288, 4096->21888, 10944->4096,
4096->4096) and an odd shape, the default config at every row count 1..16, with and without bias.

The reference: float32 x @ w.T (+ bias) of the same bf16 operands, evaluated on the CPU stream (no bf16 rounding
of intermediates, no TF32). Tolerance, two checks (`_close`):
  - relative Frobenius error <= 4e-3. The kernel's sum is float32 (exact bf16 products, ~1e-6 relative), and it
    rounds each output once to bf16: a uniform error of at most half a bf16 ulp (2^-8 of the binade's base), i.e.
    ~1.5e-3 relative rms for random data (1.6e-3 to 1.9e-3 seen); 4e-3 is ~2.5x that and far below what a wrong
    k order, tile, tail row or lost K part gives (O(1e-1) and more);
  - every element within one bf16 ulp of the reference (plus 1e-5 of the reference's rms for outputs near zero,
    where the float32 sums' own rounding is absolute): a single rounding of a float32 sum that is itself ~1e-6
    off can never be further. This catches a single wrong element that a norm would average away.
NaN or inf never passes (rel_error asserts finite).
"""

import functools

import numpy as np
import pytest
import mlx.core as mx

import host_cuda
from xlstm_mlx import kernels
from xlstm_mlx.errors import UsageError
from xlstm_mlx.kernels import bf16_gemv, skinny_gemm
from xlstm_mlx.kernels.cuda_common import cuda_available

from cuda_checks import needs_cuda

REL_TOL = 4e-3
needs_host = pytest.mark.skipif(not host_cuda.available(), reason="needs a C++20 host compiler (g++ or clang++) to "
                                "build the kernel source for the CPU")
SHAPES_7B = [(4096, 12288), (4096, 21888), (10944, 4096), (4096, 4096)]  # (K, N) of the decode matrices


def _operands(M, K, N, bias, seed, lead=None):
    ks = [mx.random.key(seed + i) for i in range(3)]
    x = mx.random.normal(lead or (M, K), key=ks[0]).astype(mx.bfloat16)
    w = (mx.random.normal((N, K), key=ks[1]) * K**-0.5).astype(mx.bfloat16)
    b = mx.random.normal((N,), key=ks[2]).astype(mx.bfloat16) if bias else None
    mx.eval(x, w, b)
    return x, w, b


def _ref(x, w, b):
    """x @ w.T (+ b) of the bf16 operands in float64 (numpy): the exact product, so every difference is the
    kernel's own (a float32 reference carries its own summation error, which an H200 run mixed into one
    element's 1.07 ulp)."""
    f64 = lambda a: np.array(a.astype(mx.float32)).astype(np.float64)  # noqa: E731 (bf16 -> float32 is exact)
    ref = f64(x) @ f64(w).T
    return ref if b is None else ref + f64(b)


def _close(y, ref, what=""):
    """y (bf16) against the float64 reference: relative Frobenius error under REL_TOL, and every element within
    one bf16 ulp of the exact value plus 1e-5 of the rms (the float32 accumulation's share, far below an ulp)."""
    assert y.dtype == mx.bfloat16 and y.shape == ref.shape, (what, y.dtype, y.shape, ref.shape)
    yn = np.array(y.astype(mx.float32)).astype(np.float64)
    rn = np.asarray(ref, dtype=np.float64)
    assert np.all(np.isfinite(yn)), (what, "non-finite output")
    err = np.linalg.norm(yn - rn) / max(np.linalg.norm(rn), 1e-30)
    assert err <= REL_TOL, (what, err)
    ulp = np.exp2(np.floor(np.log2(np.maximum(np.abs(rn), 1e-30))) - 7)  # bf16: 8 significant bits
    slack = ulp + 1e-5 * np.sqrt(np.mean(rn**2))
    worst = np.max(np.abs(yn - rn) / slack)
    assert worst <= 1.0, (what, "an element more than one bf16 ulp off", worst)


def _host_kernel(name, input_names, output_names, source, header="", **_):
    """mx.fast.cuda_kernel's call, run by the host build (host_cuda.run) of the same source."""
    def call(inputs, template, grid, threadgroup, output_shapes, output_dtypes, **__):
        arrs = [(n, np.array(a.view(mx.uint16)) if a.dtype == mx.bfloat16 else np.array(a), a.dtype == mx.bfloat16)
                for n, a in zip(input_names, inputs)]
        (shape,), (dtype,) = output_shapes, output_dtypes
        assert dtype == mx.bfloat16 and grid[0] % threadgroup[0] == 0 and threadgroup[0] <= 1024
        raw = host_cuda.run(source, header, arrs, (output_names[0], int(np.prod(shape)), True), dict(template),
                            grid[0] // threadgroup[0], threadgroup[0])
        return [mx.array(raw).view(mx.bfloat16).reshape(shape)]
    return call


@pytest.fixture
def host_kernel(monkeypatch):
    """bf16_gemv (and skinny_gemm's routing) as on CUDA, the kernel run by its host build."""
    fake = _host_kernel("xlstm_bf16_gemv_mma", ["x", "w", "bias"], ["y"], bf16_gemv._SOURCE, bf16_gemv._HEADER)
    monkeypatch.setattr(bf16_gemv, "_kernel", lambda: fake)
    monkeypatch.setattr(bf16_gemv, "cuda_available", lambda: True)
    monkeypatch.setattr(skinny_gemm, "cuda_available", lambda: True)


CFG = {f"R{c['R']}U{c['U']}S{c['S']}K{c['KSPLIT']}W{c['WARPS']}": c for c in bf16_gemv.SWEEP_CONFIGS}


@needs_host
@pytest.mark.parametrize("M,K,N,bias,cfg", [
    (1, 72, 37, True, None),                   # the default config; K ends 1 vector into a unit
    (3, 200, 37, True, CFG["R1U2S4K1W4"]),     # 25 vectors: a partial unit, a partial tile
    (8, 1024, 45, False, CFG["R1U1S6K4W8"]),   # 8 rows: one full column tile; a deep ring, split K
    (9, 328, 33, True, CFG["R2U1S4K2W4"]),     # two column tiles, the second 1/8 used
    (16, 256, 70, True, CFG["R4U1S3K2W4"]),    # four tiles a warp, 70 rows of 64 in the last tile
    (16, 64, 17, False, CFG["R1U2S4K4W4"]),    # one step a row: three of the four K parts have none
    (1, 8, 20, True, CFG["R2U1S4K1W4"]),       # a single vector
    (5, 1000, 100, False, CFG["R2U1S4K4W4"]),  # 125 vectors over 4 K parts
    (16, 520, 129, True, None),                # default at 16 rows; one row past 8 blocks of 16
    (2, 4096, 19, True, CFG["R1U2S4K2W4"]),    # a 7B K
    # x loaded a step ahead: a partial unit, two units a step, two column tiles, K parts with nothing ahead
    (3, 200, 37, True, dict(CFG["R1U2S4K1W4"], XAHEAD=1)),
    (9, 328, 33, True, dict(CFG["R2U1S4K2W4"], XAHEAD=1)),
    (16, 64, 17, False, dict(CFG["R1U2S4K4W4"], XAHEAD=1)),
    (5, 1000, 100, False, dict(CFG["R1U1S4K8W8"], XAHEAD=1)),
])
def test_kernel_source_runs_right_on_the_host(host_kernel, M, K, N, bias, cfg):
    x, w, b = _operands(M, K, N, bias, seed=M * 31 + N)
    c = cfg or bf16_gemv.default_config(M, N, K)
    bf16_gemv.check_config(c, M)
    assert bf16_gemv.applies(x, w, b)
    _close(bf16_gemv.bf16_gemv_cuda(x, w, b, **c), _ref(x, w, b), (M, K, N, bias, c))


@needs_host
def test_wrapper_keeps_leading_dims_on_the_host(host_kernel):
    x, w, b = _operands(0, 96, 24, True, seed=5, lead=(2, 3, 96))
    y = bf16_gemv.bf16_gemv_cuda(x, w, b)
    assert y.shape == (2, 3, 24)
    _close(y, _ref(x, w, b))


@pytest.mark.skipif(not host_cuda.nvcc_available(), reason="needs CUDA's compiler (nvcc) to build the kernel for "
                    "the GPU; no GPU is needed")
def test_kernel_source_builds_for_hopper_without_spills():
    """Every configuration the lab sweeps (and the defaults of the 7B matrices) at rows 1 and 16 (one and two
    column tiles), with bias, compile for sm_90 (one nvcc run) and ptxas spills nothing."""
    K = 4096
    u16 = lambda *shape: np.zeros(shape, np.uint16)  # noqa: E731
    inputs = [("x", u16(16, K), True), ("w", u16(16, K), True), ("bias", u16(16), True)]
    variants = []
    for M in (1, 16):
        cfgs = bf16_gemv.SWEEP_CONFIGS + [bf16_gemv.default_config(M, N, K_) for K_, N in SHAPES_7B]
        for cfg in cfgs:
            v = dict(bf16_gemv.kernel_constants(M, True, cfg))
            if v not in variants:
                variants.append(v)
    reports = host_cuda.device_build(bf16_gemv._SOURCE, bf16_gemv._HEADER, inputs, ("y", 1, True), variants)
    for v, report in zip(variants, reports):
        assert " 0 bytes spill stores" in report, (v, report)


def test_every_config_the_lab_or_the_default_may_pick_fits():
    """Each sweep config fits at every row count; the defaults of the 7B matrices (and the lm_head) are among the
    sweep configs (so the GPU tests cover them), a small shape's default fits; MEASURED names only sweep configs."""
    for M in range(1, bf16_gemv.MAX_ROWS + 1):
        for cfg in bf16_gemv.SWEEP_CONFIGS:
            bf16_gemv.check_config(cfg, M)
        for K, N in SHAPES_7B + [(4096, 50304)]:
            cfg = {k: v for k, v in bf16_gemv.default_config(M, N, K).items() if k != "XAHEAD"}
            assert cfg in bf16_gemv.SWEEP_CONFIGS, (M, N, K)
        bf16_gemv.check_config(bf16_gemv.default_config(M, 33, 72), M)
    for cfg in bf16_gemv.MEASURED.values():
        assert cfg in bf16_gemv.SWEEP_CONFIGS, f"{cfg}: MEASURED names a config the GPU tests do not cover"


def test_a_config_the_kernel_cannot_take_is_a_usage_error():
    with pytest.raises(UsageError, match="KSPLIT"):
        bf16_gemv.check_config(dict(R=1, U=2, S=4, KSPLIT=3, WARPS=4), 1)
    with pytest.raises(UsageError, match="shared memory"):
        bf16_gemv.check_config(dict(R=2, U=2, S=4, KSPLIT=1, WARPS=4), 1)  # 64 KB
    with pytest.raises(UsageError, match="needs R"):
        bf16_gemv.check_config(dict(R=3, U=2, S=4, KSPLIT=1, WARPS=4), 1)


def test_applies_only_to_its_domain(monkeypatch):
    monkeypatch.setattr(bf16_gemv, "cuda_available", lambda: True)
    x, w, b = _operands(4, 64, 30, True, seed=3)
    assert bf16_gemv.applies(x, w) and bf16_gemv.applies(x, w, b) and bf16_gemv.applies(x.reshape(2, 2, 64), w)
    assert not bf16_gemv.applies(x.astype(mx.float32), w)                     # mixed or float32: MLX
    assert not bf16_gemv.applies(x.astype(mx.float32), w.astype(mx.float32))
    assert not bf16_gemv.applies(x, w, b.astype(mx.float32))                  # a float32 bias promotes: MLX
    assert not bf16_gemv.applies(mx.zeros((17, 64), mx.bfloat16), w)          # beyond MAX_ROWS
    assert not bf16_gemv.applies(mx.zeros((1, 60), mx.bfloat16), mx.zeros((30, 60), mx.bfloat16))  # K % 8
    assert not bf16_gemv.applies(x, w[:, :32])                                # K mismatch
    monkeypatch.setattr(bf16_gemv, "cuda_available", lambda: False)
    assert not bf16_gemv.applies(x, w)


_MLX = skinny_gemm.skinny_matmul_ref


def _routes(monkeypatch, x, w, b) -> str:
    """Which path skinny_matmul takes: 'kernel' (bf16_gemv_cuda) or 'mlx' (skinny_matmul_ref)."""
    calls = []
    monkeypatch.setattr(bf16_gemv, "bf16_gemv_cuda", lambda *a, **k: calls.append("kernel") or _MLX(*a))
    monkeypatch.setattr(skinny_gemm, "skinny_matmul_ref", lambda *a: calls.append("mlx") or _MLX(*a))
    skinny_gemm.skinny_matmul(x, w, b)
    assert len(calls) == 1, calls
    return calls[0]


def test_routing_follows_the_measured_table(monkeypatch):
    """An empty table (or a shape it lacks): MLX's matmul; an entry with the kernel faster: the kernel, for every
    row count of its bucket; an entry with the kernel slower, or XLSTM_MLX_BF16_GEMV unset (its default: off) or 0:
    MLX's matmul. The label says which."""
    monkeypatch.setattr(bf16_gemv, "cuda_available", lambda: True)
    monkeypatch.setattr(skinny_gemm, "cuda_available", lambda: True)
    monkeypatch.setenv("XLSTM_MLX_BF16_GEMV", "1")
    monkeypatch.setattr(bf16_gemv, "H200", {})
    x, w, b = _operands(3, 64, 40, True, seed=9)
    assert not any(bf16_gemv.faster_than_mlx(r, 40, 64) for r in range(1, 17))
    assert _routes(monkeypatch, x, w, b) == "mlx"
    assert "nowhere" in kernels.describe(["matmul.skinny"])["matmul.skinny"]

    cfg = bf16_gemv.SWEEP_CONFIGS[0]
    monkeypatch.setattr(bf16_gemv, "H200", {(4, 40, 64): (cfg, 10.0, 20.0), (16, 40, 64): (cfg, 30.0, 20.0)})
    assert [bf16_gemv.faster_than_mlx(r, 40, 64) for r in (1, 2, 8, 9, 16)] == [False, True, True, False, False]
    for rows, path in ((1, "mlx"), (2, "kernel"), (3, "kernel"), (8, "kernel"), (9, "mlx"), (16, "mlx")):
        assert _routes(monkeypatch, mx.concatenate([x] * 6)[:rows], w, b) == path, rows
    assert _routes(monkeypatch, x, w[:39], b[:39]) == "mlx"                # another N: not measured
    assert _routes(monkeypatch, x.astype(mx.float32), w.astype(mx.float32), None) == "mlx"  # float32: MLX
    assert "bf16 GEMV" in kernels.describe(["matmul.skinny"])["matmul.skinny"]
    for off in ("0", None):  # switched off, or unset: the default is off
        if off is None:
            monkeypatch.delenv("XLSTM_MLX_BF16_GEMV", raising=False)
        else:
            monkeypatch.setenv("XLSTM_MLX_BF16_GEMV", off)
        assert _routes(monkeypatch, mx.concatenate([x] * 6)[:2], w, b) == "mlx"
        assert "XLSTM_MLX_BF16_GEMV=1" in kernels.describe(["matmul.skinny"])["matmul.skinny"]


@needs_host
def test_a_table_entry_runs_the_kernel_through_the_registry(host_kernel, monkeypatch):
    """matmul.skinny end to end: with the shape measured faster, the (host-built) kernel's output, not MLX's."""
    x, w, b = _operands(4, 128, 48, True, seed=13)
    monkeypatch.setattr(bf16_gemv, "H200", {(4, 48, 128): (bf16_gemv.SWEEP_CONFIGS[0], 10.0, 20.0)})
    monkeypatch.setenv("XLSTM_MLX_BF16_GEMV", "1")
    assert skinny_gemm.uses_bf16_gemv(x, w, b)
    y = kernels.get("matmul.skinny")(x.reshape(4, 1, 128), w, b)
    assert y.shape == (4, 1, 48)
    expected = bf16_gemv.bf16_gemv_cuda(x, w, b)
    assert mx.array_equal(y.reshape(4, 48), expected)
    _close(expected, _ref(x, w, b))


def test_the_switch_is_registered():
    from xlstm_mlx import env
    assert env.SWITCHES["XLSTM_MLX_BF16_GEMV"] is False and "XLSTM_MLX_BF16_GEMV" in env.__doc__


def test_fast_form_falls_back_to_the_reference_without_cuda():
    if cuda_available():
        pytest.skip("CUDA present: the kernel may run (tested below)")
    x, w, b = _operands(3, 256, 40, True, seed=1)
    assert not bf16_gemv.applies(x, w, b) and not skinny_gemm.uses_bf16_gemv(x, w, b)
    assert mx.array_equal(kernels.get("matmul.skinny")(x, w, b), bf16_gemv.bf16_gemv_ref(x, w, b))
    assert "MLX" in kernels.describe(["matmul.skinny"])["matmul.skinny"]


def test_reference_is_what_linear_computes():
    import mlx.nn as nn
    lin = nn.Linear(64, 24)
    lin.set_dtype(mx.bfloat16)
    x = mx.random.normal((2, 64)).astype(mx.bfloat16)
    assert mx.array_equal(lin(x), bf16_gemv.bf16_gemv_ref(x, lin.weight, lin.bias))


# --- on MLX's CUDA backend -------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)  # six shapes, ~0.5 GB in all
def _gpu_operands(K, N):
    """Weights, bias, 16 rows of x for a shape, and the float64 reference for all 16 rows (row m of it serves
    every M > m); with and without the bias."""
    x, w, b = _operands(16, K, N, True, seed=K + N)
    return x, w, b, _ref(x, w, None), _ref(x, w, b)


def _check(K, N, M, bias, **cfg):
    x, w, b, ref, ref_b = _gpu_operands(K, N)
    x = x[:M]
    bb = b if bias else None
    assert bf16_gemv.applies(x, w, bb)
    y = bf16_gemv.bf16_gemv_cuda(x, w, bb, **cfg)
    _close(y, (ref_b if bias else ref)[:M], (K, N, M, bias, cfg))


@needs_cuda
@pytest.mark.parametrize("cfg", bf16_gemv.SWEEP_CONFIGS, ids=list(CFG))
@pytest.mark.parametrize("K,N", SHAPES_7B + [(1000, 1001), (328, 70)], ids=lambda v: str(v))
@pytest.mark.parametrize("M", [1, 4, 16])
def test_every_lab_config(cfg, K, N, M):
    """Every config the lab sweeps (and MEASURED may name) on the 7B decode matrices and odd shapes (K = 1000:
    125 vectors, a unit cut short; N = 1001: a partial tile and block; K = 328, N = 70: 41 vectors, one or two
    steps a K part, the ring never full), with bias at 4 rows."""
    _check(K, N, M, M == 4, **cfg)


@needs_cuda
@pytest.mark.parametrize("cfg", [CFG["R1U1S4K8W8"], CFG["R1U2S4K2W4"], CFG["R4U1S3K2W4"]], ids=lambda c: "R{R}U{U}S{S}K{KSPLIT}W{WARPS}".format(**c))
@pytest.mark.parametrize("K,N", [(10944, 4096), (1000, 1001)], ids=lambda v: str(v))
@pytest.mark.parametrize("M", [1, 9, 16])
def test_x_loaded_a_step_ahead(cfg, K, N, M):
    """XAHEAD: step i + 1's x loaded while step i computes: the same sums (K = 10944 and 1000: rows that end
    inside a step)."""
    _check(K, N, M, M == 9, XAHEAD=True, **cfg)


def test_x_ahead_rule_override_and_bad_env(monkeypatch):
    monkeypatch.delenv(bf16_gemv.XAHEAD_ENV, raising=False)
    base = dict(CFG["R1U1S4K8W8"])
    assert not bf16_gemv.x_ahead(base) and bf16_gemv.x_ahead(dict(base, XAHEAD=1))
    monkeypatch.setenv(bf16_gemv.XAHEAD_ENV, "1")
    assert dict(bf16_gemv.kernel_constants(1, False, base))["XAHEAD"] is True
    assert bf16_gemv.x_ahead(dict(base, XAHEAD=0))   # the switch wins over a table's tag
    monkeypatch.setenv(bf16_gemv.XAHEAD_ENV, "0")
    assert not bf16_gemv.x_ahead(dict(base, XAHEAD=1))
    monkeypatch.setenv(bf16_gemv.XAHEAD_ENV, "on")
    with pytest.raises(UsageError, match=bf16_gemv.XAHEAD_ENV):
        bf16_gemv.x_ahead(base)
    with pytest.raises(UsageError, match="XAHEAD"):
        bf16_gemv.check_config(dict(base, XAHEAD=2), 1)


@needs_cuda
@pytest.mark.parametrize("M", range(1, 17))
@pytest.mark.parametrize("bias", [False, True])
def test_default_config_every_row_count(M, bias):
    _check(4096, 1001, M, bias)


@needs_cuda
def test_wrapper_on_the_gpu_keeps_leading_dims_and_routes_big_batches_to_mlx():
    x, w, b = _operands(0, 512, 300, True, seed=31, lead=(2, 1, 512))
    y = bf16_gemv.bf16_gemv_cuda(x, w, b)
    assert y.shape == (2, 1, 300)
    _close(y, _ref(x, w, b))
    big = mx.zeros((bf16_gemv.MAX_ROWS + 1, 512), mx.bfloat16)
    assert not bf16_gemv.applies(big, w) and not skinny_gemm.uses_bf16_gemv(big, w)
    assert kernels.get("matmul.skinny")(big, w, b).shape == (bf16_gemv.MAX_ROWS + 1, 300)
