"""Where the time goes on the CPU: one decode step and one prefill chunk of a random-weight model, by op type.

Each op type is timed alone at the exact shapes the model runs (matmuls: every projection and the lm_head;
transcendentals: the activations and soft-caps, MLX's op and the fastmath form; the recurrence kernels; the norms;
the embedding gather), next to the whole step; what the parts do not explain is graph overhead (scheduling, copies,
the host read of the token). Figures are the best of `--reps` rounds, rounds of the whole table interleaved, and
every row carries the load average read when it was measured (the machine is shared).

    python benchmarks/cpu_profile.py --shape 64m --out benchmarks/results/cpu_profile
"""

from __future__ import annotations

import argparse
import json
import os
import platform as pyplatform
import sys
import time
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn

from xlstm_mlx import kernels, platform
from xlstm_mlx.checkpoints.random import randomize, shape_args
from xlstm_mlx.generation.generate import generate_step
from xlstm_mlx.kernels import fastmath
from xlstm_mlx.models.xlstm7b.model import Model


def load_avg() -> float:
    return os.getloadavg()[0]


def cpu_model() -> str:
    try:
        return next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name"))
    except (OSError, StopIteration):
        return pyplatform.processor() or "unknown"


def timed(fn, reps: int) -> float:
    """Best wall time (ms) of `reps` calls after one warm-up; fn evaluates what it computes."""
    fn()
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best * 1e3


def linears(model):
    """(name, weight) of every projection in the blocks (the lm_head apart)."""
    out = []
    for path, m in model.leaf_modules_flat():
        if isinstance(m, nn.Linear) and path != "lm_head":
            out.append((path, m.weight))
    return out


def parts(model, B: int, T: int) -> dict:
    """name -> a function of nothing that evaluates that op type at the shapes of a [B, T] call."""
    a = model.args
    H, V, F, NH = a.hidden_size, a.vocab_size, a.ffn_dim, a.num_heads
    x = mx.random.normal((B, T, H))
    W_head = model.lm_head.weight
    projs = linears(model)
    gate = mx.random.normal((B, T, F)) * 2
    ogate = mx.random.normal((B, T, a.v_dim)) * 2
    logits = mx.random.normal((B, 1, V)) * 20  # generation needs the last position's logits only
    gates = mx.random.normal((B, T, NH)) * 5
    mx.eval(x, gate, ogate, logits, gates)
    L = a.num_blocks

    xin = {d: mx.random.normal((B, T, d)) for d in {w.shape[1] for _, w in projs}}
    mx.eval(xin)

    def proj():
        mx.eval([xin[w.shape[1]] @ w.T for _, w in projs])

    def head():
        mx.eval(x[:, -1:] @ W_head.T)

    def act(fn_silu, fn_sig):
        return lambda: mx.eval([fn_silu(gate) * 1.0 for _ in range(L)] + [fn_sig(ogate) for _ in range(L)])

    def cap(fn):
        return lambda: mx.eval(fn(logits, a.output_logit_soft_cap),
                               [fn(gates, a.gate_soft_cap) for _ in range(2 * L)])

    blk = model.blocks[0]
    q = mx.random.normal((B, NH, T, a.qk_head_dim))
    k = mx.random.normal((B, NH, T, a.qk_head_dim))
    v = mx.random.normal((B, NH, T, a.v_head_dim))
    ig, fg = mx.random.normal((B, NH, T)) * 3, mx.random.normal((B, NH, T)) * 3 + 3
    state = blk.make_state(B)
    mx.eval(q, k, v, ig, fg, state)
    prof = model.profile
    if T == 1:
        step = kernels.get(f"mlstm.{prof.step_kernel}")

        def rec():
            mx.eval([step(q[:, :, 0], k[:, :, 0], v[:, :, 0], ig[:, :, 0], fg[:, :, 0], state) for _ in range(L)])
    else:
        seq = kernels.get(f"mlstm.{prof.prefill_kernel}")

        def rec():
            mx.eval([seq(q, k, v, ig, fg, state, chunk_size=prof.chunk_size) for _ in range(L)])

    hn = mx.random.normal((B, T, NH, a.v_head_dim))
    mx.eval(hn)

    def norms():
        outs = []
        for b in model.blocks:
            outs += [b.norm_mlstm(x), b.norm_ffn(x), b.mlstm_layer.multihead_norm(hn)]
        outs.append(model.backbone.out_norm(x))
        mx.eval(outs)

    ids = mx.zeros((B, T), mx.int32)
    emb = model.backbone.embeddings

    return {
        "matmul: block projections": proj,
        "matmul: lm_head (last position)": head,
        "transcendental: silu + sigmoid, MLX ops": act(fastmath.silu_ref, fastmath.sigmoid_ref),
        "transcendental: silu + sigmoid, fastmath": act(fastmath.silu_fast, fastmath.sigmoid_fast),
        "transcendental: soft-caps, MLX tanh": cap(fastmath.soft_cap_ref),
        "transcendental: soft-caps, fastmath": cap(fastmath.soft_cap_fast),
        f"recurrence: mlstm.{prof.step_kernel if T == 1 else prof.prefill_kernel}": rec,
        "norms (RMSNorm, headwise LayerNorm)": norms,
        "embedding gather": lambda: mx.eval(emb(ids)),
    }


def whole(model, B: int, T: int) -> dict:
    """The whole step (decode) or chunk (prefill), as users call it, with the reference forms and the fast ones."""
    ids = mx.zeros((B, T), mx.int32)
    out = {}
    if T == 1:
        cache = model.make_cache(B)

        def plain():
            y = mx.argmax(model(ids, cache=cache)[:, -1], axis=-1)
            y.tolist()

        def gen(n=16):
            c = model.make_cache(B)
            g = generate_step(model, ids, cache=c, max_tokens=n + 1)
            next(g).tolist()
            t = time.perf_counter()
            for y in g:
                y.tolist()
            return (time.perf_counter() - t) / n

        out["whole step: model(tok, cache=c) + argmax, fast forms"] = plain
        out["whole step: generate_step, per token"] = ("gen", gen)
    else:
        def chunk():
            c = model.make_cache(B)
            model(ids, cache=c)
            mx.eval(c.arrays())  # state only, as generate.prefill

        out["whole chunk: state only (generate.prefill), fast forms"] = chunk
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="64m")
    ap.add_argument("--decode-batch", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--prefill", default="1x512", help="BATCHxLENGTH of the prefill chunk")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results/cpu_profile")
    args = ap.parse_args()
    platform.setup()
    mx.set_default_device(mx.cpu)
    model = randomize(Model(shape_args(args.shape)))
    pb, pt = (int(v) for v in args.prefill.split("x"))
    cases = [(f"decode B={b}", b, 1) for b in args.decode_batch] + [(f"prefill B={pb} T={pt}", pb, pt)]
    rows: dict = {}
    for _ in range(args.rounds):
        for label, B, T in cases:
            items = list(parts(model, B, T).items()) + list(whole(model, B, T).items())
            for name, fn in items:
                if isinstance(fn, tuple):  # generate_step: its own per-token clock
                    ms = min(fn[1]() for _ in range(3)) * 1e3
                else:
                    ms = timed(fn, args.reps)
                key = (label, name)
                la = load_avg()
                if key not in rows or ms < rows[key]["ms"]:
                    rows[key] = {"case": label, "part": name, "ms": ms, "load_avg_1min": la}
            # the whole step once more with the reference forms (MLX's transcendentals), same round
            with kernels.use_reference():
                for name, fn in whole(model, B, T).items():
                    if isinstance(fn, tuple):
                        continue
                    ref_name = name.replace("fast forms", "MLX ops, uncompiled (references forced)")
                    ms, key = timed(fn, args.reps), (label, ref_name)
                    if key not in rows or ms < rows[key]["ms"]:
                        rows[key] = {"case": label, "part": ref_name, "ms": ms, "load_avg_1min": load_avg()}
    result = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "command": " ".join(sys.argv),
              "cpu": cpu_model(), "cores": os.cpu_count(), "mlx": mx.__version__, "platform": platform.describe(),
              "shape": args.shape, "rows": list(rows.values())}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [f"| case | part | ms (best) | load avg (1 min) |", "|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['case']} | {r['part']} | {r['ms']:.3f} | {r['load_avg_1min']:.2f} |")
    print(f"{result['date']}  {result['cpu']} ({result['cores']} cores), mlx {result['mlx']}, {result['platform']}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
