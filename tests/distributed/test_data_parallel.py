"""Data-parallel training over 2 ring ranks on loopback equals one process (xlstm_mlx/training/data_parallel.py).

The same seed and global batch give the same trajectory: the average of the 2 ranks' local-mean gradients
is the global-mean gradient, up to float32 rounding in the sums (~1e-7 relative per step); after a few AdamW
steps the weights agree within 1e-5 relative (the issue's bound), measured as max|a - b| / max|a| per tensor.
"""

import json
import random
import sys

import mlx.core as mx
import numpy as np
import pytest

from xlstm_mlx.distributed.launch import spawn_ranks, wait_ranks
from xlstm_mlx.errors import UsageError
from xlstm_mlx.training.bpe import build, save
from xlstm_mlx.training.data_parallel import check_global_batch, local_rows
from xlstm_mlx.training.trainer import train

WORDS = "the king is dead long live the queen my lord I pray you speak good night sweet prince".split()
TIMEOUT = 240  # seconds for a 2-rank run on a loaded 2-core machine (a few seconds when idle)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    rng = random.Random(0)
    (root / "train").mkdir()
    (root / "train" / "doc.txt").write_text("\n".join(" ".join(rng.choice(WORDS) for _ in range(8))
                                                     for _ in range(200)))
    save(build([root / "train" / "doc.txt"], vocab_size=200), root / "tok")
    return root


def write_config(path, **train):
    cfg = {"model": {"hidden_size": 128, "num_blocks": 1, "num_heads": 2, "chunk_size": 16},
           "train": {"seq_len": 16, "batch_size": 4, "steps": 4, "lr": 1e-3, "warmup_steps": 1,
                     "save_every": 2, "log_every": 1, "compile": True, **train}}
    path.write_text(json.dumps(cfg))
    return path


def train_cmd(corpus, cfg, out, *extra):
    return [sys.executable, "-m", "xlstm_mlx.cli", "train", "--data", str(corpus / "train"), "--config", str(cfg),
            "--tokenizer", str(corpus / "tok"), "--out", str(out), "--no-progress", *extra]


def run_ranks(argv, tmp_path, name):
    work = tmp_path / name
    work.mkdir()
    results = wait_ranks(spawn_ranks(argv, 2, work), TIMEOUT)
    for r, (rc, out, err) in enumerate(results):
        assert rc == 0, f"rank {r} exited {rc}:\n{err[-3000:]}"
    return results


def master_weights(out):
    return mx.load(str(out / "trainer" / "params.safetensors"))


def relative_errors(a, b):
    """Per tensor: ||a - b|| / ||a|| (Frobenius) and max|a - b| / max|a|."""
    assert set(a) == set(b)
    out = {}
    for k in a:
        x, y = np.array(a[k], dtype=np.float64), np.array(b[k], dtype=np.float64)
        assert np.all(np.isfinite(x)) and np.all(np.isfinite(y)), k  # NaN never passes
        out[k] = (np.linalg.norm(x - y) / max(np.linalg.norm(x), 1e-30),
                  np.abs(x - y).max() / max(np.abs(x).max(), 1e-30))
    return out


def test_two_ranks_follow_the_one_process_trajectory(corpus, tmp_path):
    cfg = write_config(tmp_path / "c.json")
    one = train(corpus / "train", cfg, corpus / "tok", tmp_path / "one", progress=False)
    assert one["world_size"] == 1
    run_ranks(train_cmd(corpus, cfg, tmp_path / "two"), tmp_path, "ranks")
    summary = json.loads((tmp_path / "two" / "train_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["global_batch_size"] == 4 and summary["steps"] == 4
    errs = relative_errors(master_weights(tmp_path / "one"), master_weights(tmp_path / "two"))
    print(sorted(errs.items(), key=lambda kv: -kv[1][1])[:5])
    assert max(e[0] for e in errs.values()) <= 1e-5, errs
    # the logged losses are the global-batch means, as one process logs them
    h1 = json.loads((tmp_path / "one" / "trainer" / "state.json").read_text())["history"]
    h2 = json.loads((tmp_path / "two" / "trainer" / "state.json").read_text())["history"]
    assert [r["step"] for r in h1] == [r["step"] for r in h2]
    np.testing.assert_allclose([r["loss"] for r in h2], [r["loss"] for r in h1], rtol=1e-5)
    # rank 1 wrote nothing of its own beside OUT (only rank 0 writes checkpoints and logs)
    assert not any(p.name.endswith(".export-tmp") for p in tmp_path.iterdir())


def test_a_run_saved_in_one_process_resumes_on_two_ranks(corpus, tmp_path, monkeypatch):
    """Resume under another world size: 2 steps in one process (interrupted), then the rest on 2 ranks, where
    rank 0 alone reads OUT and broadcasts weights, optimizer state and history == 4 steps in one process."""
    from xlstm_mlx.training import data as tdata

    cfg = write_config(tmp_path / "c.json")
    train(corpus / "train", cfg, corpus / "tok", tmp_path / "one", progress=False)
    real = tdata.WindowSampler.batch

    def interrupt_at_2(self, step):
        if step == 2:
            raise KeyboardInterrupt
        return real(self, step)

    monkeypatch.setattr(tdata.WindowSampler, "batch", interrupt_at_2)
    with pytest.raises(KeyboardInterrupt):
        train(corpus / "train", cfg, corpus / "tok", tmp_path / "mixed", progress=False)
    monkeypatch.setattr(tdata.WindowSampler, "batch", real)
    assert json.loads((tmp_path / "mixed" / "trainer" / "state.json").read_text())["step"] == 2
    results = run_ranks(train_cmd(corpus, cfg, tmp_path / "mixed"), tmp_path, "ranks")
    assert "resuming" in results[0][1] and "saved under 1 rank(s), now 2" in results[0][1]
    state = json.loads((tmp_path / "mixed" / "trainer" / "state.json").read_text())
    assert state["step"] == 4 and state["world_size"] == 2 and len(state["history"]) == 4
    errs = relative_errors(master_weights(tmp_path / "one"), master_weights(tmp_path / "mixed"))
    assert max(e[0] for e in errs.values()) <= 1e-5, errs


def test_the_global_batch_must_split_evenly():
    assert check_global_batch(8, 2) == 4
    with pytest.raises(UsageError, match="--batch-size 6 is the global batch and must be divisible by the 4 ranks"):
        check_global_batch(6, 4)
    x = np.arange(12).reshape(6, 2)
    assert np.array_equal(np.concatenate([local_rows(x, r, 3) for r in range(3)]), x)


def test_an_uneven_global_batch_on_two_ranks_is_a_clean_error(corpus, tmp_path):
    cfg = write_config(tmp_path / "c.json", batch_size=3)
    work = tmp_path / "ranks"
    work.mkdir()
    for rc, out, err in wait_ranks(spawn_ranks(train_cmd(corpus, cfg, tmp_path / "out"), 2, work), TIMEOUT):
        assert rc == 2 and "error: --batch-size 3 is the global batch and must be divisible by the 2 ranks" in err
        assert "Traceback" not in err
