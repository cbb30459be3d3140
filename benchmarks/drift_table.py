"""A markdown table of an `xlstm-mlx drift` JSON: each profile's figures averaged over the four quarters of the
stream (does the error grow with context?), plus the worst point.

    python benchmarks/drift_table.py benchmarks/results/drift_demo.json > benchmarks/results/drift_demo.md
"""

import json
import sys

import numpy as np


def table(result: dict) -> str:
    pts = result["points"]
    n = len(pts)
    quarters = [slice(q * n // 4, max((q + 1) * n // 4, q * n // 4 + 1)) for q in range(4)]
    rows = ["| profile | figure | " + " | ".join(f"tokens {pts[q.start]['tokens'] - result['segment'] + 1:,}–"
                                                  f"{pts[q.stop - 1]['tokens']:,}" for q in quarters) + " | worst |",
            "|---|---|" + "---|" * 5]
    figures = {
        "max abs logit error": lambda v: v["logits"]["max_abs"],
        "mean abs logit error": lambda v: v["logits"]["mean_abs"],
        "mean KL (nats)": lambda v: v["logits"]["kl_mean"],
        "top-1 agreement": lambda v: v["logits"]["top1"],
        "state C rel. error (worst layer)": lambda v: max(s["C"] for s in v["states"]),
        "state n rel. error (worst layer)": lambda v: max(s["n"] for s in v["states"]),
        "state m rel. error (worst layer)": lambda v: max(s["m"] for s in v["states"]),
    }
    for p in result["profiles"]:
        for name, f in figures.items():
            vals = [f(pt["profiles"][p]) for pt in pts]
            worst = min(vals) if name == "top-1 agreement" else max(vals)
            fmt = (lambda x: f"{x:.4f}") if name == "top-1 agreement" else (lambda x: f"{x:.2e}")
            rows.append(f"| {p} | {name} | " + " | ".join(fmt(float(np.mean(vals[q]))) for q in quarters)
                        + f" | {fmt(worst)} |")
    head = (f"# precision drift: {result['model']}\n\n{result['tokens']:,} tokens of {', '.join(result['data'])}, "
            f"segments of {result['segment']}; reference {result['reference']}; {result['date']}; "
            f"{result['device']}\n\n")
    return head + "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(table(json.load(open(sys.argv[1]))))
