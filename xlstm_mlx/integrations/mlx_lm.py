"""mlx-lm compatibility: after `import xlstm_mlx.integrations.mlx_lm`, `mlx_lm.load(DIR)`, `mlx_lm.generate`,
`mlx_lm.stream_generate`, `mlx_lm.batch_generate`, `mlx_lm.server` and `mlx_lm.lora` drive any xLSTM checkpoint
with a config.json that our `load` reads (the Hugging Face xlstm layout, the demo model, everything
`xlstm-mlx convert` writes for it, quantized included).

How: mlx-lm picks its model code by `importlib.import_module("mlx_lm.models." + config["model_type"])`. This
module registers itself in `sys.modules` under those names for our families' model types ("xlstm",
"xlstm_official_stack"), so mlx-lm finds `ModelArgs` and `Model` here (a directory written by
`convert --mlx-lm` names them through config.json's `model_file` instead: mlx_lm_files.py):

- `ModelArgs.from_dict(config)` keeps the config. Our quantized checkpoints describe their layers in a
  `quantization` section of our own format, so it is taken out of mlx-lm's config dict here (mlx-lm would
  otherwise re-quantize with its own rules): our structure is rebuilt in `sanitize`, exactly as `load` does.
- `Model.sanitize(weights)` is where mlx-lm hands over the stored tensors: from their names and shapes and
  the config it runs our loading pipeline's steps (family detection, canonical names, logical shapes, Args,
  the quantized structure, the family's sanitize, the strict check, the dtype cast of the default profile) and
  builds our model as the child `xlstm`; the weights come back under `xlstm.`, which mlx-lm loads strictly.
- `Model.make_cache()` gives one `ArraysCache` per block, of the block's state size (mLSTM: C, n, m; the
  official stacks add the conv state; sLSTM: y, c, n, m, conv). A call builds our Cache from them, runs our
  model (the compiled one-token step when there is no mask, as `generate` does) and writes the states back;
  `ArraysCache.make_mask` gives batch_generate's left-padding mask, which our blocks treat as identity steps.

Tested with mlx-lm 0.32.2 (`pip install "mlx-lm>=0.32.2,<0.33"`; it keeps mlx 0.32.4): greedy text through
`mlx_lm.generate` equals ours. mlx-lm requires a config.json with `model_type`: an official-stack checkpoint
whose config lives only in xlstm_config.json needs one added (its content plus
"model_type": "xlstm_official_stack") before mlx-lm can load it.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn

from xlstm_mlx.errors import CheckpointError

MLX_LM_VERSIONS = ">=0.32.2,<0.33"
MODEL_TYPES = ("xlstm", "xlstm_official_stack")


@dataclass
class ModelArgs:
    model_type: str
    config: dict = field(default_factory=dict)
    quantization: dict | None = None

    @classmethod
    def from_dict(cls, config: dict) -> "ModelArgs":
        # mlx-lm passes the dict it later reads `quantization` from: ours is in our own format, so it is taken
        # out here and rebuilt by Model.sanitize (mlx-lm would otherwise apply its own quantization rules).
        q = config.pop("quantization", None)
        config.pop("quantization_config", None)
        return cls(model_type=config.get("model_type", "xlstm"), config=dict(config), quantization=q)


def _build(config: dict, quantization: dict | None, weights: dict) -> tuple[nn.Module, dict]:
    """Our model and its weights (module-tree names, cast), from stored tensors and the config: the steps of
    checkpoints/load.py that do not need the directory."""
    from xlstm_mlx.checkpoints.load import cast_weights, check_strict
    from xlstm_mlx.checkpoints.quantize import apply_quantization, logical_shapes, quantization_config
    from xlstm_mlx.models import families
    from xlstm_mlx.profiles import default_profile

    keys = set(weights)
    nowhere = Path("/nonexistent-xlstm-mlx-dir")  # detection from the tensor names alone
    family = next((f for f in families() if f.detect(nowhere, keys)), None)
    if family is None:
        raise CheckpointError(f"no xlstm-mlx model family matches these tensors ({sorted(keys)[:6]} ...)")
    named = {family.rename_key(k): v for k, v in weights.items()}
    cfg = dict(config)
    if quantization is not None:
        cfg["quantization"] = quantization
    qcfg = quantization_config(cfg)
    dtypes = {k: ("U32" if v.dtype == mx.uint32 else str(v.dtype)) for k, v in named.items()}
    where = {k: Path("model.safetensors") for k in named}  # only named in error messages
    shapes = logical_shapes({k: tuple(v.shape) for k, v in named.items()}, dtypes, where, qcfg)
    args = family.Args.from_checkpoint(shapes, cfg)
    profile = default_profile(None)
    if getattr(args, "chunk_size", None):  # as load() does without an explicit profile
        profile = profile.replace(chunk_size=args.chunk_size)
    model = apply_quantization(family.Model(args, profile), qcfg)
    tensors = family.sanitize(named, model.args)
    check_strict(model, {k: tuple(v.shape) for k, v in tensors.items()})
    return model, cast_weights(tensors, family, profile)


class Model(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        self.model_type = args.model_type

    def sanitize(self, weights: dict) -> dict:
        model, tensors = _build(self.args.config, self.args.quantization, weights)
        self.xlstm = model
        return {f"xlstm.{k}": v for k, v in tensors.items()}

    @property
    def layers(self):
        return self.xlstm.blocks

    def make_cache(self):
        from mlx_lm.models.cache import ArraysCache

        return [ArraysCache(size=len(b.make_state(1))) for b in self.xlstm.blocks]

    def __call__(self, inputs: mx.array, cache=None, input_embeddings=None, **kwargs):
        if input_embeddings is not None:
            raise ValueError("xLSTM models take token ids, not input embeddings")
        from xlstm_mlx.models.cache import Cache

        B, T = inputs.shape
        blocks = self.xlstm.blocks
        if cache is None:
            return self.xlstm(inputs)
        states = [tuple(c.cache) if c[0] is not None else b.make_state(B) for c, b in zip(cache, blocks)]
        mask = cache[0].make_mask(T) if hasattr(cache[0], "make_mask") else None
        ours = Cache(states, B)
        logits = self.xlstm(inputs, cache=ours, mask=mask)
        for c, state in zip(cache, ours.layers):
            c.cache = list(state)
            if hasattr(c, "advance"):
                c.advance(T)
        return logits


_module = sys.modules[__name__]
for _name in MODEL_TYPES:
    sys.modules.setdefault(f"mlx_lm.models.{_name}", _module)
