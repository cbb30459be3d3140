"""float32 logits against float64, ours and the canonical's side by side, on random-weight checkpoints.

Ground truth: our `exact` profile (float64 everywhere), checked on every case against transformers' native code
run in float64 (tests/oracles/canonical_f64.py; they agree to ~1e-13). Measured: max-abs error of the float32
logits of (a) the canonical implementation (transformers' native kernels, float32), (b) ours (profile parity),
each for the full forward (one call over T tokens: chunkwise prefill) and for prefill + one-token steps
(the canonical's prefill + steps is the official xlstm package's xLSTMLarge: canonical_f64.official_steps_logits
says why). For the steps also the median over step positions of each position's max-abs error: the max is set
at the worst-conditioned position, where any float32 evaluation's error is a draw (docs/numerics.md).

    python benchmarks/precision_vs_f64.py [--quick] [--out benchmarks/results/precision_vs_f64]

Writes OUT.json and OUT.md (device, date, command, table).
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform as pyplatform
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import mlx.core as mx  # noqa: E402

mx.set_default_device(mx.cpu)

import xlstm_mlx  # noqa: E402
from xlstm_mlx.platform import blas, skinny  # noqa: E402
from oracles.canonical import make_hf_checkpoint  # noqa: E402
from oracles.canonical_f64 import hf_logits, official_steps_logits  # noqa: E402

# name: (checkpoint options, T, prefill length for prefill + steps, batch)
CASES = {
    "h64_l2_T150": (dict(hidden=64, heads=2, layers=2), 150, 100, 2),
    "h64_l2_T2000": (dict(hidden=64, heads=2, layers=2), 2000, 1950, 1),
    "h96_l3_bias_T300": (dict(hidden=96, heads=2, layers=3, use_bias=True, vocab=77), 300, 257, 2),
    "h80_l4_T65": (dict(hidden=80, heads=2, layers=4), 65, 33, 2),
    "fused_bias_tied_h64_T200": (dict(hidden=64, heads=4, weight_mode="fused", use_bias=True, tie=True), 200, 130, 2),
    "h160_l2_T1000": (dict(hidden=160, heads=4, layers=2, vocab=150), 1000, 960, 1),
    "saturated_h64_T300": (dict(hidden=64, heads=2, layers=2, gate_bias_scale=12.0), 300, 250, 2),
    "h64_l1_T1": (dict(hidden=64, heads=2, layers=1), 1, 1, 3),
    "h64_l2_T64": (dict(hidden=64, heads=2, layers=2), 64, 1, 2),
    "h64_l2_T7": (dict(hidden=64, heads=2, layers=2), 7, 3, 2),
}
QUICK = ("h64_l2_T150", "h96_l3_bias_T300", "saturated_h64_T300")


def ours_logits(path, ids, profile: str, prefill: int = 0, reference: bool = False) -> np.ndarray:
    model, _ = xlstm_mlx.load(path, profile=profile)
    with xlstm_mlx.kernels.use_reference(reference):
        if prefill <= 0:
            return np.array(model(mx.array(ids)).astype(mx.float64))
        cache = model.make_cache(ids.shape[0])
        outs = [model(mx.array(ids[:, :prefill]), cache=cache)]
        for t in range(prefill, ids.shape[1]):
            outs.append(model(mx.array(ids[:, t:t + 1]), cache=cache))
        return np.array(mx.concatenate(outs, axis=1).astype(mx.float64))


def measure(name: str, workdir: Path, seed: int = 0, with_hf64: bool = True) -> dict:
    opts, T, P, batch = CASES[name]
    opts = dict(opts)
    path = make_hf_checkpoint(workdir / name, seed=seed, **opts)
    ids = np.random.default_rng(seed + 1).integers(0, opts.get("vocab", 101), (batch, T))
    exact = ours_logits(path, ids, "exact")
    row = {"case": name, "T": T, "prefill": P, "batch": batch, "seed": seed}
    if with_hf64:
        row["exact_vs_hf64"] = float(np.abs(exact - hf_logits(path, ids, workdir, "float64")).max())

    def err(x, start=0):  # max-abs over positions start.. (the step positions for prefill + steps)
        assert np.isfinite(x).all(), f"{name}: non-finite logits"
        return float(np.abs(x[:, start:] - exact[:, start:]).max())

    def med(x, start=0):  # the median over positions of each position's max-abs error (docs/numerics.md: the
        return float(np.median(np.abs(x[:, start:] - exact[:, start:]).max(-1)))  # max is one position's draw

    canon, ours = hf_logits(path, ids, workdir, "float32"), ours_logits(path, ids, "parity")
    row["canon_full"], row["ours_full"] = err(canon), err(ours)
    row["canon_full_median"], row["ours_full_median"] = med(canon), med(ours)
    with skinny.k_block(0):  # the library's own sum for the many-row products (as before the K-blocks)
        lib = ours_logits(path, ids, "parity")
    row["ours_full_lib"], row["ours_full_lib_median"] = err(lib), med(lib)
    row["ours_full_ref"] = err(ours_logits(path, ids, "parity", reference=True))
    if P < T:
        canon, ours = official_steps_logits(path, ids, P), ours_logits(path, ids, "parity", prefill=P)
        row["canon_steps"], row["ours_steps"] = err(canon, P), err(ours, P)
        row["canon_steps_median"], row["ours_steps_median"] = med(canon, P), med(ours, P)
    return row


def table(rows: list[dict]) -> str:
    cols = ["case", "exact_vs_hf64", "canon_full", "ours_full", "ours_full_lib", "ours_full_ref", "canon_full_median",
            "ours_full_median", "ours_full_lib_median", "canon_steps", "ours_steps", "canon_steps_median",
            "ours_steps_median"]
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        out.append("| " + " | ".join(r["case"] if c == "case" else (f"{r[c]:.2e}" if c in r else "-")
                                     for c in cols) + " |")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/precision_vs_f64"))
    args = ap.parse_args()
    names = QUICK if args.quick else tuple(CASES)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for n in names:
            rows.append(measure(n, Path(d), args.seed))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    b = blas.info()
    meta = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "device": f"{pyplatform.machine()} CPU ({cpu_model()}), mlx {mx.__version__}, BLAS "
                      f"{b.get('library', 'none')} core {b.get('core', '-')}, many-row products in up to 16 K-blocks "
                      f"(of >= {skinny.k_block_now()})",
            "command": "python " + " ".join(sys.argv)}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({**meta, "rows": rows}, indent=1))
    md = (f"# float32 logits vs float64 (max-abs; _median: over positions of each position's max-abs)\n\n"
          f"date {meta['date']}; device {meta['device']}\n\ncommand: `{meta['command']}`\n\n"
          f"ours_full_lib: ours with the library's own sum for the many-row products (XLSTM_MLX_SGEMM_K_BLOCKS=0); "
          f"ours_full_ref: ours with every kernel's reference\n\n{table(rows)}\n")
    old = out.with_suffix(".md")
    if old.exists() and NOTES in old.read_text():  # hand-written measurements below the marker stay
        md += "\n" + NOTES + old.read_text().split(NOTES, 1)[1]
    old.write_text(md)
    print(md)


NOTES = "<!-- notes: kept when this file is regenerated -->"


def cpu_model() -> str:
    try:
        return next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name"))
    except (OSError, StopIteration):
        return pyplatform.processor() or "unknown"


if __name__ == "__main__":
    main()
