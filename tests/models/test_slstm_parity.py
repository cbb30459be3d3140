"""float32 logits of official xLSTMLMModel stacks (vanilla sLSTM backend, CPU) against ours.

Random weights (every parameter, see official_stacks.py), converted with convert_official and loaded
through xlstm_mlx.load (which must recognise the format). Prefill at several lengths, decode token by
token, and the official step API, all within 1e-4 max-abs on logits of magnitude ~1..5.
"""

import numpy as np
import pytest

import mlx.core as mx
import xlstm_mlx
from oracles.official_stacks import official_config, official_logits, official_model, official_step_logits
from xlstm_mlx.checkpoints.convert_official import convert_official

TOL = 1e-4
LENGTHS = [1, 7, 64, 100]
VOCAB = 61

STACKS = {
    # name: (num_blocks, slstm_at)
    "mlstm_only": (2, []),
    "slstm_only": (2, "all"),
    "mix_7_1": (8, [1]),  # the paper's xLSTM[7:1]: one sLSTM block among seven mLSTM blocks
}


def run_prefill(model, ids):
    return np.array(model(mx.array(ids.astype(np.int32))))


def run_steps(model, ids):
    cache = model.make_cache(ids.shape[0])
    out = [np.array(model(mx.array(ids[:, t : t + 1].astype(np.int32)), cache=cache)) for t in range(ids.shape[1])]
    assert cache.offset == ids.shape[1]
    return np.concatenate(out, axis=1)


@pytest.fixture(scope="module", params=sorted(STACKS))
def stack(request, tmp_path_factory):
    nb, at = STACKS[request.param]
    seed = sorted(STACKS).index(request.param) + 1
    torch_model = official_model(official_config(nb, at, vocab_size=VOCAB), seed=seed)
    path = convert_official(tmp_path_factory.mktemp(request.param), model=torch_model)
    model, _ = xlstm_mlx.load(path, dtype="float32")
    ids = np.random.default_rng(seed).integers(0, VOCAB, (2, max(LENGTHS)))
    return request.param, torch_model, model, ids, official_logits(torch_model, ids).numpy()


def test_block_types_read_from_checkpoint(stack):
    name, torch_model, model, _, _ = stack
    want = ["slstm" if c == 1 else "mlstm" for c in torch_model.config.block_map]
    assert model.block_types == want
    assert model.describe()["block_types"] == ",".join(want)


@pytest.mark.parametrize("T", LENGTHS)
def test_prefill_matches_official_forward(stack, T):
    name, _, model, ids, ref = stack
    out = run_prefill(model, ids[:, :T])
    assert out.dtype == np.float32 and np.isfinite(out).all()
    err = np.abs(out - ref[:, :T]).max()
    assert err <= TOL, f"{name} T={T}: max-abs error {err:.3g}"


def test_steps_match_official_forward_and_prefill(stack):
    name, _, model, ids, ref = stack
    steps = run_steps(model, ids)
    err = np.abs(steps - ref).max()
    assert err <= TOL, f"{name}: step-by-step vs official forward {err:.3g}"
    err = np.abs(steps - run_prefill(model, ids)).max()
    assert err <= TOL, f"{name}: step-by-step vs our prefill {err:.3g}"


def test_prefill_then_decode_matches_official_step(stack):
    name, torch_model, model, ids, _ = stack
    ids = ids[:, :24]
    ref = official_step_logits(torch_model, ids).numpy()
    cache = model.make_cache(2)
    head = np.array(model(mx.array(ids[:, :17].astype(np.int32)), cache=cache))
    tail = [np.array(model(mx.array(ids[:, t : t + 1].astype(np.int32)), cache=cache)) for t in range(17, 24)]
    out = np.concatenate([head, *tail], axis=1)
    err = np.abs(out - ref).max()
    assert err <= TOL, f"{name}: prefill 17 + 7 steps vs official step API {err:.3g}"
