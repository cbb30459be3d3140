"""Loading an official xLSTM stack checkpoint directory (format: docs/official-stacks.md).

    <dir>/xlstm_config.json    the official xLSTMLMModelConfig as JSON (mlstm_block / slstm_block inside)
    <dir>/model.safetensors    the xLSTMLMModel state_dict, official key names and layouts (or shards)
    <dir>/tokenizer.json ...   optional

loading.load() calls `is_stack_dir` first and hands such directories to `load_stack`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_unflatten

from .config import CheckpointError
from .profiles import NumericsProfile
from .safetensors_files import find_weight_files, read_header
from .stack_config import infer_stack_args
from .stack_model import StackModel

CONFIG_NAME = "xlstm_config.json"
# official stack configs have these keys; the xLSTM-7B config.json has none of them
_STACK_KEYS = ("mlstm_block", "slstm_block", "slstm_at", "_block_map")


def _read_json(f: Path) -> dict:
    try:
        return json.loads(f.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{f}: not valid JSON ({e})") from None


def stack_config_file(model_dir: Path) -> Path | None:
    """The official stack config of this directory, or None if it is not an official stack."""
    f = model_dir / CONFIG_NAME
    if f.exists():
        return f
    f = model_dir / "config.json"
    if f.exists() and any(k in _read_json(f) for k in _STACK_KEYS):
        return f
    return None


def is_stack_dir(model_dir: Path) -> bool:
    return stack_config_file(Path(model_dir)) is not None


def read_stack_config(model_dir: Path) -> dict:
    f = stack_config_file(model_dir)
    if f is None:
        raise CheckpointError(f"{model_dir}: no {CONFIG_NAME}; not an official xLSTM stack checkpoint")
    cfg = _read_json(f)
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{f}: expected a JSON object (the xLSTMLMModelConfig fields)")
    return cfg


def load_stack(model_dir: Path, prof: NumericsProfile, verbose: bool = False, check_numerics: bool = False):
    """Build and fill a StackModel. Returns the model (the caller adds the tokenizer)."""
    from .loading import check_strict  # loading imports this module lazily; no cycle at import time

    cfg = read_stack_config(model_dir)
    files = find_weight_files(model_dir)
    shapes = {}
    for f in files:
        for k, entry in read_header(f).items():
            if k in shapes:
                raise CheckpointError(f"tensor {k!r} appears in more than one file of {model_dir}")
            shapes[k] = tuple(entry["shape"])
    args = infer_stack_args(shapes, cfg)
    model = StackModel(args, prof)

    weights = {}
    for f in files:
        try:
            weights.update(mx.load(str(f)))
        except Exception as e:
            raise CheckpointError(f"{f}: could not be read ({e}); re-download or re-convert it") from None
    stored = sorted({str(a.dtype).removeprefix("mlx.core.") for a in weights.values()})
    weights = model.sanitize(weights)
    check_strict(model, {k: tuple(v.shape) for k, v in weights.items()})
    target = prof.mx_compute_dtype
    head = getattr(prof, "mx_head_dtype", target)  # profiles that keep the lm_head in float32

    def dtype_of(k):
        if ".slstm_cell." in k:  # the sLSTM recurrent kernel and bias feed float32 gate math directly
            return mx.float32
        return head if k == "lm_head.weight" else target

    weights = {k: v.astype(dtype_of(k)) for k, v in weights.items()}
    model.update(tree_unflatten(list(weights.items())))
    mx.eval(model.parameters())
    model.check_numerics = check_numerics
    model.stored_dtypes = stored
    model.model_dir = model_dir
    if verbose:
        print(f"[xlstm-mlx] official xLSTM stack {args.ratio()} blocks={','.join(args.block_types)}",
              file=sys.stderr)
    return model
