"""Quantized-matmul lab: MLX's affine 4-/8-bit matmul against our CUDA GEMV (kernels/quant_gemv.py), in ONE run.

    python3 benchmarks/gpu_quant_lab.py --json $OUT/gpu_quant_lab.json        # the 7B decode matrices (H200)
    python3 benchmarks/gpu_quant_lab.py --quick                               # small shapes, any device (CPU: kernel skipped)

For each 7B decode matrix (K -> N: fused q|k|v|o 4096->12288, FFN gate|up 4096->21888, FFN down 10944->4096,
out_proj 4096->4096, lm_head 4096->50304), bits 4 and 8 (group 64, the `convert -q` layout, bf16 scales), rows
M in 1, 2, 4, 8, 16, 32, 64, 256, 2048:
  (a) parity: the kernel (M <= MAX_ROWS) and MLX's quantized matmul against the reference evaluated on the CPU
      stream in float32 (relative Frobenius error; the bf16 output rounding alone puts it near 2e-3);
  (b) time per call, the median over --reps chains of --calls independent calls (a third of them, 3 chains,
      past 64 rows) with the weights rotated over 3 copies (so no call finds its weight in the 60 MB L2),
      mx.synchronize() around each chain, for
        qmm      MLX's mx.quantized_matmul (what nn.QuantizedLinear runs),
        kernel   our CUDA GEMV, default config and a few others at M = 1 and 8,
        deq_mm   mx.dequantize then the bf16 x @ w.T,
        bf16     MLX's bf16 matmul on the dequantized weight alone (the bf16 baseline),
      and effective TB/s = weight bytes / time (packed weight + scales + biases for the quantized variants,
      the bf16 weight for bf16).
Every (matrix, bits) section is in try/except: one failure is recorded and the rest still run. A short table is
printed last (matrix, bits, M, us and TB/s per variant, the best quantized variant); all numbers go to --json
(written after every section, atomically).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

import mlx.core as mx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from xlstm_mlx.kernels import quant_gemv  # noqa: E402
from xlstm_mlx.kernels.cuda_common import cuda_available  # noqa: E402

MATRICES = {"qkvo": (4096, 12288), "ffn_up": (4096, 21888), "ffn_down": (10944, 4096), "out": (4096, 4096),
            "lm_head": (4096, 50304)}
QUICK_MATRICES = {"small": (512, 1000), "odd": (1024, 333)}
ROWS = [1, 2, 4, 8, 16, 32, 64, 256, 2048]
QUICK_ROWS = [1, 4, 16]
# other kernel configs timed at M = 1 and 8 (each is one more JIT compile, ~1 s)
CONFIGS = [dict(R=4, KSPLIT=1, U=2), dict(R=4, KSPLIT=2, U=2), dict(R=4, KSPLIT=1, U=1), dict(R=2, KSPLIT=1, U=4),
           dict(R=2, KSPLIT=1, U=2), dict(R=1, KSPLIT=1, U=8)]
GROUP = 64
COPIES = 3


def rel_err(out, ref) -> float:
    o, r = out.astype(mx.float32), ref.astype(mx.float32)
    if not bool(mx.all(mx.isfinite(o)).item()):
        return float("nan")
    return float((mx.linalg.norm((o - r).reshape(-1)) / mx.maximum(mx.linalg.norm(r.reshape(-1)), 1e-30)).item())


def chain_time(call, calls: int, reps: int) -> float:
    """Median seconds per call of `call(i)` (i picks the weight copy): chains of `calls` independent calls."""
    mx.eval([call(i) for i in range(COPIES)])  # warm-up: compile, allocate
    times = []
    for _ in range(reps):
        mx.synchronize()
        t = time.perf_counter()
        mx.eval([call(i) for i in range(calls)])
        mx.synchronize()
        times.append((time.perf_counter() - t) / calls)
    return statistics.median(times)


def _err(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"[:400]


def matrix_section(name: str, K: int, N: int, bits: int, rows: list[int], calls: int, reps: int,
                   run_kernel: bool) -> list[dict]:
    seed = 1000 * bits + N
    ws = [(mx.random.normal((N, K), key=mx.random.key(seed + i)) * K**-0.5).astype(mx.bfloat16)
          for i in range(COPIES)]
    qs = [mx.quantize(w, group_size=GROUP, bits=bits) for w in ws]
    mx.eval(qs)
    deq = [mx.dequantize(*q, group_size=GROUP, bits=bits) for q in qs]  # the bf16 baseline's weights
    mx.eval(deq)
    del ws
    qbytes = sum(a.nbytes for a in qs[0])
    bf16_bytes = deq[0].nbytes
    kmax = max(m for m in rows if m <= quant_gemv.MAX_ROWS) if any(m <= quant_gemv.MAX_ROWS for m in rows) else 0
    xall = mx.random.normal((max(rows), K), key=mx.random.key(seed + 99)).astype(mx.bfloat16)
    mx.eval(xall)
    ref_k = None
    if kmax:  # one float32 CPU reference for the kernel's rows; row m of it serves every M > m
        with mx.stream(mx.cpu):
            W, S, B = qs[0]
            ref_k = quant_gemv.quantized_matmul_ref(xall[:kmax].astype(mx.float32), W, S.astype(mx.float32),
                                                    B.astype(mx.float32), None, GROUP, bits)
            mx.eval(ref_k)
    res = []
    for M in rows:
        x = xall[:M]
        mx.eval(x)
        row = {"matrix": name, "K": K, "N": N, "bits": bits, "group_size": GROUP, "rows": M,
               "quant_bytes": qbytes, "bf16_bytes": bf16_bytes}

        # past 64 rows a call is compute-bound and long (>= ~100 us): fewer calls keep the run short
        n_calls, n_reps = (calls, reps) if M <= 64 else (max(2 * COPIES, calls // 3), min(reps, 3))

        def timed(tag, call, nbytes):
            try:
                t = chain_time(call, n_calls, n_reps)
                row[f"{tag}_us"], row[f"{tag}_TBps"] = t * 1e6, nbytes / t / 1e12
            except Exception as e:  # one variant failing is recorded, not fatal
                row[f"{tag}_error"] = _err(e)

        qmm = lambda i: quant_gemv.quantized_matmul_ref(x, *qs[i % COPIES], None, GROUP, bits)  # noqa: E731
        if ref_k is not None and M <= kmax:
            try:
                row["qmm_err"] = rel_err(qmm(0), ref_k[:M])
            except Exception as e:
                row["qmm_err_error"] = _err(e)
        timed("qmm", qmm, qbytes)
        if M <= quant_gemv.MAX_ROWS and run_kernel:
            W, S, B = qs[0]
            row["kernel_cfg"] = quant_gemv.default_config(M, N, K * bits // 128, bits)
            if not quant_gemv.applies(x, W, S, GROUP, bits, "affine", biases=B):
                row["kernel_error"] = "applies() is False for these operands"
            else:
                try:
                    row["kernel_err"] = rel_err(quant_gemv.quantized_gemv_cuda(x, W, S, B, None, GROUP, bits),
                                                ref_k[:M])
                except Exception as e:
                    row["kernel_err_error"] = _err(e)
                timed("kernel", lambda i: quant_gemv.quantized_gemv_cuda(x, *qs[i % COPIES], None, GROUP, bits),
                      qbytes)
                if M in (1, 8):
                    for cfg in CONFIGS:
                        tag = "kernel_R{R}_K{KSPLIT}_U{U}".format(**cfg)
                        try:
                            row[f"{tag}_err"] = rel_err(quant_gemv.quantized_gemv_cuda(
                                x, W, S, B, None, GROUP, bits, **cfg), ref_k[:M])
                        except Exception as e:
                            row[f"{tag}_err_error"] = _err(e)
                            continue
                        timed(tag, lambda i, cfg=cfg: quant_gemv.quantized_gemv_cuda(
                            x, *qs[i % COPIES], None, GROUP, bits, **cfg), qbytes)
        deq_mm = lambda i: x @ mx.dequantize(*qs[i % COPIES], group_size=GROUP, bits=bits).T  # noqa: E731
        try:
            row["deq_mm_vs_qmm_err"] = rel_err(deq_mm(0), qmm(0))
        except Exception as e:
            row["deq_mm_vs_qmm_error"] = _err(e)
        timed("deq_mm", deq_mm, qbytes)
        timed("bf16", lambda i: x @ deq[i % COPIES].T, bf16_bytes)
        quant = {k[:-3]: v for k, v in row.items() if k.endswith("_us") and k != "bf16_us"}
        if quant:
            row["best"] = min(quant, key=quant.get)
        res.append(row)
        print(f"[quant-lab] {row}", file=sys.stderr, flush=True)
    return res


def table(out: dict) -> str:
    lines = ["| matrix | bits | M | qmm us (TB/s) | kernel us (TB/s) | best kernel config us (TB/s) | "
             "deq+mm us (TB/s) | bf16 us (TB/s) | kernel err | best |", "|---|---|---|---|---|---|---|---|---|---|"]

    def cell(r, tag):
        return f"{r[tag + '_us']:.1f} ({r[tag + '_TBps']:.2f})" if tag + "_us" in r else "-"

    for r in out.get("results", []):
        cfgs = {k[:-3]: v for k, v in r.items() if k.startswith("kernel_R") and k.endswith("_us")}
        best_cfg = min(cfgs, key=cfgs.get) if cfgs else None
        cfg_cell = f"{best_cfg.removeprefix('kernel_')} {cell(r, best_cfg)}" if best_cfg else "-"
        err = r.get("kernel_err")
        err_cell = "-" if err is None else f"{err:.1e}"
        lines.append(f"| {r['matrix']} {r['K']}->{r['N']} | {r['bits']} | {r['rows']} | {cell(r, 'qmm')} | "
                     f"{cell(r, 'kernel')} | {cfg_cell} | {cell(r, 'deq_mm')} | {cell(r, 'bf16')} | {err_cell} | "
                     f"{r.get('best', '-')} |")
    for k, v in out.get("errors", {}).items():
        lines.append(f"error in {k}: {v.strip().splitlines()[-1]}")
    return "\n".join(lines)


def write_json(path: str, out: dict) -> None:
    p = Path(path)
    fd, tmp = tempfile.mkstemp(dir=p.parent if str(p.parent) else ".", prefix=p.name + ".", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(out, indent=1, default=str) + "\n")
    os.replace(tmp, p)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", help="write all numbers here (after every section)")
    p.add_argument("--quick", action="store_true", help="small shapes and few rows: an end-to-end check, any device")
    p.add_argument("--bits", type=int, nargs="+", default=[4, 8], choices=[4, 8])
    p.add_argument("--rows", type=int, nargs="+", help="rows of x (default: 1 2 4 8 16 32 64 256 2048)")
    p.add_argument("--matrices", nargs="+", help=f"a subset of {', '.join(MATRICES)}")
    p.add_argument("--calls", type=int, default=20, help="independent calls per timed chain")
    p.add_argument("--reps", type=int, default=5, help="timed chains per variant (the median is kept)")
    p.add_argument("--max-seconds", type=float, default=240.0,
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
    run_kernel = cuda_available()
    out = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "command": " ".join(sys.argv),
           "mlx_version": mx.__version__, "device": str(mx.default_device()), "cuda": run_kernel,
           "kernel_label": quant_gemv.label(), "calls": calls, "reps": reps, "results": [], "errors": {}}
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
                out["results"] += matrix_section(name, K, N, bits, rows, calls, reps, run_kernel)
            except Exception:
                out["errors"][f"{name}/{bits}bit"] = traceback.format_exc()
                print(out["errors"][f"{name}/{bits}bit"], file=sys.stderr)
            print(f"[quant-lab] section {name} {bits}-bit: {time.time() - t:.0f}s", file=sys.stderr, flush=True)
            mx.clear_cache()
            if args.json:
                write_json(args.json, out)
    out["seconds"] = time.time() - t0
    if args.json:
        write_json(args.json, out)
    print(table(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
