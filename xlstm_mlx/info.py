"""`xlstm-mlx info`: the structure of a checkpoint, read from its files without loading the weights.

Only the safetensors headers and the config are read; the model is built lazily (MLX allocates nothing until
evaluated), so describing xLSTM-7B takes a fraction of a second and no memory.
"""

from __future__ import annotations

import math
from itertools import groupby
from pathlib import Path

from .config import infer_args
from .loading import load_weights_index, read_config, resolve_model_dir
from .model import Model
from .profiles import default_profile
from .quantize import logical_shapes, quantization_config, summarize
from .safetensors_files import find_weight_files, read_header
from .stack_loading import is_stack_dir, read_stack_config
from .stack_config import infer_stack_args
from .stack_model import StackModel
from .tokenizer import load_tokenizer

_ST_DTYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64", "I32": "int32",
              "I64": "int64", "I8": "int8", "U8": "uint8", "U32": "uint32"}


def _size(nbytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if nbytes < 1000 or unit == "TB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.2f} {unit}"
        nbytes /= 1000
    return ""


def _count(n: int) -> str:
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= div:
            return f"{n:,} ({n / div:.2f} {unit})"
    return f"{n:,}"


def _runs(types: list[str]) -> list[tuple[str, int, int]]:
    """Consecutive runs of equal block types: (type, first index, last index)."""
    out, i = [], 0
    for t, group in groupby(types):
        n = len(list(group))
        out.append((t, i, i + n - 1))
        i += n
    return out


def _blocks_line(t: str, first: int, last: int) -> str:
    where = f"block {first}" if first == last else f"blocks {first}-{last} ({last - first + 1}x)"
    return f"{where} {t}"


def _xlstm7b_lines(a) -> list[str]:
    caps = f"gates soft-capped at {a.gate_soft_cap}" if a.gate_soft_cap is not None else "gates uncapped"
    ffn = f"SwiGLU FFN {a.hidden_size} -> {a.ffn_dim} -> {a.hidden_size}"
    lines = [
        f"  tokens -> embedding [{a.vocab_size} x {a.hidden_size}]",
        "     |",
        f"     +-- {_blocks_line('mLSTM', 0, a.num_blocks - 1)}  (weights {a.weight_mode}, bias {a.use_bias})",
        f"     |     x + mLSTM(RMSNorm(x)): {a.num_heads} heads, per head q/k {a.qk_head_dim}, v {a.v_head_dim}; {caps}",
        f"     |     x + FFN(RMSNorm(x)):   {ffn}",
        "     |",
    ]
    head = "lm_head" if not a.tie_word_embeddings else "lm_head (tied to the embedding)"
    cap = f" -> soft-cap {a.output_logit_soft_cap}" if a.output_logit_soft_cap is not None else ""
    norm = "out_norm RMSNorm -> " if a.add_out_norm else ""
    lines.append(f"  {norm}{head} [{a.hidden_size} -> {a.vocab_size}]{cap} -> logits (float32)")
    return lines


def _stack_lines(a) -> list[str]:
    lines = [f"  tokens -> token_embedding [{a.vocab_size} x {a.embedding_dim}]", "     |"]
    for t, first, last in _runs(a.block_types):
        if t == "mlstm":
            m = a.mlstm
            detail = (f"x + mLSTM(LayerNorm(x)): up-projection to {m.inner_dim}, {m.num_heads} heads, "
                      f"causal conv {m.conv1d_kernel_size}, q/k/v blocksize {m.qkv_proj_blocksize}")
        else:
            s = a.slstm
            ffn = f"; x + FFN(LayerNorm(x)) {a.embedding_dim} -> {s.ffn_up_dim} ({s.ffn_act_fn})" if s.ffn_up_dim else ""
            detail = f"x + sLSTM(LayerNorm(x)): {s.num_heads} heads, causal conv {s.conv1d_kernel_size}{ffn}"
        lines += [f"     +-- {_blocks_line(t.replace('lstm', 'LSTM'), first, last)}", f"     |     {detail}"]
    lines.append("     |")
    norm = "post_blocks_norm LayerNorm -> " if a.add_post_blocks_norm else ""
    head = "lm_head (tied to the embedding)" if a.tie_weights else "lm_head"
    lines.append(f"  {norm}{head} [{a.embedding_dim} -> {a.vocab_size}] -> logits (float32)")
    return lines


def describe_checkpoint(path: str | Path) -> str:
    """A readable description of the checkpoint at `path` (a directory or a Hub repo id)."""
    model_dir = resolve_model_dir(path)
    files = find_weight_files(model_dir)
    headers = [read_header(f) for f in files]
    entries = [e for h in headers for e in h.values()]
    params = 0
    for e in entries:
        n = 1
        for d in e["shape"]:
            n *= d
        params += n
    stored = sorted({_ST_DTYPES.get(e["dtype"], e["dtype"]) for e in entries})
    nbytes = sum(e["data_offsets"][1] - e["data_offsets"][0] for e in entries)

    qcfg = None
    if is_stack_dir(model_dir):
        shapes = {k: tuple(e["shape"]) for h in headers for k, e in h.items()}
        args = infer_stack_args(shapes, read_stack_config(model_dir))
        model = StackModel(args)
        family = f"official xLSTM stack {args.ratio()} (xlstm.xLSTMLMModel layout)"
        diagram = _stack_lines(args)
    else:
        shapes, where = load_weights_index(files)
        cfg = read_config(model_dir)
        qcfg = quantization_config(cfg)
        shapes = logical_shapes(shapes, where, qcfg)  # packed quantized weights -> their float shapes
        if qcfg is not None:
            params = sum(math.prod(s) for s in shapes.values())
        args = infer_args(shapes, cfg)
        model = Model(args)
        family = "xLSTM-7B family (mLSTM blocks, Hugging Face xlstm / official xLSTMLarge layout)"
        diagram = _xlstm7b_lines(args)

    cache = model.make_cache(1)  # lazy zeros: shapes only, nothing is allocated
    state_bytes = sum(a.nbytes for a in cache.arrays())
    per_block = {}
    for t, layer in zip(model.block_types, cache.layers):
        per_block.setdefault(t, sum(a.nbytes for a in layer))
    prof = default_profile()
    tok = load_tokenizer(model_dir)

    lines = [f"{model_dir}", f"  {family}", ""] + diagram + [""]
    rows = [
        ("blocks", f"{len(model.block_types)}: " + " ".join(t.replace("lstm", "") for t in model.block_types)),
        ("parameters", _count(params)),
        ("stored", f"{', '.join(stored)}, {_size(nbytes)} in {len(files)} file{'s' if len(files) > 1 else ''}"),
        ("compute (default)", f"weights {prof.compute_dtype}, q/k/v {prof.kernel_dtype}, "
                              f"gates and state float32 (profile {prof.name})"),
        ("state / sequence", f"{_size(state_bytes)} float32, constant whatever the context length ("
                             + ", ".join(f"{_size(b)} per {t} block" for t, b in per_block.items()) + ")"),
        ("tokenizer", repr(tok) if tok is not None else "none (no tokenizer.json)"),
    ]
    if qcfg is not None:  # issue #7: quantized checkpoints
        rows.insert(3, ("quantization", summarize(qcfg)[0]))
    width = max(len(k) for k, _ in rows)
    lines += [f"  {k.ljust(width)}  {v}" for k, v in rows]
    return "\n".join(lines)
