"""Training checkpoints: an exported model in the Hugging Face xlstm layout plus what resuming needs.

    OUT/config.json, model.safetensors, tokenizer files   the model (what load() and transformers read)
    OUT/trainer/params.safetensors                          float32 master weights
    OUT/trainer/optimizer.safetensors                       optimizer state (moments, step counter)
    OUT/trainer/state.json                                  step, configs, loss history
    OUT/best/                                               the model at its lowest held-out loss so far

The trainer directory is written beside the old one and swapped in by renames, so an interruption
while saving leaves a complete trainer state behind (the new one or the previous one).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_flatten, tree_unflatten

from xlstm_mlx.checkpoints.save import save_checkpoint
from xlstm_mlx.errors import UsageError

TRAINER = "trainer"


def export_model(model, out: Path, dtype: str, tokenizer_dir: Path, extra: dict) -> None:
    """Write config.json + model.safetensors (+ tokenizer files) atomically file by file."""
    tmp = out.parent / f".{out.name}.export-tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    save_checkpoint(model, tmp, dtype=dtype, tokenizer_dir=tokenizer_dir, extra_config=extra)
    out.mkdir(parents=True, exist_ok=True)
    for f in tmp.iterdir():
        os.replace(f, out / f.name)
    tmp.rmdir()


def save_trainer_state(out: Path, model, optimizer, state: dict) -> None:
    final = out / TRAINER
    tmp, old = out / f"{TRAINER}.tmp", out / f"{TRAINER}.old"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    mx.save_safetensors(str(tmp / "params.safetensors"), dict(tree_flatten(model.parameters())))
    mx.save_safetensors(str(tmp / "optimizer.safetensors"), dict(tree_flatten(optimizer.state)))
    (tmp / "state.json").write_text(json.dumps(state, indent=1) + "\n")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def find_trainer_state(out: Path) -> Path | None:
    for name in (TRAINER, f"{TRAINER}.old"):  # .old survives only an interruption between two renames
        d = out / name
        if (d / "state.json").is_file():
            return d
    return None


def load_trainer_state(d: Path, model, optimizer) -> dict:
    """Restore master weights and optimizer state in place; return state.json's contents."""
    state = json.loads((d / "state.json").read_text())
    params = mx.load(str(d / "params.safetensors"))
    expected = dict(tree_flatten(model.parameters()))
    if set(params) != set(expected) or any(params[k].shape != expected[k].shape for k in params):
        raise UsageError(f"{d}: the saved weights do not fit the configured model; train into a new --out "
                         "directory or pass --no-resume to start over")
    model.update(tree_unflatten(list(params.items())))
    optimizer.state = tree_unflatten(list(mx.load(str(d / "optimizer.safetensors")).items()))
    mx.eval(model.parameters(), optimizer.state)
    return state
