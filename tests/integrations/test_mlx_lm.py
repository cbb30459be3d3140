"""mlx-lm drives our checkpoints through xlstm_mlx.integrations.mlx_lm: greedy tokens and text equal ours (float
and 4-bit), batch_generate rows equal our single runs, the cache is one ArraysCache per block."""

from __future__ import annotations

import pytest

mlx_lm = pytest.importorskip("mlx_lm")

import xlstm_mlx.integrations.mlx_lm as adapter  # noqa: E402  (registers mlx_lm.models.xlstm)
from xlstm_mlx import generate, load, stream_generate  # noqa: E402
from xlstm_mlx.checkpoints.demo import demo_model_dir  # noqa: E402
from xlstm_mlx.cli import main as cli_main  # noqa: E402

DEMO = demo_model_dir()
pytestmark = pytest.mark.skipif(DEMO is None, reason="the bundled demo model is not installed")
PROMPTS = ["ROMEO:", "To be, or not to be", "O"]


@pytest.fixture(scope="module")
def ours():
    return load(DEMO)


@pytest.fixture(scope="module")
def theirs():
    return mlx_lm.load(str(DEMO))


def test_the_module_is_registered_for_our_model_types():
    import sys

    for name in adapter.MODEL_TYPES:
        assert sys.modules[f"mlx_lm.models.{name}"] is adapter


def mlx_lm_text(ours: str) -> str:
    """What mlx-lm prints for our text: its BPE streaming detokenizer drops the first generated token's leading
    space (mlx_lm/tokenizer_utils.py `_maybe_trim_space`); everything after it is the same text."""
    return ours[1:] if ours.startswith(" ") else ours


def test_mlx_lm_generate_equals_ours(ours, theirs):
    model, tok = ours
    m, t = theirs
    assert isinstance(m, adapter.Model)
    for prompt in PROMPTS:
        tokens = [r.token for r in mlx_lm.stream_generate(m, t, prompt=prompt, max_tokens=30)]
        assert tokens == [r.token for r in stream_generate(model, tok, prompt, 30)]
        assert mlx_lm.generate(m, t, prompt=prompt, max_tokens=30) == mlx_lm_text(generate(model, tok, prompt, 30))


def test_mlx_lm_batch_generate_equals_single_runs(ours, theirs):
    model, tok = ours
    m, t = theirs
    r = mlx_lm.batch_generate(m, t, prompts=[tok.encode(p) for p in PROMPTS], max_tokens=20)
    assert r.texts == [generate(model, tok, p, 20) for p in PROMPTS]


def test_cache_is_one_arrays_cache_per_block(theirs):
    from mlx_lm.models.cache import ArraysCache

    m, _ = theirs
    cache = m.make_cache()
    assert len(cache) == len(m.layers) and all(isinstance(c, ArraysCache) for c in cache)
    assert all(len(c.cache) == 3 for c in cache)  # mLSTM: C, n, m


def test_quantized_checkpoint_through_mlx_lm_equals_ours(tmp_path):
    out = tmp_path / "demo-4bit"
    assert cli_main(["convert", "--model", str(DEMO), "--out", str(out), "-q", "--bits", "4"]) == 0
    model, tok = load(out)
    m, t = mlx_lm.load(str(out))
    import mlx.nn as nn

    assert any(isinstance(x, nn.QuantizedLinear) for _, x in m.named_modules())
    for prompt in PROMPTS[:2]:
        tokens = [r.token for r in mlx_lm.stream_generate(m, t, prompt=prompt, max_tokens=20)]
        assert tokens == [r.token for r in stream_generate(model, tok, prompt, 20)]
        assert mlx_lm.generate(m, t, prompt=prompt, max_tokens=20) == mlx_lm_text(generate(model, tok, prompt, 20))
