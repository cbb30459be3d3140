"""`xlstm-mlx convert`: a checkpoint -> a self-contained model directory, optionally quantized.

    xlstm-mlx convert --model SRC --out DST [--dtype bfloat16] [-q --bits 4|8 --group-size 32|64|128] [--force]

DST gets config.json (with a `quantization` section when -q: see xlstm_mlx/quantize.py), the weights as
safetensors (sharded above 5 GB, with an index) and the tokenizer files; `xlstm_mlx.load(DST)` reads it
directly. Before returning, the written directory is checked the way `load` checks it (headers only).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_flatten
from tqdm import tqdm

from .config import CheckpointError, infer_args
from .loading import check_strict, load, load_weights_index, read_config, resolve_model_dir
from .model import Model
from .profiles import DTYPES
from .quantize import (GROUP_SIZES, apply_quantization, logical_shapes, parameter_bytes, plan_quantization,
                       quantization_config, quantize_model, summarize)
from .safetensors_files import find_weight_files, read_header
from .saving import TOKENIZER_FILES

EXTRA_TOKENIZER_FILES = ("tokenizer.model", "vocab.json", "merges.txt", "added_tokens.json")
SHARD_BYTES = 5 * 1024**3
_HEADER_DTYPES = {"F32": "float32", "BF16": "bfloat16", "F16": "float16"}


def stored_dtype(model_dir: Path) -> str:
    """The floating dtype the checkpoint's tensors are stored in (float32 when they mix dtypes)."""
    seen = {_HEADER_DTYPES.get(t["dtype"], t["dtype"]) for f in find_weight_files(model_dir)
            for t in read_header(f).values()}
    return seen.pop() if len(seen) == 1 and next(iter(seen)) in DTYPES else "float32"


def _prepare_out(src: Path, out: Path, force: bool) -> None:
    if out.resolve() == src.resolve():
        raise ValueError(f"--out {out} is the source directory; write the conversion somewhere else")
    if out.exists() and (out.is_file() or any(out.iterdir())):
        if not force:
            raise ValueError(f"{out} already exists; pass --force to replace it")
        if out.is_file() or not ((out / "config.json").exists() or any(out.glob("*.safetensors"))):
            raise ValueError(f"{out} exists and is not a model directory (no config.json, no *.safetensors); "
                             "refusing to delete it even with --force")


def _shards(tensors: dict[str, mx.array]) -> list[dict[str, mx.array]]:
    shards, current, size = [], {}, 0
    for k, v in tensors.items():
        if current and size + v.nbytes > SHARD_BYTES:
            shards.append(current)
            current, size = {}, 0
        current[k] = v
        size += v.nbytes
    return shards + [current]


def write_weights(tensors: dict[str, mx.array], out: Path, progress: bool = True) -> list[Path]:
    """model.safetensors, or model-0000i-of-0000N.safetensors + index above SHARD_BYTES."""
    shards = _shards(tensors)
    names = (["model.safetensors"] if len(shards) == 1 else
             [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))])
    for name, shard in tqdm(list(zip(names, shards)), desc="writing", unit="file", file=sys.stderr,
                            disable=not progress):
        mx.save_safetensors(str(out / name), shard, metadata={"format": "pt"})
    if len(shards) > 1:
        index = {"metadata": {"total_size": sum(v.nbytes for v in tensors.values())},
                 "weight_map": {k: n for n, s in zip(names, shards) for k in s}}
        (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    return [out / n for n in names]


def verify_directory(model_dir: Path) -> None:
    """What `load` checks before reading any tensor: config, headers, quantization section, strict names
    and shapes against a lazily built model (nothing is materialized)."""
    cfg = read_config(model_dir)
    shapes, where = load_weights_index(find_weight_files(model_dir))
    qcfg = quantization_config(cfg)
    model = apply_quantization(Model(infer_args(logical_shapes(shapes, where, qcfg), cfg)), qcfg)
    check_strict(model, shapes)


def convert(src: str | Path, out: str | Path, dtype: str | None = None, quantize: bool = False, bits: int = 4,
            group_size: int = 64, embeddings: bool = True, force: bool = False, progress: bool = True) -> dict:
    """Convert `src` into `out`. Returns a summary: dtype, bytes before/after, the quantization section."""
    src_dir, out = resolve_model_dir(src), Path(out).expanduser()
    _prepare_out(src_dir, out, force)
    from .stack_loading import is_stack_dir

    if is_stack_dir(src_dir):
        raise ValueError(f"{src_dir} is an official mLSTM/sLSTM stack (xlstm_config.json); convert handles "
                         "xLSTM-7B-family checkpoints (config.json) only")
    if quantization_config(read_config(src_dir)) is not None:
        raise ValueError(f"{src_dir} is already quantized; convert from the float checkpoint")
    if dtype is not None and dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    dtype = dtype or stored_dtype(src_dir)
    model, _ = load(src_dir, dtype=dtype)
    # every float tensor in `dtype`, whatever a loading profile keeps wider (e.g. a float32 lm_head)
    model.set_dtype(DTYPES[dtype])
    float_bytes = parameter_bytes(model)
    qcfg = None
    if quantize:
        qcfg = plan_quantization(model, bits, group_size, embeddings)
        quantize_model(model, qcfg, progress=progress, evaluate=True)
    tensors = dict(tree_flatten(model.parameters()))

    # write into a fresh directory beside `out`, then put it in place: a failed run leaves `out` as it was
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; the result should be an ordinary directory
    try:
        write_weights(tensors, tmp, progress)
        cfg = read_config(src_dir)
        cfg.update(model.args.to_config_dict())
        cfg["torch_dtype"] = dtype
        cfg.pop("quantization", None)
        if qcfg is not None:
            cfg["quantization"] = qcfg
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
        for name in TOKENIZER_FILES + EXTRA_TOKENIZER_FILES:
            if (src_dir / name).is_file():
                shutil.copy(src_dir / name, tmp / name)
        verify_directory(tmp)
        if out.exists():  # an empty directory, or a model directory and --force (_prepare_out)
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"out": out, "dtype": dtype, "float_bytes": float_bytes, "bytes": parameter_bytes(model),
            "quantization": qcfg}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="source checkpoint directory (or Hugging Face repo id)")
    p.add_argument("--out", required=True, help="output directory (refused if it exists, unless --force)")
    p.add_argument("--dtype", choices=sorted(DTYPES),
                   help="dtype of every float tensor (and of the quantization scales/biases); default: as stored")
    p.add_argument("-q", "--quantize", action="store_true", help="quantize the projection and FFN weights")
    p.add_argument("--bits", type=int, choices=[4, 8], help="bits per quantized weight (default 4)")
    p.add_argument("--group-size", type=int, choices=sorted(GROUP_SIZES),
                   help="weights per scale/bias pair (default 64); layers it does not divide fall back, reported")
    p.add_argument("--keep-embeddings", action="store_true",
                   help="keep the token embedding and lm_head in --dtype instead of quantizing them")
    p.add_argument("--force", action="store_true", help="replace an existing --out model directory")


def run(ns: argparse.Namespace) -> int:
    try:
        if not ns.quantize and (ns.keep_embeddings or ns.bits is not None or ns.group_size is not None):
            raise ValueError("--bits, --group-size and --keep-embeddings only apply with -q/--quantize")
        s = convert(ns.model, ns.out, dtype=ns.dtype, quantize=ns.quantize, bits=ns.bits or 4,
                    group_size=ns.group_size or 64, embeddings=not ns.keep_embeddings, force=ns.force)
    except ValueError as e:  # CheckpointError is a ValueError
        print(f"error: {e}", file=sys.stderr)
        return 2
    if s["quantization"] is not None:
        print("\n".join(summarize(s["quantization"])))
    print(f"weights: {s['float_bytes'] / 1e6:,.1f} MB in {s['dtype']} -> {s['bytes'] / 1e6:,.1f} MB")
    print(f"wrote {s['out']}")
    return 0
