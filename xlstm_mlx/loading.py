"""load(path) -> (model, tokenizer): find the files, map the keys, infer and check dims, load strictly.

Supported layouts (discovered from the files, never from the directory name):
  - Hugging Face `xlstm` (xLSTMForCausalLM.save_pretrained): backbone.embeddings.weight, ...
  - official `xlstm` package xLSTMLarge state_dict: embedding.weight, backbone.blocks..., lm_head.weight
Weights may be float32, bfloat16 or float16 on disk, single-file or sharded, single or fused.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_flatten, tree_unflatten
from tqdm import tqdm

from .config import CheckpointError, infer_args
from .model import Model
from .profiles import NumericsProfile, default_profile, load_profile
from .quantize import apply_quantization, logical_shapes, quantization_config
from .safetensors_files import find_weight_files, read_header
from .tokenizer import load_tokenizer

# official xLSTMLarge name -> Hugging Face name (the only difference between the two layouts)
OFFICIAL_TO_HF = {"embedding.weight": "backbone.embeddings.weight"}


def resolve_model_dir(path: str | Path) -> Path:
    """A local directory, or (when online) a Hugging Face repo id downloaded to the local cache."""
    p = Path(path).expanduser()
    if p.is_dir():
        return p
    if p.exists():
        raise CheckpointError(f"{p} is a file; give the checkpoint's directory (with config.json and *.safetensors)")
    text = str(path)
    if text.count("/") == 1 and not text.startswith((".", "/", "~")):
        from huggingface_hub import snapshot_download

        try:
            return Path(snapshot_download(text, allow_patterns=["*.json", "*.safetensors", "*.jinja", "*.txt"]))
        except Exception as e:  # offline, unknown repo, gated repo: say what failed and what to do
            raise CheckpointError(
                f"{text!r} is not a local directory and could not be fetched from the Hugging Face Hub "
                f"({type(e).__name__}: {' '.join(str(e).split())}); download it first (huggingface-cli download {text}) and pass the directory"
            ) from None
    raise CheckpointError(f"model directory {p} does not exist")


def _canonical_name(key: str) -> str:
    return OFFICIAL_TO_HF.get(key, key)


def read_config(model_dir: Path) -> dict:
    f = model_dir / "config.json"
    if not f.exists():
        return {}
    try:
        return json.loads(f.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{f}: not valid JSON ({e})") from None


def load_weights_index(files: list[Path]) -> tuple[dict[str, tuple], dict[str, Path]]:
    """Shapes of all tensors (canonical names) and the file each lives in; duplicates are an error."""
    shapes, where = {}, {}
    for f in files:
        for raw, entry in read_header(f).items():
            key = _canonical_name(raw)
            if key in where:
                raise CheckpointError(f"tensor {raw!r} appears in both {where[key].name} and {f.name}")
            shapes[key] = tuple(entry["shape"])
            where[key] = f
    return shapes, where


def check_strict(model: Model, shapes: dict[str, tuple]) -> None:
    """Every stored tensor used, every parameter filled, every shape right; else list what is wrong."""
    expected = {k: tuple(v.shape) for k, v in tree_flatten(model.parameters())}
    missing = sorted(set(expected) - set(shapes))
    unexpected = sorted(set(shapes) - set(expected))
    wrong = [f"{k}: expected {expected[k]}, found {shapes[k]}" for k in sorted(set(expected) & set(shapes))
             if expected[k] != shapes[k]]
    problems = []
    if missing:
        problems.append(f"missing tensors ({len(missing)}): {missing[:20]}{' ...' if len(missing) > 20 else ''}")
    if unexpected:
        problems.append(f"unexpected tensors ({len(unexpected)}): {unexpected[:20]}"
                        f"{' ...' if len(unexpected) > 20 else ''}")
    if wrong:
        problems.append("shape mismatch: " + "; ".join(wrong[:20]))
    if problems:
        raise CheckpointError("checkpoint does not match the model built from it:\n  " + "\n  ".join(problems))


def load(path: str | Path, dtype: str | None = None, profile: str | NumericsProfile | None = None,
         verbose: bool = False, check_numerics: bool = False):
    """Load a checkpoint. Returns (model, tokenizer or None).

    dtype: compute dtype of the weights ("float32", "bfloat16", "float16"); default bfloat16 on a GPU,
    float32 on CPU. profile: a numerics profile name ('parity', 'fast') or JSON path; `dtype`, when
    given, overrides the profile's weight and q/k/v dtype.
    """
    model_dir = resolve_model_dir(path)
    if profile is None:
        prof = default_profile(dtype)
    else:
        prof = load_profile(profile)
        if dtype is not None:
            prof = prof.replace(compute_dtype=dtype, kernel_dtype=dtype)  # replace() re-validates
    from .stack_loading import is_stack_dir, load_stack  # official xLSTMLMModel stacks (mLSTM/sLSTM)

    if is_stack_dir(model_dir):
        model = load_stack(model_dir, prof, verbose=verbose, check_numerics=check_numerics)
        return model, load_tokenizer(model_dir)
    cfg = read_config(model_dir)
    files = find_weight_files(model_dir)
    shapes, where = load_weights_index(files)
    qcfg = quantization_config(cfg)  # None for a float checkpoint
    args = infer_args(logical_shapes(shapes, where, qcfg), cfg)
    if profile is None:  # no explicit profile: the checkpoint's own chunk size
        prof = prof.replace(chunk_size=args.chunk_size)
    model = Model(args, prof)
    apply_quantization(model, qcfg)  # the quantized layers config.json records (xlstm_mlx/quantize.py)
    check_strict(model, shapes)

    target = prof.mx_compute_dtype
    weights = {}
    stored = set()
    bar = tqdm(files, desc="loading", unit="file", disable=len(files) < 2 and not verbose, file=sys.stderr)
    for f in bar:
        try:
            tensors = mx.load(str(f))
        except Exception as e:
            raise CheckpointError(f"{f}: could not be read ({e}); re-download or re-convert it") from None
        for raw, arr in tensors.items():
            stored.add(str(arr.dtype).removeprefix("mlx.core."))
            # packed quantized weights (uint32) stay as they are; scales and biases take the compute dtype
            name = _canonical_name(raw)
            if not mx.issubdtype(arr.dtype, mx.floating):
                weights[name] = arr
            elif name == "lm_head.weight":  # an unquantized head keeps the profile's head dtype
                weights[name] = arr.astype(prof.mx_head_dtype)
            else:
                weights[name] = arr.astype(target)
    model.update(tree_unflatten(list(weights.items())))
    mx.eval(model.parameters())
    model.check_numerics = check_numerics
    model.stored_dtypes = sorted(stored)
    model.model_dir = model_dir
    if verbose:
        print(describe_run(model), file=sys.stderr)
    return model, load_tokenizer(model_dir)


def describe_run(model: Model) -> str:
    """One line saying which code path runs: backend, dtypes, kernels."""
    dev = mx.default_device()
    from .kernels import reference_forced

    kern = "reference kernels (forced)" if reference_forced() else "fast kernels"
    backend = dev.type.name if hasattr(dev.type, "name") else str(dev)
    if dev.type == mx.gpu:
        backend = "cuda" if mx.cuda.is_available() else "metal"
        if backend == "cuda":
            tf32 = os.environ.get("MLX_ENABLE_TF32", "1") not in ("0", "")
            backend += " (float32 matmuls: TF32)" if tf32 else " (float32 matmuls: full float32)"
    if dev.type == mx.cpu:
        from . import _blas

        b = _blas.info()
        backend += (f" (BLAS: {b['library']}, core {b.get('core')}, {b.get('threads')} threads)" if b["active"]
                    else f" (BLAS: MLX's bundled reference BLAS, slow: {b['reason']}; see docs/cpu-blas.md)")
    return (f"[xlstm-mlx] backend={backend} "
            f"stored={','.join(getattr(model, 'stored_dtypes', []))} {model.profile.describe()} "
            f"gates/state=float32 norms=mx.fast (float32 reductions) {kern}")
