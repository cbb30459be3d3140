"""What the H200 quantized-matmul lab measured: the quantized GEMV's best configuration and its time against
MLX's quantized matmul, per (bits, rows bucket, N outputs, K inputs), group size 64, bf16 x.

Source (session 8, one NVIDIA H200, 2026-12-02): `python3 benchmarks/gpu_quant_lab.py --rows 1 4 16
--max-seconds 200` (q|k|v|o at 4 and 8 bits: benchmarks/results/gpu_quant_lab_h200_s8_qkvo.json; the lab ran out
of its time there) and `... --bits 4 --matrices ffn_up ffn_down out lm_head --rows 1 4 16 --calls 10 --reps 3`
(gpu_quant_lab_h200_s8_4bit.json); the tables in gpu_h200_2026-12-02d.md. 8-bit has only q|k|v|o measured: the
other 8-bit shapes follow quant_matmul's rule. Times are the median per call over chains of DEPENDENT calls (each
call's x computed from the previous output, benchmarks/lab_timing.chain_time), with the weights rotated past the
L2: a decode step runs its products one after another. The session-7 table came from chains of independent calls,
which MLX's CUDA backend may run at the same time: MLX's quantized GEMM at 16 rows (32 blocks for 4,096 outputs)
timed 21-37 us there against 58-180 us in the model's step (Nsight) and 44-203 us in dependent chains, so that
table routed 9..16 rows to MLX's kernel where ours is 1.2-3.3x faster.

Row buckets: 1 row; 2..8 rows (bucket 4: for bf16 x the kernel's mma takes 8 x rows as one column tile, so rows
2..8 run the very same kernel as 4 rows and stream the same weight bytes: 4 rows were measured); 9..16 rows
(bucket 16). quant_gemv.default_config takes the configuration from here, quant_matmul routes by the times.
"""

from __future__ import annotations

# (bits, bucket, N, K): (best config of quant_gemv.SWEEP_CONFIGS, its us per call, MLX quantized_matmul us per call)
H200: dict[tuple[int, int, int, int], tuple[dict, float, float]] = {
    (4, 1, 12288, 4096): (dict(R=1, U=1, S=4, KSPLIT=4, WARPS=8), 33.9, 39.3),
    (4, 4, 12288, 4096): (dict(R=1, U=1, S=4, KSPLIT=4, WARPS=8), 37.5, 125.3),
    (4, 16, 12288, 4096): (dict(R=2, U=1, S=4, KSPLIT=4, WARPS=4), 39.3, 73.9),
    (8, 1, 12288, 4096): (dict(R=1, U=1, S=4, KSPLIT=4, WARPS=8), 43.5, 31.0),
    (8, 4, 12288, 4096): (dict(R=2, U=1, S=4, KSPLIT=4, WARPS=4), 52.8, 103.9),
    (8, 16, 12288, 4096): (dict(R=1, U=1, S=4, KSPLIT=4, WARPS=8), 56.5, 57.5),
    (4, 1, 21888, 4096): (dict(R=1, U=1, S=4, KSPLIT=4, WARPS=8), 47.8, 68.8),
    (4, 4, 21888, 4096): (dict(R=1, U=2, S=4, KSPLIT=4, WARPS=4), 53.8, 214.8),
    (4, 16, 21888, 4096): (dict(R=2, U=2, S=3, KSPLIT=2, WARPS=2), 62.3, 110.7),
    (4, 1, 4096, 10944): (dict(R=1, U=1, S=4, KSPLIT=4, WARPS=8), 51.7, 62.7),
    (4, 4, 4096, 10944): (dict(R=2, U=1, S=4, KSPLIT=4, WARPS=4), 63.4, 119.2),
    (4, 16, 4096, 10944): (dict(R=1, U=2, S=4, KSPLIT=4, WARPS=4), 60.9, 203.1),
    (4, 1, 4096, 4096): (dict(R=1, U=1, S=4, KSPLIT=4, WARPS=8), 33.4, 43.9),
    (4, 4, 4096, 4096): (dict(R=1, U=1, S=4, KSPLIT=4, WARPS=8), 30.0, 54.8),
    (4, 16, 4096, 4096): (dict(R=1, U=2, S=4, KSPLIT=4, WARPS=4), 31.3, 71.8),
    (4, 1, 50304, 4096): (dict(R=2, U=1, S=4, KSPLIT=4, WARPS=4), 79.4, 139.8),
    (4, 4, 50304, 4096): (dict(R=1, U=1, S=4, KSPLIT=4, WARPS=8), 87.0, 467.3),
    (4, 16, 50304, 4096): (dict(R=2, U=1, S=4, KSPLIT=4, WARPS=4), 114.0, 140.6),
}


def bucket(rows: int) -> int:
    """The measured row count standing for `rows` (1, 4 for 2..8, 16 for 9..16; rows itself beyond)."""
    return 1 if rows <= 1 else 4 if rows <= 8 else 16 if rows <= 16 else rows


def kernel_faster(bits: int, rows: int, n: int, k: int) -> bool | None:
    """Whether the lab timed our GEMV faster than MLX's quantized matmul here; None where it did not measure."""
    entry = H200.get((bits, bucket(rows), n, k))
    return None if entry is None else entry[1] < entry[2]
