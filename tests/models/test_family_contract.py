"""The family contract (models/base.py), run over every registered family, as mlx-lm runs model_test_runner over
every architecture: a new family gets the whole contract by being registered.

Each family's `example_args()` model gets random weights (not the canonical init, which would hide bugs) and a
byte-level tokenizer, and is checked for:
  - prefill then steps equals the full forward (float32: chunkwise vs steps differ only by rounding);
  - a masked position is an exact identity on the state (bit for bit);
  - the cache and a snapshot round trip bit for bit;
  - the compiled one-token step equals the plain forward;
  - a left-padded, masked batch equals each row run alone;
  - save -> load reproduces the logits exactly; info, bench floors, convert -q and perplexity run.
"""

import json

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

import xlstm_mlx
from xlstm_mlx import models
from xlstm_mlx.checkpoints.random import randomize, write_byte_tokenizer
from xlstm_mlx.checkpoints.save import save_checkpoint
from xlstm_mlx.cli import main as cli_main
from xlstm_mlx.generation.snapshot import load_snapshot, save_snapshot
from xlstm_mlx.profiles import load_profile
from xlstm_mlx.tools.info import describe_checkpoint

TOL = 2e-5  # float32, relative to the logits' scale: the forms differ only in summation order


def _max_rel(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    assert np.isfinite(a).all() and np.isfinite(b).all()
    return float(np.abs(a - b).max() / max(1.0, np.abs(b).max()))


@pytest.fixture(scope="module", params=list(models.FAMILIES))
def family(request):
    return models.get_family(request.param)


@pytest.fixture(scope="module")
def model(family):
    return randomize(family.Model(family.example_args(), load_profile("parity")), seed=11)


@pytest.fixture(scope="module")
def checkpoint(family, model, tmp_path_factory):
    d = tmp_path_factory.mktemp(f"contract-{family.NAME}")
    save_checkpoint(model, d)
    write_byte_tokenizer(d)
    return d


def _ids(model, B, T, seed):
    return mx.array(np.random.default_rng(seed).integers(0, model.args.vocab_size, (B, T)).astype(np.int32))


def test_registered_family_implements_the_protocol(family, model):
    for name in ("NAME", "LABEL", "CONFIG_NAME", "EMBEDDING_LAYERS", "Args", "Model", "detect", "config_file",
                 "read_config", "rename_key", "sanitize", "export", "export_config", "param_dtype", "keep_float",
                 "example_args"):
        assert hasattr(family, name), f"family {family.NAME} lacks {name}"
    assert models.family_of(model) is family
    d = model.describe()
    assert d["family"] == family.LABEL
    assert all(n in xlstm_mlx.kernels.KERNELS for n in model.kernel_names())
    cost = model.cost()
    assert cost.weight_bytes > cost.decode_read_bytes > 0 and cost.state_bytes > 0
    assert cost.matmul_flops > 0 and cost.head_flops > 0 and cost.recurrence_flops > 0


@pytest.mark.parametrize("group", [1, 2])
def test_prefill_evaluated_per_block_group_is_bit_identical(model, group):
    """generate.prefill's blocks_per_eval changes when the graph is evaluated, never a value."""
    from xlstm_mlx.generation.generate import prefill

    ids = _ids(model, 2, 40, seed=5)
    one, grouped = model.make_cache(2), model.make_cache(2)
    prefill(model, ids, one, prefill_step_size=16, blocks_per_eval=0)
    prefill(model, ids, grouped, prefill_step_size=16, blocks_per_eval=group)
    for a, b in zip(one.arrays(), grouped.arrays()):
        np.testing.assert_array_equal(np.array(a), np.array(b))


@pytest.mark.parametrize("split", [1, 7, 23])
def test_prefill_then_steps_equals_the_full_forward(model, split):
    ids = _ids(model, 2, 31, seed=split)
    full = model(ids)
    cache = model.make_cache(2)
    parts = [model(ids[:, :split], cache=cache)]
    parts += [model(ids[:, t : t + 1], cache=cache) for t in range(split, 31)]
    assert cache.offset == 31
    assert _max_rel(mx.concatenate(parts, axis=1), full) <= TOL


def test_a_masked_position_is_an_exact_identity(model):
    cache = model.make_cache(2)
    model(_ids(model, 2, 9, seed=1), cache=cache)
    before = [np.array(a) for a in cache.arrays()]
    # row 0 real, row 1 masked: row 1's state must be carried bit for bit, one step and several
    model(_ids(model, 2, 1, seed=2), cache=cache, mask=mx.array([[True], [False]]))
    model(_ids(model, 2, 5, seed=3), cache=cache, mask=mx.array([[True] * 5, [False] * 5]))
    for b, a in zip(before, cache.arrays()):
        assert np.array_equal(np.array(a)[1], b[1])
        assert not np.array_equal(np.array(a)[0], b[0])


def test_cache_and_snapshot_round_trip(model, tmp_path):
    ids = _ids(model, 1, 12, seed=4)
    cache = model.make_cache(1)
    model(ids[:, :10], cache=cache)
    copy = model.make_cache(1)
    copy.load_state_dict({k: mx.array(np.array(v)) for k, v in cache.state_dict().items()})
    path = save_snapshot(tmp_path / "s.safetensors", model, cache, ids[0, :10].tolist())
    snap = load_snapshot(path, model)
    want = np.array(model(ids[:, 10:], cache=cache.copy()))
    for c in (copy, snap.cache):
        assert np.array_equal(np.array(model(ids[:, 10:], cache=c)), want)


def test_compiled_step_equals_the_plain_forward(model):
    ids = _ids(model, 3, 8, seed=5)
    runs = []
    for compiled in (True, False):
        cache = model.make_cache(3)
        runs.append(np.concatenate([np.array(model(ids[:, t : t + 1], cache=cache, compiled=compiled))
                                    for t in range(8)], axis=1))
    assert _max_rel(runs[0], runs[1]) <= 1e-6


def test_a_padded_batch_equals_each_row_alone(model):
    lengths = [5, 11, 8]
    rows = [np.array(_ids(model, 1, n, seed=20 + n))[0] for n in lengths]
    T = max(lengths)
    ids = np.zeros((3, T), np.int32)
    mask = np.zeros((3, T), bool)
    for r, row in enumerate(rows):
        ids[r, T - len(row):], mask[r, T - len(row):] = row, True  # left padding
    cache = model.make_cache(3)
    batch = np.array(model(mx.array(ids), cache=cache, mask=mx.array(mask)))
    step = np.array(model(_ids(model, 3, 1, seed=9), cache=cache))
    for r, row in enumerate(rows):
        alone_cache = model.make_cache(1)
        alone = np.array(model(mx.array(row[None]), cache=alone_cache))
        assert _max_rel(batch[r, -1], alone[0, -1]) <= TOL
        nxt = np.array(model(_ids(model, 3, 1, seed=9)[r : r + 1], cache=alone_cache))
        assert _max_rel(step[r], nxt[0]) <= TOL


def test_save_load_info_bench_quantize_perplexity(family, model, checkpoint, tmp_path, capsys):
    loaded, tok = xlstm_mlx.load(checkpoint, dtype="float32")
    assert type(loaded) is family.Model and tok is not None
    ids = _ids(model, 1, 17, seed=6)
    assert np.array_equal(np.array(loaded(ids)), np.array(model(ids)))

    text = describe_checkpoint(checkpoint)
    assert family.LABEL in text and "state / sequence" in text

    out = tmp_path / "bench.json"
    assert cli_main(["bench", "--model", str(checkpoint), "--cpu", "--prefill-grid", "1x20", "--decode-batch", "2",
                     "--decode-steps", "2", "--ttft-len", "10", "--reps", "1", "--budget", "0",
                     "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["prefill"][0]["floor_tok_s"] > 0 and r["decode"][0]["floor_tok_s"] > 0

    q = tmp_path / "q8"
    assert cli_main(["convert", "--model", str(checkpoint), "--out", str(q), "-q", "--bits", "8",
                     "--group-size", "32"]) == 0
    qmodel, _ = xlstm_mlx.load(q, dtype="float32")
    assert any(isinstance(m, nn.QuantizedLinear) for _, m in qmodel.leaf_modules_flat())
    ql, fl = np.array(qmodel(ids)), np.array(model(ids))
    # 8-bit weights: statistical agreement, not bitwise
    assert (ql.argmax(-1) == fl.argmax(-1)).mean() >= 0.8
    assert "quantization" in describe_checkpoint(q)

    data = tmp_path / "t.txt"
    data.write_text("the quick brown fox jumps over the lazy dog. " * 3)
    capsys.readouterr()
    assert cli_main(["perplexity", "--model", str(q), "--data", str(data), "--chunk-size", "32"]) == 0
    ppl = float(capsys.readouterr().out.strip().splitlines()[-1].split()[-1])
    assert np.isfinite(ppl) and ppl > 1


def test_the_verbose_line_says_which_path_runs(family, model):
    from xlstm_mlx.checkpoints.load import describe_run

    line = describe_run(model)
    assert f"family={family.NAME} " in line and "backend=cpu" in line
    for name, label in xlstm_mlx.kernels.describe(model.kernel_names()).items():
        assert f"{name}={label}" in line
    assert "decode step: compiled" in line
