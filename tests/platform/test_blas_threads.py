"""XLSTM_MLX_BLAS_THREADS: the BLAS thread count platform/blas.py sets (docs/bench.md, CPU section)."""

import pytest

from xlstm_mlx.errors import UsageError
from xlstm_mlx.platform import blas


def test_auto_is_one_thread_on_two_cores(monkeypatch):
    monkeypatch.delenv("XLSTM_MLX_BLAS_THREADS", raising=False)
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    monkeypatch.setattr(blas.os, "cpu_count", lambda: 2)
    assert blas._thread_count() == 1
    monkeypatch.setattr(blas.os, "cpu_count", lambda: 16)
    assert blas._thread_count() is None  # OpenBLAS' own count


def test_auto_respects_openblas_num_threads(monkeypatch):
    monkeypatch.delenv("XLSTM_MLX_BLAS_THREADS", raising=False)
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "2")
    monkeypatch.setattr(blas.os, "cpu_count", lambda: 2)
    assert blas._thread_count() is None


def test_explicit_count_and_bad_value(monkeypatch):
    monkeypatch.setenv("XLSTM_MLX_BLAS_THREADS", "3")
    assert blas._thread_count() == 3
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv("XLSTM_MLX_BLAS_THREADS", bad)
        with pytest.raises(UsageError, match="XLSTM_MLX_BLAS_THREADS"):
            blas._thread_count()
