"""One device call's worth of xLSTM-7B-shape figures on a GPU (random bf16 weights, float32 state):
the full `xlstm-mlx bench` grid with the compiled decode step, then the decode batches again with the
reference (uncompiled) step, in the same process on the same weights.

    python benchmarks/gpu_7b.py --out $OUT/gpu_7b   [--decode-batch 1 16 64] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import mlx.core as mx

from xlstm_mlx.tools import bench


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--shape", default="7b")
    ap.add_argument("--prefill-grid", nargs="+", default=["1x2048", "1x8192", "8x8192", "1x65536"])
    ap.add_argument("--decode-batch", type=int, nargs="+", default=[1, 16, 64])
    ap.add_argument("--decode-steps", type=int, default=32)
    ap.add_argument("--skip-reference", action="store_true")
    a = ap.parse_args()
    p = argparse.ArgumentParser()
    bench.add_arguments(p)
    args = p.parse_args(["--shape", a.shape, "--prefill-grid", *a.prefill_grid, "--decode-batch",
                         *map(str, a.decode_batch), "--decode-steps", str(a.decode_steps), "--ttft-len", "2048",
                         "--reps", "2", "--budget", "1"])
    os.environ["XLSTM_MLX_COMPILE_DECODE"] = "1"
    model, source = bench.build_model(None, args.shape, None, None, args.seed)
    out = bench.run(args, (model, source))
    out["command"] = " ".join(sys.argv)
    out["decode_step"] = "compiled (models/compiled.py)"
    if not a.skip_reference:
        os.environ["XLSTM_MLX_COMPILE_DECODE"] = "0"
        key = mx.random.key(args.seed)
        out["decode_reference_step"] = []
        for b in a.decode_batch:
            r = bench.bench_decode(model, b, a.decode_steps, 2, 1.0, key)
            out["decode_reference_step"].append(r)
            print(f"[bench] decode B={b} reference step: {r['tok_s']:.1f} tok/s ({r['ms_per_step']:.2f} ms/step)",
                  file=sys.stderr)
    with open(a.out + ".json", "w") as f:
        json.dump(out, f, indent=1)
    try:
        from xlstm_mlx.tools.bench_plot import plot

        plot(out, a.out + ".png")
    except SystemExit as e:
        print(e, file=sys.stderr)


if __name__ == "__main__":
    main()
