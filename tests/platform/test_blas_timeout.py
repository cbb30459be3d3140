"""OPENBLAS_THREAD_TIMEOUT: platform/blas.py loads OpenBLAS with its workers' spin timeout set (docs/bench.md
"CPU, 2026-12-03 session 14"), unless the user set one; the process environment is left as it was."""

import os

from xlstm_mlx.platform import blas


def _seen_at_load(monkeypatch):
    seen = {}

    class Fake:
        def __init__(self, path):
            seen.update({k: os.environ.get(k) for k in blas._TIMEOUT_VARS}, path=path)

    monkeypatch.setattr(blas, "_Lib", Fake)
    blas._load("/some/libopenblas.so")
    return seen


def test_ours_during_the_load_only(monkeypatch):
    for name in blas._TIMEOUT_VARS:
        monkeypatch.delenv(name, raising=False)
    seen = _seen_at_load(monkeypatch)
    assert seen["OPENBLAS_THREAD_TIMEOUT"] == str(blas.THREAD_TIMEOUT) and seen["path"] == "/some/libopenblas.so"
    assert "OPENBLAS_THREAD_TIMEOUT" not in os.environ  # removed again
    assert blas.thread_timeout_setting() == ("OPENBLAS_THREAD_TIMEOUT", str(blas.THREAD_TIMEOUT))


def test_the_users_value_is_respected(monkeypatch):
    for name, value in (("OPENBLAS_THREAD_TIMEOUT", "28"), ("GOTO_THREAD_TIMEOUT", "4")):
        for other in blas._TIMEOUT_VARS:
            monkeypatch.delenv(other, raising=False)
        monkeypatch.setenv(name, value)
        seen = _seen_at_load(monkeypatch)
        assert seen[name] == value
        assert all(seen[o] is None for o in blas._TIMEOUT_VARS if o != name)
        assert os.environ[name] == value
        assert blas.thread_timeout_setting() == (name, value)


def test_recorded_in_the_set_up_info():
    info = blas.info()
    if info.get("active"):
        assert info["thread_timeout"] == "=".join(blas.thread_timeout_setting())
