"""Where a CPU prefill's time goes in situ: every registry kernel the model calls (kernels.get) is wrapped so that
its inputs are evaluated first and its own output is then evaluated and timed (outermost call only: a kernel
called inside another counts to the outer one); "rest" is the whole forward's time less the kernels' (the ops
the model runs outside the registry: transposes, casts, slices, the residual adds, the gate soft caps' callers).
Forcing evaluation at every kernel boundary changes MLX's scheduling a little, so the total here is the
instrumented time, printed beside the plain one.

    python benchmarks/probes/cpu_prefill_parts.py [--tokens 512] [--reps 5]
"""
import argparse
import collections
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import mlx.core as mx  # noqa: E402

from xlstm_mlx import kernels, platform  # noqa: E402


def arrays(obj):
    if isinstance(obj, mx.array):
        yield obj
    elif isinstance(obj, (tuple, list)):
        for o in obj:
            yield from arrays(o)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--shape", default="64m")
    p.add_argument("--tokens", type=int, default=512)
    p.add_argument("--reps", type=int, default=5)
    a = p.parse_args()
    platform.setup()
    mx.set_default_device(mx.cpu)
    from xlstm_mlx.generation.generate import prefill
    from xlstm_mlx.tools.bench import build_model

    model, _ = build_model(None, a.shape, "float32", None, 0, None)
    ids = mx.random.randint(0, model.args.vocab_size, (1, a.tokens)).astype(mx.int32)
    real_get = kernels.get
    acc = collections.defaultdict(float)
    calls = collections.Counter()
    depth = [0]

    def timed_get(name, *args, **kw):
        fn = real_get(name, *args, **kw)

        def wrapped(*xs, **kws):
            if depth[0]:
                return fn(*xs, **kws)
            mx.eval(list(arrays(xs)) + list(arrays(list(kws.values()))))
            depth[0] += 1
            try:
                t = time.perf_counter()
                out = fn(*xs, **kws)
                mx.eval(list(arrays(out)))
                key = name
                if name == "matmul.skinny" and len(xs) >= 2:  # by product shape: rows x K x N
                    key = f"{name} {'x'.join(map(str, xs[0].shape))} @ {xs[1].shape[0]}"
                acc[key] += time.perf_counter() - t
                calls[key] += 1
            finally:
                depth[0] -= 1
            return out
        return wrapped

    def run():
        c = model.make_cache(1)
        prefill(model, ids[:, :-1], c)
        mx.argmax(model(ids[:, -1:], cache=c)[:, -1], axis=-1).tolist()

    def plain():
        run()
        best = float("inf")
        for _ in range(a.reps):
            t = time.perf_counter()
            run()
            best = min(best, time.perf_counter() - t)
        return best * 1e3

    load0 = os.getloadavg()[0]
    plain_ms = plain()
    kernels.get = timed_get
    try:
        run()
        best, best_parts = float("inf"), None
        for _ in range(a.reps):
            acc.clear()
            calls.clear()
            t = time.perf_counter()
            run()
            total = time.perf_counter() - t
            if total < best:
                best, best_parts = total, (dict(acc), dict(calls))
    finally:
        kernels.get = real_get
    parts, n = best_parts
    print(f"1x{a.tokens} prefill (state + last logits), {platform.describe()}; load {load0:.2f} -> "
          f"{os.getloadavg()[0]:.2f}")
    print(f"plain {plain_ms:.1f} ms (best of {a.reps}); instrumented {best * 1e3:.1f} ms (best of {a.reps}):")
    for k, v in sorted(parts.items(), key=lambda kv: -kv[1]):
        print(f"  {k:22s} {v * 1e3:7.1f} ms  {n[k]:4d} calls")
    print(f"  {'rest':22s} {(best - sum(parts.values())) * 1e3:7.1f} ms")


if __name__ == "__main__":
    main()
