"""xlstm-mlx bench: the counts behind the hardware floors, and one end-to-end run (no timing assertions)."""

import json

import mlx.core as mx
import pytest
from mlx.utils import tree_flatten

from xlstm_mlx.tools import bench_floor as floor
from xlstm_mlx.cli import main
from xlstm_mlx.models.xlstm7b.model import Model
from xlstm_mlx.checkpoints.random import shape_args


def test_7b_counts_match_the_published_shape():
    m = Model(shape_args("7b"))  # parameters stay lazy: nothing is allocated
    params = sum(p.size for _, p in tree_flatten(m.parameters()))
    assert abs(params - 6.865e9) < 0.01e9
    cost = m.cost(64)
    assert cost.state_bytes == 4 * 32 * 8 * (256 * 512 + 256 + 1)
    emb = 50304 * 4096 * 4  # float32 model: 4 bytes a parameter
    assert cost.weight_bytes == 4 * params and cost.decode_read_bytes == cost.weight_bytes - emb
    vectors = sum(p.size for _, p in tree_flatten(m.parameters()) if p.ndim == 1)  # norms, biases
    assert cost.head_flops == 2 * 50304 * 4096
    assert cost.matmul_flops == 2 * (params - 2 * 50304 * 4096 - vectors)


def test_floors_are_the_stated_formulas():
    assert floor.decode_floor_tok_s(1, 10e9, 0, 2e12) == pytest.approx(200.0)
    assert floor.decode_floor_tok_s(64, 10e9, 100e6, 2e12) == pytest.approx(64 / (22.8e9 / 2e12))
    assert floor.prefill_floor_tok_s(14e9, 700e12) == pytest.approx(50_000)
    a = shape_args("64m")
    per_head = 2 * 64 * 64 + 2 * 64 * 128 + 4 * 64 * 128
    assert Model(a).cost(64).recurrence_flops == a.num_blocks * a.num_heads * per_head


def test_bench_command_writes_every_figure(tmp_path, capsys):
    out = tmp_path / "b.json"
    rc = main(["bench", "--shape", "tiny", "--cpu", "--prefill-grid", "1x70", "2x33", "--decode-batch", "1", "3",
               "--decode-steps", "4", "--ttft-len", "40", "--reps", "1", "--budget", "0", "--json", str(out)])
    assert rc == 0
    r = json.loads(out.read_text())
    assert [(p["batch"], p["length"]) for p in r["prefill"]] == [(1, 70), (2, 33)]
    assert [d["batch"] for d in r["decode"]] == [1, 3]
    for fig in r["prefill"] + r["decode"]:
        assert fig["tok_s"] > 0 and fig["floor_tok_s"] > 0
        assert fig["ratio_to_floor"] == pytest.approx(fig["tok_s"] / fig["floor_tok_s"])
        assert fig["peak_memory_bytes"] >= r["weights_bytes"]
    assert r["ttft"]["length"] == 40 and r["ttft"]["seconds"] > 0
    assert r["bandwidth"]["bytes_per_s"] > 0 and r["matmul"]["flop_per_s"] > 0
    assert "device" in r and r["mlx_version"] == mx.__version__


def test_bench_quantize_times_the_quantized_model(tmp_path, capsys):
    """--quantize BITS quantizes the weights as `convert -q` does before anything is timed: fewer weight bytes
    (the floors follow), the source says so; bad settings and an already quantized checkpoint are refused."""
    out = tmp_path / "q.json"
    common = ["bench", "--shape", "tiny", "--cpu", "--prefill-grid", "1x20", "--decode-batch", "2", "--decode-steps",
              "2", "--ttft-len", "0", "--reps", "1", "--budget", "0"]
    assert main(common + ["--json", str(tmp_path / "f.json")]) == 0
    assert main(common + ["-q", "4", "--json", str(out)]) == 0
    r, f = json.loads(out.read_text()), json.loads((tmp_path / "f.json").read_text())
    assert "quantized 4-bit group 64" in r["model"]
    assert r["weights_bytes"] < 0.5 * f["weights_bytes"]
    assert r["decode"][0]["tok_s"] > 0
    capsys.readouterr()
    assert main(common + ["-q", "7"]) == 2
    assert "bits must be one of" in capsys.readouterr().err
    assert main(common + ["-q", "4", "--group-size", "48"]) == 2
    assert "group size must be one of" in capsys.readouterr().err


def test_bench_quantize_refuses_an_already_quantized_checkpoint_and_weight_mode_with_a_model(tmp_path, capsys):
    from xlstm_mlx.checkpoints.convert import convert
    from xlstm_mlx.checkpoints.random import make_random_checkpoint

    d = make_random_checkpoint(tmp_path / "ck", "tiny", seed=1)
    q = convert(d, tmp_path / "q", quantize=True, bits=4, group_size=64, progress=False)["out"]
    common = ["--cpu", "--prefill-grid", "1x8", "--decode-batch", "1", "--decode-steps", "1", "--ttft-len", "0",
              "--reps", "1", "--budget", "0"]
    assert main(["bench", "--model", str(q), "-q", "4", *common]) == 2
    assert "already quantized" in capsys.readouterr().err
    assert main(["bench", "--model", str(d), "--weight-mode", "single", *common]) == 2
    assert "--weight-mode applies to random weights" in capsys.readouterr().err
