"""Accuracy of the float32 products MLX's CPU matmul runs, against float64: the library's own sum (one sgemm
call), ours (the many-row products in K-blocks, platform/skinny_sgemm.c blocked_sgemm), torch's (MKL) and a
correctly rounded product (float64, rounded once), at the prefill shapes of the test models and the 64m.

Figure: rms over the elements of |C - C64| / (|A| |B|) (the error relative to its classical bound's scale), on
N(0, 1) inputs and weights scaled by K^-1/2; ratio columns are against torch.

    python benchmarks/sgemm_accuracy.py [--out benchmarks/results/sgemm_accuracy]
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

import numpy as np

import mlx.core as mx

mx.set_default_device(mx.cpu)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from xlstm_mlx import platform  # noqa: E402
from xlstm_mlx.platform import blas, skinny  # noqa: E402

# (M, K, N): q/k of hidden 64 and 96, FFN down of hidden 96 (K 256), hidden 520 projections, the 64m's
SHAPES = [(300, 64, 64), (260, 96, 256), (260, 256, 96), (260, 520, 520), (260, 1408, 520), (512, 512, 256),
          (512, 512, 1408), (512, 1408, 512)]


def cpu_model() -> str:
    try:
        return next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/sgemm_accuracy"))
    args = ap.parse_args()
    import torch

    platform.setup()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    rows = []
    for M, K, N in SHAPES:
        x = rng.standard_normal((M, K)).astype(np.float32)
        w = (rng.standard_normal((N, K)) / np.sqrt(K)).astype(np.float32)
        x64, w64 = x.astype(np.float64), w.astype(np.float64)
        ref, scale = x64 @ w64.T, np.abs(x64) @ np.abs(w64).T

        def rms(c):
            return float(np.sqrt(np.mean(((np.asarray(c, np.float64) - ref) / scale) ** 2)))

        def ours():
            return np.array(mx.array(x) @ mx.array(w).T)

        with skinny.k_block(0):
            lib = ours()
        row = {"M": M, "K": K, "N": N, "library": rms(lib), "ours": rms(ours()),
               "torch": rms((torch.from_numpy(x) @ torch.from_numpy(w).T).numpy()),
               "correctly_rounded": rms(ref.astype(np.float32))}
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    b = blas.info()
    meta = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "device": f"{cpu_model()}, BLAS {b.get('library')} core {b.get('core')}, torch {torch.__version__} "
                      f"(MKL), K-block {skinny.k_block_now()}",
            "command": "python " + " ".join(sys.argv)}
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps({**meta, "rows": rows}, indent=1))
    lines = ["| M x K x N | library (one call) | ours (K-blocks) | torch (MKL) | correctly rounded | library / torch | "
             "ours / torch |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['M']} x {r['K']} x {r['N']} | {r['library']:.2e} | {r['ours']:.2e} | {r['torch']:.2e} | "
                     f"{r['correctly_rounded']:.2e} | {r['library'] / r['torch']:.2f} | {r['ours'] / r['torch']:.2f} |")
    md = (f"# float32 product accuracy against float64 (rms of |error| / (|A| |B|))\n\ndate {meta['date']}; "
          f"device {meta['device']}\n\ncommand: `{meta['command']}`\n\n" + "\n".join(lines) + "\n")
    out.with_suffix(".md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
