"""`xlstm-mlx convert`: a checkpoint of any family -> a self-contained model directory, optionally quantized.

    xlstm-mlx convert --model SRC --out DST [--dtype bfloat16] [-q --bits 4|8 --group-size 32|64|128] [--mlx-lm]
                      [--force]

DST gets the family's config file (config.json, or xlstm_config.json for an official stack), with a
`quantization` section when -q (checkpoints/quantize.py), the weights as safetensors in the family's stored
layout (sharded above 5 GB, with an index) and the tokenizer files; `xlstm_mlx.load(DST)` reads it directly.
--mlx-lm adds the model file mlx-lm runs with --trust-remote-code and names it in config.json
(integrations/mlx_lm_files.py). Before returning, the written directory is checked the way `load` checks it
(headers only).
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

from xlstm_mlx.checkpoints.load import load, open_checkpoint, open_weights, build_model, resolve_model_dir
from xlstm_mlx.checkpoints.quantize import (GROUP_SIZES, parameter_bytes, plan_quantization, quantize_model,
                                            summarize)
from xlstm_mlx.checkpoints.demo import model_or_default
from xlstm_mlx.checkpoints.outdir import prepare_out
from xlstm_mlx.checkpoints.safetensors import DTYPES as SAFETENSORS_DTYPES, dtype_name
from xlstm_mlx.checkpoints.save import TOKENIZER_FILES
from xlstm_mlx.errors import CheckpointError, UsageError
from xlstm_mlx.profiles import DTYPES, default_profile

SHARD_BYTES = 5 * 1024**3


def stored_dtype(ckpt) -> str:
    """The floating dtype the checkpoint's tensors are stored in (float32 when they mix dtypes)."""
    seen = {dtype_name(code) for code in ckpt.dtypes.values()}
    return seen.pop() if len(seen) == 1 and next(iter(seen)) in DTYPES else "float32"


def source_bytes(ckpt) -> int:
    """Bytes of tensor data the checkpoint stores (from the headers: shape x element size)."""
    total = 0
    for key, shape in ckpt.shapes.items():
        n = 1
        for d in shape:
            n *= d
        total += n * SAFETENSORS_DTYPES.get(ckpt.dtypes[key], (None, 0))[1]
    return total


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
    ckpt = open_checkpoint(model_dir)
    open_weights(ckpt, build_model(ckpt, default_profile()))


def convert(src: str | Path, out: str | Path, dtype: str | None = None, quantize: bool = False, bits: int = 4,
            group_size: int = 64, embeddings: bool = True, force: bool = False, progress: bool = True,
            mlx_lm: bool = False) -> dict:
    """Convert `src` into `out`. Returns a summary: dtype, bytes before/after, the quantization section."""
    src_dir, out = resolve_model_dir(src), Path(out).expanduser()
    prepare_out(src_dir, out, force)
    ckpt = open_checkpoint(src_dir)
    if ckpt.quantization is not None:
        raise UsageError(f"{src_dir} is already quantized; convert from the float checkpoint")
    if dtype is not None and dtype not in DTYPES:
        raise UsageError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    dtype = dtype or stored_dtype(ckpt)
    model, _ = load(src_dir, dtype=dtype)
    # every float tensor in `dtype`, whatever a loading profile keeps wider (e.g. a float32 lm_head)
    model.set_dtype(DTYPES[dtype])
    float_bytes = parameter_bytes(model)
    qcfg = None
    if quantize:
        qcfg = plan_quantization(model, bits, group_size, embeddings)
        quantize_model(model, qcfg, progress=progress, evaluate=True)
    tensors = ckpt.family.export(dict(tree_flatten(model.parameters())), model.args)

    # write into a fresh directory beside `out`, then put it in place: a failed run leaves `out` as it was
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; the result should be an ordinary directory
    try:
        write_weights(tensors, tmp, progress)
        cfg = ckpt.family.export_config(model.args, ckpt.config)
        cfg["torch_dtype"] = dtype
        cfg.pop("quantization", None)
        cfg.pop("model_file", None)  # only --mlx-lm writes the file it names
        if qcfg is not None:
            cfg["quantization"] = qcfg
        (tmp / ckpt.family.CONFIG_NAME).write_text(json.dumps(cfg, indent=2) + "\n")
        if mlx_lm:
            from xlstm_mlx.integrations.mlx_lm_files import write_mlx_lm_files

            write_mlx_lm_files(tmp, ckpt.family.CONFIG_NAME, cfg)
        for name in TOKENIZER_FILES:
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
            "source_bytes": source_bytes(ckpt), "source_dtype": stored_dtype(ckpt), "quantization": qcfg}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-m", "--model", help="source checkpoint directory or Hugging Face repo id (default: the bundled "
                   "model)")
    p.add_argument("--out", required=True, help="output directory (refused if it exists, unless --force)")
    p.add_argument("--dtype", choices=sorted(DTYPES),
                   help="dtype of every float tensor (and of the quantization scales/biases); default: as stored")
    p.add_argument("-q", "--quantize", action="store_true", help="quantize the projection and FFN weights")
    p.add_argument("--bits", type=int, choices=[4, 8], help="bits per quantized weight (default 4)")
    p.add_argument("--group-size", type=int, choices=sorted(GROUP_SIZES),
                   help="weights per scale/bias pair (default 64); layers it does not divide fall back, reported")
    p.add_argument("--keep-embeddings", action="store_true",
                   help="keep the token embedding and lm_head in --dtype instead of quantizing them")
    p.add_argument("--mlx-lm", action="store_true",
                   help="also write the model file mlx-lm runs (config.json model_file), so that "
                   "`mlx_lm.generate --model OUT --trust-remote-code` works where xlstm-mlx is installed")
    p.add_argument("--force", action="store_true", help="replace an existing --out model directory")


def run(ns: argparse.Namespace) -> int:
    if not ns.quantize and (ns.keep_embeddings or ns.bits is not None or ns.group_size is not None):
        raise UsageError("--bits, --group-size and --keep-embeddings only apply with -q/--quantize")
    s = convert(model_or_default(ns.model, sys.stderr), ns.out, dtype=ns.dtype, quantize=ns.quantize, bits=ns.bits or 4,
                group_size=ns.group_size or 64, embeddings=not ns.keep_embeddings, force=ns.force, mlx_lm=ns.mlx_lm)
    if s["quantization"] is not None:
        print("\n".join(summarize(s["quantization"])))
    print(f"weights: {s['source_bytes'] / 1e6:,.1f} MB stored ({s['source_dtype']}) -> {s['bytes'] / 1e6:,.1f} MB "
          f"({s['dtype']}{', quantized' if s['quantization'] is not None else ''})")
    print(f"wrote {s['out']}")
    if ns.mlx_lm:
        print(f"mlx-lm: mlx_lm.generate --model {s['out']} --trust-remote-code --prompt ...")
    return 0
