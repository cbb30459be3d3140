"""The fused CUDA chunkwise prefill (kernels/mlstm_chunkwise_cuda.py) against the MLX-ops chunk scan and a float64
ground truth, on fresh random inputs: every T >= 1 (a final partial chunk runs inside the kernels), both layouts
(heads first, and the model's [B, T, NH, D] rows read in place: mlstm_chunkwise_rows, bit for bit the same result),
and the 7B block's mLSTM layer on the rows path. GPU tests run on MLX's CUDA backend only
(XLSTM_MLX_TEST_DEVICE=gpu); CPU CI checks the routing (the ops path runs, the label says so) and the rows
layout's ops form; test_mlstm_chunkwise_emulated.py runs the kernels' sources on the CPU with these checks.

Ground truth: mlstm_chunkwise_ref (the parallel form chunk after chunk) on float64 copies of the very same bf16
q/k/v and float32 gates/state, on the CPU stream; for the ~70,000-step case the closed-form ops scan in float64
(35 segments instead of ~1,100 sequential chunk graphs; it is the exact profile's path, checked against the
float64 oracle in test_mlstm.py).

Tolerances are statistical, in relative Frobenius error (cuda_checks.rel_error), because bf16 rounds to 2^-9
relative: h is rounded to bf16 at the end (~1e-3 alone), the intra-chunk weights S' and the chunk-start states C_k
are rounded to bf16 for the tensor-core products (another ~1e-3 each, averaged over the sums). The kernels' own
sources through the CPU emulator (test_mlstm_chunkwise_emulated.py) measure h 2e-3 - 3e-3 on these cases; the ops
scan itself measures 3e-3 - 2e-2 with trained-like gates and up to 0.4 with harsh gates and a state (its bf16
q k^T, amplified by small denominators), so the comparison with it is one-sided:
  h: <= 2e-2 with trained-like ("typical") gates, <= 0.1 with harsh or saturated ones (a margin kept from when
     the T mod 64 remainder ran through the ops chunk; the kernels measure ~3e-3 on them too), and in every case
     <= 2x the ops scan's own error + 2e-3;
  C (final, float32 from bf16-rounded k e^{a-m}, float32 accumulation): <= 5e-3 and <= 2x ops + 1e-4;
  n (final, float32 sums of the exact bf16 k): <= 5e-3 and <= 2x ops + 1e-5;
  m (final): normwise max|dm| / max(max|m|, 1) <= 1e-4 (only float32 gate sums: ~1e-7 measured).
NaN or inf anywhere fails (rel_error asserts finiteness). Every failure message names the case and lists all
errors (kernel and ops against float64, kernel against ops); -s prints them for the passing cases too.

    XLSTM_MLX_TEST_DEVICE=gpu python -m pytest -q -s tests/kernels/test_mlstm_chunkwise_cuda.py
"""

import zlib

import mlx.core as mx
import pytest

from xlstm_mlx import kernels
from xlstm_mlx.errors import UsageError
from xlstm_mlx.kernels import mlstm_chunkwise_cuda as cwc
from xlstm_mlx.kernels.cuda_common import cuda_available
from xlstm_mlx.kernels.mlstm_chunkwise import mlstm_chunkwise_ops, mlstm_chunkwise_ref
from xlstm_mlx.kernels.mlstm_gates import mask_gates
from xlstm_mlx.kernels.mlstm_recurrent import ZeroState, mlstm_zero_state

from cuda_checks import needs_cuda, rel_error

H_TOL, H_TOL_HARSH, C_TOL, N_TOL, M_TOL = 2e-2, 1e-1, 5e-3, 5e-3, 1e-4
H_FACTOR, H_FLOOR, FACTOR, C_FLOOR, N_FLOOR = 2.0, 2e-3, 2.0, 1e-4, 1e-5


def make(seed, B, NH, T, dqk, dv, state=False, pad=None, saturate=False, typical=False):
    ks = mx.random.split(mx.random.key(seed), 8)
    q = mx.random.normal((B, NH, T, dqk), key=ks[0]).astype(mx.bfloat16)
    k = mx.random.normal((B, NH, T, dqk), key=ks[1]).astype(mx.bfloat16)
    v = mx.random.normal((B, NH, T, dv), key=ks[2]).astype(mx.bfloat16)
    if saturate:  # every gate at the model's soft cap (+-15): |log f| = 15 or ~3e-7, i = +-15
        i = 15.0 * mx.sign(mx.random.normal((B, NH, T), key=ks[3]))
        f = 15.0 * mx.sign(mx.random.normal((B, NH, T), key=ks[4]))
    elif typical:  # like a trained model's: forget gates mostly open, input gates mostly shut
        i = 2.0 * mx.random.normal((B, NH, T), key=ks[3]) - 2.0
        f = 1.5 * mx.random.normal((B, NH, T), key=ks[4]) + 4.0
    else:  # harsh gates, as test_mlstm.py draws them
        i = 4.0 * mx.random.normal((B, NH, T), key=ks[3])
        f = 4.0 * mx.random.normal((B, NH, T), key=ks[4]) + 1.0
    if pad is not None:  # left padding: the first pad[b] steps of sequence b are masked (identity steps)
        mask = mx.arange(T)[None, :] >= mx.array(pad)[:, None]
        i, f = mask_gates(i, f, mask)
    st = None
    if state:
        st = (mx.random.normal((B, NH, dqk, dv), key=ks[5]), mx.random.normal((B, NH, dqk), key=ks[6]),
              3.0 * mx.random.normal((B, NH, 1), key=ks[7]))
    mx.eval(q, k, v, i, f, st)
    return q, k, v, i, f, st


def truth(q, k, v, i, f, st):
    """float64 on the CPU stream from the same inputs."""
    with mx.stream(mx.cpu):
        c = lambda x: x.astype(mx.float64)  # noqa: E731
        args = (c(q), c(k), c(v), c(i), c(f), None if st is None else tuple(c(s) for s in st))
        form = mlstm_chunkwise_ops if q.shape[2] > 10_000 else mlstm_chunkwise_ref
        h, s = form(*args, eps=1e-6, chunk_size=64)
        mx.eval(h, s)
    return h, s


def normwise(a, b) -> float:
    with mx.stream(mx.cpu):  # b may be float64, which only the CPU computes
        a, b = a.astype(mx.float32), b.astype(mx.float32)
        assert bool(mx.all(mx.isfinite(a)).item()), "NaN or inf"
        return float((mx.max(mx.abs(a - b)) / mx.maximum(mx.max(mx.abs(b)), 1.0)).item())


def _cpu32(x):
    with mx.stream(mx.cpu):
        y = x.astype(mx.float32)
        mx.eval(y)
    return y


def errors(out, ref) -> dict:
    h, (C, n, m) = out
    hr, (Cr, nr, mr) = ref
    h, C, n, m = (_cpu32(x) for x in (h, C, n, m))
    hr, Cr, nr, mr = (_cpu32(x) for x in (hr, Cr, nr, mr))
    e = {}
    for name, a, b, fn in (("h", h, hr, rel_error), ("C", C, Cr, rel_error), ("n", n, nr, rel_error),
                           ("m", m, mr, normwise)):
        try:
            e[name] = fn(a, b)
        except AssertionError as err:  # NaN/inf: recorded as such, the assertion below fails on it
            e[name] = f"{err}".split("\n")[0] or "NaN or inf"
    return e


# (id, B, NH, T, Dqk, Dv, options); "typical" gates hold h to H_TOL, harsh and saturated ones to H_TOL_HARSH.
# T mod 64 != 0: a final partial chunk, masked inside the kernels (T < 64: nothing else)
CASES = [
    ("T1", 1, 2, 1, 64, 64, {}),
    ("T1_state_dv128", 2, 2, 1, 64, 128, dict(state=True)),
    ("T5_state", 1, 2, 5, 64, 64, dict(state=True)),
    ("T63", 1, 2, 63, 64, 64, {}),
    ("T64", 1, 2, 64, 64, 64, {}),
    ("T64_typical", 1, 2, 64, 64, 64, dict(typical=True)),
    ("T65_dv128", 1, 2, 65, 64, 128, {}),
    ("T200_B3_state", 3, 2, 200, 64, 128, dict(state=True)),
    ("T200_B3_typical_state", 3, 2, 200, 64, 128, dict(state=True, typical=True)),
    ("T130_dqk128_dv192", 2, 2, 130, 128, 192, {}),
    ("saturated_state", 2, 2, 300, 64, 64, dict(saturate=True, state=True)),
    ("saturated_7b", 1, 2, 256, 256, 512, dict(saturate=True)),
    ("padded_B3", 3, 2, 200, 64, 64, dict(pad=[0, 70, 150])),
    ("padded_7b_state", 2, 4, 333, 256, 512, dict(pad=[0, 130], state=True, typical=True)),
    ("7b_T200_B3_state", 3, 8, 200, 256, 512, dict(state=True)),
    ("7b_T2048_typical", 1, 8, 2048, 256, 512, dict(typical=True)),
    ("7b_T2047_typical", 1, 8, 2047, 256, 512, dict(typical=True)),
    ("7b_T2065", 1, 8, 2048 + 17, 256, 512, {}),
    ("partial_segment", 1, 2, 64 * 32 + 5, 64, 128, dict(state=True)),
    ("two_segments", 1, 2, 64 * 33 + 5, 64, 64, dict(state=True)),
    ("two_segments_typical", 2, 2, 64 * 66, 64, 128, dict(typical=True)),
    ("long_T70000", 1, 1, 70_000, 64, 64, dict(typical=True)),
]


def check(name, out, ops, ref, opts, shapes):
    """Assert the tolerances of the module doc; the message carries every error of the case."""
    B, NH, T, dqk, dv = shapes
    ek, eo = errors(out, ref), errors(ops, ref)
    try:
        e_vs_ops = errors(out, ops)
    except Exception as err:  # informative only
        e_vs_ops = repr(err)
    msg = (f"case {name} (B={B} NH={NH} T={T} Dqk={dqk} Dv={dv} {opts}): kernel vs float64 {ek}; "
           f"ops vs float64 {eo}; kernel vs ops {e_vs_ops}")
    print(msg)
    assert out[0].shape == (B, NH, T, dv) and out[0].dtype == mx.bfloat16, msg
    assert out[1][0].shape == (B, NH, dqk, dv) and out[1][2].shape == (B, NH, 1), msg
    assert all(s.dtype == mx.float32 for s in out[1]), msg
    assert all(isinstance(x, float) for x in ek.values()), msg
    h_tol = H_TOL if opts.get("typical") else H_TOL_HARSH
    assert ek["h"] <= h_tol and ek["h"] <= H_FACTOR * eo["h"] + H_FLOOR, msg
    assert ek["C"] <= C_TOL and ek["C"] <= FACTOR * eo["C"] + C_FLOOR, msg
    assert ek["n"] <= N_TOL and ek["n"] <= FACTOR * eo["n"] + N_FLOOR, msg
    assert ek["m"] <= M_TOL, msg


@needs_cuda
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_chunkwise_cuda_matches_ops_and_float64(case):
    name, B, NH, T, dqk, dv, opts = case
    q, k, v, i, f, st = make(zlib.crc32(name.encode()) % 10_000, B, NH, T, dqk, dv, **opts)
    assert cwc.applies(q, k, v, i, f, st, 64), f"{name}: the CUDA path does not apply"
    out = cwc.mlstm_chunkwise_cuda(q, k, v, i, f, st)
    mx.eval(out)
    ops = mlstm_chunkwise_ops(q, k, v, i, f, st)
    mx.eval(ops)
    check(name, out, ops, truth(q, k, v, i, f, st), opts, (B, NH, T, dqk, dv))


def check_left_padding(fn, with_state: bool, pad: int = 150, T: int = 64 * 5, dv: int = 128):
    """Fully masked leading chunks (pad 150 > 2 chunks) are identity steps: the tail's h and the final state equal
    those of the unpadded tail run from the same incoming state (up to the kernels' rounding); from the zero state
    the masked rows' h is exactly 0 (from a state they read it out, as every form does)."""
    q, k, v, i, f, st = make(7, 1, 2, T, 64, dv, pad=[pad], state=with_state)
    h, (C, n, m) = fn(q, k, v, i, f, st)
    mx.eval(h, C, n, m)
    if not with_state:
        assert float(mx.max(mx.abs(h[:, :, :pad].astype(mx.float32))).item()) == 0.0, "masked rows not zero"
    ref = truth(q[:, :, pad:], k[:, :, pad:], v[:, :, pad:], i[:, :, pad:], f[:, :, pad:], st)
    e = errors((h[:, :, pad:], (C, n, m)), ref)
    assert all(isinstance(x, float) for x in e.values()), e
    assert e["h"] <= H_TOL_HARSH and e["C"] <= C_TOL and e["n"] <= N_TOL and e["m"] <= M_TOL, e


@needs_cuda
@pytest.mark.parametrize("with_state", [False, True])
def test_masked_left_padding_is_an_identity(with_state):
    check_left_padding(cwc.mlstm_chunkwise_cuda, with_state)


@needs_cuda
def test_registry_routes_bf16_to_the_kernels_and_the_switch_turns_them_off(monkeypatch):
    q, k, v, i, f, st = make(11, 2, 2, 130, 64, 64, state=True)
    fast = kernels.get("mlstm.chunkwise")
    h, s = fast(q, k, v, i, f, st)
    hc, sc = cwc.mlstm_chunkwise_cuda(q, k, v, i, f, st)
    assert mx.array_equal(h, hc) and all(mx.array_equal(a, b) for a, b in zip(s, sc)), "not the CUDA path"
    assert "CUDA" in kernels.describe(["mlstm.chunkwise"])["mlstm.chunkwise"]
    monkeypatch.setenv("XLSTM_MLX_CHUNKWISE_CUDA", "0")
    assert not cwc.applies(q, k, v, i, f, st, 64)
    h0, _ = fast(q, k, v, i, f, st)
    assert mx.array_equal(h0, mlstm_chunkwise_ops(q, k, v, i, f, st)[0])
    assert "MLX ops" in kernels.describe(["mlstm.chunkwise"])["mlstm.chunkwise"]
    # float32 inputs, another chunk size, head dims off the tiles: the ops path
    monkeypatch.delenv("XLSTM_MLX_CHUNKWISE_CUDA")
    assert not cwc.applies(q.astype(mx.float32), k, v, i, f, st, 64)
    assert not cwc.applies(q, k, v, i, f, st, 32)
    q2, k2, v2, i2, f2, _ = make(12, 1, 1, 64, 48, 64)
    assert not cwc.applies(q2, k2, v2, i2, f2, None, 64)


@needs_cuda
def test_transposed_views_as_the_model_passes_them_give_the_same_result():
    """The 7B block hands q/k/v as [B, T, NH, D] -> [B, NH, T, D] views and gates as [B, T, NH] -> [B, NH, T]."""
    q, k, v, i, f, st = make(17, 2, 2, 64 * 3 + 9, 64, 128, state=True)
    view = lambda x: mx.contiguous(x.swapaxes(1, 2)).swapaxes(1, 2)  # noqa: E731  (same values, strided)
    h, s = cwc.mlstm_chunkwise_cuda(q, k, v, i, f, st)
    hv, sv = cwc.mlstm_chunkwise_cuda(view(q), view(k), view(v), view(i[..., None])[..., 0], f, st)
    assert mx.array_equal(h, hv) and all(mx.array_equal(a, b) for a, b in zip(s, sv))


def model_rows(q, k, v, i, f):
    """The model's layout of the same values: the fused projection output [B, T, NH Dqk | NH Dqk | NH Dv | o] with
    o NaN, and three arrays with 8 NaN columns either side of the heads (offsets 8); gates [B, T, NH]. The NaN
    columns fail any test whose kernel reads outside its heads' columns."""
    B, NH, T, dqk = q.shape
    dv = v.shape[-1]
    rows = lambda x: x.transpose(0, 2, 1, 3).reshape(B, T, -1)  # noqa: E731
    nan = lambda n: mx.full((B, T, n), float("nan"), dtype=mx.bfloat16)  # noqa: E731
    qkvo = mx.concatenate([rows(q), rows(k), rows(v), nan(NH * dv)], axis=-1)
    sep = [mx.concatenate([nan(8), rows(x), nan(8)], axis=-1) for x in (q, k, v)]
    gates = [mx.contiguous(x.swapaxes(1, 2)) for x in (i, f)]
    mx.eval(qkvo, sep, gates)
    return [((qkvo,) * 3, (0, NH * dqk, 2 * NH * dqk)), (tuple(sep), (8, 8, 8))], gates


def check_rows_layout(name, B, NH, T, dqk, dv, opts):
    """mlstm_chunkwise_rows on the model's layout gives the heads-first kernels' result bit for bit (the same
    arithmetic, only the addressing differs), h as [B, T, NH, Dv]; that result is judged against float64 as the
    cases above; the ops form of the layout (the kernels' VJP) is the ops scan's result, transposed."""
    q, k, v, i, f, st = make(zlib.crc32(name.encode()) % 10_000, B, NH, T, dqk, dv, **opts)
    h, s = out = cwc.mlstm_chunkwise_cuda(q, k, v, i, f, st)
    ops = mlstm_chunkwise_ops(q, k, v, i, f, st)
    mx.eval(out, ops)
    check(name, out, ops, truth(q, k, v, i, f, st), opts, (B, NH, T, dqk, dv))
    layouts, (ig, fg) = model_rows(q, k, v, i, f)
    for arrays, offsets in layouts:
        assert cwc.applies_rows(*arrays, ig, fg, st, dqk, dv, offsets), f"{name}: the rows path does not apply"
        hr, sr = cwc.mlstm_chunkwise_rows(*arrays, ig, fg, st, dqk=dqk, dv=dv, offsets=offsets)
        ho, so = cwc.mlstm_chunkwise_rows_ops(*arrays, ig, fg, st, dqk=dqk, dv=dv, offsets=offsets)
        mx.eval(hr, sr, ho, so)
        assert hr.shape == (B, T, NH, dv) and hr.dtype == mx.bfloat16, (name, offsets, hr.shape)
        assert mx.array_equal(hr, h.transpose(0, 2, 1, 3)), f"{name} offsets {offsets}: h differs"
        assert all(mx.array_equal(a, b) for a, b in zip(sr, s)), f"{name} offsets {offsets}: state differs"
        assert mx.array_equal(ho, ops[0].transpose(0, 2, 1, 3)), f"{name} offsets {offsets}: ops h differs"
        assert all(mx.array_equal(a, b) for a, b in zip(so, ops[1])), f"{name} offsets {offsets}: ops state"


def check_zero_state(T: int, B: int = 2, NH: int = 2, dqk: int = 64, dv: int = 128):
    """A fresh state (mlstm_zero_state's ZeroState, or None) is read by no kernel (kernel A starts from zeros,
    HAS_STATE false, and no fill of the zeros is launched): the same bits as those zeros passed as a plain state,
    in both layouts; a ZeroState stays a ZeroState only as made (a state the kernels return is a plain tuple)."""
    q, k, v, i, f, _ = make(T, B, NH, T, dqk, dv, typical=True)
    fresh = mlstm_zero_state(B, NH, dqk, dv)
    assert isinstance(fresh, ZeroState)
    plain = tuple(mx.zeros_like(a) for a in fresh)
    assert not isinstance(plain, ZeroState)
    layouts, (ig, fg) = model_rows(q, k, v, i, f)
    arrays, offsets = layouts[0]
    for fn in (lambda st: cwc.mlstm_chunkwise_cuda(q, k, v, i, f, st),
               lambda st: cwc.mlstm_chunkwise_rows(*arrays, ig, fg, st, dqk=dqk, dv=dv, offsets=offsets)):
        (h0, s0), (h1, s1), (h2, s2) = fn(plain), fn(fresh), fn(None)
        mx.eval(h0, s0, h1, s1, h2, s2)
        assert not isinstance(s1, ZeroState)
        for h, s in ((h1, s1), (h2, s2)):
            assert mx.array_equal(h, h0) and all(mx.array_equal(a, b) for a, b in zip(s, s0))


@needs_cuda
@pytest.mark.parametrize("T", [1, 130, 64 * 32 + 5])  # one partial chunk; three; two segments
def test_zero_state_is_not_read(T):
    check_zero_state(T)


ROWS_CASES = [
    ("rows_T1", 1, 2, 1, 64, 64, {}),
    ("rows_T63_state", 2, 2, 63, 64, 128, dict(state=True)),
    ("rows_T200_B3_pad", 3, 2, 200, 64, 128, dict(pad=[0, 70, 150], state=True)),
    ("rows_7b_T2047", 1, 8, 2047, 256, 512, dict(typical=True)),
    ("rows_7b_T333_B2_state", 2, 8, 333, 256, 512, dict(state=True, typical=True)),
    ("rows_partial_segment", 1, 2, 64 * 32 + 5, 64, 64, dict(state=True)),
]


@needs_cuda
@pytest.mark.parametrize("case", ROWS_CASES, ids=[c[0] for c in ROWS_CASES])
def test_rows_layout_is_the_heads_first_result(case):
    check_rows_layout(*case)


def check_block_rows_path(weight_mode, monkeypatch, T: int, B: int = 2):
    """The 7B block's mLSTM layer in the fast profile (bf16 q/k/v) runs mlstm_chunkwise_rows on its projection
    output (fused weights: the one fused output; single: the three projections), and gives exactly what it gives
    through the heads-first kernels (the same kernels' arithmetic on the same values); with left padding and a
    state. Against the forced references with float32 q/k/v (the parallel form chunk by chunk in MLX ops on the same
    bf16-valued projections) the layer output is within H_TOL relative: the kernels hold h to ~3e-3 of float64 on
    every case above, the per-head norm keeps h's relative error, and the output gate and out_proj add bf16
    roundings (2^-9) of their own; measured 3.6e-3 (emulated, T = 71 and 2,047)."""
    from xlstm_mlx.checkpoints.random import randomize, shape_args
    from xlstm_mlx.models.xlstm7b.model import Model
    from xlstm_mlx.profiles import load_profile

    profile = load_profile("fast")
    big = ("qkv_opreact", ".q.", ".k.", ".v.", "ogate_preact", "out_proj")  # the bf16 weights of the fast profile
    model = randomize(Model(shape_args("tiny", weight_mode=weight_mode, num_heads=2, qk_dim=128, v_dim=128), profile),
                      5, dtype=lambda name: mx.bfloat16 if any(b in name for b in big) else None)
    layer = model.blocks[0].mlstm_layer
    ks = mx.random.split(mx.random.key(6), 4)
    x = mx.random.normal((B, T, 64), key=ks[0])
    mask = mx.arange(T)[None, :] >= mx.array([0, 9] + [0] * (B - 2))[:, None]
    state = (mx.random.normal((B, 2, 64, 64), key=ks[1]), mx.random.normal((B, 2, 64), key=ks[2]),
             mx.random.normal((B, 2, 1), key=ks[3]))
    calls = []
    rows = cwc.mlstm_chunkwise_rows
    monkeypatch.setattr(cwc, "mlstm_chunkwise_rows", lambda *a, **kw: calls.append(1) or rows(*a, **kw))
    out, st = layer(x, state, mask, profile)
    mx.eval(out, st)
    assert calls, "the block did not take the rows path"
    monkeypatch.setattr(cwc, "applies_rows", lambda *a, **kw: False)
    out_h, st_h = layer(x, state, mask, profile)
    assert len(calls) == 1 and mx.array_equal(out, out_h), "rows path and heads-first kernels differ"
    assert all(mx.array_equal(a, b) for a, b in zip(st, st_h)), "rows path and heads-first kernels: state differs"
    with kernels.use_reference(True):
        out_r, _ = layer(x, state, mask, profile.replace(kernel_dtype="float32"))
    e = rel_error(out, out_r)
    print(f"block {weight_mode} T={T}: layer output vs the references {e:.3g}")
    assert e <= H_TOL, e


@needs_cuda
@pytest.mark.parametrize("weight_mode", ["fused", "single"])
@pytest.mark.parametrize("T", [65, 2047])
def test_block_runs_the_rows_kernels_on_the_projection_output(weight_mode, T, monkeypatch):
    check_block_rows_path(weight_mode, monkeypatch, T)


@needs_cuda
def test_gradient_through_the_rows_kernels_is_the_ops_scans():
    """mlstm_chunkwise_rows differentiates as its ops form (mlstm_chunkwise_rows_ops): one fused array passed as
    q, k and v gets the sum of the three cotangents."""
    q, k, v, i, f, st = make(16, 1, 2, 70, 64, 64, state=True)
    layouts, (ig, fg) = model_rows(q, k, v, i, f)
    qkvo = mx.nan_to_num(layouts[0][0][0])  # o's NaN columns: zero (their gradient is 0 either way)
    offsets = layouts[0][1]
    w = mx.random.normal((1, 70, 2, 64), key=mx.random.key(18)).astype(mx.bfloat16)

    def loss(fn):
        def value(x, i, f, C):
            h, (C1, n1, m1) = fn(x, x, x, i, f, (C, st[1], st[2]), dqk=64, dv=64, offsets=offsets)
            return (h * w).astype(mx.float32).sum() + C1.sum() + n1.sum()
        return value

    args = (qkvo, ig, fg, st[0])
    gk = mx.grad(loss(cwc.mlstm_chunkwise_rows), argnums=list(range(4)))(*args)
    go = mx.grad(loss(cwc.mlstm_chunkwise_rows_ops), argnums=list(range(4)))(*args)
    errs = [rel_error(a, b) for a, b in zip(gk, go)]
    assert max(errs) <= 1e-5, errs


def test_rows_ops_form_is_the_ops_scan_transposed():
    """Any backend: the ops form of the model's layout is the heads-first ops scan on the same values."""
    q, k, v, i, f, st = make(19, 2, 2, 70, 64, 128, state=True)
    layouts, (ig, fg) = model_rows(q, k, v, i, f)
    h, s = mlstm_chunkwise_ops(q, k, v, i, f, st)
    for arrays, offsets in layouts:
        hr, sr = cwc.mlstm_chunkwise_rows_ops(*arrays, ig, fg, st, dqk=64, dv=128, offsets=offsets)
        assert mx.array_equal(hr, h.transpose(0, 2, 1, 3)) and all(mx.array_equal(a, b) for a, b in zip(sr, s))


@needs_cuda
def test_gradient_through_the_kernels_is_the_ops_scans():
    """The kernels have no VJP of their own: mx.custom_function gives them the ops scan's (training in bf16)."""
    q, k, v, i, f, st = make(13, 1, 2, 130, 64, 64, state=True)
    w = mx.random.normal((1, 2, 130, 64), key=mx.random.key(14)).astype(mx.bfloat16)

    def loss(fn):
        def value(q, k, v, i, f, C):
            h, (C1, n1, m1) = fn(q, k, v, i, f, (C, st[1], st[2]))
            return (h * w).astype(mx.float32).sum() + C1.sum() + n1.sum()
        return value

    args = (q, k, v, i, f, st[0])
    gk = mx.grad(loss(cwc.mlstm_chunkwise_cuda), argnums=list(range(6)))(*args)
    go = mx.grad(loss(mlstm_chunkwise_ops), argnums=list(range(6)))(*args)
    errs = [rel_error(a, b) for a, b in zip(gk, go)]
    assert max(errs) <= 1e-5, errs


def test_ops_gradient_wrapper_gives_the_ops_gradient():
    """Any backend: with_ops_gradient around any forward differentiates as the ops scan (here the forward is the
    ops scan itself, so values and gradients are equal)."""
    q, k, v, i, f, st = make(15, 1, 2, 70, 64, 64, state=True)
    q, k, v = (x.astype(mx.float32) for x in (q, k, v))
    fused = cwc.with_ops_gradient(lambda *a: mlstm_chunkwise_ops(*a[:6], a[6], 64), 1e-6)

    def via_fused(q, k, v, i, f):
        h, C, n, m = fused(q, k, v, i, f, *st)
        return (h * h).sum() + C.sum() + (n * n).sum()

    def via_ops(q, k, v, i, f):
        h, (C, n, m) = mlstm_chunkwise_ops(q, k, v, i, f, st)
        return (h * h).sum() + C.sum() + (n * n).sum()

    gf = mx.grad(via_fused, argnums=list(range(5)))(q, k, v, i, f)
    go = mx.grad(via_ops, argnums=list(range(5)))(q, k, v, i, f)
    assert all(mx.array_equal(a, b) for a, b in zip(gf, go))


def test_without_cuda_the_ops_path_runs_and_the_label_says_so():
    if cuda_available():
        pytest.skip("CUDA present: the kernels run (tested above)")
    q, k, v, i, f, st = make(3, 1, 2, 70, 64, 64, state=True)
    assert not cwc.applies(q, k, v, i, f, st, 64)
    h, s = kernels.get("mlstm.chunkwise")(q, k, v, i, f, st)
    ho, so = mlstm_chunkwise_ops(q, k, v, i, f, st)
    assert mx.array_equal(h, ho) and all(mx.array_equal(a, b) for a, b in zip(s, so))
    assert "MLX ops" in kernels.describe(["mlstm.chunkwise"])["mlstm.chunkwise"]
    with pytest.raises(UsageError):
        cwc.mlstm_chunkwise_cuda(q, k, v, i, f, st)
