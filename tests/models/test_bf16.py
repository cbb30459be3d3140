"""bfloat16 vs float32 on a 4,096-token sequence: no NaN/Inf, top-1 agreement >= 99 %, mean KL <= 1e-2.

Statistical by design: bfloat16 weights and activations change logits by ~1-3 % relative, so exact
comparison is meaningless; what must hold is that the bf16 run stays finite over a long sequence
(gates, stabilizer and state are float32) and predicts what the float32 run predicts. The test uses the
bundled trained demo model on held-out text: a random-weight model has near-tied top logits at many
positions (its predictive distribution is flat), where any rounding flips the argmax.

Measured (docs/numerics.md): top-1 agreement 99.2 %, mean KL 1.5e-4 on this excerpt; rounding the
weights to bfloat16 alone (all arithmetic float32) gives 99.3 %, so the bar is close to what bfloat16
weights allow on a model this small. Deterministic on a given backend: same inputs, same result.
"""

from pathlib import Path

import mlx.core as mx
import numpy as np

import xlstm_mlx
from xlstm_mlx.checkpoints.demo import demo_model_dir

TEXT = Path(__file__).resolve().parents[1] / "data" / "heldout_excerpt.txt"


def test_bf16_long_sequence_matches_float32():
    path = demo_model_dir()
    assert path is not None, "the bundled demo model is missing from xlstm_mlx/demo_model/"
    m32, tok = xlstm_mlx.load(path, dtype="float32")
    m16, _ = xlstm_mlx.load(path, dtype="bfloat16")
    ids = tok.encode(TEXT.read_text())
    assert len(ids) >= 4096, f"excerpt too short: {len(ids)} tokens"
    ids = mx.array([ids[:4096]])
    a, b = m32(ids), m16(ids)
    assert mx.all(mx.isfinite(b)).item(), "bfloat16 logits contain NaN/Inf"
    la = a - mx.logsumexp(a, axis=-1, keepdims=True)
    lb = b - mx.logsumexp(b, axis=-1, keepdims=True)
    kl = mx.mean(mx.sum(mx.exp(la) * (la - lb), axis=-1)).item()
    agree = mx.mean(mx.argmax(a, -1) == mx.argmax(b, -1)).item()
    assert agree >= 0.99, f"top-1 agreement {agree:.4f} < 0.99"
    assert kl <= 1e-2, f"mean KL {kl:.3g} > 1e-2"
    # and the state after 4,096 tokens is finite and float32
    cache = m16.make_cache(1)
    m16(ids, cache=cache)
    assert all(x.dtype == mx.float32 and np.isfinite(np.array(x)).all() for x in cache.arrays())
