"""The decode step (one token per sequence) of a whole model fused by mx.compile.

`decode_fn(model)` returns f(tokens [B, 1], cache) -> logits [B, 1, V] that does exactly what
`model(tokens, cache=cache)` does (same graph, same dtypes: it traces that very call) and advances the cache
the same way; mx.compile fuses the elementwise chains between the matmuls into single kernels, which cuts
the kernel launches of a step (hundreds for xLSTM-7B) that bound decode at small batch.

The reference beside it is the model itself: `XLSTM_MLX_COMPILE_DECODE=0` (or `use_compiled=False`)
returns the plain call, and tests/test_compiled_decode.py checks the two against each other.
The weights are captured as constants of the compiled graph: after changing a model's weights in
place, call `decode_fn(model, refresh=True)`.
"""

from __future__ import annotations

import os
import weakref

import mlx.core as mx

from .cache import Cache

_ATTR = "_xlstm_compiled_decode"


def compiled_decode_enabled() -> bool:
    return os.environ.get("XLSTM_MLX_COMPILE_DECODE", "1") not in ("0", "", "false", "off")


def _eager(model):
    def call(tokens, cache):
        return model(tokens, cache=cache)

    call.compiled = False
    return call


def _compiled(model):
    sizes: list[int] = []  # arrays per layer state, fixed by the first cache seen
    # The function is stored on the model: a strong reference back would make a cycle through MLX's compiled
    # object that Python's collector cannot see, keeping the model (and its weights) alive forever.
    model_ref = weakref.ref(model)

    def step(tokens, *flat):
        model = model_ref()
        layers, i = [], 0
        for n in sizes:
            layers.append(tuple(flat[i:i + n]))
            i += n
        cache = Cache(layers, tokens.shape[0])
        logits = model(tokens, cache=cache)
        return (logits, *cache.arrays())

    fused = mx.compile(step)

    def call(tokens, cache):
        model = model_ref()
        if model is None:
            raise RuntimeError("the model of this decode function has been freed")
        if tokens.ndim != 2 or tokens.shape[1] != 1 or cache is None:
            return model(tokens, cache=cache)
        if not sizes:
            sizes.extend(len(layer) for layer in cache.layers)
        out = fused(tokens, *cache.arrays())
        flat, i = out[1:], 0
        for idx, n in enumerate(sizes):
            cache.layers[idx] = tuple(flat[i:i + n])
            i += n
        cache.offset += 1
        return out[0]

    call.compiled = True
    return call


def decode_fn(model, use_compiled: bool | None = None, refresh: bool = False):
    """The one-token step of `model`: compiled unless disabled (argument, then XLSTM_MLX_COMPILE_DECODE)."""
    if use_compiled is None:
        use_compiled = compiled_decode_enabled()
    from .model import Model

    if not use_compiled or not isinstance(model, Model) or getattr(model, "check_numerics", False):
        return _eager(model)
    fn = None if refresh else model.__dict__.get(_ATTR)
    if fn is None:
        fn = _compiled(model)
        setattr(model, _ATTR, fn)  # a plain function: nn.Module keeps it out of its parameters
    return fn
