"""Drives the quantized GEMV (kernels/quant_gemv.py) on the 7B decode matrices for Nsight Compute: per matrix,
rows and scale prefetch depth (SD), a few calls with an eval each, in a fixed order the ncu report follows. Also
prints a rough time per call (eval each: launch and sync included). A probe for the record.

    python3 benchmarks/probes/quant_gemv_ncu_probe.py [--bits 4] [--rows 1 16] [--depths 1 0]
    ncu --clock-control none -k regex:quant_gemv --section SpeedOfLight --section WarpStateStats \
        --section Occupancy python3 benchmarks/probes/quant_gemv_ncu_probe.py --calls 1
(depth 0 = quant_gemv.scale_depth's rule; the kernels' order: matrix, rows, depth, call.)
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

p = argparse.ArgumentParser()
p.add_argument("--bits", type=int, default=4)
p.add_argument("--rows", type=int, nargs="+", default=[1, 16])
p.add_argument("--depths", type=int, nargs="+", default=[1, 0])
p.add_argument("--matrices", nargs="+", default=list(MATRICES))
p.add_argument("--calls", type=int, default=3)
a = p.parse_args()
for name in a.matrices:
    K, N = MATRICES[name]
    w = (mx.random.normal((N, K), key=mx.random.key(N)) * K**-0.5).astype(mx.bfloat16)
    W, S, B = mx.quantize(w, group_size=64, bits=a.bits)
    del w
    mx.eval(W, S, B)
    for M in a.rows:
        x = mx.random.normal((M, K), key=mx.random.key(M)).astype(mx.bfloat16)
        mx.eval(x)
        for sd in a.depths:
            kw = {"SD": sd} if sd else {}
            cfg = quant_gemv.default_config(M, N, K * a.bits // 128, a.bits)
            mx.eval(quant_gemv.quantized_gemv_cuda(x, W, S, B, None, 64, a.bits, **kw))  # compile
            t0 = time.perf_counter()
            for _ in range(a.calls):
                mx.eval(quant_gemv.quantized_gemv_cuda(x, W, S, B, None, 64, a.bits, **kw))
            us = 1e6 * (time.perf_counter() - t0) / a.calls
            print(f"[probe] {name} {K}->{N} {a.bits}-bit rows {M} cfg {cfg} SD "
                  f"{quant_gemv.scale_depth({**cfg, **kw}, a.bits, 64)}: {us:.1f} us/call (eval each)", flush=True)
