"""Terminal I/O of a tensor-parallel `generate` or `chat`: rank 0 talks to the user, the others follow.

Every rank must run the same steps on the same tokens, so every rank must see the same input; only rank 0
reads stdin (a launcher need not forward it to every rank) and broadcasts each read. Only rank 0 prints
the reply (the others' stdout goes to /dev/null; their stderr stays, for errors). A state file belongs to
one rank's heads, so under --tensor-parallel `--save-state FILE`, `--load-state FILE` and chat's
`/save FILE`, `/load FILE` read and write FILE.rank-R (one file per rank; a different rank count is
refused by the snapshot's fingerprint, since the shard shapes differ).
"""

from __future__ import annotations

import io
import os
import sys

import mlx.core as mx
import numpy as np

from xlstm_mlx.distributed import group as dist


def broadcast_text(text: str | None, group) -> str:
    """Rank 0's text on every rank (others pass None): its length, then its UTF-8 bytes, by all_sum."""
    data = text.encode("utf-8") if group.rank() == 0 else b""
    n = dist.broadcast_int(len(data), group)
    if n == 0:
        return ""
    arr = mx.array(np.frombuffer(data, dtype=np.uint8)) if group.rank() == 0 else mx.zeros((n,), dtype=mx.uint8)
    return bytes(np.array(mx.distributed.all_sum(arr, group=group))).decode("utf-8")


def rank_path(path: str, group) -> str:
    return f"{path}.rank-{group.rank()}"


class BroadcastStdin(io.TextIOBase):
    """stdin as rank 0 reads it, on every rank; chat's /save and /load name per-rank files."""

    def __init__(self, real, group):
        self.real, self.group = real, group
        self._tty = bool(dist.broadcast_int(int(real.isatty()) if group.rank() == 0 else 0, group))

    def isatty(self) -> bool:
        return self._tty

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> str:
        return broadcast_text(self.real.read(size) if self.group.rank() == 0 else None, self.group)

    def readline(self, size: int = -1) -> str:
        line = broadcast_text(self.real.readline(size) if self.group.rank() == 0 else None, self.group)
        cmd, _, arg = line.rstrip("\r\n").partition(" ")
        if cmd in ("/save", "/load") and arg.strip():
            line = f"{cmd} {rank_path(arg.strip(), self.group)}\n"
        return line


def setup(args, group=None) -> None:
    """Route a tensor-parallel command's I/O (see the module docstring) and seed every rank alike."""
    from xlstm_mlx.distributed.tensor_parallel import seed_alike

    group = group or dist.world()
    if group.size() == 1:
        return
    seed_alike(group)
    for name in ("save_state", "load_state"):
        if getattr(args, name, None):
            setattr(args, name, rank_path(getattr(args, name), group))
    sys.stdin = BroadcastStdin(sys.stdin, group)
    if group.rank() != 0:
        sys.stdout = open(os.devnull, "w")
