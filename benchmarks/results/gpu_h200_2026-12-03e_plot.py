"""Plot of gpu_h200_2026-12-03e.md (session 16): 4-bit 7B decode tok/s with the quantized GEMV's add-norm tail on
and off, every alternating run, from the raw JSON beside it.
python benchmarks/results/gpu_h200_2026-12-03e_plot.py -> gpu_h200_2026-12-03e.png"""
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).parent
RUNS = ["gpu_h200_s16_host_split_q4_tail.json", "gpu_h200_s16_host_split_q4_tail_b12.json"]
# env name -> (label, rows up to which the tail runs)
ENVS = {"default": ("tail on (run as 4 rows max)", 4), "no_add_norm": ("tail off", 0),
        "add_norm16": ("tail up to 16 rows", 16)}


def points():
    out = {}
    for name in RUNS:
        for res in json.loads((HERE / name).read_text())["results"]:
            for r in res["rows"]:
                on = r["batch"] <= ENVS[res["env_name"]][1]
                out.setdefault((r["batch"], on), []).append(r["tok_s"])
    return out


def main():
    pts = points()
    batches = sorted({b for b, _ in pts})
    fig, axes = plt.subplots(1, len(batches), figsize=(3.2 * len(batches), 3.6))
    for ax, b in zip(axes, batches):
        for x, on in ((0, False), (1, True)):
            ys = pts.get((b, on), [])
            ax.scatter([x] * len(ys), ys, color="tab:orange" if on else "tab:blue")
        ax.set_xticks([0, 1], ["two launches", "tail"])
        ax.set_xlim(-0.5, 1.5)
        ax.set_title(f"B={b}")
        ax.set_ylabel("tok/s")
    fig.suptitle("7B 4-bit decode, H200: residual add + RMSNorm in the GEMV's last block (each dot a process)")
    fig.tight_layout()
    fig.savefig(HERE / "gpu_h200_2026-12-03e.png", dpi=110)


if __name__ == "__main__":
    main()
