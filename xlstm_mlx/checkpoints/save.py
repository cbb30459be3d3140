"""Write a model of any family as a checkpoint directory in its family's stored layout.

xLSTM-7B family: a Hugging Face `xlstm` directory (config.json + model.safetensors), which transformers'
xLSTMForCausalLM.from_pretrained and our load() both read. Official stacks: xlstm_config.json (the
xLSTMLMModelConfig fields) + the official state_dict layout.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_flatten

from xlstm_mlx import atomic
from xlstm_mlx.models import family_of
from xlstm_mlx.profiles import DTYPES

# the tokenizer's files (and generation settings) a model directory carries: the one list of them
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json",
                   "chat_template.jinja", "tokenizer.model", "vocab.json", "merges.txt", "added_tokens.json")


def save_checkpoint(model, out_dir: str | Path, dtype: str | None = None,
                    tokenizer_dir: str | Path | None = None, extra_config: dict | None = None) -> Path:
    """Save weights (cast to `dtype`, default: as they are) and config; copy tokenizer files if given.
    Each file is written atomically (atomic.py)."""
    family = family_of(model)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    weights = family.export(dict(tree_flatten(model.parameters())), model.args)
    if dtype is not None:
        weights = {k: v.astype(DTYPES[dtype]) if mx.issubdtype(v.dtype, mx.floating) else v for k, v in weights.items()}
    atomic.save_safetensors(out / "model.safetensors", weights, metadata={"format": "pt"})
    cfg = family.export_config(model.args, {})
    stored = {str(v.dtype).removeprefix("mlx.core.") for v in weights.values()}
    cfg["torch_dtype"] = stored.pop() if len(stored) == 1 else "float32"
    cfg.update(extra_config or {})
    atomic.write_text(out / family.CONFIG_NAME, json.dumps(cfg, indent=2) + "\n")
    if tokenizer_dir is not None:
        for name in TOKENIZER_FILES:
            src = Path(tokenizer_dir) / name
            if src.exists() and src.resolve() != (out / name).resolve():
                shutil.copy(src, out / name)
    return out
