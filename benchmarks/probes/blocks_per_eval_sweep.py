"""Wall time of a 2,048-token prefill chunk (B = 1 and 8, 7B shape, random bf16 weights) by prefill's
blocks_per_eval (generate.prefill; models/base.py): the best of the last three of four runs each, the default (1)
measured first and last. Writes $OUT/bpe_sweep.json (or ./bpe_sweep.json).

    python3 benchmarks/probes/blocks_per_eval_sweep.py
"""
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import mlx.core as mx  # noqa: E402

from xlstm_mlx import platform  # noqa: E402


def main() -> None:
    platform.setup()
    from xlstm_mlx.generation.generate import prefill
    from xlstm_mlx.tools.bench import build_model

    model, _ = build_model(None, "7b", "bfloat16", None, 0, None)
    res = {}
    for B in (1, 8):
        ids = mx.random.randint(0, model.args.vocab_size, (B, 2048)).astype(mx.int32)
        for bpe in (1, 0, 2, 4, 8, 1):
            ts = []
            for _ in range(4):
                cache = model.make_cache(B)
                mx.synchronize()
                t = time.perf_counter()
                prefill(model, ids, cache, blocks_per_eval=bpe)
                mx.synchronize()
                ts.append(time.perf_counter() - t)
            ms = min(ts[1:]) * 1e3
            res[f"B{B}_bpe{bpe}" + ("_again" if f"B{B}_bpe{bpe}" in res else "")] = ms
            print(f"B={B} blocks_per_eval={bpe}: {ms:.2f} ms  {B * 2048 / ms * 1e3:.0f} tok/s", flush=True)
    out = Path(os.environ.get("OUT", ".")) / "bpe_sweep.json"
    out.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
