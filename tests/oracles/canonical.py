"""Ground truth for tests: random-weight checkpoints written by the canonical implementations, and
their logits.

- transformers' xLSTMForCausalLM with its OWN native kernels: run in a subprocess where the official
  `xlstm` package is hidden (with xlstm importable, transformers silently switches to its blocks).
- the official xlstm package's xLSTMLarge (chunkwise--native_autograd / native_sequence / native step).

Every parameter is randomized: the canonical init leaves gate weights at zero and input gates near
-10, which hides bugs in the gates, the stabilizer and the normalizer.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file


def randomize_torch(model: torch.nn.Module, seed: int = 0, gate_bias_scale: float = 3.0) -> None:
    """Draw every parameter so activations stay O(1) and gates span open..shut."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            z = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if "norm" in name:
                v = 1.0 + 0.2 * z
            elif name.endswith("bias"):
                v = gate_bias_scale * z if "gate" in name else 0.1 * z
            elif p.ndim == 2 and "embedding" not in name:
                v = z * (p.shape[1] ** -0.5)
            else:
                v = z
            p.copy_(v.to(p.dtype))


def hf_config(hidden=64, layers=2, heads=2, vocab=101, weight_mode="single", use_bias=False,
              tie=False, **extra):
    from transformers import xLSTMConfig

    # hidden_size / num_hidden_layers, not embedding_dim / num_blocks: the latter are silently ignored
    return xLSTMConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_heads=heads,
                       weight_mode=weight_mode, use_bias=use_bias, tie_word_embeddings=tie,
                       use_cache=False, **extra)


def make_hf_checkpoint(path: Path, seed: int = 0, dtype: torch.dtype = torch.float32, gate_bias_scale: float = 3.0,
                       **cfg) -> Path:
    """xLSTMForCausalLM.save_pretrained of a fully random model (gate_bias_scale: see randomize_torch; ~10
    saturates the gates)."""
    from transformers import xLSTMForCausalLM
    from transformers.models.xlstm import modeling_xlstm

    torch.manual_seed(seed)
    # transformers' _init_weights crashes for weight_mode="fused" (it broadcasts a [2*NH] tensor into
    # [NH]); every parameter is drawn below anyway, so skip it.
    saved = modeling_xlstm.xLSTMPreTrainedModel._init_weights
    modeling_xlstm.xLSTMPreTrainedModel._init_weights = lambda self, module: None
    try:
        model = xLSTMForCausalLM(hf_config(**cfg)).eval()
    finally:
        modeling_xlstm.xLSTMPreTrainedModel._init_weights = saved
    randomize_torch(model, seed, gate_bias_scale)
    model.to(dtype).save_pretrained(path)
    return Path(path)


_NATIVE = textwrap.dedent(
    """
    import sys, numpy as np, torch
    import transformers.utils as tu, transformers.utils.import_utils as iu
    tu.is_xlstm_available = iu.is_xlstm_available = lambda: False   # hide the official package
    from transformers import xLSTMForCausalLM
    import transformers.models.xlstm.modeling_xlstm as m
    assert not m.external_xlstm, "transformers picked up the official xlstm blocks"
    m.xLSTMPreTrainedModel._init_weights = lambda self, module: None  # crashes for fused; all weights load
    path, ids_file, out_file = sys.argv[1:4]
    model = xLSTMForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    ids = torch.from_numpy(np.load(ids_file))
    with torch.no_grad():
        np.save(out_file, model(ids, use_cache=False).logits.float().numpy())
    """
)


def hf_native_logits(path: Path, ids: np.ndarray, workdir: Path) -> np.ndarray:
    """float32 logits of transformers' xLSTMForCausalLM with its native kernels (subprocess)."""
    ids_file, out_file = workdir / "ids.npy", workdir / "logits.npy"
    np.save(ids_file, ids.astype(np.int64))
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    subprocess.run([sys.executable, "-c", _NATIVE, str(path), str(ids_file), str(out_file)],
                   check=True, env=env)
    return np.load(out_file)


def official_large(hidden=64, layers=2, heads=2, vocab=101, weight_mode="single", use_bias=False,
                   add_out_norm=True, chunk_size=64, seed=0):
    """A random official xLSTMLarge (float32 inference backends that run on CPU)."""
    from xlstm.xlstm_large.model import xLSTMLarge, xLSTMLargeConfig

    cfg = xLSTMLargeConfig(
        embedding_dim=hidden, num_heads=heads, num_blocks=layers, vocab_size=vocab, use_bias=use_bias,
        add_out_norm=add_out_norm, weight_mode=weight_mode, chunk_size=chunk_size,
        chunkwise_kernel="chunkwise--native_autograd", sequence_kernel="native_sequence__native",
        step_kernel="native", mode="inference", return_last_states=True, autocast_kernel_dtype="float32",
    )
    torch.manual_seed(seed)
    model = xLSTMLarge(cfg).eval()
    randomize_torch(model, seed)
    return model, cfg


def save_official(model, cfg, path: Path, dtype: torch.dtype = torch.float32) -> Path:
    """The official layout: its state_dict keys as they are, its config in the official spelling."""
    import dataclasses

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().to(dtype).contiguous() for k, v in model.state_dict().items()}
    save_file(sd, str(path / "model.safetensors"))
    (path / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), default=str))
    return path


def official_logits(model, ids: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        out = model(torch.from_numpy(ids.astype(np.int64)))
    logits = out[0] if isinstance(out, tuple) else out
    return logits.float().numpy()
