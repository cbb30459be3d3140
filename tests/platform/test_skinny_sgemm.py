"""The skinny-product cblas_sgemm (platform/skinny_sgemm.c): exact to cblas_sgemm's contract against float64
numpy on fresh random inputs (row/column major, both transposes, lda/ldb/ldc with padding, alpha/beta, odd
sizes, M or N from 1 to 17 so both the kernel and the forwarded path run), the same through MLX's matmul, and
the switches that keep OpenBLAS' sgemm as the reference path.

Error bound, per element: |C - C64| <= (K + 2) * eps32 * (|alpha| (|op(A)| |op(B)|) + |beta C0|). Any order of
float32 summation of K products satisfies |err| <= gamma_K * sum |a||b| with gamma_K ~ K * 2^-24 (Higham,
Accuracy and Stability of Numerical Algorithms, 3.1), plus one rounding each for alpha, beta and the sum;
eps32 = 2^-23 leaves a factor 2 over it. The library's own sgemm is held to the same bound in the same loop.
"""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the BLAS redirection is Linux-only")

from xlstm_mlx.platform import blas, skinny  # noqa: E402

ROW, COL, N_, T_, C_ = 101, 102, 111, 112, 113
EPS = float(np.finfo(np.float32).eps)


def _need_kernel():
    """The kernel must be active wherever it could be built: a skip would hide a broken build or a kernel
    that failed blas.setup()'s check. Only a machine without a C compiler (where pip could not build it)
    skips."""
    state = blas.info().get("skinny") or {"reason": blas.info()["reason"]}
    if state.get("active"):
        return
    compiler = sysconfig.get_config_var("CC") or "cc"
    if skinny.library_path() is None and shutil.which(compiler.split()[0]) is None:
        pytest.skip(f"no C compiler, so no skinny kernel: {state['reason']}")
    pytest.fail(f"skinny kernel not active: {state['reason']}")


@pytest.fixture
def rng():
    seed = int(np.random.SeedSequence().entropy % 2**32)
    print(f"seed {seed}")
    return np.random.default_rng(seed)


def _operand(rng, rows, cols, trans, order, pad):
    """A random matrix op(X) of rows x cols stored as cblas sees it: (flat buffer, ld, op(X) as float64).
    Padding between the stored lines is NaN, so reading it would show."""
    stored_rows, stored_cols = (rows, cols) if trans == N_ else (cols, rows)
    if order == COL:
        stored_rows, stored_cols = stored_cols, stored_rows  # column-major = the transpose, row-major
    ld = stored_cols + pad
    buf = np.full((max(stored_rows, 1), max(ld, 1)), np.nan, np.float32)
    buf[:stored_rows, :stored_cols] = rng.standard_normal((stored_rows, stored_cols)).astype(np.float32)
    view = buf[:stored_rows, :stored_cols].astype(np.float64)
    if order == COL:
        view = view.T  # now the stored matrix in its own (column-major) orientation
    op = view if trans == N_ else view.T
    return buf, max(ld, 1), op


def _output(rng, m, n, order, pad, beta):
    rows, cols = (m, n) if order == ROW else (n, m)
    ld = cols + pad
    buf = np.full((max(rows, 1), max(ld, 1)), np.nan, np.float32)
    if beta != 0:  # beta == 0: C is output only, its NaNs must not show
        buf[:rows, :cols] = rng.standard_normal((rows, cols)).astype(np.float32)
    c0 = buf[:rows, :cols].astype(np.float64)
    return buf, max(ld, 1), (c0 if order == ROW else c0.T)


def _result(buf, m, n, order):
    c = buf[:m, :n] if order == ROW else buf[:n, :m].T
    return c.astype(np.float64)


def _run(fn, rng, order, ta, tb, m, n, k, alpha, beta, pad):
    a, lda, opa = _operand(rng, m, k, ta, order, pad)
    b, ldb, opb = _operand(rng, k, n, tb, order, pad)
    c, ldc, c0 = _output(rng, m, n, order, pad, beta)
    before = c.copy()
    skinny.sgemm(fn, order, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
    got = _result(c, m, n, order)
    ref = alpha * (opa @ opb) + (beta * c0 if beta != 0 else 0.0)
    bound = (k + 2) * EPS * (abs(alpha) * (np.abs(opa) @ np.abs(opb)) + (abs(beta) * np.abs(c0) if beta != 0 else 0))
    where = f"order {order} trans {ta},{tb} M={m} N={n} K={k} alpha={alpha} beta={beta} pad={pad}"
    assert not np.isnan(got).any(), f"NaN in C: {where}"
    excess = np.abs(got - ref) - bound
    assert (excess <= 1e-30).all(), f"{where}: error {np.abs(got - ref).max():.3g} over bound {bound.max():.3g}"
    # nothing outside C's m x n block was written
    mask = np.ones(c.shape, bool)
    if order == ROW:
        mask[:m, :n] = False
    else:
        mask[:n, :m] = False
    assert np.array_equal(np.isnan(c[mask]), np.isnan(before[mask])), f"wrote outside C: {where}"


def _shapes(rng):
    """(order, ta, tb, m, n, k, alpha, beta, pad): every layout with the small side 1..17 as M and as N."""
    ks = [1, 2, 3, 15, 16, 17, 45, 64, 129, 515]
    bigs = [1, 5, 33, 100, 257]
    coeffs = [(1.0, 0.0), (1.0, 1.0), (-0.7, 0.0), (2.5, -1.3), (1.0, 0.5)]
    out = []
    for order in (ROW, COL):
        for ta in (N_, T_):
            for tb in (N_, T_):
                for small in range(1, 18):
                    for small_is_m in (True, False):
                        big = int(rng.choice(bigs))
                        m, n = (small, big) if small_is_m else (big, small)
                        alpha, beta = coeffs[int(rng.integers(len(coeffs)))]
                        out.append((order, ta, tb, m, n, int(rng.choice(ks)), alpha, beta, int(rng.integers(0, 3))))
    out.append((ROW, C_, C_, 3, 40, 33, 1.0, 0.0, 1))  # ConjTrans is Trans for real matrices
    return out


def test_every_instruction_set_of_this_cpu_is_listed():
    _need_kernel()
    isas = skinny.supported_isas()
    assert skinny.isa() == isas[0] and len(isas) >= 2, isas  # the widest in use; the baseline always runs
    with pytest.raises(ValueError, match="no bogus kernels"):
        with skinny.use_isa("bogus"):
            pass


@pytest.mark.parametrize("isa", skinny.ALL_ISAS)
def test_kernel_against_float64(rng, isa):
    """Every kernel instance this CPU can run (AVX-512, AVX2, SSE2 on x86-64; NEON on aarch64)."""
    _need_kernel()
    if isa not in skinny.supported_isas():
        pytest.skip(f"this CPU does not run the {isa} kernels")
    fn = skinny.address()
    skinny.counts(reset=True)
    shapes = _shapes(rng)
    with skinny.use_isa(isa):
        assert skinny.isa() == isa
        for case in shapes:
            _run(fn, rng, *case)
    computed, forwarded = skinny.counts()
    limit = skinny.max_rows()
    want = sum(1 for c in shapes if c[3] <= limit and c[4] > 0)  # few rows of op(A); few columns go to the library
    assert computed >= want and forwarded >= len(shapes) - want, (computed, forwarded, want)


def test_library_sgemm_meets_the_same_bound(rng):
    """The bound is the library's too: the reference path, called directly, passes the same check."""
    _need_kernel()
    fn = skinny.real_address()
    for case in _shapes(rng)[::7]:
        _run(fn, rng, *case)


@pytest.mark.parametrize("isa", skinny.ALL_ISAS)
def test_same_bits_whatever_the_layout_or_row_count(rng, isa):
    """Each element is summed in one order: the weight as W (dot form) or as a contiguous W.T (axpy form), and
    one row or eight, give identical bits (OpenBLAS' sgemm has this property; a saved-and-loaded model whose
    weight comes back in the other layout must give the same logits)."""
    _need_kernel()
    if isa not in skinny.supported_isas():
        pytest.skip(f"this CPU does not run the {isa} kernels")
    fn = skinny.address()
    with skinny.use_isa(isa):
        for k in (1, 15, 16, 17, 63, 64, 65, 200, 515):
            n = int(rng.integers(1, 70))
            x = rng.standard_normal((8, k)).astype(np.float32)
            w = rng.standard_normal((n, k)).astype(np.float32)
            wt = np.ascontiguousarray(w.T)
            dot, axpy, one, axpy_one = (np.zeros((8, n), np.float32) for _ in range(4))
            skinny.sgemm(fn, ROW, N_, T_, 8, n, k, 1.0, x, k, w, k, 0.0, dot, n)  # x @ W.T, W [n, k]
            skinny.sgemm(fn, ROW, N_, N_, 8, n, k, 1.0, x, k, wt, n, 0.0, axpy, n)  # x @ W.T, W.T stored [k, n]
            for r in range(8):
                skinny.sgemm(fn, ROW, N_, T_, 1, n, k, 1.0, x[r:r + 1], k, w, k, 0.0, one[r:r + 1], n)
                # one row in the axpy layout: axpy_cols, where eight rows take the packed copy (K >= 4 VL)
                skinny.sgemm(fn, ROW, N_, N_, 1, n, k, 1.0, x[r:r + 1], k, wt, n, 0.0, axpy_one[r:r + 1], n)
            assert np.array_equal(dot, axpy), (isa, k, n, float(np.abs(dot - axpy).max()))
            assert np.array_equal(dot, one), (isa, k, n, float(np.abs(dot - one).max()))
            assert np.array_equal(dot, axpy_one), (isa, k, n, float(np.abs(dot - axpy_one).max()))


def test_many_rows_are_summed_in_k_blocks(rng):
    """Products with more than max_rows() rows go to the library cut along K (skinny_sgemm.c, blocked_sgemm): on by
    default, k_block(0) is the library's own call bit for bit, and the blocks' sum is below torch's MKL in error
    (relative to sum |a||b|, rms: MKL 1.7e-8 at K = 512 on an AMD EPYC; OpenBLAS' Haswell kernel alone 2.0e-8,
    in blocks 1.1e-8). A product with a small C (<= 8,192 elements) stays one call. Every layout, alpha and beta
    is checked against the bound by test_kernel_against_float64."""
    _need_kernel()
    assert skinny.k_block_now() == skinny.DEFAULT_K_BLOCK
    fn, real = skinny.address(), skinny.real_address()
    x = rng.standard_normal((64, 256)).astype(np.float32)
    w = rng.standard_normal((128, 256)).astype(np.float32)
    small, lib_small = (np.zeros((64, 128), np.float32) for _ in range(2))  # C of 8,192 elements
    skinny.sgemm(fn, ROW, N_, T_, 64, 128, 256, 1.0, x, 256, w, 256, 0.0, small, 128)
    skinny.sgemm(real, ROW, N_, T_, 64, 128, 256, 1.0, x, 256, w, 256, 0.0, lib_small, 128)
    assert np.array_equal(small, lib_small)
    m, n = 160, 96
    for k in (64, 256, 512, 1408):
        x = rng.standard_normal((m, k)).astype(np.float32)
        w = (rng.standard_normal((n, k)) / np.sqrt(k)).astype(np.float32)
        ref = x.astype(np.float64) @ w.astype(np.float64).T
        scale = np.abs(x.astype(np.float64)) @ np.abs(w.astype(np.float64)).T
        got, lib, off = (np.zeros((m, n), np.float32) for _ in range(3))
        skinny.sgemm(fn, ROW, N_, T_, m, n, k, 1.0, x, k, w, k, 0.0, got, n)
        skinny.sgemm(real, ROW, N_, T_, m, n, k, 1.0, x, k, w, k, 0.0, lib, n)
        with skinny.k_block(0):
            skinny.sgemm(fn, ROW, N_, T_, m, n, k, 1.0, x, k, w, k, 0.0, off, n)
        assert np.array_equal(off, lib), k

        def rms(c):
            return float(np.sqrt(np.mean(((c.astype(np.float64) - ref) / scale) ** 2)))

        assert rms(got) <= 1.05 * rms(lib), (k, rms(got), rms(lib))
        if k >= 256:
            assert rms(got) < 1.5e-8, (k, rms(got), rms(lib))


def test_reference_switch_forwards_everything(rng):
    _need_kernel()
    fn = skinny.address()
    skinny.counts(reset=True)
    with skinny.reference():
        _run(fn, rng, ROW, N_, T_, 2, 300, 64, 1.0, 0.0, 0)
    assert skinny.counts() == (0, 1)
    assert skinny.enabled()


def test_degenerate_calls_are_forwarded(rng):
    """alpha == 0 and K == 0 follow the library (C = beta C); M or N == 0 touch nothing."""
    _need_kernel()
    fn = skinny.address()
    a = rng.standard_normal((4, 8)).astype(np.float32)
    b = rng.standard_normal((20, 8)).astype(np.float32)
    c = rng.standard_normal((4, 20)).astype(np.float32)
    c0 = c.copy()
    skinny.counts(reset=True)
    skinny.sgemm(fn, ROW, N_, T_, 4, 20, 8, 0.0, a, 8, b, 8, 0.5, c, 20)
    np.testing.assert_allclose(c, 0.5 * c0, rtol=1e-7)
    skinny.sgemm(fn, ROW, N_, T_, 4, 20, 0, 1.0, a, 8, b, 8, 2.0, c, 20)
    np.testing.assert_allclose(c, c0, rtol=1e-6)
    skinny.sgemm(fn, ROW, N_, T_, 0, 20, 8, 1.0, a, 8, b, 8, 0.0, c, 20)
    np.testing.assert_allclose(c, c0, rtol=1e-6)
    assert skinny.counts()[0] == 0


def test_nan_in_a_row_of_x_reaches_that_row_only(rng):
    _need_kernel()
    x = rng.standard_normal((3, 70)).astype(np.float32)
    w = rng.standard_normal((90, 70)).astype(np.float32)
    x[1, 33] = np.nan
    c = np.zeros((3, 90), np.float32)
    skinny.sgemm(skinny.address(), ROW, N_, T_, 3, 90, 70, 1.0, x, 70, w, 70, 0.0, c, 90)
    assert np.isnan(c[1]).all() and not np.isnan(c[[0, 2]]).any()


def test_threads_split_the_columns(rng):
    """With the library at 2 threads the kernel splits N over 2 threads (big products only): same bound."""
    _need_kernel()
    lib = blas._Lib(blas.info()["path"])
    before = lib.threads
    lib.set_threads(2)
    try:
        for m, n, k in [(1, 9001, 515), (3, 4099, 512), (8, 3000, 200)]:
            _run(skinny.address(), rng, ROW, N_, T_, m, n, k, 1.0, 0.0, 0)
            _run(skinny.address(), rng, ROW, N_, N_, m, n, k, 1.0, 1.0, 1)
    finally:
        lib.set_threads(before)


def test_mlx_matmul_through_the_slot(rng):
    """x @ W.T (nn.Linear's form), W @ x, x @ W and addmm through libmlx's redirected cblas_sgemm, against
    float64, with the kernel counted as the code that ran; and the same shapes through the reference path."""
    _need_kernel()
    import mlx.core as mx

    cpu = mx.cpu
    for path in ("kernel", "reference"):
        for rows in (1, 2, 3, 5, 8, 9, 17):
            k, n = int(rng.choice([63, 512, 515])), int(rng.choice([1, 255, 1000, 4099]))
            x = rng.standard_normal((rows, 1, k)).astype(np.float32)  # decode shape: [B, 1, K]
            w = rng.standard_normal((n, k)).astype(np.float32)
            bias = rng.standard_normal(n).astype(np.float32)
            x64, w64 = x.astype(np.float64), w.astype(np.float64)
            skinny.counts(reset=True)
            ctx = skinny.reference() if path == "reference" else _nullcontext()
            with ctx:
                mxx, mw = mx.array(x), mx.array(w)
                outs = {
                    "x @ W.T": (mx.matmul(mxx, mw.T, stream=cpu), x64 @ w64.T, np.abs(x64) @ np.abs(w64).T),
                    "W @ x": (mx.matmul(mw, mxx[0, 0][:, None], stream=cpu), w64 @ x64[0, 0][:, None],
                              np.abs(w64) @ np.abs(x64[0, 0])[:, None]),
                    "x @ W": (mx.matmul(mxx[:, 0], mx.array(np.ascontiguousarray(w.T)), stream=cpu), x64[:, 0] @ w64.T,
                              np.abs(x64[:, 0]) @ np.abs(w64).T),
                    "addmm": (mx.addmm(mx.array(bias), mxx[:, 0], mw.T, alpha=0.5, beta=2.0, stream=cpu),
                              0.5 * (x64[:, 0] @ w64.T) + 2.0 * bias, 0.5 * (np.abs(x64[:, 0]) @ np.abs(w64).T)
                              + 2.0 * np.abs(bias)),
                }
                got = {name: np.array(o[0]).astype(np.float64) for name, o in outs.items()}
            for name, (_, ref, scale) in outs.items():
                err = np.abs(got[name] - ref)
                assert (err <= (k + 2) * EPS * scale + 1e-30).all(), (
                    f"{path}: {name} rows={rows} K={k} N={n}: max error {err.max():.3g}")
            computed, forwarded = skinny.counts()
            if path == "kernel" and rows <= skinny.max_rows():
                # W @ x has N = 1 column but n rows: the library's (few columns, many rows), unless n is small too
                assert computed >= (4 if n <= skinny.max_rows() else 3), (rows, n, computed, forwarded)
            if path == "reference":
                assert computed == 0, computed


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _fresh(code: str, **env) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in {**os.environ, "XLSTM_MLX_BLAS": None, **env}.items() if v is not None}
    p = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=full_env, capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    return p


def test_switch_off_points_the_slot_at_the_library():
    pytest.importorskip("scipy_openblas32")
    p = _fresh("""
        import ctypes, json
        import xlstm_mlx.platform; xlstm_mlx.platform.setup()
        from xlstm_mlx.platform import blas as _blas, elf_got as _elf_got
        path = _blas._libmlx_path()
        imports = _elf_got.read_imports(path, _blas._IMPORT_PATTERN)
        slot = _elf_got.load_base(path) + imports.slots["cblas_sgemm"][0]
        lib = _blas._Lib(_blas.info()["path"])
        print(json.dumps({"skinny": _blas.info()["skinny"], "slot": ctypes.c_size_t.from_address(slot).value,
                          "want": lib.address("cblas_sgemm"), "describe": xlstm_mlx.platform.describe()}))
    """, XLSTM_MLX_SKINNY_SGEMM="0", XLSTM_MLX_VERBOSE="1")
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["skinny"] == {"active": False, "reason": "XLSTM_MLX_SKINNY_SGEMM=0"}
    assert out["slot"] == out["want"]
    assert "no skinny sgemm" in out["describe"]
    assert "every sgemm through the library's sgemm (XLSTM_MLX_SKINNY_SGEMM=0)" in p.stderr


def test_missing_extension_is_said_not_hidden():
    """Installed without a compiler: OpenBLAS' sgemm for everything, and the verbose line says why."""
    pytest.importorskip("scipy_openblas32")
    p = _fresh("""
        import json
        from xlstm_mlx.platform import skinny
        skinny.library_path = lambda: None
        import xlstm_mlx.platform; xlstm_mlx.platform.setup()
        print(json.dumps(xlstm_mlx.platform.blas.info()))
    """, XLSTM_MLX_VERBOSE="1")
    info = json.loads(p.stdout.strip().splitlines()[-1])
    assert info["active"] and not info["skinny"]["active"]
    assert "not built at install time" in info["skinny"]["reason"]
    assert "not built at install time" in p.stderr


def test_failed_kernel_check_keeps_the_library_sgemm():
    pytest.importorskip("scipy_openblas32")
    if skinny.library_path() is None:
        pytest.skip("skinny kernel not built")
    p = _fresh("""
        import ctypes, json
        from xlstm_mlx.platform import blas as _blas, elf_got as _elf_got
        real_check, calls = _blas._check, []
        def check():  # the library passes; the kernel "fails"
            calls.append(1)
            return real_check() if len(calls) == 1 else "forced failure"
        _blas._check = check
        import xlstm_mlx.platform; xlstm_mlx.platform.setup()
        path = _blas._libmlx_path()
        imports = _elf_got.read_imports(path, _blas._IMPORT_PATTERN)
        slot = _elf_got.load_base(path) + imports.slots["cblas_sgemm"][0]
        lib = _blas._Lib(_blas.info()["path"])
        print(json.dumps({"info": _blas.info(), "slot": ctypes.c_size_t.from_address(slot).value,
                          "want": lib.address("cblas_sgemm")}))
    """)
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["info"]["active"] and not out["info"]["skinny"]["active"]
    assert "forced failure" in out["info"]["skinny"]["reason"]
    assert out["slot"] == out["want"]
