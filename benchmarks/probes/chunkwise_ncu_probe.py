"""Drives the chunkwise prefill kernels (and the head norm) at the 7B head shape, B=1, the model's rows layout,
for Nsight Compute, and times them roughly (eval each call: launch and sync included). A probe for the record.

    [VTA=64|128] [VTB=64|128] [PREFETCH_V=1] python3 benchmarks/probes/chunkwise_ncu_probe.py [T]
    ncu --clock-control none --kernel-name regex:"chunk_(recurrent|parallel)" --launch-skip 4 --launch-count 2 \
        --section SpeedOfLight --section LaunchStats --section Occupancy python3 benchmarks/probes/chunkwise_ncu_probe.py 2048
    ncu --set full -o rec --kernel-name regex:chunk_recurrent --launch-skip 3 --launch-count 1 python3 ...; \
        ncu -i rec.ncu-rep --page source --csv      # stall samples per SASS instruction
"""
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import mlx.core as mx  # noqa: E402
from xlstm_mlx.kernels import mlstm_chunkwise_cuda as cw  # noqa: E402
from xlstm_mlx.kernels import headnorm  # noqa: E402

cw.VT_A = int(os.environ['VTA']) if 'VTA' in os.environ else cw.VT_A
cw.VT_B = int(os.environ.get('VTB', cw.VT_B))
cw.PREFETCH_V = os.environ.get('PREFETCH_V', '0') == '1'
B, T, NH, DQK, DV = 1, int(sys.argv[1]) if len(sys.argv) > 1 else 2048, 8, 256, 512
row = 2 * NH * DQK + 2 * NH * DV
key = mx.random.key(0)
qkvo = (mx.random.normal((B, T, row), key=key) * 0.5).astype(mx.bfloat16)
ig = mx.random.normal((B, T, NH)) * 2
fg = mx.random.normal((B, T, NH)) * 2 + 3
mx.eval(qkvo, ig, fg)
kw = dict(dqk=DQK, dv=DV, offsets=(0, NH * DQK, 2 * NH * DQK))
assert cw.applies_rows(qkvo, qkvo, qkvo, ig, fg, None, **kw)
for _ in range(3):
    out = cw.mlstm_chunkwise_rows(qkvo, qkvo, qkvo, ig, fg, **kw)
    mx.eval(out)
t0 = time.perf_counter(); n = 20
for _ in range(n):
    out = cw.mlstm_chunkwise_rows(qkvo, qkvo, qkvo, ig + 0, fg, **kw)
    mx.eval(out)
print(f"[probe] VT_A={cw.VT_A} VT_B={cw.VT_B} T={T} chunkwise rows {1e6 * (time.perf_counter() - t0) / n:.1f} us/call (gates + A + B, eval each)")
h = mx.random.normal((B * T, NH, DV)).astype(mx.bfloat16)
q2 = qkvo.reshape(B * T, row)
w = mx.ones((NH * DV,), dtype=mx.bfloat16)
for _ in range(3):
    o = headnorm.headnorm_gate_cuda(h, q2, 2 * NH * DQK + NH * DV, w, None, 1e-6)
    mx.eval(o)
t0 = time.perf_counter()
for _ in range(n):
    o = headnorm.headnorm_gate_cuda(h, q2, 2 * NH * DQK + NH * DV, w, None, 1e-6)
    mx.eval(o)
print(f"[probe] headnorm {B*T}x{NH}x{DV} {1e6 * (time.perf_counter() - t0) / n:.1f} us/call (eval each)")
