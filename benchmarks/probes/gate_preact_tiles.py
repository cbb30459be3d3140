"""The fused gate projection (kernels/gate_preact.py) at the 7B prefill shape, each layout (PARTS, RPT) and tile
width, three launches each (1 x 2,048 and 8 x 2,048 rows of 4,096 columns, 16 outputs). Run under Nsight Compute,
which times each launch:

    ncu --clock-control none -k regex:gate_preact --metrics gpu__time_duration.sum --csv \
        python3 benchmarks/probes/gate_preact_tiles.py

The launches come in the order printed (each line: 1 x 2,048 three times, then 8 x 2,048 three times).
(Session 11d ran its first form: (16, 1) only, KT 128 then 256.)
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import mlx.core as mx  # noqa: E402

from xlstm_mlx.kernels import gate_preact as gp  # noqa: E402


def main() -> None:
    x1, x8 = mx.random.normal((1, 2048, 4096)), mx.random.normal((8, 2048, 4096))
    w, b = mx.random.normal((16, 4096)) * 0.02, mx.random.normal((16,))
    mx.eval(x1, x8, w, b)
    for parts, rpt in ((16, 1), (32, 2)):
        for kt in (128, 256):
            gp.PARTS, gp.RPT, gp.KT = parts, rpt, kt
            print(f"PARTS {parts} RPT {rpt} KT {kt}", flush=True)
            for x in (x1, x8):
                for _ in range(3):
                    mx.eval(gp.gate_preact_cuda(x, w, b, 8, 15.0))


if __name__ == "__main__":
    main()
