"""MLX's buffer-cache limit on a CPU-only build (platform.set_cpu_cache_limit): raised to a quarter of the physical
memory by default and never lowered, set in MiB by XLSTM_MLX_CPU_CACHE_MB, a bad value refused; GPU builds keep
MLX's default. Each test restores the limit it found."""

import mlx.core as mx
import pytest

from xlstm_mlx import platform
from xlstm_mlx.errors import UsageError

CPU_ONLY = not (mx.metal.is_available() or mx.cuda.is_available())


@pytest.fixture
def restore_limit():
    before = mx.set_cache_limit(0)
    mx.set_cache_limit(before)
    yield before
    mx.set_cache_limit(before)


def _limit() -> int:
    v = mx.set_cache_limit(0)
    mx.set_cache_limit(v)
    return v


@pytest.mark.skipif(not CPU_ONLY, reason="a GPU build keeps MLX's own allocator default")
def test_auto_raises_to_a_quarter_of_memory(restore_limit, monkeypatch):
    monkeypatch.delenv("XLSTM_MLX_CPU_CACHE_MB", raising=False)
    mx.set_cache_limit(32 << 20)  # MLX's default on the CPU
    info = platform.set_cpu_cache_limit()
    ram = platform._physical_memory()
    assert ram and _limit() == ram // 4 == info["limit"] and info["previous"] == 32 << 20 and info["changed"]


@pytest.mark.skipif(not CPU_ONLY, reason="a GPU build keeps MLX's own allocator default")
def test_auto_never_lowers(restore_limit, monkeypatch):
    monkeypatch.delenv("XLSTM_MLX_CPU_CACHE_MB", raising=False)
    high = platform._physical_memory()  # above a quarter
    mx.set_cache_limit(high)
    info = platform.set_cpu_cache_limit()
    assert _limit() == high and not info["changed"]


@pytest.mark.skipif(not CPU_ONLY, reason="a GPU build keeps MLX's own allocator default")
def test_environment_sets_mib(restore_limit, monkeypatch):
    monkeypatch.setenv("XLSTM_MLX_CPU_CACHE_MB", "48")
    info = platform.set_cpu_cache_limit()
    assert _limit() == 48 << 20 == info["limit"] and info["reason"] == "XLSTM_MLX_CPU_CACHE_MB"


@pytest.mark.parametrize("bad", ["-1", "lots", "1.5"])
def test_bad_value_is_refused(restore_limit, monkeypatch, bad):
    if not CPU_ONLY:
        pytest.skip("a GPU build does not read the switch")
    monkeypatch.setenv("XLSTM_MLX_CPU_CACHE_MB", bad)
    before = _limit()
    with pytest.raises(UsageError, match="XLSTM_MLX_CPU_CACHE_MB"):
        platform.set_cpu_cache_limit()
    assert _limit() == before


def test_gpu_build_keeps_mlx_default(restore_limit):
    if CPU_ONLY:
        pytest.skip("a CPU-only build")
    before = _limit()
    assert not platform.set_cpu_cache_limit()["changed"] and _limit() == before
