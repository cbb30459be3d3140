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
import math
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
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "time_budget_s" and value is None:
                continue
            want = _FIELD_TYPES[f.name]
            if isinstance(value, bool) != (want is bool) or not isinstance(value, want):
                kind = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}[
                    want if isinstance(want, type) else float]
                raise UsageError(f"train.{f.name} must be {kind}, got {value!r} ({type(value).__name__})")
            if isinstance(value, float) and not math.isfinite(value):
                raise UsageError(f"train.{f.name} must be finite, got {value}")
        if self.lr <= 0:
            raise UsageError(f"train.lr must be > 0, got {self.lr}")
        if not 0 <= self.min_lr <= self.lr:
            raise UsageError(f"train.min_lr must be in [0, lr] (lr={self.lr}), got {self.min_lr}")
        for f in ("beta1", "beta2"):
            if not 0 <= getattr(self, f) < 1:
                raise UsageError(f"train.{f} must be in [0, 1), got {getattr(self, f)}")
        for f in ("adam_eps", "grad_clip"):
            if getattr(self, f) <= 0:
                raise UsageError(f"train.{f} must be > 0, got {getattr(self, f)}")
        if self.weight_decay < 0:
            raise UsageError(f"train.weight_decay must be >= 0, got {self.weight_decay}")
        if not 0 <= self.seed < 2**63:
            raise UsageError(f"train.seed must be in [0, 2**63), got {self.seed}")
        if self.time_budget_s is not None and self.time_budget_s <= 0:
            raise UsageError(f"train.time_budget_s (--time-budget) must be > 0 seconds, got {self.time_budget_s}")
        for f in ("dtype", "save_dtype"):
            if getattr(self, f) not in ("float32", "bfloat16"):
                raise UsageError(f"train.{f} must be 'float32' or 'bfloat16', got {getattr(self, f)!r}")
        for f in ("seq_len", "batch_size", "steps", "eval_every", "eval_windows", "save_every", "log_every"):
            if getattr(self, f) < 1:
                raise UsageError(f"train.{f} must be at least 1, got {getattr(self, f)}")
        if not 0 <= self.warmup_steps < self.steps:
            raise UsageError(f"train.warmup_steps must be in [0, steps), got {self.warmup_steps} (steps={self.steps})")


_NUMBER = (int, float)
_FIELD_TYPES = {f: int for f in ("seq_len", "batch_size", "steps", "warmup_steps", "eval_every", "eval_windows",
                                 "save_every", "log_every", "seed")}
_FIELD_TYPES.update({f: _NUMBER for f in ("lr", "min_lr", "weight_decay", "beta1", "beta2", "adam_eps", "grad_clip",
                                          "time_budget_s")})
_FIELD_TYPES.update(dtype=str, save_dtype=str, compile=bool)

# the "model" section's JSON types (bool is not a number here; null is allowed where the canonical config has it)
_MODEL_TYPES = {**{f: int for f in ("vocab_size", "hidden_size", "embedding_dim", "num_blocks", "num_hidden_layers",
                                    "num_heads", "ffn_round_up_to_multiple_of", "chunk_size", "bos_token_id",
                                    "eos_token_id", "pad_token_id")},
                **{f: _NUMBER for f in ("qk_dim_factor", "v_dim_factor", "ffn_proj_factor", "norm_eps", "eps")},
                **{f: bool for f in ("use_bias", "add_out_norm", "tie_word_embeddings")},
                "gate_soft_cap": (int, float, type(None)), "output_logit_soft_cap": (int, float, type(None)),
                "weight_mode": str}


def _check_model_types(c: dict) -> None:
    for k, v in c.items():
        want = _MODEL_TYPES.get(k)
        if want is None:
            continue
        bad_bool = isinstance(v, bool) and want is not bool
        if bad_bool or not isinstance(v, want):
            names = {int: "an integer", bool: "true or false", str: "a string"}
            kind = names.get(want, "a number" + (" or null" if isinstance(want, tuple) and type(None) in want else ""))
            raise UsageError(f"model.{k} in the training config must be {kind}, got {v!r}")
        if want in (int, _NUMBER) and k not in ("bos_token_id", "eos_token_id", "pad_token_id") and v <= 0:
            raise UsageError(f"model.{k} in the training config must be > 0, got {v}")
    if c.get("weight_mode", "single") not in ("single", "fused"):
        raise UsageError(f"model.weight_mode must be 'single' or 'fused', got {c['weight_mode']!r}")


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
    _check_model_types(model_cfg)
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
        raw = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"{p} is not valid JSON: {e}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("model"), dict):
        raise UsageError(f"{p} must be a JSON object with a \"model\" section (and optionally \"train\")")
    if not isinstance(raw.get("train", {}), dict):
        raise UsageError(f"{p}: the \"train\" section must be a JSON object")
    unknown = sorted(set(raw) - {"model", "train"})
    if unknown:
        raise UsageError(f"{p}: unknown top-level keys {unknown}; a training config has \"model\" and \"train\"")
    train = dict(raw.get("train", {}))
    train.update({k: v for k, v in (overrides or {}).items() if v is not None})
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(train) - fields)
    if unknown:
        raise UsageError(f"unknown keys in the config's \"train\" section: {unknown}; known: {sorted(fields)}")
    return raw["model"], TrainConfig(**train)

