"""Convert an official `xlstm` xLSTMLMModel (live, or a saved state_dict plus its config) into the
official-stack checkpoint directory that `load()` reads (docs/official-stacks.md):

    <out>/xlstm_config.json   the xLSTMLMModelConfig as JSON
    <out>/model.safetensors   the state_dict, official key names and layouts, stored dtypes kept

    xlstm-mlx convert-official --state-dict model.pt --config config.yaml --out DIR

Tensors are written as they are (no renaming, no re-layout): the loader handles both sLSTM backend
layouts, so the file stays a faithful copy of what the official package holds. The result is
validated with the loader's own structure inference before this returns.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
from pathlib import Path

import mlx.core as mx

from xlstm_mlx import atomic
from xlstm_mlx.checkpoints.outdir import prepare_out
from xlstm_mlx.errors import CheckpointError, MissingFileError, UsageError
from xlstm_mlx.models.xlstm_stack.args import infer_stack_args
from xlstm_mlx.checkpoints.save import TOKENIZER_FILES
from xlstm_mlx.models.xlstm_stack import CONFIG_NAME
from xlstm_mlx.profiles import DTYPES



def config_to_dict(config) -> dict:
    """xLSTMLMModelConfig (dataclass), a plain dict, or a training config with a `model` section."""
    if dataclasses.is_dataclass(config):
        return dataclasses.asdict(config)
    if hasattr(config, "to_container"):  # OmegaConf DictConfig, without importing omegaconf
        config = config.to_container(resolve=True)
    if not isinstance(config, dict):
        raise TypeError(f"config must be an xLSTMLMModelConfig, a dict or a JSON/YAML file, got {type(config).__name__}")
    if "model" in config and isinstance(config["model"], dict) and "embedding_dim" in config["model"]:
        config = config["model"]  # the training configs of the xlstm repo nest the model config
    return json.loads(json.dumps(config))  # plain JSON types only, and a copy


def _existing_file(path: str | Path, what: str) -> Path:
    path = Path(path).expanduser()
    if path.is_dir():
        raise UsageError(f"{what} {path} is a directory; give the file")
    if not path.is_file():
        raise MissingFileError(f"{what} {path} does not exist")
    return path


def read_config_file(path: str | Path) -> dict:
    path = _existing_file(path, "--config")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise CheckpointError(f"{path}: not a UTF-8 text file ({e}); give the config as JSON or YAML") from None
    if path.suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise CheckpointError(f"{path}: reading YAML needs PyYAML (pip install pyyaml), or give the "
                                  "config as JSON") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise CheckpointError(f"{path}: not valid YAML ({' '.join(str(e).split())})") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a mapping (the xLSTMLMModelConfig fields), found "
                              f"{type(data).__name__}")
    return config_to_dict(data)


def load_state_dict_file(path: str | Path) -> dict:
    """A torch checkpoint (.pt/.pth/.bin/.ckpt; nested under 'state_dict'/'model' is fine) or .safetensors."""
    path = _existing_file(path, "--state-dict")
    if path.suffix == ".safetensors":
        try:
            return dict(mx.load(str(path)))
        except Exception as e:  # MLX raises RuntimeError/ValueError for a corrupt file
            raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None
    try:
        import torch
    except ImportError:
        raise UsageError(f"{path} is a torch checkpoint: reading it needs PyTorch (pip install torch), or save "
                         "the state_dict as .safetensors (safetensors.torch.save_file) and pass that") from None
    try:
        sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # pickle errors, a zip that is not a checkpoint, a truncated file
        raise CheckpointError(f"{path}: torch could not read it as a state_dict ({type(e).__name__}: "
                              f"{' '.join(str(e).split())[:300]})") from None
    if not isinstance(sd, dict):
        raise CheckpointError(f"{path} holds a {type(sd).__name__}, not a state_dict (a dict of tensors)")
    for key in ("state_dict", "model"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    return _strip_prefix(sd)


def _strip_prefix(sd: dict) -> dict:
    """Drop a wrapper prefix (e.g. Lightning's 'model.') so that token_embedding.weight is top-level."""
    hits = [k for k in sd if k.endswith("token_embedding.weight")]
    if len(hits) != 1 or hits[0] == "token_embedding.weight":
        return sd
    prefix = hits[0][: -len("token_embedding.weight")]
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


def _to_mx(t, dtype):
    if isinstance(t, mx.array):
        a = t
    else:  # a torch tensor; numpy has no bfloat16, so go through float32 for it
        import torch

        t = t.detach().cpu()
        if t.dtype == torch.bfloat16:
            a = mx.array(t.float().numpy()).astype(mx.bfloat16)
        else:
            a = mx.array(t.numpy())
    if dtype is not None and mx.issubdtype(a.dtype, mx.floating):
        a = a.astype(dtype)
    return a


def convert_official(out_dir: str | Path, model=None, state_dict: dict | None = None, config=None,
                     dtype: str | None = None, tokenizer_dir: str | Path | None = None, force: bool = False) -> Path:
    """Write the checkpoint directory. Give `model` (a live xLSTMLMModel) or `state_dict` + `config`.
    An existing non-empty `out_dir` is replaced only with `force` (and only if it holds a model)."""
    if model is not None:
        state_dict = model.state_dict() if state_dict is None else state_dict
        config = model.config if config is None else config
    if state_dict is None or config is None:
        raise UsageError("give a live xLSTMLMModel, or both a state_dict and its config")
    if dtype is not None and dtype not in DTYPES:
        raise UsageError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    cfg = config_to_dict(config)
    tensors = {k: _to_mx(v, DTYPES.get(dtype)) for k, v in state_dict.items()}
    if cfg.get("tie_weights"):
        tensors.pop("lm_head.weight", None)  # the same tensor as token_embedding.weight
    infer_stack_args({k: tuple(v.shape) for k, v in tensors.items()}, cfg)  # fail here, not at load

    out = Path(out_dir).expanduser()
    prepare_out(None, out, force)
    with atomic.staged_directory(out) as tmp:  # a failed or interrupted run leaves `out` as it was
        (tmp / CONFIG_NAME).write_text(json.dumps(cfg, indent=2) + "\n")
        mx.save_safetensors(str(tmp / "model.safetensors"), tensors, metadata={"format": "xlstm-official-stack"})
        if tokenizer_dir is not None:
            for name in TOKENIZER_FILES:
                if (Path(tokenizer_dir) / name).exists():
                    shutil.copy(Path(tokenizer_dir) / name, tmp / name)
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state-dict", required=True, help="torch state_dict (.pt/.pth/.bin/.ckpt) or .safetensors")
    p.add_argument("--config", required=True, help="the model's xLSTMLMModelConfig as .json or .yaml")
    p.add_argument("--out", required=True, help="output directory (refused if it exists, unless --force)")
    p.add_argument("--force", action="store_true", help="replace an existing --out model directory")
    p.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="cast floating tensors (default: keep)")
    p.add_argument("--tokenizer", default=None, help="directory whose tokenizer files are copied along")


def run(ns: argparse.Namespace) -> int:
    prepare_out(None, Path(ns.out).expanduser(), ns.force)  # before reading a possibly large state_dict
    if ns.tokenizer is not None and not Path(ns.tokenizer).is_dir():
        raise MissingFileError(f"--tokenizer {ns.tokenizer} is not a directory")
    config = read_config_file(ns.config)
    out = convert_official(ns.out, state_dict=load_state_dict_file(ns.state_dict), config=config, dtype=ns.dtype,
                           tokenizer_dir=ns.tokenizer, force=ns.force)
    print(f"wrote {out / CONFIG_NAME} and {out / 'model.safetensors'}")
    return 0
