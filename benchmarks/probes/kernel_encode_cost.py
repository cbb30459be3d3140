"""What does one mx.fast.cuda_kernel launch cost the host, by its number of inputs and outputs?

Builds a chain of N tiny custom kernels (each reads its predecessor's output plus k-1 constant arrays and writes
m outputs; one block of 256 threads, 256 floats: the GPU time is negligible) and times, per chain, the three
host parts of a decode step:
  build   the Python calls that make the lazy graph;
  encode  mx.async_eval of it (on MLX's CUDA backend every primitive's eval_gpu on this thread: kernel nodes
          added to CUDA graphs, graphs committed and launched);
  wait    mx.eval afterwards (the GPU finishing).
and fits encode per launch = a + b * (inputs + outputs). The answer decides how to fuse the decode step: fewer
launches, or fewer arguments per launch (benchmarks/results, session 17).

    python3 benchmarks/probes/kernel_encode_cost.py [--launches 200] [--reps 30] [--json $OUT/encode_cost.json]

A probe for the record, not a test. It needs MLX's CUDA backend (mx.fast.cuda_kernel).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import mlx.core as mx

SIZE = 256


def make_kernel(k: int, m: int):
    names = [f"a{j}" for j in range(k)]
    outs = [f"o{j}" for j in range(m)]
    body = "  int i = threadIdx.x;\n  float s = " + " + ".join(f"{n}[i]" for n in names) + ";\n"
    body += "".join(f"  {o}[i] = s + {j}.0f;\n" for j, o in enumerate(outs))
    return mx.fast.cuda_kernel(name=f"encode_probe_{k}_{m}", input_names=names, output_names=outs, source=body)


def chain(kernel, k: int, m: int, launches: int, consts):
    x = consts[0]
    for _ in range(launches):
        x = kernel(inputs=[x, *consts[1:k]], grid=(SIZE, 1, 1), threadgroup=(SIZE, 1, 1),
                   output_shapes=[(SIZE,)] * m, output_dtypes=[mx.float32] * m)[0]
    return x


def time_chain(k: int, m: int, launches: int, reps: int) -> dict:
    kernel = make_kernel(k, m)
    consts = [mx.random.normal((SIZE,)) for _ in range(max(k, 1))]
    mx.eval(consts)
    for _ in range(3):  # compile the kernel, warm MLX's graph caches
        mx.eval(chain(kernel, k, m, launches, consts))
    build, encode, wait = [], [], []
    for _ in range(reps):
        t0 = time.perf_counter()
        y = chain(kernel, k, m, launches, consts)
        t1 = time.perf_counter()
        mx.async_eval(y)
        t2 = time.perf_counter()
        mx.eval(y)
        t3 = time.perf_counter()
        build.append(t1 - t0), encode.append(t2 - t1), wait.append(t3 - t2)
    med = lambda v: statistics.median(v) * 1e6 / launches  # noqa: E731  (us per launch)
    return {"inputs": k, "outputs": m, "launches": launches, "build_us": med(build), "encode_us": med(encode),
            "wait_us": med(wait)}


def fit(rows):
    """Least squares encode_us = a + b * (inputs + outputs)."""
    xs = [r["inputs"] + r["outputs"] for r in rows]
    ys = [r["encode_us"] for r in rows]
    mx_, my = statistics.fmean(xs), statistics.fmean(ys)
    b = sum((x - mx_) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx_) ** 2 for x in xs)
    return my - b * mx_, b


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--launches", type=int, default=200)
    p.add_argument("--reps", type=int, default=30)
    p.add_argument("--json")
    a = p.parse_args()
    shapes = [(1, 1), (2, 1), (4, 1), (8, 1), (16, 1), (24, 1), (32, 1), (4, 4), (8, 4), (16, 8)]
    rows = []
    for rnd in range(2):  # two rounds, interleaved: drift shows as a difference between them
        for k, m in shapes:
            r = time_chain(k, m, a.launches, a.reps)
            r["round"] = rnd
            rows.append(r)
    a0, b0 = fit(rows)
    print(f"{'in':>3} {'out':>3} {'round':>5} {'build us':>9} {'encode us':>10} {'wait us':>8}   (per launch)")
    for r in rows:
        print(f"{r['inputs']:>3} {r['outputs']:>3} {r['round']:>5} {r['build_us']:9.2f} {r['encode_us']:10.2f} "
              f"{r['wait_us']:8.2f}")
    print(f"encode per launch ~= {a0:.2f} us + {b0:.3f} us x (inputs + outputs)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"rows": rows, "fit": {"base_us": a0, "per_arg_us": b0}, "device": str(mx.default_device()),
                       "mlx": mx.__version__}, f, indent=1)


if __name__ == "__main__":
    main()
