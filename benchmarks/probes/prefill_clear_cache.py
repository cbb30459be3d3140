"""Chunked prefill as generate.prefill runs it (the buffer cache handed back after every chunk, mx.clear_cache)
against the same with the cache kept between chunks and handed back once at the end, alternating, on the default
device: wall time and peak active memory. 64m shape, float32 on the CPU (any shape / dtype by flag; on a GPU:
--shape 7b --dtype bfloat16 --tokens 65536 --step 2048). The question: does re-allocating a chunk's buffers at
every chunk cost time (2-core CPU VM, 2026-12-02: no, within the noise of four alternating rounds).

    python benchmarks/probes/prefill_clear_cache.py [--shape 64m] [--dtype float32] [--tokens 8192] [--step 1024]
"""
import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import mlx.core as mx  # noqa: E402

from xlstm_mlx import platform  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--shape", default="64m")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--tokens", type=int, default=8192)
    p.add_argument("--step", type=int, default=1024)
    p.add_argument("--rounds", type=int, default=4)
    a = p.parse_args()
    platform.setup()
    from xlstm_mlx.generation import generate as g
    from xlstm_mlx.tools.bench import build_model

    model, _ = build_model(None, a.shape, a.dtype, None, 0, None)
    ids = mx.random.randint(0, model.args.vocab_size, (1, a.tokens)).astype(mx.int32)
    real_clear = mx.clear_cache

    def kept(model, tokens, cache):  # mx.clear_cache a no-op inside prefill, called once after the last chunk
        g.mx.clear_cache = lambda: None
        try:
            g.prefill(model, tokens, cache, prefill_step_size=a.step)
        finally:
            g.mx.clear_cache = real_clear
        real_clear()

    rows = []
    for r in range(a.rounds):
        forms = [("as prefill is", lambda m, t, c: g.prefill(m, t, c, prefill_step_size=a.step)),
                 ("kept between", kept)]
        for name, fn in (forms if r % 2 == 0 else forms[::-1]):  # the order alternates between rounds
            cache = model.make_cache(1)
            real_clear()
            mx.reset_peak_memory()
            t = time.perf_counter()
            fn(model, ids, cache)
            mx.eval(cache.arrays())
            ms = (time.perf_counter() - t) * 1e3
            rows.append({"round": r, "form": name, "ms": ms, "peak_gb": mx.get_peak_memory() / 1e9})
            print(f"round {r} {name:18s} {ms:8.0f} ms  peak {rows[-1]['peak_gb']:.3f} GB", flush=True)
    print(json.dumps({"device": str(mx.default_device()), "args": vars(a), "rows": rows}))


if __name__ == "__main__":
    main()
