"""Draws gpu_h200_2026-12-02e.png from the session-9 JSON files beside it (run from the repository root): decode at
batch 1 and 16 for every bench run of the session (FFN padding off / on and the variants) with the official
comparator of the same session, and the FFN down's time a call inside the step under Nsight."""
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

R = Path("benchmarks/results")


def main() -> None:
    ab = json.loads((R / "gpu_h200_s9_decode_ab.json").read_text())
    runs = ab["runs"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8), gridspec_kw={"width_ratios": [3, 3, 1.4]})
    for ax, b, target in ((axes[0], "1", 250), (axes[1], "16", 2700)):
        vals = [r["decode"][b]["tok_s"] for r in runs]
        colors = ["#1f77b4" if "off" in r["what"] and "on," not in r["what"] else "#ff7f0e" for r in runs]
        ax.bar(range(len(runs)), vals, color=colors)
        ax.axhline(ab["official"]["decode"][b]["tok_s"], color="k", ls="--", lw=1, label="official at its best (same session)")
        ax.axhline(target, color="#2ca02c", ls=":", lw=1, label="target")
        ax.set_xticks(range(len(runs)), [f"{r['call']}:{r['tag']}" for r in runs], rotation=60, fontsize=6, ha="right")
        ax.set_ylim(min(vals) * 0.85, max(max(vals), target) * 1.04)
        ax.set_ylabel("tok/s")
        ax.set_title(f"bf16 decode, batch {b} (blue: padding / fused norm off, orange: on / variants)", fontsize=9)
        ax.legend(fontsize=7, loc="lower right")
    ax = axes[2]
    # Nsight (ncu) us a call of the FFN down product inside the step: session 7 (unpadded, K = 10,944) and this
    # session (padded, K = 11,008) at batch 1; both at batch 16 (gpu_step_profile_h200_s9_*.json)
    labels = ["B=1\nK=10944\n(s7)", "B=1\nK=11008", "B=16\nK=10944", "B=16\nK=11008"]
    vals = [30.6, 25.07, 27.02, 27.14]
    ax.bar(range(4), vals, color=["#1f77b4", "#ff7f0e", "#1f77b4", "#ff7f0e"])
    ax.set_xticks(range(4), labels, fontsize=7)
    ax.set_ylabel("us a call (Nsight)")
    ax.set_title("FFN down in the step", fontsize=9)
    fig.suptitle("xLSTM-7B shape, NVIDIA H200, 2026-12-02 session 9: FFN padding, then the head norm in the decode step (call 14)", fontsize=10)
    fig.tight_layout()
    fig.savefig(R / "gpu_h200_2026-12-02e.png", dpi=110)


if __name__ == "__main__":
    main()
