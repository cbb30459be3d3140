"""Quantized-matmul lab: our CUDA GEMV (kernels/quant_gemv.py), every config it may pick, against MLX, in ONE run.

    python3 benchmarks/gpu_quant_lab.py --json $OUT/gpu_quant_lab.json        # the 7B decode matrices (H200, < 4 min)
    python3 benchmarks/gpu_quant_lab.py --quick                               # small shapes, any device (CPU: kernel skipped)
    python3 benchmarks/gpu_quant_lab.py --bits 8 --sweep winners --calls 10 --reps 3   # a shorter sweep

For each 7B decode matrix (K -> N: fused q|k|v|o 4096->12288, FFN gate|up 4096->21888, FFN down 10944->4096,
out_proj 4096->4096, lm_head 4096->50304), bits 4 and 8 (group 64, the `convert -q` layout, bf16 scales), rows
M in 1, 2, 4, 8, 16 (--rows):
  (a) parity: every kernel config (quant_gemv.SWEEP_CONFIGS and the default) and MLX's quantized matmul against
      the reference evaluated on the CPU stream in float32 (relative Frobenius error; the bf16 output rounding
      alone puts it near 2e-3; a config above 1e-2 is marked BAD and never "best");
  (b) time per call, the median over --reps chains of --calls DEPENDENT calls (each one's x computed from the previous output: lab_timing.chain_time) with the weights rotated over
      enough copies (>= 3, >= 128 MB in all) that no call finds its weight in the 60 MB L2, mx.synchronize()
      around each chain (built lazily before the clock starts: Python's dispatch is not timed), for
        qmm      MLX's mx.quantized_matmul (what nn.QuantizedLinear runs),
        kernel   our CUDA GEMV with its default config, and each SWEEP config (cfg:R1U2S4K1W4 ...),
        deq_mm   mx.dequantize then the bf16 x @ w.T (only for rows beyond the kernel's MAX_ROWS),
        bf16     MLX's bf16 matmul on the dequantized weight (the bf16 baseline of the same shape),
      and effective TB/s = weight bytes / time (packed weight + scales + biases for the quantized variants,
      the bf16 weight for bf16).
Every (matrix, bits) section is in try/except: one failure is recorded and the rest still run. A short table is
printed last (matrix, bits, M: qmm, default kernel, best config with its TB/s, bf16), then the H200 table
for kernels/quant_gemv_lab.py built from the best configs; all numbers go to --json (written after every section,
atomically).
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

from xlstm_mlx.kernels import quant_gemv, quant_gemv_lab  # noqa: E402
from xlstm_mlx.kernels.cuda_common import cuda_available  # noqa: E402
from lab_timing import cfg_tag, chain_time, copies_for, rel_err, write_json, _err  # noqa: E402

MATRICES = {"qkvo": (4096, 12288), "ffn_up": (4096, 21888), "ffn_down": (10944, 4096), "out": (4096, 4096),
            "lm_head": (4096, 50304)}
QUICK_MATRICES = {"small": (512, 1000), "odd": (1024, 333)}
ROWS = [1, 2, 4, 8, 16]  # the table of kernels/quant_gemv_lab.py keeps 1, 4 (for 2..8) and 16 (for 9..16)
QUICK_ROWS = [1, 4, 16]
GROUP = 64
BAD_ERR = 1e-2


def winning_configs() -> list[dict]:
    """The configs that won some shape in kernels/quant_gemv_lab.py's table, in sweep order: the short sweep
    (`--sweep winners`) for a run that must fit a device budget (each config is an NVRTC compile and a timing)."""
    won = [cfg for cfg, _, _ in quant_gemv_lab.H200.values()]
    return [c for c in quant_gemv.SWEEP_CONFIGS if c in won]


def with_depths(variants: list[tuple[str, dict]], depths: list[int]) -> list[tuple[str, dict]]:
    """Each (tag, config) once per scale prefetch depth (quant_gemv.scale_depth): 0 keeps the config's own rule,
    n > 0 sets SD = n (tag suffix SDn)."""
    return [(tag, cfg) if sd == 0 else (f"{tag}SD{sd}", {**cfg, "SD": sd}) for tag, cfg in variants for sd in depths]


def matrix_section(name: str, K: int, N: int, bits: int, rows: list[int], calls: int, reps: int,
                   run_kernel: bool, sweep: list[dict] | None = None, depths: list[int] = (0,)) -> list[dict]:
    seed = 1000 * bits + N
    w0 = (mx.random.normal((N, K), key=mx.random.key(seed)) * K**-0.5).astype(mx.bfloat16)
    q0 = mx.quantize(w0, group_size=GROUP, bits=bits)
    mx.eval(q0)
    qbytes = sum(a.nbytes for a in q0)
    bf16_bytes = N * K * 2
    nq, nb = copies_for(qbytes), copies_for(bf16_bytes)
    # the copies: distinct buffers of equal work (codes xor-ed with a copy number, scales and biases shifted);
    # copy 0 is the one the parity checks use
    qs = [q0] + [(mx.bitwise_xor(q0[0], mx.array(i * 0x01010101, dtype=mx.uint32)), q0[1] * (1 + 2**-7 * i),
                  q0[2] + 0.001 * i) for i in range(1, nq)]
    mx.eval(qs)
    deq0 = mx.dequantize(*q0, group_size=GROUP, bits=bits)
    deq = [deq0] + [deq0 + 0.001 * i for i in range(1, nb)]  # the bf16 baseline's weights
    mx.eval(deq)
    del w0
    kmax = max([m for m in rows if m <= quant_gemv.MAX_ROWS], default=0)
    xall = mx.random.normal((max(rows), K), key=mx.random.key(seed + 99)).astype(mx.bfloat16)
    mx.eval(xall)
    ref_k = None
    if kmax:  # one float32 CPU reference for the kernel's rows; row m of it serves every M > m
        with mx.stream(mx.cpu):
            W, S, B = q0
            ref_k = quant_gemv.quantized_matmul_ref(xall[:kmax].astype(mx.float32), W, S.astype(mx.float32),
                                                    B.astype(mx.float32), None, GROUP, bits)
            mx.eval(ref_k)
    res = []
    for M in rows:
        x = xall[:M]
        mx.eval(x)
        row = {"matrix": name, "K": K, "N": N, "bits": bits, "group_size": GROUP, "rows": M,
               "quant_bytes": qbytes, "bf16_bytes": bf16_bytes, "copies": [nq, nb]}
        n_calls, n_reps = (calls, reps) if M <= 64 else (max(6, calls // 3), min(reps, 3))

        def timed(tag, call, nbytes, copies):
            try:
                t = chain_time(call, x, copies, n_calls, n_reps)
                row[f"{tag}_us"], row[f"{tag}_TBps"] = t * 1e6, nbytes / t / 1e12
            except Exception as e:  # one variant failing is recorded, not fatal
                row[f"{tag}_error"] = _err(e)

        qmm = lambda i, xi=x: quant_gemv.quantized_matmul_ref(xi, *qs[i % nq], None, GROUP, bits)  # noqa: E731
        if ref_k is not None and M <= kmax:
            try:
                row["qmm_err"] = rel_err(qmm(0), ref_k[:M])
            except Exception as e:
                row["qmm_err_error"] = _err(e)
        timed("qmm", qmm, qbytes, nq)
        if M <= quant_gemv.MAX_ROWS and run_kernel:
            W, S, B = q0
            default = quant_gemv.default_config(M, N, K * bits // 128, bits)
            row["kernel_cfg"] = default
            if not quant_gemv.applies(x, W, S, GROUP, bits, "affine", biases=B):
                row["kernel_error"] = "applies() is False for these operands"
            else:
                variants = with_depths([("kernel", default)] + [(cfg_tag(c), c) for c in (
                    quant_gemv.SWEEP_CONFIGS if sweep is None else sweep)], list(depths))
                for tag, cfg in variants:
                    try:
                        err = rel_err(quant_gemv.quantized_gemv_cuda(x, W, S, B, None, GROUP, bits, **cfg), ref_k[:M])
                        row[f"{tag}_err"] = err
                    except Exception as e:
                        row[f"{tag}_err_error"] = _err(e)
                        continue
                    timed(tag, lambda i, xi, cfg=cfg: quant_gemv.quantized_gemv_cuda(
                        xi, *qs[i % nq], None, GROUP, bits, **cfg), qbytes, nq)
                ok = {k[:-3]: v for k, v in row.items() if k.startswith("cfg:") and k.endswith("_us")
                      and row.get(k[:-3] + "_err", float("nan")) <= BAD_ERR}
                if ok:
                    best = min(ok, key=ok.get)
                    row["best_cfg"] = best
                    row["best_cfg_dict"] = next(c for t, c in variants if t == best)
        if M > quant_gemv.MAX_ROWS or not run_kernel:
            deq_mm = lambda i, xi: xi @ mx.dequantize(*qs[i % nq], group_size=GROUP, bits=bits).T  # noqa: E731
            timed("deq_mm", deq_mm, qbytes, nq)
        timed("bf16", lambda i, xi: xi @ deq[i % nb].T, bf16_bytes, nb)
        quant = {k[:-3]: v for k, v in row.items() if k.endswith("_us") and k != "bf16_us"
                 and not (k.startswith(("cfg:", "kernel")) and not row.get(k[:-3] + "_err", 0.0) <= BAD_ERR)}
        if quant:
            row["best"] = min(quant, key=quant.get)
        res.append(row)
        short = {k: (round(v, 2) if isinstance(v, float) else v) for k, v in row.items() if not k.endswith("_TBps")}
        print(f"[quant-lab] {short}", file=sys.stderr, flush=True)
    return res


def table(out: dict) -> str:
    lines = ["| matrix | bits | M | qmm us (TB/s) | kernel default us (TB/s) | default, SD=1 | best config us (TB/s) | "
             "bf16 us (TB/s) | worst kernel err | best |", "|---|---|---|---|---|---|---|---|---|---|"]

    def cell(r, tag):
        return f"{r[tag + '_us']:.1f} ({r[tag + '_TBps']:.2f})" if tag + "_us" in r else "-"

    for r in out.get("results", []):
        errs = [v for k, v in r.items() if k.endswith("_err") and (k.startswith(("cfg:", "kernel")))]
        worst = max(errs, default=None, key=lambda e: float("inf") if e != e else e)
        bad = sum(1 for e in errs if not e <= BAD_ERR)
        err_cell = "-" if worst is None else f"{worst:.1e}" + (f" ({bad} BAD)" if bad else "")
        best = r.get("best_cfg")
        best_cell = f"{best.removeprefix('cfg:')} {cell(r, best)}" if best else "-"
        lines.append(f"| {r['matrix']} {r['K']}->{r['N']} | {r['bits']} | {r['rows']} | {cell(r, 'qmm')} | "
                     f"{cell(r, 'kernel')} | {cell(r, 'kernelSD1')} | {best_cell} | {cell(r, 'bf16')} | {err_cell} | "
                     f"{r.get('best', '-')} |")
    for k, v in out.get("errors", {}).items():
        lines.append(f"error in {k}: {v.strip().splitlines()[-1]}")
    return "\n".join(lines)


def measured_table(out: dict) -> str:
    """The H200 table of kernels/quant_gemv_lab.py from this run: (bits, rows, N, K) -> (best config, its us,
    MLX qmm us)."""
    entries = []
    for r in out.get("results", []):
        cfg = r.get("best_cfg_dict")
        if not cfg or r["rows"] not in (1, 4, 16):
            continue
        us = r.get(f"{r['best_cfg']}_us", r.get("kernel_us"))
        sd = f", SD={cfg['SD']}" if "SD" in cfg else ""
        entries.append(f"    ({r['bits']}, {r['rows']}, {r['N']}, {r['K']}): (dict(R={cfg['R']}, U={cfg['U']}, "
                       f"S={cfg['S']}, KSPLIT={cfg['KSPLIT']}, WARPS={cfg['WARPS']}{sd}), {us:.1f}, "
                       f"{r['qmm_us']:.1f}),")
    return "H200 = {\n" + "\n".join(entries) + "\n}" if entries else "H200: no kernel configs timed"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", help="write all numbers here (after every section)")
    p.add_argument("--quick", action="store_true", help="small shapes and few rows: an end-to-end check, any device")
    p.add_argument("--bits", type=int, nargs="+", default=[4, 8], choices=[4, 8])
    p.add_argument("--rows", type=int, nargs="+", help="rows of x (default: 1 2 4 8 16)")
    p.add_argument("--matrices", nargs="+", help=f"a subset of {', '.join(MATRICES)}")
    p.add_argument("--sweep", choices=["all", "winners", "default"], default="all",
                   help="all: every quant_gemv.SWEEP_CONFIGS config; winners: only those that won a shape in "
                        "kernels/quant_gemv_lab.py's table (fewer compiles: a run that must fit a device budget); "
                        "default: only the config default_config picks")
    p.add_argument("--scale-depth", type=int, nargs="+", default=[0], choices=[0, 1, 2, 3, 4],
                   help="time each config at these scale prefetch depths (SD: steps ahead a warp loads its scales "
                        "and biases); 0 = quant_gemv.scale_depth's rule (the default); e.g. 0 1 for an A/B "
                        "against loading them one step ahead")
    p.add_argument("--calls", type=int, default=20, help="dependent calls per timed chain")
    p.add_argument("--reps", type=int, default=5, help="timed chains per variant (the median is kept)")
    p.add_argument("--max-seconds", type=float, default=225.0,
                   help="start no new (matrix, bits) section after this long; the skipped ones are recorded")
    args = p.parse_args()
    mats = QUICK_MATRICES if args.quick else MATRICES
    if args.matrices:
        unknown = [m for m in args.matrices if m not in mats]
        if unknown:
            p.error(f"unknown matrix {', '.join(unknown)}; choose from {', '.join(mats)}")
        mats = {m: mats[m] for m in args.matrices}
    rows = args.rows or (QUICK_ROWS if args.quick else ROWS)
    calls, reps = (4, 2) if args.quick else (args.calls, args.reps)
    sweep = {"winners": winning_configs, "default": list, "all": lambda: list(quant_gemv.SWEEP_CONFIGS)}[args.sweep]()
    run_kernel = cuda_available()
    out = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "command": " ".join(sys.argv),
           "mlx_version": mx.__version__, "device": str(mx.default_device()), "cuda": run_kernel,
           "kernel_label": quant_gemv.label(), "sweep_configs": sweep, "sweep": args.sweep, "calls": calls,
           "reps": reps, "scale_depths": args.scale_depth, "results": [], "errors": {}}
    try:
        out["device"] = mx.device_info().get("device_name", out["device"])
    except Exception:
        pass
    if not run_kernel:
        msg = "kernel parts skipped: the CUDA GEMV needs MLX's CUDA backend (this run times MLX's paths only)"
        out["note"] = msg
        print(f"[quant-lab] {msg}", file=sys.stderr)
    t0 = time.time()
    for name, (K, N) in mats.items():
        for bits in args.bits:
            if time.time() - t0 > args.max_seconds:
                out["errors"][f"{name}/{bits}bit"] = f"skipped: past --max-seconds {args.max_seconds:.0f}"
                continue
            t = time.time()
            try:
                out["results"] += matrix_section(name, K, N, bits, rows, calls, reps, run_kernel, sweep,
                                                 args.scale_depth)
            except Exception:
                out["errors"][f"{name}/{bits}bit"] = traceback.format_exc()
                print(out["errors"][f"{name}/{bits}bit"], file=sys.stderr)
            print(f"[quant-lab] section {name} {bits}-bit: {time.time() - t:.0f}s", file=sys.stderr, flush=True)
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
