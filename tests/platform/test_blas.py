"""The CPU BLAS redirection (xlstm_mlx/platform/blas.py): it is active, it computes the same numbers, it undoes
itself on failure and it can be switched off. Each case runs in a fresh process (the choice is process-wide)."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the BLAS redirection is Linux-only")


def _run(*code: str, **env) -> dict:
    """Run the code parts in a fresh interpreter; env values of None remove the variable."""
    full_env = {k: v for k, v in {**os.environ, "XLSTM_MLX_BLAS": None, **env}.items() if v is not None}
    source = "".join(textwrap.dedent(part) for part in code)
    p = subprocess.run([sys.executable, "-c", source], env=full_env, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


_MATMULS = """
    import json, numpy as np
    import mlx.core as mx
    rng = np.random.default_rng(1)
    errs = []
    # shapes cover gemm edge cases: non-multiples of the kernel tiles, transposes, batches, vectors
    for shape_a, shape_b, ta, tb in [((129, 77), (77, 33), False, False), ((64, 300), (64, 5), True, False),
                                     ((3, 17, 40), (3, 50, 40), False, True), ((1, 512), (512, 1000), False, False)]:
        a = rng.standard_normal(shape_a).astype(np.float32)
        b = rng.standard_normal(shape_b).astype(np.float32)
        ma, mb = mx.array(a), mx.array(b)
        if ta: a, ma = a.swapaxes(-1, -2), ma.swapaxes(-1, -2)
        if tb: b, mb = b.swapaxes(-1, -2), mb.swapaxes(-1, -2)
        ref = np.einsum("...ij,...jk->...ik", a.astype(np.float64), b.astype(np.float64))
        got = np.array(mx.matmul(ma, mb, stream=mx.cpu))
        errs.append(float(np.abs(got - ref).max() / np.abs(ref).max()))
    s = rng.standard_normal((40, 40)).astype(np.float32) + 10 * np.eye(40, dtype=np.float32)
    inv = np.array(mx.linalg.inv(mx.array(s), stream=mx.cpu)).astype(np.float64)
    resid = float(np.abs(np.einsum("ij,jk->ik", inv, s.astype(np.float64)) - np.eye(40)).max())
"""


def test_active_and_exact_enough():
    out = _run("""
        import xlstm_mlx.platform; xlstm_mlx.platform.setup()
        info = xlstm_mlx.platform.blas.info()
    """, _MATMULS, """
        print(json.dumps({"info": info, "errs": errs, "resid": resid}))
    """)
    pytest.importorskip("scipy_openblas32")
    assert out["info"]["active"], out["info"]
    assert out["info"]["symbols"] >= 3
    assert max(out["errs"]) < 1e-5, out["errs"]
    assert out["resid"] < 1e-4


def test_patched_slot_points_at_the_library():
    out = _run("""
        import ctypes, json
        import xlstm_mlx.platform; xlstm_mlx.platform.setup()
        from xlstm_mlx.platform import blas as _blas, elf_got as _elf_got
        info = _blas.info()
        path = _blas._libmlx_path()
        imports = _elf_got.read_imports(path, _blas._IMPORT_PATTERN)
        slot = _elf_got.load_base(path) + imports.slots["cblas_sgemm"][0]
        lib = _blas._Lib(info["path"])
        from xlstm_mlx.platform import skinny
        print(json.dumps({"slot": ctypes.c_size_t.from_address(slot).value, "want": lib.address("cblas_sgemm"),
                          "skinny": info["skinny"]["active"], "kernel": skinny.address(),
                          "forwards_to": skinny.real_address(),
                          "other": ctypes.c_size_t.from_address(_elf_got.load_base(path)
                                                                + imports.slots["cblas_dgemm"][0]).value,
                          "want_other": lib.address("cblas_dgemm")}))
    """)
    assert out["other"] == out["want_other"]
    if out["skinny"]:  # cblas_sgemm goes through the skinny-product kernel, which forwards to the library
        assert out["slot"] == out["kernel"] and out["forwards_to"] == out["want"]
    else:
        assert out["slot"] == out["want"]


def test_opt_out_keeps_reference_blas():
    out = _run("""
        import xlstm_mlx.platform; xlstm_mlx.platform.setup()
        info = xlstm_mlx.platform.blas.info()
    """, _MATMULS, """
        print(json.dumps({"info": info, "errs": errs}))
    """, XLSTM_MLX_BLAS="off")
    assert not out["info"]["active"] and out["info"]["reason"] == "disabled"
    assert max(out["errs"]) < 1e-5


def test_failed_check_restores_the_original_slots():
    out = _run("""
        import ctypes, json, os
        import xlstm_mlx.platform; xlstm_mlx.platform.setup()  # switched off by the environment
        from xlstm_mlx.platform import blas as _blas, elf_got as _elf_got
        path = _blas._libmlx_path()
        imports = _elf_got.read_imports(path, _blas._IMPORT_PATTERN)
        slot = _elf_got.load_base(path) + imports.slots["cblas_sgemm"][0]
        before = ctypes.c_size_t.from_address(slot).value
        _blas._check = lambda: "forced failure"
        os.environ["XLSTM_MLX_BLAS"] = "auto"
        _blas._info = {"active": False, "reason": "not set up"}
        info = _blas.setup()
        print(json.dumps({"info": info, "same": ctypes.c_size_t.from_address(slot).value == before}))
    """, XLSTM_MLX_BLAS="off")
    assert not out["info"]["active"] and "forced failure" in out["info"]["reason"]
    assert out["same"]


def test_bad_library_path_is_reported_not_fatal(tmp_path):
    bogus = tmp_path / "libnotblas.so"
    bogus.write_bytes(b"not an ELF file")
    out = _run("""
        import json, xlstm_mlx.platform; xlstm_mlx.platform.setup()
        print(json.dumps(xlstm_mlx.platform.blas.info()))
    """, XLSTM_MLX_BLAS=str(bogus))
    assert not out["active"] and "libnotblas.so" in out["reason"]


def test_wrong_core_detection_reloads_with_cpu_features():
    pytest.importorskip("scipy_openblas32")
    out = _run("""
        import json, os
        import xlstm_mlx.platform; xlstm_mlx.platform.setup()  # switched off by the environment
        from xlstm_mlx.platform import blas as _blas
        detected = _blas._Lib(_blas._candidates("auto")[0][1]).core.lower()
        _blas._PRE_AVX2_CORES.add(detected)  # pretend the library's own detection was wrong
        _blas._cpu_core_type = lambda: "Haswell"
        os.environ["XLSTM_MLX_BLAS"] = "auto"
        _blas._info = {"active": False, "reason": "not set up"}
        print(json.dumps(_blas.setup()))
    """, OPENBLAS_CORETYPE=None, XLSTM_MLX_BLAS="off")
    assert out["active"] and out["core"].lower() == "haswell", out


def test_lapack_routines_through_the_redirect():
    """Every LAPACK family libmlx imports (eigh, cholesky, qr, svd, eig, tri_inv) against numpy float64."""
    pytest.importorskip("scipy_openblas32")
    out = _run("""
        import json, numpy as np
        import xlstm_mlx.platform; xlstm_mlx.platform.setup()
        import mlx.core as mx
        rng, cpu = np.random.default_rng(0), mx.cpu
        a = rng.standard_normal((30, 30)).astype(np.float32)
        s = a @ a.T + 30 * np.eye(30, dtype=np.float32)
        a64, s64 = a.astype(np.float64), s.astype(np.float64)
        w, _ = mx.linalg.eigh(mx.array(s), stream=cpu)
        L = np.array(mx.linalg.cholesky(mx.array(s), stream=cpu), dtype=np.float64)
        q, r = mx.linalg.qr(mx.array(a), stream=cpu)
        sv = mx.linalg.svd(mx.array(a), compute_uv=False, stream=cpu)
        ev = np.array(mx.linalg.eigvals(mx.array(a), stream=cpu))
        ti = np.array(mx.linalg.tri_inv(mx.array(np.tril(s)), upper=False, stream=cpu), dtype=np.float64)
        errs = {
            "eigh": float(np.abs(np.sort(np.array(w)) - np.linalg.eigvalsh(s64)).max() / 100),
            "cholesky": float(np.abs(np.einsum("ij,kj->ik", L, L) - s64).max() / 100),
            "qr": float(np.abs(np.einsum("ij,jk->ik", np.array(q, np.float64), np.array(r, np.float64)) - a64).max()),
            "svd": float(np.abs(np.array(sv) - np.linalg.svd(a64, compute_uv=False)).max()),
            "eig": float(np.abs(np.sort(np.abs(ev)) - np.sort(np.abs(np.linalg.eigvals(a64)))).max()),
            "tri_inv": float(np.abs(np.einsum("ij,jk->ik", ti, np.tril(s64)) - np.eye(30)).max()),
        }
        print(json.dumps({"active": xlstm_mlx.platform.blas.info()["active"], "errs": errs}))
    """)
    assert out["active"]
    assert max(out["errs"].values()) < 1e-4, out["errs"]


def test_import_has_no_side_effects():
    """`import xlstm_mlx` neither redirects the BLAS nor sets MLX_ENABLE_TF32: load() and the CLI do."""
    out = _run("""
        import json, os, xlstm_mlx
        from xlstm_mlx.platform import blas
        before = {"active": blas.info()["active"], "tf32": os.environ.get("MLX_ENABLE_TF32")}
        xlstm_mlx.platform.setup()
        print(json.dumps({"before": before, "after": blas.info()["active"], "tf32": os.environ.get("MLX_ENABLE_TF32")}))
    """, MLX_ENABLE_TF32=None)
    assert out["before"] == {"active": False, "tf32": None}
    assert out["after"] is True and out["tf32"] == "0"
