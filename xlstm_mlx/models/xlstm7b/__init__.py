"""The xLSTM-7B family (NX-AI xLSTM-7B and every checkpoint of its shape): the family contract of models/base.py.

Stored layouts: the Hugging Face `xlstm` layout (xLSTMForCausalLM.save_pretrained: backbone.embeddings.weight,
backbone.blocks.N...) and the official xLSTMLarge state_dict, which differs only in embedding.weight.
Weights single or fused, with or without biases, tied or not; config.json in either spelling (args.py).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import mlx.core as mx

from xlstm_mlx.jsonfile import read_json_object
from xlstm_mlx.models.xlstm7b.args import ModelArgs as Args
from xlstm_mlx.models.xlstm7b.model import FAMILY_LABEL as LABEL
from xlstm_mlx.models.xlstm7b.model import Model

NAME = "xlstm7b"
CONFIG_NAME = "config.json"
# official xLSTMLarge name -> Hugging Face name (the only difference between the two layouts)
OFFICIAL_TO_HF = {"embedding.weight": "backbone.embeddings.weight"}
GATE_LAYERS = ("igate_preact", "fgate_preact", "ifgate_preact")
EMBEDDING_LAYERS = ("backbone.embeddings", "lm_head")
GATE_REASON = ("gate pre-activation projection (num_heads outputs): ~0.03% of the weights, and its output is "
               "exponentiated by the gating, so it stays float")


def detect(model_dir: Path, keys: set[str]) -> bool:
    has_embedding = "backbone.embeddings.weight" in keys or "embedding.weight" in keys
    return has_embedding and any(k.startswith("backbone.blocks.") for k in keys)


def config_file(model_dir: Path) -> Path:
    return Path(model_dir) / CONFIG_NAME


def read_config(model_dir: Path) -> dict:
    f = config_file(model_dir)
    if not f.exists():
        warnings.warn(f"{model_dir} has no config.json: the dimensions come from the tensors, everything else "
                      "(eps and norm_eps 1e-6, gate_soft_cap 15, output_logit_soft_cap 30, chunk_size 64, "
                      "bos/pad/eos ids 0/1/2) is the xLSTM-7B default; add the checkpoint's config.json if it "
                      "differs", stacklevel=2)
        return {}
    return read_json_object(f)


def rename_key(key: str) -> str:
    return OFFICIAL_TO_HF.get(key, key)


def sanitize(weights: dict, args: Args) -> dict:
    return weights  # the Hugging Face layout is the module tree's own


def export(weights: dict, args: Args) -> dict:
    return weights


def export_config(args: Args, config: dict) -> dict:
    """config.json for exported weights: the source's own fields, with every dimension restated from `args`."""
    return {**config, **args.to_config_dict()}


# Parameters whose input is the residual stream or the unrounded normalized residual: the pre-norms and the gate
# projections. They are kept in the residual dtype (float32 in the shipped profiles) where it is the wider one:
# a bf16 weight meeting a float32 input is promoted to float32 at every step (one cast launch each, ~2-3 us on a
# GPU, 2 per block per decode step), and the promoted values are the same numbers, so nothing changes but that.
RESIDUAL_INPUT_PARAMS = re.compile(r"(norm_mlstm|norm_ffn|out_norm|igate_preact|fgate_preact|ifgate_preact)"
                                   r"\.(weight|bias)$")


def param_dtype(name: str, profile) -> mx.Dtype:
    # an unquantized head keeps the profile's head dtype (float32 in the shipped profiles: docs/numerics.md)
    if name == "lm_head.weight":
        return profile.mx_head_dtype
    compute, residual = profile.mx_compute_dtype, profile.mx_residual_dtype
    if RESIDUAL_INPUT_PARAMS.search(name) and residual.size >= compute.size:
        return residual
    return compute


def keep_float(path: str) -> str | None:
    return GATE_REASON if path.rsplit(".", 1)[-1] in GATE_LAYERS else None


def example_args() -> Args:
    return Args(vocab_size=259, hidden_size=32, num_blocks=2, num_heads=2, qk_dim=16, v_dim=32, ffn_dim=64)
