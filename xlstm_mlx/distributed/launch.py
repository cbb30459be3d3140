"""Launch K ranks of a command on this machine over the ring backend, without `mlx.launch`.

    procs = spawn_ranks([sys.executable, "-m", "xlstm_mlx.cli", "batch", ...], n=2, workdir=tmp)
    results = wait_ranks(procs, timeout=120)      # [(returncode, stdout, stderr)] per rank

This is the manual ring launch (`MLX_RANK=i MLX_HOSTFILE=hosts.json`, the hostfile listing one free
loopback port per rank) that `mlx.launch --backend ring` performs for local ranks; tests use it because
it needs no ssh and gives each rank's output separately. Real runs use `mlx.launch` (docs/distributed.md).
If one rank fails or the time runs out, every rank is stopped: a rank blocked in a collective whose peer
died would otherwise wait forever.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path


def free_ports(n: int) -> list[int]:
    """n distinct TCP ports free on 127.0.0.1 now (held open together so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def loopback_hostfile(n: int, path: Path) -> Path:
    """Write the ring backend's hostfile for n local ranks: [["127.0.0.1:P0"], ["127.0.0.1:P1"], ...]."""
    path.write_text(json.dumps([[f"127.0.0.1:{p}"] for p in free_ports(n)]))
    return path


def spawn_ranks(argv: list[str], n: int, workdir: Path, env: dict | None = None,
                stdin: Path | None = None) -> list[subprocess.Popen]:
    """Start rank 0..n-1 of argv, each with MLX_RANK and the hostfile; stdout/stderr go to files in workdir.
    `stdin` (a file) feeds rank 0; the other ranks read /dev/null (as a tensor-parallel chat expects)."""
    workdir = Path(workdir).resolve()
    hostfile = loopback_hostfile(n, workdir / "hosts.json")
    procs = []
    for r in range(n):
        e = {**os.environ, **(env or {}), "MLX_RANK": str(r), "MLX_HOSTFILE": str(hostfile)}
        out = open(workdir / f"rank{r}.out", "w")
        err = open(workdir / f"rank{r}.err", "w")
        src = open(stdin if (stdin is not None and r == 0) else os.devnull)
        p = subprocess.Popen(argv, env=e, stdin=src, stdout=out, stderr=err, cwd=workdir)
        src.close()
        p.log_files = (out, err, workdir / f"rank{r}.out", workdir / f"rank{r}.err")
        procs.append(p)
    return procs


def stop_ranks(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
    for p in procs:
        p.wait()


def wait_ranks(procs: list[subprocess.Popen], timeout: float) -> list[tuple[int, str, str]]:
    """Wait for every rank; stop them all when one fails or at the timeout (a killed rank reports -9)."""
    deadline = time.monotonic() + timeout
    try:
        while any(p.poll() is None for p in procs):
            if time.monotonic() > deadline or any(p.poll() not in (None, 0) for p in procs):
                break
            time.sleep(0.05)
        grace = time.monotonic() + 5.0  # a failed rank's peers get a moment to fail on their own
        while any(p.poll() is None for p in procs) and time.monotonic() < grace and time.monotonic() <= deadline:
            if all(p.poll() in (None, 0) for p in procs):
                break
            time.sleep(0.05)
    finally:
        stop_ranks(procs)
    results = []
    for p in procs:
        out, err, out_path, err_path = p.log_files
        out.close()
        err.close()
        results.append((p.returncode, Path(out_path).read_text(), Path(err_path).read_text()))
    return results
