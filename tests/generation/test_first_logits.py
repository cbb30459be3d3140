"""The first sampled token's logits come from the prefill itself (generate.py's module docstring).

generate_step prefills the whole prompt and runs the final norm and the head on the last position only (the
model's `last_only`); the old form prefilled all but the last token and ran that token through the one-token
decode step. It is kept as the reference (and as the path `on_prefill` takes): the two differ only by float
rounding, the last token's contribution summed chunkwise or recurrently. Checked on every model family in
float32 on fresh random weights, over prompt lengths at and around the chunkwise kernel's chunk (64) and the
prefill chunk, with and without left padding; and that no [B, T, V] logits are ever built for a prompt.
"""

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from xlstm_mlx import load, models
from xlstm_mlx.checkpoints.random import make_random_checkpoint, randomize
from xlstm_mlx.errors import NumericsError
from xlstm_mlx.generation.generate import generate_step, prefill
from xlstm_mlx.models.compiled import decode_fn
from xlstm_mlx.profiles import load_profile

# float32, relative to the scale of the logits (or of a state tensor), as tests/models/test_family_contract.py:
# the chunkwise and recurrent forms differ only in summation order. Measured on the CPU over these cases: at most
# 8.6e-6 (logits; "tiny" shape, 3 x 64 left-padded, where the float64 profile shows the prefill-then-step state
# to be the less accurate of the two: 4.5e-5 off against 2.8e-6), most cases 3e-7 to 1e-6, one-token prompts 0
TOL = 2e-5

MODELS = [*models.FAMILIES, "xlstm7b-loaded"]  # every registered family, and a loaded (fused) xLSTM-7B model


@pytest.fixture(scope="module", params=MODELS)
def model(request, tmp_path_factory):
    if request.param == "xlstm7b-loaded":  # through load(): the fused projections of an inference call
        d = make_random_checkpoint(tmp_path_factory.mktemp("first-logits"), "tiny", seed=5)
        return load(d, dtype="float32")[0]
    fam = models.get_family(request.param)
    return randomize(fam.Model(fam.example_args(), load_profile("parity")), seed=7)


def _max_rel(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    assert np.isfinite(a).all() and np.isfinite(b).all()
    return float(np.abs(a - b).max() / max(1.0, np.abs(b).max()))


def _prompt(model, B, T, pads, seed):
    """ids [B, T] and, given left-pad counts per row, a mask (None without pads)."""
    ids = mx.array(np.random.default_rng(seed).integers(0, model.args.vocab_size, (B, T)).astype(np.int32))
    if pads is None:
        return ids, None
    return ids, mx.array([[t >= p for t in range(T)] for p in pads])


def _old_first_logits(model, ids, mask, step):
    """The reference: prefill all but the last token, then the last token through the one-token decode step."""
    cache = model.make_cache(ids.shape[0])
    prefill(model, ids[:, :-1], cache, None if mask is None else mask[:, :-1], step)
    return decode_fn(model)(ids[:, -1:], cache)[:, -1], cache


CASES = [  # (B, T, prefill_step_size, left pads per row or None)
    (1, 1, 2048, None), (1, 2, 2048, None), (1, 63, 2048, None), (1, 64, 2048, None), (1, 65, 2048, None),
    (2, 129, 2048, None),
    (2, 33, 16, None),  # the last prefill chunk holds one token (it runs through the compiled step)
    (2, 48, 16, None), (3, 45, 16, None),  # chunks of 16: exact, and a remainder
    (2, 1, 2048, [0, 0]), (2, 2, 2048, [1, 0]), (3, 64, 2048, [0, 5, 63]), (2, 70, 2048, [6, 0]),
    (3, 45, 16, [0, 17, 44]),  # padding longer than a prefill chunk; a row whose only real token is the last
]


@pytest.mark.parametrize("B,T,step,pads", CASES)
def test_prefill_last_logits_equal_prefill_then_step(model, B, T, step, pads):
    ids, mask = _prompt(model, B, T, pads, seed=T * 7 + B)
    ref, ref_cache = _old_first_logits(model, ids, mask, step)
    cache = model.make_cache(B)
    logits = prefill(model, ids, cache, mask, step, last_logits=True)
    assert logits.shape == (B, model.args.vocab_size) and logits.dtype == mx.float32
    assert _max_rel(logits, ref) <= TOL
    assert cache.offset == ref_cache.offset == T
    for a, b in zip(cache.arrays(), ref_cache.arrays()):
        assert _max_rel(a, b) <= TOL


def _capture(store):
    """A greedy sampler that keeps every logits [B, V] it is given."""
    def sample(logits):
        store.append(logits)
        return mx.argmax(logits, axis=-1).astype(mx.int32)
    return sample


@pytest.mark.parametrize("B,T,step,pads", [(1, 1, 2048, None), (1, 40, 16, None), (3, 45, 16, [0, 17, 44]),
                                           (2, 70, 2048, [6, 0])])
def test_generate_step_first_logits_and_greedy_tokens_match_the_old_path(model, B, T, step, pads):
    """generate_step on the new path against the same call with on_prefill (which keeps the old path): the first
    logits agree to rounding, the greedy tokens and the final state's length are equal."""
    ids, mask = _prompt(model, B, T, pads, seed=T + 100 * B)
    new_logits, old_logits, seen = [], [], []
    new_cache, old_cache = model.make_cache(B), model.make_cache(B)
    new = [y.tolist() for y in generate_step(model, ids, new_cache, mask=mask, sampler=_capture(new_logits),
                                             max_tokens=8, prefill_step_size=step)]
    old = [y.tolist() for y in generate_step(model, ids, old_cache, mask=mask, sampler=_capture(old_logits),
                                             max_tokens=8, prefill_step_size=step,
                                             on_prefill=lambda c: seen.append(c.offset))]
    assert seen == [T - 1]  # the callback still sees the prompt but its last token
    assert _max_rel(new_logits[0], old_logits[0]) <= TOL
    assert new == old
    assert new_cache.offset == old_cache.offset == T + 7


def test_processors_see_the_same_history_on_the_first_token(model):
    """A repetition penalty over the prompt acts on the first token as before (the history is the prompt)."""
    ids, mask = _prompt(model, 2, 30, [0, 9], seed=3)
    kw = dict(mask=mask, max_tokens=6, prefill_step_size=16)
    from xlstm_mlx.generation.sample import make_logits_processors

    procs = make_logits_processors(1e6, 40, None)
    new = [y.tolist() for y in generate_step(model, ids, logits_processors=procs, **kw)]
    old = [y.tolist() for y in generate_step(model, ids, logits_processors=procs, on_prefill=lambda c: None, **kw)]
    assert new == old
    real = [set(np.array(ids[b])[np.array(mask[b])].tolist()) for b in range(2)]
    for b in range(2):  # a penalty of 1e6 forbids every token of the row's own prompt (its pads are not history)
        assert not {row[b] for row in new} & real[b]


class _RowCountingHead(nn.Linear):
    """An nn.Linear that records how many rows each call's input holds (it is not nn.Linear itself, so the
    xLSTM-7B family's `linear` calls it as a module rather than through its kernel)."""

    def __init__(self, weight):
        super().__init__(weight.shape[1], weight.shape[0], bias=False)
        self.weight = weight
        self.rows = []

    def __call__(self, x):
        self.rows.append(int(np.prod(x.shape[:-1])))
        return super().__call__(x)


def test_no_prompt_logits_are_built(model):
    """The head sees one row per sequence for a prompt (never [B, T]), in every prefill chunk and step."""
    if "lm_head" not in model:
        pytest.skip("tied head")
    head = model.lm_head
    counting = _RowCountingHead(head.weight)
    model.lm_head = counting
    try:
        B, T = 2, 45
        ids, mask = _prompt(model, B, T, [0, 11], seed=1)
        model(ids)  # the control: a plain call is all positions (the counter does see the head)
        assert counting.rows == [B * T]
        counting.rows.clear()
        n = len(list(generate_step(model, ids, mask=mask, max_tokens=4, prefill_step_size=16)))
        assert n == 4 and counting.rows and max(counting.rows) == B, counting.rows
        counting.rows.clear()
        list(generate_step(model, ids, mask=mask, max_tokens=4, prefill_step_size=16, on_prefill=lambda c: None))
        assert counting.rows and max(counting.rows) == B, counting.rows
    finally:
        model.lm_head = head


def test_last_only_is_the_last_row_of_the_full_logits(model):
    ids, mask = _prompt(model, 2, 37, [0, 4], seed=9)
    a, b = model.make_cache(2), model.make_cache(2)
    full = model(ids, cache=a, mask=mask)
    last = model(ids, cache=b, mask=mask, last_only=True)
    assert last.shape == (2, 1, model.args.vocab_size)
    assert _max_rel(last, full[:, -1:]) <= TOL  # one row through the head or 37: the matmul may differ in rounding
    for x, y in zip(a.arrays(), b.arrays()):  # the state does not depend on it
        np.testing.assert_array_equal(np.array(x), np.array(y))
    one = model(ids[:, :1], cache=model.make_cache(2), last_only=True)  # one token: the same either way
    np.testing.assert_array_equal(np.array(one), np.array(model(ids[:, :1], cache=model.make_cache(2))))


def test_non_finite_first_logits_stop_with_numerics_error(model):
    """The first token's isfinite check holds on the new path and the old one."""
    ids, _ = _prompt(model, 1, 20, None, seed=2)
    head = model["lm_head"] if "lm_head" in model else None
    if head is None:
        pytest.skip("tied head")
    w = head.weight
    head.weight = mx.where(mx.arange(w.size).reshape(w.shape) == 5, mx.array(float("nan"), dtype=w.dtype), w)
    try:
        for kw in ({}, {"on_prefill": lambda c: None}):
            with pytest.raises(NumericsError, match="generated token 1"):
                list(generate_step(model, ids, max_tokens=3, **kw))
    finally:
        head.weight = w



@pytest.mark.parametrize("T", [1, 45])
def test_the_first_token_takes_no_decode_step(model, monkeypatch, T):
    """max_tokens=1: the prompt's last token goes through the prefill, not through the decode step (the old
    path, kept for on_prefill, steps it). A one-token prompt is the prefill's own one-token call."""
    from xlstm_mlx.generation import generate

    calls = []

    def counting_decode_fn(m, *a, **kw):
        f = decode_fn(m, *a, **kw)
        return lambda tokens, cache: (calls.append(tokens.shape), f(tokens, cache))[1]

    monkeypatch.setattr(generate, "decode_fn", counting_decode_fn)
    ids, _ = _prompt(model, 2, T, None, seed=4)
    cache = model.make_cache(2)
    assert len(list(generate_step(model, ids, cache, max_tokens=1, prefill_step_size=16))) == 1
    assert calls == [] and cache.offset == T
    list(generate_step(model, ids, max_tokens=1, prefill_step_size=16, on_prefill=lambda c: None))
    assert calls == [(2, 1)]
    calls.clear()
    assert len(list(generate_step(model, ids, max_tokens=3, prefill_step_size=16))) == 3
    assert calls == [(2, 1)] * 2  # the second and third tokens
