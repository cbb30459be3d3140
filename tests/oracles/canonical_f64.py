"""The model-level float64 oracle: transformers' native xLSTM code with every dtype forced to float64.

transformers' xLSTMForCausalLM is dtype-generic except in four places, each forced here (the config's
validator admits only float32/bfloat16/float16, so the two dtype fields are set past it):
  - the weights: from_pretrained(dtype=torch.float64);
  - autocast_kernel_dtype / inference_state_dtype (config): the chunkwise kernel's q/k/v and the
    recurrent state, float64;
  - norm_reduction_force_float32 (config, and set on every norm module: out_norm is built without the
    config's value): its norms call x.float(), which would round float64 to float32, so it is off (the
    norms then reduce in float64);
  - the head: xLSTMForCausalLM.forward ends with lm_head(h).float(), so the float64 logits are formed
    here from the backbone's hidden states: soft_cap(lm_head(h)) in float64.
The same script with dtype "float32" gives the canonical float32 logits (transformers' defaults), full
forward or prefill + one-token steps through its cache, so that ours and the canonical's errors are measured
against one ground truth.

Runs in a subprocess where the official xlstm package is hidden (canonical.py says why).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

_SCRIPT = textwrap.dedent(
    """
    import sys, numpy as np, torch
    import transformers.utils as tu, transformers.utils.import_utils as iu
    tu.is_xlstm_available = iu.is_xlstm_available = lambda: False   # hide the official package
    from transformers import xLSTMForCausalLM
    import transformers.models.xlstm.modeling_xlstm as m
    assert not m.external_xlstm, "transformers picked up the official xlstm blocks"
    m.xLSTMPreTrainedModel._init_weights = lambda self, module: None  # crashes for fused; all weights load
    path, ids_file, out_file, dtype, prefill = sys.argv[1:6]
    prefill = int(prefill)
    torch.set_num_threads(2)
    if dtype == "float64":
        config = m.xLSTMConfig.from_pretrained(path)
        # the config's validator only lists float32/bfloat16/float16; the code itself is dtype-generic
        for field, value in (("autocast_kernel_dtype", "float64"), ("inference_state_dtype", "float64"),
                             ("norm_reduction_force_float32", False)):
            object.__setattr__(config, field, value)
        model = xLSTMForCausalLM.from_pretrained(path, config=config, dtype=torch.float64).eval()
        for mod in model.modules():
            if hasattr(mod, "force_float32_reductions"):  # out_norm is built without the config's setting
                mod.force_float32_reductions = False
            if hasattr(mod, "_inference_fn"):  # every mLSTM backend took the float64 settings
                kw = mod._inference_fn.keywords
                assert kw["autocast_kernel_dtype"] == torch.float64, kw
                assert kw["mlstm_step_kernel"].keywords["dtype_state"] == torch.float64, kw
    else:
        model = xLSTMForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    ids = torch.from_numpy(np.load(ids_file))

    def logits_of(x, cache=None, use_cache=False):
        out = model.backbone(x, cache_params=cache, use_cache=use_cache)
        h = out[0]
        z = model.lm_head(h.to(model.lm_head.weight.dtype))
        if dtype != "float64":
            z = z.float()
        return m.soft_cap(z, model.config.output_logit_soft_cap), out.cache_params

    with torch.no_grad():
        if prefill <= 0:
            z, _ = logits_of(ids)
        else:
            z, cache = logits_of(ids[:, :prefill], use_cache=True)
            outs = [z]
            for t in range(prefill, ids.shape[1]):
                zt, cache = logits_of(ids[:, t:t + 1], cache=cache, use_cache=True)
                outs.append(zt)
            z = torch.cat(outs, dim=1)
    assert z.dtype == getattr(torch, dtype), z.dtype
    np.save(out_file, z.numpy())
    """
)


def hf_logits(path: Path, ids: np.ndarray, workdir: Path, dtype: str = "float64", prefill: int = 0) -> np.ndarray:
    """Logits of transformers' native xLSTM in `dtype` ("float64": the oracle; "float32": the canonical).

    prefill > 0: the first `prefill` tokens in one call, then one token per call through the cache.
    """
    workdir = Path(workdir)
    ids_file, out_file = workdir / "ids_f64.npy", workdir / f"logits_{dtype}_{prefill}.npy"
    np.save(ids_file, ids.astype(np.int64))
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    subprocess.run([sys.executable, "-c", _SCRIPT, str(path), str(ids_file), str(out_file), dtype, str(prefill)],
                   check=True, env=env)
    return np.load(out_file)


def official_steps_logits(path: Path, ids: np.ndarray, prefill: int) -> np.ndarray:
    """float32 logits of the official xlstm package's xLSTMLarge on a transformers checkpoint: `prefill` tokens
    in one call, then one token per call through its state.

    The canonical prefill + steps: transformers' own cache path fails on these checkpoints (its chunkwise
    kernel is handed a [B, NH, Dv, Dv] initial state when qk_dim != v_dim, transformers 5.x), so the official
    package, whose inference kernels transformers' native code copies, stands in for it.
    """
    import json

    import torch
    from safetensors.torch import load_file
    from xlstm.xlstm_large.model import xLSTMLarge, xLSTMLargeConfig

    cfg = json.loads((Path(path) / "config.json").read_text())
    sd = load_file(str(Path(path) / "model.safetensors"))
    sd = {("embedding.weight" if k == "backbone.embeddings.weight" else k): v.float() for k, v in sd.items()}
    if "lm_head.weight" not in sd:  # tied
        sd["lm_head.weight"] = sd["embedding.weight"]
    oc = xLSTMLargeConfig(
        embedding_dim=cfg["hidden_size"], num_heads=cfg["num_heads"], num_blocks=cfg["num_hidden_layers"],
        vocab_size=cfg["vocab_size"], use_bias=cfg["use_bias"], add_out_norm=cfg.get("add_out_norm", True),
        weight_mode=cfg["weight_mode"], chunk_size=cfg.get("chunk_size", 64), norm_eps=cfg["norm_eps"],
        eps=cfg["eps"], gate_soft_cap=cfg["gate_soft_cap"], output_logit_soft_cap=cfg["output_logit_soft_cap"],
        qk_dim_factor=cfg["qk_dim_factor"], v_dim_factor=cfg["v_dim_factor"], ffn_proj_factor=cfg["ffn_proj_factor"],
        ffn_round_up_to_multiple_of=cfg["ffn_round_up_to_multiple_of"],
        chunkwise_kernel="chunkwise--native_autograd", sequence_kernel="native_sequence__native",
        step_kernel="native", mode="inference", return_last_states=True, autocast_kernel_dtype="float32",
    )
    model = xLSTMLarge(oc).eval()
    for k, v in model.state_dict().items():  # transformers' out_norm has no bias where the official has one
        if k == "backbone.out_norm.bias" and k not in sd:
            sd[k] = torch.zeros_like(v)
    model.load_state_dict(sd, strict=True)
    x = torch.from_numpy(ids.astype(np.int64))
    with torch.no_grad():
        z, state = model(x[:, :prefill])
        outs = [z]
        for t in range(prefill, x.shape[1]):
            zt, state = model(x[:, t:t + 1], state)
            outs.append(zt)
    return torch.cat(outs, dim=1).float().numpy()
