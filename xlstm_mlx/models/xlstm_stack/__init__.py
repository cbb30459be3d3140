"""The official xlstm package's xLSTMLMModel (the paper's mixed mLSTM/sLSTM stacks): the contract of models/base.py.

Checkpoint directory (written by `xlstm-mlx convert-official`, docs/official-stacks.md):

    <dir>/xlstm_config.json    the official xLSTMLMModelConfig as JSON (mlstm_block / slstm_block inside);
                               a config.json with those keys is read too
    <dir>/model.safetensors    the xLSTMLMModel state_dict, official key names and layouts (or shards)
    <dir>/tokenizer.json ...   optional
"""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx

from xlstm_mlx.jsonfile import read_json_object
from xlstm_mlx.models.xlstm_stack.args import StackArgs as Args
from xlstm_mlx.models.xlstm_stack.args import MLSTMV1Args, SLSTMArgs
from xlstm_mlx.models.xlstm_stack.layout import export, sanitize
from xlstm_mlx.models.xlstm_stack.model import FAMILY_LABEL as LABEL
from xlstm_mlx.models.xlstm_stack.model import StackModel as Model

NAME = "xlstm_stack"
CONFIG_NAME = "xlstm_config.json"
# official stack configs have these keys; the xLSTM-7B config.json has none of them
STACK_KEYS = ("mlstm_block", "slstm_block", "slstm_at", "_block_map")
EMBEDDING_LAYERS = ("token_embedding", "lm_head")
GATE_REASON = ("mLSTM gate projection (num_heads outputs): a tiny share of the weights, and its output is "
               "exponentiated by the gating, so it stays float")

__all__ = ["NAME", "LABEL", "Args", "Model", "detect", "config_file", "read_config", "rename_key", "sanitize",
           "export", "export_config", "param_dtype", "keep_float", "example_args", "EMBEDDING_LAYERS"]


def config_file(model_dir: Path) -> Path | None:
    """The official stack config of this directory, or None if it has none."""
    f = Path(model_dir) / CONFIG_NAME
    if f.exists():
        return f
    f = Path(model_dir) / "config.json"
    if f.exists() and any(k in read_json_object(f) for k in STACK_KEYS):
        return f
    return None


def detect(model_dir: Path, keys: set[str]) -> bool:
    if "token_embedding.weight" in keys and any(k.startswith("xlstm_block_stack.") for k in keys):
        return True
    return config_file(model_dir) is not None


def read_config(model_dir: Path) -> dict:
    f = config_file(model_dir)
    return read_json_object(f) if f is not None else {}


def rename_key(key: str) -> str:
    return key  # the official names are the module tree's own


def export_config(args: Args, config: dict) -> dict:
    """The source's official config as it is (its dimensions were checked against the tensors); the fields
    `args` imply fill in what it leaves out."""
    return {**args.to_config_dict(), **config}


def param_dtype(name: str, profile) -> mx.Dtype:
    if ".slstm_cell." in name:  # the sLSTM recurrent kernel and bias feed float32 gate math directly
        return mx.float32
    return profile.mx_head_dtype if name == "lm_head.weight" else profile.mx_compute_dtype


def keep_float(path: str) -> str | None:
    return GATE_REASON if path.endswith(("mlstm_cell.igate", "mlstm_cell.fgate")) else None


def example_args() -> Args:
    """A two-block [1:1] stack: one mLSTM block, one sLSTM block with a feed-forward."""
    return Args(vocab_size=259, embedding_dim=32, num_blocks=2, block_types=["mlstm", "slstm"],
                mlstm=MLSTMV1Args(inner_dim=64, num_heads=2, qkv_proj_blocksize=4, conv1d_kernel_size=4, bias=False),
                slstm=SLSTMArgs(num_heads=2, conv1d_kernel_size=4, group_norm_weight=True, ffn_up_dim=48,
                                ffn_act_fn="gelu", ffn_bias=False, layout="vanilla"))
