"""Draws gpu_h200_2026-12-02f.png from the session-10 JSON files beside it (run from the repository root): the
chunkwise kernels' launch times in the lab (session start, kernel A on mma.sync, both kernels on mma.sync) and
prefill / TTFT end to end for the start and end code, alternating, with the official comparators of the same
machine session."""
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from prefill_ab_plot import prefill_ab_panel  # noqa: E402

R = Path("benchmarks/results")
LABS = [("start (wmma)", "gpu_kernels_h200_s10_chunkwise_wmma.json"),
        ("A on mma.sync", "gpu_kernels_h200_s10_chunkwise_mma.json"),
        ("A and B on mma.sync", "gpu_kernels_h200_s10_chunkwise_mma_ab.json")]
OFFICIAL = {"1x2048": (29166, 39041), "8x8192": (31143, 40112), "1x65536": (31330, None)}  # eager, compiled


def main() -> None:
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    for ax, idx, title in ((axes[0], 0, "B=1 T=2048"), (axes[1], 1, "B=8 T=8192")):
        rows = [json.loads((R / f).read_text())["chunkwise"][idx] for _, f in LABS]
        x = range(len(rows))
        rec = [1e6 * r["recurrent_s_per_segment"] for r in rows]
        par = [1e6 * r["parallel_s_per_segment"] for r in rows]
        ax.bar([i - 0.2 for i in x], rec, 0.4, label="kernel A (recurrence), us a segment")
        ax.bar([i + 0.2 for i in x], par, 0.4, label="kernel B (output), us a segment")
        ax.set_xticks(list(x), [n for n, _ in LABS], fontsize=8)
        ax.set_title(f"chunkwise kernels alone, 7B heads, {title} (lab)", fontsize=9)
        ax.legend(fontsize=7)
    ax = axes[2]
    prefill_ab_panel(ax, "gpu_h200_s10_prefill_ab2_{}.json", {s: OFFICIAL[s][1] for s in ("1x2048", "8x8192")}, (25000, 42000))
    fig.suptitle("xLSTM-7B shape, NVIDIA H200, 2026-12-02 session 10: the chunkwise kernels on mma.sync + ldmatrix", fontsize=10)
    fig.tight_layout()
    fig.savefig(R / "gpu_h200_2026-12-02f.png", dpi=110)


if __name__ == "__main__":
    main()
