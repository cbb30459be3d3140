"""Cost of the always-on safety checks of the generation path (docs/troubleshooting.md records the figures):

  finite   one `mx.all(mx.isfinite(logits))` per decode step, read on the host with the sampled token
           (generate_step): the pipelined greedy loop with it (as shipped) against the same loop without it
  ids      the vocabulary range check of a model call (one min/max reduction read on the host,
           models/base.py check_token_range): a call with check_ids=True against check_ids=False, for a
           one-token call with a cache and for a prefill chunk

    python benchmarks/input_checks.py --shape 64m --out benchmarks/results/input_checks_cpu.json [--cpu]

Best of several repetitions, the two variants alternating; timing noise on a shared machine is larger than some of the differences, so the
script prints both numbers and the difference, and the JSON keeps every figure.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time

import mlx.core as mx

from xlstm_mlx.checkpoints.random import randomize, shape_args
from xlstm_mlx.generation.generate import generate_step, prefill
from xlstm_mlx.generation.sample import Sampler
from xlstm_mlx.models.compiled import decode_fn
from xlstm_mlx.models.xlstm7b.model import Model
from xlstm_mlx.profiles import default_profile


def loop_without_finite_check(model, prompt, steps):
    """generate_step's pipelined greedy loop, minus the isfinite reduction (the reference for its cost)."""
    cache = model.make_cache(prompt.shape[0])
    prefill(model, prompt[:, :-1], cache)
    decode, sampler = decode_fn(model), Sampler()
    y = sampler(decode(prompt[:, -1:], cache)[:, -1])
    mx.async_eval(y)
    for i in range(steps):
        nxt = sampler(decode(y[:, None], cache)[:, -1]) if i + 1 < steps else None
        if nxt is not None:
            mx.async_eval(nxt)
        y.tolist()
        y = nxt


def shipped_loop(model, prompt, steps):
    for y in generate_step(model, prompt, max_tokens=steps):
        y.tolist()


def best_pair(fa, fb, reps):
    """Best time of each of two functions, run alternately (a shared machine's drift hits both alike)."""
    ta, tb = [], []
    for _ in range(reps):
        for fn, times in ((fa, ta), (fb, tb)):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    return min(ta), min(tb)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="64m")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--cpu", action="store_true")
    ap.add_argument("--out")
    a = ap.parse_args()
    if a.cpu:
        mx.set_default_device(mx.cpu)
    prof = default_profile(None)
    model = Model(shape_args(a.shape), prof)
    randomize(model, 0, dtype=prof.mx_compute_dtype)
    V = model.args.vocab_size
    res = {"device": str(mx.default_device()), "machine": platform.machine(), "mlx": mx.__version__,
           "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "command": " ".join(sys.argv),
           "shape": a.shape, "profile": prof.describe(), "decode": [], "ids": []}
    for B in a.batch:
        prompt = mx.random.randint(0, V, (B, 16), key=mx.random.key(1)).astype(mx.int32)
        for fn in (shipped_loop, loop_without_finite_check):
            fn(model, prompt, 4)  # warm-up: compile, allocator
        with_check, without = (t / a.steps for t in best_pair(lambda: shipped_loop(model, prompt, a.steps),
                                                              lambda: loop_without_finite_check(model, prompt, a.steps),
                                                              a.reps))
        r = {"batch": B, "ms_per_step_with_check": with_check * 1e3, "ms_per_step_without": without * 1e3,
             "overhead_pct": (with_check / without - 1) * 100}
        res["decode"].append(r)
        print(f"decode B={B}: {r['ms_per_step_with_check']:.3f} ms/step with the isfinite check, "
              f"{r['ms_per_step_without']:.3f} without ({r['overhead_pct']:+.1f} %)")
    for B, T in ((1, 1), (1, 2048)):
        ids = mx.random.randint(0, V, (B, T), key=mx.random.key(2)).astype(mx.int32)
        mx.eval(ids)

        def call(check):
            cache = model.make_cache(B)
            mx.eval(model(ids, cache=cache, check_ids=check), *cache.arrays())

        call(True), call(False)
        on, off = best_pair(lambda: call(True), lambda: call(False), a.reps)
        r = {"batch": B, "tokens": T, "ms_with_check": on * 1e3, "ms_without": off * 1e3,
             "overhead_ms": (on - off) * 1e3}
        res["ids"].append(r)
        print(f"model call [{B}, {T}]: {on * 1e3:.3f} ms with the id range check, {off * 1e3:.3f} ms without "
              f"({(on - off) * 1e3:+.3f} ms)")
    if a.out:
        with open(a.out, "w") as f:
            json.dump(res, f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
