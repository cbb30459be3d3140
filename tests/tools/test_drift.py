"""`xlstm-mlx drift`: the metrics, the run against the exact profile, the outputs and the user errors."""

import builtins
import json

import mlx.core as mx
import numpy as np
import pytest

from xlstm_mlx.checkpoints.random import make_random_checkpoint
from xlstm_mlx.cli import main
from xlstm_mlx.errors import UsageError
from xlstm_mlx.tools import drift as drift_mod


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_random_checkpoint(tmp_path_factory.mktemp("tiny"), "tiny", seed=3)


@pytest.fixture()
def text(tmp_path):
    f = tmp_path / "text.txt"
    f.write_text("To be, or not to be, that is the question. " * 12)
    return f


def test_logit_metrics_against_numpy():
    rng = np.random.default_rng(0)
    ze = rng.standard_normal((1, 5, 7)) * 3
    z = ze + rng.standard_normal(ze.shape) * 1e-3
    m = drift_mod.logit_metrics(z, ze)
    p = np.exp(ze) / np.exp(ze).sum(-1, keepdims=True)
    q = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    kl = (p * np.log(p / q)).sum(-1)
    assert m["max_abs"] == pytest.approx(np.abs(z - ze).max())
    assert m["kl_mean"] == pytest.approx(kl.mean(), rel=1e-6) and m["kl_max"] == pytest.approx(kl.max(), rel=1e-6)
    assert m["top1"] == (z.argmax(-1) == ze.argmax(-1)).mean()
    assert drift_mod.logit_metrics(ze, ze) == {"max_abs": 0.0, "mean_abs": 0.0, "top1": 1.0, "kl_mean": 0.0,
                                               "kl_max": 0.0}


def test_state_metrics_compare_at_the_exact_stabilizer():
    """The same state stored with a different stabilizer m (C, n scaled by e^-m) has zero C and n error."""
    rng = np.random.default_rng(1)
    C, n = rng.standard_normal((1, 2, 3, 4)), rng.standard_normal((1, 2, 3))
    m = rng.standard_normal((1, 2, 1))
    exact = tuple(mx.array(a, dtype=mx.float64) for a in (C, n, m))
    shifted = (mx.array(C * np.exp(-0.5)[..., None], dtype=mx.float64), mx.array(n * np.exp(-0.5), dtype=mx.float64),
               mx.array(m + 0.5, dtype=mx.float64))
    s = drift_mod.state_metrics(shifted, exact)
    assert s["C"] < 1e-14 and s["n"] < 1e-14 and s["m"] == pytest.approx(0.5 / max(np.abs(m).max(), 1.0))


def test_drift_run_against_exact(tiny):
    tokens = np.arange(3, 3 + 150) % 200 + 3
    result = drift_mod.drift(tiny, tokens, ("parity", "fast"), segment=64, bos_id=0, progress=False)
    assert result["tokens"] == 151 and [p["tokens"] for p in result["points"]] == [64, 128, 151]
    for pt in result["points"]:
        par, fast = pt["profiles"]["parity"], pt["profiles"]["fast"]
        assert len(par["states"]) == 2  # one entry per block
        # float32 is ~1e-5 from float64 on logits, bfloat16 orders of magnitude further; neither is NaN
        assert 0 < par["logits"]["max_abs"] < 1e-3 < fast["logits"]["max_abs"] < 10
        assert par["logits"]["top1"] == 1.0 and max(s["C"] for s in par["states"]) < 1e-4
        assert all(np.isfinite(v) for s in fast["states"] for v in s.values())


def test_cli_writes_json_and_png_and_refuses_overwrite(tiny, text, tmp_path, capsys):
    out = tmp_path / "res"
    args = ["drift", "--model", str(tiny), "--data", str(text), "--tokens", "200", "--segment", "100",
            "--out", str(out)]
    assert main(args) == 0
    data = json.loads((tmp_path / "res.json").read_text())
    assert data["tokens"] == 201 and set(data["summary"]) == {"parity", "fast"}
    assert (tmp_path / "res.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    err = capsys.readouterr().err
    assert "[drift] 201/201 tokens (100%)" in err
    assert main(args) == 2 and "--force" in capsys.readouterr().err
    assert main(args + ["--force"]) == 0


def test_too_little_text_is_a_clear_error(tiny, text, tmp_path, capsys):
    assert main(["drift", "--model", str(tiny), "--data", str(text), "--tokens", "100000",
                 "--out", str(tmp_path / "x")]) == 2
    assert "fewer than --tokens" in capsys.readouterr().err


def test_exact_in_the_compared_profiles_is_refused(tiny):
    with pytest.raises(UsageError, match="reference"):
        drift_mod.drift(tiny, np.arange(5) + 3, ("exact",), progress=False)


def test_missing_matplotlib_is_a_clear_error(monkeypatch, tmp_path):
    real_import = builtins.__import__

    def no_matplotlib(name, *a, **k):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    with pytest.raises(UsageError, match="matplotlib"):
        drift_mod.plot({"points": [], "profiles": [], "model": "m", "tokens": 0}, tmp_path / "x.png")
