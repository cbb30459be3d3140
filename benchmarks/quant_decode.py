"""Decode speed of quantized weights against bfloat16, batch 1, on random weights of a named shape.

    python benchmarks/quant_decode.py                       # xLSTM-7B shape, bf16 vs 8-bit vs 4-bit (GPU)
    python benchmarks/quant_decode.py --shape 64m --tokens 32 --bits 4   # quick check, any device
    python benchmarks/quant_decode.py --json out.json

The bar (quantization): on the H100, 4-bit decode at batch 1 >= 1.8x the bfloat16 decode. Decode at batch 1
reads every weight once per token, so the floor is bytes/bandwidth: bf16 13.7 GB vs 4-bit 3.9 GB
(3.55x fewer bytes) for xLSTM-7B; the measured ratio says how much of that the quantized matmuls keep.

The bfloat16 weights are drawn in bfloat16 one tensor at a time (no float32 copy of 7B is ever made);
each quantized model is quantized from those same arrays with xlstm_mlx.checkpoints.quantize (the code path of
`xlstm-mlx convert -q`, group size 64 by default, embeddings and lm_head included), then timed with the
same loop: prefill a short prompt, then greedy decode, one token per step, the next step's graph queued
before the previous token is read (as generate.py does).
"""

from __future__ import annotations

import argparse
import json
import time

import mlx.core as mx
from mlx.utils import tree_flatten, tree_unflatten

from xlstm_mlx.models.xlstm7b.model import Model
from xlstm_mlx.profiles import load_profile
from xlstm_mlx.checkpoints.quantize import parameter_bytes, plan_quantization, quantize_model
from xlstm_mlx.checkpoints.random import shape_args


def random_bf16_model(shape: str, seed: int = 0) -> Model:
    """Random weights drawn straight in bfloat16, one evaluated tensor at a time (peak ~ final size)."""
    model = Model(shape_args(shape), load_profile("fast"))
    new = []
    for i, (name, p) in enumerate(tree_flatten(model.parameters())):
        z = mx.random.normal(p.shape, dtype=mx.bfloat16, key=mx.random.key(seed * 1_000_003 + i))
        if "norm" in name:
            v = 1.0 + 0.1 * z
        elif name.endswith("bias"):
            v = 2.0 * z
        else:
            v = z * (p.shape[-1] ** -0.5 if p.ndim == 2 else 0.2)
        new.append((name, v.astype(mx.bfloat16)))
        mx.eval(new[-1][1])
    model.update(tree_unflatten(new))
    return model


def quantized_twin(model: Model, bits: int, group_size: int) -> Model:
    """A second model sharing nothing but the source arrays, quantized the way `convert -q` does."""
    twin = Model(model.args, model.profile)
    twin.update(model.parameters())
    quantize_model(twin, plan_quantization(twin, bits, group_size), evaluate=True)
    return twin


def decode_tps(model: Model, tokens: int, prompt: int = 16, warmup: int = 8) -> float:
    cache = model.make_cache(1)
    ids = mx.random.randint(3, model.args.vocab_size, (1, prompt), key=mx.random.key(1))
    tok = mx.argmax(model(ids, cache=cache)[:, -1:], axis=-1)
    mx.eval(tok)

    def run(n):
        nonlocal tok
        nxt = mx.argmax(model(tok, cache=cache)[:, -1:], axis=-1)
        mx.async_eval(nxt)
        for _ in range(n - 1):
            tok = nxt
            nxt = mx.argmax(model(tok, cache=cache)[:, -1:], axis=-1)
            mx.async_eval(nxt)
            tok.item()  # wait for the previous token, as a streaming generator does
        tok = nxt
        tok.item()

    run(warmup)
    t = time.perf_counter()
    run(tokens)
    return tokens / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", default="7b", help="random_checkpoint shape name (default 7b)")
    ap.add_argument("--tokens", type=int, default=128, help="decode steps timed (after warm-up)")
    ap.add_argument("--bits", type=int, nargs="+", default=[8, 4], help="quantized variants to time")
    ap.add_argument("--group-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per variant; the best is kept")
    ap.add_argument("--json", help="write the results here too")
    ns = ap.parse_args()

    print(f"device: {mx.default_device()}  shape: {ns.shape}  batch 1, {ns.tokens} tokens, best of {ns.repeats}")
    base = random_bf16_model(ns.shape)
    rows = []

    def record(label, model):
        tps = max(decode_tps(model, ns.tokens) for _ in range(ns.repeats))
        gb = parameter_bytes(model) / 1e9
        rows.append({"weights": label, "GB": round(gb, 3), "tok_s": round(tps, 2)})
        ratio = tps / rows[0]["tok_s"]
        print(f"{label:>10}: {gb:7.3f} GB  {tps:8.2f} tok/s  {ratio:5.2f}x bf16", flush=True)

    record("bfloat16", base)
    for bits in ns.bits:
        q = quantized_twin(base, bits, ns.group_size)
        record(f"{bits}-bit", q)
        del q
    if ns.json:
        with open(ns.json, "w") as f:
            json.dump({"device": str(mx.default_device()), "shape": ns.shape, "group_size": ns.group_size,
                       "tokens": ns.tokens, "rows": rows}, f, indent=2)
    four = next((r for r in rows if r["weights"] == "4-bit"), None)
    if four:
        print(f"4-bit / bf16 decode speed: {four['tok_s'] / rows[0]['tok_s']:.2f}x (bar: >= 1.8x on the H100)")


if __name__ == "__main__":
    main()
