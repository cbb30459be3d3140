"""Give MLX's Linux CPU backend a fast BLAS.

MLX's Linux CPU wheel (`mlx-cpu`) links a reference netlib BLAS/LAPACK (`mlx_cpu.libs/libblas-*.so`):
a 2048x2048 float32 matmul takes seconds instead of tens of milliseconds. After `mlx.core` is loaded,
`setup()` points libmlx's imported BLAS/LAPACK functions (cblas_sgemm, sgetrf_, ...) at an optimized
OpenBLAS by rewriting libmlx's GOT slots, checks a matmul and an inverse against numpy, and undoes
everything if the check fails. See docs/cpu-blas.md.

Library choice (env `XLSTM_MLX_BLAS`):
  unset / "auto"   scipy-openblas32 (a PyPI dependency on Linux), else a system OpenBLAS (Debian/Ubuntu
                   libopenblas0-*), else leave MLX as it is
  "off" / "0"      do nothing
  "system"         system OpenBLAS only
  a file path      that library (unprefixed symbols, or scipy-openblas' `scipy_` prefix), LP64 only
Worker spin: OpenBLAS is loaded with OPENBLAS_THREAD_TIMEOUT=22 (its workers sleep ~1.5 ms after a parallel call
instead of ~0.1 s) unless the user set it (THREAD_TIMEOUT below).
Core type: OpenBLAS' own detection, unless it chose a core older than the CPU's features (seen on VMs), in
which case a second instance is loaded with OPENBLAS_CORETYPE set from /proc/cpuinfo. A user-set
OPENBLAS_CORETYPE is always respected. `XLSTM_MLX_VERBOSE=1` prints the outcome to stderr.

cblas_sgemm itself goes to the skinny-product kernel (skinny.py: products with few rows, as at decode; every
other call forwarded to the library's sgemm in up to 16 K-blocks unless XLSTM_MLX_SGEMM_K_BLOCKS=0) unless
XLSTM_MLX_SKINNY_SGEMM=0 or the kernel was not built.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

import xlstm_mlx.platform.elf_got as _elf_got
import xlstm_mlx.platform.skinny as _skinny
from xlstm_mlx import env
from xlstm_mlx.errors import UsageError

log = logging.getLogger("xlstm_mlx.blas")

# Imports of libmlx to redirect: CBLAS and Fortran BLAS/LAPACK names.
_IMPORT_PATTERN = r"cblas_\w+|[sdcz][a-z0-9]+_"
_SYSTEM_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib64/libopenblasp.so.0",
    "/usr/lib64/libopenblas.so.0",
)
# OpenBLAS cores that predate AVX2: if one of these is detected on a CPU with AVX2+FMA, detection failed.
_PRE_AVX2_CORES = {"prescott", "core2", "penryn", "dunnington", "nehalem", "atom", "katmai", "coppermine",
                   "northwood", "banias", "athlon", "opteron", "opteron_sse3", "barcelona", "bobcat",
                   "sandybridge", "bulldozer", "piledriver", "steamroller", "excavator", "unknown"}

_info: dict = {"active": False, "reason": "not set up"}


def info() -> dict:
    """What `setup()` did: {'active', 'library', 'version', 'core', 'threads', 'symbols', 'reason', 'skinny'};
    'skinny' is {'active', 'isa', 'max_rows', 'reason'} for the small-row sgemm path."""
    return dict(_info)


def _say(msg: str) -> None:
    log.info(msg)
    if env.flag("XLSTM_MLX_VERBOSE"):
        print(f"xlstm-mlx: {msg}", file=sys.stderr)


def _cpu_core_type() -> str | None:
    """OPENBLAS_CORETYPE matching the CPU's vector features (x86_64 only)."""
    try:
        flags = next((ln.split(":", 1)[1].split() for ln in open("/proc/cpuinfo") if ln.startswith("flags")), [])
    except OSError:
        return None
    f = set(flags)
    if {"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd"} <= f:
        return "SkylakeX"
    if {"avx2", "fma"} <= f:
        return "Haswell"
    return None


class _Lib:
    """An opened BLAS library and the symbol prefix its functions carry."""

    def __init__(self, path: str):
        self.path = path
        self.cdll = ctypes.CDLL(path, mode=os.RTLD_LOCAL)
        self.prefix = next((p for p in ("", "scipy_") if self._has(p + "cblas_sgemm")), None)
        if self.prefix is None:
            raise OSError(f"{path}: no cblas_sgemm (ILP64 '64_' builds are not usable by MLX)")

    def _has(self, name: str) -> bool:
        try:
            getattr(self.cdll, name)
            return True
        except AttributeError:
            return False

    def address(self, name: str) -> int | None:
        try:
            return ctypes.cast(getattr(self.cdll, self.prefix + name), ctypes.c_void_p).value
        except AttributeError:
            return None

    def _str(self, fn: str) -> str:
        try:
            f = getattr(self.cdll, self.prefix + fn)
        except AttributeError:
            return ""
        f.restype = ctypes.c_char_p
        return (f() or b"").decode(errors="replace")

    @property
    def core(self) -> str:
        return self._str("openblas_get_corename")

    @property
    def config(self) -> str:
        return self._str("openblas_get_config")

    def set_threads(self, n: int) -> None:
        try:
            getattr(self.cdll, self.prefix + "openblas_set_num_threads")(int(n))
        except AttributeError:
            pass

    @property
    def threads(self) -> int | None:
        try:
            return int(getattr(self.cdll, self.prefix + "openblas_get_num_threads")())
        except AttributeError:
            return None


def _candidates(choice: str) -> list[tuple[str, str]]:
    """[(label, path)] in order of preference."""
    if choice not in ("auto", "system", ""):
        return [("XLSTM_MLX_BLAS", choice)]
    out = []
    if choice != "system":
        try:
            import scipy_openblas32

            lib_dir = Path(scipy_openblas32.get_lib_dir())
            out += [("scipy-openblas32", str(p)) for p in sorted(lib_dir.glob("libscipy_openblas*.so"))]
        except ImportError:
            pass
    out += [("system OpenBLAS", p) for p in _SYSTEM_CANDIDATES if os.path.exists(p)]
    found = ctypes.util.find_library("openblas")
    if found:
        out.append(("system OpenBLAS", found))
    return out


# OpenBLAS' worker threads busy-wait for new work for 2^THREAD_TIMEOUT cycles after each parallel call (its
# default 28: ~0.1 s) before they sleep. On a 2-core machine the spinning worker took a core from whatever ran next:
# the ~5 decode steps after a prefill ran 30-50 % slower (their few-row products split over two threads of the
# skinny kernel), and the prefill itself was no faster for it (docs/bench.md "CPU, 2026-12-03 session 14").
# 2^22 cycles (~1.5 ms) keeps the workers awake between the calls of one product chain and lets them sleep soon
# after. Set at load (the library's constructor reads it); a user's OPENBLAS_THREAD_TIMEOUT / GOTO_THREAD_TIMEOUT
# is respected.
THREAD_TIMEOUT = 22
_TIMEOUT_VARS = ("OPENBLAS_THREAD_TIMEOUT", "GOTO_THREAD_TIMEOUT")


def thread_timeout_setting() -> tuple[str, str]:
    """(variable, value) of the worker spin timeout a load applies: the user's, else ours."""
    for name in _TIMEOUT_VARS:
        if os.environ.get(name):
            return name, os.environ[name]
    return "OPENBLAS_THREAD_TIMEOUT", str(THREAD_TIMEOUT)


def _load(path: str) -> _Lib:
    """_Lib(path) with the spin timeout in the environment while the library's constructor runs."""
    name, value = thread_timeout_setting()
    if os.environ.get(name) == value:
        return _Lib(path)
    os.environ[name] = value
    try:
        return _Lib(path)
    finally:
        del os.environ[name]


def _open(path: str) -> _Lib:
    """Open `path`; if OpenBLAS picked a pre-AVX2 core on an AVX2 CPU, reopen a private copy with the right one."""
    lib = _load(path)
    want = _cpu_core_type()
    if os.environ.get("OPENBLAS_CORETYPE") or not want or lib.core.lower() not in _PRE_AVX2_CORES:
        return lib
    _say(f"OpenBLAS detected core '{lib.core}' on a CPU with {want} features; reloading with "
         f"OPENBLAS_CORETYPE={want}")
    os.environ["OPENBLAS_CORETYPE"] = want  # read by the library's constructor at load time
    try:
        with tempfile.TemporaryDirectory() as tmp:  # a copy, so the loader opens a second instance
            copy = os.path.join(tmp, os.path.basename(path))
            shutil.copy2(path, copy)
            fixed = _load(copy)
    finally:
        del os.environ["OPENBLAS_CORETYPE"]
    fixed.path = path
    return fixed


def _thread_count() -> int | None:
    """The BLAS thread count to set, or None to leave the library's own (see the module docstring)."""
    raw = env.choice("XLSTM_MLX_BLAS_THREADS", "auto")
    if raw.lower() == "auto":
        if os.environ.get("OPENBLAS_NUM_THREADS"):
            return None
        return 1 if (os.cpu_count() or 1) <= 2 else None
    if not raw.isdigit() or int(raw) < 1:
        raise UsageError(f"XLSTM_MLX_BLAS_THREADS={raw!r} is neither 'auto' nor a thread count >= 1; "
                         "set one of those or unset it")
    return int(raw)


def _libmlx_path() -> str | None:
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                if line.rstrip().endswith("/libmlx.so"):
                    return line.split(None, 5)[5].strip()
    except OSError:
        pass
    return None


def _check() -> str | None:
    """Compare MLX's matmul and inverse with numpy; return a description of a mismatch, else None."""
    import numpy as np
    import mlx.core as mx

    rng = np.random.default_rng(0)
    a = rng.standard_normal((67, 45)).astype(np.float32)
    b = rng.standard_normal((45, 38)).astype(np.float32)
    s = rng.standard_normal((24, 24)).astype(np.float32) + 8 * np.eye(24, dtype=np.float32)
    with mx.stream(mx.cpu):
        got = np.array(mx.array(a) @ mx.array(b))
        inv = np.array(mx.linalg.inv(mx.array(s)))
    def mm(x, y):  # float64 without BLAS (keeps numpy's own BLAS thread pool asleep)
        return (x.astype(np.float64)[:, :, None] * y.astype(np.float64)[None]).sum(1)

    err = float(np.abs(got - mm(a, b)).max())
    if not err < 1e-3:
        return f"matmul max-abs error {err:.3g}"
    # the few-row shapes the skinny kernel takes: x @ W.T (decode), W @ x, x @ W, with odd sizes
    x = rng.standard_normal((3, 45)).astype(np.float32)
    w = rng.standard_normal((77, 45)).astype(np.float32)
    with mx.stream(mx.cpu):
        mw, mxx = mx.array(w), mx.array(x)
        outs = [np.array(mxx @ mw.T), np.array(mw @ mxx[:1].T), np.array(mx.array(x[:, :38]) @ mx.array(b[:38]))]
    refs = [mm(x, w.T), mm(w, x[:1].T), mm(x[:, :38], b[:38])]
    for got_s, ref_s, what in zip(outs, refs, ("x @ W.T", "W @ x", "x @ W")):
        err = float(np.abs(got_s - ref_s).max())
        if not err < 1e-3:
            return f"{what} (few rows) max-abs error {err:.3g}"
    err = float(np.abs(mm(inv, s) - np.eye(24)).max())
    if not err < 1e-3:
        return f"inverse residual {err:.3g}"
    return None


def _attach_skinny(lib: _Lib, base: int, imports, targets: dict) -> dict:
    """Point the cblas_sgemm slot at the skinny-product kernel (which forwards to the library's sgemm), check
    it, and keep the library's sgemm there if it is switched off, missing or fails the check."""
    real = targets.get("cblas_sgemm")
    if not _skinny.wanted():
        return {"active": False, "reason": "XLSTM_MLX_SKINNY_SGEMM=0"}
    entry = _skinny.attach(real, lib.address("openblas_get_num_threads"))
    if entry is None:
        return {"active": False, "reason": _skinny.unavailable_reason()}
    _elf_got.write_slots(base, imports, {"cblas_sgemm": entry})
    bad = _check()
    if bad:
        _elf_got.write_slots(base, imports, {"cblas_sgemm": real})
        return {"active": False, "reason": f"the kernel failed its check ({bad}); OpenBLAS' sgemm kept"}
    return {"active": True, "isa": _skinny.isa(), "max_rows": _skinny.max_rows(), "k_block": _skinny.k_block_now(),
            "reason": "ok"}


def describe_skinny(skinny: dict) -> str:
    """One phrase for the verbose line: which code computes the few-row products."""
    if skinny.get("active"):
        blocks = f" in up to 16 K-blocks (of >= {skinny['k_block']})" if skinny.get("k_block") else ""
        return (f"products with <= {skinny['max_rows']} rows: xlstm-mlx skinny sgemm ({skinny['isa']}), "
                f"others: the library's sgemm{blocks}")
    return f"every sgemm through the library's sgemm ({skinny.get('reason')})"


def setup() -> dict:
    """Redirect libmlx's BLAS/LAPACK to the best available library (idempotent). Returns `info()`."""
    global _info
    if _info.get("active") or _info.get("reason") != "not set up":
        return info()
    choice = env.choice("XLSTM_MLX_BLAS", "auto")
    if sys.platform != "linux" or choice.lower() in ("off", "0", "none", "false"):
        _info = {"active": False, "reason": "disabled" if sys.platform == "linux" else "not Linux"}
        return info()
    import mlx.core  # noqa: F401  (loads libmlx.so)

    libmlx = _libmlx_path()
    if libmlx is None:
        _info = {"active": False, "reason": "libmlx.so not found in this process"}
        return info()
    try:
        imports = _elf_got.read_imports(libmlx, _IMPORT_PATTERN)
        base = _elf_got.load_base(libmlx)
    except (OSError, ValueError, StopIteration) as e:
        _info = {"active": False, "reason": f"cannot read libmlx imports: {e}"}
        _say(f"CPU BLAS unchanged ({_info['reason']})")
        return info()
    if "cblas_sgemm" not in imports.slots:
        _info = {"active": False, "reason": "libmlx imports no cblas_sgemm (not a netlib-linked wheel)"}
        return info()
    threads = _thread_count()
    reasons = []
    for label, path in _candidates(choice):
        try:
            lib = _open(path)
        except OSError as e:
            reasons.append(f"{label}: {e}")
            continue
        if threads is not None:
            lib.set_threads(threads)
        targets = {n: a for n in imports.slots if (a := lib.address(n)) is not None}
        old = _elf_got.write_slots(base, imports, targets)
        bad = _check()
        if bad:
            _elf_got.restore_slots(old, imports, base)
            reasons.append(f"{label} at {path}: check failed ({bad})")
            continue
        skinny = _attach_skinny(lib, base, imports, targets)
        _info = {"active": True, "library": label, "path": lib.path, "version": lib.config,
                 "core": lib.core, "threads": lib.threads, "symbols": len(targets), "reason": "ok",
                 "skinny": skinny, "thread_timeout": "=".join(thread_timeout_setting())}
        _say(f"CPU BLAS: {label} ({lib.config or path}; core {lib.core or '?'}, {lib.threads} threads, "
             f"workers loaded with {_info['thread_timeout']}), "
             f"{len(targets)} of libmlx's {len(imports.slots)} BLAS/LAPACK imports redirected; "
             f"{describe_skinny(skinny)}")
        return info()
    _info = {"active": False, "reason": "; ".join(reasons) or "no optimized BLAS found"}
    _say(f"CPU BLAS: MLX's bundled reference BLAS (slow). {_info['reason']}. See docs/cpu-blas.md")
    return info()
