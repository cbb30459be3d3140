"""Plot of gpu_h200_2026-12-03d.md (session 15): decode tok/s and the host's share of a step, from the raw JSON
beside it. python benchmarks/results/gpu_h200_2026-12-03d_plot.py -> gpu_h200_2026-12-03d.png"""
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).parent


def bench(name):
    d = json.loads((HERE / name).read_text())
    return {r["batch"]: r["tok_s"] for r in d["decode"]}


def main():
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    # left: 4-bit decode, the SwiGLU inside the down GEMV (on) against two launches (off), two rounds each
    labels, vals = [], []
    for sw in ("1", "0"):
        for rnd in ("1", "2"):
            r = bench(f"gpu_h200_s15_bench_q4_glu{sw}_{rnd}.json")
            labels.append(f"{'fused' if sw == '1' else 'two launches'} r{rnd}")
            vals.append((r[1], r[16]))
    x = range(len(labels))
    a.bar([i - 0.2 for i in x], [v[0] for v in vals], 0.4, label="B=1")
    a.bar([i + 0.2 for i in x], [v[1] / 10 for v in vals], 0.4, label="B=16 (/10)")
    a.set_xticks(list(x), labels, rotation=20)
    a.set_ylabel("tok/s")
    a.set_title("4-bit 7B decode: SwiGLU in the down GEMV")
    a.legend()
    # right: host split (build + encode vs wait) per configuration
    rows = []
    for name, tag in [("gpu_h200_s15_split_q4_start.json", "4-bit"), ("gpu_h200_s15_split_q8_start.json", "8-bit"),
                      ("gpu_h200_s15_split_bf16_start.json", "bf16")]:
        for r in json.loads((HERE / name).read_text())["results"][0]["rows"]:
            rows.append((f"{tag} B={r['batch']}", r["build"], r["encode"], r["wait"]))
    y = range(len(rows))
    b.barh(list(y), [r[1] for r in rows], label="build")
    b.barh(list(y), [r[2] for r in rows], left=[r[1] for r in rows], label="encode")
    b.barh(list(y), [r[3] for r in rows], left=[r[1] + r[2] for r in rows], label="wait for GPU")
    b.set_yticks(list(y), [r[0] for r in rows])
    b.set_xlabel("ms per decode step")
    b.set_title("host or GPU (decode_host_split.py)")
    b.legend()
    fig.tight_layout()
    fig.savefig(HERE / "gpu_h200_2026-12-03d.png", dpi=110)


if __name__ == "__main__":
    main()
