"""Which layers are quantized, how, and how a quantized checkpoint is rebuilt: MLX affine quantization.

The choice, for every model family (docs/quantization.md gives the reasons and the measurements):
  quantized      every Linear / Embedding layer MLX has a quantized form of: the projections, the FFN, the
                 token embedding and lm_head (unless `embeddings=False`)
  kept float     what the family's `keep_float(path)` names (the gate projections, NH outputs each: a tiny
                 share of the weights, and their outputs are exponentiated), layers MLX cannot quantize
                 (the official stacks' block-diagonal headwise projections, convolutions, the sLSTM cell),
                 every norm, every bias
  group size     the requested one where it divides the layer's input dimension, else the largest of
                 128, 64, 32 below it that does (xLSTM-7B: proj_down, input 10944, gets 64 under -g 128);
                 a layer that none divides stays float. Either case is recorded and reported.

config.json's `quantization` section names every quantized layer with its bits and group size, and every
layer left float with the reason; `load` rebuilds exactly that structure (`apply_quantization`) and
refuses a file whose tensors disagree with it (`logical_shapes`).
"""

from __future__ import annotations

import re
import sys

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_unflatten
from tqdm import tqdm

from xlstm_mlx.errors import CheckpointError, UsageError
from xlstm_mlx.models import family_of

BITS = (2, 3, 4, 5, 6, 8)  # what MLX's affine mode packs
GROUP_SIZES = (128, 64, 32)  # what MLX's affine mode supports, largest first
MODE = "affine"
BLOCK_PATH = re.compile(r"^(.*?\bblocks\.\d+)\.")  # layers are quantized (and evaluated) block by block
NORM_REASON = "norm: a 1-D weight (and bias), kept float like every bias"


def _leaves(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return tree_flatten(model.leaf_modules(), is_leaf=nn.Module.is_module)


def pick_group_size(in_dim: int, group_size: int) -> int | None:
    """The requested group size if it divides in_dim, else the largest smaller supported one that does."""
    for g in GROUP_SIZES:
        if g <= group_size and in_dim % g == 0:
            return g
    return None


def check_settings(bits: int, group_size: int) -> None:
    if bits not in BITS:
        raise UsageError(f"bits must be one of {BITS} (MLX affine quantization), got {bits}")
    if group_size not in GROUP_SIZES:
        raise UsageError(f"group size must be one of {sorted(GROUP_SIZES)}, got {group_size}")


def plan_quantization(model: nn.Module, bits: int = 4, group_size: int = 64, embeddings: bool = True) -> dict:
    """The `quantization` section of config.json for this model: every layer, quantized or not, and why."""
    check_settings(bits, group_size)
    family = family_of(model)
    layers, kept, fallbacks = {}, {}, {}
    for path, m in _leaves(model):
        name = path.rsplit(".", 1)[-1]
        if not hasattr(m, "to_quantized"):
            kept[path] = NORM_REASON if "norm" in name else f"{type(m).__name__} has no quantized form in MLX"
            continue
        reason = family.keep_float(path)
        if reason is not None:
            kept[path] = reason
            continue
        if path in family.EMBEDDING_LAYERS and not embeddings:
            kept[path] = "embedding / lm_head kept float on request (--keep-embeddings)"
            continue
        in_dim = m.weight.shape[-1]
        g = pick_group_size(in_dim, group_size)
        if g is None:
            kept[path] = (f"input dimension {in_dim} is not a multiple of {min(GROUP_SIZES)}, the smallest "
                          "group size MLX supports")
            continue
        if g != group_size:
            fallbacks[path] = f"input dimension {in_dim} is not a multiple of {group_size}: group size {g}"
        layers[path] = {"bits": bits, "group_size": g}
    return {"bits": bits, "group_size": group_size, "mode": MODE, "layers": layers,
            "group_size_fallbacks": fallbacks, "not_quantized": kept}


def _layer_spec(qcfg: dict, path: str) -> tuple[int, int]:
    spec = qcfg["layers"][path]
    if not isinstance(spec, dict) or spec.get("bits") not in BITS or spec.get("group_size") not in GROUP_SIZES:
        raise CheckpointError(f"config.json quantization.layers[{path!r}] = {spec!r}: expected "
                              f"{{'bits': one of {BITS}, 'group_size': one of {sorted(GROUP_SIZES)}}}")
    return spec["bits"], spec["group_size"]


def quantization_config(cfg: dict) -> dict | None:
    """The validated `quantization` section of config.json, or None for a float checkpoint."""
    q = cfg.get("quantization")
    if q is None:
        return None
    if not isinstance(q, dict) or not isinstance(q.get("layers"), dict):
        raise CheckpointError("config.json has a `quantization` section without its `layers` map (layer path -> "
                              "{bits, group_size}); it was not written by `xlstm-mlx convert`. Re-convert the "
                              "float checkpoint with `xlstm-mlx convert -q`.")
    if q.get("mode", MODE) != MODE:
        raise CheckpointError(f"config.json quantization mode {q.get('mode')!r} is not supported (only {MODE!r})")
    for path in q["layers"]:
        _layer_spec(q, path)
    return q


def logical_shapes(shapes: dict[str, tuple], dtypes: dict[str, str], where: dict, qcfg: dict | None) -> dict[str, tuple]:
    """The float shapes of a quantized checkpoint's tensors (for dimension inference), after checking
    that the file's packed weights, scales and biases are exactly what config.json's section says.
    `dtypes` and `where` give each tensor's stored dtype code and file (from the headers)."""
    if qcfg is None:
        stray = sorted(k.removesuffix(".scales") for k in shapes if k.endswith(".scales"))
        if stray:
            raise CheckpointError(f"the weights hold quantized layers ({stray[:5]}{' ...' if len(stray) > 5 else ''}) "
                                  "but config.json has no `quantization` section; use the config.json written "
                                  "with these weights by `xlstm-mlx convert`")
        return shapes
    out = dict(shapes)
    for path in qcfg["layers"]:
        bits, g = _layer_spec(qcfg, path)
        w, s, b = f"{path}.weight", f"{path}.scales", f"{path}.biases"
        absent = [k for k in (w, s, b) if k not in shapes]
        if absent:
            raise CheckpointError(f"config.json says {path} is quantized ({bits}-bit, group size {g}) but the weights "
                                  f"have no {absent}; the config.json does not belong to these weights")
        if dtypes[w] != "U32":
            raise CheckpointError(f"{where[w].name}: {w} should hold packed {bits}-bit integers (U32) but is stored "
                                  f"as {dtypes[w]}; the file is corrupt or not quantized")
        rows, packed = shapes[w]
        in_dim = packed * 32 // bits
        want = (rows, in_dim // g)
        if packed * 32 % bits or in_dim % g or shapes[s] != want or shapes[b] != want:
            raise CheckpointError(
                f"{path}: config.json says {bits}-bit, group size {g}, which needs scales/biases of shape {want} "
                f"for a packed weight of shape {shapes[w]}, but the file holds scales {shapes[s]}, biases "
                f"{shapes[b]}; the quantization section does not match these weights (re-convert)")
        out[w] = (rows, in_dim)
        del out[s], out[b]
    stray = sorted(k.removesuffix(".scales") for k in out if k.endswith(".scales"))
    if stray:
        raise CheckpointError(f"the weights hold quantized layers that config.json's quantization section does not "
                              f"list: {stray[:5]}{' ...' if len(stray) > 5 else ''}; the config does not belong to "
                              "these weights (re-convert)")
    return out


def quantize_model(model: nn.Module, qcfg: dict, progress: bool = False, evaluate: bool = False) -> nn.Module:
    """Replace the layers named in qcfg['layers'] by nn.QuantizedLinear / nn.QuantizedEmbedding, in place.

    With `evaluate`, each block is quantized and evaluated in turn (the float weights of a block are freed
    before the next is touched); without, everything stays lazy (loading, size counting)."""
    leaves = dict(_leaves(model))
    wanted = qcfg["layers"]
    unknown = sorted(p for p in wanted if p not in leaves or not hasattr(leaves[p], "to_quantized"))
    if unknown:
        raise CheckpointError(f"config.json's quantization section names layers this model has no quantizable "
                              f"layer for: {unknown[:5]}{' ...' if len(unknown) > 5 else ''}; it does not "
                              "belong to this checkpoint")
    groups: dict[str, list[str]] = {}
    for p in wanted:
        m = BLOCK_PATH.match(p)
        groups.setdefault(m.group(1) if m else "other", []).append(p)
    bar = tqdm(list(groups.values()), desc="quantizing", unit="block", disable=not progress, file=sys.stderr)
    for paths in bar:
        chosen = {p: _layer_spec(qcfg, p) for p in paths}

        def predicate(path, module, chosen=chosen):
            if path not in chosen or isinstance(module, (nn.QuantizedLinear, nn.QuantizedEmbedding)):
                return False
            bits, g = chosen[path]
            return {"bits": bits, "group_size": g, "mode": MODE}

        nn.quantize(model, class_predicate=predicate)
        if evaluate:
            mx.eval(model.parameters())
    return model


def apply_quantization(model: nn.Module, qcfg: dict | None) -> nn.Module:
    """Give a freshly built (lazy) model the quantized structure config.json records, before loading."""
    return model if qcfg is None else quantize_model(model, qcfg)


def dequantized_copy(model: nn.Module) -> nn.Module:
    """A float model of the same class holding mx.dequantize(...) of every quantized layer: it computes
    the quantized model's function (to float32 rounding) with plain matmuls, which MLX's CPU backend runs
    far faster than its quantized ones. For evaluation and tests; the arrays of other layers are shared."""
    params = dict(tree_flatten(model.parameters()))
    for path, m in _leaves(model):
        if isinstance(m, (nn.QuantizedLinear, nn.QuantizedEmbedding)):
            w = mx.dequantize(m.weight, m.scales, m.biases, m.group_size, m.bits, mode=m.mode)
            params[f"{path}.weight"] = w.astype(m.scales.dtype)
            del params[f"{path}.scales"], params[f"{path}.biases"]
    twin = type(model)(model.args, model.profile)
    twin.update(tree_unflatten(list(params.items())))
    return twin


def parameter_bytes(model: nn.Module) -> int:
    """Bytes of all parameters as stored (works on lazy arrays: nothing is evaluated)."""
    return sum(v.nbytes for _, v in tree_flatten(model.parameters()))


def summarize(qcfg: dict) -> list[str]:
    """Human-readable lines: what was quantized, which group sizes fell back, what stayed float."""
    layers, kept = qcfg["layers"], qcfg.get("not_quantized", {})
    lines = [f"quantized {len(layers)} layers to {qcfg['bits']}-bit (group size {qcfg['group_size']}, {MODE})"]
    for label, table in (("group size fallback", qcfg.get("group_size_fallbacks", {})), ("kept float", kept)):
        reasons: dict[str, list[str]] = {}
        for path, why in table.items():
            reasons.setdefault(why, []).append(path)
        for why, paths in reasons.items():
            shown = ", ".join(paths[:3]) + (f" ... ({len(paths)} layers)" if len(paths) > 3 else "")
            lines.append(f"  {label}: {shown}: {why}")
    return lines
