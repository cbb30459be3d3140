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


# ------------------------------------------------------------------------------ convert --mlx-lm: no import first
def _mlx_lm_cli_generate(model_dir, prompt: str, max_tokens: int) -> str:
    """`mlx_lm.generate --model DIR --trust-remote-code` in a fresh interpreter that never imports xlstm_mlx
    itself: mlx-lm finds the model code through config.json's model_file."""
    import os
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "mlx_lm", "generate", "--model", str(model_dir), "--trust-remote-code",
           "--prompt", prompt, "--max-tokens", str(max_tokens), "--temp", "0", "--verbose", "False",
           "--ignore-chat-template"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.endswith("\n"), r.stdout
    return r.stdout[:-1]  # print(response) adds one newline


@pytest.mark.parametrize("quantize", [[], ["-q", "--bits", "4"]], ids=["float", "4-bit"])
def test_convert_mlx_lm_runs_under_mlx_lm_generate_with_trust_remote_code(tmp_path, quantize):
    """The bundled model (real text: a byte tokenizer's random output is invalid UTF-8, which each detokenizer
    replaces in its own way) converted with --mlx-lm: the mlx_lm.generate CLI prints our greedy text."""
    import json

    from xlstm_mlx.integrations.mlx_lm_files import MODEL_FILE

    out = tmp_path / "demo-mlx-lm"
    assert cli_main(["convert", "--model", str(DEMO), "--out", str(out), "--mlx-lm", *quantize]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_file"] == MODEL_FILE and (out / MODEL_FILE).is_file()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # model_file is a known key to our loader: no warning
        model, tok = load(out)
    for prompt in PROMPTS[:2]:
        assert _mlx_lm_cli_generate(out, prompt, 30) == mlx_lm_text(generate(model, tok, prompt, 30, temp=0.0))


def test_convert_mlx_lm_random_checkpoint_tokens_equal_ours(tmp_path):
    """A tiny random checkpoint: mlx-lm in a fresh interpreter (xlstm_mlx imported only by the model file) draws
    our greedy token ids. The prompts go in as ids: this byte tokenizer's tokenizer.json has no BOS post-processor
    while its tokenizer_config asks for one (add_bos_token), which our tokenizer honours and mlx-lm's does not."""
    import json
    import subprocess
    import sys

    from xlstm_mlx.checkpoints.random import make_random_checkpoint

    src = make_random_checkpoint(tmp_path / "tiny", "tiny", seed=5)
    out = tmp_path / "tiny-mlx-lm"
    assert cli_main(["convert", "--model", str(src), "--out", str(out), "--mlx-lm"]) == 0
    model, tok = load(out)
    prompts = [tok.encode(p) for p in ("hello", "The quick brown fox")]
    code = ("import json, sys, mlx_lm\n"
            "assert 'xlstm_mlx' not in sys.modules\n"
            f"m, t = mlx_lm.load({str(out)!r}, trust_remote_code=True)\n"
            f"print(json.dumps([[r.token for r in mlx_lm.stream_generate(m, t, prompt=p, max_tokens=24)] "
            f"for p in {prompts!r}]))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == [[x.token for x in stream_generate(model, tok, p, 24)] for p in prompts]


def test_mlx_lm_refuses_the_model_file_without_trust_remote_code(tmp_path):
    from xlstm_mlx.checkpoints.random import make_random_checkpoint

    out = tmp_path / "tiny-mlx-lm"
    assert cli_main(["convert", "--model", str(make_random_checkpoint(tmp_path / "t", "tiny", seed=1)),
                     "--out", str(out), "--mlx-lm"]) == 0
    with pytest.raises(ValueError, match="trust_remote_code"):
        mlx_lm.load(str(out))
    m, _ = mlx_lm.load(str(out), trust_remote_code=True)
    assert type(m).__name__ == "Model" and type(m).__module__ == "xlstm_mlx.integrations.mlx_lm"


def test_convert_without_mlx_lm_drops_a_stale_model_file(tmp_path):
    import json

    from xlstm_mlx.checkpoints.random import make_random_checkpoint

    first = tmp_path / "a"
    assert cli_main(["convert", "--model", str(make_random_checkpoint(tmp_path / "t", "tiny", seed=1)),
                     "--out", str(first), "--mlx-lm"]) == 0
    second = tmp_path / "b"
    assert cli_main(["convert", "--model", str(first), "--out", str(second)]) == 0
    assert "model_file" not in json.loads((second / "config.json").read_text())
