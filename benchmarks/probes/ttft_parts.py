"""Time to first token in parts, 7B shape random weights (GPU): prefill of 2,048 / 2,047 / 1,984 tokens, the
whole generate_step(max_tokens=1) call, and the first decode step after a prefilled cache (best of 4 each, one
process). Probe behind the TTFT breakdown in benchmarks/results/gpu_h200_2026-12-02b.md:

    python3 benchmarks/probes/ttft_parts.py
"""
import sys, time
sys.path.insert(0, str(__import__('pathlib').Path(__file__).resolve().parents[2]))
import mlx.core as mx
from xlstm_mlx import platform
platform.setup()
from xlstm_mlx.tools.bench import build_model
from xlstm_mlx.generation.generate import generate_step, prefill
model, _ = build_model(None, "7b", "bfloat16", None, 0, None)
ids = mx.random.randint(0, model.args.vocab_size, (1, 2048), key=mx.random.key(1)).astype(mx.int32)
def t(fn, n=4):
    fn(); ts = []
    for _ in range(n):
        mx.synchronize(); a = time.perf_counter(); fn(); mx.synchronize(); ts.append(time.perf_counter() - a)
    return min(ts) * 1e3
def pre(T):
    c = model.make_cache(1); prefill(model, ids[:, :T], c); mx.eval(c.arrays())
def ttft():
    next(generate_step(model, ids, max_tokens=1)).item()
def ttft_nopre():
    c = model.make_cache(1); prefill(model, ids[:, :2047], c); mx.eval(c.arrays())
    a = time.perf_counter(); next(generate_step(model, ids[:, 2047:], cache=c, max_tokens=1)).item(); return time.perf_counter() - a
print(f"TTFT-PARTS prefill 2048: {t(lambda: pre(2048)):.1f} ms; prefill 2047: {t(lambda: pre(2047)):.1f} ms; prefill 1984: {t(lambda: pre(1984)):.1f} ms; ttft: {t(ttft):.1f} ms", flush=True)
ttft_nopre(); print(f"TTFT-PARTS first step after a prefilled cache: {min(ttft_nopre() for _ in range(4))*1e3:.1f} ms", flush=True)
