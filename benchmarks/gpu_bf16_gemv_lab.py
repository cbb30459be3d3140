"""bf16 GEMV lab: our CUDA kernel (kernels/bf16_gemv.py), every config it may pick, against MLX's matmul, in ONE run.

    python3 benchmarks/gpu_bf16_gemv_lab.py --json $OUT/gpu_bf16_gemv_lab.json  # 7B decode matrices (H200, < 2 min)
    python3 benchmarks/gpu_bf16_gemv_lab.py --quick             # small shapes, any device (CPU: kernel skipped)

For each 7B decode matrix (K -> N: fused q|k|v|o 4096->12288, FFN gate|up 4096->21888, FFN down 10944->4096,
out_proj 4096->4096, and the lm_head 4096->50304 in bf16 for reference), bf16 weights and x, no bias (the 7B
projections have none), rows M in 1, 4, 16 (--rows; the measured table keeps 1, 4 (for 2..8) and 16 (for 9..16)):
  (a) parity: MLX's matmul, the kernel's default config and every bf16_gemv.SWEEP_CONFIGS config against the float32
      product of the same bf16 operands evaluated on the CPU stream (relative Frobenius error; the bf16 output
      rounding alone puts it near 1.5e-3; a config above BAD_ERR is marked BAD and never "best");
  (b) time per call, the median over --reps chains of --calls DEPENDENT calls (each one's x computed from the previous output: lab_timing.chain_time) with the weights rotated over
      enough copies (>= 3, >= 128 MB in all) that no call finds its weight in the 60 MB L2, mx.synchronize()
      around each chain (built lazily before the clock starts: Python's dispatch is not timed), for
        mlx      MLX's matmul x @ w.T (what nn.Linear runs: cuBLAS),
        kernel   our bf16 GEMV with its default config, and each SWEEP config (cfg:R1U2S4K1W4 ...),
      and effective TB/s = the weight's bytes / time.
Every matrix section is in try/except: one failure is recorded and the rest still run. A short table is printed
last (matrix, M: MLX, default kernel, best config with its TB/s, worst error), then the table for
kernels/bf16_gemv.py (`H200 = {...}`, in the exact literal format of that file: paste it over the empty one) built
from the best configs; all numbers go to --json (written after every section, atomically). --max-seconds starts no
new section after that long (the skipped ones are recorded).
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path

import mlx.core as mx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from xlstm_mlx.kernels import bf16_gemv  # noqa: E402
from xlstm_mlx.kernels.cuda_common import cuda_available  # noqa: E402
from lab_timing import cfg_tag, chain_time, copies_for, rel_err, write_json, _err  # noqa: E402

MATRICES = {"qkvo": (4096, 12288), "ffn_up": (4096, 21888), "ffn_down": (10944, 4096), "out": (4096, 4096),
            "lm_head": (4096, 50304)}
QUICK_MATRICES = {"small": (512, 1000), "odd": (1000, 333)}
ROWS = [1, 4, 16]
BAD_ERR = 1e-2  # the GPU tests' tolerance is 4e-3 (tests/kernels/test_bf16_gemv.py); this only marks a config BAD
TABLE_DECL = "H200: dict[tuple[int, int, int], tuple[dict, float, float]] = {"  # as in kernels/bf16_gemv.py


def matrix_section(name: str, K: int, N: int, rows: list[int], calls: int, reps: int, run_kernel: bool) -> list[dict]:
    nbytes = N * K * 2
    n_copies = copies_for(nbytes)
    # distinct weight buffers of equal work; copy 0 is the one the parity checks use
    ws = [(mx.random.normal((N, K), key=mx.random.key(N + i)) * K**-0.5).astype(mx.bfloat16) for i in range(n_copies)]
    mx.eval(ws)
    xall = mx.random.normal((max(rows), K), key=mx.random.key(K + 7)).astype(mx.bfloat16)
    mx.eval(xall)
    with mx.stream(mx.cpu):  # one float32 reference for all rows; row m of it serves every M > m
        ref = xall.astype(mx.float32) @ ws[0].astype(mx.float32).T
        mx.eval(ref)
    res = []
    for M in rows:
        x = xall[:M]
        mx.eval(x)
        row = {"matrix": name, "K": K, "N": N, "rows": M, "bytes": nbytes, "copies": n_copies}

        def timed(tag, call):
            try:
                t = chain_time(call, x, n_copies, calls, reps)
                row[f"{tag}_us"], row[f"{tag}_TBps"] = t * 1e6, nbytes / t / 1e12
            except Exception as e:  # one variant failing is recorded, not fatal
                row[f"{tag}_error"] = _err(e)

        mlx_call = lambda i, xi=x: bf16_gemv.bf16_gemv_ref(xi, ws[i % n_copies])  # noqa: E731
        try:
            row["mlx_err"] = rel_err(mlx_call(0), ref[:M])
        except Exception as e:
            row["mlx_err_error"] = _err(e)
        timed("mlx", mlx_call)
        if run_kernel:
            default = bf16_gemv.default_config(M, N, K)
            row["kernel_cfg"] = default
            if not bf16_gemv.applies(x, ws[0]):
                row["kernel_error"] = "applies() is False for these operands"
            else:
                variants = [("kernel", default)] + [(cfg_tag(c), c) for c in bf16_gemv.SWEEP_CONFIGS]
                for tag, cfg in variants:
                    try:
                        row[f"{tag}_err"] = rel_err(bf16_gemv.bf16_gemv_cuda(x, ws[0], None, **cfg), ref[:M])
                    except Exception as e:
                        row[f"{tag}_err_error"] = _err(e)
                        continue
                    timed(tag, lambda i, xi, cfg=cfg: bf16_gemv.bf16_gemv_cuda(xi, ws[i % n_copies], None, **cfg))
                ok = {k[:-3]: v for k, v in row.items() if k.startswith("cfg:") and k.endswith("_us")
                      and row.get(k[:-3] + "_err", float("nan")) <= BAD_ERR}
                if ok:
                    best = min(ok, key=ok.get)
                    row["best_cfg"] = best
                    row["best_cfg_dict"] = next(c for t, c in variants if t == best)
                    row["speedup_vs_mlx"] = row["mlx_us"] / ok[best] if "mlx_us" in row else None
        res.append(row)
        short = {k: (float(f"{v:.3g}") if isinstance(v, float) else v) for k, v in row.items()
                 if not k.endswith("_TBps")}
        print(f"[bf16-lab] {short}", file=sys.stderr, flush=True)
    return res


def table(out: dict) -> str:
    lines = ["| matrix | M | MLX us (TB/s) | kernel default us (TB/s) | best config us (TB/s) | best / MLX | "
             "worst kernel err | MLX err |", "|---|---|---|---|---|---|---|---|"]

    def cell(r, tag):
        return f"{r[tag + '_us']:.1f} ({r[tag + '_TBps']:.2f})" if tag + "_us" in r else "-"

    for r in out.get("results", []):
        errs = [v for k, v in r.items() if k.endswith("_err") and k.startswith(("cfg:", "kernel"))]
        worst = max(errs, default=None, key=lambda e: float("inf") if e != e else e)
        bad = sum(1 for e in errs if not e <= BAD_ERR)
        err_cell = "-" if worst is None else f"{worst:.1e}" + (f" ({bad} BAD)" if bad else "")
        best = r.get("best_cfg")
        best_cell = f"{best.removeprefix('cfg:')} {cell(r, best)}" if best else "-"
        ratio = f"{r['speedup_vs_mlx']:.2f}x" if r.get("speedup_vs_mlx") else "-"
        mlx_err = f"{r['mlx_err']:.1e}" if "mlx_err" in r else "-"
        lines.append(f"| {r['matrix']} {r['K']}->{r['N']} | {r['rows']} | {cell(r, 'mlx')} | {cell(r, 'kernel')} | "
                     f"{best_cell} | {ratio} | {err_cell} | {mlx_err} |")
    for k, v in out.get("errors", {}).items():
        lines.append(f"error in {k}: {v.strip().splitlines()[-1]}")
    return "\n".join(lines)


def measured_table(out: dict) -> str:
    """kernels/bf16_gemv.py's H200 table from this run, as its literal: (rows bucket, N, K) -> (best config, its
    us, MLX matmul us); only rows that are their own bucket (1, 4, 16)."""
    entries = []
    for r in out.get("results", []):
        cfg = r.get("best_cfg_dict")
        if not cfg or bf16_gemv.bucket(r["rows"]) != r["rows"] or "mlx_us" not in r:
            continue
        us = r[cfg_tag(cfg) + "_us"]
        entries.append(f"    ({r['rows']}, {r['N']}, {r['K']}): (dict(R={cfg['R']}, U={cfg['U']}, S={cfg['S']}, "
                       f"KSPLIT={cfg['KSPLIT']}, WARPS={cfg['WARPS']}), {us:.1f}, {r['mlx_us']:.1f}),")
    if not entries:
        return "H200: no kernel configs timed"
    return TABLE_DECL + "\n" + "\n".join(entries) + "\n}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", help="write all numbers here (after every section)")
    p.add_argument("--quick", action="store_true", help="small shapes: an end-to-end check, any device")
    p.add_argument("--rows", type=int, nargs="+", help="rows of x (default: 1 4 16)")
    p.add_argument("--matrices", nargs="+", help=f"a subset of {', '.join(MATRICES)}")
    p.add_argument("--calls", type=int, default=20, help="dependent calls per timed chain")
    p.add_argument("--reps", type=int, default=7, help="timed chains per variant (the median is kept)")
    p.add_argument("--max-seconds", type=float, default=110.0,
                   help="start no new matrix section after this long; the skipped ones are recorded")
    args = p.parse_args()
    mats = QUICK_MATRICES if args.quick else MATRICES
    if args.matrices:
        unknown = [m for m in args.matrices if m not in mats]
        if unknown:
            p.error(f"unknown matrix {', '.join(unknown)}; choose from {', '.join(mats)}")
        mats = {m: mats[m] for m in args.matrices}
    rows = args.rows or ROWS
    bad_rows = [m for m in rows if not 1 <= m <= bf16_gemv.MAX_ROWS]
    if bad_rows:
        p.error(f"rows {bad_rows}: the kernel takes 1..{bf16_gemv.MAX_ROWS}")
    calls, reps = (4, 2) if args.quick else (args.calls, args.reps)
    run_kernel = cuda_available()
    out = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "command": " ".join(sys.argv),
           "mlx_version": mx.__version__, "device": str(mx.default_device()), "cuda": run_kernel,
           "sweep_configs": bf16_gemv.SWEEP_CONFIGS, "calls": calls, "reps": reps, "results": [], "errors": {}}
    try:
        out["device"] = mx.device_info().get("device_name", out["device"])
    except Exception:
        pass
    if not run_kernel:
        msg = "kernel parts skipped: the bf16 GEMV needs MLX's CUDA backend (this run times MLX's matmul only)"
        out["note"] = msg
        print(f"[bf16-lab] {msg}", file=sys.stderr)
    t0 = time.time()
    for name, (K, N) in mats.items():
        if time.time() - t0 > args.max_seconds:
            out["errors"][name] = f"skipped: past --max-seconds {args.max_seconds:.0f}"
            continue
        t = time.time()
        try:
            out["results"] += matrix_section(name, K, N, rows, calls, reps, run_kernel)
        except Exception:
            out["errors"][name] = traceback.format_exc()
            print(out["errors"][name], file=sys.stderr)
        print(f"[bf16-lab] section {name}: {time.time() - t:.0f}s", file=sys.stderr, flush=True)
        mx.clear_cache()
        if args.json:
            write_json(args.json, out)
    out["seconds"] = time.time() - t0
    out["measured_table"] = measured_table(out)
    if args.json:
        write_json(args.json, out)
    print(table(out))
    print()
    print(out["measured_table"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
