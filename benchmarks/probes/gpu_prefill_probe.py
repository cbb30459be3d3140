"""Prefill levers on the GPU, one process: chunk size and mx.compile of the state-only forward (7B shape)."""
import sys, time
import mlx.core as mx
from xlstm_mlx.tools import bench
from xlstm_mlx.models.cache import Cache

model, _ = bench.build_model(None, sys.argv[1] if len(sys.argv) > 1 else "7b", None, None, 0)

def compiled_prefill(model):
    sizes = [len(s) for s in model.make_cache(1).layers]
    def f(tokens, *flat):
        layers, i = [], 0
        for n in sizes:
            layers.append(tuple(flat[i:i + n])); i += n
        c = Cache(layers, tokens.shape[0])
        model(tokens, cache=c)
        return c.arrays()
    return mx.compile(f)

def run(label, B, T, fn):
    ids = mx.random.randint(0, 50304, (B, T)).astype(mx.int32)
    def once():
        c = model.make_cache(B)
        out = fn(ids, c)
        mx.eval(out); out[0].reshape(-1)[:1].item()
    once(); ts = []
    for _ in range(3):
        t = time.perf_counter(); once(); ts.append(time.perf_counter() - t)
    print(f"{label} B={B} T={T}: {B*T/min(ts):.0f} tok/s ({min(ts)*1e3:.1f} ms)", flush=True)

base = model.profile
for B, T in [(1, 2048), (8, 2048)]:
    for L in (64, 128, 256):
        model.profile = base.replace(chunk_size=L)
        run(f"eager L={L}", B, T, lambda ids, c: (model(ids, cache=c), c.arrays())[1])
        cp = compiled_prefill(model)
        run(f"compiled L={L}", B, T, lambda ids, c: cp(ids, *c.arrays()))
