"""How much of the CPU prefill each registry kernel costs in situ: the plain prefill (state + last logits, as
benchmarks/cpu_vs_transformers.py times it) with one kernel swapped for a stand-in that does almost no work but
keeps the shapes and the data flowing, alternating with the unchanged model in one process. The difference is
that kernel's share of the real run (with its memory traffic and its effect on the neighbours' caches); the
stand-ins' outputs are wrong, so only time is measured.

    python benchmarks/probes/cpu_prefill_standins.py [--rounds 6] [--only swiglu,headnorm,...]
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


def _swiglu(gz, width=None):  # the gate half, as one elementwise pass (a copy)
    return gz[..., : gz.shape[-1] // 2] * 1.0


def _headnorm(h, qkvo, o_offset, weight, bias, eps):
    return h.reshape(*h.shape[:-2], -1) * 1.0


def _chunkwise(q, k, v, i, f, state=None, eps=1e-6, chunk_size=64):
    return v * 1.0, state


def _add_rms(x, h, weight, bias, eps, dtype, want_y=True):
    r = x if h is None else x + h
    return r, r if want_y else None, r.astype(dtype)


def _matmul(x, w, bias=None):  # a product of the right shape from one column of w: ~1/K of the work
    out = x[..., :1] * w[:, 0]
    return out if bias is None else out + bias


STANDINS = {"swiglu": ("ffn.swiglu", _swiglu), "headnorm": ("mlstm.headnorm_gate", _headnorm),
            "chunkwise": ("mlstm.chunkwise", _chunkwise), "add_rms": ("norm.add_rms", _add_rms),
            "matmul": ("matmul.skinny", _matmul)}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--tokens", type=int, default=512)
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--only", default=",".join(STANDINS))
    a = p.parse_args()
    platform.setup()
    mx.set_default_device(mx.cpu)
    from xlstm_mlx.generation.generate import prefill
    from xlstm_mlx.tools.bench import build_model

    model, _ = build_model(None, "64m", "float32", None, 0, None)
    ids = mx.random.randint(0, model.args.vocab_size, (1, a.tokens)).astype(mx.int32)

    def run():
        c = model.make_cache(1)
        prefill(model, ids[:, :-1], c)
        mx.argmax(model(ids[:, -1:], cache=c)[:, -1], axis=-1).tolist()

    variants = [("as is", None)] + [(n, STANDINS[n]) for n in a.only.split(",")]
    res = {n: [] for n, _ in variants}
    load0 = os.getloadavg()[0]
    for r in range(a.rounds):
        for name, sub in (variants if r % 2 == 0 else variants[::-1]):
            saved = None
            if sub is not None:
                key, fn = sub
                saved = kernels.KERNELS[key]
                kernels.KERNELS[key] = saved._replace(fast=fn)
            try:
                run()
                t = time.perf_counter()
                run()
                res[name].append((time.perf_counter() - t) * 1e3)
            finally:
                if saved is not None:
                    kernels.KERNELS[sub[0]] = saved
    base = statistics.median(res["as is"])
    print(f"1x{a.tokens} prefill, {platform.describe()}; load {load0:.2f} -> {os.getloadavg()[0]:.2f}; "
          f"{a.rounds} rounds")
    for name, ts in res.items():
        print(f"  {name:10s} min {min(ts):7.1f}  median {statistics.median(ts):7.1f} ms"
              + ("" if name == "as is" else f"   in-situ cost ~{base - statistics.median(ts):6.1f} ms (median diff)"))


if __name__ == "__main__":
    main()
