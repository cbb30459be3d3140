"""Is a decode step bound by the host or by the GPU? Times the three parts of generate_step's pipelined loop,
and reruns itself under MLX's CUDA-graph settings, alternating, in one call.

    python3 benchmarks/probes/decode_host_split.py --shape 7b --batch 1 16 [-q 4 --weight-mode single] \
        [--env default graphs_off big_graphs] [--code scratch/old .] [--rounds 2] [--json $OUT/host_split.json]

Per step of the same loop as generate_step (greedy, the next step queued before the previous token is read):
  build   the Python side: the compiled step's call and the sampler, until the lazy graph exists;
  encode  mx.async_eval of it: on MLX's CUDA backend this runs every primitive's eval_gpu on this thread
          (kernel nodes added to CUDA graphs, graphs committed: cudaGraphExecUpdate or instantiate, launched);
  wait    reading the previous step's token (.tolist()): the time the host waits for the GPU.
When wait is near zero the GPU waits for the host: the step is host-bound, and a faster kernel cannot show.
Why it exists: on an H200 (2026-12-02, session 8) the 4-bit 7B step's kernels add up to 4.19 ms under Nsight
while the step takes 5.5-7.1 ms, and identical runs spread 160-199 tok/s.

MLX's CUDA backend batches kernels into CUDA graphs and commits one after MLX_MAX_OPS_PER_BUFFER kernels (30 on
an H100 / H200) or MLX_MAX_MB_PER_BUFFER MB of inputs (400 there: a bf16 7B decode matrix is 34-412 MB, so bf16
steps commit every one to three matrices); MLX_USE_CUDA_GRAPHS=0 launches each kernel directly. The --env
variants (each run in a fresh process, as MLX reads them once):
  default      MLX's settings;
  graphs_off   MLX_USE_CUDA_GRAPHS=0;
  big_graphs   MLX_MAX_OPS_PER_BUFFER=200, MLX_MAX_MB_PER_BUFFER=100000 (one commit per ~200 kernels);
  mb_only      MLX_MAX_MB_PER_BUFFER=100000 alone (commits by the op count only);
  ops100       MLX_MAX_OPS_PER_BUFFER=100, MLX_MAX_MB_PER_BUFFER=100000;
  no_add_norm  XLSTM_MLX_GEMV_ADD_NORM=0 (the quantized GEMV's add-norm tail off: its own norm.add_rms launch);
  add_norm16   XLSTM_MLX_GEMV_ADD_NORM_ROWS=16 (the tail at up to 16 rows, not 4).
--code runs each variant with the xlstm_mlx package of each directory given (e.g. `git archive <commit>
xlstm_mlx | tar -x -C scratch/old`), alternating: the same machine and session for code A and B.
A probe for the record, not a test; on the CPU it runs (MLX's CPU backend has no graphs: encode is the compute).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if "--child" not in sys.argv:  # a child imports xlstm_mlx from the PYTHONPATH its parent set (--code)
    sys.path.insert(0, str(ROOT))

ENVS = {
    "default": {},
    "graphs_off": {"MLX_USE_CUDA_GRAPHS": "0"},
    "big_graphs": {"MLX_MAX_OPS_PER_BUFFER": "200", "MLX_MAX_MB_PER_BUFFER": "100000"},
    "mb_only": {"MLX_MAX_MB_PER_BUFFER": "100000"},
    "ops100": {"MLX_MAX_OPS_PER_BUFFER": "100", "MLX_MAX_MB_PER_BUFFER": "100000"},
    "no_add_norm": {"XLSTM_MLX_GEMV_ADD_NORM": "0"},
    "add_norm16": {"XLSTM_MLX_GEMV_ADD_NORM_ROWS": "16"},
    "no_decode_layer": {"XLSTM_MLX_DECODE_LAYER": "0"},
}


def split(model, batch: int, steps: int, seed: int) -> dict:
    """Medians (ms) of build / encode / wait per step and the wall time per step, over `steps` steps."""
    import mlx.core as mx

    from xlstm_mlx.generation.generate import prefill
    from xlstm_mlx.models.compiled import decode_fn

    ids = mx.random.randint(0, model.args.vocab_size, (batch, 16), key=mx.random.key(seed)).astype(mx.int32)
    cache = model.make_cache(batch)
    logits = prefill(model, ids, cache, None, 2048, False, None, last_logits=True)
    decode = decode_fn(model)

    def step(tokens):
        return mx.argmax(decode(tokens, cache)[:, -1], axis=-1).astype(mx.int32)

    y = mx.argmax(logits, axis=-1).astype(mx.int32)
    mx.async_eval(y)
    parts = {"build": [], "encode": [], "wait": []}
    t_start = None
    for i in range(steps + 8):  # 8 warm-up steps: the trace, the first graphs
        if i == 8:
            t_start = time.perf_counter()
        t0 = time.perf_counter()
        nxt = step(y[:, None])
        t1 = time.perf_counter()
        mx.async_eval(nxt)
        t2 = time.perf_counter()
        y.tolist()
        t3 = time.perf_counter()
        if i >= 8:
            parts["build"].append(t1 - t0)
            parts["encode"].append(t2 - t1)
            parts["wait"].append(t3 - t2)
        y = nxt
    y.tolist()
    wall = (time.perf_counter() - t_start) / steps
    out = {k: statistics.median(v) * 1e3 for k, v in parts.items()}
    out.update(wall_ms=wall * 1e3, tok_s=batch / wall, batch=batch, steps=steps)
    return out


def child(args) -> None:
    import mlx.core as mx

    from xlstm_mlx.tools.bench import build_model, quantized

    model, source = build_model(None, args.shape, args.dtype, None, 0, args.weight_mode)
    if args.quantize:
        model, source = quantized(model, source, args.quantize, 64)
    import xlstm_mlx

    res = {"model": source, "device": str(mx.default_device()), "package": xlstm_mlx.__file__, "rows": []}
    for b in args.batch:
        res["rows"].append(split(model, b, args.steps, seed=b))
    print("RESULT " + json.dumps(res), flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", default="7b")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--weight-mode")
    p.add_argument("-q", "--quantize", type=int)
    p.add_argument("--batch", type=int, nargs="+", default=[1, 16])
    p.add_argument("--steps", type=int, default=48)
    p.add_argument("--env", nargs="+", default=list(ENVS), choices=list(ENVS))
    p.add_argument("--code", nargs="+", default=[str(ROOT)],
                   help="directories holding an xlstm_mlx package to A/B (e.g. one from `git archive <commit>`); "
                        "each child imports xlstm_mlx from there (default: this checkout)")
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds over the --env and --code variants")
    p.add_argument("--timeout", type=float, default=240.0, help="seconds per child process")
    p.add_argument("--json")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return 0
    child_args = ["--shape", args.shape, "--dtype", args.dtype, "--steps", str(args.steps), "--batch",
                  *map(str, args.batch)]
    child_args += ["--weight-mode", args.weight_mode] if args.weight_mode else []
    child_args += ["-q", str(args.quantize)] if args.quantize else []
    results = []
    for r in range(args.rounds):
        for code, name in [(c, n) for c in args.code for n in args.env]:
            env = {**os.environ, **ENVS[name], "PYTHONPATH": os.pathsep.join(
                [code] + [x for x in os.environ.get("PYTHONPATH", "").split(os.pathsep) if x])}
            cmd = [sys.executable, __file__, "--child", *child_args]
            try:
                out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.timeout)
                line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")), None)
                res = json.loads(line[7:]) if line else {"error": (out.stderr or out.stdout)[-800:]}
            except subprocess.TimeoutExpired:
                res = {"error": f"timed out after {args.timeout:.0f}s"}
            res.update(env_name=name, code=code, round=r + 1)
            results.append(res)
            for row in res.get("rows", []):
                print(f"[host-split] {name} {code} round {r + 1} B={row['batch']}: {row['tok_s']:.1f} tok/s, wall "
                      f"{row['wall_ms']:.2f} ms = build {row['build']:.2f} + encode {row['encode']:.2f} + wait "
                      f"{row['wait']:.2f}", file=sys.stderr, flush=True)
            if "error" in res:
                print(f"[host-split] {name} round {r + 1}: {res['error']}", file=sys.stderr, flush=True)
            if args.json:
                from lab_timing import write_json  # noqa: PLC0415 (benchmarks/ on the path below)
                write_json(args.json, {"command": " ".join(sys.argv), "date": time.strftime(
                    "%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "results": results})
    print("| code | env | round | B | tok/s | wall ms | build | encode | wait |\n|---|---|---|---|---|---|---|---|---|")
    for res in results:
        for row in res.get("rows", []):
            print(f"| {Path(res['code']).name} | {res['env_name']} | {res['round']} | {row['batch']} | {row['tok_s']:.1f} | {row['wall_ms']:.2f} | "
                  f"{row['build']:.2f} | {row['encode']:.2f} | {row['wait']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "benchmarks"))
    sys.exit(main())
