"""Draws gpu_decode_h200.png from the figures in gpu_kernels_h200.md (run from the repository root)."""
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
batches = [1, 16, 64]
series = [
    ("before (issue 13, bench CLI, H200 2026-12-01)", [132.6, 1550, 4561], "#bbbbbb"),
    ("reference kernels (run 2, lab, fresh process)", [94.2, 977.6, 4085.8], "#999999"),
    ("now: default path (run 3, bench CLI)", [188.7, 1866.0, 5196.0], "#1f77b4"),
    ("official at its best (H200 2026-12-01, not this run)", [197.3, 2134.5, 4573.4], "#ff7f0e"),
    ("target (issue 13)", [250, 2700, 6000], "#2ca02c"),
]
fig, axes = plt.subplots(1, 3, figsize=(12, 4))
for i, (ax, b) in enumerate(zip(axes, batches)):
    vals = [s[1][i] for s in series]
    ax.bar(range(len(series)), vals, color=[s[2] for s in series])
    for j, v in enumerate(vals):
        ax.text(j, v, f"{v:,.0f}", ha="center", va="bottom", fontsize=8)
    ax.set_title(f"decode batch {b}")
    ax.set_xticks([])
    ax.set_ylabel("tok/s")
fig.legend([plt.Rectangle((0, 0), 1, 1, color=s[2]) for s in series], [s[0] for s in series], loc="lower center",
           ncol=2, fontsize=8)
fig.suptitle("xLSTM-7B shape, bf16 weights, float32 state, NVIDIA H200 (MLX 0.32.4 CUDA)")
fig.tight_layout(rect=(0, 0.15, 1, 1))
fig.savefig("benchmarks/results/gpu_decode_h200.png", dpi=110)
