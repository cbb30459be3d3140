"""BatchSampler (one graph for a batch of rows with their own settings) against the reference: each row through its
own Sampler and processors, as generate() draws it alone. Exact equality: the batched form does the same float32
operations per element, and each row's Gumbel noise comes from its own key."""

import math

import mlx.core as mx
import numpy as np
import pytest

from xlstm_mlx.errors import UsageError
from xlstm_mlx.generation.batch_sample import (
    BatchSampler, RowSampling, first_history, first_key, history_array, join_histories, sample_rows,
)

V = 300

SPECS = [
    RowSampling(),  # greedy
    RowSampling(temperature=0.8, seed=1),
    RowSampling(temperature=1.3, top_k=7, seed=2),
    RowSampling(temperature=0.9, top_p=0.6, seed=3),
    RowSampling(temperature=1.0, min_p=0.2, seed=4),
    RowSampling(temperature=0.7, top_k=40, top_p=0.9, min_p=0.05, seed=5, repetition_penalty=1.5,
                repetition_context_size=6),
    RowSampling(repetition_penalty=0.7, repetition_context_size=3),  # greedy with a penalty < 1
    RowSampling(temperature=1.1, seed=6, logit_bias={5: 4.0, 9: -100.0}, logprobs=3),
    RowSampling(temperature=2.0, top_k=V + 5, seed=2**40 + 3),  # top_k >= V keeps all
    RowSampling(logprobs=0),
]


def _run(specs, steps, rng_seed):
    """`steps` draws by the batch and by the reference on the same fresh random logits; histories grow alike."""
    rng = np.random.default_rng(rng_seed)
    prompts = [rng.integers(0, V, size=int(rng.integers(1, 12))).tolist() for _ in specs]
    solo = [s.solo() for s in specs]
    full = [list(p) for p in prompts]  # what generate() keeps as history: the prompt and every drawn token
    bs = BatchSampler(specs)
    keys = mx.stack([first_key(s) for s in specs])
    hist = history_array([first_history(s, p) for s, p in zip(specs, prompts)])
    for _ in range(steps):
        # a narrow spread makes the filters and the penalty change draws often; some exact ties too
        logits = mx.array((rng.normal(size=(len(specs), V)) * 2).round(1).astype(np.float32))
        draw = bs(logits, keys, hist)
        ref_tokens, ref_processed = sample_rows(specs, solo, logits, full)
        assert draw.tokens.tolist() == ref_tokens.tolist()
        assert mx.array_equal(bs.process(logits, hist), ref_processed).item()
        assert all(draw.finite.tolist())
        for b, t in enumerate(draw.tokens.tolist()):
            full[b].append(t)
        keys, hist = draw.keys, draw.history
    return draw, full


@pytest.mark.parametrize("rng_seed", [0, 1, 2])
def test_batch_draws_equal_solo_draws(rng_seed):
    _run(SPECS, 12, rng_seed)


def test_a_seeded_row_draws_the_same_alone_and_in_any_batch():
    row = RowSampling(temperature=1.0, top_p=0.95, seed=11, repetition_penalty=1.2)
    rng = np.random.default_rng(5)
    own = [mx.array(rng.normal(size=(1, V)).astype(np.float32)) for _ in range(15)]

    def draws(specs, at):
        bs = BatchSampler(specs)
        keys = mx.stack([first_key(s) for s in specs])
        hist = history_array([first_history(s, [1, 2, 3]) for s in specs], width=20)
        out = []
        for x in own:
            others = mx.array(rng.normal(size=(len(specs), V)).astype(np.float32))
            logits = mx.concatenate([others[:at], x, others[at + 1:]])
            d = bs(logits, keys, hist)
            keys, hist = d.keys, d.history
            out.append(d.tokens.tolist()[at])
        return out

    alone = draws([row], 0)
    assert draws([SPECS[2], row, SPECS[0], SPECS[7]], 1) == alone
    assert draws([SPECS[5], SPECS[6], row], 2) == alone
    assert draws([RowSampling(temperature=1.0, top_p=0.95, seed=12, repetition_penalty=1.2)], 0) != alone


def test_logprobs_are_log_softmax_of_the_processed_logits():
    specs = [RowSampling(temperature=0.9, seed=1, logprobs=4, logit_bias={3: 2.5}), RowSampling(logprobs=0),
             RowSampling(temperature=0.5, seed=2)]
    logits = mx.array(np.random.default_rng(3).normal(size=(3, V)).astype(np.float32))
    bs = BatchSampler(specs)
    draw = bs(logits, mx.stack([first_key(s) for s in specs]))
    processed = np.array(bs.process(logits, None), dtype=np.float64)
    lp = processed - np.log(np.exp(processed - processed.max(-1, keepdims=True)).sum(-1, keepdims=True)) \
        - processed.max(-1, keepdims=True)
    tokens = draw.tokens.tolist()
    np.testing.assert_allclose(np.array(draw.logprob), lp[np.arange(3), tokens], rtol=0, atol=1e-5)
    top = np.array(draw.top_ids)
    assert top.shape == (3, 4)
    np.testing.assert_array_equal(top[0], np.argsort(-lp[0])[:4])
    np.testing.assert_allclose(np.array(draw.top_logprobs)[0], lp[0, top[0]], rtol=0, atol=1e-5)


def test_non_finite_rows_are_flagged_and_plain_batches_are_argmax():
    specs = [RowSampling(), RowSampling()]
    bs = BatchSampler(specs)
    assert bs.plain
    x = np.random.default_rng(0).normal(size=(2, V)).astype(np.float32)
    x[1, 7] = np.nan
    draw = bs(mx.array(x), mx.zeros((2, 2), dtype=mx.uint32))
    assert draw.finite.tolist() == [True, False]
    assert draw.tokens.tolist()[0] == int(x[0].argmax())


def test_unseeded_rows_draw_from_the_global_generator():
    spec = RowSampling(temperature=1.0)
    mx.random.seed(3)
    a = first_key(spec).tolist()
    mx.random.seed(3)
    assert first_key(spec).tolist() == a
    bs = BatchSampler([spec, spec])
    x = mx.zeros((2, V))  # uniform: the two rows' keys differ, so their draws (almost surely) do over 20 steps
    keys = mx.stack([first_key(spec), first_key(spec)])
    draws = []
    for _ in range(20):
        d = bs(x, keys)
        keys = d.keys
        draws.append(d.tokens.tolist())
    assert all(0 <= t < V for row in draws for t in row)
    assert any(r[0] != r[1] for r in draws)


def test_sampled_distribution_follows_the_filtered_softmax():
    """Statistics, not just equality with the reference: 4000 draws of one row (many rows of one key each)."""
    logits = np.array([2.0, 1.0, 0.5, 0.0, -1.0], dtype=np.float32)
    n = 4000
    specs = [RowSampling(temperature=0.8, top_k=4, seed=i) for i in range(n)]
    bs = BatchSampler(specs)
    draw = bs(mx.array(np.tile(logits, (n, 1))), mx.stack([first_key(s) for s in specs]))
    counts = np.bincount(np.array(draw.tokens), minlength=5) / n
    p = np.exp(logits[:4] / 0.8)
    p /= p.sum()
    assert counts[4] == 0
    # 4000 draws: the standard error of a frequency is at most 0.008; 5 sigma
    np.testing.assert_allclose(counts[:4], p, atol=0.04)


def test_histories_join_and_pad():
    a = history_array([[1, 2, 3], [4]])
    assert a.tolist() == [[1, 2, 3], [-1, -1, 4]]
    j = join_histories([a, None, history_array([[9, 8, 7, 6, 5]])], [2, 1, 1])
    assert j.tolist() == [[-1, -1, 1, 2, 3], [-1, -1, -1, -1, 4], [-1] * 5, [9, 8, 7, 6, 5]]
    assert join_histories([None, None], [1, 2]) is None
    assert history_array([[], []]) is None


@pytest.mark.parametrize("kwargs, match", [
    (dict(temperature=-1), "temperature"), (dict(top_p=0), "top_p"), (dict(top_k=-2), "top_k"),
    (dict(min_p=1.5), "min_p"), (dict(repetition_penalty=0), "repetition_penalty"),
    (dict(repetition_context_size=0), "repetition_context_size"), (dict(logprobs=-1), "logprobs"),
    (dict(temperature=math.nan), "NaN"),
])
def test_bad_settings_are_refused(kwargs, match):
    with pytest.raises(UsageError, match=match):
        RowSampling(**kwargs)
