"""A prompt then greedy one-token steps through a model's cache: what the model-layout tests compare (the fused and
padded projections against the stored layout)."""

import mlx.core as mx


def run_prompt(model, prompt, steps: int = 4):
    """(last-position logits of the prefill and of each greedy one-token step [steps + 1, B, V], the cache)."""
    cache = model.make_cache(prompt.shape[0])
    outs = [model(prompt, cache=cache)[:, -1]]
    tok = mx.argmax(outs[-1], axis=-1, keepdims=True).astype(mx.int32)
    for _ in range(steps):
        outs.append(model(tok, cache=cache)[:, -1])  # one-token calls: the compiled decode step
        tok = mx.argmax(outs[-1], axis=-1, keepdims=True).astype(mx.int32)
    return mx.stack(outs), cache
