"""Which component of our float32 forward carries its error against float64: swap one class of ops at a time to
float64 (inputs promoted, the op computed in float64 with the exact profile's float64-accurate pieces, the result
rounded once to float32) inside a float32 (parity) run, and measure the full-forward max-abs error against the
exact profile.

    python benchmarks/probes/f64_swap.py [--cases h64_l2_T150,...] [--seeds 100,101] [--only matmul,cell]
                                         [--canonical] [--k-block 0]

Classes: matmul (every nn.Linear, the gate projections and the lm_head included), head (the lm_head / tied
embedding only), cell (the mLSTM chunkwise prefill), norms (RMSNorm, residual add + RMSNorm, per-head
LayerNorm), math (sigmoid, silu, soft caps), and "all but X" rows.
Prints one line per (case, seed, swap): max-abs / median over positions of each position's max-abs; with
--canonical also transformers' float32 (subprocess). Results: benchmarks/results/precision_vs_f64.md (notes).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

import mlx.core as mx  # noqa: E402
import mlx.nn as nn  # noqa: E402

mx.set_default_device(mx.cpu)

import xlstm_mlx  # noqa: E402
from xlstm_mlx import kernels  # noqa: E402
import importlib  # noqa: E402
from xlstm_mlx.kernels import fastmath, norms  # noqa: E402
_add = importlib.import_module("xlstm_mlx.kernels.add_rms_norm")
_hn = importlib.import_module("xlstm_mlx.kernels.headnorm")
from oracles.canonical import make_hf_checkpoint  # noqa: E402

F64, F32 = mx.float64, mx.float32


def _up(x):
    return None if x is None else x.astype(F64) if x.dtype in (F32, mx.bfloat16, mx.float16) else x


def _down(y, like):
    return y.astype(like)


def _linear64(x, w, bias=None):
    y = _up(x) @ _up(w).T
    if bias is not None:
        y = y + _up(bias)
    return _down(y, x.dtype)


def _cell64(q, k, v, i, f, state=None, eps=1e-6, chunk_size=64):
    from xlstm_mlx.kernels.mlstm_chunkwise import mlstm_chunkwise
    st = None if state is None else tuple(_up(s) for s in state)
    h, st = mlstm_chunkwise(_up(q), _up(k), _up(v), _up(i), _up(f), st, eps=eps, chunk_size=chunk_size)
    return _down(h, v.dtype), tuple(_down(s, F32) for s in st)


def _cell_parallel64(q, k, v, i, f, state=None, eps=1e-6, chunk_size=64):
    return _cell64(q, k, v, i, f, state, eps, chunk_size=max(q.shape[2], 1))


def _step64(q, k, v, i, f, state, eps=1e-6):
    from xlstm_mlx.kernels.mlstm_recurrent import mlstm_step_ref
    h, st = mlstm_step_ref(_up(q), _up(k), _up(v), _up(i), _up(f), tuple(_up(s) for s in state), eps)
    return _down(h, v.dtype), tuple(_down(s, F32) for s in st)


def _decode64(qkvo, gates, state, num_heads, qk_dim, v_dim, gate_soft_cap, eps=1e-6):
    from xlstm_mlx.kernels.mlstm_decode import mlstm_decode_step_ref
    return mlstm_decode_step_ref(qkvo, gates, state, num_heads, qk_dim, v_dim, gate_soft_cap, eps, step=_step64)


SWAPS = {
    "step": [("KERNELS", "mlstm.step", _step64), ("KERNELS", "mlstm.decode_step", _decode64)],
    "matmul": [("KERNELS", "matmul.skinny", lambda x, w, b=None: _linear64(x, w, b)),
               ("LINEAR", None, None), ("EMB", None, None)],
    "proj": [("KERNELS", "matmul.skinny", lambda x, w, b=None: _linear64(x, w, b)), ("LINEAR", None, None)],
    "head": [("EMB", None, None), ("HEAD", None, None)],
    "cell": [("KERNELS", "mlstm.chunkwise", _cell64)],
    "norms": [("KERNELS", "norm.add_rms", lambda x, h, w, b, eps, od, want_y=True: tuple(
                  _down(t, d) for t, d in zip(_add.add_rms_norm_ref(_up(x), _up(h), _up(w), _up(b), eps, F64,
                                                                    rms_norm=norms.rms_norm),
                                              (x.dtype, x.dtype, od)))),
              ("KERNELS", "norm.rms", lambda x, w, eps: _down(norms.rms_norm(_up(x), _up(w), eps), x.dtype)),
              ("KERNELS", "norm.layer", lambda x, eps: _down(norms.layer_norm(_up(x), eps), x.dtype)),
              ("HEADNORM_LN", None, None)],
    "math": [("KERNELS", "math.sigmoid", lambda x: _down(fastmath.sigmoid(_up(x)), x.dtype)),
             ("KERNELS", "math.silu", lambda x: _down(fastmath.silu(_up(x)), x.dtype)),
             ("KERNELS", "math.soft_cap", lambda x, cap: _down(fastmath.soft_cap(_up(x), cap), x.dtype)),
             ("KERNELS", "ffn.swiglu", lambda gz, d: _down(fastmath.silu(_up(gz[..., :d])) * _up(gz[..., d:]),
                                                         gz.dtype)),
             ("HEADNORM_SIG", None, None)],
}


@contextlib.contextmanager
def swapped(names):
    saved_k = dict(kernels.KERNELS)
    saved_lin, saved_emb = nn.Linear.__call__, nn.Embedding.as_linear
    import xlstm_mlx.models.xlstm7b.model as mdl
    saved_head_linear = mdl.linear
    try:
        for name in names:
            for kind, key, fn in SWAPS[name]:
                if kind == "KERNELS":
                    kernels.KERNELS[key] = kernels.KERNELS[key]._replace(fast=fn)
                elif kind == "LINEAR":
                    nn.Linear.__call__ = lambda self, x: _linear64(x, self.weight, self.get("bias"))
                elif kind == "EMB":
                    nn.Embedding.as_linear = lambda self, x: _linear64(x, self.weight)
                elif kind == "HEAD":
                    mdl.linear = lambda layer, x: _linear64(x, layer.weight, layer.get("bias"))
                elif kind == "HEADNORM_LN":
                    _hn.norms = type("N", (), {"layer_norm": staticmethod(
                        lambda x, eps: _down(norms.layer_norm(_up(x), eps), x.dtype))})
                elif kind == "HEADNORM_SIG":
                    _hn.fastmath = type("M", (), {"sigmoid": staticmethod(
                        lambda x: _down(fastmath.sigmoid(_up(x)), x.dtype))})
        yield
    finally:
        kernels.KERNELS.clear()
        kernels.KERNELS.update(saved_k)
        nn.Linear.__call__, nn.Embedding.as_linear = saved_lin, saved_emb
        _hn.fastmath, _hn.norms = fastmath, norms
        mdl.linear = saved_head_linear


CASES = {
    "h64_l2_T150": (dict(hidden=64, heads=2, layers=2), 150, 2),
    "h96_l3_bias_T130": (dict(hidden=96, heads=2, layers=3, use_bias=True, vocab=77), 130, 2),
    "fused_bias_tied_h80_T200": (dict(hidden=80, heads=2, weight_mode="fused", use_bias=True, tie=True), 200, 2),
    "saturated_h64_T300": (dict(hidden=64, heads=2, layers=2, gate_bias_scale=12.0), 300, 1),
    "wide_h520_T130": (dict(hidden=520, heads=4, layers=2), 130, 2),
    "h64_l2_T2000": (dict(hidden=64, heads=2, layers=2), 2000, 1),
    "h160_l2_T1000": (dict(hidden=160, heads=4, layers=2, vocab=150), 1000, 1),
    "h80_l4_T65": (dict(hidden=80, heads=2, layers=4), 65, 2),
}


PREFILL = None  # --prefill P: prefill P tokens, then one-token steps; errors measured at the steps


def logits(path, ids, profile):
    model, _ = xlstm_mlx.load(path, profile=profile)
    if PREFILL is None:
        return np.array(model(mx.array(ids)).astype(F64))
    cache = model.make_cache(ids.shape[0])
    model(mx.array(ids[:, :PREFILL]), cache=cache)
    outs = [model(mx.array(ids[:, t:t + 1]), cache=cache) for t in range(PREFILL, ids.shape[1])]
    return np.array(mx.concatenate(outs, axis=1).astype(F64))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", default="h64_l2_T150,h96_l3_bias_T130")
    ap.add_argument("--seeds", default="")
    ap.add_argument("--only", default="matmul,proj,head,cell,norms,math")
    ap.add_argument("--canonical", action="store_true")
    ap.add_argument("--prefill", type=int, default=None, help="measure at the one-token steps after this prefill "
                    "(canonical: the official xLSTMLarge's steps)")
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--k-block", type=int, default=None, help="the many-row products' K-block (0: the library's "
                    "own sum, as before 2026-12-02; default: the installed setting)")
    a = ap.parse_args()
    global PREFILL
    PREFILL = a.prefill
    if a.k_block is not None:
        from xlstm_mlx import platform
        from xlstm_mlx.platform import skinny
        platform.setup()
        skinny.set_k_block(a.k_block)
    rows = [()] + [(n,) for n in a.only.split(",")]
    full = ("matmul", "cell", "norms", "math") + (("step",) if a.prefill is not None else ())
    rows.append(full)
    rows += [tuple(n for n in full if n != drop) for drop in full]
    with tempfile.TemporaryDirectory() as td:
        for case in a.cases.split(","):
            opts, T, batch = CASES[case]
            batch = a.batch or batch
            seeds = [int(s) for s in a.seeds.split(",")] if a.seeds else [100 + sorted(
                ["fused_bias_tied_h80_T200", "h64_l2_T150", "h96_l3_bias_T130", "saturated_h64_T300",
                 "wide_h520_T130"]).index(case) if case in ("fused_bias_tied_h80_T200", "h64_l2_T150",
                                                              "h96_l3_bias_T130", "saturated_h64_T300",
                                                              "wide_h520_T130") else 0]
            for seed in seeds:
                path = make_hf_checkpoint(Path(td) / f"{case}_{seed}", seed=seed, **opts)
                ids = np.random.default_rng(7).integers(0, opts.get("vocab", 101), (batch, T))
                exact = logits(path, ids, "exact")
                line = f"{case} seed {seed}:"
                if a.canonical:
                    from oracles.canonical_f64 import hf_logits
                    if PREFILL is None:
                        z = hf_logits(path, ids, Path(td), 'float32')
                    else:
                        from oracles.canonical_f64 import official_steps_logits
                        z = official_steps_logits(path, ids, PREFILL)[:, PREFILL:]
                    e = np.abs(z - exact).max(-1)
                    line += f" canonical {e.max():.3g} / {np.median(e):.3g}"
                for r in rows:
                    with swapped(r):
                        z = logits(path, ids, "parity")
                    e = np.abs(z - exact).max(-1)
                    line += f" | {'+'.join(r) or 'ours'} {e.max():.3g} / {np.median(e):.3g}"
                print(line, flush=True)


if __name__ == "__main__":
    main()
