"""The decode steps right after a many-row forward, against steady-state steps, and a 512-token prefill, in one
process under the environment it is started with (run it in alternating processes with and without e.g.
OPENBLAS_THREAD_TIMEOUT=N to A/B OpenBLAS' worker spin; docs/bench.md "CPU, 2026-12-03 session 14").

Prints one JSON line: steady (median ms of the plain loop's steps on a cache that has been decoding), after
(median ms of each of the first --steps steps after a 16-token forward on a fresh cache), prefill_ms (best of
--reps of generate.prefill over 511 tokens + the one-token call on the last token + argmax), the load.

    XLSTM_MLX_BLAS_THREADS=2 python benchmarks/probes/cpu_after_prefill.py [--batch 1] [--rounds 8]
"""
import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import mlx.core as mx  # noqa: E402

from xlstm_mlx.checkpoints.load import load as load_model  # noqa: E402
from xlstm_mlx.checkpoints.random import make_random_checkpoint  # noqa: E402
from xlstm_mlx.generation.generate import prefill  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--ckpt", default="/tmp/cpu_gen_vs_plain_ckpt")
    args = ap.parse_args()
    mx.set_default_device(mx.cpu)
    if not Path(args.ckpt, "config.json").exists():
        make_random_checkpoint(args.ckpt, "64m")
    model, _ = load_model(args.ckpt, dtype="float32")
    B, n = args.batch, args.steps
    V = model.args.vocab_size
    ids = mx.random.randint(0, V, (B, 16)).astype(mx.int32)
    long_ids = mx.random.randint(0, V, (1, 512)).astype(mx.int32)
    c = model.make_cache(B)
    cur = mx.argmax(model(ids, cache=c)[:, -1:], axis=-1)

    def steps(cache, tok):
        ts = []
        for _ in range(n):
            t = time.perf_counter()
            tok = mx.argmax(model(tok, cache=cache)[:, -1:], axis=-1)
            tok.tolist()
            ts.append(time.perf_counter() - t)
        return ts, tok

    steady, after = [], []
    steps(c, cur)
    for _ in range(args.rounds):
        ts, cur = steps(c, cur)
        steady += ts
        fresh = model.make_cache(B)
        mx.eval(model(ids, cache=fresh, last_only=True), fresh.arrays())
        ts, _ = steps(fresh, mx.zeros((B, 1), mx.uint32))
        after.append(ts)

    def pf():
        cc = model.make_cache(1)
        prefill(model, long_ids[:, :-1], cc)
        mx.argmax(model(long_ids[:, -1:], cache=cc)[:, -1], axis=-1).tolist()

    pf()
    best = float("inf")
    for _ in range(args.reps):
        t = time.perf_counter()
        pf()
        best = min(best, time.perf_counter() - t)
    print(json.dumps({
        "env": {k: os.environ.get(k) for k in ("OPENBLAS_THREAD_TIMEOUT", "XLSTM_MLX_BLAS_THREADS")},
        "steady_ms": round(statistics.median(steady) * 1e3, 2),
        "after_ms": [round(statistics.median(col) * 1e3, 1) for col in zip(*after)],
        "prefill_ms": round(best * 1e3, 1), "load": round(os.getloadavg()[0], 2)}))


if __name__ == "__main__":
    main()
