"""State snapshots: the recurrent state after a prompt, saved to safetensors and resumed later.

A recurrent model's whole context is its fixed-size state, so a snapshot of a 100k-token prompt is as small
as one of 10 tokens (xLSTM-7B: ~134 MB) and resuming costs nothing but reading it.

File layout (safetensors):
    state.layers.{i}.{j}   the cache tensors (float32), batch dimension first
    tokens                 int32 [N]: the tokens the state has consumed
    pending                int32 [P]: tokens of the prompt not yet fed (the prompt's last token: feeding it
                           yields the next-token logits); resuming feeds pending + any new tokens
    metadata               format, version, fingerprint, dtype, kernel_dtype, token_count, batch_size,
                           plus caller extras (e.g. a chat's messages as JSON)

The fingerprint hashes the model's parameter names and shapes, its numerics settings, and a deterministic
sample of weight values as computed (so the same checkpoint at the same dtype always matches, and another
checkpoint, or a differently quantized one, does not). A snapshot from another model or dtype is refused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten

from xlstm_mlx import atomic
from xlstm_mlx.errors import MissingFileError, SnapshotError, UsageError

FORMAT = "xlstm-mlx-state"
VERSION = "1"
_PROBES_PER_TENSOR = 8
_IGNORED_ARGS = {"bos_token_id", "eos_token_id", "pad_token_id", "torch_dtype"}


@dataclass
class Snapshot:
    cache: object
    tokens: list[int]
    pending: list[int]
    metadata: dict[str, str] = field(default_factory=dict)


def model_dtypes(model) -> tuple[str, str]:
    """(weight compute dtype, q/k/v kernel dtype) of a model."""
    prof = getattr(model, "profile", None)
    if prof is not None:
        return prof.compute_dtype, prof.kernel_dtype
    dtypes = {str(v.dtype).removeprefix("mlx.core.") for _, v in tree_flatten(model.parameters())}
    d = ",".join(sorted(dtypes))
    return d, d


def model_fingerprint(model) -> str:
    """A short hash identifying the model's architecture and weights (as computed at its dtype)."""
    h = hashlib.sha256()
    args = getattr(model, "args", None)
    if args is not None and dataclasses.is_dataclass(args):
        settings = {k: v for k, v in dataclasses.asdict(args).items() if k not in _IGNORED_ARGS}
        h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    params = sorted(tree_flatten(model.parameters()), key=lambda kv: kv[0])
    probes = []
    for name, p in params:
        h.update(f"{name}:{tuple(p.shape)}:{p.dtype};".encode())
        n = p.size
        if n == 0:
            continue
        seed = int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little")
        idx = [(seed + k * 2654435761) % n for k in range(_PROBES_PER_TENSOR)]
        probes.append(mx.take(p.reshape(-1), mx.array(idx, dtype=mx.int32)).astype(mx.float32))
    if probes:
        values = mx.concatenate(probes)
        mx.eval(values)
        h.update(np.array(values).tobytes())
    return h.hexdigest()[:32]


def save_snapshot(
    path: str | Path,
    model,
    cache,
    tokens: list[int],
    pending: list[int] = (),
    extra: dict[str, str] | None = None,
) -> Path:
    """Write the cache (which has consumed `tokens`) and the not-yet-fed `pending` tokens to `path`."""
    path = Path(path)
    tokens, pending = [int(t) for t in tokens], [int(t) for t in pending]
    if cache.offset != len(tokens):
        raise UsageError(f"the cache has consumed {cache.offset} tokens but {len(tokens)} tokens were given")
    weights, kernel = model_dtypes(model)
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "fingerprint": model_fingerprint(model),
        "dtype": weights,
        "kernel_dtype": kernel,
        "token_count": str(len(tokens)),
        "batch_size": str(cache.batch_size),
    }
    for k, v in (extra or {}).items():
        if k in meta or not isinstance(v, str):
            raise UsageError(f"extra metadata {k!r} must be a new key with a string value")
        meta[k] = v
    tensors = {f"state.{k}": v for k, v in cache.state_dict().items()}
    tensors["tokens"] = mx.array(tokens, dtype=mx.int32)
    tensors["pending"] = mx.array(pending, dtype=mx.int32)
    return atomic.save_safetensors(path, tensors, metadata=meta)  # a failed write leaves any old file intact


def load_snapshot(path: str | Path, model) -> Snapshot:
    """Read a snapshot for `model`; refuses one made by another model or at another dtype."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise SnapshotError(f"state snapshot {path} is a directory; give the snapshot file (.safetensors)")
    if not path.is_file():
        raise MissingFileError(f"state snapshot {path} does not exist")
    try:
        tensors, meta = mx.load(str(path), format="safetensors", return_metadata=True)
    except Exception as e:
        raise SnapshotError(f"{path} is not a readable safetensors file ({e})") from None
    if meta.get("format") != FORMAT:
        raise SnapshotError(f"{path} is not an xlstm-mlx state snapshot (format {meta.get('format')!r})")
    if meta.get("version") != VERSION:
        raise SnapshotError(f"{path} is snapshot version {meta.get('version')}; this xlstm-mlx reads {VERSION}")
    weights, kernel = model_dtypes(model)
    if (meta.get("dtype"), meta.get("kernel_dtype")) != (weights, kernel):
        raise SnapshotError(
            f"{path} was made with weights in {meta.get('dtype')} (q/k/v {meta.get('kernel_dtype')}), but this "
            f"model runs in {weights} (q/k/v {kernel}); load the model with --dtype {meta.get('dtype')} "
            "or re-create the snapshot"
        )
    if meta.get("fingerprint") != model_fingerprint(model):
        raise SnapshotError(
            f"{path} was made with a different model (fingerprint {meta.get('fingerprint')} != "
            f"{model_fingerprint(model)}); a state only makes sense for the weights that produced it"
        )
    batch = int(meta.get("batch_size", "1"))
    cache = model.make_cache(batch)
    state = {k.removeprefix("state."): v for k, v in tensors.items() if k.startswith("state.")}
    try:
        cache.load_state_dict(state)
    except ValueError as e:
        raise SnapshotError(f"{path}: {e}") from None
    tokens = tensors["tokens"].tolist() if "tokens" in tensors else []
    pending = tensors["pending"].tolist() if "pending" in tensors else []
    if len(tokens) != int(meta.get("token_count", len(tokens))):
        raise SnapshotError(f"{path}: token_count {meta.get('token_count')} but {len(tokens)} tokens stored")
    cache.offset = len(tokens)
    return Snapshot(cache=cache, tokens=tokens, pending=pending, metadata=dict(meta))
