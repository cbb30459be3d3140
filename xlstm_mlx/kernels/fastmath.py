"""Fast float32 transcendentals for MLX's Linux CPU backend, each beside the MLX op it replaces.

Why: MLX's Linux CPU wheel evaluates exp, tanh and sigmoid at ~17-50 ns per element (scalar code; docs/bench.md),
while a fused chain of multiplies, adds and divides runs at ~0.3 ns per element. Each form below is written only
with such ops (plus a float -> int -> float32 bit construction of 2^n) and fused by mx.compile into one kernel,
~20-50x faster than the MLX op on that backend. On Metal and CUDA MLX's own ops are fast and stay in use:
`on_cpu()` decides, at trace time, from the default device (the registry entries math.sigmoid, math.silu, math.soft_cap in kernels/).

    name      fast form                                           reference
    exp       2^n * P(r), x = n ln2 + r, |r| <= ln2/2              mx.exp
    sigmoid   1 / (1 + exp(-x))                                   mx.sigmoid
    silu      x * sigmoid(x)                                      nn.silu (x * mx.sigmoid(x))
    tanh      soft_cap with cap 1                                 mx.tanh
    soft_cap  x P(u) / Q(u), u = min(x^2, 81 cap^2) / (81 cap^2),  cap * mx.tanh(x / cap)
              clamped to [-cap, cap] (= cap tanh(x / cap))

Accuracy (measured against float64 on fresh random inputs and dense grids, tests/kernels/test_fastmath.py;
figures in docs/numerics.md "Fast transcendentals on the CPU"): a few float32 ulps relative, like MLX's own
ops. Special values behave as the references do: exp(-inf) = 0 exactly (the masked-gate identity step relies
on it), exp(+inf) = inf, NaN stays NaN; exp flushes results below the smallest normal float32 (2^-126 ~ 1.18e-38,
x < -87.3365) to 0 (an absolute difference below 1.18e-38), so that no subnormal float is ever made (x86 takes a
microcode assist for each: ~10x slower); sigmoid and silu inherit it.

Coefficients: near-minimax fits in float64 made for this file (exp: Lawson's iteratively reweighted least squares
on Chebyshev nodes; tanh: the same iteration on the linearized rational problem P - t Q,
benchmarks/probes/tanh_rational_fit.py), weighted for relative error and rounded to float32. Their approximation
errors (exp 2e-9, tanh 9.3e-10 relative) are far below float32's rounding (6e-8): the evaluation in float32 sets
the accuracy (exp, sigmoid, silu <= 3 ulp; tanh and soft_cap <= 7 ulp, their largest errors next to +-1 / +-cap).
The tanh and soft-cap form is laid out for MLX's CPU compiler (one vectorized kernel: `_capped_tanh`); on the
2-core VM it runs at ~1 ns a value against ~4.7 for the previous Horner form (five kernels) and ~20 for mx.tanh.
"""

from __future__ import annotations

import mlx.core as mx

from xlstm_mlx.kernels import mlstm_gates as gates

# exp: x = n ln2 + r with n = round(x / ln2). ln2 is split (Cody-Waite) so that n * LN2_HI is exact for
# |n| < 2^15 and r keeps its low bits.
_LOG2E = 1.4426950408889634
_LN2_HI = 0.693359375  # 355/512: 9 significant bits
_LN2_LO = -2.12194440e-4  # ln2 - LN2_HI
# exp(r) = 1 + r (c1 + r (c2 + ...)) on [-ln2/2, ln2/2]: approximation error 2e-9 relative
_EXP_C = (1.0, 0.4999999403953552, 0.16666431725025177, 0.04166800156235695, 0.00837415549904108,
          0.0013843653723597527)
# exp(x) is inf in float32 above ~88.72: clamping at 89 keeps n <= 129, so the two halves of 2^n below are normal
# floats and their product rounds to inf correctly. _EXP_LO is the least float32 whose exp is a normal float32
# (exp(_EXP_LO) = 1.17550e-38 >= 2^-126; the float below it has a subnormal exp): below it the result is 0, and
# those inputs are computed as 0 (exp(0), then replaced), so no multiply ever makes a subnormal. Arithmetic that
# makes or reads a subnormal float takes a microcode assist on x86 (~100+ cycles a value): with the rounded subnormal
# results of the earlier form (input clamped at -110) an exp over the chunk scan's decay matrices, half of them -inf,
# ran at ~35 ns a value on the Sapphire Rapids VM against ~4.5 for finite inputs (docs/numerics.md). Normal results
# are the earlier form's bits.
_EXP_LO, _EXP_HI = -87.33654022216797, 89.0
# the float32 just below _EXP_LO: `x <= _EXP_BELOW_LO` is `x < _EXP_LO` (NaN false in both) written as another op,
# so that mx.compile does not merge the two tests into one shared array (which it would materialize as a kernel of
# its own: 9 kernels instead of 8, ~0.5 ns a value)
_EXP_BELOW_LO = -87.3365478515625
# tanh(t) = t P(u) / Q(u), u = t^2 / 81, for |t| <= 9 (tanh(9) rounds to 1 in float32): a rational fit of
# degrees (4, 5), approximation error 9.3e-10 relative (benchmarks/probes/tanh_rational_fit.py); Q's constant
# term is 1, P's (0.999999999) rounds to 1 in float32 and is written so
_TANH_CLAMP = 9.0
_TANH_P = (1.0, 11.16692231993284, 26.30785876339391, 16.80190131677382, 2.189197847054417)
_TANH_Q = (1.0, 38.16692158540669, 182.0148387051011, 223.71661814206433, 69.71663335263877, 2.57792666341622)
# caps for which soft_cap's one-kernel form is exact in range: its coefficients P_k / (81 cap^2)^k stay normal
# float32 and its largest intermediate, (81 cap^2)^4, stays finite (beyond: cap * tanh(x / cap), two kernels)
_CAP_RANGE = (2.0**-6, 2.0**9)


def on_cpu() -> bool:
    """True when MLX computes on the CPU now (the fast forms are used only there)."""
    return mx.default_device().type == mx.cpu


_ROUND = 12582912.0  # 1.5 * 2^23: (v + _ROUND) - _ROUND rounds v to the nearest integer for |v| < 2^22


def _pow2(n: mx.array) -> mx.array:
    """2^n for int32 n in [-126, 127]: the float32 whose exponent field is n + 127."""
    return mx.view(mx.left_shift(n + 127, 23), mx.float32)


def _exp(x: mx.array) -> mx.array:
    # where (not clip) so that a NaN x fails both tests, stays NaN through the polynomial and gives NaN
    xc = mx.where(x < _EXP_LO, 0.0, mx.where(x > _EXP_HI, _EXP_HI, x))
    # round(x / ln2) with two adds (mx.round calls libm: slower). n is piecewise constant: stop_gradient keeps
    # autodiff from reading the two adds as a slope of 1/ln2 (gradients flow through r alone: p'(r) 2^n = exp(x))
    n = mx.stop_gradient((xc * _LOG2E + _ROUND) - _ROUND)
    r = (xc - n * _LN2_HI) - n * _LN2_LO
    p = _EXP_C[-1]
    for c in reversed(_EXP_C[:-1]):
        p = p * r + c
    p = p * r + 1.0
    # 2^n as 2^n1 * 2^(n - n1), n1 = floor(n / 2): both halves are normal floats for n in [-126, 129]
    ni = n.astype(mx.int32)
    n1 = mx.right_shift(ni, 1)
    # mx.view has no vjp: the constant factors are cut from the gradient graph (their slope is 0 anyway)
    lo, hi = mx.stop_gradient(_pow2(n1)), mx.stop_gradient(_pow2(ni - n1))
    # in this order: p * 2^64 * 2^64 is finite for exp(88.7); x below _EXP_LO (-inf too) gives 0 (a NaN x fails
    # both tests and stays NaN)
    return mx.where(x <= _EXP_BELOW_LO, 0.0, (p * lo) * hi)


def _sigmoid(x: mx.array) -> mx.array:
    return 1.0 / (1.0 + _exp(-x))


def _silu(x: mx.array) -> mx.array:
    return x * _sigmoid(x)


def _capped_tanh(x: mx.array, cap: float, limit: mx.array) -> mx.array:
    """cap * tanh(x / cap) as x R(x^2), R(v) = P(v s) / Q(v s), s = 1 / (81 cap^2): the 1 / cap and the cap
    cancel into the coefficients. Written for MLX's CPU compiler, whose speed it decides (docs/numerics.md):
    - one fused kernel: mx.compile fuses at most 11 ops deep from the output, so the clamps take 3 levels each
      and P, Q are evaluated Estrin-style (P in 4 levels, Q in 5) rather than by Horner (one level a term);
    - the input clamp is on x^2 (one-sided), not on x (two-sided, one level more): for |x| > 9 cap, x R(81 cap^2)
      is >= cap in size (or within an ulp of it) and the output clamp makes it +-cap; x = +-inf gives +-cap,
      x^2 overflowing to inf is clamped like any large value;
    - `where`, not mx.minimum/maximum: MLX's CPU min/max branch on NaN, which keeps g++ from vectorizing the
      loop; `where` compiles to vector blends (4 floats a step with SSE2, the JIT's flags);
    - the limit 81 cap^2 is an array computed at run time (`limit`), not a literal: with a literal g++
      specializes the clamped branch into a constant, keeps a branch around the division (which it may not
      speculate) and the loop stays scalar (~4x slower).
    NaN: every comparison with NaN is false, so a NaN x stays NaN through both clamps and the division; -0 gives -0."""
    s = 1.0 / (_TANH_CLAMP * _TANH_CLAMP * cap * cap)
    p = [c * s**k for k, c in enumerate(_TANH_P)]
    q = [c * s**k for k, c in enumerate(_TANH_Q)]
    u = x * x
    u = mx.where(u > limit, limit, u)
    u2 = u * u
    u3, u4 = u2 * u, u2 * u2
    num = ((p[0] + p[1] * u) + p[2] * u2) + u3 * (p[3] + p[4] * u)
    den = ((q[0] + q[1] * u) + u2 * (q[2] + q[3] * u)) + u4 * (q[4] + q[5] * u)
    r = x * num / den
    # the evaluation can overshoot +-cap by an ulp or two next to the clamp; beyond it, this makes +-cap
    return mx.where(r > cap, cap, mx.where(r < -cap, -cap, r))


_capped: dict[float, object] = {}  # cap -> its one-kernel form (mx.compile)


def _capped_form(cap: float):
    fn = _capped.get(cap)
    if fn is None:
        # a 1-element array reduced in the graph: a value the generated code reads at run time (see above),
        # also when the form is inlined into a larger mx.compile (the decode step)
        bound = mx.array([(_TANH_CLAMP * cap) ** 2], mx.float32)
        fn = _capped[cap] = mx.compile(lambda v: _capped_tanh(v, cap, mx.max(bound)))
    return fn


def _tanh(x: mx.array) -> mx.array:
    return _capped_form(1.0)(x)


# fused by mx.compile (not shapeless: mx.view cannot infer shapes in a shapeless trace, so each new shape is
# traced once); inside a larger mx.compile (the decode step) they are inlined
exp_fast = mx.compile(_exp)
sigmoid_fast = mx.compile(_sigmoid)
silu_fast = mx.compile(_silu)
tanh_fast = _tanh  # compiled inside (_capped_form)


def soft_cap_fast(x: mx.array, cap: float) -> mx.array:
    if _CAP_RANGE[0] <= cap <= _CAP_RANGE[1]:
        return _capped_form(float(cap))(x)
    return cap * tanh_fast(x / cap)


# the references: MLX's own ops, the same signatures (on float64, the exact profile's float64-accurate forms of
# mlstm_gates.py, since MLX's CPU exp is float32-accurate even on float64)
def exp_ref(x: mx.array) -> mx.array:
    return gates.exp(x)


def sigmoid_ref(x: mx.array) -> mx.array:
    return gates.sigmoid(x)


def silu_ref(x: mx.array) -> mx.array:
    return x * gates.sigmoid(x)  # nn.silu's definition


def tanh_ref(x: mx.array) -> mx.array:
    return mx.tanh(x)


def soft_cap_ref(x: mx.array, cap: float) -> mx.array:
    return cap * mx.tanh(x / cap)


# what the registry calls "fast": the polynomial forms on the CPU, MLX's own ops elsewhere (Metal and CUDA keep
# their numerics unchanged). The forms are float32 arithmetic (the rounding constant and the exponent-bit
# construction assume float32): bfloat16/float16 are computed in float32 and rounded back, as MLX's ops do
# internally; float64 (the exact profile) takes the float64-accurate reference.
def _on_float32(fn, x: mx.array) -> mx.array:
    return fn(x) if x.dtype == mx.float32 else fn(x.astype(mx.float32)).astype(x.dtype)


def _fast(x: mx.array) -> bool:
    return on_cpu() and x.dtype != mx.float64


def exp(x: mx.array) -> mx.array:
    return _on_float32(exp_fast, x) if _fast(x) else exp_ref(x)


def sigmoid(x: mx.array) -> mx.array:
    return _on_float32(sigmoid_fast, x) if _fast(x) else sigmoid_ref(x)


def silu(x: mx.array) -> mx.array:
    return _on_float32(silu_fast, x) if _fast(x) else silu_ref(x)


def tanh(x: mx.array) -> mx.array:
    return _on_float32(tanh_fast, x) if _fast(x) else tanh_ref(x)


_soft_cap_fused: dict[float, object] = {}  # cap -> the reference's ops as one compiled kernel (GPU)


def _soft_cap_one_kernel(x: mx.array, cap: float) -> mx.array:
    """soft_cap_ref's three ops (divide, tanh, multiply) fused by mx.compile into one launch: the same float
    operations in the same order, so the same values (tested), at a third of the launches (a 2,048-token
    prefill of the 7B shape ran 6 of these launches a layer on an H200, ~3-4 us each, for 64 KB of gates)."""
    fn = _soft_cap_fused.get(cap)
    if fn is None:
        fn = _soft_cap_fused[cap] = mx.compile(lambda v: soft_cap_ref(v, cap), shapeless=True)
    return fn(x)


def soft_cap(x: mx.array, cap: float) -> mx.array:
    if _fast(x):
        return _on_float32(lambda v: soft_cap_fast(v, cap), x)
    return _soft_cap_one_kernel(x, cap) if x.dtype != mx.float64 else soft_cap_ref(x, cap)


def label() -> str:
    """What the math.* registry entries run on this backend now (for the verbose line)."""
    return "fastmath polynomial form (CPU)" if on_cpu() else "MLX op"
