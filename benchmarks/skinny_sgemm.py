"""Few-row float32 products on the CPU: the skinny sgemm (xlstm_mlx/platform/skinny_sgemm.c) against the
library's sgemm and sgemv, called directly on numpy buffers, and MLX's `x @ W.T` through libmlx's redirected slot
with the kernel on and off (skinny.reference()). W is the 64m lm_head shape by default (50,304 x 512).

Every variant is timed alternately in the same process (kernel, sgemm, sgemv, ...) per round; each figure is the
best over reps and rounds, with the load average (1 min) of the round it came from.

    python benchmarks/skinny_sgemm.py --out benchmarks/results/skinny_sgemm
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import mlx.core as mx
from xlstm_mlx import platform
from xlstm_mlx.platform import blas, skinny

ROW, NO_TRANS, TRANS = 101, 111, 112


def best(fn, reps: int) -> float:
    fn()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return min(ts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=50304)
    ap.add_argument("--k", type=int, default=512)
    ap.add_argument("--rows", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results/skinny_sgemm")
    args = ap.parse_args()
    platform.setup()
    info = blas.info()
    if not info.get("skinny", {}).get("active"):
        raise SystemExit(f"the skinny kernel is not active: {info.get('skinny') or info['reason']}")
    lib = blas._Lib(info["path"])
    sgemv = getattr(lib.cdll, lib.prefix + "cblas_sgemv")
    sgemv.argtypes = [ctypes.c_int] * 4 + [ctypes.c_float, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p,
                                           ctypes.c_int, ctypes.c_float, ctypes.c_void_p, ctypes.c_int]
    kernel, real = skinny.address(), skinny.real_address()
    n, k = args.n, args.k
    rng = np.random.default_rng(0)
    w = rng.standard_normal((n, k)).astype(np.float32)
    mw = mx.array(w)
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    uptime_start = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    rows: dict = {}
    for _ in range(args.rounds):
        for m in args.rows:
            x = rng.standard_normal((m, k)).astype(np.float32)
            c = np.zeros((m, n), np.float32)
            mxx = mx.array(x)
            load = round(os.getloadavg()[0], 2)
            variants = {
                "skinny sgemm": lambda: skinny.sgemm(kernel, ROW, NO_TRANS, TRANS, m, n, k, 1.0, x, k, w, k, 0.0, c, n),
                "library sgemm": lambda: skinny.sgemm(real, ROW, NO_TRANS, TRANS, m, n, k, 1.0, x, k, w, k, 0.0, c, n),
                "MLX x @ W.T (skinny)": lambda: mx.eval(mx.matmul(mxx, mw.T, stream=mx.cpu)),
            }
            if m == 1:
                variants["library sgemv"] = lambda: sgemv(ROW, NO_TRANS, n, k, 1.0, w.ctypes.data, k, x.ctypes.data,
                                                          1, 0.0, c.ctypes.data, 1)
            for name, fn in variants.items():
                s = best(fn, args.reps)
                key = f"{m}|{name}"
                if key not in rows or s < rows[key]["seconds"]:
                    rows[key] = {"rows": m, "variant": name, "seconds": s, "load": load}
            with skinny.reference():
                s = best(variants["MLX x @ W.T (skinny)"], args.reps)
            key = f"{m}|MLX x @ W.T (reference)"
            if key not in rows or s < rows[key]["seconds"]:
                rows[key] = {"rows": m, "variant": "MLX x @ W.T (reference)", "seconds": s, "load": load}
    uptime_end = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    result = {"started": started, "uptime_start": uptime_start, "uptime_end": uptime_end,
              "command": "python " + " ".join(sys.argv), "platform": platform.describe(),
              "blas": info.get("version"), "threads": info.get("threads"), "n": n, "k": k,
              "rows": sorted(rows.values(), key=lambda r: (r["rows"], r["variant"]))}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    names = ["skinny sgemm", "library sgemm", "library sgemv", "MLX x @ W.T (skinny)", "MLX x @ W.T (reference)"]
    lines = [f"- {started}; {result['platform']}; {result['blas']}", f"- load: `{uptime_start}` -> `{uptime_end}`",
             f"- command: `{result['command']}`", f"- W = {n} x {k} float32 ({n * k * 4 / 1e6:.0f} MB), x @ W.T, "
             "best of reps and rounds, ms (load average of the round)", "",
             "| rows | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for m in args.rows:
        cells = []
        for name in names:
            r = rows.get(f"{m}|{name}")
            cells.append(f"{r['seconds'] * 1e3:.2f} ({r['load']})" if r else "-")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    out.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
