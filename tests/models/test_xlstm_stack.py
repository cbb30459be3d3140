"""Official-stack checkpoints beyond the default configs: option variants, the cuda-backend layout,
padding masks, the converter from files and its CLI, clear errors, and a bfloat16 run."""

import dataclasses
import json

import numpy as np
import pytest
import torch
import yaml

import mlx.core as mx
import xlstm_mlx
from oracles.official_stacks import official_config, official_logits, official_model
from xlstm_mlx.errors import CheckpointError
from xlstm_mlx.checkpoints.convert_official import convert_official
from xlstm_mlx.cli import main as cli_main

TOL = 1e-4
VOCAB = 61

VARIANTS = {
    "tied_nopostnorm_noconv_noffn_nogn": dict(num_blocks=3, slstm_at=[0, 2], tie_weights=True, post_norm=False,
                                             slstm_conv=0, ffn=False, group_norm_weight=False),
    "bias_swish_heads_blocksize": dict(num_blocks=3, slstm_at=[1], bias=True, act_fn="swish", mlstm_heads=4,
                                       slstm_heads=2, qkv_blocksize=8, conv=2),
}


def ids_for(seed, B, T):
    return np.random.default_rng(seed).integers(0, VOCAB, (B, T))


def logits(model, ids, cache=None, mask=None):
    return np.array(model(mx.array(ids.astype(np.int32)), cache=cache,
                          mask=None if mask is None else mx.array(mask)))


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_variants_match_official(variant, tmp_path):
    opts = dict(VARIANTS[variant])
    cfg = official_config(opts.pop("num_blocks"), opts.pop("slstm_at"), vocab_size=VOCAB, **opts)
    tm = official_model(cfg, seed=5)
    model, _ = xlstm_mlx.load(convert_official(tmp_path, model=tm), dtype="float32")
    ids = ids_for(0, 2, 20)
    ref = official_logits(tm, ids).numpy()
    assert np.abs(logits(model, ids) - ref).max() <= TOL
    cache = model.make_cache(2)
    steps = np.concatenate([logits(model, ids[:, t : t + 1], cache) for t in range(20)], axis=1)
    assert np.abs(steps - ref).max() <= TOL


def _to_cuda_layout(tm):
    """The state_dict a cuda-backend sLSTM would hold: same weights, the cuda class's internal layouts."""
    from xlstm.blocks.slstm.cell import sLSTMCell_cuda

    sd = dict(tm.state_dict())
    for name, mod in tm.named_modules():
        if name.endswith("slstm_cell"):
            R_ext = mod._recurrent_kernel_int2ext(mod._recurrent_kernel_)
            b_ext = mod._bias_int2ext(mod._bias_)
            sd[name + "._recurrent_kernel_"] = sLSTMCell_cuda._recurrent_kernel_ext2int(mod, R_ext).detach().clone()
            sd[name + "._bias_"] = sLSTMCell_cuda._bias_ext2int(mod, b_ext).detach().clone()
    return sd


def test_cuda_backend_layout_loads_to_the_same_model(tmp_path):
    tm = official_model(official_config(3, [0, 2], vocab_size=VOCAB), seed=6)
    cfg = dataclasses.asdict(tm.config)
    cfg["slstm_block"]["slstm"]["backend"] = "cuda"
    sd = _to_cuda_layout(tm)
    assert sd["xlstm_block_stack.blocks.0.xlstm.slstm_cell._recurrent_kernel_"].shape[-1] == 4 * 8  # cuda shape
    model, _ = xlstm_mlx.load(convert_official(tmp_path, state_dict=sd, config=cfg), dtype="float32")
    assert model.args.slstm.layout == "cuda"
    ids = ids_for(1, 2, 30)
    assert np.abs(logits(model, ids) - official_logits(tm, ids).numpy()).max() <= TOL


@pytest.fixture(scope="module")
def mix(tmp_path_factory):
    tm = official_model(official_config(4, [1, 2], vocab_size=VOCAB), seed=7)
    path = convert_official(tmp_path_factory.mktemp("mix"), model=tm)
    model, _ = xlstm_mlx.load(path, dtype="float32")
    return tm, path, model


def test_left_padding_and_masked_decode_equal_unpadded_runs(mix):
    _, _, model = mix
    a, b = ids_for(2, 1, 14)[0], ids_for(3, 1, 19)[0]
    pad = 5
    batch = np.stack([np.concatenate([np.full(pad, 3), a]), b])
    mask = np.ones(batch.shape, bool)
    mask[0, :pad] = False
    cache = model.make_cache(2)
    out = logits(model, batch, cache, mask)
    alone_cache = model.make_cache(1)
    alone = logits(model, a[None], alone_cache)
    assert np.abs(out[0, pad:] - alone[0]).max() <= 1e-5
    assert np.abs(out[1] - logits(model, b[None])[0]).max() <= 1e-5
    # decode: row 0 skips one step (masked), then both rows continue; row 0 must equal its own run
    nxt = np.array([[7], [11]])
    skip = logits(model, nxt, cache, np.array([[False], [True]]))
    assert np.isfinite(skip).all()
    nxt2 = np.array([[9], [13]])
    out2 = logits(model, nxt2, cache)
    assert np.abs(out2[0] - logits(model, nxt2[:1], alone_cache)[0]).max() <= 1e-5


def test_convert_from_saved_state_dict_and_yaml_config(mix, tmp_path):
    tm, _, _ = mix
    torch.save({"state_dict": {"model." + k: v for k, v in tm.state_dict().items()}}, tmp_path / "ckpt.pt")
    # the xlstm repo's YAML style: only what differs from the defaults
    cfg = {"model": {"num_blocks": 4, "embedding_dim": 32, "vocab_size": VOCAB, "context_length": 128,
                     "slstm_at": [1, 2],
                     "mlstm_block": {"mlstm": {"num_heads": 2, "conv1d_kernel_size": 4, "qkv_proj_blocksize": 4}},
                     "slstm_block": {"slstm": {"backend": "vanilla", "num_heads": 4, "conv1d_kernel_size": 4},
                                     "feedforward": {"proj_factor": 1.3, "act_fn": "gelu"}}}}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "out"
    assert cli_main(["convert-official", "--state-dict", str(tmp_path / "ckpt.pt"),
                     "--config", str(tmp_path / "cfg.yaml"), "--out", str(out)]) == 0
    model, _ = xlstm_mlx.load(out, dtype="float32")
    ids = ids_for(4, 2, 9)
    assert np.abs(logits(model, ids) - official_logits(tm, ids).numpy()).max() <= TOL


def _edit(path, tmp_path, rename=None, config=None):
    """A copy of the checkpoint with renamed tensors and/or config edits."""
    w = dict(mx.load(str(path / "model.safetensors")))
    if rename:
        w = {k.replace(*rename): v for k, v in w.items()}
    cfg = json.loads((path / "xlstm_config.json").read_text())
    if config:
        config(cfg)
    out = tmp_path / "edited"
    out.mkdir()
    mx.save_safetensors(str(out / "model.safetensors"), w)
    (out / "xlstm_config.json").write_text(json.dumps(cfg))
    return out


def test_unknown_block_type_is_named(mix, tmp_path):
    _, path, _ = mix
    bad = _edit(path, tmp_path, rename=("blocks.2.xlstm.slstm_cell", "blocks.2.xlstm.gru_cell"))
    with pytest.raises(CheckpointError, match=r"block 2: unknown block type"):
        xlstm_mlx.load(bad, dtype="float32")


def test_unknown_block_code_in_config_is_named(mix, tmp_path):
    _, path, _ = mix
    bad = _edit(path, tmp_path, config=lambda c: c.update(_block_map="0,1,2,0"))
    with pytest.raises(CheckpointError, match=r"unknown block type code 2 at position 2"):
        xlstm_mlx.load(bad, dtype="float32")


def test_config_disagreeing_with_tensors_is_refused(mix, tmp_path):
    _, path, _ = mix
    bad = _edit(path, tmp_path, config=lambda c: c["slstm_block"]["slstm"].update(num_heads=2))
    with pytest.raises(CheckpointError, match=r"slstm_block.slstm.num_heads = 2 but the tensors say 4"):
        xlstm_mlx.load(bad, dtype="float32")


def test_bfloat16_run_is_finite_and_agrees(mix):
    _, path, model32 = mix
    model16, _ = xlstm_mlx.load(path, dtype="bfloat16")
    assert model16.xlstm_block_stack.blocks[1].xlstm.slstm_cell.recurrent_kernel.dtype == mx.float32
    ids = ids_for(5, 2, 40)
    ref = logits(model32, ids)
    out = logits(model16, ids)
    assert out.dtype == np.float32 and np.isfinite(out).all()
    assert (out.argmax(-1) == ref.argmax(-1)).mean() >= 0.9
    p = np.exp(ref - ref.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    lq = out - out.max(-1, keepdims=True)
    lq -= np.log(np.exp(lq).sum(-1, keepdims=True))
    kl = (p * (np.log(p) - lq)).sum(-1).mean()
    assert kl < 1e-2


def test_describe_names_blocks(mix):
    _, _, model = mix
    d = model.describe()
    assert d["block_types"] == "mlstm,slstm,slstm,mlstm" and d["architecture"] == "xLSTM[2:2]"
    # the mLSTM layer's SiLUs go through the registry (the CPU's fused form), named for the verbose line
    assert "math.silu" in model.kernel_names()


def test_reference_kernels_give_the_same_logits(mix):
    from xlstm_mlx import kernels

    _, _, model = mix
    ids = ids_for(6, 2, 70)
    fast = logits(model, ids)
    with kernels.use_reference():
        ref = logits(model, ids)
        cache = model.make_cache(2)
        ref_steps = np.concatenate([logits(model, ids[:, t : t + 1], cache) for t in range(8)], axis=1)
    # different float32 summation orders of the same function (chunkwise vs parallel per chunk)
    assert np.abs(fast - ref).max() <= 5e-5
    assert np.abs(ref_steps - ref[:, :8]).max() <= 5e-5


def test_cache_state_dict_round_trip(mix):
    _, _, model = mix
    ids = ids_for(7, 2, 12)
    cache = model.make_cache(2)
    logits(model, ids[:, :9], cache)
    saved = {k: mx.array(np.array(v)) for k, v in cache.state_dict().items()}
    assert all(v.dtype == mx.float32 for v in saved.values())
    resumed = model.make_cache(2)
    resumed.load_state_dict(saved)
    assert np.array_equal(logits(model, ids[:, 9:], resumed), logits(model, ids[:, 9:], cache))


def test_compiled_decode_equals_plain_and_follows_weight_updates(mix):
    _, path, _ = mix
    model, _ = xlstm_mlx.load(path, dtype="float32")  # its own copy: the weights are edited below
    ids = ids_for(8, 2, 6)

    def decode(plain):
        cache = model.make_cache(2)
        out = []
        for t in range(ids.shape[1]):
            tok = mx.array(ids[:, t : t + 1].astype(np.int32))
            if plain:
                lg, states = model.forward(tok, cache.layers, None, False)
                cache.layers[:] = states
            else:
                lg = model(tok, cache=cache)
            out.append(np.array(lg))
        return np.concatenate(out, axis=1)

    assert np.array_equal(decode(False), decode(True))
    head = model.lm_head
    head.weight = head.weight * 2.0  # after the step was compiled: the compiled step must see it
    assert np.array_equal(decode(False), decode(True))


def test_generate_and_batch_generate_run_official_stacks(tmp_path):
    from pathlib import Path

    from xlstm_mlx.generation.generate import batch_generate, generate

    tok_dir = Path(xlstm_mlx.__file__).parent / "demo_model"
    vocab = len(json.loads((tok_dir / "tokenizer.json").read_text())["model"]["vocab"]) + 3
    tm = official_model(official_config(3, [1], vocab_size=vocab), seed=9)
    model, tok = xlstm_mlx.load(convert_official(tmp_path, model=tm, tokenizer_dir=tok_dir), dtype="float32")
    assert tok is not None
    prompts = ["To be", "Now is the winter of our discontent"]
    single = [generate(model, tok, p, max_tokens=6) for p in prompts]
    assert batch_generate(model, tok, prompts, max_tokens=6) == single  # left padding is exact
    assert all(len(s) > 0 for s in single)
