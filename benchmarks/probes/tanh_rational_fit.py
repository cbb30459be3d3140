"""Where the coefficients of kernels/fastmath.py's tanh / soft-cap form come from: a near-minimax rational fit,
in float64, of tanh(t) / t = P(u) / Q(u), u = t^2 / 81 on |t| <= 9 (tanh(9) rounds to 1 in float32), for
relative error, Q's constant term 1.

Method: Lawson's iteratively reweighted least squares on the linearized problem P(u) - f(u) (Q(u) - 1) = f(u)
(f = tanh(t) / t), on Chebyshev nodes in u, each row weighted by 1 / (f Q) of the previous iterate (relative
error of the rational, not of the linearization). Prints the degrees tried with their worst relative error on
a 200k-point grid, then the chosen (4, 5) coefficients, then (--accuracy) the float32 form as fastmath.py
evaluates it (soft_cap_fast, caps 1 (= tanh), 15 and 30) against float64 over a dense sweep: 8M evenly spaced
points over [-12 cap, 12 cap] and 4M geometrically spaced magnitudes in [1e-30 cap, 12 cap], both signs. The degrees are bounded by MLX's fusion depth
(fastmath.py: P of degree 4 and Q of degree 5 are the largest that evaluate, with the clamps, in one kernel).

    python benchmarks/probes/tanh_rational_fit.py [--accuracy]
"""

from __future__ import annotations

import numpy as np

T = 9.0


def fit(m: int, n: int, iters: int = 100, nodes: int = 6000):
    k = np.arange(nodes)
    u = (1 - np.cos(np.pi * (k + 0.5) / nodes)) / 2
    t = np.sqrt(u) * T
    f = np.tanh(t) / t
    w = np.full(nodes, 1.0 / nodes)
    q = np.zeros(n + 1)
    q[0] = 1.0
    for _ in range(iters):
        big_q = np.polyval(q[::-1], u)
        a = np.hstack([u[:, None] ** np.arange(m + 1), -f[:, None] * u[:, None] ** np.arange(1, n + 1)])
        s = np.sqrt(w) / (f * big_q)
        c, *_ = np.linalg.lstsq(a * s[:, None], f * s, rcond=None)
        p, q = c[:m + 1], np.concatenate([[1.0], c[m + 1:]])
        e = np.abs(np.polyval(p[::-1], u) / np.polyval(q[::-1], u) / f - 1)
        w = w * e
        w /= w.sum()
    tt = np.linspace(1e-6, T, 200_001)
    uu = (tt / T) ** 2
    err = np.abs(np.polyval(p[::-1], uu) / np.polyval(q[::-1], uu) / (np.tanh(tt) / tt) - 1).max()
    return p, q, err


def accuracy() -> None:
    import mlx.core as mx

    from xlstm_mlx.kernels import fastmath

    mx.set_default_device(mx.cpu)
    tiny = np.finfo(np.float32).tiny
    for cap in (1.0, 15.0, 30.0):
        g = np.geomspace(1e-30 * cap, 12 * cap, 2_000_000)
        x = np.concatenate([np.linspace(-12 * cap, 12 * cap, 8_000_001), g, -g]).astype(np.float32)
        got = np.array(fastmath.soft_cap_fast(mx.array(x), cap)).astype(np.float64)
        want = cap * np.tanh(x.astype(np.float64) / cap)
        ok = np.abs(want) >= tiny
        err = np.abs(got - want)
        ulp = err[ok] / np.spacing(np.abs(want[ok]).astype(np.float32)).astype(np.float64)
        print(f"cap {cap:g}: {x.size} points, worst {ulp.max():.2f} ulp, relative {(err[ok] / np.abs(want[ok])).max():.2e}, "
              f"absolute {err.max():.2e}; max |out| / cap {np.abs(got).max() / cap:.9f}")


def main() -> None:
    import sys

    if "--accuracy" in sys.argv:
        accuracy()
        return
    for m, n in [(5, 4), (4, 5), (4, 4), (3, 5), (3, 4)]:
        print(f"degrees ({m}, {n}): worst relative error {fit(m, n)[2]:.2e}")
    p, q, err = fit(4, 5)
    print(f"chosen (4, 5), {err:.2e}:")
    print("P =", tuple(float(v) for v in p))
    print("Q =", tuple(float(v) for v in q))


if __name__ == "__main__":
    main()
