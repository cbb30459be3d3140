"""Does MLX's one-row matmul read a bf16 matrix faster when K is a multiple of 128? And how fast is a plain
one-warp-per-row kernel with 16-byte loads at one row?

    python3 benchmarks/probes/gemv_k_pad.py [--calls 20 --reps 5] [--json $OUT/gemv_k_pad.json]

Why: MLX's CUDA gemv (mlx/backend/cuda/gemms/gemv.cu, one warp a row) loads 4 values a thread only when
K % 128 == 0, else 2 (or 1): the 7B FFN down (K = 10,944 = 85.5 x 128) then moves 4-byte loads, and an Nsight
profile of the batch-1 step had it at 2.93 TB/s against 3.80 for the K = 4,096 matrices
(benchmarks/results/gpu_h200_2026-12-02c.md). If K = 11,008 (10,944 padded with 64 zero columns) reads at the
K = 4,096 rate, padding the FFN's inner dimension at load is worth ~0.2 ms a batch-1 step. The float32 lm_head
(16-byte loads through the same kernel) read at 4.4 TB/s there: the skinny kernel at R = 1 (one warp a row,
16-byte loads, UNROLL in flight) is timed beside it to see whether bf16 reaches that with wider loads.
Timing: benchmarks/lab_timing.chain_time (dependent calls, weights rotated past the L2). A probe for the record.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import mlx.core as mx  # noqa: E402

from benchmarks.lab_timing import chain_time, copies_for, rel_err, write_json  # noqa: E402

SHAPES = [  # (name, N, K)
    ("ffn_down", 4096, 10944),
    ("ffn_down_padded", 4096, 11008),
    ("qkvo", 12288, 4096),
    ("ffn_up", 21888, 4096),
    ("out_proj", 4096, 4096),
    ("lm_head", 50304, 4096),
]
SKINNY = [dict(R=1, KSPLIT=1, UNROLL=4), dict(R=1, KSPLIT=1, UNROLL=8), dict(R=1, KSPLIT=2, UNROLL=4),
          dict(R=2, KSPLIT=1, UNROLL=4)]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--rows", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    from xlstm_mlx.kernels import skinny_gemm

    rows_out = []
    for name, n, k in SHAPES:
        for dtype in ([mx.bfloat16, mx.float32] if name == "lm_head" else [mx.bfloat16]):
            nbytes = n * k * dtype.size
            copies = copies_for(nbytes)
            ws = [mx.random.normal((n, k), key=mx.random.key(i)).astype(dtype) for i in range(copies)]
            mx.eval(ws)
            for m in a.rows:
                x = mx.random.normal((m, k), key=mx.random.key(99)).astype(dtype)
                ref = (x.astype(mx.float32) @ ws[0].astype(mx.float32).T)
                variants = {"mlx": lambda i, xi: xi @ ws[i % copies].T}
                if m <= skinny_gemm.MAX_ROWS:
                    for cfg in SKINNY:
                        tag = "skinny R{R} K{KSPLIT} U{UNROLL}".format(**cfg)
                        variants[tag] = (lambda cfg: lambda i, xi: skinny_gemm.skinny_matmul_cuda(
                            xi, ws[i % copies], None, **cfg))(cfg)
                for tag, call in variants.items():
                    rec = dict(matrix=name, n=n, k=k, dtype=str(dtype), rows=m, variant=tag)
                    try:
                        err = rel_err(call(0, x), ref)
                        t = chain_time(call, x, copies, a.calls, a.reps)
                        rec.update(us=t * 1e6, tbps=nbytes / t / 1e12, err=err)
                    except Exception as e:  # a probe: record and go on
                        rec.update(error=f"{type(e).__name__}: {e}"[:300])
                    rows_out.append(rec)
                    print(json.dumps(rec), flush=True)
            del ws
    print("\n| matrix | dtype | rows | variant | us | TB/s | rel err |\n|---|---|---|---|---|---|---|")
    for r in rows_out:
        if "us" in r:
            print(f"| {r['matrix']} {r['k']}->{r['n']} | {r['dtype'].split('.')[-1]} | {r['rows']} | {r['variant']} | "
                  f"{r['us']:.1f} | {r['tbps']:.2f} | {r['err']:.1e} |")
        else:
            print(f"| {r['matrix']} | {r['dtype']} | {r['rows']} | {r['variant']} | error: {r['error'][:80]} | | |")
    if a.json:
        write_json(a.json, dict(date=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), device=str(mx.default_device()),
                                calls=a.calls, reps=a.reps, rows=rows_out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
