"""Kernel lab: every GPU kernel variant checked against its reference and timed against MLX's matmul, in ONE run.

    python benchmarks/gpu_kernels.py --json $OUT/gpu_kernels.json            # everything (on MLX's CUDA backend)
    python benchmarks/gpu_kernels.py --skip-model                             # kernels only
    python benchmarks/gpu_kernels.py --chunkwise-only --json $OUT/chunkwise.json # the chunkwise prefill only
    python benchmarks/gpu_kernels.py --count-only                             # kernel count of a decode step (any device)

Sections (each one's failure is recorded and the rest still run):
  1. copy bandwidth (read + write of 2 GB), the ceiling the matrix-vector kernels are judged against;
  2. matmul.skinny (kernels/skinny_gemm.py) on the 7B decode matrices, rows 1..16: parity against a float32
     CPU reference (relative Frobenius error; bf16 output rounding puts it near 2e-3), then time per call (median
     of chains of 21 dependent calls (benchmarks/lab_timing.chain_time), weights rotated over 3 copies so that no call reads from L2), against
     MLX's matmul on the same operands; effective bandwidth = weight + x + y bytes over the time;
  3. mlstm.decode_step (kernels/mlstm_decode.py) at the 7B layer shape, batch 1/16/64: parity against the MLX-ops
     reference evaluated on the CPU in float32 (C, n, m tight; h after its bf16 rounding), time against the
     compiled reference on the GPU;
  4. the kernel count of one compiled decode step (the primitives of the compiled graph, from mx.export_to_dot;
     views such as reshape/transpose/slice counted apart since they launch nothing by themselves), single vs
     fused projections, reference vs fast kernels;
  5. mlstm.chunkwise (kernels/mlstm_chunkwise_cuda.py) at the 7B head shape (NH 8, Dqk 256, Dv 512), B=1 T=2048
     and B=8 T=8192: parity of the fused kernels and of the MLX-ops scan against a float64 CPU reference (and
     kernel against ops), time per call of each (median of chains of 3 dependent calls), and of the kernels on the 7B
     block's layout (mlstm_chunkwise_rows on a fused projection output: no transposed copies);
  6. the whole 7B-shape decode step (random bf16 weights, generate_step's loop as `xlstm-mlx bench` times it) at
     batch 1/16/64 with each kernel on and off, single vs fused projections at batch 1; each variant in a fresh
     process (in one process, two runs of the same path were seen 15% apart: allocator and compile-cache state).
A short table is printed last; all numbers go to --json.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
import traceback
from collections import Counter
from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_map

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import xlstm_mlx.platform  # noqa: E402
from xlstm_mlx import kernels  # noqa: E402
from xlstm_mlx.checkpoints.random import randomize, shape_args  # noqa: E402
from xlstm_mlx.kernels import mlstm_decode, skinny_gemm as skinny_matmul  # noqa: E402
from xlstm_mlx.kernels import mlstm_chunkwise_cuda  # noqa: E402
from xlstm_mlx.kernels.mlstm_chunkwise import mlstm_chunkwise_ops  # noqa: E402
from xlstm_mlx.kernels.mlstm_recurrent import mlstm_zero_state  # noqa: E402
from xlstm_mlx.kernels.cuda_common import cuda_available  # noqa: E402
from lab_timing import chain_time as lab_chain_time  # noqa: E402
from xlstm_mlx.models.compiled import compiled_forward  # noqa: E402
from xlstm_mlx.models.xlstm7b import fuse  # noqa: E402
from xlstm_mlx.models.xlstm7b.model import Model  # noqa: E402
from xlstm_mlx.profiles import load_profile  # noqa: E402

# (K, N) of the 7B decode matrices: fused q|k|v|o, FFN gate|up, FFN down, out_proj, lm_head
MATRICES = [(4096, 12288), (4096, 21888), (10944, 4096), (4096, 4096), (4096, 50304)]
VIEWS = {"Reshape", "ExpandDims", "Squeeze", "Transpose", "Broadcast", "Slice", "Split", "Flatten", "Unflatten"}


def rel_err(out, ref) -> float:
    o, r = out.astype(mx.float32), ref.astype(mx.float32)
    if not bool(mx.all(mx.isfinite(o)).item()):
        return float("nan")
    return float((mx.linalg.norm((o - r).reshape(-1)) / mx.maximum(mx.linalg.norm(r.reshape(-1)), 1e-30)).item())


def independent_time(make_outputs, reps: int = 7) -> float:
    """Median seconds per call: `make_outputs()` returns a list of independent lazy results (one eval). Only for
    the copy-bandwidth probe: independent kernels may run at the same time on MLX's CUDA backend, which flatters
    a kernel with a small grid (benchmarks/lab_timing.chain_time), but not one 2 GB copy that fills the GPU."""
    outs = make_outputs()
    mx.eval(outs)  # warm-up: compile, allocate
    times = []
    for _ in range(reps):
        mx.synchronize()
        t = time.perf_counter()
        outs = make_outputs()
        mx.eval(outs)
        mx.synchronize()
        times.append((time.perf_counter() - t) / len(outs))
    return statistics.median(times)


def chain_time(call, tied: mx.array, calls: int, reps: int = 7) -> float:
    """Median seconds per call of `call(i, tied_i)` in chains of DEPENDENT calls, as a decode step or a prefill
    runs its kernels: tied_i is `tied` (one of the call's small inputs) computed from call i - 1's output
    (lab_timing.after), the glue's own chain time subtracted (lab_timing.chain_time)."""
    return lab_chain_time(call, tied, 1, calls, reps)


def copy_bandwidth() -> dict:
    n = 2**29  # 2 GB of float32
    x = mx.random.normal((n,))
    mx.eval(x)
    t = independent_time(lambda: [x + 1.0 for _ in range(4)])
    return {"bytes": 2 * n * 4, "seconds": t, "bytes_per_s": 2 * n * 4 / t}


def skinny_section(rows_list, dtypes, variants) -> list[dict]:
    res = []
    seed = 13
    for K, N in MATRICES:
        for dtype in dtypes:
            if dtype == mx.float32 and N != 50304:
                continue  # float32 weights: only the lm_head (the profiles keep it float32)
            ws = [(mx.random.normal((N, K), key=mx.random.key(seed + i)) * K**-0.5).astype(dtype) for i in range(3)]
            mx.eval(ws)
            for M in rows_list:
                x = mx.random.normal((M, K), key=mx.random.key(seed + 100 + M)).astype(dtype)
                b = (mx.random.normal((N,), key=mx.random.key(seed + 7)) * 0.1).astype(dtype)
                with mx.stream(mx.cpu):
                    xf, wf = x.astype(mx.float32), ws[0].astype(mx.float32)
                    ref = xf @ wf.T
                    ref_b = mx.addmm(b.astype(mx.float32), xf, wf.T)
                    mx.eval(ref, ref_b)
                nbytes = N * K * dtype.size + M * K * dtype.size + M * N * dtype.size
                row = {"K": K, "N": N, "rows": M, "dtype": str(dtype).removeprefix("mlx.core."), "bytes": nbytes}
                # MLX's matmul (the reference path)
                row["mlx_err"] = rel_err(skinny_matmul.skinny_matmul_ref(x, ws[0]), ref)
                t = chain_time(lambda i, xi: skinny_matmul.skinny_matmul_ref(xi, ws[i % 3]), x, 21)
                row["mlx_s"], row["mlx_TBps"] = t, nbytes / t / 1e12
                try:
                    row["k_default_bias_err"] = rel_err(skinny_matmul.skinny_matmul_cuda(x, ws[0], b), ref_b)
                except Exception as e:
                    row["k_default_bias_error"] = f"{type(e).__name__}: {e}"[:400]
                cfgs = [None] + (variants if M in (1, 8, 16) else [])
                for cfg in cfgs:
                    name = "default" if cfg is None else "R{R}_K{KSPLIT}_U{UNROLL}".format(**cfg)
                    try:
                        kw = cfg or {}
                        row[f"k_{name}_err"] = rel_err(skinny_matmul.skinny_matmul_cuda(x, ws[0], **kw), ref)
                        t = chain_time(lambda i, xi: skinny_matmul.skinny_matmul_cuda(xi, ws[i % 3], **kw), x, 21)
                        row[f"k_{name}_s"], row[f"k_{name}_TBps"] = t, nbytes / t / 1e12
                    except Exception as e:  # a variant that fails to build or run is recorded, not fatal
                        row[f"k_{name}_error"] = f"{type(e).__name__}: {e}"[:400]
                res.append(row)
                print(f"[lab] skinny {row}", file=sys.stderr, flush=True)
            del ws
    return res


def decode_step_section(batches) -> list[dict]:
    a = shape_args("7b")
    NH, qk, v = a.num_heads, a.qk_dim, a.v_dim
    dqk, dv = qk // NH, v // NH
    res = []
    ref_c = mx.compile(lambda qkvo, g, C, n, m: mlstm_decode.mlstm_decode_step_ref(
        qkvo, g, (C, n, m), NH, qk, v, a.gate_soft_cap, a.eps))
    for B in batches:
        ks = [mx.random.key(5000 + 10 * B + i) for i in range(6)]
        qkvo = mx.random.normal((B, 2 * qk + 2 * v), key=ks[0]).astype(mx.bfloat16)
        gates = mx.random.normal((B, 2 * NH), key=ks[1]) * 4.0
        C = mx.random.normal((B, NH, dqk, dv), key=ks[2])
        n = mx.random.normal((B, NH, dqk), key=ks[3])
        m = mx.random.normal((B, NH, 1), key=ks[4]) * 3.0
        mx.eval(qkvo, gates, C, n, m)
        with mx.stream(mx.cpu):
            h_ref, s_ref = mlstm_decode.mlstm_decode_step_ref(qkvo, gates, (C, n, m), NH, qk, v, a.gate_soft_cap, a.eps)
            mx.eval(h_ref, *s_ref)
        row = {"batch": B, "state_bytes": 2 * (C.nbytes + n.nbytes + m.nbytes)}
        row["default_tj"] = mlstm_decode.default_tj(B, dv)
        for tj in mlstm_decode.TJS:
            sfx = f"_tj{tj}"
            try:
                h, s = mlstm_decode.mlstm_decode_step_cuda(qkvo, gates, (C, n, m), NH, qk, v, a.gate_soft_cap, a.eps,
                                                           tj=tj)
                mx.eval(h, *s)
                row.update({f"h_err{sfx}": rel_err(h, h_ref), f"C_err{sfx}": rel_err(s[0], s_ref[0]),
                            f"n_err{sfx}": rel_err(s[1], s_ref[1]), f"m_err{sfx}": rel_err(s[2], s_ref[2])})
                t = chain_time(lambda _, g: mlstm_decode.mlstm_decode_step_cuda(
                    qkvo, g, (C, n, m), NH, qk, v, a.gate_soft_cap, a.eps, tj=tj)[1][0], gates, 10)
                row[f"kernel_s{sfx}"], row[f"kernel_TBps{sfx}"] = t, row["state_bytes"] / t / 1e12
            except Exception as e:
                row[f"kernel_error{sfx}"] = f"{type(e).__name__}: {e}"[:600]
        h2, s2 = ref_c(qkvo, gates, C, n, m)
        row["ref_gpu_C_err"] = rel_err(s2[0], s_ref[0])
        t = chain_time(lambda _, g: ref_c(qkvo, g, C, n, m)[1][0], gates, 10)
        row["ref_s"], row["ref_TBps"] = t, row["state_bytes"] / t / 1e12
        res.append(row)
        print(f"[lab] decode_step {row}", file=sys.stderr, flush=True)
    return res


def chunkwise_section(shapes) -> list[dict]:
    """The fused chunkwise prefill against the MLX-ops scan (both on the GPU), 7B head shape."""
    a = shape_args("7b")
    NH = a.num_heads
    dqk, dv = a.qk_dim // NH, a.v_dim // NH
    res = []
    for B, T in shapes:
        ks = [mx.random.key(9000 + 10 * B + j) for j in range(5)]
        q = mx.random.normal((B, NH, T, dqk), key=ks[0]).astype(mx.bfloat16)
        k = mx.random.normal((B, NH, T, dqk), key=ks[1]).astype(mx.bfloat16)
        v = mx.random.normal((B, NH, T, dv), key=ks[2]).astype(mx.bfloat16)
        i = 2.0 * mx.random.normal((B, NH, T), key=ks[3]) - 2.0  # trained-model-like gates
        f = 1.5 * mx.random.normal((B, NH, T), key=ks[4]) + 4.0
        mx.eval(q, k, v, i, f)
        row = {"batch": B, "T": T, "applies": mlstm_chunkwise_cuda.applies(q, k, v, i, f, None, 64)}
        ops = mlstm_chunkwise_ops(q, k, v, i, f)
        mx.eval(ops)
        if B * T <= 2048:  # the float64 reference on the CPU: only the small shape (seconds, not minutes)
            with mx.stream(mx.cpu):
                c = lambda x: x.astype(mx.float64)  # noqa: E731
                ref = mlstm_chunkwise_ops(c(q), c(k), c(v), c(i), c(f))
                mx.eval(ref)
            with mx.stream(mx.cpu):  # float64 only on the CPU
                row.update({"ops_h_err_f64": rel_err(ops[0], ref[0]), "ops_C_err_f64": rel_err(ops[1][0], ref[1][0])})
        try:
            out = mlstm_chunkwise_cuda.mlstm_chunkwise_cuda(q, k, v, i, f)
            mx.eval(out)
            row.update({"h_err_vs_ops": rel_err(out[0], ops[0]), "C_err_vs_ops": rel_err(out[1][0], ops[1][0]),
                        "n_err_vs_ops": rel_err(out[1][1], ops[1][1]), "m_err_vs_ops": rel_err(out[1][2], ops[1][2])})
            if B * T <= 2048:
                with mx.stream(mx.cpu):
                    row.update({"h_err_f64": rel_err(out[0], ref[0]), "C_err_f64": rel_err(out[1][0], ref[1][0]),
                                "n_err_f64": rel_err(out[1][1], ref[1][1]), "m_err_f64": rel_err(out[1][2], ref[1][2])})
            row["kernel_s"] = chain_time(lambda _, ii: mlstm_chunkwise_cuda.mlstm_chunkwise_cuda(q, k, v, ii, f)[0], i, 3)
        except Exception as e:
            row["kernel_error"] = f"{type(e).__name__}: {e}"[:600]
        try:  # each launch alone (one segment of <= 32 chunks): where the kernel time goes
            cw = mlstm_chunkwise_cuda
            lay = cw.Layout(False, dqk, dv)
            nca = -(-T // 64)
            nc = min(nca, 32)
            st0 = mlstm_zero_state(B, NH, dqk, dv)
            qc, kc, vc, ic = (mx.contiguous(x) for x in (q, k, v, i))
            gates = cw._gate_sums(ic, f, nca, lay)
            seg = 0  # the call's first segment
            starts, _ = cw._recurrent(kc, vc, gates, st0, seg, nc, lay)
            mx.eval(gates, starts, qc, kc, vc, ic)
            row["gates_s"] = chain_time(lambda _, ii: cw._gate_sums(ii, f, nca, lay)[1], ic, 3)
            row["recurrent_s_per_segment"] = chain_time(
                lambda _, g: cw._recurrent(kc, vc, (g, *gates[1:]), st0, seg, nc, lay)[0][0], gates[0], 3)
            row["parallel_s_per_segment"] = chain_time(lambda _, ii: cw._parallel(qc, kc, vc, ii, gates, starts, seg, nc,
                                                                                min(T, nc * 64), 1e-6, lay), ic, 3)
            row["chunks_per_segment"] = nc
            del starts, gates
        except Exception as e:
            row["launch_timing_error"] = f"{type(e).__name__}: {e}"[:300]
        try:  # the 7B block's layout: the fused projection output read in place, h as [B, T, NH, Dv]
            rows = lambda x: x.transpose(0, 2, 1, 3).reshape(B, T, -1)  # noqa: E731
            qkvo = mx.concatenate([rows(q), rows(k), rows(v), rows(v)], axis=-1)
            ig, fg = mx.contiguous(i.swapaxes(1, 2)), mx.contiguous(f.swapaxes(1, 2))
            mx.eval(qkvo, ig, fg)
            kw = dict(dqk=dqk, dv=dv, offsets=(0, NH * dqk, 2 * NH * dqk))
            row["rows_s"] = chain_time(lambda _, g: cw.mlstm_chunkwise_rows(qkvo, qkvo, qkvo, g, fg, **kw)[0], ig, 3)
            del qkvo
        except Exception as e:
            row["rows_error"] = f"{type(e).__name__}: {e}"[:300]
        defaults = (mlstm_chunkwise_cuda.VT_A, mlstm_chunkwise_cuda.VT_B)
        for vt_a, vt_b in ((64, 128), (128, 128), (64, 64), (128, 64)):  # fixed Dv tiles of kernels A and B
            name = f"A{vt_a}_B{vt_b}"
            mlstm_chunkwise_cuda.VT_A, mlstm_chunkwise_cuda.VT_B = vt_a, vt_b
            try:
                out = mlstm_chunkwise_cuda.mlstm_chunkwise_cuda(q, k, v, i, f)
                row[f"{name}_h_err_vs_ops"] = rel_err(out[0], ops[0])
                row[f"{name}_s"] = chain_time(lambda _, ii: mlstm_chunkwise_cuda.mlstm_chunkwise_cuda(q, k, v, ii, f)[0],
                                               i, 3)
            except Exception as e:
                row[f"{name}_error"] = f"{type(e).__name__}: {e}"[:300]
            finally:
                mlstm_chunkwise_cuda.VT_A, mlstm_chunkwise_cuda.VT_B = defaults
        try:  # kernel B with v prefetched into registers before its decay-matrix steps
            base = mlstm_chunkwise_cuda.mlstm_chunkwise_cuda(q, k, v, i, f)[0]
            mlstm_chunkwise_cuda.PREFETCH_V = True
            out = mlstm_chunkwise_cuda.mlstm_chunkwise_cuda(q, k, v, i, f)
            row["prefetch_v_h_equal"] = bool(mx.array_equal(out[0], base))
            row["prefetch_v_h_err_vs_ops"] = rel_err(out[0], ops[0])
            row["prefetch_v_s"] = chain_time(lambda _, ii: mlstm_chunkwise_cuda.mlstm_chunkwise_cuda(q, k, v, ii, f)[0], i, 3)
        except Exception as e:
            row["prefetch_v_error"] = f"{type(e).__name__}: {e}"[:300]
        finally:
            mlstm_chunkwise_cuda.PREFETCH_V = False
        row["ops_s"] = chain_time(lambda _, ii: mlstm_chunkwise_ops(q, k, v, ii, f)[0], i, 3)
        res.append(row)
        print(f"[lab] chunkwise {row}", file=sys.stderr, flush=True)
        del q, k, v, ops
    return res


def _fresh_compiled(model):
    model.__dict__.pop("_xlstm_compiled_forward", None)
    return compiled_forward(model)


class kernel_choice:
    """Swap the fast form of registry names for their reference inside a `with` block (the lab's on/off)."""

    def __init__(self, off: tuple[str, ...]):
        self.off, self.saved = off, {}

    def __enter__(self):
        for n in self.off:
            self.saved[n] = kernels.KERNELS[n]
            k = kernels.KERNELS[n]
            kernels.KERNELS[n] = kernels.Kernel(k.reference, k.reference, "reference (lab)")

    def __exit__(self, *exc):
        kernels.KERNELS.update(self.saved)


def count_kernels(model, batch: int = 1) -> dict:
    fn = _fresh_compiled(model)
    cache = model.make_cache(batch)
    with fuse.inference_call():  # as the model's own call traces it: a stored-single model's fused arrays
        logits, states = fn(mx.zeros((batch, 1), mx.int32), list(cache.layers))
    path = Path("/tmp/xlstm_lab_step.dot")
    mx.export_to_dot(str(path), logits, *[x for s in states for x in s])
    labels = re.findall(r'label ="([^"]*)"', path.read_text())
    counts = Counter(lbl.split()[0] for lbl in labels)
    views = sum(c for n, c in counts.items() if n in VIEWS)
    return {"primitives": sum(counts.values()), "views": views, "launching": sum(counts.values()) - views,
            "matmuls": counts.get("Matmul", 0) + counts.get("AddMM", 0), "custom": counts.get("CustomKernel", 0),
            "by_name": dict(counts.most_common())}


def count_section(shape: str) -> list[dict]:
    res = []
    prof = load_profile("fast")
    for wm in ("single", "fused"):
        model = Model(shape_args(shape, weight_mode=wm), prof)
        # evaluated weights of the profile's dtypes (zeros: the graph's structure is all that is counted), so that
        # the lazy initializers stay out of the graph and each matmul sees the dtypes it sees at decode
        model.update(tree_map(lambda p: mx.zeros(p.shape, prof.mx_compute_dtype), model.parameters()))
        if "lm_head" in model:
            model.update({"lm_head": {"weight": mx.zeros(model.lm_head.weight.shape, prof.mx_head_dtype)}})
        mx.eval(model.parameters())
        model.fuse_projections()  # stored single: fused for inference, as `load` does
        for label, off, skinny in (("reference kernels", ("matmul.skinny", "mlstm.decode_step"), False),
                                   ("default kernels", (), False), ("+ skinny GEMM on", (), True)):
            skinny_matmul.DEFAULT_ON = skinny
            with kernel_choice(off):
                c = count_kernels(model)
            skinny_matmul.DEFAULT_ON = False
            c.update(weights=wm, kernels=label, shape=shape)
            res.append(c)
            print(f"[lab] count {wm} {label}: {c['launching']} launching primitives "
                  f"({c['primitives']} with views, {c['matmuls']} matmuls, {c['custom']} custom)", file=sys.stderr)
        del model
    return res


MODEL_VARIANTS = {  # name -> (weights, registry names swapped for their reference)
    "all reference": ("fused", ("matmul.skinny", "mlstm.decode_step")),
    "all fast": ("fused", ()),
    "skinny on": ("fused", ()),  # the CUDA skinny GEMM forced on (skinny_gemm.DEFAULT_ON)
    "skinny off": ("fused", ("matmul.skinny",)),
    "decode_step off": ("fused", ("mlstm.decode_step",)),
    "single, all fast": ("single", ()),
    "single, all reference": ("single", ("matmul.skinny", "mlstm.decode_step")),
}


def model_run(variant: str, batches, steps: int, shape: str = "7b") -> list[dict]:
    """One variant, all batch sizes, in this process (model_section runs each in a fresh process)."""
    from xlstm_mlx.tools.bench import bench_decode

    wm, off = MODEL_VARIANTS[variant]
    skinny_matmul.DEFAULT_ON = variant in ("skinny on", "decode_step off")  # the variants of session 2 had it on
    prof = load_profile("fast")
    model = Model(shape_args(shape, weight_mode=wm), prof)
    randomize(model, 0, dtype=prof.mx_compute_dtype)
    res = []
    with kernel_choice(off):
        for B in batches:
            try:
                r = bench_decode(model, B, steps, 3, 1.0, mx.random.key(0))
            except Exception as e:
                r = {"batch": B, "error": f"{type(e).__name__}: {e}"[:600]}
            r.update(weights=wm, variant=variant)
            res.append(r)
            print(f"[lab] model {r}", file=sys.stderr, flush=True)
    return res


def model_section(batches, steps: int, variants) -> list[dict]:
    """Each variant in a fresh process: one process's allocator and compile caches do not carry into the next."""
    import subprocess

    res = []
    for v in variants:
        bs = batches if MODEL_VARIANTS[v][0] == "fused" else batches[:1]
        cmd = [sys.executable, __file__, "--model-run", v, "--steps", str(steps), "--batches", *map(str, bs)]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
        sys.stderr.write(p.stderr[-3000:])
        try:
            res.extend(json.loads(p.stdout.strip().splitlines()[-1]))
        except (IndexError, json.JSONDecodeError):
            res.append({"batch": bs[0], "weights": MODEL_VARIANTS[v][0], "variant": v,
                        "error": f"exit {p.returncode}: {p.stderr[-300:]}"})
    return res


def table(out: dict) -> str:
    lines = []
    if out.get("copy"):
        lines.append(f"copy bandwidth: {out['copy']['bytes_per_s'] / 1e12:.2f} TB/s")
    if out.get("skinny"):
        lines.append("skinny GEMM (TB/s effective; err = rel. Frobenius vs float32 CPU)")
        lines.append(f"{'K':>6} {'N':>6} {'M':>3} {'dtype':>8} {'MLX':>6} {'kernel':>7} {'best':>6} {'best cfg':>12} {'err':>8}")
        for r in out["skinny"]:
            ks = {k[2:-5]: v for k, v in r.items() if k.startswith("k_") and k.endswith("_TBps")}
            best = max(ks.items(), key=lambda kv: kv[1]) if ks else ("-", float("nan"))
            lines.append(f"{r['K']:>6} {r['N']:>6} {r['rows']:>3} {r['dtype']:>8} {r['mlx_TBps']:>6.2f} "
                         f"{ks.get('default', float('nan')):>7.2f} {best[1]:>6.2f} {best[0]:>12} "
                         f"{r.get('k_default_err', float('nan')):>8.1e}")
    if out.get("decode_step"):
        lines.append("mlstm.decode_step, 7B layer (us; TB/s of state read+written; errors vs CPU float32)")
        for r in out["decode_step"]:
            per_tj = " | ".join(
                f"TJ={tj}{'*' if tj == r.get('default_tj') else ''} {r.get(f'kernel_s_tj{tj}', float('nan')) * 1e6:.1f} us "
                f"{r.get(f'kernel_TBps_tj{tj}', float('nan')):.2f} TB/s err h {r.get(f'h_err_tj{tj}', float('nan')):.1e} "
                f"C {r.get(f'C_err_tj{tj}', float('nan')):.1e} {r.get(f'kernel_error_tj{tj}', '')[:60]}"
                for tj in mlstm_decode.TJS)
            lines.append(f"  B={r['batch']:>3}: ref {r['ref_s'] * 1e6:8.1f} us | {per_tj}  (* default)")
    if out.get("chunkwise"):
        lines.append("mlstm.chunkwise, 7B head shape, one layer (us; errors: rel. Frobenius)")
        for r in out["chunkwise"]:
            lines.append(f"  B={r['batch']} T={r['T']}: kernel {r.get('kernel_s', float('nan')) * 1e6:9.1f} us vs ops "
                         f"{r['ops_s'] * 1e6:9.1f} us; kernel vs ops h {r.get('h_err_vs_ops', float('nan')):.1e} "
                         f"C {r.get('C_err_vs_ops', float('nan')):.1e}; vs f64 h kernel "
                         f"{r.get('h_err_f64', float('nan')):.1e} ops {r.get('ops_h_err_f64', float('nan')):.1e} "
                         f"{r.get('kernel_error', '')[:120]}")
            lines.append(f"    per launch: gates {r.get('gates_s', float('nan')) * 1e6:.1f} us, recurrence "
                         f"{r.get('recurrent_s_per_segment', float('nan')) * 1e6:.1f} us and output "
                         f"{r.get('parallel_s_per_segment', float('nan')) * 1e6:.1f} us per segment of "
                         f"{r.get('chunks_per_segment', '?')} chunks {r.get('launch_timing_error', '')[:100]}")
            lines.append("    Dv tiles: " + ", ".join(f"{k[:-2]} {v * 1e6:.1f} us" for k, v in r.items()
                                                      if k.startswith("A") and k.endswith("_s")))
            lines.append(f"    kernel B with v prefetched: {r.get('prefetch_v_s', float('nan')) * 1e6:.1f} us, h equal to "
                         f"the default's: {r.get('prefetch_v_h_equal')} {r.get('prefetch_v_error', '')[:100]}")
    if out.get("count"):
        lines.append("primitives of one compiled decode step (launching = without views)")
        for r in out["count"]:
            lines.append(f"  {r['shape']} {r['weights']:>6} {r['kernels']:>17}: {r['launching']:>5} launching, "
                         f"{r['matmuls']} matmuls, {r['custom']} custom kernels")
    if out.get("model"):
        lines.append("7B decode (tok/s, generate_step loop, bf16 weights)")
        for r in out["model"]:
            if "error" in r:
                lines.append(f"  B={r['batch']:>3} {r['weights']:>6} {r['variant']:>16}: ERROR {r['error'][:100]}")
            else:
                lines.append(f"  B={r['batch']:>3} {r['weights']:>6} {r['variant']:>16}: {r['tok_s']:>8.1f} tok/s "
                             f"({r['ms_per_step']:.2f} ms/step)")
    for name, err in out.get("errors", {}).items():
        lines.append(f"section {name} FAILED: {err.splitlines()[-1][:200]}")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", help="write all numbers here")
    p.add_argument("--rows", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 16, 64])
    p.add_argument("--steps", type=int, default=32)
    p.add_argument("--skip-model", action="store_true")
    p.add_argument("--skip-skinny", action="store_true")
    p.add_argument("--count-only", action="store_true")
    p.add_argument("--chunkwise-only", action="store_true", help="only the chunkwise prefill section")
    p.add_argument("--count-shape", default="7b")
    p.add_argument("--model-variants", nargs="+", default=["all reference", "all fast", "skinny on"],
                   choices=list(MODEL_VARIANTS))
    p.add_argument("--model-run", choices=list(MODEL_VARIANTS), help=argparse.SUPPRESS)  # one variant (internal)
    args = p.parse_args()
    xlstm_mlx.platform.setup()  # float32 matmuls not as TF32 (MLX_ENABLE_TF32=0), as load() and the CLI do
    if args.model_run:
        print(json.dumps(model_run(args.model_run, args.batches, args.steps, args.count_shape), default=str))
        return 0
    out = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "command": " ".join(sys.argv),
           "mlx_version": mx.__version__, "cuda": cuda_available(), "labels": kernels.describe(), "errors": {}}
    try:
        from xlstm_mlx.tools.bench import device_description

        out["device"] = device_description()
    except Exception:
        out["device"] = str(mx.default_device())
    variants = [dict(R=r, KSPLIT=k, UNROLL=u) for r, k, u in
                [(1, 1, 4), (2, 1, 4), (4, 1, 4), (4, 1, 8), (4, 2, 4), (4, 4, 4), (2, 2, 8), (8, 1, 2)]]
    sections = [("count", lambda: count_section(args.count_shape))]
    if not args.count_only and cuda_available():
        sections = [("copy", copy_bandwidth)]
        if not args.skip_skinny:
            sections.append(("skinny", lambda: skinny_section(args.rows, [mx.bfloat16, mx.float32], variants)))
        sections += [("decode_step", lambda: decode_step_section(args.batches)),
                     ("chunkwise", lambda: chunkwise_section([(1, 2048), (8, 8192)])),
                     ("count", lambda: count_section(args.count_shape))]
        if args.chunkwise_only:
            sections = [("chunkwise", lambda: chunkwise_section([(1, 2048), (8, 8192)]))]
        elif not args.skip_model:
            sections.append(("model", lambda: model_section(args.batches, args.steps, args.model_variants)))
    for name, fn in sections:
        t = time.time()
        try:
            out[name] = fn()
        except Exception:
            out["errors"][name] = traceback.format_exc()
            print(out["errors"][name], file=sys.stderr)
        print(f"[lab] section {name}: {time.time() - t:.0f}s", file=sys.stderr, flush=True)
        if args.json:  # written after every section: a run cut short keeps what it measured
            Path(args.json).write_text(json.dumps(out, indent=1, default=str) + "\n")
    print(table(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
