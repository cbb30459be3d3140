"""Why generate_step decodes slower than a plain `model(tok, cache=c)` + argmax loop on the CPU: the two loops
and variants of the pipelined one, alternating in one process (order reversed every other round), ms a step.

Variants (each a decode loop of --steps tokens on a cache that has taken a 16-token prompt):
  plain      the comparison script's loop: model(cur, cache=c) -> argmax -> .tolist() each step
  gen        generate_step(model, ids, max_tokens=steps + 1), .tolist() per token (the prefill and the first
             token before the clock starts, as benchmarks/cpu_vs_transformers.py does)
  gen_refchk the same with the registry's logits.all_finite set to its reference (mx.all(mx.isfinite))
  pipe       generate_step's loop written out: decode_fn + sampler + isfinite, async_eval of step n+1 before
             the host reads token n
  pipe_nofin the same without the isfinite reduction
  sync       decode_fn + sampler + isfinite, mx.eval then read (no pipelining)
  sync_nofin the same without the isfinite reduction

    python benchmarks/probes/cpu_gen_vs_plain.py [--batch 1] [--steps 32] [--rounds 10] [--variants plain gen]
"""
import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import mlx.core as mx  # noqa: E402

from xlstm_mlx import kernels, platform  # noqa: E402
from xlstm_mlx.checkpoints.random import make_random_checkpoint  # noqa: E402
from xlstm_mlx.checkpoints.load import load as load_model  # noqa: E402
from xlstm_mlx.generation.generate import generate_step  # noqa: E402
from xlstm_mlx.generation.sample import Sampler  # noqa: E402
from xlstm_mlx.models.compiled import decode_fn  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--shape", default="64m")
    ap.add_argument("--ckpt", default="/tmp/cpu_gen_vs_plain_ckpt")
    ap.add_argument("--variants", nargs="+", default=["plain", "gen", "pipe", "pipe_nofin", "sync", "sync_nofin"])
    args = ap.parse_args()
    mx.set_default_device(mx.cpu)
    if not Path(args.ckpt, "config.json").exists():
        make_random_checkpoint(args.ckpt, args.shape)
    model, _ = load_model(args.ckpt, dtype="float32")
    print(platform.describe(), file=sys.stderr)
    B, n = args.batch, args.steps
    V = model.args.vocab_size
    mx.random.seed(0)
    ids = mx.random.randint(0, V, (B, 16)).astype(mx.int32)

    def primed():
        c = model.make_cache(B)
        cur = mx.argmax(model(ids, cache=c)[:, -1:], axis=-1)
        mx.eval(cur, c.arrays())
        return c, cur

    def plain():
        c, cur = primed()
        t = time.perf_counter()
        for _ in range(n):
            cur = mx.argmax(model(cur, cache=c)[:, -1:], axis=-1)
            cur.tolist()
        return time.perf_counter() - t

    def gen():
        g = generate_step(model, ids, max_tokens=n + 1)
        next(g).tolist()
        t = time.perf_counter()
        for y in g:
            y.tolist()
        return time.perf_counter() - t

    def gen_refchk():
        entry = kernels.KERNELS["logits.all_finite"]
        kernels.KERNELS["logits.all_finite"] = entry._replace(fast=entry.reference)
        try:
            return gen()
        finally:
            kernels.KERNELS["logits.all_finite"] = entry

    sampler = Sampler()

    def loop(pipelined, finite_check):
        def run():
            c, cur = primed()
            dec = decode_fn(model)

            def step(tok):
                logits = dec(tok, c)[:, -1]
                return sampler(logits), (mx.all(mx.isfinite(logits)) if finite_check else None)

            y, fin = step(cur.reshape(B, 1).astype(mx.int32))
            outs = [y] + ([fin] if finite_check else [])
            (mx.async_eval if pipelined else mx.eval)(*outs)
            y.tolist()
            t = time.perf_counter()
            for i in range(n):
                if pipelined:
                    nxt, nfin = step(y[:, None])
                    mx.async_eval(nxt, *([nfin] if finite_check else []))
                    if finite_check:
                        fin.item()
                    y.tolist()
                    y, fin = nxt, nfin
                else:
                    y, fin = step(y[:, None])
                    mx.eval(y, *([fin] if finite_check else []))
                    if finite_check:
                        fin.item()
                    y.tolist()
            if pipelined:
                mx.eval(y)
            return time.perf_counter() - t
        return run

    fns = {"plain": plain, "gen": gen, "gen_refchk": gen_refchk, "pipe": loop(True, True), "pipe_nofin": loop(True, False),
           "sync": loop(False, True), "sync_nofin": loop(False, False)}
    names = args.variants
    for name in names:
        fns[name]()  # warm-up (trace, compile)
    times = {name: [] for name in names}
    l0 = os.getloadavg()[0]
    for r in range(args.rounds):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            times[name].append(fns[name]() / n * 1e3)
    l1 = os.getloadavg()[0]
    print(f"B={B} steps={n} rounds={args.rounds} load {l0:.2f} -> {l1:.2f}")
    for name in names:
        ts = times[name]
        print(f"  {name:11s} min {min(ts):7.2f}  median {statistics.median(ts):7.2f} ms/step")


if __name__ == "__main__":
    main()
