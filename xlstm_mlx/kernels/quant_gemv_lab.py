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


# Session 13 (one NVIDIA H200, 2026-12-03): each kernel ALONE under Nsight Compute (gpu__time_duration, the
# median of 2 calls after a compile call; weights of one matrix, not rotated), with x's loads of a unit issued
# first (quant_gemv.x_prefetch, XPRE), for the session-8 default config of the shape and for R1U1S4K8W8 (the split
# of K over all 8 warps: 2 blocks a multiprocessor for 4,096 outputs where K4 W8 gives 1):
# `benchmarks/probes/gemv_ncu_probe.py` under ncu (session 13's quant_session_check.sh, since replaced by benchmarks/probes/gemv_session_check.sh;
# benchmarks/results/gpu_h200_2026-12-03b.md). (bits, bucket, N, K): {config tag: us}. default_config takes the
# faster of the two (these times are not comparable with H200's above: no launch gaps, no chain).
ALONE_H200: dict[tuple[int, int, int, int], dict[str, float]] = {
    (4, 1, 12288, 4096): {"R1U1S4K4W8": 17.04, "R1U1S4K8W8": 18.72},
    (4, 4, 12288, 4096): {"R1U1S4K4W8": 18.0, "R1U1S4K8W8": 19.44},
    (4, 16, 12288, 4096): {"R2U1S4K4W4": 21.15, "R1U1S4K8W8": 28.83},
    (4, 1, 21888, 4096): {"R1U1S4K4W8": 29.86, "R1U1S4K8W8": 30.91},
    (4, 4, 21888, 4096): {"R1U2S4K4W4": 33.81, "R1U1S4K8W8": 31.73},
    (4, 16, 21888, 4096): {"R2U2S3K2W2": 37.84, "R1U1S4K8W8": 52.08},
    (4, 1, 4096, 10944): {"R1U1S4K4W8": 33.41, "R1U1S4K8W8": 17.89},
    (4, 4, 4096, 10944): {"R2U1S4K4W4": 31.6, "R1U1S4K8W8": 18.35},
    (4, 16, 4096, 10944): {"R1U2S4K4W4": 30.7, "R1U1S4K8W8": 22.82},
    (4, 1, 4096, 4096): {"R1U1S4K4W8": 12.85, "R1U1S4K8W8": 9.57},
    (4, 4, 4096, 4096): {"R1U1S4K4W8": 14.45, "R1U1S4K8W8": 9.7},
    (4, 16, 4096, 4096): {"R1U2S4K4W4": 14.02, "R1U1S4K8W8": 11.9},
    (4, 1, 50304, 4096): {"R2U1S4K4W4": 47.47, "R1U1S4K8W8": 60.67},
    (4, 4, 50304, 4096): {"R1U1S4K4W8": 57.01, "R1U1S4K8W8": 62.58},
    (4, 16, 50304, 4096): {"R2U1S4K4W4": 66.78, "R1U1S4K8W8": 103.31},
    (8, 1, 12288, 4096): {"R1U1S4K4W8": 22.53, "R1U1S4K8W8": 25.82},
    (8, 4, 12288, 4096): {"R2U1S4K4W4": 24.96, "R1U1S4K8W8": 28.61},
    (8, 16, 12288, 4096): {"R1U1S4K4W8": 44.51, "R1U1S4K8W8": 39.54},
    (8, 1, 21888, 4096): {"R2U1S4K2W4": 43.63, "R1U1S4K8W8": 38.78},
    (8, 4, 21888, 4096): {"R2U1S4K2W4": 46.29, "R1U1S4K8W8": 41.1},
    (8, 16, 21888, 4096): {"R2U1S4K2W4": 56.34, "R1U1S4K8W8": 73.47},
    (8, 1, 4096, 10944): {"R2U1S4K4W4": 49.5, "R1U1S4K8W8": 28.29},
    (8, 4, 4096, 10944): {"R2U1S4K4W4": 54.51, "R1U1S4K8W8": 29.58},
    (8, 16, 4096, 10944): {"R2U1S4K4W4": 67.84, "R1U1S4K8W8": 34.08},
    (8, 1, 4096, 4096): {"R2U1S4K4W4": 18.46, "R1U1S4K8W8": 12.4},
    (8, 4, 4096, 4096): {"R2U1S4K4W4": 18.99, "R1U1S4K8W8": 12.86},
    (8, 16, 4096, 4096): {"R2U1S4K4W4": 24.38, "R1U1S4K8W8": 15.58},
    (8, 1, 50304, 4096): {"R2U1S4K1W4": 109.14, "R1U1S4K8W8": 78.86},
    (8, 4, 50304, 4096): {"R2U1S4K1W4": 111.89, "R1U1S4K8W8": 85.09},
    (8, 16, 50304, 4096): {"R2U1S4K1W4": 121.38, "R1U1S4K8W8": 147.84},
}


def parse_tag(tag: str) -> dict:
    """"R1U1S4K8W8" -> dict(R=1, U=1, S=4, KSPLIT=8, WARPS=8); a suffix "X2" adds XPRE=2 (quant_gemv.x_prefetch)."""
    import re
    m = re.fullmatch(r"R(\d+)U(\d+)S(\d+)K(\d+)W(\d+)(?:X(\d))?", tag)
    if m is None:
        raise ValueError(f"not a config tag: {tag!r}")
    cfg = dict(zip(("R", "U", "S", "KSPLIT", "WARPS"), map(int, m.groups()[:5])))
    if m.group(6) is not None:
        cfg["XPRE"] = int(m.group(6))
    return cfg


def best_alone(bits: int, rows: int, n: int, k: int) -> dict | None:
    """The faster config of ALONE_H200 for this shape's row bucket, or None where session 13 did not measure it."""
    times = ALONE_H200.get((bits, bucket(rows), n, k))
    return parse_tag(min(times, key=times.get)) if times else None


def bucket(rows: int) -> int:
    """The measured row count standing for `rows` (1, 4 for 2..8, 16 for 9..16; rows itself beyond)."""
    return 1 if rows <= 1 else 4 if rows <= 8 else 16 if rows <= 16 else rows
