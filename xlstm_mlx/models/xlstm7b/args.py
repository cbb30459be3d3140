"""ModelArgs for xLSTM-7B-style models: dimensions inferred from the tensors, checked against config.json.

config.json comes in two spellings (Hugging Face: hidden_size / num_hidden_layers; official
xLSTMLarge: embedding_dim / num_blocks); both are read. Fields that name Triton kernels
(chunkwise_kernel, sequence_kernel, step_kernel, mode) are ignored: the kernels are ours.

The dtype fields keep their canonical meanings and are never used for one another:
  torch_dtype                    dtype of the stored weights (we read it from the tensors themselves)
  autocast_kernel_dtype          dtype of q/k/v inside the mLSTM kernel
  inference_state_dtype          dtype of the recurrent state (float32; anything else is refused)
  norm_reduction_force_float32   whether norms reduce in float32
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from dataclasses import dataclass

from xlstm_mlx.errors import CheckpointError


@dataclass
class ModelArgs:
    vocab_size: int
    hidden_size: int
    num_blocks: int
    num_heads: int
    qk_dim: int
    v_dim: int
    ffn_dim: int
    weight_mode: str = "single"  # "single" or "fused"
    use_bias: bool = False
    tie_word_embeddings: bool = False
    add_out_norm: bool = True
    # transformers' out_norm never has a bias, the official one has one when use_bias: the file decides
    out_norm_bias: bool = False
    norm_eps: float = 1e-6
    norm_reduction_force_float32: bool = True
    eps: float = 1e-6
    gate_soft_cap: float | None = 15.0
    output_logit_soft_cap: float | None = 30.0
    chunk_size: int = 64
    autocast_kernel_dtype: str = "bfloat16"
    inference_state_dtype: str = "float32"
    torch_dtype: str | None = None
    bos_token_id: int | None = 0
    eos_token_id: int | list[int] | None = 2
    pad_token_id: int | None = 1
    model_type: str = "xlstm"

    @classmethod
    def from_checkpoint(cls, shapes: dict[str, tuple], config: dict) -> "ModelArgs":
        """Dimensions from the tensors (canonical names, logical shapes), checked against config.json."""
        return infer_args(shapes, config)

    @property
    def qk_head_dim(self) -> int:
        return self.qk_dim // self.num_heads

    @property
    def v_head_dim(self) -> int:
        return self.v_dim // self.num_heads

    def state_floats_per_sequence(self) -> int:
        """Floats of recurrent state per sequence: C, n and m of every block."""
        per_head = self.qk_head_dim * self.v_head_dim + self.qk_head_dim + 1
        return self.num_blocks * self.num_heads * per_head

    def to_config_dict(self) -> dict:
        """config.json in the Hugging Face xlstm layout (both dimension spellings, for both readers)."""
        d = dataclasses.asdict(self)
        for name in ("qk_dim", "v_dim", "ffn_dim", "num_blocks"):
            d.pop(name)
        d.update(
            architectures=["xLSTMForCausalLM"],
            embedding_dim=self.hidden_size,
            num_hidden_layers=self.num_blocks,
            num_blocks=self.num_blocks,
            qk_dim_factor=self.qk_dim / self.hidden_size,
            v_dim_factor=self.v_dim / self.hidden_size,
            ffn_proj_factor=self.ffn_dim / self.hidden_size,
            ffn_round_up_to_multiple_of=_round_multiple(self.ffn_dim),
        )
        return d


def _round_multiple(ffn_dim: int) -> int:
    """The largest of 64, 32, ..., 1 dividing ffn_dim, so that the canonical rounding gives ffn_dim back."""
    for m in (64, 32, 16, 8, 4, 2, 1):
        if ffn_dim % m == 0:
            return m
    return 1


def _first(cfg: dict, *names, default=None):
    for n in names:
        if cfg.get(n) is not None:
            return cfg[n]
    return default


def _round_up(x: float, multiple: int) -> int:
    return int(((x + multiple - 1) // multiple) * multiple)


BLOCK_KEY = re.compile(r"^backbone\.blocks\.(\d+)\.")

_INT, _NUM, _BOOL, _STR, _NULL = (int,), (int, float), (bool,), (str,), (type(None),)
# config.json fields this reader uses, with the JSON types each may have (null is "not given" unless listed)
CONFIG_TYPES = {
    **{f: _INT for f in ("vocab_size", "hidden_size", "embedding_dim", "num_hidden_layers", "num_blocks", "num_heads",
                         "chunk_size", "ffn_round_up_to_multiple_of", "bos_token_id", "pad_token_id")},
    "eos_token_id": (int, list),
    **{f: _NUM for f in ("norm_eps", "eps", "qk_dim_factor", "v_dim_factor", "ffn_proj_factor")},
    **{f: _NUM + _NULL for f in ("gate_soft_cap", "output_logit_soft_cap")},
    **{f: _BOOL for f in ("norm_reduction_force_float32", "use_bias", "tie_word_embeddings", "add_out_norm")},
    **{f: _STR for f in ("weight_mode", "autocast_kernel_dtype", "inference_state_dtype", "torch_dtype")},
}
POSITIVE = ("vocab_size", "hidden_size", "embedding_dim", "num_hidden_layers", "num_blocks", "num_heads", "chunk_size",
            "ffn_round_up_to_multiple_of", "norm_eps", "eps", "qk_dim_factor", "v_dim_factor", "ffn_proj_factor",
            "gate_soft_cap", "output_logit_soft_cap")
# keys a config.json may hold that this reader does not need: transformers' xLSTMConfig (kernel names, cache and
# output switches) and PretrainedConfig bookkeeping, and what `convert` / `train` add
KNOWN_UNUSED = {
    "architectures", "model_type", "model_file", "transformers_version", "_name_or_path", "dtype", "use_cache", "return_dict",
    "output_hidden_states", "output_attentions", "return_last_states", "mode", "chunkwise_kernel", "sequence_kernel",
    "step_kernel", "max_inference_chunksize", "force_bos_token_insert", "chunk_size_feed_forward",
    "is_encoder_decoder", "is_decoder", "id2label", "label2id", "problem_type", "tokenizer_class", "torchscript",
    "use_bfloat16", "pruned_heads", "tie_encoder_decoder", "add_cross_attention", "cross_attention_hidden_size",
    "finetuning_task", "task_specific_params", "prefix", "sep_token_id", "decoder_start_token_id", "max_length",
    "min_length", "do_sample", "early_stopping", "num_beams", "num_beam_groups", "diversity_penalty", "temperature",
    "top_k", "top_p", "typical_p", "repetition_penalty", "length_penalty", "no_repeat_ngram_size",
    "encoder_no_repeat_ngram_size", "bad_words_ids", "num_return_sequences", "output_scores",
    "return_dict_in_generate", "forced_bos_token_id", "forced_eos_token_id", "remove_invalid_values",
    "exponential_decay_length_penalty", "suppress_tokens", "begin_suppress_tokens", "tf_legacy_loss",
    "_attn_implementation_autoset", "auto_map", "out_norm_bias", "quantization", "training", "training_step",
    "random_weights",
}


def _type_name(types: tuple) -> str:
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string", list: "a list",
             type(None): "null"}
    if types == _NUM or types == _NUM + _NULL:
        return "a number" + (" or null" if type(None) in types else "")
    return " or ".join(names[t] for t in types)


def check_config_types(cfg: dict, source: str = "config.json") -> None:
    """Every field this reader uses has its JSON type (bool is no number) and a sane value; unknown keys are
    named in a warning (a misspelled field would otherwise be ignored without a word)."""
    for k, want in CONFIG_TYPES.items():
        if k not in cfg or (cfg[k] is None and k not in ("gate_soft_cap", "output_logit_soft_cap")):
            continue
        v = cfg[k]
        if (isinstance(v, bool) and bool not in want) or not isinstance(v, want):
            raise CheckpointError(f"{source}: {k} must be {_type_name(want)}, got {v!r} ({type(v).__name__}); "
                                  f"fix it in {source}")
        if k == "eos_token_id" and isinstance(v, list) and not all(isinstance(i, int) and not isinstance(i, bool)
                                                                   for i in v):
            raise CheckpointError(f"{source}: eos_token_id must be an integer or a list of integers, got {v!r}")
        if k in POSITIVE and v is not None and not v > 0:
            raise CheckpointError(f"{source}: {k} must be > 0, got {v!r}; fix it in {source}")
    if cfg.get("weight_mode") not in (None, "single", "fused"):
        raise CheckpointError(f"{source}: weight_mode must be 'single' or 'fused', got {cfg['weight_mode']!r}")
    if cfg.get("autocast_kernel_dtype") not in (None, "float32", "bfloat16", "float16"):
        raise CheckpointError(f"{source}: autocast_kernel_dtype must be float32, bfloat16 or float16, got "
                              f"{cfg['autocast_kernel_dtype']!r}")
    unknown = sorted(set(cfg) - set(CONFIG_TYPES) - KNOWN_UNUSED)
    if unknown:
        warnings.warn(f"{source}: ignoring unknown keys {unknown} (misspelled? the fields read are listed in "
                      "xlstm_mlx/models/xlstm7b/args.py)", stacklevel=2)


def infer_args(shapes: dict[str, tuple], cfg: dict) -> ModelArgs:
    """Build ModelArgs from tensor shapes (canonical key names) and check config.json against them.

    `shapes` maps Hugging Face key names to shapes; `cfg` is config.json (possibly empty).
    """
    check_config_types(cfg)
    def shape(key):
        if key not in shapes:
            raise CheckpointError(f"checkpoint has no tensor {key!r}, which every xLSTM checkpoint needs")
        return shapes[key]

    vocab, hidden = shape("backbone.embeddings.weight")
    layers = {int(m.group(1)) for k in shapes if (m := BLOCK_KEY.match(k))}
    if not layers:
        raise CheckpointError("checkpoint has no block tensors (backbone.blocks.N.*)")
    num_blocks = max(layers) + 1
    missing_layers = sorted(set(range(num_blocks)) - layers)
    if missing_layers:
        raise CheckpointError(f"checkpoint has no tensors for blocks {missing_layers} (of {num_blocks})")

    p = "backbone.blocks.0.mlstm_layer."
    v_dim = shape(p + "out_proj.weight")[1]
    if p + "qkv_opreact.weight" in shapes:
        weight_mode = "fused"
        qk_dim = (shapes[p + "qkv_opreact.weight"][0] - 2 * v_dim) // 2
        num_heads = shape(p + "ifgate_preact.weight")[0] // 2
    elif p + "q.weight" in shapes:
        weight_mode = "single"
        qk_dim = shape(p + "q.weight")[0]
        num_heads = shape(p + "igate_preact.weight")[0]
    else:
        raise CheckpointError(
            "block 0 has neither q.weight (weight_mode 'single') nor qkv_opreact.weight ('fused'); "
            f"its keys are {sorted(k for k in shapes if k.startswith('backbone.blocks.0.'))}"
        )
    ffn_dim = shape("backbone.blocks.0.ffn.proj_down.weight")[1]
    use_bias = "backbone.blocks.0.ffn.proj_down.bias" in shapes

    args = ModelArgs(
        vocab_size=vocab, hidden_size=hidden, num_blocks=num_blocks, num_heads=num_heads,
        qk_dim=qk_dim, v_dim=v_dim, ffn_dim=ffn_dim, weight_mode=weight_mode, use_bias=use_bias,
        tie_word_embeddings="lm_head.weight" not in shapes,
        add_out_norm="backbone.out_norm.weight" in shapes,
        out_norm_bias="backbone.out_norm.bias" in shapes,
    )
    for f in ("norm_eps", "eps", "norm_reduction_force_float32", "chunk_size", "autocast_kernel_dtype",
              "inference_state_dtype", "torch_dtype", "bos_token_id", "eos_token_id", "pad_token_id"):
        if f in cfg and cfg[f] is not None:
            setattr(args, f, cfg[f])
    for f in ("gate_soft_cap", "output_logit_soft_cap"):
        if f in cfg:  # null means "no cap" in the canonical code
            setattr(args, f, cfg[f])
    if args.inference_state_dtype != "float32":
        raise CheckpointError(
            f"config.json asks for inference_state_dtype={args.inference_state_dtype!r}; xlstm-mlx keeps "
            "the recurrent state in float32 always (lower precision loses the stabilizer). Set it to "
            "'float32' in config.json."
        )
    _check_config(args, cfg, shapes)
    return args


def _check_config(args: ModelArgs, cfg: dict, shapes: dict) -> None:
    """Compare what config.json says with what the tensors say; name the tensor on a mismatch."""
    if not cfg:
        return
    emb = "backbone.embeddings.weight"
    p = "backbone.blocks.0.mlstm_layer."
    hidden = _first(cfg, "hidden_size", "embedding_dim")
    expect = []
    if hidden is not None:
        expect.append(("hidden_size", hidden, args.hidden_size, emb, (args.vocab_size, hidden)))
    if cfg.get("vocab_size") is not None:
        expect.append(("vocab_size", cfg["vocab_size"], args.vocab_size, emb, (cfg["vocab_size"], args.hidden_size)))
    layers = _first(cfg, "num_hidden_layers", "num_blocks")
    if layers is not None and layers != args.num_blocks:
        raise CheckpointError(
            f"config.json says {layers} blocks but the tensors hold {args.num_blocks} "
            f"(backbone.blocks.0 ... backbone.blocks.{args.num_blocks - 1}); fix num_hidden_layers/num_blocks"
        )
    if cfg.get("weight_mode") is not None and cfg["weight_mode"] != args.weight_mode:
        raise CheckpointError(
            f"config.json says weight_mode={cfg['weight_mode']!r} but the tensors are stored "
            f"{args.weight_mode!r} (block 0 has {'qkv_opreact' if args.weight_mode == 'fused' else 'q/k/v'}.weight)"
        )
    h = hidden if hidden is not None else args.hidden_size
    if cfg.get("num_heads") is not None:
        heads = cfg["num_heads"]
        if args.weight_mode == "fused":
            expect.append(("num_heads", heads, args.num_heads, p + "ifgate_preact.weight", (2 * heads, args.hidden_size)))
        else:
            expect.append(("num_heads", heads, args.num_heads, p + "igate_preact.weight", (heads, args.hidden_size)))
    if cfg.get("v_dim_factor") is not None:
        v = int(h * cfg["v_dim_factor"])
        expect.append(("v_dim_factor", v, args.v_dim, p + "out_proj.weight", (args.hidden_size, v)))
    if cfg.get("qk_dim_factor") is not None:
        qk = int(h * cfg["qk_dim_factor"])
        if args.weight_mode == "single":
            expect.append(("qk_dim_factor", qk, args.qk_dim, p + "q.weight", (qk, args.hidden_size)))
        else:
            n = 2 * qk + 2 * args.v_dim
            expect.append(("qk_dim_factor", qk, args.qk_dim, p + "qkv_opreact.weight", (n, args.hidden_size)))
    if cfg.get("ffn_proj_factor") is not None:
        ffn = _round_up(h * cfg["ffn_proj_factor"], cfg.get("ffn_round_up_to_multiple_of") or 64)
        expect.append(("ffn_proj_factor", ffn, args.ffn_dim, "backbone.blocks.0.ffn.proj_down.weight",
                       (args.hidden_size, ffn)))
    for field, want, got, tensor, want_shape in expect:
        if want != got:
            raise CheckpointError(
                f"shape mismatch: config.json ({field}) implies {tensor} has shape {tuple(want_shape)}, "
                f"but the file holds {tuple(shapes[tensor])}; the config.json does not belong to these "
                "weights, or the weights were truncated/converted wrongly"
            )
    if args.v_dim % args.num_heads or args.qk_dim % args.num_heads:
        raise CheckpointError(
            f"qk_dim {args.qk_dim} and v_dim {args.v_dim} must be multiples of num_heads {args.num_heads}"
        )
