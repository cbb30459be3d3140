"""StackArgs for the official `xlstm` package's xLSTMLMModel (paper-style mLSTM/sLSTM stacks).

Structure is read from the tensors first (block types from the key names, dimensions from the
shapes) and checked against the official config (xLSTMLMModelConfig as JSON); the config only adds
what the tensors cannot say (the feed-forward activation, the sLSTM cell function). Any
disagreement is a CheckpointError naming the field, the two values and the fix.

Official block codes (xlstm_block_stack.py `_block_map`): 0 = mLSTM block, 1 = sLSTM block.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import asdict, dataclass

from xlstm_mlx.errors import CheckpointError

STACK = "xlstm_block_stack."
BLOCK_KEY = re.compile(r"^xlstm_block_stack\.blocks\.(\d+)\.(.+)$")
BLOCK_CODES = {0: "mlstm", 1: "slstm"}


@dataclass
class MLSTMV1Args:
    inner_dim: int
    num_heads: int
    qkv_proj_blocksize: int
    conv1d_kernel_size: int
    bias: bool


@dataclass
class SLSTMArgs:
    num_heads: int
    conv1d_kernel_size: int  # 0 = no convolution (the gates i, f then read x directly)
    group_norm_weight: bool
    ffn_up_dim: int  # 0 = the block has no feed-forward
    ffn_act_fn: str
    ffn_bias: bool
    layout: str  # stored layout of _recurrent_kernel_/_bias_: "vanilla" or "cuda" (see docs/official-stacks.md)


@dataclass
class StackArgs:
    vocab_size: int
    embedding_dim: int
    num_blocks: int
    block_types: list[str]
    add_post_blocks_norm: bool = True
    tie_weights: bool = False
    mlstm: MLSTMV1Args | None = None
    slstm: SLSTMArgs | None = None
    context_length: int = -1  # informational: our recurrent forms have no length limit
    model_type: str = "xlstm_official_stack"
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None

    @classmethod
    def from_checkpoint(cls, shapes: dict[str, tuple], config: dict) -> "StackArgs":
        """Structure from the official state_dict's keys and shapes, checked against the official config."""
        return infer_stack_args(shapes, config)

    @property
    def hidden_size(self) -> int:  # the name other tools use for the residual width
        return self.embedding_dim

    @property
    def tie_word_embeddings(self) -> bool:
        return self.tie_weights

    def ratio(self) -> str:
        """The paper's xLSTM[a:b] notation: a mLSTM blocks to b sLSTM blocks."""
        m, s = self.block_types.count("mlstm"), self.block_types.count("slstm")
        return f"xLSTM[{m}:{s}]"

    def state_floats_per_sequence(self) -> int:
        total = 0
        for t in self.block_types:
            if t == "mlstm":
                a = self.mlstm
                dh = a.inner_dim // a.num_heads
                total += a.num_heads * (dh * dh + dh + 1) + (a.conv1d_kernel_size - 1) * a.inner_dim
            else:
                a = self.slstm
                total += 4 * self.embedding_dim + max(a.conv1d_kernel_size - 1, 0) * self.embedding_dim
        return total

    def to_dict(self) -> dict:
        return asdict(self)

    def to_config_dict(self) -> dict:
        """The official xLSTMLMModelConfig fields these args imply (what xlstm_config.json holds)."""
        d = {"vocab_size": self.vocab_size, "embedding_dim": self.embedding_dim, "num_blocks": self.num_blocks,
             "context_length": self.context_length, "tie_weights": self.tie_weights,
             "add_post_blocks_norm": self.add_post_blocks_norm,
             "slstm_at": [i for i, t in enumerate(self.block_types) if t == "slstm"],
             "mlstm_block": None, "slstm_block": None}
        if self.mlstm is not None:
            m = self.mlstm
            d["mlstm_block"] = {"mlstm": {"num_heads": m.num_heads, "qkv_proj_blocksize": m.qkv_proj_blocksize,
                                          "conv1d_kernel_size": m.conv1d_kernel_size, "_inner_embedding_dim": m.inner_dim}}
            d["bias"] = m.bias
        if self.slstm is not None:
            s = self.slstm
            d["slstm_block"] = {"slstm": {"num_heads": s.num_heads, "conv1d_kernel_size": s.conv1d_kernel_size,
                                          "group_norm_weight": s.group_norm_weight},
                                "feedforward": ({"act_fn": s.ffn_act_fn} if s.ffn_up_dim else None)}
        for k in ("bos_token_id", "eos_token_id", "pad_token_id"):
            if getattr(self, k) is not None:
                d[k] = getattr(self, k)
        return d


_INT, _BOOL, _STR, _NUM = (int,), (bool,), (str,), (int, float)
# the official xLSTMLMModelConfig fields (and nested block configs) with the JSON types they may have
TOP_TYPES = {**{f: _INT for f in ("num_blocks", "embedding_dim", "vocab_size", "context_length", "bos_token_id",
                                  "eos_token_id", "pad_token_id")},
             **{f: _BOOL for f in ("tie_weights", "add_post_blocks_norm", "bias", "add_embedding_dropout",
                                   "weight_decay_on_embedding")},
             "dropout": _NUM, "_block_map": _STR, "slstm_at": (list, str), "mlstm_block": (dict,),
             "slstm_block": (dict,)}
NESTED_TYPES = {("mlstm_block", "mlstm"): {f: _INT for f in ("num_heads", "qkv_proj_blocksize", "conv1d_kernel_size",
                                                              "_inner_embedding_dim", "embedding_dim", "num_blocks",
                                                              "context_length")}
                                           | {"proj_factor": _NUM},
                ("slstm_block", "slstm"): {"num_heads": _INT, "conv1d_kernel_size": _INT, "group_norm_weight": _BOOL,
                                           "function": _STR},
                ("slstm_block", "feedforward"): {"act_fn": _STR}}


# keys `convert` and `train` add next to the official fields (the stored dtype, the quantization section, ...)
WRITTEN_BY_US = {"torch_dtype", "quantization", "training", "training_step", "model_type", "architectures",
                 "model_file"}  # model_file: mlx-lm's model code (convert --mlx-lm)


def _bad_type(where: str, v, want: tuple) -> CheckpointError:
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string", list: "a list",
             dict: "an object"}
    kind = "a number" if want == _NUM else " or ".join(names[t] for t in want)
    return CheckpointError(f"xlstm_config.json: {where} must be {kind}, got {v!r}; fix it in xlstm_config.json")


def _check_types(cfg: dict, table: dict, prefix: str) -> None:
    for k, want in table.items():
        v = cfg.get(k)
        if v is None:
            continue
        if (isinstance(v, bool) and bool not in want) or not isinstance(v, want):  # -1 = "unset" is fine
            raise _bad_type(prefix + k, v, want)


def check_stack_config(cfg: dict) -> None:
    """The official config's fields have their JSON types (the field named); unknown top-level keys warned about."""
    _check_types(cfg, TOP_TYPES, "")
    at = cfg.get("slstm_at")
    if isinstance(at, str) and at != "all" or isinstance(at, list) and not all(
            isinstance(i, int) and not isinstance(i, bool) for i in at):
        raise CheckpointError(f"xlstm_config.json: slstm_at must be a list of block indices or \"all\", got {at!r}")
    for (block, part), table in NESTED_TYPES.items():
        sub = (cfg.get(block) or {}).get(part)
        if sub is None:
            continue
        if not isinstance(sub, dict):
            raise _bad_type(f"{block}.{part}", sub, (dict,))
        _check_types(sub, table, f"{block}.{part}.")
    unknown = sorted(set(cfg) - set(TOP_TYPES) - WRITTEN_BY_US)
    if unknown:
        warnings.warn(f"xlstm_config.json: ignoring unknown keys {unknown} (not xLSTMLMModelConfig fields; "
                      "misspelled?)", stacklevel=2)


def _sub(cfg: dict, *path):
    for p in path:
        if not isinstance(cfg, dict):
            return None
        cfg = cfg.get(p)
    return cfg


def config_block_map(cfg: dict, num_blocks: int) -> list[str] | None:
    """Block types the official config places at each position, or None if it does not say."""
    codes = None
    if cfg.get("_block_map"):
        try:
            codes = [int(c) for c in str(cfg["_block_map"]).split(",")]
        except ValueError:
            raise CheckpointError(f"config _block_map {cfg['_block_map']!r} is not a comma-separated list of "
                                  "block codes (0 = mLSTM, 1 = sLSTM)") from None
    elif "slstm_at" in cfg or "mlstm_block" in cfg:
        n = cfg.get("num_blocks", num_blocks)
        at = cfg.get("slstm_at", [])
        if cfg.get("mlstm_block") is None or at == "all":  # xlstm_block_stack.py __post_init__ rules
            at = list(range(n))
        codes = [1 if i in at else 0 for i in range(n)]
    if codes is None:
        return None
    out = []
    for i, c in enumerate(codes):
        if c not in BLOCK_CODES:
            raise CheckpointError(f"config block map: unknown block type code {c} at position {i} "
                                  f"(official codes: 0 = mLSTM block, 1 = sLSTM block)")
        out.append(BLOCK_CODES[c])
    return out


def _block_types_from_keys(shapes: dict[str, tuple]) -> list[str]:
    keys_by_block: dict[int, list[str]] = {}
    for k in shapes:
        m = BLOCK_KEY.match(k)
        if m:
            keys_by_block.setdefault(int(m.group(1)), []).append(m.group(2))
    if not keys_by_block:
        raise CheckpointError("no tensors named xlstm_block_stack.blocks.<i>.*: this is not an official "
                              "xLSTMLMModel state_dict")
    n = max(keys_by_block) + 1
    missing = [i for i in range(n) if i not in keys_by_block]
    if missing:
        raise CheckpointError(f"blocks {missing} have no tensors (the stack has blocks up to {n - 1})")
    types = []
    for i in range(n):
        names = keys_by_block[i]
        has_s = any(k.startswith("xlstm.slstm_cell.") for k in names)
        has_m = any(k.startswith("xlstm.mlstm_cell.") for k in names)
        if has_s == has_m:
            kind = "both an sLSTM and an mLSTM cell" if has_s else "neither an sLSTM nor an mLSTM cell"
            raise CheckpointError(f"block {i}: unknown block type: it has {kind} "
                                  f"(tensors: {sorted(names)[:8]}); known: mlstm (xlstm.mlstm_cell.*), "
                                  f"slstm (xlstm.slstm_cell.*)")
        types.append("slstm" if has_s else "mlstm")
    return types


def _check(name: str, from_tensors, from_config) -> None:
    if from_config is not None and from_config != from_tensors:
        raise CheckpointError(f"config says {name} = {from_config!r} but the tensors say {from_tensors!r}; "
                              "the config does not belong to these weights (fix or regenerate xlstm_config.json)")


def _same_for_all(name: str, values: list):
    if len(set(values)) > 1:
        raise CheckpointError(f"{name} differs between blocks ({values}); the official stack uses one "
                              "config for all blocks of a type")
    return values[0]


def _mlstm_args(shapes, idx, E, cfg) -> MLSTMV1Args:
    lcfg = _sub(cfg, "mlstm_block", "mlstm") or {}
    inner, heads, bs, ks, bias = [], [], [], [], []
    for i in idx:
        p = f"{STACK}blocks.{i}.xlstm."
        up = shapes[p + "proj_up.weight"]
        if up[1] != E:
            raise CheckpointError(f"block {i}: proj_up.weight has shape {up}, expected [2*inner, {E}]")
        inner.append(up[0] // 2)
        heads.append(shapes[p + "mlstm_cell.igate.weight"][0])
        bs.append(shapes[p + "q_proj.weight"][-1])
        ks.append(shapes[p + "conv1d.conv.weight"][-1])
        bias.append(p + "proj_up.bias" in shapes)
    a = MLSTMV1Args(
        inner_dim=_same_for_all("mLSTM inner dim", inner),
        num_heads=_same_for_all("mLSTM num_heads", heads),
        qkv_proj_blocksize=_same_for_all("mLSTM qkv_proj_blocksize", bs),
        conv1d_kernel_size=_same_for_all("mLSTM conv1d_kernel_size", ks),
        bias=_same_for_all("mLSTM bias", bias),
    )
    _check("mlstm_block.mlstm.num_heads", a.num_heads, lcfg.get("num_heads"))
    _check("mlstm_block.mlstm.qkv_proj_blocksize", a.qkv_proj_blocksize, lcfg.get("qkv_proj_blocksize"))
    _check("mlstm_block.mlstm.conv1d_kernel_size", a.conv1d_kernel_size, lcfg.get("conv1d_kernel_size"))
    _check("mlstm_block.mlstm._inner_embedding_dim", a.inner_dim, lcfg.get("_inner_embedding_dim"))
    _check("bias", a.bias, cfg.get("bias"))
    return a


def _slstm_args(shapes, idx, E, cfg) -> SLSTMArgs:
    lcfg = _sub(cfg, "slstm_block", "slstm") or {}
    fcfg = _sub(cfg, "slstm_block", "feedforward") or {}
    function = lcfg.get("function", "slstm")
    if function != "slstm":
        raise CheckpointError(f"slstm_block.slstm.function = {function!r} is not supported (only 'slstm', "
                              "the paper's sLSTM; 'lstm' is a plain LSTM baseline)")
    heads, ks, gnw, up, fbias, layout = [], [], [], [], [], []
    for i in idx:
        p = f"{STACK}blocks.{i}."
        R = shapes[p + "xlstm.slstm_cell._recurrent_kernel_"]
        nh = R[0]
        if E % nh:
            raise CheckpointError(f"block {i}: {nh} sLSTM heads do not divide embedding_dim {E}")
        dh = E // nh
        if tuple(R) == (nh, 4 * dh, dh):
            layout.append("vanilla")
        elif tuple(R) == (nh, dh, 4 * dh):
            layout.append("cuda")
        else:
            raise CheckpointError(f"block {i}: slstm_cell._recurrent_kernel_ has shape {R}; expected "
                                  f"[{nh}, {4 * dh}, {dh}] (vanilla backend) or [{nh}, {dh}, {4 * dh}] (cuda backend)")
        b = shapes[p + "xlstm.slstm_cell._bias_"]
        if tuple(b) != (4 * E,):
            raise CheckpointError(f"block {i}: slstm_cell._bias_ has shape {b}, expected [{4 * E}]")
        heads.append(nh)
        conv = shapes.get(p + "xlstm.conv1d.conv.weight")
        ks.append(conv[-1] if conv else 0)
        gnw.append(p + "xlstm.group_norm.weight" in shapes)
        fu = shapes.get(p + "ffn.proj_up.weight")
        up.append(fu[0] // 2 if fu else 0)
        fbias.append(p + "ffn.proj_up.bias" in shapes)
    a = SLSTMArgs(
        num_heads=_same_for_all("sLSTM num_heads", heads),
        conv1d_kernel_size=_same_for_all("sLSTM conv1d_kernel_size", ks),
        group_norm_weight=_same_for_all("sLSTM group_norm_weight", gnw),
        ffn_up_dim=_same_for_all("sLSTM feed-forward up dim", up),
        ffn_act_fn=fcfg.get("act_fn", "gelu"),
        ffn_bias=_same_for_all("sLSTM feed-forward bias", fbias),
        layout=_same_for_all("sLSTM stored layout", layout),
    )
    _check("slstm_block.slstm.num_heads", a.num_heads, lcfg.get("num_heads"))
    _check("slstm_block.slstm.conv1d_kernel_size", a.conv1d_kernel_size, lcfg.get("conv1d_kernel_size"))
    _check("slstm_block.slstm.group_norm_weight", a.group_norm_weight, lcfg.get("group_norm_weight"))
    if "slstm_block" in cfg and cfg["slstm_block"] is not None and "feedforward" in cfg["slstm_block"]:
        _check("slstm_block.feedforward is set", a.ffn_up_dim > 0, cfg["slstm_block"]["feedforward"] is not None)
    return a


def infer_stack_args(shapes: dict[str, tuple], cfg: dict) -> StackArgs:
    """shapes: state_dict key -> shape (official names); cfg: the official config dict (may be partial)."""
    check_stack_config(cfg)
    if "token_embedding.weight" not in shapes:
        raise CheckpointError("no token_embedding.weight: not an official xLSTMLMModel state_dict")
    V, E = shapes["token_embedding.weight"]
    types = _block_types_from_keys(shapes)
    n = len(types)
    _check("num_blocks", n, cfg.get("num_blocks"))
    _check("embedding_dim", E, cfg.get("embedding_dim"))
    if cfg.get("vocab_size", -1) not in (-1, None):
        _check("vocab_size", V, cfg.get("vocab_size"))
    mapped = config_block_map(cfg, n)
    if mapped is not None and mapped != types:
        raise CheckpointError(f"config places blocks as {mapped} but the tensors hold {types}")
    tie = bool(cfg.get("tie_weights", False))
    if "lm_head.weight" in shapes:
        if tuple(shapes["lm_head.weight"]) != (V, E):
            raise CheckpointError(f"lm_head.weight has shape {shapes['lm_head.weight']}, expected {(V, E)}")
    elif not tie:
        raise CheckpointError("no lm_head.weight and the config does not set tie_weights: the checkpoint is "
                              "incomplete (or set \"tie_weights\": true in xlstm_config.json)")
    post = f"{STACK}post_blocks_norm.weight" in shapes
    _check("add_post_blocks_norm", post, cfg.get("add_post_blocks_norm"))
    m_idx = [i for i, t in enumerate(types) if t == "mlstm"]
    s_idx = [i for i, t in enumerate(types) if t == "slstm"]
    return StackArgs(
        vocab_size=V,
        embedding_dim=E,
        num_blocks=n,
        block_types=types,
        add_post_blocks_norm=post,
        tie_weights=tie,
        mlstm=_mlstm_args(shapes, m_idx, E, cfg) if m_idx else None,
        slstm=_slstm_args(shapes, s_idx, E, cfg) if s_idx else None,
        context_length=cfg.get("context_length", -1),
        bos_token_id=cfg.get("bos_token_id"),
        eos_token_id=cfg.get("eos_token_id"),
        pad_token_id=cfg.get("pad_token_id"),
    )
