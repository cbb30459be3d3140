"""`xlstm-mlx batch` (generation/batch.py, distributed/rows.py): one process, 2 ring ranks, crashes.

Greedy rows must equal what stream_generate gives each prompt alone (masking makes padding an exact
identity step); 2 ranks must write the very file one process writes (each bucket is computed exactly as one
process computes it); a run killed with SIGKILL and rerun must end with each id exactly once and the same
content as an uninterrupted run.
"""

import json
import math
import subprocess
import sys
import time

import mlx.core as mx
import pytest

from xlstm_mlx.checkpoints.load import load
from xlstm_mlx.checkpoints.random import make_random_checkpoint
from xlstm_mlx.cli import main
from xlstm_mlx.distributed.launch import spawn_ranks, wait_ranks
from xlstm_mlx.generation.generate import stream_generate

TIMEOUT = 240  # seconds per 2-rank run on a loaded 2-core machine (a few seconds when idle)
PROMPTS = ["", "a", "hello world", "the quick brown fox", "xLSTM on MLX", "one two three four five six",
           "zz", "batch me", "long " * 9, "ok"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_random_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", "tiny", seed=1)


def write_input(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def rows_of(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def default_rows(n=10):
    rows = [{"id": f"p{i}", "prompt": PROMPTS[i % len(PROMPTS)] + str(i)} for i in range(n)]
    rows[3]["max_tokens"] = 0
    rows[4]["max_tokens"] = 2
    return rows


def batch_argv(model_dir, inp, out, *extra):
    return ["batch", "--model", str(model_dir), "--input", str(inp), "--output", str(out), "--max-tokens", "8",
            "--batch-size", "3", "--no-progress", *extra]


def test_greedy_rows_equal_each_prompt_alone(model_dir, tmp_path):
    rows = default_rows()
    rows.append({"id": 77, "prompt": "stop here", "max_tokens": 5})  # integer ids are kept as integers
    inp = write_input(tmp_path / "in.jsonl", rows)
    assert main(batch_argv(model_dir, inp, tmp_path / "out.jsonl")) == 0
    out = rows_of(tmp_path / "out.jsonl")
    assert [r["id"] for r in out] == [r["id"] for r in rows]  # complete: rewritten in input order
    model, tok = load(model_dir)
    for row, got in zip(rows, out):
        n = row.get("max_tokens", 8)
        assert set(got) == {"id", "text", "finish_reason", "prompt_tokens", "completion_tokens"}
        assert got["prompt_tokens"] == len(tok.encode(row["prompt"]))
        if n == 0:
            assert got == {**got, "text": "", "finish_reason": "length", "completion_tokens": 0}
            continue
        pieces, last = [], None
        for last in stream_generate(model, tok, row["prompt"], n):
            pieces.append(last.text)
        assert got["text"] == "".join(pieces), row
        assert got["completion_tokens"] == last.generation_tokens and got["finish_reason"] == last.finish_reason


def test_a_seeded_row_samples_what_generate_samples_with_that_seed(model_dir, tmp_path):
    rows = [{"id": "s", "prompt": "sample", "temperature": 1.0, "seed": 7, "max_tokens": 8},
            {"id": "g", "prompt": "greedy neighbour"}]
    inp = write_input(tmp_path / "in.jsonl", rows)
    assert main(batch_argv(model_dir, inp, tmp_path / "out.jsonl", "--batch-size", "2")) == 0
    model, tok = load(model_dir)
    alone = "".join(r.text for r in stream_generate(model, tok, "sample", 8, temp=1.0, seed=7))
    assert rows_of(tmp_path / "out.jsonl")[0]["text"] == alone


def test_score_mode_gives_each_prompts_log_likelihood(model_dir, tmp_path):
    rows = default_rows()
    inp = write_input(tmp_path / "in.jsonl", rows)
    assert main(batch_argv(model_dir, inp, tmp_path / "sc.jsonl", "--score", "--prefill-step-size", "4")) == 0
    model, tok = load(model_dir)
    for row, got in zip(rows, rows_of(tmp_path / "sc.jsonl")):
        ids = tok.encode(row["prompt"])
        logits = model(mx.array([ids]))[0]  # alone, unpadded, one call
        lp = sum(float(logits[t - 1, ids[t]] - mx.logsumexp(logits[t - 1])) for t in range(1, len(ids)))
        assert got["scored_tokens"] == len(ids) - 1 and got["prompt_tokens"] == len(ids)
        # float32: a padded, chunked batch vs one call; sums of ~10 log-probs of size ~5
        assert math.isclose(got["logprob"], lp, rel_tol=1e-5, abs_tol=1e-4), (row, got, lp)
        assert math.isclose(got["perplexity"], math.exp(-lp / (len(ids) - 1)), rel_tol=1e-4)


def test_bad_inputs_are_clean_errors(model_dir, tmp_path, capsys):
    def err(rows, *extra, out="o.jsonl"):
        inp = tmp_path / "bad.jsonl"
        inp.write_text(rows if isinstance(rows, str) else "".join(json.dumps(r) + "\n" for r in rows))
        assert main(batch_argv(model_dir, inp, tmp_path / out, *extra)) == 2
        return capsys.readouterr().err

    assert "id 'a' repeats line 1" in err([{"id": "a", "prompt": "x"}, {"id": "a", "prompt": "y"}])
    assert "unknown keys ['max_token']" in err([{"id": "a", "prompt": "x", "max_token": 3}])
    assert "not valid JSON" in err('{"id": "a", "prompt": \n')
    assert "\"id\" must be a string or an integer" in err([{"id": [1], "prompt": "x"}])
    assert "temperature must be >= 0" in err([{"id": "a", "prompt": "x", "temperature": -1}])
    ok = tmp_path / "ok.jsonl"
    write_input(ok, [{"id": "a", "prompt": "x"}])
    assert main(batch_argv(model_dir, ok, tmp_path / "gen.jsonl")) == 0
    assert "holds generation results" in err([{"id": "a", "prompt": "x"}], "--score", out="gen.jsonl")
    assert "holds id 'a', which is not in the input" in err([{"id": "b", "prompt": "x"}], out="gen.jsonl")


def test_a_torn_last_line_is_repaired_and_its_row_redone(model_dir, tmp_path):
    inp = write_input(tmp_path / "in.jsonl", default_rows())
    assert main(batch_argv(model_dir, inp, tmp_path / "ref.jsonl")) == 0
    ref = (tmp_path / "ref.jsonl").read_text()
    lines = ref.splitlines(keepends=True)
    (tmp_path / "out.jsonl").write_text("".join(lines[:4]) + lines[4][:15])  # a crash mid-write
    assert main(batch_argv(model_dir, inp, tmp_path / "out.jsonl")) == 0
    assert (tmp_path / "out.jsonl").read_text() == ref


def run_ranks(argv, work, n=2):
    work.mkdir()
    results = wait_ranks(spawn_ranks([sys.executable, "-m", "xlstm_mlx.cli", *argv], n, work), TIMEOUT)
    for r, (rc, _, err) in enumerate(results):
        assert rc == 0, f"rank {r} exited {rc}:\n{err[-3000:]}"
    return results


def test_two_ranks_write_what_one_process_writes(model_dir, tmp_path):
    rows = default_rows(14)
    inp = write_input(tmp_path / "in.jsonl", rows)
    assert main(batch_argv(model_dir, inp, tmp_path / "one.jsonl")) == 0
    results = run_ranks(batch_argv(model_dir, inp, tmp_path / "two.jsonl", "--verbose"), tmp_path / "ranks")
    assert "rank 0 of 2" in results[0][2] and "rows sharded over the ranks" in results[0][2]
    assert (tmp_path / "two.jsonl").read_text() == (tmp_path / "one.jsonl").read_text()
    assert not list(tmp_path.glob("two.jsonl.rank-*"))  # merged and removed


def test_two_ranks_score_what_one_process_scores(model_dir, tmp_path):
    inp = write_input(tmp_path / "in.jsonl", default_rows(8))
    assert main(batch_argv(model_dir, inp, tmp_path / "one.jsonl", "--score")) == 0
    run_ranks(batch_argv(model_dir, inp, tmp_path / "two.jsonl", "--score"), tmp_path / "ranks")
    assert (tmp_path / "two.jsonl").read_text() == (tmp_path / "one.jsonl").read_text()


def _kill_when(path_glob, root, proc_list, min_lines):
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        n = sum(len(p.read_text().splitlines()) for p in root.glob(path_glob))
        if n >= min_lines:
            break
        time.sleep(0.005)
    for p in proc_list:
        p.kill()
        p.wait()
    return n


def test_a_killed_run_resumes_without_losing_or_duplicating(model_dir, tmp_path):
    rows = default_rows(24)
    inp = write_input(tmp_path / "in.jsonl", rows)
    slow = ("--batch-size", "1", "--max-tokens", "24")  # many small steps: time to kill in between
    argv = batch_argv(model_dir, inp, tmp_path / "out.jsonl", *slow)
    assert main(batch_argv(model_dir, inp, tmp_path / "ref.jsonl", *slow)) == 0
    # one process, SIGKILL once some rows are on disk
    proc = subprocess.Popen([sys.executable, "-m", "xlstm_mlx.cli", *argv], stderr=subprocess.DEVNULL)
    written = _kill_when("out.jsonl", tmp_path, [proc], 3)
    assert 3 <= written < len(rows)
    # 2 ranks, killed in their turn: their part files hold rows OUT does not
    work = tmp_path / "killed"
    work.mkdir()
    procs = spawn_ranks([sys.executable, "-m", "xlstm_mlx.cli", *argv], 2, work)
    _kill_when("out.jsonl.rank-*", tmp_path, procs, 4)
    wait_ranks(procs, 10)
    assert list(tmp_path.glob("out.jsonl.rank-*"))
    # finish on 2 ranks (resume works under any world size), then compare
    run_ranks(argv, tmp_path / "finish")
    out = rows_of(tmp_path / "out.jsonl")
    assert sorted(r["id"] for r in out) == sorted(r["id"] for r in rows)  # each id exactly once
    assert (tmp_path / "out.jsonl").read_text() == (tmp_path / "ref.jsonl").read_text()
    assert not list(tmp_path.glob("out.jsonl.rank-*"))
