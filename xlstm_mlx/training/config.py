"""Training configuration: a JSON file with a "model" section (Hugging Face xlstm config keys) and a
"train" section (TrainConfig fields). Command-line options override "train" fields.

    {"model": {"hidden_size": 256, "num_blocks": 4, "num_heads": 4, "qk_dim_factor": 0.5,
               "v_dim_factor": 1.0, "ffn_proj_factor": 2.667, "ffn_round_up_to_multiple_of": 64},
     "train": {"seq_len": 256, "batch_size": 32, "steps": 2000, "lr": 3e-3}}

vocab_size defaults to the tokenizer's. Dimensions are checked to be ones that transformers'
xLSTMForCausalLM builds identically (its layer uses int(hidden * factor), its config rounds to 64).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from xlstm_mlx.models.xlstm7b.args import ModelArgs
from xlstm_mlx.errors import MissingFileError, UsageError


@dataclass
class TrainConfig:
    seq_len: int = 256
    batch_size: int = 32
    steps: int = 2000
    lr: float = 3e-3
    min_lr: float = 3e-4
    warmup_steps: int = 100
    weight_decay: float = 0.1  # decoupled (AdamW), on matrices only; norms, biases, gates' biases excluded
    beta1: float = 0.9
    beta2: float = 0.95
    adam_eps: float = 1e-8
    grad_clip: float = 1.0
    dtype: str = "float32"  # compute dtype; master weights, optimizer state and recurrent state are float32
    save_dtype: str = "float32"  # dtype of the exported model.safetensors
    eval_every: int = 250
    eval_windows: int = 64
    save_every: int = 250
    log_every: int = 10
    seed: int = 0
    compile: bool = True
    time_budget_s: float | None = None  # if set: after a few timed steps, cut `steps` to fit this wall time


    def __post_init__(self):
        for f in ("dtype", "save_dtype"):
            if getattr(self, f) not in ("float32", "bfloat16"):
                raise UsageError(f"train.{f} must be 'float32' or 'bfloat16', got {getattr(self, f)!r}")
        for f in ("seq_len", "batch_size", "steps", "eval_every", "save_every", "log_every"):
            if getattr(self, f) < 1:
                raise UsageError(f"train.{f} must be at least 1, got {getattr(self, f)}")
        if not 0 <= self.warmup_steps < self.steps:
            raise UsageError(f"train.warmup_steps must be in [0, steps), got {self.warmup_steps} (steps={self.steps})")


def _round_up(x: float, multiple: int) -> int:
    return int(((x + multiple - 1) // multiple) * multiple)


def model_args(model_cfg: dict, vocab_size: int, compute_dtype: str) -> ModelArgs:
    """ModelArgs from the "model" section; raises ValueError on shapes transformers would build differently."""
    known = {"vocab_size", "hidden_size", "embedding_dim", "num_blocks", "num_hidden_layers", "num_heads",
             "qk_dim_factor", "v_dim_factor", "ffn_proj_factor", "ffn_round_up_to_multiple_of", "use_bias",
             "add_out_norm", "tie_word_embeddings", "norm_eps", "eps", "gate_soft_cap", "output_logit_soft_cap",
             "chunk_size", "weight_mode", "bos_token_id", "eos_token_id", "pad_token_id"}
    unknown = sorted(set(model_cfg) - known)
    if unknown:
        raise UsageError(f"unknown keys in the config's \"model\" section: {unknown}; known: {sorted(known)}")
    c = dict(model_cfg)
    hidden = c.get("hidden_size", c.get("embedding_dim"))
    blocks = c.get("num_blocks", c.get("num_hidden_layers"))
    if hidden is None or blocks is None or "num_heads" not in c:
        raise UsageError("the \"model\" section needs hidden_size, num_blocks and num_heads")
    vocab = c.get("vocab_size", vocab_size)
    if vocab < vocab_size:
        raise UsageError(f"model vocab_size {vocab} is smaller than the tokenizer's {vocab_size}")
    dims = {}
    for name, factor in (("qk_dim", c.get("qk_dim_factor", 0.5)), ("v_dim", c.get("v_dim_factor", 1.0))):
        exact, rounded = int(hidden * factor), _round_up(hidden * factor, 64)
        if exact != rounded:
            raise UsageError(f"{name} = hidden_size * factor = {hidden * factor} is not a multiple of 64; "
                             "transformers' xLSTM would build mismatched shapes (use hidden_size a multiple of 128)")
        dims[name] = exact
    heads = c["num_heads"]
    if dims["qk_dim"] % heads or dims["v_dim"] % heads:
        raise UsageError(f"qk_dim {dims['qk_dim']} and v_dim {dims['v_dim']} must be multiples of num_heads {heads}")
    ffn = _round_up(hidden * c.get("ffn_proj_factor", 2.667), c.get("ffn_round_up_to_multiple_of", 64))
    if c.get("tie_word_embeddings"):
        raise UsageError("tie_word_embeddings is not supported by transformers' xLSTM; leave it false")
    args = ModelArgs(vocab_size=vocab, hidden_size=hidden, num_blocks=blocks, num_heads=heads, ffn_dim=ffn,
                     weight_mode=c.get("weight_mode", "single"), use_bias=c.get("use_bias", False),
                     add_out_norm=c.get("add_out_norm", True), autocast_kernel_dtype=compute_dtype,
                     torch_dtype="float32", **dims)
    for f in ("norm_eps", "eps", "gate_soft_cap", "output_logit_soft_cap", "chunk_size", "bos_token_id",
              "eos_token_id", "pad_token_id"):
        if f in c:
            setattr(args, f, c[f])
    return args


def load_config(path: str | Path, overrides: dict | None = None) -> tuple[dict, TrainConfig]:
    """(model section, TrainConfig) from a JSON file; `overrides` (non-None values) replace train fields."""
    p = Path(path)
    if not p.is_file():
        raise MissingFileError(f"training config {p} does not exist")
    try:
        raw = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise UsageError(f"{p} is not valid JSON: {e}") from e
    if not isinstance(raw, dict) or "model" not in raw:
        raise UsageError(f"{p} must be a JSON object with a \"model\" section (and optionally \"train\")")
    train = dict(raw.get("train", {}))
    train.update({k: v for k, v in (overrides or {}).items() if v is not None})
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(train) - fields)
    if unknown:
        raise UsageError(f"unknown keys in the config's \"train\" section: {unknown}; known: {sorted(fields)}")
    return raw["model"], TrainConfig(**train)

