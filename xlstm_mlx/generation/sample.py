"""Samplers and logits processors, batched over float32 logits [B, V].

A sampler maps logits [B, V] to token ids [B] (int32). The order follows transformers: the logits are divided
by the temperature first, then top-k, top-p and min-p each mask tokens to -inf (each filter always keeps the most
likely token), then one categorical draw per row (Gumbel-max: argmax of the logits plus Gumbel noise).
Temperature 0 is greedy (argmax; the filters cannot change it).

A logits processor maps (history [B, L] int32, logits [B, V]) to logits [B, V]; a history entry < 0 means "no
token" (left padding of a batch). Processors compose as a list applied in order.

Reproducibility: a sampler given a seed owns an `mx.random` key and splits it for every draw (the noise of a
draw is `mx.random.gumbel(logits.shape, key=sub)`), so the same seed and the same logits give the same tokens
whatever else uses the global generator, and batch_sample.py reproduces them row by row inside a batch; without
a seed it draws from MLX's global generator (`mx.random.seed` controls that).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import mlx.core as mx
from xlstm_mlx.errors import UsageError

LogitsProcessor = Callable[[mx.array, mx.array], mx.array]

_NEG_INF = float("-inf")


# ---------------------------------------------------------------------------------------------- validation
def _check_number(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UsageError(f"{name} must be a number, got {value!r}")
    if math.isnan(value):
        raise UsageError(f"{name} must not be NaN")
    return float(value)


def check_temperature(temperature) -> float:
    t = _check_number("temperature", temperature)
    if t < 0 or math.isinf(t):
        raise UsageError(f"temperature must be >= 0 and finite (0 means greedy), got {temperature}")
    return t


def check_top_k(top_k) -> int:
    if isinstance(top_k, bool) or not isinstance(top_k, int):
        raise UsageError(f"top_k must be an integer (0 disables it), got {top_k!r}")
    if top_k < 0:
        raise UsageError(f"top_k must be >= 0 (0 disables it), got {top_k}")
    return top_k


def check_top_p(top_p) -> float:
    p = _check_number("top_p", top_p)
    if not 0.0 < p <= 1.0:
        raise UsageError(f"top_p must be in (0, 1] (1 disables it), got {top_p}")
    return p


def check_min_p(min_p) -> float:
    p = _check_number("min_p", min_p)
    if not 0.0 <= p <= 1.0:
        raise UsageError(f"min_p must be in [0, 1] (0 disables it), got {min_p}")
    return p


def check_repetition_penalty(penalty) -> float:
    p = _check_number("repetition_penalty", penalty)
    if p <= 0 or math.isinf(p):
        raise UsageError(f"repetition_penalty must be > 0 and finite (1 disables it), got {penalty}")
    return p


def _check_logits(logits: mx.array) -> None:
    if logits.ndim != 2:
        raise UsageError(f"logits must be [batch, vocab], got shape {tuple(logits.shape)}")


# ---------------------------------------------------------------------------------------------- filters
def apply_top_k(logits: mx.array, k: int) -> mx.array:
    """Keep the k largest logits of each row (ties at the k-th value are kept); 0 or k >= V keeps all."""
    _check_logits(logits)
    k = check_top_k(k)
    if k == 0 or k >= logits.shape[-1]:
        return logits
    kth = mx.sort(logits, axis=-1)[:, -k][:, None]
    return mx.where(logits >= kth, logits, _NEG_INF)


def apply_top_p(logits: mx.array, p: float) -> mx.array:
    """Keep the smallest set of most likely tokens whose probability reaches p (nucleus sampling)."""
    _check_logits(logits)
    p = check_top_p(p)
    if p >= 1.0:
        return logits
    order = mx.argsort(-logits, axis=-1)
    sorted_logits = mx.take_along_axis(logits, order, axis=-1)
    probs = mx.softmax(sorted_logits, axis=-1)
    before = mx.cumsum(probs, axis=-1) - probs  # mass strictly above each token
    keep_sorted = before < p  # the first token always has 0 mass before it
    # scatter the decision back to vocabulary order
    keep = mx.put_along_axis(mx.zeros(logits.shape, dtype=mx.bool_), order, keep_sorted, axis=-1)
    return mx.where(keep, logits, _NEG_INF)


def apply_min_p(logits: mx.array, min_p: float) -> mx.array:
    """Keep tokens whose probability is at least min_p times that of the most likely token."""
    _check_logits(logits)
    min_p = check_min_p(min_p)
    if min_p == 0.0:
        return logits
    top = mx.max(logits, axis=-1, keepdims=True)
    # p_i >= min_p * p_max  <=>  logit_i >= logit_max + log(min_p)
    return mx.where(logits >= top + math.log(min_p), logits, _NEG_INF)


# ---------------------------------------------------------------------------------------------- sampler
def gumbel_max(x: mx.array, noise: mx.array) -> mx.array:
    """One categorical draw per row of logits x [B, V], given standard Gumbel noise of the same shape.

    argmax(x + g) is what mx.random.categorical computes, written out so that a batch of rows, each with its own
    key, draws exactly what each row would draw alone (batch_sample.py makes the noise per row key)."""
    return mx.argmax(x + noise, axis=-1).astype(mx.int32)


class Sampler:
    """Sample token ids [B] from logits [B, V]; see the module docstring for the order of operations."""

    def __init__(
        self,
        temperature: float = 0.0,
        top_k: int = 0,
        top_p: float = 1.0,
        min_p: float = 0.0,
        seed: int | None = None,
    ):
        self.temperature = check_temperature(temperature)
        self.top_k = check_top_k(top_k)
        self.top_p = check_top_p(top_p)
        self.min_p = check_min_p(min_p)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**64):
            raise UsageError(f"seed must be an integer in [0, 2**64) (MLX's random key is 64 bits), got {seed!r}")
        self.seed = seed
        self._key = mx.random.key(seed) if seed is not None else None

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def filter(self, logits: mx.array) -> mx.array:
        """Temperature-scaled logits with the top-k / top-p / min-p masks applied (-inf where removed)."""
        _check_logits(logits)
        x = logits.astype(mx.float32) / self.temperature
        if self.top_k:
            x = apply_top_k(x, self.top_k)
        if self.top_p < 1.0:
            x = apply_top_p(x, self.top_p)
        if self.min_p > 0.0:
            x = apply_min_p(x, self.min_p)
        return x

    def __call__(self, logits: mx.array) -> mx.array:
        _check_logits(logits)
        if self.greedy:
            return mx.argmax(logits, axis=-1).astype(mx.int32)
        x = self.filter(logits)
        if self._key is None:
            return gumbel_max(x, mx.random.gumbel(x.shape))
        self._key, sub = mx.random.split(self._key)
        return gumbel_max(x, mx.random.gumbel(x.shape, key=sub))

    def __repr__(self) -> str:
        return (
            f"Sampler(temperature={self.temperature}, top_k={self.top_k}, top_p={self.top_p}, "
            f"min_p={self.min_p}, seed={self.seed})"
        )


def make_sampler(
    temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0, min_p: float = 0.0, seed: int | None = None
) -> Sampler:
    return Sampler(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p, seed=seed)


# ---------------------------------------------------------------------------------------------- processors
class RepetitionPenalty:
    """CTRL-style repetition penalty over the last `context_size` tokens of the history.

    A logit x of a token seen in the window becomes x / penalty if x > 0 else x * penalty (penalty > 1
    discourages repeats, < 1 encourages them). Each token counts once however often it occurs.
    """

    def __init__(self, penalty: float, context_size: int = 20):
        self.penalty = check_repetition_penalty(penalty)
        if isinstance(context_size, bool) or not isinstance(context_size, int) or context_size < 1:
            raise UsageError(f"repetition_context_size must be an integer >= 1, got {context_size!r}")
        self.context_size = context_size

    def __call__(self, history: mx.array, logits: mx.array) -> mx.array:
        _check_logits(logits)
        if history.ndim != 2 or history.shape[0] != logits.shape[0]:
            raise UsageError(
                f"history must be [batch, length] with the logits' batch {logits.shape[0]}, "
                f"got shape {tuple(history.shape)}"
            )
        if history.shape[1] == 0:
            return logits
        window = history[:, -self.context_size :]
        valid = window >= 0
        idx = mx.where(valid, window, 0)
        rows = mx.broadcast_to(mx.arange(logits.shape[0])[:, None], idx.shape)
        seen = mx.zeros(logits.shape, dtype=mx.float32).at[rows, idx].add(valid.astype(mx.float32)) > 0
        penalized = mx.where(logits > 0, logits / self.penalty, logits * self.penalty)
        return mx.where(seen, penalized, logits)


class LogitBias:
    """Add a fixed bias to chosen token ids ({id: bias}); -inf bans a token."""

    def __init__(self, bias: dict[int, float]):
        if not bias:
            raise UsageError("logit_bias must map at least one token id to a bias")
        for tid, b in bias.items():
            if isinstance(tid, bool) or not isinstance(tid, int) or tid < 0:
                raise UsageError(f"logit_bias keys must be non-negative token ids, got {tid!r}")
            if isinstance(b, bool) or not isinstance(b, (int, float)) or math.isnan(b):
                raise UsageError(f"logit_bias values must be numbers, got {b!r} for token {tid}")
        self.ids = mx.array(list(bias.keys()), dtype=mx.int32)
        self.values = mx.array([float(v) for v in bias.values()], dtype=mx.float32)
        self.max_id = max(bias)

    def __call__(self, history: mx.array, logits: mx.array) -> mx.array:
        _check_logits(logits)
        if self.max_id >= logits.shape[-1]:
            raise UsageError(f"logit_bias names token {self.max_id} but the vocabulary has {logits.shape[-1]}")
        return logits.at[:, self.ids].add(self.values)


def make_logits_processors(
    repetition_penalty: float | None = None,
    repetition_context_size: int = 20,
    logit_bias: dict[int, float] | None = None,
) -> list[LogitsProcessor]:
    """The processors the options ask for (an empty list when none applies)."""
    procs: list[LogitsProcessor] = []
    if isinstance(repetition_context_size, bool) or not isinstance(repetition_context_size, int) or (
        repetition_context_size < 1
    ):
        raise UsageError(f"repetition_context_size must be an integer >= 1, got {repetition_context_size!r}")
    if logit_bias:
        procs.append(LogitBias(logit_bias))
    if repetition_penalty is not None:
        rp = RepetitionPenalty(repetition_penalty, repetition_context_size)
        if rp.penalty != 1.0:
            procs.append(rp)
    return procs


def apply_processors(processors: Sequence[LogitsProcessor], history: mx.array, logits: mx.array) -> mx.array:
    for proc in processors:
        logits = proc(history, logits)
    return logits
