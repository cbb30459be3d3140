"""The skinny-product cblas_sgemm (skinny_sgemm.c): what libmlx's cblas_sgemm slot points at on Linux CPUs.

At decode every nn.Linear multiplies a few rows of activations by a whole weight matrix. OpenBLAS' sgemm
repacks the weight on every such call; the compiled kernel streams it once (docs/cpu-blas.md has the
figures). It handles products with at most `max_rows()` rows of op(A) (M) and forwards every
other call to the library's sgemm, cut along K into blocks of K / 8 products (at least 16, at most 64, at most
16 blocks; one library call each, accumulated into C by the library; products with a C of <= 8,192 elements stay
one call, except matrix-vector products): the many-row products of prefill are then summed more accurately than
the library sums them by itself (skinny_sgemm.c, blocked_sgemm, says why and what it costs).

    XLSTM_MLX_SKINNY_SGEMM=0   the reference path: the slot points at OpenBLAS' sgemm itself
    XLSTM_MLX_SGEMM_K_BLOCKS=0 the kernel for few rows, the library's own sum for the rest (k_block(0))
    reference()                the same for a with-block (the kernel forwards every call), for comparisons

The kernel is a C extension built by `pip install` (setup.py, optional). Without a compiler there is none,
and blas.setup() says so instead of pretending.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.machinery
import sys
from pathlib import Path

from xlstm_mlx import env

_NAME = "_skinny_sgemm"
DEFAULT_K_BLOCK = 16  # shortest K-block of the many-row products (skinny_sgemm.c, blocked_sgemm)
_lib: ctypes.CDLL | None = None
_missing: str | None = None

# cblas_sgemm(order, transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc), LP64
SGEMM_ARGS = [ctypes.c_int] * 6 + [ctypes.c_float, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p,
                                   ctypes.c_int, ctypes.c_float, ctypes.c_void_p, ctypes.c_int]


def library_path() -> Path | None:
    """The built extension next to this file (any of this interpreter's extension suffixes), else the one of an
    installed copy of the package on sys.path (a source checkout run from its root, e.g. `python -m pytest`
    after `pip install .`, imports the unbuilt source tree first), or None."""
    here = Path(__file__).parent
    dirs = [here] + [Path(p) / "xlstm_mlx" / "platform" for p in sys.path if p]
    for d in dirs:
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            if (d / (_NAME + suffix)).is_file():
                return d / (_NAME + suffix)
    return None


def _open() -> ctypes.CDLL | None:
    global _lib, _missing
    if _lib is not None or _missing is not None:
        return _lib
    path = library_path()
    if path is None:
        _missing = ("the skinny-product kernel was not built at install time (no C compiler then?); "
                    "reinstall with gcc present to get it (docs/cpu-blas.md)")
        return None
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as e:
        _missing = f"cannot load {path.name}: {e}"
        return None
    try:
        lib.xl_skinny_sgemm.argtypes = SGEMM_ARGS
        lib.xl_skinny_sgemm.restype = None
        lib.xl_skinny_init.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        lib.xl_skinny_set_enabled.argtypes = [ctypes.c_int]
        lib.xl_skinny_isa.restype = ctypes.c_char_p
        lib.xl_skinny_set_isa.argtypes = [ctypes.c_char_p]
        lib.xl_skinny_real.restype = ctypes.c_void_p
        lib.xl_skinny_counts.argtypes = [ctypes.POINTER(ctypes.c_ulonglong), ctypes.c_int]
        lib.xl_skinny_set_k_block.argtypes = [ctypes.c_int]
    except AttributeError as e:  # a build from another version of the source
        _missing = f"{path.name} is a stale build ({e}); reinstall xlstm-mlx to rebuild it"
        return None
    _lib = lib
    return lib


def unavailable_reason() -> str | None:
    """Why there is no kernel (None when there is one)."""
    _open()
    return _missing


def wanted() -> bool:
    """XLSTM_MLX_SKINNY_SGEMM (default on)."""
    return env.flag("XLSTM_MLX_SKINNY_SGEMM")


def attach(real_sgemm: int, get_threads: int | None) -> int | None:
    """Make the kernel forward to `real_sgemm` (and ask `get_threads` for its thread count); return the
    address to put in libmlx's cblas_sgemm slot, or None without a kernel."""
    lib = _open()
    if lib is None:
        return None
    lib.xl_skinny_init(real_sgemm, get_threads)
    lib.xl_skinny_set_k_block(DEFAULT_K_BLOCK if env.flag("XLSTM_MLX_SGEMM_K_BLOCKS") else 0)
    lib.xl_skinny_set_enabled(1)
    return ctypes.cast(lib.xl_skinny_sgemm, ctypes.c_void_p).value


def address() -> int | None:
    lib = _open()
    return None if lib is None else ctypes.cast(lib.xl_skinny_sgemm, ctypes.c_void_p).value


def real_address() -> int | None:
    """The sgemm the kernel forwards to (set by attach())."""
    lib = _open()
    return None if lib is None else lib.xl_skinny_real()


def isa() -> str | None:
    """The vector instruction set the kernel picked for this CPU (avx512f, avx2+fma, sse2, neon, generic)."""
    lib = _open()
    return None if lib is None else lib.xl_skinny_isa().decode()


ALL_ISAS = ("avx512f", "avx2+fma", "sse2", "neon", "generic")


def supported_isas() -> list[str]:
    """Every instruction set whose kernels this CPU runs (the widest is the one in use unless use_isa())."""
    lib = _open()
    if lib is None:
        return []
    current = isa()
    out = [name for name in ALL_ISAS if lib.xl_skinny_set_isa(name.encode())]
    lib.xl_skinny_set_isa(current.encode())
    return out


@contextlib.contextmanager
def use_isa(name: str):
    """Run the kernels of `name` (one of supported_isas()) inside the block, process-wide (tests)."""
    lib = _open()
    current = isa()
    if lib is None or not lib.xl_skinny_set_isa(name.encode()):
        raise ValueError(f"no {name} kernels on this CPU (supported: {supported_isas()})")
    try:
        yield
    finally:
        lib.xl_skinny_set_isa(current.encode())


def max_rows() -> int | None:
    lib = _open()
    return None if lib is None else int(lib.xl_skinny_max_rows())


def set_k_block(n: int) -> int | None:
    """Set the shortest K-block of the many-row products forwarded to the library (0: one call, the library's own
    summation; default DEFAULT_K_BLOCK; blocks are K / 8 long within [n, max(n, 64)], at most 16 of them:
    skinny_sgemm.c says why); returns the previous one (None without a kernel)."""
    lib = _open()
    return None if lib is None else int(lib.xl_skinny_set_k_block(int(n)))


def k_block_now() -> int | None:
    """The K-block length in use (0: the library's own sum; None without a kernel)."""
    lib = _open()
    if lib is None:
        return None
    n = int(lib.xl_skinny_set_k_block(0))
    lib.xl_skinny_set_k_block(n)
    return n


@contextlib.contextmanager
def k_block(n: int):
    """The K-block length `n` inside the block, process-wide (tests, benchmarks: 0 is the library's sum)."""
    before = set_k_block(n)
    try:
        yield
    finally:
        if before is not None:
            set_k_block(before)


def enabled() -> bool:
    lib = _open()
    return bool(lib is not None and lib.xl_skinny_enabled())


def counts(reset: bool = False) -> tuple[int, int]:
    """(calls the kernel computed, calls it forwarded to the library's sgemm) since the last reset."""
    lib = _open()
    if lib is None:
        return (0, 0)
    out = (ctypes.c_ulonglong * 2)()
    lib.xl_skinny_counts(out, int(reset))
    return int(out[0]), int(out[1])


@contextlib.contextmanager
def reference():
    """Within the block every call goes to the library's sgemm (the reference path), process-wide."""
    lib = _open()
    before = enabled()
    if lib is not None:
        lib.xl_skinny_set_enabled(0)
    try:
        yield
    finally:
        if lib is not None:
            lib.xl_skinny_set_enabled(int(before))


def sgemm(fn: int, order: int, ta: int, tb: int, m: int, n: int, k: int, alpha: float, a, lda: int, b, ldb: int,
          beta: float, c, ldc: int) -> None:
    """Call a cblas_sgemm-shaped function at address `fn` on numpy float32 buffers (tests, benchmarks)."""
    f = ctypes.CFUNCTYPE(None, *SGEMM_ARGS)(fn)
    f(order, ta, tb, m, n, k, alpha, a.ctypes.data, lda, b.ctypes.data, ldb, beta, c.ctypes.data, ldc)
