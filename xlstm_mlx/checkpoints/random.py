"""Random-weight checkpoints of a named or given shape: for benchmarks, tests and trying the CLI.

Every parameter is drawn at random (not the canonical init, which leaves gate weights at zero and
input gates near -10 and would hide bugs). The output of such a model is noise; it is labelled so.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_flatten, tree_unflatten
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from xlstm_mlx.models.xlstm7b.args import ModelArgs
from xlstm_mlx.models.xlstm7b.model import Model
from xlstm_mlx.checkpoints.save import save_checkpoint
from xlstm_mlx.errors import UsageError

SHAPES = {
    # xLSTM-7B: hidden 4096, 32 blocks, 8 heads, qk head 256, v head 512, FFN 10944, vocab 50304
    "7b": dict(vocab_size=50304, hidden_size=4096, num_blocks=32, num_heads=8, qk_dim=2048, v_dim=4096,
               ffn_dim=10944, weight_mode="fused"),
    "64m": dict(vocab_size=50304, hidden_size=512, num_blocks=4, num_heads=4, qk_dim=256, v_dim=512,
                ffn_dim=1408),
    "tiny": dict(vocab_size=259, hidden_size=64, num_blocks=2, num_heads=2, qk_dim=32, v_dim=64, ffn_dim=192),
}


def shape_args(name: str, **overrides) -> ModelArgs:
    if name not in SHAPES:
        raise UsageError(f"unknown shape {name!r}; known shapes: {sorted(SHAPES)}")
    return ModelArgs(**{**SHAPES[name], **overrides})


def randomize(model: Model, seed: int = 0, scale: float = 0.2, dtype=None) -> Model:
    """Draw every parameter: weights ~ N(0, scale/sqrt(fan_in)) scaled so activations stay O(1);
    norm weights around 1, biases and gate biases spread so that gates are neither all open nor shut.
    `dtype` (an mx dtype, or a function of the parameter name giving one) stores them in that dtype; each is
    evaluated as drawn, so the peak memory
    stays near the final weights' size (xLSTM-7B in bfloat16 needs no float32 copy)."""
    new = []
    for i, (name, p) in enumerate(tree_flatten(model.parameters())):
        k = mx.random.key(seed * 1_000_003 + i)
        z = mx.random.normal(p.shape, key=k)
        if "norm" in name:
            v = 1.0 + 0.1 * z
        elif name.endswith("bias"):
            v = 2.0 * z
        elif p.ndim == 2:
            v = z * (scale * (p.shape[-1] ** -0.5) * 5)
        else:
            v = z * scale
        want = dtype(name) if callable(dtype) else dtype
        new.append((name, v.astype(want or p.dtype)))
        mx.eval(new[-1][1])
    model.update(tree_unflatten(new))
    mx.eval(model.parameters())
    return model


def byte_tokenizer() -> Tokenizer:
    """A byte-level tokenizer: ids 0..2 special (<bos>, <pad>, <eos>), 3..258 the 256 bytes."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {"<bos>": 0, "<pad>": 1, "<eos>": 2}
    for i, ch in enumerate(sorted(alphabet)):
        vocab[ch] = 3 + i
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<bos>", "<pad>", "<eos>"])
    return tok


def make_random_checkpoint(out_dir: str | Path, shape: str | ModelArgs = "tiny", seed: int = 0,
                           dtype: str = "float32") -> Path:
    """Write a random-weight xLSTM-7B-family checkpoint (HF xlstm layout) with a byte-level tokenizer when the
    vocabulary allows (any family: `randomize(family.Model(args))` + save.save_checkpoint)."""
    args = shape_args(shape) if isinstance(shape, str) else shape
    model = randomize(Model(args), seed)
    out = save_checkpoint(model, out_dir, dtype=dtype, extra_config={"random_weights": True})
    if args.vocab_size >= 259:
        write_byte_tokenizer(out)
    return out


def write_byte_tokenizer(out_dir: str | Path) -> None:
    """tokenizer.json + tokenizer_config.json of `byte_tokenizer()` (needs a vocabulary of >= 259)."""
    out = Path(out_dir)
    byte_tokenizer().save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "add_bos_token": True}))
