"""fastmath.exp with the subnormal results flushed (x < -87.3 -> 0, the form in kernels/fastmath.py since
2026-12-03) against the earlier form that rounded them (input clamped at -110, 2^n in two halves, subnormal
products), alternating in one process: per value on inputs whose results are normal, subnormal or zero, the
64m chunk scan of four layers (whose decay matrices are half -inf), and the 64m prefill (state + last logits).

    python benchmarks/probes/cpu_exp_subnormal.py [--rounds 6]
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
from xlstm_mlx.kernels import fastmath as fm  # noqa: E402


def _exp_rounding_subnormals(x):
    """The form before 2026-12-03 session 13 (same polynomial, input clamped to [-110, 89], no flush)."""
    xc = mx.where(x < -110.0, -110.0, mx.where(x > fm._EXP_HI, fm._EXP_HI, x))
    n = mx.stop_gradient((xc * fm._LOG2E + fm._ROUND) - fm._ROUND)
    r = (xc - n * fm._LN2_HI) - n * fm._LN2_LO
    p = fm._EXP_C[-1]
    for c in reversed(fm._EXP_C[:-1]):
        p = p * r + c
    p = p * r + 1.0
    ni = n.astype(mx.int32)
    n1 = mx.right_shift(ni, 1)
    lo, hi = mx.stop_gradient(fm._pow2(n1)), mx.stop_gradient(fm._pow2(ni - n1))
    return (p * lo) * hi


OLD = {"exp_fast": mx.compile(_exp_rounding_subnormals)}
OLD["sigmoid_fast"] = mx.compile(lambda x: 1.0 / (1.0 + _exp_rounding_subnormals(-x)))
OLD["silu_fast"] = mx.compile(lambda x: x * (1.0 / (1.0 + _exp_rounding_subnormals(-x))))
NEW = {k: getattr(fm, k) for k in OLD}


def use(forms):
    for k, v in forms.items():
        setattr(fm, k, v)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=6)
    a = p.parse_args()
    platform.setup()
    mx.set_default_device(mx.cpu)
    from xlstm_mlx.generation.generate import prefill
    from xlstm_mlx.tools.bench import build_model

    n = 4 * 8 * 64 * 64
    vals = {"normal results (-80)": mx.full((n,), -80.0), "N(0,1)*10-10": mx.random.normal((n,)) * 10 - 10,
            "subnormal results (-100)": mx.full((n,), -100.0), "-inf": mx.full((n,), -mx.inf)}
    B, NH, dqk, dv, T = 1, 4, 64, 128, 512
    q, k = mx.random.normal((B, NH, T, dqk)), mx.random.normal((B, NH, T, dqk))
    v = mx.random.normal((B, NH, T, dv))
    ig, fg = mx.random.normal((B, NH, T)) * 3, mx.random.normal((B, NH, T)) * 3 + 3
    st = kernels.mlstm_zero_state(B, NH, dqk, dv, mx.float32)
    mx.eval(vals, q, k, v, ig, fg, st)
    seq = kernels.get("mlstm.chunkwise")
    model, _ = build_model(None, "64m", "float32", None, 0, None)
    ids = mx.random.randint(0, model.args.vocab_size, (1, 512)).astype(mx.int32)

    def pf():
        c = model.make_cache(1)
        prefill(model, ids[:, :-1], c)
        mx.argmax(model(ids[:, -1:], cache=c)[:, -1], axis=-1).tolist()

    cases = {f"exp, {name}": (lambda x=x: mx.eval(fm.exp(x))) for name, x in vals.items()}
    cases["chunk scan, 4 layers, T=512"] = lambda: mx.eval([seq(q, k, v, ig, fg, st, eps=1e-6) for _ in range(4)])
    cases["prefill 1x512, state + last logits"] = pf
    forms = [("flushed (new)", NEW), ("rounded subnormals (old)", OLD)]
    res = {}
    load0 = os.getloadavg()[0]
    for name, forms_ in forms:
        use(forms_)
        for fn in cases.values():
            fn()
    for r in range(a.rounds):
        for name, forms_ in (forms if r % 2 == 0 else forms[::-1]):
            use(forms_)
            for case, fn in cases.items():
                t = time.perf_counter()
                fn()
                res.setdefault((case, name), []).append((time.perf_counter() - t) * 1e3)
    use(NEW)
    print(f"{platform.describe()}; load {load0:.2f} -> {os.getloadavg()[0]:.2f}; {a.rounds} rounds")
    for case in cases:
        cells = []
        for name, _ in forms:
            ts = res[(case, name)]
            per = f" ({min(ts) * 1e6 / n:.1f} ns a value)" if case.startswith("exp") else ""
            cells.append(f"{name}: min {min(ts):.2f} med {statistics.median(ts):.2f} ms{per}")
        print(f"  {case:36s} " + " | ".join(cells))


if __name__ == "__main__":
    main()
