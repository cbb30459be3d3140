"""Our float32 logits against float64, side by side with the canonical float32's, on fresh random checkpoints.

Ground truth: our exact profile (float64 everywhere), which test_exact.py checks against transformers' native code
run in float64 (agreement ~1e-14). Each case measures the max-abs error of
  - the full forward (one call: chunkwise prefill): ours (parity profile) and transformers' native float32;
  - prefill + one-token steps, at the step positions: ours and the official xLSTMLarge (float32), which
    stands in for the canonical here (transformers' cache path fails on these shapes: canonical_f64.py).

What is asserted, per case (benchmarks/results/precision_vs_f64.md, docs/numerics.md "Float32 against float64"):
  - full forward: max-abs, ours <= canonical + 2 float32 ulps of the largest |logit| (an error at that level is
    the final rounding of the logits themselves, where either side wins by chance).
  - prefill + steps: the median over step positions of each position's max-abs error, ours <= canonical, no
    slack. Not the max: at the steps the max is set at the one worst-conditioned position (the mLSTM read-out
    q^T C nearly cancels and the per-head LayerNorm rescales it to unit size, amplifying the float32 rounding
    of q and k 10-1000x). There each float32 evaluation's error is a draw, decided mostly by the size of its
    typical error: a correctly rounded float32 evaluation (each op in float64, rounded once), 2.3x below
    torch's ops in median, beat the official model's max on 8 of 8 random models but lost to torch's ops on 1
    of 8; ours, 10-15 % below in median, lost the max on 4 of 9 before and after the norm change, other ones.
    The max is still bounded, against blow-ups only (STEPS_BLOWUP), never as a fidelity claim.
The wide case (hidden 520) is a strict xfail, the known gap: there ours is above the canonical on the full
forward (max-abs 3.4e-5 against 1.2e-5) and on the steps' median (1.9e-6 against 1.8e-6 on another seed).
Measured cause: the matrix products. At these sizes OpenBLAS runs its GEMM kernel (prefill, and the fused
[q; k; v; o] decode projection, N = 1,560), relative error 2.9e-7 (K = 520) and 3.5e-7 (K = 1,408) against
torch's MKL 2.4e-7 / 2.5e-7; the narrower single projections at decode run its GEMV path, 1.1e-7 (MKL 2.2e-7).
docs/numerics.md has the figures. It turns into a failure (XPASS) the day that is fixed.
"""

import numpy as np
import pytest

import mlx.core as mx
import xlstm_mlx
from oracles.canonical import make_hf_checkpoint
from oracles.canonical_f64 import hf_logits, official_steps_logits

CASES = {
    # name: (checkpoint options, T, prefill length, batch)
    "h64_l2_T150": (dict(hidden=64, heads=2, layers=2), 150, 100, 2),
    "h96_l3_bias_T130": (dict(hidden=96, heads=2, layers=3, use_bias=True, vocab=77), 130, 65, 2),
    "fused_bias_tied_h80_T200": (dict(hidden=80, heads=2, weight_mode="fused", use_bias=True, tie=True), 200, 129, 2),
    "saturated_h64_T300": (dict(hidden=64, heads=2, layers=2, gate_bias_scale=12.0), 300, 250, 1),
    "wide_h520_T130": (dict(hidden=520, heads=4, layers=2), 130, 65, 2),
}
KNOWN_ABOVE = {"wide_h520_T130": "OpenBLAS's GEMM kernel accumulates more error than MKL at hidden 520 (module doc)"}
STEPS_BLOWUP = 10.0  # max-abs at the steps: ours <= 10 x canonical, a guard against blow-ups, not a fidelity claim


def ours(path, ids, profile, prefill=0):
    model, _ = xlstm_mlx.load(path, profile=profile)
    if not prefill:
        return np.array(model(mx.array(ids)).astype(mx.float64))
    cache = model.make_cache(ids.shape[0])
    outs = [model(mx.array(ids[:, :prefill]), cache=cache)]
    outs += [model(mx.array(ids[:, t:t + 1]), cache=cache) for t in range(prefill, ids.shape[1])]
    return np.array(mx.concatenate(outs, axis=1).astype(mx.float64))


@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.xfail(reason=KNOWN_ABOVE[c], strict=True))
                                  if c in KNOWN_ABOVE else c for c in sorted(CASES)])
def test_ours_at_least_as_close_to_float64_as_the_canonical(case, tmp_path):
    opts, T, P, batch = CASES[case]
    path = make_hf_checkpoint(tmp_path / "ckpt", seed=100 + sorted(CASES).index(case), **opts)
    ids = np.random.default_rng(7).integers(0, opts.get("vocab", 101), (batch, T))
    exact = ours(path, ids, "exact")
    floor = 2 * float(np.spacing(np.float32(np.abs(exact).max())))

    def err(z, start=0):
        assert np.isfinite(z).all(), "non-finite logits"
        return float(np.abs(z[:, start:] - exact[:, start:]).max())

    def median(z, start):  # over positions, of each position's max-abs error
        return float(np.median(np.abs(z[:, start:] - exact[:, start:]).max(-1)))

    ours_full, canon_full = err(ours(path, ids, "parity")), err(hf_logits(path, ids, tmp_path, "float32"))
    assert ours_full <= canon_full + floor, f"full forward: ours {ours_full:.3g} > canonical {canon_full:.3g}"
    z_ours, z_canon = ours(path, ids, "parity", prefill=P), official_steps_logits(path, ids, P)
    ours_med, canon_med = median(z_ours, P), median(z_canon, P)
    ours_max, canon_max = err(z_ours, P), err(z_canon, P)
    assert ours_med <= canon_med, (f"prefill + steps, median over positions: ours {ours_med:.3g} > canonical "
                                   f"{canon_med:.3g} (max: ours {ours_max:.3g}, canonical {canon_max:.3g})")
    assert ours_max <= STEPS_BLOWUP * canon_max, f"prefill + steps: max {ours_max:.3g} vs canonical {canon_max:.3g}"
