"""`xlstm-mlx bench`: prefill throughput over a (batch, length) grid, decode throughput per batch size,
time to first token and peak memory, each next to its hardware floor (xlstm_mlx/tools/bench_floor.py).

    xlstm-mlx bench --shape 64m                     # random weights of a named shape, no files needed
    xlstm-mlx bench --model DIR --json out.json --plot out.png
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time

import mlx.core as mx
import mlx.nn as nn

from xlstm_mlx import atomic
from xlstm_mlx.atomic import check_writable
from xlstm_mlx.checkpoints.load import load
from xlstm_mlx.errors import UsageError
from xlstm_mlx.checkpoints.random import SHAPES, randomize, shape_args
from xlstm_mlx.generation.generate import generate_step, prefill
from xlstm_mlx.models import family_of
from xlstm_mlx.models.xlstm7b import fuse
from xlstm_mlx.models.xlstm7b.model import Model
from xlstm_mlx.platform import blas
from xlstm_mlx.profiles import default_profile, load_profile
from xlstm_mlx.tools import bench_floor as floor


def _sync(*arrays) -> None:
    mx.eval(*arrays)
    if arrays:  # a host read makes sure the device finished, on every backend
        arrays[0].reshape(-1)[:1].item()


def _timed(fn, reps: int, budget_s: float) -> tuple[float, int]:
    """Best wall time of fn() over at least `reps` runs (more while within `budget_s`)."""
    times = []
    end = time.perf_counter() + budget_s
    while len(times) < reps or (time.perf_counter() < end and len(times) < 20):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times), len(times)


def device_description() -> str:
    dev = mx.default_device()
    if dev.type == mx.gpu:
        try:
            name = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                                  capture_output=True, text=True, timeout=20).stdout.strip().splitlines()[0]
            return f"gpu: {name}"
        except (OSError, IndexError, subprocess.SubprocessError):
            info = mx.device_info() if hasattr(mx, "device_info") else {}
            return f"gpu: {info.get('device_name', platform.machine())}"
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")),
               platform.processor()) if sys.platform == "linux" else platform.processor()
    import os

    return f"cpu: {cpu}, {os.cpu_count()} cores"


def build_model(model_path: str | None, shape: str | None, dtype: str | None, profile: str | None, seed: int,
                weight_mode: str | None = None):
    if model_path:
        model, _ = load(model_path, dtype=dtype, profile=profile)
        return model, model_path
    prof = load_profile(profile) if profile else default_profile(dtype)
    if dtype:
        prof = prof.replace(compute_dtype=dtype, kernel_dtype=dtype)
    model = Model(shape_args(shape, **({"weight_mode": weight_mode} if weight_mode else {})), prof)
    # each tensor in the dtype `load` would give it (the family's param_dtype), so the bench runs what a loaded
    # checkpoint runs: float32 head, pre-norms and gates beside bf16 projections under the 'fast' profile
    randomize(model, seed, dtype=lambda name: family_of(model).param_dtype(name, prof))
    model.fuse_projections()  # fused (stored single) and padded (FFN down, CUDA) for inference, as `load` does
    source = f"random weights, shape {shape}"
    if model.args.weight_mode == "single":
        source += ", stored single" + (" (fused at load)" if fuse.is_fused(model) else "")
    return model, source


def quantized(model, source: str, bits: int, group_size: int):
    """The model quantized in place as `convert -q` does (every eligible layer, embeddings and lm_head included)."""
    from xlstm_mlx.checkpoints.quantize import plan_quantization, quantize_model

    if any(isinstance(m, nn.QuantizedLinear) for _, m in model.leaf_modules_flat()):
        raise UsageError("--quantize: this checkpoint is already quantized; leave out --quantize to bench it as stored")
    plan = plan_quantization(model, bits, group_size)
    quantize_model(model, plan, evaluate=True)
    return model, f"{source}, quantized {bits}-bit group {group_size} (convert -q layout)"


def bench_prefill(model, batch, length, reps, budget, rng_key, step_size, blocks_per_eval=None):
    """The generation path's prefill (state only, in chunks of `step_size`): prompt tokens/s."""
    mx.clear_cache()  # each figure starts from an empty buffer cache, whatever ran before it
    ids = mx.random.randint(0, model.args.vocab_size, (batch, length), key=rng_key).astype(mx.int32)

    def once():
        cache = model.make_cache(batch)
        prefill(model, ids, cache, prefill_step_size=step_size, blocks_per_eval=blocks_per_eval)
        _sync(*cache.arrays())

    once()  # warm-up (kernel compilation, allocator)
    mx.reset_peak_memory()
    t, n = _timed(once, reps, budget)
    return {"batch": batch, "length": length, "seconds": t, "tok_s": batch * length / t, "reps": n,
            "peak_memory_bytes": mx.get_peak_memory()}


def bench_decode(model, batch, steps, reps, budget, rng_key, prompt_len=16):
    """generate_step's pipelined greedy loop: tokens/s between the first sampled token and the last."""
    mx.clear_cache()  # each figure starts from an empty buffer cache, whatever ran before it
    ids = mx.random.randint(0, model.args.vocab_size, (batch, prompt_len), key=rng_key).astype(mx.int32)

    def once():
        gen = generate_step(model, ids, max_tokens=steps + 1)
        next(gen).tolist()
        t = time.perf_counter()
        for y in gen:
            y.tolist()  # the host reads every token (detokenizer, stop checks)
        return time.perf_counter() - t

    once()  # warm-up
    mx.reset_peak_memory()
    times = [once() for _ in range(reps)]
    end = time.perf_counter() + budget
    while time.perf_counter() < end and len(times) < 20:
        times.append(once())
    t_step = min(times) / steps
    return {"batch": batch, "steps": steps, "ms_per_step": t_step * 1e3, "tok_s": batch / t_step,
            "reps": len(times), "peak_memory_bytes": mx.get_peak_memory()}


def bench_ttft(model, length, reps, budget, rng_key, step_size, blocks_per_eval=None):
    """Prompt in, first sampled token on the host (batch 1), through generate_step."""
    mx.clear_cache()  # each figure starts from an empty buffer cache, whatever ran before it
    ids = mx.random.randint(0, model.args.vocab_size, (1, length), key=rng_key).astype(mx.int32)

    def first_token():
        next(generate_step(model, ids, max_tokens=1, prefill_step_size=step_size,
                           blocks_per_eval=blocks_per_eval)).item()

    first_token()
    mx.reset_peak_memory()
    t, n = _timed(first_token, reps, budget)
    return {"length": length, "seconds": t, "reps": n, "peak_memory_bytes": mx.get_peak_memory()}


def parse_grid(pairs: list[str]) -> list[tuple[int, int]]:
    """'BxT' strings -> (batch, length) pairs, each >= 1; a UsageError names a malformed one."""
    grid = []
    for g in pairs:
        parts = g.lower().split("x")
        try:
            b, t = (int(v) for v in parts)
        except ValueError:
            raise UsageError(f"--prefill-grid entry {g!r} is not BATCHxLENGTH (e.g. 1x2048)") from None
        if b < 1 or t < 1:
            raise UsageError(f"--prefill-grid entry {g!r}: batch and length must be >= 1")
        grid.append((b, t))
    return grid


def validate(args) -> None:
    """Every option checked before the model is built or anything is timed (the output paths too)."""
    for name in ("prefill_batch", "prefill_len", "decode_batch"):
        bad = [v for v in getattr(args, name) if v < 1]
        if bad:
            raise UsageError(f"--{name.replace('_', '-')} values must be >= 1, got {bad}")
    if args.prefill_grid:
        parse_grid(args.prefill_grid)
    if args.decode_batch and args.decode_steps < 1:
        raise UsageError(f"--decode-steps must be >= 1, got {args.decode_steps} (or give no --decode-batch)")
    if args.weight_mode and args.model:
        raise UsageError("--weight-mode applies to random weights (--shape); a checkpoint has its own layout")
    if args.quantize is not None:
        from xlstm_mlx.checkpoints.quantize import check_settings

        check_settings(args.quantize, args.group_size)
    if args.blocks_per_eval is not None and args.blocks_per_eval < 0:
        raise UsageError(f"--blocks-per-eval must be >= 0, got {args.blocks_per_eval}")
    for name, low in (("reps", 1), ("prefill_step_size", 1), ("ttft_len", 0)):
        if getattr(args, name) < low:
            raise UsageError(f"--{name.replace('_', '-')} must be >= {low}, got {getattr(args, name)}")
    if not args.budget >= 0:
        raise UsageError(f"--budget must be >= 0 seconds, got {args.budget}")
    if getattr(args, "json", None):
        check_writable(args.json, "--json")
    if getattr(args, "plot", None):
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise UsageError("--plot needs matplotlib: pip install 'xlstm-mlx[plot]' (or leave out --plot)") from None
        check_writable(args.plot, "--plot")


def run(args, built: tuple | None = None, out: dict | None = None) -> dict:
    """All figures for the parsed `args`; `built` = (model, description) reuses a model already built.
    `out`: the dict to fill (the caller keeps what was measured if the run is interrupted)."""
    validate(args)
    if args.cpu:
        mx.set_default_device(mx.cpu)
    model, source = built or build_model(args.model, args.shape, args.dtype, args.profile, args.seed,
                                         args.weight_mode)
    if args.quantize:
        model, source = quantized(model, source, args.quantize, args.group_size)
    prof = model.profile
    cost = model.cost(prof.chunk_size)
    state_b = cost.state_bytes
    print(f"[bench] {device_description()} | {source} | {prof.describe()} | weights {cost.weight_bytes / 1e9:.3f} GB",
          file=sys.stderr)
    bw = floor.measure_bandwidth()
    mm = floor.measure_matmul_rate(prof.mx_compute_dtype)
    flops_tok = cost.prefill_flops
    print(f"[bench] measured: read bandwidth {bw['bytes_per_s'] / 1e9:.1f} GB/s, "
          f"{mm['dtype']} matmul {mm['flop_per_s'] / 1e12:.2f} TFLOP/s", file=sys.stderr)
    key = mx.random.key(args.seed)
    out = {} if out is None else out
    out.update({"device": device_description(), "mlx_version": mx.__version__, "date": time.strftime(
        "%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "command": " ".join(sys.argv), "model": source,
        "profile": prof.describe(), "weights_bytes": cost.weight_bytes, "decode_read_bytes": cost.decode_read_bytes,
        "state_bytes_per_sequence": state_b, "flops_per_token": flops_tok, "bandwidth": bw, "matmul": mm,
        "prefill": [], "decode": [], "ttft": None})
    if args.cpu_blas_info and sys.platform == "linux":
        out["cpu_blas"] = blas.info()
    pf_floor = floor.prefill_floor_tok_s(flops_tok, mm["flop_per_s"])
    grid = (parse_grid(args.prefill_grid) if args.prefill_grid
            else [(b, t) for b in args.prefill_batch for t in args.prefill_len])
    for b, t in grid:
        r = bench_prefill(model, b, t, args.reps, args.budget, key, args.prefill_step_size, args.blocks_per_eval)
        r.update(floor_tok_s=pf_floor, ratio_to_floor=r["tok_s"] / pf_floor)
        out["prefill"].append(r)
        print(f"[bench] prefill B={b} T={t}: {r['tok_s']:.0f} tok/s ({r['ratio_to_floor']:.1%} of floor "
              f"{pf_floor:.0f}), peak {r['peak_memory_bytes'] / 1e9:.2f} GB", file=sys.stderr)
    for b in args.decode_batch:
        r = bench_decode(model, b, args.decode_steps, args.reps, args.budget, key)
        f = floor.decode_floor_tok_s(b, cost.decode_read_bytes, state_b, bw["bytes_per_s"])
        r.update(floor_tok_s=f, ratio_to_floor=r["tok_s"] / f)
        out["decode"].append(r)
        print(f"[bench] decode B={b}: {r['tok_s']:.1f} tok/s ({r['ms_per_step']:.2f} ms/step, "
              f"{r['ratio_to_floor']:.1%} of floor {f:.1f}), peak {r['peak_memory_bytes'] / 1e9:.2f} GB",
              file=sys.stderr)
    if args.ttft_len:
        r = bench_ttft(model, args.ttft_len, args.reps, args.budget, key, args.prefill_step_size,
                       args.blocks_per_eval)
        f = args.ttft_len / pf_floor
        r.update(floor_seconds=f, ratio_to_floor=f / r["seconds"])
        out["ttft"] = r
        print(f"[bench] time to first token, {args.ttft_len}-token prompt: {r['seconds'] * 1e3:.1f} ms "
              f"(floor {f * 1e3:.1f} ms)", file=sys.stderr)
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", help="checkpoint directory (default: random weights of --shape)")
    src.add_argument("--shape", choices=sorted(SHAPES), help="named shape with random weights (default 64m)")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"],
                   help="weight/compute dtype (default: bfloat16 on GPU, float32 on CPU)")
    p.add_argument("--profile", help="numerics profile name or JSON path")
    p.add_argument("--weight-mode", choices=["single", "fused"],
                   help="random weights: the stored projection layout (single = the Hugging Face xLSTM-7B layout, "
                        "fused at load as `load` does; default: the shape's own)")
    p.add_argument("--quantize", "-q", type=int, metavar="BITS",
                   help="quantize the weights first, as `convert -q` does (e.g. 4 or 8)")
    p.add_argument("--group-size", type=int, default=64, help="quantization group size (with --quantize)")
    p.add_argument("--prefill-batch", type=int, nargs="+", default=[1, 8])
    p.add_argument("--prefill-len", type=int, nargs="+", default=[128, 512, 2048])
    p.add_argument("--prefill-grid", nargs="+", metavar="BxT",
                   help="explicit (batch x length) pairs, e.g. 1x2048 8x512 (instead of the batch x length product)")
    p.add_argument("--prefill-step-size", type=int, default=2048, help="prefill chunk length (as in generate)")
    p.add_argument("--blocks-per-eval", type=int, default=None,
                   help="prefill: evaluate every N blocks, bounding the transient memory (0: one graph per chunk; "
                        "default 1 on a GPU, 0 on the CPU)")
    p.add_argument("--decode-batch", type=int, nargs="*", default=[1, 8, 64])
    p.add_argument("--decode-steps", type=int, default=32, help="timed decode steps per repetition")
    p.add_argument("--ttft-len", type=int, default=2048, help="prompt length for time to first token (0: skip)")
    p.add_argument("--reps", type=int, default=3, help="minimum repetitions (the best is reported)")
    p.add_argument("--budget", type=float, default=3.0, help="seconds of extra repetitions per figure")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cpu", action="store_true", help="run on the CPU even when a GPU is present")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--plot", help="write a PNG plot here (needs matplotlib: pip install 'xlstm-mlx[plot]')")
    p.set_defaults(cpu_blas_info=True)


def _write(out: dict, path: str | None) -> None:
    text = json.dumps(out, indent=1)
    if path:
        atomic.write_text(path, text + "\n")
    else:
        print(text)


def main(args) -> int:
    if not args.model and not args.shape:
        args.shape = "64m"
    out: dict = {}
    try:
        run(args, out=out)
    except KeyboardInterrupt:  # keep what was measured: the JSON so far, marked as interrupted
        if out.get("prefill") or out.get("decode"):
            out["interrupted"] = True
            _write(out, args.json)
            print("[bench] interrupted: the figures measured so far are written above"
                  + (f" ({args.json})" if args.json else ""), file=sys.stderr)
        raise
    _write(out, args.json)
    if args.plot:
        from xlstm_mlx.tools.bench_plot import plot

        plot(out, args.plot)
    return 0
