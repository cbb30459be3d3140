"""Drives the decode GEMVs on the 7B decode matrices for Nsight Compute: the quantized GEMV (kernels/quant_gemv.py,
--kernel quant) or the bf16 GEMV (kernels/bf16_gemv.py, --kernel bf16), per matrix, rows and variant (config
overrides, e.g. "SD=3", "XPRE=2", "XAHEAD=1", "KSPLIT=8,WARPS=8,R=1,U=1,S=4"; "" = the defaults; "mlx" = MLX's own
matmul for the same operands: mx.quantized_matmul / x @ w.T, whatever kernels it launches), one compile call and
--calls calls with an eval each. Every call is bracketed by two one-thread marker kernels (xlstm_probe_begin /
xlstm_probe_end), so the table sums exactly the kernels a call launched (MLX's matmul may launch a GEMM and a
split-K reduction) and nothing of the operand set-up between calls. Also prints a rough time per call (eval each:
launch and sync included). A probe for the record.

    python3 benchmarks/probes/gemv_ncu_probe.py --kernel quant --bits 4 --rows 1 16 --variants "" XPRE=2 mlx
    ncu --clock-control none --metrics gpu__time_duration.sum --csv \
        python3 benchmarks/probes/gemv_ncu_probe.py --kernel bf16 --calls 2 --variants "" XAHEAD=1 mlx > ncu.csv
    python3 benchmarks/probes/gemv_ncu_probe.py --table ncu.csv   # median per (matrix, rows, variant), a table
(no -k filter: the markers and MLX's kernels must be profiled too.)
"""
import argparse
import csv
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import mlx.core as mx  # noqa: E402

MATRICES = {"qkvo": (4096, 12288), "ffn_up": (4096, 21888), "ffn_down": (10944, 4096), "out": (4096, 4096),
            "lm_head": (4096, 50304)}
MARKERS = ("xlstm_probe_begin", "xlstm_probe_end")
_marker_kernels = {}


def marker(which: int, dep: mx.array) -> None:
    """Launch a one-thread kernel named MARKERS[which] after dep (evaluated at once)."""
    if which not in _marker_kernels:
        _marker_kernels[which] = mx.fast.cuda_kernel(
            name=MARKERS[which], input_names=["dep"], output_names=["out"],
            source="if (threadIdx.x == 0) out[0] = 0.f;")
    (out,) = _marker_kernels[which](inputs=[dep], grid=(1, 1, 1), threadgroup=(1, 1, 1), output_shapes=[(1,)],
                                    output_dtypes=[mx.float32])
    mx.eval(out)


def parse_variant(text: str) -> dict:
    kw = {}
    for item in filter(None, text.split(",")):
        key, _, val = item.partition("=")
        kw[key.strip()] = int(val)
    return kw


def call_durations(csv_path: str) -> list[float]:
    """us per bracketed call: the summed gpu__time_duration of the kernels between each begin and end marker."""
    scale = {"nsecond": 1e-3, "ns": 1e-3, "usecond": 1.0, "us": 1.0, "msecond": 1e3, "ms": 1e3}
    calls, current = [], None
    for r in csv.DictReader(line for line in open(csv_path) if line.startswith('"')):
        if r.get("Metric Name") != "gpu__time_duration.sum":
            continue
        name = r.get("Kernel Name", "")
        if MARKERS[0] in name:
            current = 0.0
        elif MARKERS[1] in name:
            if current is not None:
                calls.append(current)
            current = None
        elif current is not None:
            current += float(r["Metric Value"].replace(",", "")) * scale[r["Metric Unit"]]
    return calls


def table(csv_path: str, probe_lines: list[str]) -> str:
    """The median of each probe line's timed calls (its compile call dropped), with the effective TB/s."""
    durs = call_durations(csv_path)
    out, i = ["| matrix | rows | variant | config | us (ncu) | TB/s |", "|---|---|---|---|---|---|"], 0
    for line in probe_lines:
        cells = [c.strip() for c in line.split(" | ")]
        n = int(line.split(" calls ")[1].split()[0]) + 1
        us = statistics.median(durs[i + 1:i + n]) if len(durs) >= i + n else float("nan")
        mb = float(line.split(" MB ")[0].split()[-1])
        out.append(f"| {cells[1]} | {cells[2]} | {cells[3]} | {cells[4]} | {us:.2f} | {mb / us:.2f} |")
        i += n
    return "\n".join(out)


def operands(kernel: str, bits: int, K: int, N: int):
    w = (mx.random.normal((N, K), key=mx.random.key(N)) * K**-0.5).astype(mx.bfloat16)
    if kernel == "bf16":
        mx.eval(w)
        return (w,), w.nbytes
    W, S, B = mx.quantize(w, group_size=64, bits=bits)
    del w
    mx.eval(W, S, B)
    return (W, S, B), W.nbytes + S.nbytes + B.nbytes


def one_call(kernel: str, bits: int, x, ops, variant: str):
    if kernel == "bf16":
        from xlstm_mlx.kernels import bf16_gemv
        (w,) = ops
        return x @ w.T if variant == "mlx" else bf16_gemv.bf16_gemv_cuda(x, w, None, **parse_variant(variant))
    from xlstm_mlx.kernels import quant_gemv
    W, S, B = ops
    if variant == "mlx":
        return quant_gemv.quantized_matmul_ref(x, W, S, B, None, 64, bits)
    return quant_gemv.quantized_gemv_cuda(x, W, S, B, None, 64, bits, **parse_variant(variant))


def shown_config(kernel: str, bits: int, M: int, K: int, N: int, variant: str) -> str:
    if variant == "mlx":
        return "MLX"
    kw = parse_variant(variant)
    if kernel == "bf16":
        from xlstm_mlx.kernels import bf16_gemv
        cfg = {**bf16_gemv.default_config(M, N, K), **kw}
        return "R{R}U{U}S{S}K{KSPLIT}W{WARPS}".format(**cfg) + f" XAHEAD{int(bf16_gemv.x_ahead(cfg))}"
    from xlstm_mlx.kernels import quant_gemv
    cfg = {**quant_gemv.default_config(M, N, K * bits // 128, bits), **kw}
    consts = dict(quant_gemv.kernel_constants(mx.bfloat16, M, bits, 64, False, cfg))
    return "R{R}U{U}S{S}K{KSPLIT}W{WARPS}".format(**cfg) + f" SD{consts['SD']} XPRE{int(consts['XPRE'])}"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--kernel", choices=("quant", "bf16"), default="quant")
    p.add_argument("--bits", type=int, default=4, help="quant only")
    p.add_argument("--rows", type=int, nargs="+", default=[1, 16])
    p.add_argument("--variants", nargs="+", default=["", "mlx"])
    p.add_argument("--matrices", nargs="+", default=list(MATRICES))
    p.add_argument("--calls", type=int, default=3)
    p.add_argument("--table", help="ncu CSV of a run: print its table (the probe's [probe] lines read from --log)")
    p.add_argument("--log", help="with --table: the run's stdout (its [probe] lines), if not in the CSV")
    a = p.parse_args()
    if a.table:
        print(table(a.table, [ln for ln in open(a.log or a.table) if ln.startswith("[probe] |")]))
        return
    what = "bf16" if a.kernel == "bf16" else f"{a.bits}-bit"
    for name in a.matrices:
        K, N = MATRICES[name]
        ops, nbytes = operands(a.kernel, a.bits, K, N)
        for M in a.rows:
            x = mx.random.normal((M, K), key=mx.random.key(M)).astype(mx.bfloat16)
            mx.eval(x)
            for variant in a.variants:
                spent = 0.0
                for call in range(a.calls + 1):      # call 0 compiles
                    marker(0, x)
                    t0 = time.perf_counter()
                    y = one_call(a.kernel, a.bits, x, ops, variant)
                    mx.eval(y)
                    spent += (time.perf_counter() - t0) if call else 0.0
                    marker(1, y)
                print(f"[probe] | {name} {K}->{N} {what} | {M} | {variant or 'default'} | "
                      f"{shown_config(a.kernel, a.bits, M, K, N, variant)} | calls {a.calls} | {nbytes / 1e6:.1f} MB "
                      f"| {1e6 * spent / a.calls:.1f} us/call (eval each)", flush=True)


if __name__ == "__main__":
    main()
