"""Draws gpu_h200_2026-12-02c.png from the figures in gpu_h200_2026-12-02c.md (run from the repository root)."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

NAN = float("nan")
DECODE = [  # (label, [B=1, B=16, B=64] tok/s, colour)
    ("2026-12-02 afternoon best (gpu_h200_2026-12-02b.md)", [232.5, 2532.5, 6349.2], "#bbbbbb"),
    ("session 7a: the session's start code", [227.5, 2532.5, 6184.7], "#9ecae1"),
    ("session 7b: the session's end code (bench run; A/B runs 222.9-237.8 / 2,180-2,619)", [211.3, 2331.5, 6254.6],
     "#1f77b4"),
    ("official at its best, session 7b (B=1); B=16/64 from 2026-12-01", [197.3, 2134.5, 4573.4], "#ff7f0e"),
    ("target", [250, 2700, 6000], "#2ca02c"),
]
PREFILL = [  # (label, [1x2048, 1x65536, 8x8192] tok/s, colour)
    ("2026-12-02 afternoon (session 5)", [38498, 37143, 38451], "#bbbbbb"),
    ("session 7a: the session's start code", [38210, 36747, 38031], "#9ecae1"),
    ("session 7b: the end code, a slower machine (matmul probe 696 vs 746 TFLOP/s)", [35261, 35132, 37133],
     "#1f77b4"),
    ("official compiled (H200, 2026-12-01, not this session)", [37972, NAN, 40617], "#ff7f0e"),
    ("target", [40000, 48000, 48000], "#2ca02c"),
]
WEIGHTS_GB = 14.148
MEMORY = {  # prompt length -> peak GB, one 1 x T prefill
    "session 5 (before)": ([2048, 65536], [15.55, 16.36], "#bbbbbb"),
    "session 7b": ([2048, 16384, 65536], [15.38, 15.88, 15.73], "#1f77b4"),
}
TTFT = [("session 5 bench", 85.5, "#bbbbbb"), ("session 7a bench", 91.3, "#9ecae1"),
        ("session 7b bench", 59.7, "#1f77b4"), ("official compiled (2026-12-01)", 53.9, "#ff7f0e"),
        ("target", 45.0, "#2ca02c")]


def bars(ax, series, i, title, unit="tok/s"):
    vals = [s[1][i] for s in series]
    ax.bar(range(len(series)), vals, color=[s[2] for s in series])
    for j, v in enumerate(vals):
        if v == v:
            ax.text(j, v, f"{v:,.0f}", ha="center", va="bottom", fontsize=7)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_ylabel(unit)


fig, axes = plt.subplots(3, 3, figsize=(13, 11))
for i, b in enumerate((1, 16, 64)):
    bars(axes[0][i], DECODE, i, f"decode, batch {b}")
for i, shape in enumerate(("1 x 2,048", "1 x 65,536", "8 x 8,192")):
    bars(axes[1][i], PREFILL, i, f"prefill {shape}")
ax = axes[2][0]
for label, (xs, ys, c) in MEMORY.items():
    ax.plot(xs, [y - WEIGHTS_GB for y in ys], "o-", color=c, label=label)
ax.axhline(2.0, color="#2ca02c", ls="--", label="target: weights + 2 GB")
ax.set_xscale("log", base=2)
ax.set_xlabel("prompt tokens (batch 1)")
ax.set_ylabel("peak - weights (GB)")
ax.set_ylim(0, 3)
ax.set_title("prefill peak memory above the weights", fontsize=9)
ax.legend(fontsize=7)
ax = axes[2][1]
ax.bar(range(len(TTFT)), [t[1] for t in TTFT], color=[t[2] for t in TTFT])
for j, t in enumerate(TTFT):
    ax.text(j, t[1], f"{t[1]:.1f}", ha="center", va="bottom", fontsize=7)
ax.set_xticks(range(len(TTFT)))
ax.set_xticklabels([t[0] for t in TTFT], rotation=25, ha="right", fontsize=7)
ax.set_ylabel("ms")
ax.set_title("time to first token, 2,048-token prompt", fontsize=9)
axes[2][2].axis("off")
fig.legend([plt.Rectangle((0, 0), 1, 1, color=s[2]) for s in DECODE], [s[0] for s in DECODE], loc="upper center",
           ncol=2, fontsize=7, bbox_to_anchor=(0.5, 0.685))
fig.legend([plt.Rectangle((0, 0), 1, 1, color=s[2]) for s in PREFILL], [s[0] for s in PREFILL], loc="upper center",
           ncol=2, fontsize=7, bbox_to_anchor=(0.5, 0.375))
fig.suptitle("xLSTM-7B shape, bf16 weights, float32 state: NVIDIA H200, MLX 0.32.4 CUDA, 2026-12-02 (session 7)")
fig.tight_layout(rect=(0, 0, 1, 0.97), h_pad=6.0)
fig.savefig("benchmarks/results/gpu_h200_2026-12-02c.png", dpi=100)
