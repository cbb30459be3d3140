"""PNG plot of `xlstm-mlx bench` results: prefill and decode throughput beside their hardware floors.
Needs matplotlib (optional extra: pip install 'xlstm-mlx[plot]')."""

from __future__ import annotations

from xlstm_mlx.errors import UsageError


def plot(result: dict, path: str, comparators: dict | None = None) -> None:
    """`comparators`: optional {label: {"prefill": [{batch, length, tok_s}], "decode": [{batch, tok_s}]}}
    drawn beside our figures (e.g. transformers measured in the same run)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UsageError("--plot needs matplotlib: pip install 'xlstm-mlx[plot]'") from None
    comparators = comparators or {}
    fig, (ax_p, ax_d) = plt.subplots(1, 2, figsize=(12, 4.8))
    batches = sorted({r["batch"] for r in result["prefill"]})
    for b in batches:
        rows = sorted((r for r in result["prefill"] if r["batch"] == b), key=lambda r: r["length"])
        ax_p.plot([r["length"] for r in rows], [r["tok_s"] for r in rows], "o-", label=f"xlstm-mlx B={b}")
        for label, comp in comparators.items():
            crow = sorted((r for r in comp.get("prefill", []) if r["batch"] == b), key=lambda r: r["length"])
            if crow:
                ax_p.plot([r["length"] for r in crow], [r["tok_s"] for r in crow], "s--", label=f"{label} B={b}")
    if result["prefill"]:
        ax_p.axhline(result["prefill"][0]["floor_tok_s"], color="k", ls=":", label="floor (FLOPs / matmul rate)")
    ax_p.set(xscale="log", yscale="log", xlabel="prompt length (tokens)", ylabel="prefill tokens/s",
             title="Prefill")
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    for ax in (ax_p, ax_d):
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax_p.legend(fontsize=7)
    dec = sorted(result["decode"], key=lambda r: r["batch"])
    if dec:
        xs = [r["batch"] for r in dec]
        ax_d.plot(xs, [r["tok_s"] for r in dec], "o-", label="xlstm-mlx")
        ax_d.plot(xs, [r["floor_tok_s"] for r in dec], "k:", label="floor (bytes / bandwidth)")
        for r in dec:
            ax_d.annotate(f"{r['ratio_to_floor']:.0%}", (r["batch"], r["tok_s"]), fontsize=7,
                          textcoords="offset points", xytext=(4, -10))
    for label, comp in comparators.items():
        crow = sorted(comp.get("decode", []), key=lambda r: r["batch"])
        if crow:
            ax_d.plot([r["batch"] for r in crow], [r["tok_s"] for r in crow], "s--", label=label)
    ax_d.set(xscale="log", yscale="log", xlabel="batch size", ylabel="decode tokens/s", title="Decode")
    ax_d.legend(fontsize=7)
    fig.suptitle(f"{result['model']} | {result['device']} | {result['profile']}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
