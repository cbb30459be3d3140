"""What the session plots of benchmarks/results share: the prefill A/B panel (start code against end code,
alternating rounds, with the official compiled comparator of the same machine session)."""
import json
from pathlib import Path

R = Path("benchmarks/results")
SHAPES = ["1x2048", "8x8192"]


def prefill_ab_panel(ax, pattern: str, official_compiled: dict, ylim: tuple) -> None:
    """Bars of prefill tok/s for the bench JSON files `pattern.format(tag)` (tags old_1, new_1, old_2, new_2) at
    SHAPES, the official compiled figure beside them, and the 40k target line of the 1 x 2,048 prefill."""
    runs = []
    for tag in ("old_1", "new_1", "old_2", "new_2"):
        d = json.loads((R / pattern.format(tag)).read_text())
        runs.append((tag, {f"{p['batch']}x{p['length']}": p["tok_s"] for p in d["prefill"]}))
    w = 0.13
    for k, (tag, vals) in enumerate(runs):
        ax.bar([i + (k - 2) * w for i in range(len(SHAPES))], [vals[s] for s in SHAPES], w,
               color="#1f77b4" if tag.startswith("old") else "#ff7f0e", label=tag if k < 2 else None)
    ax.bar([i + 2 * w for i in range(len(SHAPES))], [official_compiled[s] for s in SHAPES], w, color="k",
           label="official compiled")
    ax.axhline(40000, color="#2ca02c", ls=":", lw=1, label="target at 1x2048 (40k)")
    ax.set_xticks(range(len(SHAPES)), SHAPES)
    ax.set_ylim(*ylim)
    ax.set_ylabel("prefill tok/s")
    ax.set_title("prefill end to end (bench), start code (old) vs end (new), alternating", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
