"""Where the lm_head end of the CPU forward goes: one B=8 decode step and one 512-token prefill with every
position's logits (the two figures of issue 15 that miss their target), split into the head matmul, the logit
soft cap and the rest, on a random-weight model of --shape, float32.

Each part is timed alone at the model's shapes, best of --reps after a warm-up, rounds interleaved:
  whole          the call as cpu_vs_transformers.py times it (decode: model(tok, cache=c) + argmax + host read;
                 prefill: model(ids, cache=c) and the state evaluated)
  head matmul    h @ W_head.T alone ([B, 1, H] or [1, T, H] against [V, H])
  head + cap     the same product with math.soft_cap on it, as the model computes it (the cap runs on the
                 product's buffer: MLX donates it), so (head + cap) - (head matmul) is the cap's cost in place
  cap alone      math.soft_cap on a kept input (no donation: a fresh output buffer), per form: the registry's
                 (fast), MLX's tanh (reference) and, where given, the old polynomial form (--old)
  fresh buffer   x * 2 on the same kept input: an element-wise pass that only reads and writes, i.e. the floor
                 of any pass over those logits (for [512, 50304] = 103 MB it includes the page faults of a
                 fresh output buffer)
Timing probe only; nothing here is asserted.

    python benchmarks/probes/cpu_head_parts.py --reps 5 --rounds 2
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import mlx.core as mx

from xlstm_mlx import kernels, platform
from xlstm_mlx.checkpoints.random import randomize, shape_args
from xlstm_mlx.kernels import fastmath
from xlstm_mlx.models.xlstm7b.model import Model

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from skinny_sgemm import best  # noqa: E402


def best_ms(fn, reps: int) -> float:
    return best(fn, reps) * 1e3  # skinny_sgemm.best: one warm-up call, then the fastest of `reps`


def cases(model, B: int, T: int, decode: bool) -> dict:
    a = model.args
    V, H, cap = a.vocab_size, a.hidden_size, a.output_logit_soft_cap
    W = model.lm_head.weight
    h = mx.random.normal((B, T, H))
    logits = mx.random.normal((B, T, V)) * 20
    mx.eval(h, logits)
    soft_cap = kernels.get("math.soft_cap")
    out = {}
    if decode:
        ids = mx.random.randint(0, V, (B, 16)).astype(mx.int32)
        c = model.make_cache(B)
        cur = [mx.argmax(model(ids, cache=c)[:, -1:], axis=-1)]

        def whole():
            cur[0] = mx.argmax(model(cur[0], cache=c)[:, -1:], axis=-1)
            cur[0].tolist()
    else:
        ids = mx.random.randint(0, V, (B, T)).astype(mx.int32)

        def whole():
            c = model.make_cache(B)
            mx.eval(model(ids, cache=c), c.arrays())
    out["whole"] = whole
    out["head matmul"] = lambda: mx.eval(h @ W.T)
    out["head + cap (in place)"] = lambda: mx.eval(soft_cap(h @ W.T, cap))
    out["cap alone, math.soft_cap (fast)"] = lambda: mx.eval(soft_cap(logits, cap))
    out["cap alone, MLX tanh (reference)"] = lambda: mx.eval(fastmath.soft_cap_ref(logits, cap))
    out["fresh buffer: x * 2"] = lambda: mx.eval(logits * 2.0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="64m")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--reference", action="store_true", help="run the whole model with the reference kernels")
    args = ap.parse_args()
    platform.setup()
    mx.set_default_device(mx.cpu)
    model = randomize(Model(shape_args(args.shape)))
    rows: dict = {}
    for _ in range(args.rounds):
        for label, B, T, dec in (("decode B=8", 8, 1, True), ("prefill 1x512, all logits", 1, 512, False)):
            for name, fn in cases(model, B, T, dec).items():
                ms = best_ms(fn, args.reps)
                key = (label, name)
                if key not in rows or ms < rows[key][0]:
                    rows[key] = (ms, os.getloadavg()[0])
    print(f"mlx {mx.__version__}; {platform.describe() if hasattr(platform, 'describe') else ''}")
    print("| case | part | ms | load |\n|---|---|---|---|")
    for (label, name), (ms, la) in rows.items():
        print(f"| {label} | {name} | {ms:.2f} | {la:.2f} |")


if __name__ == "__main__":
    main()
