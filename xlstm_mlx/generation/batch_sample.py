"""Batched sampling: every row of a batch with its own settings, in one graph, drawing what each row draws alone.

The server's decode batch mixes requests: greedy ones, sampled ones with their own temperature, top-k, top-p,
min-p, seed, repetition penalty and logit bias, some asking for log-probabilities. `BatchSampler` holds those
settings as per-row arrays and samples all rows at once, so a step needs no per-row Python work and can be
pipelined (built on the previous step's still-lazy tokens).

Row by row it computes exactly what sample.py computes for that row alone (the reference, `sample_rows`, runs
each row through its own Sampler and processors; tests/generation/test_batch_sample.py compares them token for
token on random inputs):
  - processors in make_logits_processors' order: logit bias added, then the CTRL repetition penalty over the
    row's last `repetition_context_size` tokens;
  - greedy rows: argmax of the processed logits;
  - sampled rows: float32 logits / temperature, then top-k, top-p and min-p masks (a filter a row does not use
    leaves it untouched, selected per row by `where`, never approximated by a no-op value), then Gumbel-max with
    noise from the row's own key. A row's key is split once per step, as Sampler splits its key once per draw, and
    the noise for all rows comes from `vmap` over the row keys, which gives each row the noise
    `mx.random.gumbel((1, V), key=sub)` gives it alone (tested). A seeded request therefore gives the same tokens
    alone or in any batch; an unseeded one gets a key drawn from MLX's global generator when it starts.

Per-row state that changes every step is passed in and returned (keys [B, 2] uint32, history [B, W] int32 with -1
for "no token"), so the caller can keep it with the recurrent state, select and join rows, and start the next step
on lazy values. Settings are fixed per batch composition: build a new BatchSampler when rows join or leave.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import mlx.core as mx

from xlstm_mlx import kernels
from xlstm_mlx.generation.sample import (
    Sampler, apply_processors, check_min_p, check_repetition_penalty, check_temperature, check_top_k, check_top_p,
    gumbel_max, make_logits_processors,
)
from xlstm_mlx.errors import UsageError

_NEG_INF = float("-inf")


@dataclass(frozen=True)
class RowSampling:
    """One row's sampling settings (validated as Sampler and the processors validate them)."""

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    seed: int | None = None
    repetition_penalty: float | None = None
    repetition_context_size: int = 20
    logit_bias: dict | None = None
    logprobs: int | None = None  # None: off; else how many top alternatives (0 = only the chosen token's)

    def __post_init__(self):
        # the solo objects check every value and give the project's messages
        make_logits_processors(self.repetition_penalty, self.repetition_context_size, self.logit_bias)
        Sampler(self.temperature, self.top_k, self.top_p, self.min_p, self.seed)
        if self.logprobs is not None and (isinstance(self.logprobs, bool) or not isinstance(self.logprobs, int)
                                          or self.logprobs < 0):
            raise UsageError(f"logprobs must be None or an integer >= 0, got {self.logprobs!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    @property
    def window(self) -> int:
        """History tokens the row's repetition penalty looks at (0: no penalty)."""
        p = self.repetition_penalty
        return self.repetition_context_size if p is not None and p != 1.0 else 0

    @property
    def plain(self) -> bool:
        """Greedy with nothing else: argmax of the raw logits."""
        return self.greedy and not self.window and not self.logit_bias and self.logprobs is None

    def solo(self):
        """(Sampler, processors) this row uses alone: generate()'s objects for the same settings."""
        return (Sampler(self.temperature, self.top_k, self.top_p, self.min_p, self.seed),
                make_logits_processors(self.repetition_penalty, self.repetition_context_size, self.logit_bias))


def first_key(spec: RowSampling) -> mx.array:
    """The row's key before its first draw: Sampler's key for a seed; else one from MLX's global generator (greedy
    rows draw nothing and take a constant key)."""
    if spec.greedy:
        return mx.zeros((2,), dtype=mx.uint32)
    if spec.seed is not None:
        return mx.random.key(spec.seed)
    return mx.random.randint(0, 2**31 - 1, (2,)).astype(mx.uint32)


def first_history(spec: RowSampling, prompt: Sequence[int]) -> list[int]:
    """The tokens the row's first draw is penalized for: the prompt's last `window` (generate's history)."""
    return list(prompt[-spec.window:]) if spec.window else []


def history_array(histories: Sequence[Sequence[int]], width: int | None = None) -> mx.array | None:
    """Histories right-aligned in [B, width] int32, -1 where a row has no token; None when no row has any."""
    width = max((len(h) for h in histories), default=0) if width is None else width
    if width == 0:
        return None
    return mx.array([[-1] * (width - len(h)) + list(h[-width:]) for h in histories], dtype=mx.int32)


def join_histories(parts: Sequence[mx.array | None], sizes: Sequence[int], width: int = 0) -> mx.array | None:
    """Row-concatenate history arrays of different widths (None = `size` rows without history), left-padding -1
    to the widest (at least `width`)."""
    width = max([p.shape[1] for p in parts if p is not None] + [width])
    if width == 0:
        return None
    out = []
    for p, n in zip(parts, sizes):
        if p is None:
            out.append(mx.full((n, width), -1, dtype=mx.int32))
        elif p.shape[1] < width:
            out.append(mx.concatenate([mx.full((n, width - p.shape[1]), -1, dtype=mx.int32), p], axis=1))
        else:
            out.append(p)
    return out[0] if len(out) == 1 else mx.concatenate(out, axis=0)


@dataclass
class Draw:
    """One step's result for every row (lazy arrays)."""

    tokens: mx.array  # [B] int32
    keys: mx.array  # [B, 2] uint32: the keys for the next step
    history: mx.array | None  # [B, W] int32: the history for the next step (the new tokens appended)
    finite: mx.array  # [B] bool: the row's raw logits were all finite
    logprob: mx.array | None = None  # [B]: log-probability of the chosen token (processed logits, before temperature)
    top_ids: mx.array | None = None  # [B, K]: the K most likely tokens, K = the largest `logprobs` asked
    top_logprobs: mx.array | None = None  # [B, K]

    def arrays(self) -> list[mx.array]:
        return [a for a in (self.tokens, self.keys, self.history, self.finite, self.logprob, self.top_ids,
                            self.top_logprobs) if a is not None]

    def rows(self, idx: Sequence[int]) -> "Draw":
        """The rows `idx` of every array, in that order."""
        i = mx.array(list(idx), dtype=mx.int32)
        pick = (lambda a: None if a is None else a[i])
        return Draw(pick(self.tokens), pick(self.keys), pick(self.history), pick(self.finite), pick(self.logprob),
                    pick(self.top_ids), pick(self.top_logprobs))


class BatchSampler:
    """The settings of a batch's rows as arrays; `__call__(logits [B, V], keys, history)` draws every row."""

    def __init__(self, specs: Sequence[RowSampling]):
        self.specs = list(specs)
        B = len(self.specs)
        if B == 0:
            raise UsageError("a BatchSampler needs at least one row")
        s = self.specs
        self.plain = all(r.plain for r in s)
        self.sampling = any(not r.greedy for r in s)
        self.greedy = mx.array([r.greedy for r in s])
        self.temperature = mx.array([r.temperature if not r.greedy else 1.0 for r in s], dtype=mx.float32)[:, None]
        self.top_k = [r.top_k if not r.greedy else 0 for r in s]
        self.top_p = None
        if any(not r.greedy and r.top_p < 1.0 for r in s):
            self.top_p_on = mx.array([not r.greedy and r.top_p < 1.0 for r in s])[:, None]
            self.top_p = mx.array([r.top_p for r in s], dtype=mx.float32)[:, None]
        self.log_min_p = None
        if any(not r.greedy and r.min_p > 0.0 for r in s):
            self.min_p_on = mx.array([not r.greedy and r.min_p > 0.0 for r in s])[:, None]
            # math.log in double, then float32: what `logits >= top + math.log(min_p)` does with a Python float
            self.log_min_p = mx.array([math.log(r.min_p) if r.min_p > 0 else 0.0 for r in s], dtype=mx.float32)[:, None]
        self.bias = None
        if any(r.logit_bias for r in s):
            pairs = [(b, t, v) for b, r in enumerate(s) for t, v in (r.logit_bias or {}).items()]
            self.bias = (mx.array([p[0] for p in pairs], dtype=mx.int32), mx.array([p[1] for p in pairs], dtype=mx.int32),
                         mx.array([float(p[2]) for p in pairs], dtype=mx.float32))
            self.max_bias_id = max(p[1] for p in pairs)
        self.window = max(r.window for r in s)
        if self.window:
            W = self.window
            # a row looks at its own last `window` positions of the shared [B, W] history
            self.in_window = mx.array([[c >= W - r.window for c in range(W)] for r in s])
            self.penalty = mx.array([r.repetition_penalty if r.window else 1.0 for r in s], dtype=mx.float32)[:, None]
        self.logprobs = any(r.logprobs is not None for r in s)
        self.top_n = max((r.logprobs or 0 for r in s), default=0)
        self._top_k_index = None

    def _wide(self, history: mx.array | None, B: int) -> mx.array | None:
        """The history, at least `window` wide (-1 before a row's first token)."""
        if not self.window:
            return history
        if history is None or history.shape[0] != B:
            raise UsageError("rows with a repetition penalty need their token history [B, W]")
        return join_histories([history], [B], self.window) if history.shape[1] < self.window else history

    # -- the steps of one draw, each the batched form of sample.py's -------------------------------------------------
    def process(self, logits: mx.array, history: mx.array | None) -> mx.array:
        """Logit bias, then repetition penalty (LogitBias, RepetitionPenalty)."""
        if self.bias is not None:
            rows, ids, values = self.bias
            if self.max_bias_id >= logits.shape[-1]:
                raise UsageError(f"logit_bias names token {self.max_bias_id} but the vocabulary has "
                                 f"{logits.shape[-1]}")
            logits = logits.at[rows, ids].add(values)
        if self.window:
            window = self._wide(history, logits.shape[0])[:, -self.window:]
            valid = (window >= 0) & self.in_window
            idx = mx.where(valid, window, 0)
            rows = mx.broadcast_to(mx.arange(logits.shape[0])[:, None], idx.shape)
            seen = mx.zeros(logits.shape, dtype=mx.float32).at[rows, idx].add(valid.astype(mx.float32)) > 0
            penalty = self.penalty.astype(logits.dtype)
            penalized = mx.where(logits > 0, logits / penalty, logits * penalty)
            logits = mx.where(seen, penalized, logits)
        return logits

    def _top_k_idx(self, V: int) -> tuple[mx.array, mx.array] | None:
        if self._top_k_index is None or self._top_k_index[0] != V:
            on = [0 < k < V for k in self.top_k]
            value = None
            if any(on):
                value = (mx.array([V - k if o else 0 for k, o in zip(self.top_k, on)], dtype=mx.int32)[:, None],
                         mx.array(on)[:, None])
            self._top_k_index = (V, value)
        return self._top_k_index[1]

    def filter(self, logits: mx.array) -> mx.array:
        """float32 logits / temperature, then the top-k, top-p and min-p masks of the rows that use them."""
        x = logits.astype(mx.float32) / self.temperature
        k = self._top_k_idx(x.shape[-1])
        if k is not None:
            at, on = k
            kth = mx.take_along_axis(mx.sort(x, axis=-1), at, axis=-1)
            x = mx.where(on, mx.where(x >= kth, x, _NEG_INF), x)
        if self.top_p is not None:
            order = mx.argsort(-x, axis=-1)
            sorted_x = mx.take_along_axis(x, order, axis=-1)
            probs = mx.softmax(sorted_x, axis=-1)
            before = mx.cumsum(probs, axis=-1) - probs
            keep = mx.put_along_axis(mx.zeros(x.shape, dtype=mx.bool_), order, before < self.top_p, axis=-1)
            x = mx.where(self.top_p_on, mx.where(keep, x, _NEG_INF), x)
        if self.log_min_p is not None:
            top = mx.max(x, axis=-1, keepdims=True)
            x = mx.where(self.min_p_on, mx.where(x >= top + self.log_min_p, x, _NEG_INF), x)
        return x

    def __call__(self, logits: mx.array, keys: mx.array, history: mx.array | None = None) -> Draw:
        if logits.ndim != 2 or logits.shape[0] != len(self.specs):
            raise UsageError(f"logits must be [{len(self.specs)}, vocab], got shape {tuple(logits.shape)}")
        # NaN never passes as a token: the caller ends such a row (mx.all(mx.isfinite(.), axis=-1); faster on the CPU)
        finite = kernels.get("logits.all_finite")(logits, axis=-1)
        if self.plain:
            return Draw(mx.argmax(logits, axis=-1).astype(mx.int32), keys, history, finite)
        history = self._wide(history, logits.shape[0])
        processed = self.process(logits, history)
        tokens = mx.argmax(processed, axis=-1).astype(mx.int32)
        if self.sampling:
            split = mx.vmap(mx.random.split)(keys)  # [B, 2, 2]: (next key, this draw's key) per row
            V = processed.shape[-1]
            noise = mx.vmap(lambda k: mx.random.gumbel((V,), key=k))(split[:, 1])
            tokens = mx.where(self.greedy, tokens, gumbel_max(self.filter(processed), noise))
            keys = split[:, 0]
        if history is not None:
            history = mx.concatenate([history[:, 1:], tokens[:, None]], axis=1)
        draw = Draw(tokens, keys, history, finite)
        if self.logprobs:  # of the processed logits, before temperature, as mlx-lm reports them
            lp = processed - mx.logsumexp(processed, axis=-1, keepdims=True)
            draw.logprob = mx.take_along_axis(lp, tokens[:, None], axis=-1)[:, 0]
            if self.top_n:
                draw.top_ids = mx.argsort(-lp, axis=-1)[:, : self.top_n]
                draw.top_logprobs = mx.take_along_axis(lp, draw.top_ids, axis=-1)
        return draw


def sample_rows(specs: Sequence[RowSampling], solo: Sequence, logits: mx.array,
                histories: Sequence[Sequence[int]]) -> tuple[mx.array, mx.array]:
    """Reference: each row through its own (Sampler, processors) from `RowSampling.solo()` (state kept in those
    objects), as generate() draws it alone. Returns (tokens [B], processed logits [B, V])."""
    tokens, processed = [], []
    for b, (spec, (sampler, procs)) in enumerate(zip(specs, solo)):
        lb = logits[b : b + 1]
        if procs:
            lb = apply_processors(procs, mx.array([list(histories[b]) or []], dtype=mx.int32).reshape(1, -1), lb)
        processed.append(lb)
        tokens.append(sampler(lb))
    return mx.concatenate(tokens), mx.concatenate(processed)
