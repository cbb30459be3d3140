"""Generation: chunked prefill, a pipelined decode loop, streaming, batches.

    generate_step(model, prompt[B, T], ...)   yields sampled tokens [B] (the loop everything else uses)
    stream_generate(model, tokenizer, prompt) yields GenerationResponse (text segment, token, statistics)
    generate(model, tokenizer, prompt)        -> str
    batch_generate(model, tokenizer, prompts) -> list[str] (left padding with a mask: see below)

Cache semantics: a cache passed in is advanced in place. When generation ends, for whatever reason, the cache has
consumed the prompt and every generated token except the last one (that token was sampled but never fed back):
an EOS is therefore never in the state, and a caller continuing a conversation feeds whatever comes next.

Long prompts are fed in chunks of `prefill_step_size` tokens; after each chunk only the state is evaluated
(the logits of prompt positions are never computed), so peak memory does not grow with the prompt length.

The first sampled token: generate_step prefills the WHOLE prompt, and the last chunk also runs the final norm
and the head on its last position only (the model's `last_only`), evaluated with the state in one graph; the
first token is sampled from those logits. The prompt's last token therefore goes through the chunkwise path
with the rest of its chunk, not through a separate one-token decode step after a prefill of T - 1 tokens (on an
H200 at the 7B shape and 2,048 tokens: 56.1 ms for 2,047 tokens + 6.9 ms for the step, against 52.1 ms for the
2,048 tokens). The two forms give the same logits up to float rounding (chunkwise vs recurrent summation order;
tests/generation/test_first_logits.py). The old form (prefill T - 1, then the step) remains where a caller needs
the state without the last prompt token: `on_prefill` (snapshots keep that token pending) and max_tokens=0.

Batches: prompts are left-padded and the pad positions are masked; the model treats a masked position as an
exact identity step on the state, so each row decodes as it would alone (equal greedy tokens, tested).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import mlx.core as mx

from xlstm_mlx import kernels
from xlstm_mlx.models.base import default_blocks_per_eval, evaluating_blocks
from xlstm_mlx.models.compiled import decode_fn
from xlstm_mlx.generation.sample import LogitsProcessor, Sampler, apply_processors, make_logits_processors
from xlstm_mlx.generation.stopping import StopStringFilter, check_stop_strings
from xlstm_mlx.errors import NumericsError, UsageError

# a prefill still running after this many seconds shows a progress bar (tokens/s) on stderr; shorter ones none
PROGRESS_DELAY_S = 2.0
NUMERICS_FIX = ("run with --check-numerics to find the first block producing it, and try --dtype float32 or "
                "--profile parity (a precision problem goes away in float32; see docs/troubleshooting.md)")


@dataclass
class GenerationResponse:
    text: str  # new text since the previous response (may be '' while a character or stop string is pending)
    token: int  # the token sampled at this step
    prompt_tokens: int
    prompt_tps: float  # prompt tokens / time to the first sampled token (the prefill, whose last chunk gives the
    #                    first logits, + sampling; with on_prefill: prefill of T - 1, the callback, the first step)
    generation_tokens: int  # tokens sampled so far, this one included
    generation_tps: float  # decode speed: tokens after the first / time since the first
    peak_memory: float  # GB, mx.get_peak_memory() since the call started
    finish_reason: str | None = None  # "stop" (EOS or stop string), "length" (max_tokens), None (going on)


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UsageError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def prefill(model, tokens: mx.array, cache, mask: mx.array | None = None, prefill_step_size: int = 2048,
            progress: bool = False, blocks_per_eval: int | None = None,
            last_logits: bool = False) -> mx.array | None:
    """Feed tokens [B, T] (and mask [B, T]) into `cache` in chunks; only the state is computed.

    last_logits: also return the float32 logits of the last position, [B, V] (None for T = 0): the last
    chunk's forward runs the final norm and the head on that position only (the model's `last_only`; never
    [B, T, V] logits) and they are evaluated with the state, as one graph. generate_step samples the first
    token from them. With a mask, the last position must be a real token for the logits to mean anything.
    progress: a tqdm bar on stderr (tokens/s) once the prefill has run for PROGRESS_DELAY_S seconds.
    blocks_per_eval: each chunk's forward is evaluated every this many blocks, so only that many blocks'
    transient buffers are alive at once (0: the whole forward as one graph; None: 1 on a GPU, 0 on the CPU,
    models/base.py default_blocks_per_eval; docs/bench.md)."""
    _check_int("prefill_step_size", prefill_step_size, 1)
    if blocks_per_eval is None:
        blocks_per_eval = default_blocks_per_eval()
    _check_int("blocks_per_eval", blocks_per_eval, 0)
    T = tokens.shape[1]
    if T == 0:
        return None
    from tqdm import tqdm

    logits = None
    with tqdm(total=T * tokens.shape[0], desc="prompt", unit="tok", unit_scale=True, file=sys.stderr,
              delay=PROGRESS_DELAY_S, disable=not progress or T <= prefill_step_size, leave=False) as bar:
        for s in range(0, T, prefill_step_size):
            chunk_mask = None if mask is None else mask[:, s : s + prefill_step_size]
            chunk = tokens[:, s : s + prefill_step_size]
            with evaluating_blocks(blocks_per_eval):
                # the head on one position per row, and only evaluated for the last chunk when asked for
                out = model(chunk, cache=cache, mask=chunk_mask, last_only=True)
            if last_logits and s + prefill_step_size >= T:
                logits = out[:, -1]
                mx.eval(logits, cache.arrays())
            else:
                mx.eval(cache.arrays())
            mx.clear_cache()  # hand the chunk's buffers back: the next chunk's sizes may differ (fragmentation)
            bar.update(chunk.size)
    return logits


def check_state_finite(cache) -> None:
    """One isfinite reduction over the whole state; a NumericsError naming the fix if it holds NaN/Inf."""
    arrays = cache.arrays()
    if arrays and not mx.all(mx.stack([mx.all(mx.isfinite(a)) for a in arrays])).item():
        raise NumericsError(f"the recurrent state holds NaN or Inf after the prompt; {NUMERICS_FIX}")


def warm_up_decode(model, batch_size: int = 1) -> None:
    """Run the (compiled) decode step once on a throwaway state, so that its one-time trace and compile are
    not counted in a timed run (--verbose speeds: the first token comes from the prefill, so the step first
    runs for the second token, in the generation speed; with on_prefill or a one-token prompt it gives the
    first token, in the prompt speed)."""
    cache = model.make_cache(batch_size)
    mx.eval(decode_fn(model)(mx.zeros((batch_size, 1), dtype=mx.int32), cache))


def make_sampling(
    sampler: Sampler | Callable | None = None,
    logits_processors: Sequence[LogitsProcessor] | None = None,
    temp: float = 0.0,
    top_k: int = 0,
    top_p: float = 1.0,
    min_p: float = 0.0,
    seed: int | None = None,
    repetition_penalty: float | None = None,
    repetition_context_size: int = 20,
    logit_bias: dict[int, float] | None = None,
) -> tuple[Callable, list[LogitsProcessor]]:
    """A sampler and processors from either objects or the usual options (not both for the sampler)."""
    if sampler is None:
        sampler = Sampler(temperature=temp, top_k=top_k, top_p=top_p, min_p=min_p, seed=seed)
    elif (temp, top_k, top_p, min_p, seed) != (0.0, 0, 1.0, 0.0, None):
        raise UsageError("give either sampler= or temp/top_k/top_p/min_p/seed, not both")
    procs = list(logits_processors or [])
    procs += make_logits_processors(repetition_penalty, repetition_context_size, logit_bias)
    return sampler, procs


def generate_step(
    model,
    prompt: mx.array,
    cache=None,
    *,
    mask: mx.array | None = None,
    sampler: Callable | None = None,
    logits_processors: Sequence[LogitsProcessor] = (),
    max_tokens: int = 256,
    prefill_step_size: int = 2048,
    on_prefill: Callable | None = None,
    progress: bool = False,
    blocks_per_eval: int | None = None,
) -> Iterator[mx.array]:
    """Yield sampled tokens [B] (int32) one step at a time, the next step already computing.

    prompt [B, T] int32 (T >= 1), mask [B, T] (True = real token; the last position must be real in every row).
    The whole prompt is prefilled and the first token is sampled from the last chunk's logits of its last
    position (prefill's last_logits; module docstring).
    `on_prefill(cache)` is called once the prompt but its last token is in the state (for snapshots, whose
    format keeps that token pending: generation/snapshot.py). Given it, the prompt is prefilled but its last
    token, the callback runs, and the last token goes through the one-token decode step for the first logits:
    the contract stays as it was, at the cost of that step (small next to writing a snapshot). max_tokens=0
    also leaves the last prompt token unfed (there are no logits to compute).
    Close the generator to stop early: the speculative next step is then taken back out of the cache.
    Token ids outside the vocabulary are refused (UsageError); non-finite logits stop the loop with a
    NumericsError (one isfinite reduction per step, read with the sampled token: docs/troubleshooting.md).
    progress: show a progress bar for a long prefill; blocks_per_eval: see prefill.
    """
    if prompt.ndim != 2 or prompt.shape[1] < 1:
        raise UsageError(f"prompt must be [batch, time] with at least one token, got shape {tuple(prompt.shape)}")
    _check_int("max_tokens", max_tokens, 0)
    B = prompt.shape[0]
    if mask is not None:
        if tuple(mask.shape) != tuple(prompt.shape):
            raise UsageError(f"mask shape {tuple(mask.shape)} differs from prompt shape {tuple(prompt.shape)}")
        if not mx.all(mask[:, -1]).item():
            raise UsageError("the last prompt position must be a real token in every row (pad on the left)")
    check_token_ids(prompt, model.args.vocab_size, "prompt")
    if cache is None:
        cache = model.make_cache(B)
    sampler = sampler or Sampler()
    procs = list(logits_processors)

    first_logits = None
    if max_tokens > 0 and on_prefill is None:  # the whole prompt: its last chunk gives the first logits
        first_logits = prefill(model, prompt, cache, mask, prefill_step_size, progress, blocks_per_eval,
                               last_logits=True)
    else:  # the state without the last prompt token is wanted (on_prefill), or nothing more (max_tokens=0)
        prefill(model, prompt[:, :-1], cache, None if mask is None else mask[:, :-1], prefill_step_size,
                progress, blocks_per_eval)
        if max_tokens == 0 and prompt.shape[1] > 1:
            check_state_finite(cache)  # no logits will be computed: the state itself is checked, once
        if on_prefill is not None:
            on_prefill(cache)
        if max_tokens == 0:
            return

    windows = [getattr(p, "context_size", None) for p in procs]
    window = max(windows) if procs and all(w is not None for w in windows) else None
    history = prompt if mask is None else mx.where(mask, prompt, -1)
    if window is not None:
        history = history[:, -window:]

    decode = decode_fn(model)  # the one-token step, fused by mx.compile (models/compiled.py)

    all_finite = kernels.get("logits.all_finite")  # mx.all(mx.isfinite(.)); a faster form on the CPU

    def sample(logits: mx.array) -> tuple[mx.array, mx.array]:
        finite = all_finite(logits)  # one scalar per step: NaN never passes as a token
        if procs:
            logits = apply_processors(procs, history, logits)
        return sampler(logits), finite

    def step(tokens: mx.array) -> tuple[mx.array, mx.array]:
        return sample(decode(tokens, cache)[:, -1])

    # the first token: from the prefill's logits, or (on_prefill) from the step on the last prompt token
    y, finite = sample(first_logits) if first_logits is not None else step(prompt[:, -1:])
    mx.async_eval(y, finite)
    produced = 0
    restore = None
    try:
        while True:
            nxt = None
            if produced + 1 < max_tokens:
                restore = (list(cache.layers), cache.offset)
                if procs:
                    history = mx.concatenate([history, y[:, None].astype(history.dtype)], axis=1)
                    if window is not None:
                        history = history[:, -window:]
                nxt, nxt_finite = step(y[:, None])
                mx.async_eval(nxt, nxt_finite)
            if not finite.item():  # read after the next step is queued: the pipeline keeps running
                raise NumericsError(f"the model produced NaN or Inf logits at generated token {produced + 1}; "
                                    f"{NUMERICS_FIX}")
            yield y
            restore = None
            produced += 1
            if nxt is None:
                return
            y, finite = nxt, nxt_finite
    finally:
        if restore is not None:  # stopped while the next step was in flight: it consumed the last token
            cache.layers, cache.offset = restore


def check_token_ids(ids: mx.array, vocab_size: int, what: str = "token ids") -> None:
    """Every id in [0, vocab_size): one min/max reduction (an id outside would read outside the embedding)."""
    from xlstm_mlx.models.base import check_token_range

    check_token_range(ids, vocab_size, what)


def _encode_prompt(tokenizer, prompt, continuing: bool) -> list[int]:
    if isinstance(prompt, str):
        if tokenizer is None:
            raise UsageError("a text prompt needs a tokenizer (this checkpoint has no tokenizer.json); pass ids")
        ids = tokenizer.encode(prompt, add_special_tokens=not continuing)
    elif isinstance(prompt, mx.array):
        ids = prompt.reshape(-1).tolist()
    else:
        ids = [int(t) for t in prompt]
    if ids and (min(ids) < 0 or max(ids) >= 2**31):  # would wrap around in int32 and pass the vocabulary check
        raise UsageError(f"token ids must be in [0, vocab_size), got {min(ids)} ... {max(ids)}")
    if not ids:
        raise UsageError("the prompt encodes to no tokens; give at least one token")
    return ids


def stream_generate(
    model,
    tokenizer,
    prompt: str | Sequence[int] | mx.array,
    max_tokens: int = 256,
    *,
    cache=None,
    stop: str | Sequence[str] | None = None,
    eos_token_ids: Sequence[int] | None = None,
    prefill_step_size: int = 2048,
    on_prefill: Callable | None = None,
    progress: bool = False,
    **sampling,
) -> Iterator[GenerationResponse]:
    """Generate from one prompt, yielding a GenerationResponse per sampled token.

    prompt: text (BOS added as the tokenizer says, unless continuing a non-empty `cache`) or token ids.
    sampling: sampler=, logits_processors=, or temp, top_k, top_p, min_p, seed, repetition_penalty,
    repetition_context_size, logit_bias. Stops on an EOS id (tokenizer's unless `eos_token_ids`), a stop
    string (neither is emitted) or `max_tokens`. progress: a progress bar on stderr for a long prefill.
    """
    if tokenizer is None:
        raise UsageError("stream_generate needs a tokenizer to produce text; use generate_step for token ids")
    _check_int("max_tokens", max_tokens, 0)
    stops = check_stop_strings(stop)
    sampler, procs = make_sampling(**sampling)
    continuing = cache is not None and cache.offset > 0
    ids = _encode_prompt(tokenizer, prompt, continuing)
    eos = set(tokenizer.eos_token_ids if eos_token_ids is None else eos_token_ids)
    detok = tokenizer.detokenizer()
    stopper = StopStringFilter(stops)

    mx.reset_peak_memory()
    t0 = time.perf_counter()
    gen = generate_step(
        model, mx.array([ids], dtype=mx.int32), cache, sampler=sampler, logits_processors=procs,
        max_tokens=max_tokens, prefill_step_size=prefill_step_size, on_prefill=on_prefill, progress=progress,
    )
    prompt_tps, t_first = 0.0, t0
    try:
        for n, y in enumerate(gen, 1):
            token = y.item()
            now = time.perf_counter()
            if n == 1:
                t_first = now
                prompt_tps = len(ids) / max(now - t0, 1e-9)
            finish = None
            if token in eos:
                text, _ = stopper.feed(detok.finalize())
                text += stopper.flush()
                finish = "stop"
            else:
                text, stopped = stopper.feed(detok.add_token(token))
                if stopped:
                    finish = "stop"
                elif n == max_tokens:
                    tail, stopped = stopper.feed(detok.finalize())
                    text += tail + stopper.flush()
                    finish = "stop" if stopped else "length"
            yield GenerationResponse(
                text=text, token=token, prompt_tokens=len(ids), prompt_tps=prompt_tps, generation_tokens=n,
                generation_tps=(n - 1) / (now - t_first) if n > 1 and now > t_first else 0.0,
                peak_memory=mx.get_peak_memory() / 1e9, finish_reason=finish,
            )
            if finish is not None:
                break
    finally:
        gen.close()


def generate(model, tokenizer, prompt, max_tokens: int = 256, verbose: bool = False, **kwargs) -> str:
    """The generated text (stop strings and EOS excluded). verbose: stream it to stdout and print statistics."""
    pieces, last = [], None
    for last in stream_generate(model, tokenizer, prompt, max_tokens, **kwargs):
        pieces.append(last.text)
        if verbose:
            print(last.text, end="", flush=True)
    if verbose:
        print()
        if last is not None:
            print(format_stats(last), file=sys.stderr)
    return "".join(pieces)


def format_stats(r: GenerationResponse) -> str:
    return (
        f"prompt: {r.prompt_tokens} tokens, {r.prompt_tps:.1f} tokens/s | "
        f"generation: {r.generation_tokens} tokens, {r.generation_tps:.1f} tokens/s | "
        f"peak memory: {r.peak_memory:.3f} GB | finish: {r.finish_reason}"
    )


def batch_generate(
    model,
    tokenizer,
    prompts: Sequence[str | Sequence[int]],
    max_tokens: int = 256,
    *,
    stop: str | Sequence[str] | None = None,
    eos_token_ids: Sequence[int] | None = None,
    prefill_step_size: int = 2048,
    verbose: bool = False,
    **sampling,
) -> list[str]:
    """Generate for several prompts at once (left-padded, masked); returns the texts in prompt order.

    Rows that finish keep being stepped (their output is ignored) until every row has finished.
    """
    if tokenizer is None:
        raise UsageError("batch_generate needs a tokenizer to produce text")
    if not prompts:
        raise UsageError("prompts is empty")
    _check_int("max_tokens", max_tokens, 0)
    stops = check_stop_strings(stop)
    sampler, procs = make_sampling(**sampling)
    encoded = [_encode_prompt(tokenizer, p, False) for p in prompts]
    B, L = len(encoded), max(len(e) for e in encoded)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = mx.array([[pad] * (L - len(e)) + e for e in encoded], dtype=mx.int32)
    mask = mx.array([[False] * (L - len(e)) + [True] * len(e) for e in encoded])
    eos = set(tokenizer.eos_token_ids if eos_token_ids is None else eos_token_ids)
    detoks = [tokenizer.detokenizer() for _ in range(B)]
    stoppers = [StopStringFilter(stops) for _ in range(B)]
    out = [[] for _ in range(B)]
    done = [False] * B

    t0 = time.perf_counter()
    gen = generate_step(
        model, ids, None, mask=mask, sampler=sampler, logits_processors=procs, max_tokens=max_tokens,
        prefill_step_size=prefill_step_size,
    )
    n = 0
    t_first = t0
    try:
        for n, y in enumerate(gen, 1):
            if n == 1:
                t_first = time.perf_counter()
            for b, token in enumerate(y.tolist()):
                if done[b]:
                    continue
                if token in eos:
                    text, _ = stoppers[b].feed(detoks[b].finalize())
                    out[b].append(text + stoppers[b].flush())
                    done[b] = True
                    continue
                text, stopped = stoppers[b].feed(detoks[b].add_token(token))
                out[b].append(text)
                if stopped:
                    done[b] = True
                elif n == max_tokens:
                    tail, _ = stoppers[b].feed(detoks[b].finalize())
                    out[b].append(tail + stoppers[b].flush())
                    done[b] = True
            if all(done):
                break
    finally:
        gen.close()
    if verbose:
        t = time.perf_counter()
        print(
            f"batch {B}: prompt {sum(map(len, encoded))} tokens in {t_first - t0:.3f}s, "
            f"{n} steps, {B * max(n - 1, 0) / max(t - t_first, 1e-9):.1f} tokens/s (all rows), "
            f"peak memory {mx.get_peak_memory() / 1e9:.3f} GB",
            file=sys.stderr,
        )
    return ["".join(parts) for parts in out]
