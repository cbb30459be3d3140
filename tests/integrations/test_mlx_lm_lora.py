"""mlx_lm.lora fine-tunes our checkpoints through xlstm_mlx.integrations.mlx_lm (float and 4-bit, i.e. QLoRA):
a few LoRA steps on the CPU with mlx-lm's own trainer, dataset loader and adapter files; the loss is finite and
falls, and the saved adapter loads back onto a fresh model to give the fine-tuned model's logits."""

from __future__ import annotations

import json
import math
import types

import pytest

mlx_lm = pytest.importorskip("mlx_lm")

import mlx.core as mx  # noqa: E402

import xlstm_mlx.integrations.mlx_lm  # noqa: E402,F401  (registers mlx_lm.models.xlstm)
from xlstm_mlx.checkpoints.demo import demo_model_dir  # noqa: E402
from xlstm_mlx.cli import main as cli_main  # noqa: E402

DEMO = demo_model_dir()
pytestmark = pytest.mark.skipif(DEMO is None, reason="the bundled demo model is not installed")
LINES = ["ROMEO: But soft, what light through yonder window breaks? It is the east, and Juliet is the sun.",
         "JULIET: O Romeo, Romeo, wherefore art thou Romeo? Deny thy father and refuse thy name."]
ITERS = 6


def _args(data, adapters) -> types.SimpleNamespace:
    """What `mlx_lm.lora --train` builds from these flags and its defaults."""
    from mlx_lm.lora import CONFIG_DEFAULTS, build_parser

    flags = ["--model", str(DEMO), "--train", "--data", str(data), "--iters", str(ITERS), "--batch-size", "2",
             "--num-layers", "2", "--max-seq-length", "64", "--steps-per-report", "1", "--steps-per-eval", "1000",
             "--val-batches", "1", "--learning-rate", "1e-3", "--adapter-path", str(adapters), "--seed", "0"]
    args = vars(build_parser().parse_args(flags))
    for k, v in CONFIG_DEFAULTS.items():
        if args.get(k) is None:
            args[k] = v
    return types.SimpleNamespace(**args)


@pytest.mark.parametrize("quantize", [None, ["-q", "--bits", "4"]], ids=["float", "4-bit"])
def test_mlx_lm_lora_trains_our_model_and_the_adapter_loads_back(tmp_path, quantize):
    from mlx_lm.tuner.callbacks import TrainingCallback
    from mlx_lm.tuner.datasets import load_dataset
    from mlx_lm.lora import train_model

    model_dir = DEMO
    if quantize:
        model_dir = tmp_path / "demo-4bit"
        assert cli_main(["convert", "--model", str(DEMO), "--out", str(model_dir), *quantize]) == 0
    data = tmp_path / "data"
    data.mkdir()
    for name in ("train", "valid"):
        (data / f"{name}.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in LINES * 4))
    args = _args(data, tmp_path / "adapters")
    args.model = str(model_dir)

    model, tok = mlx_lm.load(str(model_dir))
    prompt = mx.array([tok.encode("ROMEO: But soft")])
    base = model(prompt)
    train_set, valid_set, _ = load_dataset(args, tok)
    losses = []

    class Record(TrainingCallback):
        def on_train_loss_report(self, info):
            losses.append(info["train_loss"])

    train_model(args, model, train_set, valid_set, Record())
    assert len(losses) == ITERS and all(math.isfinite(x) for x in losses)
    assert losses[-1] < 0.8 * losses[0], losses  # two lines, seen over and over: the loss must fall

    tuned = model(prompt)
    assert all((tmp_path / "adapters" / f).is_file() for f in ("adapters.safetensors", "adapter_config.json"))
    again, _ = mlx_lm.load(str(model_dir), adapter_path=str(tmp_path / "adapters"))
    loaded = again(prompt)
    # the same weights and the same float32 operations: equal up to summation order (none differs here)
    assert mx.allclose(loaded, tuned, rtol=0, atol=1e-5).item()
    assert not mx.allclose(loaded, base, rtol=0, atol=1e-3).item()  # and the adapter changed the model
