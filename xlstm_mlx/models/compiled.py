"""The one compiled decode step, shared by every model family.

`compiled_forward(model)` is `model.forward` for one token per row (no mask) fused by mx.compile: the
elementwise chains between the matmuls become single kernels, which cuts the hundreds of small launches of a
decode step that bound its speed at small batch. RecurrentLM.__call__ uses it for one-token calls with a cache;
`decode_fn(model)` gives generate's loop the same step.

Weight updates: the weights are *inputs* of the compiled graph, read at every call (mx.compile's `inputs=`),
not constants captured at trace time. Updating weights in place (model.update, a training step, loading) is
seen by the next call without recompiling. Replacing one of the model's top-level layers or its profile
builds a new function; changing the module structure below them (e.g. quantizing a layer) changes the
inputs' count, and MLX retraces.

The captured inputs are the model's top-level children, not the model itself: the function is cached on the
model, and a reference back to the model from MLX's compiled object would be a cycle Python's collector cannot
see (the model and its weights would never be freed).

A trace hands the model's arrays back as new Python objects: mx.compile swaps the input tree's arrays for
tracers while it traces and then puts the arrays back, each re-wrapped (the same buffers, other `id`s). Code
that tells weight updates apart by array identity (models/xlstm7b/fuse.py) must not take that for an update:
`call_compiled` tells the model through its `after_trace()` hook, once per trace. (Missing that made the fusing
see every weight as replaced after each trace, re-fuse, drop this function and trace again at every step.)

The reference beside it is the uncompiled `model.forward`: XLSTM_MLX_COMPILE_DECODE=0 (or
`decode_fn(model, use_compiled=False)`) runs it, and tests/models/test_compiled.py checks the two agree.
"""

from __future__ import annotations

import weakref

import mlx.core as mx

from xlstm_mlx import env

_ATTR = "_xlstm_compiled_forward"


def compiled_decode_enabled() -> bool:
    return env.flag("XLSTM_MLX_COMPILE_DECODE")


def compiled_forward(model):
    """mx.compile(model.forward) for one-token steps: f(ids [B, 1], states) -> (logits, new states)."""
    # the device too: a step traced on the CPU may hold CPU-only forms (kernels/fastmath.py)
    key = (id(model.profile), str(mx.default_device()), tuple(id(v) for v in model.values()))
    hit = model.__dict__.get(_ATTR)
    if hit is not None and hit[0] == key:
        return hit[1]
    model_ref = weakref.ref(model)
    traced = [False]

    def step(ids, states):
        traced[0] = True  # Python runs only while MLX traces
        return model_ref().forward(ids, states, None, False)

    fn = mx.compile(step, inputs=dict(model))
    model.__dict__[_ATTR] = (key, fn, traced)  # a plain attribute: nn.Module keeps it out of its parameters
    return fn


def call_compiled(model, ids, states):
    """compiled_forward(model)(ids, states), then model.after_trace() if this call traced (see above)."""
    fn = compiled_forward(model)
    traced = model.__dict__[_ATTR][2]
    traced[0] = False
    out = fn(ids, states)
    if traced[0]:
        after = getattr(model, "after_trace", None)
        if after is not None:
            after()
    return out


def decode_fn(model, use_compiled: bool | None = None):
    """f(tokens [B, 1], cache) -> logits: the compiled step unless disabled (argument, then the environment)."""
    if use_compiled is None:
        use_compiled = compiled_decode_enabled()

    def call(tokens, cache):
        # the sampler's tokens are in the vocabulary by construction: no range check (it would wait for them)
        return model(tokens, cache=cache, compiled=use_compiled and not model.check_numerics, check_ids=False)

    call.compiled = bool(use_compiled) and not model.check_numerics
    return call
