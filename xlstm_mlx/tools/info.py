"""`xlstm-mlx info`: the structure of a checkpoint, read from its files without loading the weights.

Only the safetensors headers and the config are read; the model is built lazily (MLX allocates nothing until
evaluated), so describing xLSTM-7B takes a fraction of a second and no memory.
"""

from __future__ import annotations

import math
from pathlib import Path

from xlstm_mlx.checkpoints.load import build_model, open_checkpoint
from xlstm_mlx.checkpoints.quantize import summarize
from xlstm_mlx.checkpoints.safetensors import dtype_name
from xlstm_mlx.generation.tokenizer import load_tokenizer
from xlstm_mlx.profiles import default_profile


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


def describe_checkpoint(path: str | Path) -> str:
    """A readable description of the checkpoint at `path` (a directory or a Hub repo id), any family."""
    ckpt = open_checkpoint(path)
    shapes = ckpt.logical_shapes()  # packed quantized weights -> the float shapes they stand for
    params = sum(math.prod(s) for s in shapes.values())
    stored = sorted({dtype_name(d) for d in ckpt.dtypes.values()})
    nbytes = sum(f.stat().st_size for f in ckpt.files)
    prof = default_profile()
    model = build_model(ckpt, prof)  # lazy: shapes only, nothing is allocated
    cache = model.make_cache(1)
    state_bytes = sum(a.nbytes for a in cache.arrays())
    per_block = {}
    for t, layer in zip(model.block_types, cache.layers):
        per_block.setdefault(t, sum(a.nbytes for a in layer))
    tok = load_tokenizer(ckpt.model_dir)

    lines = [f"{ckpt.model_dir}", f"  {model.describe()['family']}", ""] + model.diagram() + [""]
    rows = [
        ("blocks", f"{len(model.block_types)}: " + " ".join(t.replace("lstm", "") for t in model.block_types)),
        ("parameters", _count(params)),
        ("stored", f"{', '.join(stored)}, {_size(nbytes)} in {len(ckpt.files)} file{'s' if len(ckpt.files) > 1 else ''}"),
        ("compute (default)", f"weights {prof.compute_dtype}, q/k/v {prof.kernel_dtype}, "
                              f"gates and state float32 (profile {prof.name})"),
        ("state / sequence", f"{_size(state_bytes)} float32, constant whatever the context length ("
                             + ", ".join(f"{_size(b)} per {t} block" for t, b in per_block.items()) + ")"),
        ("tokenizer", repr(tok) if tok is not None else "none (no tokenizer.json)"),
    ]
    if ckpt.quantization is not None:
        rows.insert(3, ("quantization", summarize(ckpt.quantization)[0]))
    width = max(len(k) for k, _ in rows)
    lines += [f"  {k.ljust(width)}  {v}" for k, v in rows]
    return "\n".join(lines)
