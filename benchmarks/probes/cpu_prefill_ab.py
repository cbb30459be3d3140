"""A/B of module settings on the CPU prefill (state + last logits, as benchmarks/cpu_vs_transformers.py's
"prefill" figure: generate.prefill(prompt[:-1]) then model(last token) + argmax), alternating in one process.

Each variant is NAME=SETTING[,SETTING...], a SETTING module:ATTR=VALUE (VALUE a Python literal), blas_threads=N
(openblas_set_num_threads, which the skinny kernel's split follows too) or k_block=N (platform.skinny.set_k_block);
the variants run in turn
(the order reversed every other round), each --inner times a round; the table gives min / median per variant and
the 1-minute load average at the start and end.

    python benchmarks/probes/cpu_prefill_ab.py --variant one=xlstm_mlx.kernels.row_tiles:STREAMS=1 \
        --variant two=xlstm_mlx.kernels.row_tiles:STREAMS=2 [--tokens 512] [--rounds 8]
"""
import argparse
import ast
import importlib
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import mlx.core as mx  # noqa: E402

from xlstm_mlx import platform  # noqa: E402


class _Special:
    """blas_threads / k_block as settable attributes (getattr reads the value in use, setattr sets it)."""

    def __getattr__(self, name):
        from xlstm_mlx.platform import blas, skinny
        if name == "blas_threads":
            return blas.info()["threads"]
        if name == "k_block":
            return skinny.k_block_now()
        raise AttributeError(name)

    def __setattr__(self, name, value):
        from xlstm_mlx.platform import blas, skinny
        if name == "blas_threads":
            blas._open(blas.info()["path"]).set_threads(value)
        elif name == "k_block":
            skinny.set_k_block(value)
        else:
            raise AttributeError(name)


_SPECIAL = _Special()


def parse(spec: str):
    name, rest = spec.split("=", 1)
    sets = []
    for part in rest.split(","):
        target, value = part.split("=", 1)
        if ":" in target:
            mod, attr = target.split(":")
            sets.append((importlib.import_module(mod), attr, ast.literal_eval(value)))
        else:
            sets.append((_SPECIAL, target, ast.literal_eval(value)))
    return name, sets


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--shape", default="64m")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--tokens", type=int, default=512)
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--inner", type=int, default=2)
    p.add_argument("--variant", action="append", required=True)
    p.add_argument("--json", default=None)
    a = p.parse_args()
    platform.setup()
    mx.set_default_device(mx.cpu)
    from xlstm_mlx.generation.generate import prefill
    from xlstm_mlx.tools.bench import build_model

    model, _ = build_model(None, a.shape, "float32", None, 0, None)
    ids = mx.random.randint(0, model.args.vocab_size, (a.batch, a.tokens)).astype(mx.int32)
    variants = [parse(v) for v in a.variant]
    saved = {(m, at): getattr(m, at) for _, sets in variants for m, at, _ in sets}

    def run():
        c = model.make_cache(a.batch)
        prefill(model, ids[:, :-1], c)
        mx.argmax(model(ids[:, -1:], cache=c)[:, -1], axis=-1).tolist()

    times = {n: [] for n, _ in variants}
    load0 = os.getloadavg()[0]
    for n, sets in variants:  # warm-up of each
        for m, at, v in sets:
            setattr(m, at, v)
        run()
        for (m, at), v in saved.items():
            setattr(m, at, v)
    for r in range(a.rounds):
        for n, sets in (variants if r % 2 == 0 else variants[::-1]):
            for m, at, v in sets:
                setattr(m, at, v)
            for _ in range(a.inner):
                t = time.perf_counter()
                run()
                times[n].append((time.perf_counter() - t) * 1e3)
            for (m, at), v in saved.items():
                setattr(m, at, v)
    load1 = os.getloadavg()[0]
    print(f"{a.batch}x{a.tokens} prefill, {platform.describe()}; load {load0:.2f} -> {load1:.2f}")
    for n, ts in times.items():
        print(f"  {n:24s} min {min(ts):7.1f}  median {statistics.median(ts):7.1f}  max {max(ts):7.1f} ms "
              f"({len(ts)} runs)")
    if a.json:
        Path(a.json).write_text(json.dumps({"args": vars(a), "load": [load0, load1], "ms": times}, indent=1))


if __name__ == "__main__":
    main()
