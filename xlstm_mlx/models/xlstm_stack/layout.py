"""Official stored layouts <-> the engine's layouts, for the few tensors where they differ.

    conv1d.conv.weight [F, 1, KS] (torch depthwise)   <->  conv1d.weight [KS, F] (last row: current input)
    conv1d.conv.bias                                  <->  conv1d.bias
    slstm_cell._recurrent_kernel_, _bias_             <->  slstm_cell.recurrent_kernel [NH, DH, 4*DH],
      (either official backend's internal layout)          slstm_cell.bias [NH, 4*DH] (gate-major per head)

Every other tensor keeps its official name and layout. `sanitize` runs at load (on lazy arrays: nothing is
read), `export` when `convert` writes a stack back in its own stored layout.
"""

from __future__ import annotations

import mlx.core as mx

from xlstm_mlx.models.xlstm_stack.args import StackArgs
from xlstm_mlx.errors import UsageError


def _slstm_cell_to_engine(R: mx.array, b: mx.array, layout: str, num_heads: int):
    """Official internal layouts -> ours: R [NH, DH_in, 4*DH_out], b [NH, 4*DH] (gate-major per head).

    vanilla backend: R [NH, 4*DH_out, DH_in] (gate, unit) x input; b [4, NH, DH] flattened
    cuda backend:    R [NH, DH_in, 4*DH_out] (already ours);      b [NH, 4, DH] flattened
    (xlstm 2.0.6, blocks/slstm/cell.py: _recurrent_kernel_ext2int / _bias_ext2int of each class)
    """
    if layout == "vanilla":
        R = R.swapaxes(1, 2)
        b = b.reshape(4, num_heads, -1).transpose(1, 0, 2)
    elif layout != "cuda":
        raise UsageError(f"unknown sLSTM layout {layout!r}")
    return R, b.reshape(num_heads, -1)


def sanitize(weights: dict[str, mx.array], args: StackArgs) -> dict[str, mx.array]:
    out = {}
    for k, v in weights.items():
        if k.endswith("conv1d.conv.weight"):  # torch depthwise [F, 1, KS] -> [KS, F]
            out[k.replace("conv1d.conv.weight", "conv1d.weight")] = v[:, 0, :].T
        elif k.endswith("conv1d.conv.bias"):
            out[k.replace("conv1d.conv.bias", "conv1d.bias")] = v
        elif k.endswith("slstm_cell._recurrent_kernel_"):
            pre = k[: -len("_recurrent_kernel_")]
            R, b = _slstm_cell_to_engine(v, weights[pre + "_bias_"], args.slstm.layout, args.slstm.num_heads)
            out[pre + "recurrent_kernel"] = R
            out[pre + "bias"] = b
        elif k.endswith("slstm_cell._bias_"):
            continue  # converted with its recurrent kernel
        elif k == "lm_head.weight" and args.tie_weights:
            continue  # the state_dict of a tied model lists the embedding twice
        else:
            out[k] = v
    return out


def _slstm_cell_to_stored(R: mx.array, b: mx.array, layout: str, num_heads: int):
    """The inverse of _slstm_cell_to_engine: our R [NH, DH, 4*DH], b [NH, 4*DH] -> the stored layout."""
    if layout == "vanilla":
        return R.swapaxes(1, 2), b.reshape(num_heads, 4, -1).transpose(1, 0, 2).reshape(-1)
    if layout != "cuda":
        raise UsageError(f"unknown sLSTM layout {layout!r}")
    return R, b.reshape(-1)


def export(weights: dict[str, mx.array], args: StackArgs) -> dict[str, mx.array]:
    """This module tree's tensors -> the official state_dict names and layouts (what `sanitize` reads)."""
    out = {}
    for k, v in weights.items():
        if k.endswith("conv1d.weight"):
            out[k.replace("conv1d.weight", "conv1d.conv.weight")] = v.T[:, None, :]
        elif k.endswith("conv1d.bias"):
            out[k.replace("conv1d.bias", "conv1d.conv.bias")] = v
        elif k.endswith("slstm_cell.recurrent_kernel"):
            pre = k[: -len("recurrent_kernel")]
            R, b = _slstm_cell_to_stored(v, weights[pre + "bias"], args.slstm.layout, args.slstm.num_heads)
            out[pre + "_recurrent_kernel_"] = R
            out[pre + "_bias_"] = b
        elif k.endswith("slstm_cell.bias"):
            continue  # converted with its recurrent kernel
        else:
            out[k] = v
    return out
