"""Does process history move time to first token? 7B shape random weights (GPU), one process: the
generate_step(max_tokens=1) call on a 2,048-token prompt timed (best of 4, synchronized before each) when fresh,
after bench's decode at batch 64, after a 65,536-token prefill, then through bench's own bench_ttft (which does not
synchronize before its clock starts). Probe for the bench-vs-standalone TTFT gap in gpu_h200_2026-12-02b.md:

    python3 benchmarks/probes/ttft_history.py
"""
import sys
import time

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2]))
import mlx.core as mx

from xlstm_mlx import platform

platform.setup()
from xlstm_mlx.generation.generate import generate_step  # noqa: E402
from xlstm_mlx.tools.bench import bench_decode, bench_prefill, bench_ttft, build_model  # noqa: E402

model, _ = build_model(None, "7b", "bfloat16", None, 0, None)
key = mx.random.key(0)
ids = mx.random.randint(0, model.args.vocab_size, (1, 2048), key=mx.random.key(1)).astype(mx.int32)


def ttft():
    next(generate_step(model, ids, max_tokens=1)).item()


def best(n=4):
    ttft()
    ts = []
    for _ in range(n):
        mx.synchronize()
        a = time.perf_counter()
        ttft()
        ts.append(time.perf_counter() - a)
    return min(ts) * 1e3


print(f"TTFT-HIST fresh: {best():.1f} ms", flush=True)
mx.clear_cache()
print(f"TTFT-HIST after clear_cache: {best():.1f} ms", flush=True)
bench_decode(model, 64, 32, 2, 0, key)
print(f"TTFT-HIST after decode B=64: {best():.1f} ms", flush=True)
bench_prefill(model, 1, 65536, 1, 0, key, 2048)
print(f"TTFT-HIST after prefill 1x65536: {best():.1f} ms", flush=True)
mx.clear_cache()
print(f"TTFT-HIST after clear_cache: {best():.1f} ms", flush=True)
r = bench_ttft(model, 2048, 3, 1, key, 2048)
print(f"TTFT-HIST bench_ttft: {r['seconds'] * 1e3:.1f} ms ({r['reps']} reps)", flush=True)
print(f"TTFT-HIST again: {best():.1f} ms", flush=True)
