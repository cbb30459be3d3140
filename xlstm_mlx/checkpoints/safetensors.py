"""Finding and validating the safetensors files of a checkpoint, before anything is loaded.

A safetensors file is an 8-byte little-endian header length, a JSON header (name -> dtype, shape,
data_offsets) and the data. Reading only the header gives every tensor's shape (for inferring the
model's dimensions) and lets us detect a truncated download by comparing the last data offset with
the file size, so the error names the file instead of surfacing from deep inside a loader.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

from xlstm_mlx.errors import CheckpointError
from xlstm_mlx.jsonfile import read_json_object

SHARD = re.compile(r"^(?P<stem>.+)-(?P<i>\d{5})-of-(?P<n>\d{5})\.safetensors$")
# safetensors dtype code -> (our name, bytes per element): the one table of them
DTYPES = {"F64": ("float64", 8), "F32": ("float32", 4), "F16": ("float16", 2), "BF16": ("bfloat16", 2),
          "I64": ("int64", 8), "I32": ("int32", 4), "I16": ("int16", 2), "I8": ("int8", 1), "U8": ("uint8", 1),
          "BOOL": ("bool", 1), "U16": ("uint16", 2), "U32": ("uint32", 4), "U64": ("uint64", 8)}


def dtype_name(code: str) -> str:
    """float32 for 'F32', ...; an unknown code is shown as it is."""
    return DTYPES[code][0] if code in DTYPES else code


def read_header(path: Path) -> dict[str, dict]:
    """The tensor entries of a safetensors header; raises CheckpointError naming the file if corrupt."""
    size = path.stat().st_size
    fix = "re-download or re-convert this file"
    if size < 8:
        raise CheckpointError(f"{path}: file is truncated ({size} bytes, not even a header); {fix}")
    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        if n > size - 8:
            raise CheckpointError(f"{path}: header claims {n} bytes but the file has {size}: truncated or "
                                  f"not a safetensors file; {fix}")
        try:
            header = json.loads(fh.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{path}: header is not valid JSON ({e}); the file is corrupt; {fix}") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: header is not a JSON object (found {type(header).__name__}); the file is "
                              f"corrupt; {fix}")
    header.pop("__metadata__", None)
    for name, t in header.items():
        _check_entry(path, name, t, fix)
    data_size = size - 8 - n
    end = max((t["data_offsets"][1] for t in header.values()), default=0)
    if end > data_size:
        raise CheckpointError(
            f"{path}: file is truncated: its header describes {end} bytes of tensor data but only "
            f"{data_size} are present; {fix}"
        )
    for name, t in header.items():
        want = DTYPES[t["dtype"]][1]
        count = 1
        for d in t["shape"]:
            count *= d
        if want and t["data_offsets"][1] - t["data_offsets"][0] != count * want:
            raise CheckpointError(f"{path}: tensor {name!r} has shape {t['shape']} ({t['dtype']}) but "
                                  f"{t['data_offsets'][1] - t['data_offsets'][0]} bytes; the file is corrupt; {fix}")
    return header


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _check_entry(path: Path, name: str, t, fix: str) -> None:
    """A tensor entry has a known dtype code, a shape of non-negative ints and data_offsets [begin, end]."""
    where = f"{path}: header entry {name!r}"
    if not isinstance(t, dict):
        raise CheckpointError(f"{where} is not an object with dtype, shape and data_offsets; {fix}")
    missing = [k for k in ("dtype", "shape", "data_offsets") if k not in t]
    if missing:
        raise CheckpointError(f"{where} has no {', '.join(missing)}; the file is corrupt; {fix}")
    if not isinstance(t["dtype"], str) or t["dtype"] not in DTYPES:
        raise CheckpointError(f"{where} has dtype {t['dtype']!r}; known: {sorted(DTYPES)}; {fix}")
    if not isinstance(t["shape"], list) or not all(_is_int(d) for d in t["shape"]):
        raise CheckpointError(f"{where} has shape {t['shape']!r}, not a list of non-negative integers; {fix}")
    off = t["data_offsets"]
    if not (isinstance(off, list) and len(off) == 2 and all(_is_int(o) for o in off) and off[0] <= off[1]):
        raise CheckpointError(f"{where} has data_offsets {off!r}, not [begin, end] with 0 <= begin <= end; {fix}")


def find_weight_files(model_dir: Path) -> list[Path]:
    """The checkpoint's safetensors files: single file, or shards listed by an index (all must exist)."""
    index = model_dir / "model.safetensors.index.json"
    if index.exists():
        weight_map = read_json_object(index).get("weight_map")
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise CheckpointError(f"{index}: not a valid safetensors index (no 'weight_map' of tensor -> file name); "
                                  "re-download it")
        names = sorted(set(weight_map.values()))
        missing = [n for n in names if not (model_dir / n).exists()]
        if missing:
            raise CheckpointError(f"{model_dir}: missing shard(s) {missing} listed in {index.name}; "
                                  "download the complete checkpoint")
        return [model_dir / n for n in names]
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{model_dir}: no *.safetensors files; expected model.safetensors or "
                              "model-00001-of-0000N.safetensors shards with model.safetensors.index.json")
    shards = [SHARD.match(f.name) for f in files]
    if any(shards):
        # shards without an index: the file names themselves say how many there must be
        groups = {}
        for f, m in zip(files, shards):
            if m:
                groups.setdefault((m["stem"], int(m["n"])), set()).add(int(m["i"]))
        for (stem, n), have in groups.items():
            missing = [f"{stem}-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1) if i not in have]
            if missing:
                raise CheckpointError(f"{model_dir}: missing shard(s) {missing}; download the complete checkpoint")
    return files
