"""Model families, registered by name (the contract each implements is models/base.py).

    xlstm7b       NX-AI xLSTM-7B and its family (Hugging Face xlstm / official xLSTMLarge layouts)
    xlstm_stack   the official xlstm package's xLSTMLMModel (mixed mLSTM/sLSTM stacks)

A family is imported when first asked for, the way mlx-lm maps a model_type to its module.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

from xlstm_mlx.errors import CheckpointError

FAMILIES = {
    # detection tries them in this order
    "xlstm_stack": "xlstm_mlx.models.xlstm_stack",
    "xlstm7b": "xlstm_mlx.models.xlstm7b",
}


def get_family(name: str) -> ModuleType:
    if name not in FAMILIES:
        raise CheckpointError(f"unknown model family {name!r}; known families: {', '.join(FAMILIES)}")
    return importlib.import_module(FAMILIES[name])


def families() -> list[ModuleType]:
    return [get_family(n) for n in FAMILIES]


def detect_family(model_dir: Path, keys: set[str]) -> ModuleType:
    """The family that reads this checkpoint (from its tensor names and config files)."""
    for fam in families():
        if fam.detect(model_dir, keys):
            return fam
    shown = sorted(keys)[:8]
    raise CheckpointError(
        f"{model_dir}: no known model family matches this checkpoint (tensors: {shown}"
        f"{' ...' if len(keys) > 8 else ''}); known families: "
        + "; ".join(f"{f.NAME} ({f.LABEL})" for f in families())
    )


def family_of(model) -> ModuleType:
    """The family a built model belongs to."""
    for fam in families():
        if isinstance(model, fam.Model):
            return fam
    raise TypeError(f"{type(model).__name__} is not a model of a registered family ({', '.join(FAMILIES)})")
