"""Where one decode step's (or one prefill's) time goes on an NVIDIA GPU: every kernel, timed by Nsight Compute.

Run under ncu, which profiles only between cudaProfilerStart and cudaProfilerStop (this script calls them around
the profiled steps, after the warm-up has compiled everything):

    ncu --clock-control none --profile-from-start off --metrics gpu__time_duration.sum --csv \
        --log-file $OUT/ncu_b1.csv python3 benchmarks/gpu_step_profile.py --shape 7b --batch 1 [--quantize 4]
    python3 benchmarks/gpu_step_profile.py --summarize $OUT/ncu_b1.csv      # the table (any machine)

With --prefill T the profiled work is one prefill of batch x T tokens through the generation path (state only,
bench's prefill), and "per step" in the table means per prefill.

ncu serializes the kernels and times each alone, so the sum is the step's kernel time without launch gaps: set
beside the step time measured without ncu (printed by the run itself), the difference is what the gaps cost.
Kernel names are grouped into kinds (matmul, quantized matmul, our CUDA kernels, norms, fused elementwise, copies)
by the patterns in KINDS below; anything unmatched is listed as "other" with its name.
"""

from __future__ import annotations

import argparse
import csv
import ctypes
import json
import re
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

KINDS = [  # (kind, regex over the demangled kernel name), first match wins
    ("quantized matmul", r"qmv|qmm|quantized|affine"),
    ("mlstm.decode_step (ours)", r"xlstm_mlstm_decode"),
    ("other custom kernels (ours)", r"xlstm_"),
    ("matmul (cuBLAS / cutlass / gemv)", r"gemm|gemv|cublas|cutlass|sm90|nvjet|matmul|xmma"),
    ("rms / layer norm", r"rms|layer_norm|layernorm"),
    ("reduction", r"reduce|all_reduce|row_reduce|col_reduce"),
    ("copy / cast", r"copy|cast|convert"),
    ("fused elementwise (mx.compile)", r"compiled|fused|Compiled"),
    ("elementwise", r"binary|unary|ternary|elementwise"),
    ("gather / scatter / arg", r"gather|scatter|arg|index|take"),
]


def kind_of(name: str) -> str:
    for kind, pattern in KINDS:
        if re.search(pattern, name, re.IGNORECASE):
            return kind
    return "other"


def _cuda_profiler(start: bool) -> bool:
    """cudaProfilerStart / Stop through the CUDA runtime already loaded by MLX (or any on the machine)."""
    for lib in ("libcudart.so.13", "libcudart.so.12", "libcudart.so"):
        try:
            rt = ctypes.CDLL(lib)
        except OSError:
            continue
        return (rt.cudaProfilerStart if start else rt.cudaProfilerStop)() == 0
    return False


def run(args) -> None:
    import mlx.core as mx

    from xlstm_mlx import platform

    platform.setup()  # as the CLI does: full float32 matmuls (no TF32), the measured configuration

    from xlstm_mlx.generation.generate import generate_step
    from xlstm_mlx.tools.bench import build_model, quantized

    model, source = build_model(None, args.shape, "bfloat16", None, 0, args.weight_mode)
    if args.quantize:
        model, source = quantized(model, source, args.quantize, 64)
    if args.prefill:
        return run_prefill(model, source, args)
    ids = mx.random.randint(0, model.args.vocab_size, (args.batch, 8), key=mx.random.key(0)).astype(mx.int32)
    gen = generate_step(model, ids, max_tokens=10_000)
    for _ in range(args.warmup):
        next(gen).tolist()
    t = time.perf_counter()
    for _ in range(args.timed):
        next(gen).tolist()
    ms = (time.perf_counter() - t) / args.timed * 1e3
    print(json.dumps({"source": source, "batch": args.batch, "ms_per_step_unprofiled": ms}), flush=True)
    mx.synchronize()
    started = _cuda_profiler(True)
    for _ in range(args.steps):
        next(gen).tolist()
    mx.synchronize()
    _cuda_profiler(False)
    gen.close()
    print(json.dumps({"profiled_steps": args.steps, "profiler_started": started}), flush=True)


def run_prefill(model, source: str, args) -> None:
    import mlx.core as mx

    from xlstm_mlx.generation.generate import prefill

    ids = mx.random.randint(0, model.args.vocab_size, (args.batch, args.prefill), key=mx.random.key(0))
    ids = ids.astype(mx.int32)

    def once():
        cache = model.make_cache(args.batch)
        prefill(model, ids, cache)
        mx.eval(*cache.arrays())
        mx.synchronize()

    once()
    t = time.perf_counter()
    for _ in range(3):
        once()
    ms = (time.perf_counter() - t) / 3 * 1e3
    print(json.dumps({"source": source, "batch": args.batch, "prefill": args.prefill, "ms_unprofiled": ms,
                      "tok_s_unprofiled": args.batch * args.prefill / ms * 1e3}), flush=True)
    started = _cuda_profiler(True)
    once()
    _cuda_profiler(False)
    print(json.dumps({"profiled_prefills": 1, "profiler_started": started}), flush=True)


def summarize(path: str, steps: int) -> dict:
    """Per-kind totals (us per step) from ncu's --csv log."""
    text = Path(path).read_text()
    lines = text[text.index('"ID"'):].splitlines() if '"ID"' in text else []
    per_kind = defaultdict(lambda: [0, 0.0])
    names = defaultdict(lambda: [0, 0.0])
    for row in csv.DictReader(lines):
        if row.get("Metric Name") != "gpu__time_duration.sum":
            continue
        value = float(row["Metric Value"].replace(",", ""))
        us = value / 1e3 if row.get("Metric Unit", "ns") in ("nsecond", "ns") else value
        name = row["Kernel Name"]
        k = kind_of(name)
        per_kind[k][0] += 1
        per_kind[k][1] += us
        names[(k, name[:90])][0] += 1
        names[(k, name[:90])][1] += us
    total = sum(v[1] for v in per_kind.values())
    out = {"kernels_per_step": sum(v[0] for v in per_kind.values()) / steps, "kernel_us_per_step": total / steps,
           "kinds": {k: {"kernels_per_step": n / steps, "us_per_step": us / steps, "share": us / total if total else 0}
                     for k, (n, us) in sorted(per_kind.items(), key=lambda kv: -kv[1][1])},
           "top_names": [{"kind": k, "name": n, "count_per_step": c / steps, "us_per_step": us / steps}
                         for (k, n), (c, us) in sorted(names.items(), key=lambda kv: -kv[1][1])[:25]]}
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", default="7b")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--quantize", type=int, help="bits (convert -q layout, group 64)")
    p.add_argument("--weight-mode", choices=["single", "fused"], help="stored layout of the random weights")
    p.add_argument("--warmup", type=int, default=8)
    p.add_argument("--timed", type=int, default=32, help="steps timed without the profiler")
    p.add_argument("--steps", type=int, default=1, help="steps profiled")
    p.add_argument("--prefill", type=int, metavar="T", help="profile one prefill of batch x T tokens instead")
    p.add_argument("--summarize", metavar="CSV", help="print the per-kind table of an ncu --csv log and exit")
    args = p.parse_args()
    if args.summarize:
        s = summarize(args.summarize, args.steps)
        print(json.dumps(s, indent=1))
        print(f"\n{s['kernels_per_step']:.0f} kernels, {s['kernel_us_per_step']:.0f} us of kernel time per step")
        for k, v in s["kinds"].items():
            print(f"  {k:36s} {v['kernels_per_step']:6.0f} kernels {v['us_per_step']:9.1f} us  {v['share']:6.1%}")
        return 0
    run(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
