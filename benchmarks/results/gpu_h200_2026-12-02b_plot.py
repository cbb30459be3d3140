"""Draws gpu_h200_2026-12-02b.png from the figures in gpu_h200_2026-12-02b.md (run from the repository root)."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

DECODE = [  # (label, [B=1, B=16, B=64] tok/s, colour)
    ("2026-12-02 morning (gpu_h200_2026-12-02.md)", [207.5, 2356.0, 5536.3], "#bbbbbb"),
    ("session 4: decode-step rows in flight, fused SwiGLU, carried residual", [232.5, 2367.9, 6349.2], "#9ecae1"),
    ("session 5: + gate projection in the step, embedding copy, chunkwise kernel", [219.6, 2532.5, 6200.4], "#1f77b4"),
    ("official at its best (H200, 2026-12-01/02, not these sessions)", [194.4, 2134.5, 4573.4], "#ff7f0e"),
    ("target", [250, 2700, 6000], "#2ca02c"),
]
PREFILL = [  # (label, [1x2048, 1x65536, 8x8192] tok/s, colour)
    ("2026-12-02 morning", [26740, 26927, 28076], "#bbbbbb"),
    ("session 4: fused SwiGLU, head norm + gate over the prompt", [29750, 29554, float("nan")], "#9ecae1"),
    ("session 5: + fused chunkwise CUDA kernel", [38498, 37143, 38451], "#1f77b4"),
    ("official compiled (H200, 2026-12-01, not these sessions)", [37972, float("nan"), 40617], "#ff7f0e"),
    ("target", [40000, 48000, 48000], "#2ca02c"),
]


def panel(ax, series, i, title):
    vals = [s[1][i] for s in series]
    ax.bar(range(len(series)), vals, color=[s[2] for s in series])
    for j, v in enumerate(vals):
        if v == v:
            ax.text(j, v, f"{v:,.0f}", ha="center", va="bottom", fontsize=7)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_ylabel("tok/s")


fig, axes = plt.subplots(2, 3, figsize=(13, 7.5))
for i, b in enumerate((1, 16, 64)):
    panel(axes[0][i], DECODE, i, f"decode, batch {b}")
for i, shape in enumerate(("1 x 2,048", "1 x 65,536", "8 x 8,192")):
    panel(axes[1][i], PREFILL, i, f"prefill {shape}")
fig.legend([plt.Rectangle((0, 0), 1, 1, color=s[2]) for s in DECODE], [s[0] for s in DECODE], loc="upper center",
           ncol=2, fontsize=7, bbox_to_anchor=(0.5, 0.535))
fig.legend([plt.Rectangle((0, 0), 1, 1, color=s[2]) for s in PREFILL], [s[0] for s in PREFILL], loc="lower center",
           ncol=2, fontsize=7)
fig.suptitle("xLSTM-7B shape, bf16 weights, float32 state: NVIDIA H200, MLX 0.32.4 CUDA, 2026-12-02 (afternoon)")
fig.tight_layout(rect=(0, 0.07, 1, 0.97), h_pad=4.5)
fig.savefig("benchmarks/results/gpu_h200_2026-12-02b.png", dpi=100)
