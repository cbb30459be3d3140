"""Past one process on MLX's own distributed engine (mx.distributed, launched with `mlx.launch`).

    group.py            the process group: init once, rank/size, barrier, broadcast of small values
    rows.py             the sharded, resumable JSONL write path of `xlstm-mlx batch` (part files, merge)
    tensor_parallel.py  split an xLSTM-7B-family model's heads and FFN across the ranks (shard_linear)

Nothing here is imported by the single-process paths; docs/distributed.md is the user's guide.
"""
