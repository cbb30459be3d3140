"""The loss curve as a PNG: training loss (raw and smoothed) and held-out loss against the step."""

from __future__ import annotations

from pathlib import Path


def plot_losses(history: list[dict], evals: list[dict], path: Path, title: str = "") -> bool:
    """Write the PNG; returns False (and says why) when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("[xlstm-mlx train] matplotlib is not installed: no loss curve PNG "
              "(pip install 'xlstm-mlx[train]')")
        return False
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    if history:
        steps = [h["step"] for h in history]
        loss = [h["loss"] for h in history]
        k = len(loss) // 25  # centered moving average over 2k+1 logged points (no lag); none for short runs
        if k >= 1:
            ax.plot(steps, loss, color="tab:blue", alpha=0.25, lw=0.8, label="train (logged)")
            smooth = [sum(loss[max(0, i - k):i + k + 1]) / len(loss[max(0, i - k):i + k + 1])
                      for i in range(len(loss))]
            ax.plot(steps, smooth, color="tab:blue", lw=1.6, label="train (moving average)")
        else:
            ax.plot(steps, loss, color="tab:blue", lw=1.4, label="train")
    if evals:
        ax.plot([e["step"] for e in evals], [e["loss"] for e in evals], "o-", color="tab:red", ms=3,
                lw=1.4, label="held-out")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return True
