"""Float32 matmul timings on the CPU: MLX with its bundled reference BLAS, MLX after xlstm_mlx's BLAS
setup, and numpy / torch as references. Each variant runs in its own process (the BLAS choice is
process-wide).

    python benchmarks/blas_matmul.py [--sizes 256 512 1024 2048] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

_CHILD = r"""
import json, os, sys, time
variant, sizes, budget = sys.argv[1], [int(s) for s in sys.argv[2].split(",")], float(sys.argv[3])
import numpy as np
info = None
if variant.startswith("mlx"):
    if variant == "mlx-xlstm":
        from xlstm_mlx.platform import blas as _blas
        info = _blas.setup()
    import mlx.core as mx
    mx.set_default_device(mx.cpu)
    def make(n):
        a, b = mx.random.normal((n, n)), mx.random.normal((n, n)); mx.eval(a, b); return a, b
    def run(a, b): mx.eval(a @ b)
elif variant == "torch":
    import torch
    def make(n): return torch.randn(n, n), torch.randn(n, n)
    def run(a, b): a @ b
else:
    def make(n):
        r = np.random.default_rng(0)
        return r.standard_normal((n, n), dtype=np.float32), r.standard_normal((n, n), dtype=np.float32)
    def run(a, b): a @ b
out = {}
for n in sizes:
    a, b = make(n)
    run(a, b)
    times = []
    t_end = time.perf_counter() + budget
    while len(times) < 3 or (time.perf_counter() < t_end and len(times) < 50):
        t = time.perf_counter(); run(a, b); times.append(time.perf_counter() - t)
    best = min(times)
    out[n] = {"ms": best * 1e3, "gflops": 2 * n**3 / best / 1e9, "reps": len(times)}
print(json.dumps({"variant": variant, "blas": info, "results": out}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024, 2048])
    ap.add_argument("--variants", nargs="+", default=["mlx-reference", "mlx-xlstm", "numpy", "torch"])
    ap.add_argument("--budget", type=float, default=2.0, help="seconds of repeats per size (min 3 repeats)")
    ap.add_argument("--json", help="write results here")
    args = ap.parse_args()
    rows = []
    for v in args.variants:
        env = dict(os.environ)
        if v == "mlx-reference":
            env["XLSTM_MLX_BLAS"] = "off"
        sizes = [s for s in args.sizes if v != "mlx-reference" or s <= 2048]
        p = subprocess.run([sys.executable, "-c", _CHILD, v, ",".join(map(str, sizes)), str(args.budget)],
                           env=env, capture_output=True, text=True)
        if p.returncode != 0:
            print(f"{v}: failed\n{p.stderr[-2000:]}", file=sys.stderr)
            continue
        rows.append(json.loads(p.stdout.strip().splitlines()[-1]))
    print(f"# float32 matmul, {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print("| variant | " + " | ".join(f"n={n} ms (GFLOP/s)" for n in args.sizes) + " |")
    print("|---|" + "---|" * len(args.sizes))
    for r in rows:
        cells = [f"{r['results'][str(n)]['ms']:.1f} ({r['results'][str(n)]['gflops']:.0f})"
                 if str(n) in r["results"] else "-" for n in args.sizes]
        print(f"| {r['variant']} | " + " | ".join(cells) + " |")
    for r in rows:
        if r["blas"]:
            print(f"\nmlx-xlstm BLAS: {r['blas']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cpu_count": os.cpu_count(),
                       "machine": platform.machine(), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
