"""Tensor parallelism for the xLSTM-7B family: each of K ranks holds 1/K of every block's heads and FFN.

The mLSTM heads are independent (each has its own C, n, m), so a rank can own NH/K whole heads and their
recurrent state and never exchange it. Per block (Megatron-style, two all-reduces):

    x (replicated) -> RMSNorm -> q, k, v, o-gate, i-gate, f-gate   split by OUTPUT (this rank's heads)
                   -> mLSTM cell on NH/K heads (state [B, NH/K, ...]) -> per-head norm (its slice)
                   -> out_proj                                      split by INPUT  -> all_sum  (1)
    x (replicated) -> RMSNorm -> FFN up / gate                      split by OUTPUT (hidden dim / K)
                   -> down-projection                               split by INPUT  -> all_sum  (2)

mlx.nn's distributed layers do the splitting (`shard_linear`: AllToShardedLinear, ShardedToAllLinear and
their quantized forms; `segments` splits fused [q|k|v|o] and [i|f] weights part by part). The embedding,
out_norm and lm_head stay replicated: every rank computes the same logits, samples the same token (the
global random generator is seeded alike on every rank) and feeds it back, so no token is exchanged.

Sharding rebuilds each block's args with NH/K heads (qk_dim, v_dim and ffn_dim divided by K); block.py is
unchanged. The blocks are sharded one at a time, each evaluated before the next, so a lazily loaded model
(load_sharded) never holds more than its shard plus one block at full size.

Only the xLSTM-7B family is sharded; the official stacks (sLSTM blocks mix all heads through their
recurrent matrices) are refused with a message.
"""

from __future__ import annotations

import dataclasses
import os
import sys

import mlx.core as mx
import mlx.nn as nn
from mlx.nn.layers.distributed import shard_linear
from mlx.utils import tree_unflatten

from xlstm_mlx.distributed import group as dist
from xlstm_mlx.errors import UsageError


def check_shardable(model, k: int) -> None:
    from xlstm_mlx.models.xlstm7b.model import Model

    if not isinstance(model, Model):
        raise UsageError(f"--tensor-parallel supports the xLSTM-7B family only; this checkpoint is "
                         f"{model.describe()['family']} (sLSTM/official-stack sharding is not implemented): run "
                         "it without --tensor-parallel, or shard the rows instead (xlstm-mlx batch under mlx.launch)")
    a = model.args
    for name, value in (("num_heads", a.num_heads), ("ffn_dim", a.ffn_dim)):
        if value % k:
            raise UsageError(f"--tensor-parallel over {k} ranks needs {name} ({value}) divisible by {k}; "
                             f"launch a number of ranks that divides it")
    check_quantized_groups(model, k)


def check_quantized_groups(model, k: int) -> None:
    """A quantized layer split by input must keep whole quantization groups on every rank."""
    a = model.args
    q = model.backbone.blocks[0].ffn.proj_down
    if isinstance(q, nn.QuantizedLinear):
        for name, dim in (("v_dim", a.v_dim), ("ffn_dim", a.ffn_dim)):
            if (dim // k) % q.group_size:
                raise UsageError(f"--tensor-parallel over {k} ranks splits {name} {dim} into {dim // k}, not a "
                                 f"multiple of the quantization group size {q.group_size}; use fewer ranks")


def local_args(args, k: int):
    """The args of one rank's share of every block: NH/K heads, 1/K of qk_dim, v_dim and ffn_dim."""
    return dataclasses.replace(args, num_heads=args.num_heads // k, qk_dim=args.qk_dim // k,
                               v_dim=args.v_dim // k, ffn_dim=args.ffn_dim // k)


def _slice(a: mx.array, r: int, k: int) -> mx.array:
    n = a.shape[-1] // k
    return mx.contiguous(a[..., r * n : (r + 1) * n])


def shard_block(block, local, group) -> None:
    """Replace one MLSTMBlock's projections by their shards (in place) and give it the local args."""
    a, r, k = block.args, group.rank(), group.size()
    layer, ffn = block.mlstm_layer, block.ffn
    by_out = lambda m, seg=1: shard_linear(m, "all-to-sharded", segments=seg, group=group)  # noqa: E731
    if a.weight_mode == "single":
        for name in ("q", "k", "v", "ogate_preact", "igate_preact", "fgate_preact"):
            setattr(layer, name, by_out(getattr(layer, name)))
    else:  # fused [q | k | v | o] and [i | f]: each part split on its own, so a rank keeps whole heads
        layer.qkv_opreact = by_out(layer.qkv_opreact, [a.qk_dim, 2 * a.qk_dim, 2 * a.qk_dim + a.v_dim])
        layer.ifgate_preact = by_out(layer.ifgate_preact, 2)
    norm = layer.multihead_norm
    norm.weight = _slice(norm.weight, r, k)
    if "bias" in norm:
        norm.bias = _slice(norm.bias, r, k)
    layer.out_proj = shard_linear(layer.out_proj, "sharded-to-all", group=group)
    if ffn.fused:
        ffn.proj_up_gate_z = by_out(ffn.proj_up_gate_z, 2)
    else:
        ffn.proj_up_gate, ffn.proj_up = by_out(ffn.proj_up_gate), by_out(ffn.proj_up)
    ffn.proj_down = shard_linear(ffn.proj_down, "sharded-to-all", group=group)
    layer.args = block.args = local
    mx.eval(block.parameters())


def shard_model(model, group=None):
    """Shard `model` (in place) across `group` (default: the launched world); returns it. One rank: as is."""
    group = group or dist.world()
    k = group.size()
    if k == 1:
        return model
    check_shardable(model, k)
    local = local_args(model.args, k)
    for block in model.backbone.blocks:
        shard_block(block, local, group)
    model.tensor_parallel = k
    mx.eval(model.parameters())
    return model


def load_sharded(path, group=None, dtype=None, profile=None, verbose: bool = False, check_numerics: bool = False):
    """load() for tensor parallelism: the weights stay lazy until each block is sharded, so a rank reads
    only what it keeps (plus one block's tensors at a time). Returns (model, tokenizer or None)."""
    from xlstm_mlx import platform
    from xlstm_mlx.checkpoints.load import (build_model, cast_weights, describe_run, open_checkpoint,
                                            open_weights, resolve_profile)
    from xlstm_mlx.generation.tokenizer import load_tokenizer
    from xlstm_mlx.checkpoints.safetensors import dtype_name

    group = group or dist.world()
    platform.setup()
    prof = resolve_profile(dtype, profile)
    ckpt = open_checkpoint(path)
    args = ckpt.args()
    if profile is None and getattr(args, "chunk_size", None):  # as load() does
        prof = prof.replace(chunk_size=args.chunk_size)
    model = build_model(ckpt, prof)
    if group.size() == 1:  # said, not silent: the flag does nothing without a launch
        print("[xlstm-mlx] --tensor-parallel: this process was not launched with other ranks (mlx.launch -n K); "
              "nothing is split", file=sys.stderr)
    else:
        check_shardable(model, group.size())
    weights = cast_weights(open_weights(ckpt, model), ckpt.family, prof)
    model.update(tree_unflatten(list(weights.items())))  # still lazy: nothing read yet
    del weights  # the model holds the only references: a full tensor is freed once its shard is taken
    shard_model(model, group)
    mx.eval(model.parameters())
    model.check_numerics = check_numerics
    model.stored_dtypes = sorted({dtype_name(d) for d in ckpt.dtypes.values()})
    model.model_dir = ckpt.model_dir
    if verbose and group.rank() == 0:
        print(describe_run(model), file=sys.stderr)
    if verbose and group.rank() == 0 and group.size() > 1:
        print(f"[xlstm-mlx] tensor parallel: {dist.describe(group)}; each rank holds "
              f"{model.args.num_heads // group.size()} of {model.args.num_heads} heads per block and 1/"
              f"{group.size()} of the FFN; embedding and lm_head replicated; 2 all_sums per block", file=sys.stderr)
    return model, load_tokenizer(ckpt.model_dir)


def seed_alike(group=None) -> int:
    """Seed MLX's global generator with one value on every rank (rank 0's draw): unseeded sampling then
    picks the same tokens everywhere, as it must when every rank feeds back its own sample."""
    group = group or dist.world()
    seed = dist.broadcast_int(int.from_bytes(os.urandom(4), "little") >> 1, group)
    mx.random.seed(seed)
    return seed
