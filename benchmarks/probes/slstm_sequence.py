"""sLSTM sequence form: fused CUDA kernel vs the loop of compiled steps (prefill of one sLSTM layer).

    python benchmarks/probes/slstm_sequence.py          (on a machine with MLX's CUDA backend; MLX_ENABLE_TF32=0)

Recorded on an H100 (MLX 0.32.4 CUDA), float32, NH=4, DH=256 (E=1024), T=2048, 2026-11-23:
    B=1  fused 72.1 ms (28.4k tok/s)   loop 188.7 ms (10.9k tok/s)
    B=8  fused 77.1 ms (212k tok/s)    loop 189.3 ms (86.6k tok/s)
The fused kernel runs one thread block per (row, head) through all T steps; each step reads the head's
R (4*DH*DH floats) from L2, which bounds it at ~35 us/step for DH=256 with one SM per head.
"""

import time

import mlx.core as mx

from xlstm_mlx.kernels.slstm import _sequence, slstm_step
from xlstm_mlx.kernels.slstm_cuda import cuda_available as available, slstm_sequence_cuda


def loop(wx, R, b):
    return _sequence(slstm_step, wx, R, b, None, None)


def main():
    if not available():
        raise SystemExit("needs MLX's CUDA backend (the fused kernel is CUDA only)")
    T, NH, DH = 2048, 4, 256
    for B in (1, 8):
        wx = mx.random.normal((B, T, NH, 4 * DH))
        R = mx.random.normal((NH, DH, 4 * DH)) * 0.05
        b = mx.random.normal((NH, 4 * DH))
        mx.eval(wx, R, b)
        for name, fn in (("fused", slstm_sequence_cuda), ("loop", loop)):
            mx.eval(*fn(wx, R, b))  # warm-up (JIT compile)
            t0 = time.perf_counter()
            y, s = fn(wx, R, b)
            mx.eval(y, s)
            dt = time.perf_counter() - t0
            print(f"B={B} T={T} NH={NH} DH={DH} {name}: {dt * 1000:.1f} ms ({B * T / dt:.0f} tok/s)")


if __name__ == "__main__":
    main()
