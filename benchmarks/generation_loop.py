"""What the generation loop costs on top of the model: decode through generate_step / stream_generate
against a bare synchronous loop of model steps, chunked prefill speed and peak memory against prompt length,
and batch_generate throughput. Random weights of a named shape (xlstm_mlx.checkpoints.random.SHAPES).

    python benchmarks/generation_loop.py --shape 7b --dtype bfloat16 --out results.json

Timings are wall-clock after a warm-up; each figure is the best of --repeats runs.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import mlx.core as mx
from mlx.utils import tree_flatten, tree_map

from xlstm_mlx.generation.generate import batch_generate, generate_step, prefill, stream_generate
from xlstm_mlx.models.xlstm7b.model import Model
from xlstm_mlx.profiles import default_profile
from xlstm_mlx.checkpoints.random import byte_tokenizer, randomize, shape_args
from xlstm_mlx.generation.tokenizer import Tokenizer


def build(shape: str, dtype: str) -> Model:
    model = Model(shape_args(shape), default_profile(dtype))
    randomize(model, seed=0)
    model.update(tree_map(lambda p: p.astype(model.profile.mx_compute_dtype), model.parameters()))
    mx.eval(model.parameters())
    mx.clear_cache()
    return model


def bare_loop(model, prompt, n, step=None):
    """The least a decode loop can do: step, argmax, wait, hand the token to Python (no pipelining).
    `step(tokens, cache)` defaults to the plain model call; compiled_decode.decode_fn(model) is the fused one."""
    step = step or (lambda t, c: model(t, cache=c))
    cache = model.make_cache(prompt.shape[0])
    prefill(model, prompt[:, :-1], cache)
    y = mx.argmax(step(prompt[:, -1:], cache)[:, -1], -1)
    mx.eval(y)
    t0 = time.perf_counter()
    for _ in range(n):
        y = mx.argmax(step(y[:, None], cache)[:, -1], -1)
        y.tolist()
    return time.perf_counter() - t0


def timed_stream(it, n):
    """Seconds from the first item to the n-th (decode only: the prefill and first step are excluded)."""
    t0 = None
    count = 0
    for _ in it:
        count += 1
        if count == 1:
            t0 = time.perf_counter()
        if count == n + 1:
            break
    return time.perf_counter() - t0


def best(fn, repeats):
    return min(fn() for _ in range(repeats))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--shape", default="7b")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--tokens", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--prompt-lengths", default="2048,16384")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--step-sweep", default="512,1024,2048,4096",
                   help="prefill_step_size values to time on the longest prompt length ('' to skip)")
    p.add_argument("--out")
    a = p.parse_args()

    t = time.perf_counter()
    model = build(a.shape, a.dtype)
    weight_bytes = sum(v.nbytes for _, v in tree_flatten(model.parameters()))
    res = {"device": str(mx.default_device()), "platform": platform.platform(), "shape": a.shape, "dtype": a.dtype,
           "weight_bytes": weight_bytes, "build_s": round(time.perf_counter() - t, 1), "decode_tokens": a.tokens}
    tok = Tokenizer(byte_tokenizer(), bos_token_id=0, eos_token_ids=[2], pad_token_id=1)
    prompt = mx.array([list(range(3, 259))[:64]], dtype=mx.int32)
    n = a.tokens

    sampling = dict(temp=0.8, top_k=50, top_p=0.95, min_p=0.05, repetition_penalty=1.1, seed=0)
    from xlstm_mlx.models.compiled import compiled_decode_enabled, decode_fn

    res["compiled_decode_in_generate_step"] = compiled_decode_enabled()
    fused = decode_fn(model, use_compiled=True)
    methods = {
        "bare_sync": lambda: bare_loop(model, prompt, n),
        "bare_sync_compiled": lambda: bare_loop(model, prompt, n, fused),
        "generate_step": lambda: timed_stream(
            (y.tolist() for y in generate_step(model, prompt, max_tokens=n + 1)), n),
        "stream_generate_greedy": lambda: timed_stream(
            stream_generate(model, tok, prompt[0].tolist(), n + 1, stop=["never appears"], eos_token_ids=[]), n),
        "stream_generate_sampling": lambda: timed_stream(
            stream_generate(model, tok, prompt[0].tolist(), n + 1, eos_token_ids=[], **sampling), n),
    }
    for fn in methods.values():  # warm-up: compile the step, fill the allocator
        fn()
    times = {k: [] for k in methods}
    for _ in range(a.repeats):  # interleaved rounds, so that drift of the machine hits every method alike
        for k, fn in methods.items():
            times[k].append(1e3 * fn() / n)
    for k, ts in times.items():
        ts.sort()
        res[f"{k}_ms"] = ts[0]
        res[f"{k}_median_ms"] = round(ts[len(ts) // 2], 3)

    res["prefill"] = []
    for T in map(int, a.prompt_lengths.split(",")):
        ids = mx.random.randint(3, 259, (1, T)).astype(mx.int32)
        mx.eval(ids)
        for rep in range(2):  # the first run compiles and warms up
            mx.clear_cache()
            mx.reset_peak_memory()
            t0 = time.perf_counter()
            r = list(stream_generate(model, tok, ids[0].tolist(), 1, eos_token_ids=[]))[-1]
            dt = time.perf_counter() - t0
        res["prefill"].append({"prompt_tokens": T, "prompt_tps": round(r.prompt_tps, 1), "seconds": round(dt, 3),
                               "peak_memory_gb": round(mx.get_peak_memory() / 1e9, 3)})

    # chunk size: prefill speed against activation memory (peak minus the weights), longest prompt length
    T = max(map(int, a.prompt_lengths.split(",")))
    ids = mx.random.randint(3, 259, (1, T)).astype(mx.int32)
    mx.eval(ids)
    res["prefill_step_sweep"] = []
    for step in [int(x) for x in a.step_sweep.split(",") if x]:
        for rep in range(2):  # the first run warms up
            cache = model.make_cache(1)
            mx.clear_cache()
            active = mx.get_active_memory()
            mx.reset_peak_memory()
            t0 = time.perf_counter()
            prefill(model, ids, cache, prefill_step_size=step)
            dt = time.perf_counter() - t0
        res["prefill_step_sweep"].append({"prefill_step_size": step, "prompt_tokens": T, "tokens_per_s": round(T / dt),
                                          "activation_peak_gb": round((mx.get_peak_memory() - active) / 1e9, 3)})

    B = a.batch
    prompts = [list(range(3 + b, 3 + b + 16 + 4 * b)) for b in range(B)]
    batch_generate(model, tok, prompts, 8, eos_token_ids=[])
    t0 = time.perf_counter()
    batch_generate(model, tok, prompts, n, eos_token_ids=[])
    res["batch_generate"] = {"batch": B, "tokens_per_row": n, "seconds": round(time.perf_counter() - t0, 3),
                             "tokens_per_s_all_rows": round(B * n / (time.perf_counter() - t0), 1)}
    for k in list(res):
        if k.endswith("_ms") and not k.endswith("median_ms"):
            res[k] = round(res[k], 3)
            res[k.replace("_ms", "_tok_s")] = round(1e3 / res[k], 1)
    text = json.dumps(res, indent=2)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
