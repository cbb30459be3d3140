"""load(path) -> (model, tokenizer): the one loading pipeline, for every model family.

    resolve the directory -> read and validate every safetensors header -> detect the family (models/) ->
    the family's config -> canonical tensor names -> the quantization section and logical shapes ->
    Args.from_checkpoint -> build the model (lazy) -> its quantized structure -> open the tensors (lazily:
    nothing is read yet) -> sanitize to the module tree's layout -> strict check of names and shapes ->
    cast (the family's param_dtype) -> read (evaluate)

Everything a checkpoint can get wrong (missing or truncated shards, a config that does not match the tensors,
an unknown layout) is found before any tensor data is read, and the CheckpointError names the file, the
tensor, the expected and the found shape.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import mlx.core as mx
from mlx.utils import tree_flatten, tree_unflatten

from xlstm_mlx import kernels, platform
from xlstm_mlx.checkpoints.quantize import apply_quantization, logical_shapes, quantization_config
from xlstm_mlx.checkpoints.safetensors import dtype_name, find_weight_files, read_header
from xlstm_mlx.errors import CheckpointError
from xlstm_mlx.generation.tokenizer import load_tokenizer
from xlstm_mlx.models import detect_family, family_of
from xlstm_mlx.models.compiled import compiled_decode_enabled
from xlstm_mlx.profiles import NumericsProfile, default_profile, load_profile


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
        except Exception as e:  # offline, unknown repo, gated repo: one line saying what to do, not the Hub's wall
            raise CheckpointError(
                f"{text!r} is not a local directory and could not be fetched from the Hugging Face Hub "
                f"({type(e).__name__}); download it with `hf download {text} --local-dir DIR` and pass --model DIR"
            ) from None
    raise CheckpointError(f"model directory {p} does not exist")


@dataclass
class Checkpoint:
    """What a checkpoint's files say, before any tensor is read (steps 1-5 of the pipeline)."""

    model_dir: Path
    files: list[Path]
    family: ModuleType
    config: dict
    shapes: dict[str, tuple] = field(default_factory=dict)  # canonical name -> stored shape
    dtypes: dict[str, str] = field(default_factory=dict)  # canonical name -> safetensors dtype code
    where: dict[str, Path] = field(default_factory=dict)  # canonical name -> file
    raw_names: dict[str, str] = field(default_factory=dict)  # canonical name -> name in the file
    quantization: dict | None = None

    def logical_shapes(self) -> dict[str, tuple]:
        """Shapes with packed quantized weights shown as the float shapes they stand for."""
        return logical_shapes(self.shapes, self.dtypes, self.where, self.quantization)

    def args(self):
        return self.family.Args.from_checkpoint(self.logical_shapes(), self.config)


def open_checkpoint(path: str | Path) -> Checkpoint:
    """Resolve, read every header, detect the family, read its config, canonicalize the names."""
    model_dir = resolve_model_dir(path)
    files = find_weight_files(model_dir)
    headers = {f: read_header(f) for f in files}
    family = detect_family(model_dir, {k for h in headers.values() for k in h})
    ckpt = Checkpoint(model_dir, files, family, family.read_config(model_dir))
    for f, header in headers.items():
        for raw, entry in header.items():
            key = family.rename_key(raw)
            if key in ckpt.where:
                raise CheckpointError(f"tensor {raw!r} appears in both {ckpt.where[key].name} and {f.name}")
            ckpt.shapes[key], ckpt.dtypes[key] = tuple(entry["shape"]), entry["dtype"]
            ckpt.where[key], ckpt.raw_names[key] = f, raw
    ckpt.quantization = quantization_config(ckpt.config)  # None for a float checkpoint
    return ckpt


def build_model(ckpt: Checkpoint, profile: NumericsProfile):
    """The (lazy) model the checkpoint describes, with the quantized structure its config records."""
    model = ckpt.family.Model(ckpt.args(), profile)
    return apply_quantization(model, ckpt.quantization)


def check_strict(model, shapes: dict[str, tuple]) -> None:
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


def open_weights(ckpt: Checkpoint, model) -> dict[str, mx.array]:
    """The checkpoint's tensors in the module tree's names and layouts, strictly checked; still lazy."""
    weights = {}
    for f in ckpt.files:
        try:
            tensors = mx.load(str(f))  # lazy: the data is read when evaluated
        except Exception as e:
            raise CheckpointError(f"{f}: could not be read ({e}); re-download or re-convert it") from None
        weights.update((ckpt.family.rename_key(raw), arr) for raw, arr in tensors.items())
    weights = ckpt.family.sanitize(weights, model.args)
    check_strict(model, {k: tuple(v.shape) for k, v in weights.items()})
    return weights


def cast_weights(weights: dict[str, mx.array], family: ModuleType, profile: NumericsProfile) -> dict[str, mx.array]:
    """Each float tensor in the dtype its family computes it in; packed quantized weights stay as stored."""
    return {k: (v.astype(family.param_dtype(k, profile)) if mx.issubdtype(v.dtype, mx.floating) else v)
            for k, v in weights.items()}


def resolve_profile(dtype: str | None, profile: str | NumericsProfile | None) -> NumericsProfile:
    if profile is None:
        return default_profile(dtype)
    prof = load_profile(profile)
    if dtype is not None:
        prof = prof.replace(compute_dtype=dtype, kernel_dtype=dtype)  # replace() re-validates
    return prof


def load(path: str | Path, dtype: str | None = None, profile: str | NumericsProfile | None = None,
         verbose: bool = False, check_numerics: bool = False):
    """Load a checkpoint of any registered family. Returns (model, tokenizer or None).

    dtype: compute dtype of the weights ("float32", "bfloat16", "float16"); default bfloat16 on a GPU,
    float32 on CPU. profile: a numerics profile name ('parity', 'fast') or JSON path; `dtype`, when
    given, overrides the profile's weight and q/k/v dtype.
    """
    platform.setup()
    prof = resolve_profile(dtype, profile)
    ckpt = open_checkpoint(path)
    args = ckpt.args()
    if profile is None and getattr(args, "chunk_size", None):  # no explicit profile: the checkpoint's chunk size
        prof = prof.replace(chunk_size=args.chunk_size)
    model = build_model(ckpt, prof)
    weights = cast_weights(open_weights(ckpt, model), ckpt.family, prof)
    model.update(tree_unflatten(list(weights.items())))
    mx.eval(model.parameters())
    model.check_numerics = check_numerics
    if hasattr(model, "fuse_projections"):  # a family that fuses its projections for inference (xlstm7b/fuse.py)
        model.fuse_projections()
    model.stored_dtypes = sorted({dtype_name(d) for d in ckpt.dtypes.values()})
    model.model_dir = ckpt.model_dir
    if verbose:
        print(describe_run(model), file=sys.stderr)
    return model, load_tokenizer(ckpt.model_dir)



def describe_run(model) -> str:
    """One line saying which code path runs: family, backend, dtypes, kernels, decode step."""
    kern = " ".join(f"{n}={label}" for n, label in kernels.describe(model.kernel_names()).items())
    decode = ("compiled (mx.compile, weights as inputs)" if compiled_decode_enabled() and not kernels.reference_forced()
              else "plain model call")
    prof = model.profile
    norms = ("plain float64 formulas" if prof.residual_dtype == "float64"
             else "mx.fast (float32 reductions)")
    about = model.describe()
    proj = f" projections: {about['projections']};" if "projections" in about else ""
    return (f"[xlstm-mlx] family={family_of(model).NAME} backend={platform.describe()} "
            f"stored={','.join(getattr(model, 'stored_dtypes', []))} {model.profile.describe()} "
            f"gates/state={prof.state_dtype} norms={norms}{proj} kernels: {kern}; decode step: {decode}")
