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


def _slstm_cell_to_stored(R: mx.array, b: mx.array, layout: str, num_heads: int):
    """The inverse of _slstm_cell_to_engine: our R [NH, DH, 4*DH], b [NH, 4*DH] -> the stored layout."""
    if layout == "vanilla":
        return R.swapaxes(1, 2), b.reshape(num_heads, 4, -1).transpose(1, 0, 2).reshape(-1)
    if layout != "cuda":
        raise UsageError(f"unknown sLSTM layout {layout!r}")
    return R, b.reshape(-1)


def _convert(weights: dict, cell: tuple, cell_fn, renames: tuple, skip: frozenset = frozenset()) -> dict:
    """Rename/re-lay the tensors that differ: `cell` = ((R, b) names in, (R, b) names out) of the sLSTM cell,
    converted together by cell_fn(R, b); `renames` = (suffix in, suffix out, layout fn or None)."""
    (r_in, b_in), (r_out, b_out) = cell
    out = {}
    for k, v in weights.items():
        if k in skip or k.endswith(f"slstm_cell.{b_in}"):  # a bias is converted with its recurrent kernel
            continue
        if k.endswith(f"slstm_cell.{r_in}"):
            pre = k[: -len(r_in)]
            out[pre + r_out], out[pre + b_out] = cell_fn(v, weights[pre + b_in])
            continue
        for src, dst, fn in renames:
            if k.endswith(src):
                k, v = k[: -len(src)] + dst, (fn(v) if fn else v)
                break
        out[k] = v
    return out


def sanitize(weights: dict[str, mx.array], args: StackArgs) -> dict[str, mx.array]:
    """Official state_dict (names and layouts) -> this module tree. The state_dict of a tied model lists the
    embedding twice (as lm_head.weight): that copy is dropped."""
    s = args.slstm
    return _convert(weights, (("_recurrent_kernel_", "_bias_"), ("recurrent_kernel", "bias")),
                    lambda R, b: _slstm_cell_to_engine(R, b, s.layout, s.num_heads),
                    (("conv1d.conv.weight", "conv1d.weight", lambda w: w[:, 0, :].T),  # torch [F, 1, KS] -> [KS, F]
                     ("conv1d.conv.bias", "conv1d.bias", None)),
                    frozenset({"lm_head.weight"}) if args.tie_weights else frozenset())


def export(weights: dict[str, mx.array], args: StackArgs) -> dict[str, mx.array]:
    """This module tree's tensors -> the official state_dict names and layouts (what `sanitize` reads)."""
    s = args.slstm
    return _convert(weights, (("recurrent_kernel", "bias"), ("_recurrent_kernel_", "_bias_")),
                    lambda R, b: _slstm_cell_to_stored(R, b, s.layout, s.num_heads),
                    (("conv1d.weight", "conv1d.conv.weight", lambda w: w.T[:, None, :]),
                     ("conv1d.bias", "conv1d.conv.bias", None)))
