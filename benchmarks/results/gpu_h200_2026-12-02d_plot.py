"""Draws gpu_h200_2026-12-02d.png from the session-8 JSON files beside it (run from the repository root):
the quantized lab's MLX and our times in dependent chains against the session-7 independent-chain table, and the
end-to-end decode figures of the routings (gpu_h200_s8_decode_ab.json)."""
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

R = Path("benchmarks/results")
S7 = {  # session 7's independent-chain table at 16 rows, 4-bit (ours / MLX us; gpu_h200_2026-12-02c.md)
    "qkvo": (36.6, 40.0), "ffn_up": (52.9, 53.9), "ffn_down": (38.0, 37.2), "out": (23.7, 21.0), "lm_head": (99.7, 114.7)}


def dependent_16_rows() -> dict:
    rows = {}
    for f in ("gpu_quant_lab_h200_s8_qkvo.json", "gpu_quant_lab_h200_s8_4bit.json"):
        for r in json.loads((R / f).read_text())["results"]:
            if r["bits"] == 4 and r["rows"] == 16 and r.get("best_cfg"):
                rows[r["matrix"]] = (r[r["best_cfg"] + "_us"], r["qmm_us"])
    return rows


def main() -> None:
    dep = dependent_16_rows()
    ab = json.loads((R / "gpu_h200_s8_decode_ab.json").read_text())
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    ax = axes[0]
    names = [m for m in S7 if m in dep]
    x = range(len(names))
    for k, (label, vals, c) in enumerate([
            ("MLX, independent chains (s7 lab)", [S7[m][1] for m in names], "#c6dbef"),
            ("MLX, dependent chains (s8 lab)", [dep[m][1] for m in names], "#1f77b4"),
            ("ours, independent chains (s7)", [S7[m][0] for m in names], "#fdd0a2"),
            ("ours, dependent chains (s8)", [dep[m][0] for m in names], "#ff7f0e")]):
        ax.bar([i + (k - 1.5) * 0.2 for i in x], vals, width=0.2, color=c, label=label)
    ax.set_xticks(list(x), names, fontsize=8)
    ax.set_ylabel("us per call")
    ax.set_title("4-bit quantized matmul, 16 rows: how the lab times it", fontsize=9)
    ax.legend(fontsize=7)
    ax = axes[1]
    runs = [r for r in ab["bf16_ab"] if r["call"] == "8a-8"]
    labels = [f"{'on' if r['gemv'] else 'off'} #{r['run']}" for r in runs]
    for k, b in enumerate(("1", "16")):
        vals = [r["decode"][b]["tok_s"] / (1 if b == "1" else 10) for r in runs]
        ax.bar([i + (k - 0.5) * 0.35 for i in range(len(runs))], vals, width=0.35,
               color="#1f77b4" if b == "1" else "#9ecae1", label=f"batch {b}" + ("" if b == "1" else " (/10)"))
    ax.set_xticks(range(len(runs)), labels, fontsize=8)
    ax.set_ylabel("tok/s")
    ax.set_title("bf16 decode, bf16 GEMV (dependent-chain table) on / off, alternating", fontsize=9)
    ax.legend(fontsize=7)
    ax = axes[2]
    q4 = [r for r in ab["quant"] if r["what"].startswith("4-bit")]
    for k, b in enumerate(("1", "16")):
        vals = [r["decode"][b]["tok_s"] / (1 if b == "1" else 10) for r in q4]
        ax.barh([i + (k - 0.5) * 0.35 for i in range(len(q4))], vals, height=0.35,
                color="#2ca02c" if b == "1" else "#98df8a", label=f"batch {b}" + ("" if b == "1" else " (/10)"))
    ax.set_yticks(range(len(q4)), [f"{r['call']}: {r['what'][7:60]}" for r in q4], fontsize=6)
    ax.set_xlabel("tok/s")
    ax.set_title("4-bit decode end to end by routing", fontsize=9)
    ax.legend(fontsize=7)
    fig.suptitle("xLSTM-7B shape, NVIDIA H200, 2026-12-02 session 8", fontsize=10)
    fig.tight_layout()
    fig.savefig(R / "gpu_h200_2026-12-02d.png", dpi=110)


if __name__ == "__main__":
    main()
