"""What the H200 quantized-matmul lab measured: the quantized GEMV's best configuration and its time against
MLX's quantized matmul, per (bits, rows bucket, N outputs, K inputs), group size 64, bf16 x.

Source: `python3 benchmarks/gpu_quant_lab.py --rows 1 4 16 --max-seconds 210` on one NVIDIA H200,
2026-12-02 (benchmarks/results/gpu_quant_lab_h200_s7.json; table in gpu_h200_2026-12-02c.md). Times are the
median per call over chains of independent calls with the weights rotated past the L2 (launch included).

Row buckets: 1 row; 2..8 rows (bucket 4: for bf16 x the kernel's mma takes 8 x rows as one column tile, so rows
2..8 run the very same kernel as 4 rows and stream the same weight bytes: 4 rows were measured); 9..16 rows
(bucket 16). quant_gemv.default_config takes the configuration from here, quant_matmul routes by the times.
"""

from __future__ import annotations

# (bits, bucket, N, K): (best config of quant_gemv.SWEEP_CONFIGS, its us per call, MLX quantized_matmul us per call)
H200: dict[tuple[int, int, int, int], tuple[dict, float, float]] = {
    (4, 1, 12288, 4096): (dict(R=2, U=1, S=4, KSPLIT=4, WARPS=4), 25.0, 41.9),
    (4, 4, 12288, 4096): (dict(R=1, U=2, S=4, KSPLIT=4, WARPS=4), 30.0, 121.6),
    (4, 16, 12288, 4096): (dict(R=1, U=2, S=4, KSPLIT=4, WARPS=4), 36.6, 40.0),
    (8, 1, 12288, 4096): (dict(R=2, U=1, S=4, KSPLIT=4, WARPS=4), 37.8, 35.9),
    (8, 4, 12288, 4096): (dict(R=1, U=1, S=4, KSPLIT=4, WARPS=8), 39.6, 94.9),
    (8, 16, 12288, 4096): (dict(R=2, U=2, S=3, KSPLIT=2, WARPS=2), 55.0, 37.7),
    (4, 1, 21888, 4096): (dict(R=2, U=1, S=4, KSPLIT=2, WARPS=4), 38.1, 63.7),
    (4, 4, 21888, 4096): (dict(R=1, U=1, S=4, KSPLIT=4, WARPS=8), 43.8, 213.2),
    (4, 16, 21888, 4096): (dict(R=1, U=2, S=4, KSPLIT=4, WARPS=4), 52.9, 53.9),
    (8, 1, 21888, 4096): (dict(R=1, U=1, S=4, KSPLIT=4, WARPS=8), 49.8, 52.0),
    (8, 4, 21888, 4096): (dict(R=1, U=1, S=4, KSPLIT=4, WARPS=8), 58.2, 163.8),
    (8, 16, 21888, 4096): (dict(R=2, U=2, S=3, KSPLIT=2, WARPS=2), 80.3, 53.1),
    (4, 1, 4096, 10944): (dict(R=1, U=1, S=4, KSPLIT=4, WARPS=8), 30.2, 37.3),
    (4, 4, 4096, 10944): (dict(R=2, U=1, S=4, KSPLIT=4, WARPS=4), 33.6, 110.2),
    (4, 16, 4096, 10944): (dict(R=4, U=1, S=3, KSPLIT=1, WARPS=2), 38.0, 37.2),
    (8, 1, 4096, 10944): (dict(R=2, U=1, S=4, KSPLIT=4, WARPS=4), 34.6, 33.9),
    (8, 4, 4096, 10944): (dict(R=2, U=1, S=4, KSPLIT=1, WARPS=4), 42.3, 88.8),
    (8, 16, 4096, 10944): (dict(R=4, U=1, S=3, KSPLIT=1, WARPS=2), 52.6, 33.2),
    (4, 1, 4096, 4096): (dict(R=1, U=1, S=4, KSPLIT=1, WARPS=8), 21.0, 21.6),
    (4, 4, 4096, 4096): (dict(R=2, U=1, S=4, KSPLIT=4, WARPS=4), 23.5, 51.4),
    (4, 16, 4096, 4096): (dict(R=4, U=1, S=3, KSPLIT=1, WARPS=2), 23.7, 21.0),
    (8, 1, 4096, 4096): (dict(R=2, U=1, S=3, KSPLIT=1, WARPS=4), 21.2, 16.6),
    (8, 4, 4096, 4096): (dict(R=2, U=1, S=3, KSPLIT=1, WARPS=4), 22.2, 35.3),
    (8, 16, 4096, 4096): (dict(R=2, U=2, S=3, KSPLIT=2, WARPS=2), 28.6, 15.7),
    (4, 1, 50304, 4096): (dict(R=2, U=1, S=4, KSPLIT=4, WARPS=4), 64.1, 131.6),
    (4, 4, 50304, 4096): (dict(R=1, U=1, S=4, KSPLIT=4, WARPS=8), 72.4, 464.2),
    (4, 16, 50304, 4096): (dict(R=4, U=1, S=3, KSPLIT=1, WARPS=2), 99.7, 114.7),
    (8, 1, 50304, 4096): (dict(R=1, U=1, S=4, KSPLIT=4, WARPS=8), 87.5, 104.0),
    (8, 4, 50304, 4096): (dict(R=1, U=1, S=4, KSPLIT=4, WARPS=8), 102.8, 361.1),
    (8, 16, 50304, 4096): (dict(R=2, U=2, S=3, KSPLIT=2, WARPS=2), 144.0, 103.9),
}


def bucket(rows: int) -> int:
    """The measured row count standing for `rows` (1, 4 for 2..8, 16 for 9..16; rows itself beyond)."""
    return 1 if rows <= 1 else 4 if rows <= 8 else 16 if rows <= 16 else rows


def kernel_faster(bits: int, rows: int, n: int, k: int) -> bool | None:
    """Whether the lab timed our GEMV faster than MLX's quantized matmul here; None where it did not measure."""
    entry = H200.get((bits, bucket(rows), n, k))
    return None if entry is None else entry[1] < entry[2]
