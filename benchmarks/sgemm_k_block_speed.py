"""CPU speed of the many-row float32 products summed in K-blocks (platform/skinny_sgemm.c, blocked_sgemm) against
the library's own sum, in one process: the generation path's prefill (state only) and the decode loop.

The change is one process-wide setting of the cblas_sgemm wrapper (`skinny.k_block(n)`; 0 is the library's own
sum, exactly what ran before), so the settings alternate round after round and the best time of each is kept
(the machine is shared: a busy spell hits all of them). Decode products have <= 8 rows (the skinny kernel), so
decode should not move at all: it is measured as the control. Shape: the random "64m", profile parity (float32).

    python benchmarks/sgemm_k_block_speed.py [--rounds 6] [--blocks 0 64] [--out benchmarks/results/sgemm_k_block_speed]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform as pyplatform
import sys
import tempfile
import time
from pathlib import Path

import mlx.core as mx

mx.set_default_device(mx.cpu)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import xlstm_mlx  # noqa: E402
from xlstm_mlx.checkpoints.random import make_random_checkpoint  # noqa: E402
from xlstm_mlx.generation.generate import generate_step, prefill  # noqa: E402
from xlstm_mlx.platform import skinny  # noqa: E402

PREFILL_T, DECODE_BATCHES, STEPS = 512, (1, 8), 16


def prefill_s(model) -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds): on a shared machine the CPU time moves less with the others'
    load (it still counts cache and memory contention)."""
    ids = mx.random.randint(0, model.args.vocab_size, (1, PREFILL_T), key=mx.random.key(1)).astype(mx.int32)
    mx.eval(ids)
    cache = model.make_cache(1)
    t, c = time.perf_counter(), time.process_time()
    prefill(model, ids, cache)
    mx.eval(cache.arrays())
    return time.perf_counter() - t, time.process_time() - c


def decode_ms(model, batch: int) -> float:
    ids = mx.random.randint(0, model.args.vocab_size, (batch, 16), key=mx.random.key(2)).astype(mx.int32)
    gen = generate_step(model, ids, max_tokens=STEPS + 1)
    next(gen).tolist()
    t = time.perf_counter()
    for y in gen:
        y.tolist()
    return (time.perf_counter() - t) / STEPS * 1e3


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--blocks", type=int, nargs="+", default=[0, skinny.DEFAULT_K_BLOCK])
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/sgemm_k_block_speed"))
    args = ap.parse_args()
    if skinny.k_block_now() is None:
        raise SystemExit("no skinny sgemm kernel (not built?): nothing to compare")
    names = ["prefill_ms", "prefill_cpu_ms"] + [f"decode_b{b}_ms" for b in DECODE_BATCHES]
    best = {kb: {n: float("inf") for n in names} for kb in args.blocks}
    with tempfile.TemporaryDirectory() as d:
        path = make_random_checkpoint(Path(d) / "64m", "64m", seed=0)
        model, _ = xlstm_mlx.load(path, profile="parity")
        with skinny.k_block(args.blocks[-1]):  # warm-up: compilation, allocator
            prefill_s(model), decode_ms(model, 1), decode_ms(model, 8)
        for r in range(args.rounds):
            for kb in (args.blocks if r % 2 == 0 else args.blocks[::-1]):
                with skinny.k_block(kb):
                    got = [v * 1e3 for v in prefill_s(model)] + [decode_ms(model, b) for b in DECODE_BATCHES]
                best[kb] = {n: min(best[kb][n], v) for n, v in zip(names, got)}
            print(r, json.dumps(best), f"load {os.getloadavg()[0]:.1f}", file=sys.stderr, flush=True)
    meta = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "device": f"{pyplatform.machine()} CPU, {os.cpu_count()} cores (shared), load at the end "
                      f"{os.getloadavg()[0]:.1f}, mlx {mx.__version__}",
            "command": "python " + " ".join(sys.argv), "rounds": args.rounds}
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps({**meta, "best": {str(k): v for k, v in best.items()}}, indent=1))
    base = args.blocks[0]
    head = "| what | " + " | ".join(f"K-block {kb or 'off (library sum)'}" for kb in args.blocks) + " |"
    lines = [head, "|---|" + "---|" * len(args.blocks)]
    for n, label in zip(names, [f"prefill, T {PREFILL_T}, batch 1 (ms)", "prefill, CPU time of the process (ms)"] +
                        [f"decode, batch {b} (ms/step)" for b in DECODE_BATCHES]):
        cells = [f"{best[kb][n]:.1f}" + (f" ({best[kb][n] / best[base][n]:.2f})" if kb != base else "")
                 for kb in args.blocks]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    md = (f"# CPU speed: many-row products in K-blocks vs the library's own sum (64m)\n\ndate {meta['date']}; "
          f"device {meta['device']}\n\ncommand: `{meta['command']}` (best of {args.rounds} alternating rounds; "
          f"decode: {STEPS} steps per round)\n\n" + "\n".join(lines) + "\n")
    out.with_suffix(".md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
