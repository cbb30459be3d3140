"""Drives the quantized GEMV (kernels/quant_gemv.py) on the 7B decode matrices for Nsight Compute: per matrix,
rows and variant (config overrides, e.g. "SD=3" or "XPRE=0,KSPLIT=8,WARPS=8"; "" = the defaults), one compile
call and --calls calls with an eval each, in a fixed order the ncu report follows (matrix, rows, variant, call).
Also prints a rough time per call (eval each: launch and sync included). A probe for the record.

    python3 benchmarks/probes/quant_gemv_ncu_probe.py [--bits 4] [--rows 1 16] [--variants "" XPRE=0]
    ncu --clock-control none -k regex:quant_gemv --metrics gpu__time_duration.sum --csv \
        python3 benchmarks/probes/quant_gemv_ncu_probe.py --calls 2 > ncu.csv
    python3 benchmarks/probes/quant_gemv_ncu_probe.py --table ncu.csv   # median duration per variant, a table
"""
import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import mlx.core as mx  # noqa: E402
from xlstm_mlx.kernels import quant_gemv  # noqa: E402

MATRICES = {"qkvo": (4096, 12288), "ffn_up": (4096, 21888), "ffn_down": (10944, 4096), "out": (4096, 4096),
            "lm_head": (4096, 50304)}


def parse_variant(text: str) -> dict:
    kw = {}
    for item in filter(None, text.split(",")):
        key, _, val = item.partition("=")
        kw[key.strip()] = int(val)
    return kw


def table(csv_path: str, probe_lines: list[str]) -> str:
    """Kernel durations from ncu's CSV (in launch order), grouped by the probe's lines (1 + calls each): the median
    of the timed calls (the compile call dropped)."""
    import csv
    import statistics
    scale = {"nsecond": 1e-3, "ns": 1e-3, "usecond": 1.0, "us": 1.0, "msecond": 1e3, "ms": 1e3}
    durs = [float(r["Metric Value"].replace(",", "")) * scale[r["Metric Unit"]] for r in csv.DictReader(
        line for line in open(csv_path) if line.startswith('"')) if r.get("Metric Name") == "gpu__time_duration.sum"]
    out, i = ["| matrix | rows | variant | config | us (ncu) |", "|---|---|---|---|---|"], 0
    for line in probe_lines:
        n = int(line.split(" calls ")[1].split()[0]) + 1
        cells = line.split(" | ")
        out.append(f"| {cells[1]} | {cells[2]} | {cells[3]} | {cells[4]} | {statistics.median(durs[i + 1:i + n]):.2f} |")
        i += n
    return "\n".join(out)


p = argparse.ArgumentParser()
p.add_argument("--bits", type=int, default=4)
p.add_argument("--rows", type=int, nargs="+", default=[1, 16])
p.add_argument("--variants", nargs="+", default=["", "SD=3"])
p.add_argument("--matrices", nargs="+", default=list(MATRICES))
p.add_argument("--calls", type=int, default=3)
p.add_argument("--table", help="ncu CSV of a run: print its table (the probe's own [probe] lines read from --log)")
p.add_argument("--log", help="with --table: the run's stdout (its [probe] lines)")
a = p.parse_args()
if a.table:
    print(table(a.table, [ln for ln in open(a.log or a.table) if ln.startswith("[probe] |")]))
    sys.exit(0)
for name in a.matrices:
    K, N = MATRICES[name]
    w = (mx.random.normal((N, K), key=mx.random.key(N)) * K**-0.5).astype(mx.bfloat16)
    W, S, B = mx.quantize(w, group_size=64, bits=a.bits)
    del w
    mx.eval(W, S, B)
    for M in a.rows:
        x = mx.random.normal((M, K), key=mx.random.key(M)).astype(mx.bfloat16)
        mx.eval(x)
        for text in a.variants:
            kw = parse_variant(text)
            cfg = {**quant_gemv.default_config(M, N, K * a.bits // 128, a.bits), **kw}
            consts = dict(quant_gemv.kernel_constants(x.dtype, M, a.bits, 64, False, cfg))
            mx.eval(quant_gemv.quantized_gemv_cuda(x, W, S, B, None, 64, a.bits, **kw))  # compile
            t0 = time.perf_counter()
            for _ in range(a.calls):
                mx.eval(quant_gemv.quantized_gemv_cuda(x, W, S, B, None, 64, a.bits, **kw))
            us = 1e6 * (time.perf_counter() - t0) / a.calls
            shown = "R{R}U{U}S{S}K{KSPLIT}W{WARPS}".format(**cfg) + f" SD{consts['SD']} XPRE{int(consts['XPRE'])}"
            print(f"[probe] | {name} {K}->{N} {a.bits}-bit | {M} | {text or 'default'} | {shown} | calls {a.calls} "
                  f"| {us:.1f} us/call (eval each)", flush=True)
