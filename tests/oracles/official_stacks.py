"""Random-weight official `xlstm` xLSTMLMModel stacks (vanilla sLSTM backend, CPU, float32) for tests.

Every parameter is drawn afresh: the official init leaves recurrent kernels and mLSTM gate weights at
zero and biases at fixed ramps, which would hide layout and gate-order bugs (an sLSTM with R = 0 does
not care how R is laid out; equal gate biases do not care which gate is which).
"""

from __future__ import annotations

import dataclasses

import torch
from xlstm import (
    FeedForwardConfig,
    mLSTMBlockConfig,
    mLSTMLayerConfig,
    sLSTMBlockConfig,
    sLSTMLayerConfig,
    xLSTMLMModel,
    xLSTMLMModelConfig,
)


def official_config(num_blocks: int, slstm_at, embedding_dim: int = 32, vocab_size: int = 61,
                    mlstm_heads: int = 2, slstm_heads: int = 4, conv: int = 4, slstm_conv: int | None = None,
                    qkv_blocksize: int = 4, ffn: bool = True, act_fn: str = "gelu",
                    group_norm_weight: bool = True, bias: bool = False, tie_weights: bool = False,
                    post_norm: bool = True, backend: str = "vanilla", context_length: int = 128):
    only_slstm = slstm_at == "all" or (isinstance(slstm_at, list) and len(slstm_at) == num_blocks)
    return xLSTMLMModelConfig(
        mlstm_block=None if only_slstm else mLSTMBlockConfig(
            mlstm=mLSTMLayerConfig(conv1d_kernel_size=conv, qkv_proj_blocksize=qkv_blocksize, num_heads=mlstm_heads)),
        slstm_block=sLSTMBlockConfig(
            slstm=sLSTMLayerConfig(backend=backend, num_heads=slstm_heads,
                                   conv1d_kernel_size=conv if slstm_conv is None else slstm_conv,
                                   group_norm_weight=group_norm_weight),
            feedforward=FeedForwardConfig(proj_factor=1.3, act_fn=act_fn) if ffn else None,
        ) if slstm_at else None,
        context_length=context_length, num_blocks=num_blocks, embedding_dim=embedding_dim,
        slstm_at=slstm_at, vocab_size=vocab_size, bias=bias, tie_weights=tie_weights,
        add_post_blocks_norm=post_norm,
    )


def randomize(model: torch.nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            z = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if "norm" in name:  # residual-weight norms: the scale is 1 + weight
                v = 0.2 * z
            elif name.endswith("_recurrent_kernel_"):
                v = z * (p.shape[-1] ** -0.5)
            elif name.endswith("_bias_"):  # sLSTM gate biases: open, shut and in between
                v = 2.0 * z
            elif "mlstm_cell" in name and name.endswith("bias"):
                v = 3.0 * z
            elif name.endswith("conv.weight"):
                v = z * (p.shape[-1] ** -0.5)
            elif name.endswith("learnable_skip"):
                v = z
            elif name.endswith("bias"):
                v = 0.1 * z
            elif p.ndim >= 2 and "embedding" not in name:
                v = z * (p.shape[-1] ** -0.5)
            else:
                v = z
            p.copy_(v)


def official_model(cfg: xLSTMLMModelConfig, seed: int = 0) -> xLSTMLMModel:
    torch.manual_seed(seed)
    model = xLSTMLMModel(dataclasses.replace(cfg)).eval()
    randomize(model, seed)
    return model


@torch.no_grad()
def official_logits(model: xLSTMLMModel, ids) -> torch.Tensor:
    return model(torch.as_tensor(ids, dtype=torch.long)).float()


@torch.no_grad()
def official_step_logits(model: xLSTMLMModel, ids) -> torch.Tensor:
    ids = torch.as_tensor(ids, dtype=torch.long)
    state, out = None, []
    for t in range(ids.shape[1]):
        logits, state = model.step(ids[:, t : t + 1], state=state)
        out.append(logits)
    return torch.cat(out, dim=1).float()
