"""Draws gpu_h200_2026-12-03.png from the session-12 JSON files beside it (run from the repository root): kernel A's
time per layer profiled alone before (session 11, host-made segment array) and after (segment as template
constants), and the prefill A/B of 34da2a5 against e559a68 with the official compiled comparator of the same
machine session."""
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from prefill_ab_plot import prefill_ab_panel  # noqa: E402

R = Path("benchmarks/results")
OFFICIAL_COMPILED = {"1x2048": 38202, "8x8192": 40346}  # gpu_h200_s12_official_prefill.log


def main() -> None:
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    ax = axes[0]
    before = json.loads((R / "gpu_h200_s11_ncu_selective.json").read_text())
    after = json.loads((R / "gpu_h200_s12_ncu_selective.json").read_text())
    layers = range(1, 33)
    ax.plot(layers, before["chunk_recurrent_prefill_1x2048_by_layer_us"], "o-", ms=3, label="A, seg array (34da2a5)")
    ax.plot(layers, after["chunk_recurrent_prefill_1x2048_by_layer_us"], "o-", ms=3, label="A, template constants")
    ax.plot(layers, after["chunk_parallel_prefill_1x2048_by_layer_us"], "s-", ms=3, label="B, template constants")
    ax.plot(layers, after["gate_preact_prefill_1x2048_by_layer_us"], "^-", ms=3, label="gate projection")
    ax.set_xlabel("layer")
    ax.set_ylabel("us (ncu, that kernel alone profiled)")
    ax.set_yscale("log")
    ax.set_title("kernels by layer, 1x2,048 prefill", fontsize=9)
    ax.legend(fontsize=7)
    prefill_ab_panel(axes[1], "gpu_h200_s12_prefill_ab_{}.json", OFFICIAL_COMPILED, (30000, 43000))
    fig.suptitle("xLSTM-7B shape, NVIDIA H200, 2026-12-03 session 12: no host-made array read by the chunkwise "
                 "kernels", fontsize=10)
    fig.tight_layout()
    fig.savefig(R / "gpu_h200_2026-12-03.png", dpi=110)


if __name__ == "__main__":
    main()
