"""Peak memory of chunked prefill against prompt length and chunk size, with and without handing the
buffers back (mx.clear_cache) between chunks. Run from the repo root: python benchmarks/prefill_memory.py 7b
"""
import json, sys, time
import mlx.core as mx
sys.path.insert(0, "benchmarks")
from generation_loop import build
from xlstm_mlx.generation.generate import prefill

model = build(sys.argv[1], "bfloat16")
GB = 1e9
base = mx.get_active_memory() / GB
print(f"weights/active after build {base:.3f} GB", flush=True)
ids_all = mx.random.randint(3, 259, (1, 32768)).astype(mx.int32)
mx.eval(ids_all)

def run(T, step, clear_each=False):
    cache = model.make_cache(1)
    mx.clear_cache(); mx.reset_peak_memory()
    per = []
    for s in range(0, T, step):
        model(ids_all[:, s:s + step], cache=cache)
        mx.eval(cache.arrays())
        per.append(round(mx.get_peak_memory() / GB - base, 3))
        if clear_each:
            mx.clear_cache()
    return {"T": T, "step": step, "clear_each": clear_each, "peak_over_weights_gb": round(mx.get_peak_memory() / GB - base, 3),
            "active_after_gb": round(mx.get_active_memory() / GB - base, 3), "cache_gb": round(mx.get_cache_memory() / GB, 3),
            "peak_after_each_chunk": per}

run(2048, 2048)
for T, step, ce in [(2048, 2048, False), (4096, 2048, False), (8192, 2048, False), (16384, 2048, False),
                    (16384, 2048, True), (2047, 2048, False), (16383, 2048, False), (2048, 512, False), (16384, 512, False)]:
    print(json.dumps(run(T, step, ce)), flush=True)
