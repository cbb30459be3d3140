"""CPU speed before/after the BLAS-summed norms (kernels/norms.py): whole-model prefill and compiled decode.

The change on the CPU path is the norm.rms / norm.layer registry entries alone, so one process compares the two:
"before" puts MLX's fused ops (each entry's reference, exactly what ran before) back into those two entries,
"after" is the new form; the compiled decode step is rebuilt at each switch. The two alternate round after round
and the best time of each is kept (the machine is shared: a busy spell hits both). Shapes: the random "64m"
(hidden 512) and a 7B-width slice (hidden 4096, 8 heads of q/k 256 and v 512, fused weights as xLSTM-7B; 2 blocks,
FFN 1024 and a 512-token vocabulary so it fits a small CPU); profile parity (float32), batch 1.

    python benchmarks/norm_speed.py [--rounds 8] [--out benchmarks/results/norm_speed]
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
from xlstm_mlx import kernels  # noqa: E402
from xlstm_mlx.checkpoints.random import make_random_checkpoint, shape_args  # noqa: E402

SHAPES = {"64m": ("64m", {}), "7b-width slice": ("7b", dict(num_blocks=2, ffn_dim=1024, vocab_size=512))}
T, STEPS = 128, 8


def switch(model, which: str, new: dict) -> None:
    for name, k in new.items():
        kernels.KERNELS[name] = k if which == "after" else k._replace(fast=k.reference)
    model.__dict__.pop("_xlstm_compiled_forward", None)  # the compiled step traced the old entries


def sample(model) -> tuple[float, float]:
    ids = mx.array([[i % 251 + 1 for i in range(T)]])
    t = time.perf_counter()
    mx.eval(model(ids))
    prefill = time.perf_counter() - t
    cache = model.make_cache(1)
    mx.eval(model(ids, cache=cache))
    tok = mx.array([[7]])
    for _ in range(2):
        mx.eval(model(tok, cache=cache))
    best = float("inf")
    for _ in range(STEPS):
        t = time.perf_counter()
        z = model(tok, cache=cache)
        mx.eval(z, cache.layers)
        best = min(best, time.perf_counter() - t)
    return prefill, best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/norm_speed"))
    args = ap.parse_args()
    new = {n: kernels.KERNELS[n] for n in kernels.NORMS}
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for name, (shape, over) in SHAPES.items():
            path = make_random_checkpoint(Path(d) / shape, shape_args(shape, **over) if over else shape, seed=0)
            model, _ = xlstm_mlx.load(path, profile="parity")
            best = {k: [float("inf"), float("inf")] for k in ("before", "after")}
            for r in range(args.rounds):
                for k in (("before", "after") if r % 2 == 0 else ("after", "before")):
                    switch(model, k, new)
                    best[k] = [min(a, b) for a, b in zip(best[k], sample(model))]
                print(name, r, json.dumps(best), file=sys.stderr, flush=True)
            switch(model, "after", new)
            rows.append({"shape": name, **{f"{k}_{m}_ms": 1e3 * v[i] for k, v in best.items()
                                           for i, m in enumerate(("prefill", "decode"))}})
    meta = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "device": f"{pyplatform.machine()} CPU, {os.cpu_count()} cores (shared), load {os.getloadavg()[0]:.1f}, "
                      f"mlx {mx.__version__}",
            "command": "python " + " ".join(sys.argv), "rounds": args.rounds}
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps({**meta, "rows": rows}, indent=1))
    lines = ["| shape | what | before ms | after ms | after/before |", "|---|---|---|---|---|"]
    for r in rows:
        for m, label in (("prefill", f"prefill, T {T} (one call)"), ("decode", "decode, per token (compiled step)")):
            b, a = r[f"before_{m}_ms"], r[f"after_{m}_ms"]
            lines.append(f"| {r['shape']} | {label} | {b:.1f} | {a:.1f} | {a / b:.2f} |")
    md = (f"# CPU speed before/after the BLAS-summed norms\n\ndate {meta['date']}; device {meta['device']}\n\n"
          f"command: `{meta['command']}` (best of {args.rounds} alternating rounds; decode: best of {STEPS} steps "
          "per round)\n\n" + "\n".join(lines) + "\n")
    out.with_suffix(".md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
