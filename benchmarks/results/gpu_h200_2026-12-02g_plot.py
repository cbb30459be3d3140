"""Draws gpu_h200_2026-12-02g.png from the session-11 JSON files beside it (run from the repository root): the
prefill's kernel time by kind at the session's start and end (ncu), prefill / TTFT end to end for the start and
end code alternating with the official comparators of the same machine session, and kernel A's time per layer
when profiled alone."""
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from prefill_ab_plot import prefill_ab_panel  # noqa: E402

R = Path("benchmarks/results")
OFFICIAL = {"1x2048": (29480, 40146), "8x8192": (31231, 40314)}  # eager, compiled (session 11c)


def main() -> None:
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    ax = axes[0]
    profiles = [json.loads((R / f"gpu_step_profile_h200_s11_pf2048_{s}.json").read_text()) for s in ("start", "end")]
    kinds = sorted({k for p in profiles for k in p["kinds"]}, key=lambda k: -profiles[0]["kinds"].get(k, {"us_per_step": 0})["us_per_step"])
    bottom = [0.0, 0.0]
    for k in kinds:
        v = [p["kinds"].get(k, {"us_per_step": 0.0})["us_per_step"] / 1e3 for p in profiles]
        ax.bar([0, 1], v, 0.5, bottom=bottom, label=k)
        bottom = [b + x for b, x in zip(bottom, v)]
    ax.set_xticks([0, 1], [f"start: {profiles[0]['kernels_per_step']:.0f} kernels",
                           f"end: {profiles[1]['kernels_per_step']:.0f} kernels"])
    ax.set_ylabel("ms of kernel time (ncu, serialized)")
    ax.set_title("one 1x2,048 prefill's kernels by kind", fontsize=9)
    ax.legend(fontsize=6, loc="lower right")
    ax = axes[1]
    prefill_ab_panel(ax, "gpu_h200_s11_prefill_ab_{}.json", {s: OFFICIAL[s][1] for s in ("1x2048", "8x8192")}, (30000, 42000))
    ax = axes[2]
    sel = json.loads((R / "gpu_h200_s11_ncu_selective.json").read_text())
    layers = range(1, 33)
    ax.plot(layers, sel["chunk_recurrent_prefill_1x2048_by_layer_us"], "o-", ms=3, label="kernel A (recurrence)")
    ax.plot(layers, sel["chunk_parallel_prefill_1x2048_by_layer_us"], "s-", ms=3, label="kernel B (output)")
    ax.set_xlabel("layer")
    ax.set_ylabel("us (ncu, that kernel alone profiled)")
    ax.set_title("chunkwise kernels by layer, 1x2,048 prefill (commit 34da2a5)", fontsize=9)
    ax.legend(fontsize=7)
    fig.suptitle("xLSTM-7B shape, NVIDIA H200, 2026-12-02 session 11: fused gate projection, no zero-state fills, "
                 "head-norm vector stores", fontsize=10)
    fig.tight_layout()
    fig.savefig(R / "gpu_h200_2026-12-02g.png", dpi=110)


if __name__ == "__main__":
    main()
