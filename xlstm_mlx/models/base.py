"""The model-family protocol: what every family of xLSTM models implements, and the base class they share.

A family is one subpackage of xlstm_mlx/models/ (xlstm7b/, xlstm_stack/) registered by name in
models/__init__.py, the way mlx-lm maps a model_type to a module. The loading pipeline
(checkpoints/load.py), convert and quantize, info, bench, perplexity, snapshots and the compiled decode step
only ever talk to a family through this contract, so a new family gets all of them by implementing it.

The family module provides:

    NAME                       registry name (e.g. "xlstm7b")
    LABEL                      one line for humans ("xLSTM-7B family (...)")
    detect(model_dir, keys)    True if this family reads the checkpoint: `keys` are the stored tensor names
                               (from the safetensors headers), `model_dir` the directory (for config files)
    read_config(model_dir)     the family's config dict ({} when the checkpoint has none)
    config_file(model_dir)     where that config lives, and where `convert` writes it
    rename_key(key)            stored tensor name -> canonical name (before anything else sees it)
    Args.from_checkpoint(shapes, config)
                               dimensions from the (canonical, logical) tensor shapes, checked against the
                               config; a disagreement is a CheckpointError naming the field and the tensor
    Model(args, profile)       a RecurrentLM (below)
    sanitize(weights, args)    canonical stored layout -> the module tree's layout (lazy arrays in, lazy out)
    export(weights, args)      the inverse: the module tree's tensors -> the stored layout (convert writes it)
    export_config(args, config)  the config dict convert writes next to exported weights
    param_dtype(name, profile) the dtype tensor `name` is computed in: the ONE place that decides it
    keep_float(path)           None if layer `path` may be quantized, else the reason it stays float
    EMBEDDING_LAYERS           the token embedding and head paths (`convert -q --keep-embeddings`)
    example_args()             a small Args for tests and examples

and the model (a RecurrentLM) provides:

    __call__(ids, cache=None, mask=None, last_only=False) -> float32 logits [B, T, V] ([B, 1, V] with
                               last_only); the cache is advanced in place
    make_cache(batch_size)     float32 recurrent state of every block (models/cache.py)
    forward(ids, states, mask, check, last_only=False) -> (logits, new states): the pure function behind
                               __call__; last_only runs the final norm and the head on the last position only
                               (generate's prefill: the first sampled token's logits without [B, T, V] logits)
    blocks                     the block modules (each: make_state(B), block_type, recurrence_flops(L))
    kernel_names()             the kernels/ registry names this model runs (for the verbose line)
    describe()                 a dict for `info` and the verbose output; diagram(): the lines `info` draws
    cost(chunk_size)           a Cost: bytes and FLOPs per token, for bench floors

Masks: `mask` [B, T] (True = real token) turns every other position into an exact identity step on every
state (left padding for batches).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn

from xlstm_mlx import env, kernels
from xlstm_mlx.models.cache import Cache
from xlstm_mlx.models.compiled import call_compiled
from xlstm_mlx.errors import UsageError


def soft_cap(x: mx.array, cap: float | None) -> mx.array:
    """cap * tanh(x / cap): a smooth clamp to (-cap, cap); None means no cap.

    The registry's math.soft_cap: a fused polynomial tanh on the CPU (MLX's CPU tanh costs ~20-40 ns a value,
    ~1 ms a token on the 50,304 logits), MLX's own op on a GPU (kernels/fastmath.py).
    """
    return x if cap is None else kernels.get("math.soft_cap")(x, cap)


def check_token_range(input_ids: mx.array, vocab_size: int | None, what: str = "input_ids") -> None:
    """Integer ids in [0, vocab_size): an id outside would gather outside the embedding table (on CPU, a
    segmentation fault). One min/max reduction, read on the host (docs/troubleshooting.md has its cost)."""
    if not mx.issubdtype(input_ids.dtype, mx.integer):
        raise UsageError(f"{what} must be integer token ids, got dtype {input_ids.dtype}")
    if vocab_size is None or input_ids.size == 0:
        return
    try:
        lo, hi = mx.stack([mx.min(input_ids), mx.max(input_ids)]).tolist()
    except ValueError as e:
        if "transformation" not in str(e):
            raise
        return  # inside mx.compile / vmap the ids are placeholders without values: the caller's inputs decide
    if lo < 0 or hi >= vocab_size:
        bad = lo if lo < 0 else hi
        raise UsageError(f"{what} holds token id {bad}, outside this model's vocabulary [0, {vocab_size}); "
                         "encode the text with this model's tokenizer")


def check_model_inputs(input_ids: mx.array, cache: Cache | None, vocab_size: int | None = None) -> tuple[int, int]:
    """Validate a model call's input ids against its cache (and, given `vocab_size`, their range); returns
    (B, T). Shared by every model family."""
    if input_ids.ndim != 2:
        raise UsageError(f"input_ids must be [batch, time], got shape {tuple(input_ids.shape)}")
    B, T = input_ids.shape
    if T == 0:
        raise UsageError("input_ids is empty: give at least one token")
    if cache is not None and cache.batch_size != B:
        raise UsageError(f"cache was made for batch size {cache.batch_size}, input has batch size {B}")
    check_token_range(input_ids, vocab_size)
    return B, T


@dataclass
class Cost:
    """What one token costs, for bench floors (tools/bench_floor.py)."""

    weight_bytes: int  # every parameter as stored
    decode_read_bytes: int  # bytes one decode step reads: all weights but a gather-only embedding
    state_bytes: int  # recurrent state per sequence (float32, read and written every step)
    matmul_flops: int  # per token, the blocks' projections (prompt positions compute no logits)
    head_flops: int  # per token, the output head
    recurrence_flops: int  # per token, the recurrent cells as implemented (chunkwise prefill)

    @property
    def prefill_flops(self) -> int:
        return self.matmul_flops + self.recurrence_flops


def linear_shape(module) -> tuple[int, int] | None:
    """(outputs, inputs) of a Linear or QuantizedLinear-like layer (logical, unpacked), else None."""
    if isinstance(module, nn.QuantizedLinear):
        return module.weight.shape[0], module.scales.shape[-1] * module.group_size
    if isinstance(module, nn.Linear):
        return tuple(module.weight.shape)
    return None


# Prefill memory: how many blocks' graphs are built before they are evaluated (0 = the whole forward as one
# graph). On a GPU a transient buffer is freed only once the queued kernels that read it have run, and the host
# queues a whole forward long before the GPU has run it, so a forward built as one graph keeps every block's
# projections, gates and chunk states alive together: at the 7B shape ~0.4 GB per block for a 2,048-token
# chunk, ~11 GB for 32 blocks (measured: benchmarks/results/gpu_prefill_memory_h200.md). Each group's output
# and states are handed to mx.async_eval when built, and the group before it is waited for: at most two groups
# are in flight, and the host builds the next group while the GPU runs the last (waiting on every group alone
# left the GPU idle while the host built the graph: +43% time to first token). No value changes.
# generate.prefill opens it.
_blocks_per_eval = env.Setting(0)
_in_flight = env.Setting(None)  # the last group handed to async_eval, inside one forward call


def default_blocks_per_eval() -> int:
    """1 on a GPU (Metal, CUDA), 0 on the CPU. The CPU runs kernels as they are queued and frees buffers as it
    goes, so its peak does not grow with the depth (measured: 0.31 / 0.47 GB either way, 64m shape) while the
    extra synchronization costs prefill speed (2,834-2,869 against 2,467-2,600 tok/s at 1 x 512, 2,143-2,355
    against 1,626-1,809 at 1 x 2,048 on the 2-core VM, 2026-12-02, alternating runs)."""
    return 1 if mx.default_device().type == mx.gpu else 0


def evaluating_blocks(group: int):
    """`with evaluating_blocks(n):` forward calls (not the compiled step) evaluate after every n blocks."""
    if isinstance(group, bool) or not isinstance(group, int) or group < 0:
        raise UsageError(f"blocks per evaluation must be an integer >= 0 (0 = one graph), got {group!r}")
    return _blocks_per_eval.override(group)


@contextlib.contextmanager
def _evaluation_window():
    with _in_flight.override(None):
        yield


class RecurrentLM(nn.Module):
    """Shared by every family: input checks, the cache, and the one compiled decode step.

    `__call__` with one token per row, a cache and no mask runs the compiled step (models/compiled.py:
    the same `forward` fused by mx.compile); XLSTM_MLX_COMPILE_DECODE=0, forced reference kernels or the
    NaN locator run `forward` as it is. Subclasses set `self.args`, `self.profile` and implement `forward`,
    `blocks`, `describe`, `diagram`, `kernel_names` and `head_layer`/`embedding_layer`.
    """

    embedding_param = ""  # name of the token embedding weight (gather-only unless tied)

    def __init__(self, args, profile):
        super().__init__()
        self.args = args
        self.profile = profile
        self.check_numerics = False

    # -- the cache ---------------------------------------------------------------------------------
    @property
    def block_types(self) -> list[str]:
        return [b.block_type for b in self.blocks]

    def fresh_states(self, batch_size: int) -> list:
        """Every block's zero state: float32; float64 in the exact profile (its blocks take a dtype)."""
        if self.profile.exact:
            return [b.make_state(batch_size, self.profile.mx_state_dtype) for b in self.blocks]
        return [b.make_state(batch_size) for b in self.blocks]

    def make_cache(self, batch_size: int = 1) -> Cache:
        return Cache(self.fresh_states(batch_size), batch_size)

    # -- calls ----------------------------------------------------------------------------------------
    def uses_compiled_step(self, T: int, mask) -> bool:
        return (T == 1 and mask is None and not self.check_numerics and not kernels.reference_forced()
                and env.flag("XLSTM_MLX_COMPILE_DECODE"))

    def __call__(self, input_ids: mx.array, cache: Cache | None = None, mask: mx.array | None = None,
                 compiled: bool | None = None, check_ids: bool = True, last_only: bool = False):
        """input_ids [B, T] -> float32 logits [B, T, V]; `cache` is advanced in place.

        `compiled` forces (True) or avoids (False) the compiled one-token step; None decides as documented.
        `check_ids=False` skips the vocabulary range check (one host read): generate's decode loop feeds the
        sampler's own tokens, which are in range by construction, and must not wait for them.
        `last_only=True` returns the logits of the last position only, [B, 1, V]: the final norm and the head
        run on that one row (a prompt's other positions need only the state; at 2,048 tokens x 50k vocabulary
        their logits would be 400 MB and a large matmul). One token is the same either way.
        """
        B, T = check_model_inputs(input_ids, cache, self.args.vocab_size if check_ids else None)
        states = list(cache.layers) if cache is not None else self.fresh_states(B)
        use = self.uses_compiled_step(T, mask) if compiled is None else (compiled and T == 1 and mask is None)
        if use:
            with _blocks_per_eval.override(0):  # a trace evaluates nothing (one token: no transients to bound)
                logits, states = call_compiled(self, input_ids, states)
        else:
            with _evaluation_window():  # block_done's in-flight group belongs to this call only
                logits, states = self.forward(input_ids, states, mask, self.check_numerics, last_only=last_only)
        if cache is not None:
            cache.layers[:] = states
            cache.offset += T
        return logits

    def forward(self, input_ids, states, mask, check: bool, last_only: bool = False):
        raise NotImplementedError

    @staticmethod
    def block_done(idx: int, x: mx.array, new_states: list) -> None:
        """Called by `forward` after block `idx`: evaluates the residual stream and the new states every
        `evaluating_blocks(n)` blocks (prefill memory, above); nothing otherwise."""
        group = _blocks_per_eval.value
        if group and (idx + 1) % group == 0:
            mx.async_eval(x, new_states)
            if _in_flight.value is not None:
                mx.eval(_in_flight.value)  # the group before: at most two in flight
            _in_flight.value = x

    # -- descriptions and costs -----------------------------------------------------------------------
    def kernel_names(self) -> list[str]:
        raise NotImplementedError

    def cost(self, chunk_size: int | None = None) -> Cost:
        from mlx.utils import tree_flatten

        L = chunk_size or self.profile.chunk_size
        params = dict(tree_flatten(self.parameters()))
        total = sum(p.nbytes for p in params.values())
        tied = self.args.tie_word_embeddings
        emb = sum(p.nbytes for k, p in params.items() if k.startswith(self.embedding_param.rsplit(".", 1)[0] + "."))
        matmul = head = 0
        for path, m in self.leaf_modules_flat():
            shape = linear_shape(m)
            if path == "lm_head":
                head += 2 * shape[0] * shape[1]
            elif shape is not None:
                matmul += 2 * shape[0] * shape[1]
            elif "weight" in m and m.weight.ndim == 3:  # block-diagonal (headwise) projections
                matmul += 2 * m.weight.size
        if tied:
            V, E = self.args.vocab_size, self.args.hidden_size
            head += 2 * V * E
        state = sum(a.nbytes for a in self.make_cache(1).arrays())  # lazy zeros: shapes only
        return Cost(weight_bytes=total, decode_read_bytes=total if tied else total - emb, state_bytes=state,
                    matmul_flops=matmul, head_flops=head,
                    recurrence_flops=sum(b.recurrence_flops(L) for b in self.blocks))

    def leaf_modules_flat(self) -> list[tuple[str, nn.Module]]:
        from mlx.utils import tree_flatten

        return tree_flatten(self.leaf_modules(), is_leaf=nn.Module.is_module)
