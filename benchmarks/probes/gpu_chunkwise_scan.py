"""Prefill on the GPU: the closed-form inter-chunk scan against the per-chunk loop it replaced (7B shape).

    python benchmarks/probes/gpu_chunkwise_scan.py OLD_KERNEL_FILE      (MLX CUDA; one device call)

OLD_KERNEL_FILE is xlstm_mlx/kernels/mlstm_chunkwise.py as of commit 4f27d0e^ (the loop version), taken
from git history; both run in the same process on the same weights, alternating, best of 3.
"""

import importlib.util
import sys
import time

import mlx.core as mx

from xlstm_mlx.tools import bench
from xlstm_mlx import kernels

old_path = sys.argv[1]
spec = importlib.util.spec_from_file_location("xlstm_mlx.kernels._loop_scan", old_path)
old = importlib.util.module_from_spec(spec)
old.__package__ = "xlstm_mlx.kernels"
spec.loader.exec_module(old)
new_fn = kernels.SEQUENCE_KERNELS["chunkwise"]

model, _ = bench.build_model(None, "7b", None, None, 0)
print(model.profile.describe(), flush=True)


def prefill(B, T):
    ids = mx.random.randint(0, 50304, (B, T)).astype(mx.int32)
    best = 1e9
    for _ in range(4):
        cache = model.make_cache(B)
        t = time.perf_counter()
        model(ids, cache=cache)
        mx.eval(cache.arrays())
        best = min(best, time.perf_counter() - t)
    return B * T / best, best


for B, T in [(1, 2048), (1, 8192), (8, 2048)]:
    for name, fn in (("loop scan", (old.mlstm_chunkwise, new_fn[1])), ("closed form", new_fn)):
        kernels.SEQUENCE_KERNELS["chunkwise"] = fn
        tps, s = prefill(B, T)
        print(f"B={B} T={T} {name}: {tps:,.0f} tok/s ({s * 1e3:.1f} ms)", flush=True)
kernels.SEQUENCE_KERNELS["chunkwise"] = new_fn
