"""`xlstm-mlx drift`: the precision-drift lab. Does float32 or bfloat16 error grow with the context?

    xlstm-mlx drift --model M --data FILE_OR_DIR [--data ...] [--tokens 100000] [--segment 1024]
                    [--profiles parity,fast] --out PREFIX [--force]

One token stream (each file encoded as `perplexity` does, files in the order given) goes through the model in
the float64 `exact` profile and in each compared profile (default: parity = float32, fast = bfloat16 weights and
q/k/v) side by side, `--segment` tokens per call, the recurrent state carried through the whole stream. After
every segment, against exact:

  logits   max and mean |z - z_exact| over the segment's positions and the vocabulary; top-1 agreement (the
           fraction of positions whose argmax equals exact's); KL(p_exact || p) per position, mean and max
  states   per layer, the relative error of C and n, ||X - X_exact|| / ||X_exact|| (Frobenius, over batch and
           heads), after rescaling X to exact's stabilizer (C and n are stored divided by e^m, so X e^{m - m_exact}
           is compared); and of m, max |m - m_exact| / max(|m_exact|, 1)

Everything is computed in float64 (NumPy) from the models' outputs. Writes PREFIX.json (every point) and
PREFIX.png (the curves; needs matplotlib); progress on stderr. Runs on the CPU: exact is float64 (CPU only in
MLX), and the compared profiles run on the same device so that only their arithmetic differs.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import mlx.core as mx
import numpy as np

from xlstm_mlx.errors import UsageError

DEFAULT_PROFILES = ("parity", "fast")


# -- metrics (float64 NumPy) --------------------------------------------------------------------------------
def log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def logit_metrics(z: np.ndarray, z_exact: np.ndarray) -> dict:
    """z, z_exact [B, S, V] float64 -> max/mean abs error, top-1 agreement, KL(exact || z) mean and max."""
    d = np.abs(z - z_exact)
    lp, lq = log_softmax(z_exact), log_softmax(z)
    kl = np.maximum((np.exp(lp) * (lp - lq)).sum(axis=-1), 0.0)  # >= 0 up to rounding
    return {"max_abs": float(d.max()), "mean_abs": float(d.mean()),
            "top1": float((z.argmax(-1) == z_exact.argmax(-1)).mean()),
            "kl_mean": float(kl.mean()), "kl_max": float(kl.max())}


def state_metrics(state, state_exact) -> dict:
    """Relative errors of one mLSTM block's (C, n, m) against exact's, C and n at exact's stabilizer."""
    C, n, m = (np.array(a.astype(mx.float64)) for a in state)
    Ce, ne, me = (np.array(a) for a in state_exact)
    scale = np.exp(m - me)  # [B, NH, 1]
    def rel(x, ref):
        norm = np.linalg.norm(ref)
        return float(np.linalg.norm(x - ref) / norm) if norm > 0 else float(np.linalg.norm(x))
    return {"C": rel(C * scale[..., None], Ce), "n": rel(n * scale, ne),
            "m": float(np.abs(m - me).max() / max(np.abs(me).max(), 1.0))}


# -- the run ------------------------------------------------------------------------------------------------
def drift(model_dir, tokens: np.ndarray, profiles=DEFAULT_PROFILES, segment: int = 1024, bos_id=None,
          progress: bool = True) -> dict:
    """Stream `tokens` through exact and each profile; returns {"points": [...], ...} (see the module doc)."""
    from xlstm_mlx.checkpoints.load import load

    if segment < 1:
        raise UsageError(f"--segment must be >= 1, got {segment}")
    if mx.default_device().type != mx.cpu:
        raise UsageError("drift runs on the CPU (its reference, the exact profile, is float64); "
                         "call mx.set_default_device(mx.cpu) first")
    if "exact" in profiles:
        raise UsageError("exact is the reference every profile is measured against; list only the others")
    exact, _ = load(model_dir, profile="exact")
    if any(b.block_type != "mlstm" for b in exact.blocks):
        raise UsageError("drift measures mLSTM states; this model has other blocks")
    models = {p: load(model_dir, profile=p)[0] for p in profiles}
    ids = np.asarray(tokens, dtype=np.int32)
    if bos_id is not None:
        ids = np.concatenate([[bos_id], ids]).astype(np.int32)
    caches = {p: m.make_cache(1) for p, m in {"exact": exact, **models}.items()}
    points, start = [], time.time()
    for s in range(0, len(ids), segment):
        x = mx.array(ids[None, s:s + segment])
        z_exact = exact(x, cache=caches["exact"])
        mx.eval(z_exact, *caches["exact"].arrays())
        ze = np.array(z_exact)
        point = {"tokens": int(min(s + segment, len(ids))), "profiles": {}}
        for p, model in models.items():
            z = model(x, cache=caches[p])
            mx.eval(z, *caches[p].arrays())
            point["profiles"][p] = {
                "logits": logit_metrics(np.array(z.astype(mx.float64)), ze),
                "states": [state_metrics(st, st_e) for st, st_e in zip(caches[p].layers, caches["exact"].layers)],
            }
        points.append(point)
        if progress:
            el = time.time() - start
            worst = {p: f"{v['logits']['max_abs']:.2e}" for p, v in point["profiles"].items()}
            print(f"[drift] {point['tokens']:,}/{len(ids):,} tokens ({100 * point['tokens'] / len(ids):.0f}%), "
                  f"{el:.0f} s; max |dz| {worst}", file=sys.stderr, flush=True)
    return {"model": str(model_dir), "tokens": int(len(ids)), "segment": segment, "profiles": list(profiles),
            "reference": "exact (float64)", "points": points}


def summary(result: dict) -> dict:
    """Per profile: the first and last segment's figures and the worst over the run, for the conclusion."""
    out = {}
    for p in result["profiles"]:
        pts = [pt["profiles"][p] for pt in result["points"]]
        worst_c = [max(s["C"] for s in q["states"]) for q in pts]
        out[p] = {
            "logit_max_abs_first": pts[0]["logits"]["max_abs"], "logit_max_abs_last": pts[-1]["logits"]["max_abs"],
            "logit_max_abs_worst": max(q["logits"]["max_abs"] for q in pts),
            "kl_mean_first": pts[0]["logits"]["kl_mean"], "kl_mean_last": pts[-1]["logits"]["kl_mean"],
            "top1_min": min(q["logits"]["top1"] for q in pts),
            "top1_mean": float(np.mean([q["logits"]["top1"] for q in pts])),
            "state_C_rel_first": worst_c[0], "state_C_rel_last": worst_c[-1], "state_C_rel_worst": max(worst_c),
        }
    return out


# -- output ---------------------------------------------------------------------------------------------------
def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def plot(result: dict, path: Path) -> None:
    """The curves along the sequence: logit error, KL, top-1 disagreement, worst per-layer state error."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UsageError("drift writes a PNG plot and needs matplotlib: pip install 'xlstm-mlx[plot]' "
                         "(or pip install matplotlib)") from None
    x = [pt["tokens"] for pt in result["points"]]
    fig, axes = plt.subplots(2, 2, figsize=(12, 8), sharex=True)
    panels = [("max |logit - exact|", lambda q: q["logits"]["max_abs"]),
              ("mean KL(exact || profile), nats", lambda q: q["logits"]["kl_mean"]),
              ("top-1 disagreement with exact", lambda q: 1.0 - q["logits"]["top1"]),
              ("state C relative error (per layer)", None)]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for n, (ax, (title, f)) in enumerate(zip(axes.flat, panels)):
        for c, p in enumerate(result["profiles"]):
            pts = [pt["profiles"][p] for pt in result["points"]]
            color = colors[c % len(colors)]
            if f is not None:  # a zero (exact agreement) has no place on a log axis: drawn at the floor
                ax.plot(x, [f(q) if n == 2 else max(f(q), 1e-16) for q in pts], label=p, color=color)
            else:
                layers = len(pts[0]["states"])
                for layer in range(layers):
                    ax.plot(x, [max(q["states"][layer]["C"], 1e-16) for q in pts], color=color,
                            alpha=0.35 + 0.65 * (layer + 1) / layers, label=f"{p} layer {layer}")
        ax.set_title(title)
        if n != 2:  # top-1 disagreement is a fraction: linear
            ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    for ax in axes[1]:
        ax.set_xlabel("tokens of context")
    fig.suptitle(f"precision drift vs float64: {Path(result['model']).name}, {result['tokens']:,} tokens")
    fig.tight_layout()
    _atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="checkpoint directory (default: the bundled demo model)")
    p.add_argument("--data", action="append", required=True,
                   help="a text file or a directory of .txt files; repeat to append more text to the stream")
    p.add_argument("--tokens", type=int, default=100_000,
                   help="tokens to stream (default 100000); the text must have at least this many")
    p.add_argument("--segment", type=int, default=1024, help="tokens per forward call = points on the curves")
    p.add_argument("--profiles", default=",".join(DEFAULT_PROFILES),
                   help="profiles compared with exact, comma-separated (default parity,fast)")
    p.add_argument("--out", required=True, help="output prefix: writes PREFIX.json and PREFIX.png")
    p.add_argument("--force", action="store_true", help="overwrite existing outputs")


def run(ns: argparse.Namespace) -> int:
    from xlstm_mlx.checkpoints.load import resolve_model_dir
    from xlstm_mlx.generation.tokenizer import load_tokenizer
    from xlstm_mlx.tools.perplexity import read_tokens

    out = Path(ns.out)
    targets = [out.with_name(out.name + ".json"), out.with_name(out.name + ".png")]
    existing = [str(t) for t in targets if t.exists()]
    if existing and not ns.force:
        raise UsageError(f"{', '.join(existing)} already exist; pass --force to overwrite")
    if not out.parent.is_dir():
        raise UsageError(f"output directory {out.parent} does not exist")
    if ns.tokens < 1:
        raise UsageError(f"--tokens must be >= 1, got {ns.tokens}")
    profiles = tuple(p for p in ns.profiles.split(",") if p)
    mx.set_default_device(mx.cpu)
    model_dir = ns.model
    if model_dir is None:
        from xlstm_mlx.checkpoints.demo import DEMO_LABEL, demo_model_dir

        model_dir = demo_model_dir()
        if model_dir is None:
            raise UsageError("no --model given and the bundled demo model is not installed")
        print(DEMO_LABEL, file=sys.stderr)
    model_dir = resolve_model_dir(model_dir)
    tok = load_tokenizer(model_dir)
    if tok is None:
        raise UsageError(f"{model_dir} has no tokenizer.json; drift needs one to encode the text")
    stream = np.concatenate([read_tokens(d, tok)[0] for d in ns.data])
    if len(stream) < ns.tokens:
        raise UsageError(f"the text has {len(stream):,} tokens, fewer than --tokens {ns.tokens:,}; give more "
                         "text (repeat --data) or a smaller --tokens")
    result = drift(model_dir, stream[:ns.tokens], profiles, ns.segment, tok.bos_token_id)
    result.update(data=[str(d) for d in ns.data], summary=summary(result),
                  date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                  device=f"{mx.default_device()}, mlx {mx.__version__}")
    plot(result, targets[1])
    _atomic_write(targets[0], lambda tmp: Path(tmp).write_text(json.dumps(result, indent=1)))
    for p, s in result["summary"].items():
        print(f"{p}: max |dz| first {s['logit_max_abs_first']:.3g} last {s['logit_max_abs_last']:.3g} worst "
              f"{s['logit_max_abs_worst']:.3g}; mean KL first {s['kl_mean_first']:.3g} last {s['kl_mean_last']:.3g}; "
              f"top-1 agreement min {s['top1_min']:.4f}; state C rel. error first {s['state_C_rel_first']:.3g} "
              f"last {s['state_C_rel_last']:.3g}")
    print(f"wrote {targets[0]} and {targets[1]}")
    return 0
