"""The engine thread: one thread owns the model and a batched cache; requests are rows that come and go.

Loop, one iteration at a time:
  1. take new requests and cancellations from the inbox (plain Python values from the asyncio side);
  2. admit waiting requests into free rows: each starts from the longest stored prefix state (state_cache.py) or a
     zero state; those with prompt tokens left to feed form one prefill group (left-padded and masked, so the pad
     positions are identity steps on the state, as in generate.batch_generate);
  3. prefill the group by one chunk of at most `prefill_chunk` positions (the work per iteration is capped, so the
     running streams keep flowing); when the group has consumed all but the last prompt token of every row, its
     rows join the decode batch;
  4. one decode step for every decoding row: feed each row's pending token, sample every row with its own settings
     in one graph (generation/batch_sample.py: greedy or temperature, top-k, top-p, min-p, seed, repetition
     penalty, logit bias, logprobs), emit text; a finished or cancelled row leaves by dropping its state rows
     (rows.py), nothing else is recomputed. Steps are pipelined like generate_step (the next step is started on
     the still-lazy tokens, keys and histories before they are read back); rows that become ready meanwhile join
     at the next step that is not speculative.

Cache semantics are generate.py's: a row's state has consumed its prompt and every generated token but the last
(sampled, never fed back). That state is stored in the prefix cache when the row ends, with the prompt-boundary
state (prompt minus its last token), one at each of the job's `save_at` boundaries (a chat's end of the system
prompt and start of the last message: the next conversation with the same system prompt, or an edited last
message, starts there; a prefill chunk ends at such a boundary to take it) and one every `save_every` prompt
tokens of long prompts.

Greedy rows are what `generate --temp 0` computes for the same prompt: the same prefill (chunks of
`prefill_chunk`, no mask for a group of one), the same compiled decode step, argmax per row. One difference:
generate takes the first token's logits from its prefill (the prompt's last token in the last chunk,
generate.py), where a row here feeds that token through the decode step; the two agree to float rounding
(tests/generation/test_first_logits.py), so the tokens are the same but at a near-tie. The server keeps the
step because its prefix cache stores the state before the last prompt token (a request with a stored prompt
joins with nothing to prefill, and one whose prompt extends it from there), and because a joining row's first
step rides in the decode step the running rows take anyway; a row that starts alone pays it. Rows are independent
(batch-first states, masked padding, per-row sampler keys), so other rows do not change a row's tokens, sampled
ones with a seed included (tested). A row whose logits are not finite ends with an error event (NaN never passes).

Threads: every MLX call happens on the engine thread, loading included (MLX arrays built on one thread cannot be
evaluated on another); `xlstm-mlx serve` makes the main thread the engine thread and runs uvicorn on another. Other threads call submit/cancel/stop/health only; results go back through each request's `sink`
(a thread-safe callable the asyncio side provides) as plain tuples:
    ("admitted", cached_tokens)
    ("token", text, token_id, logprob or None, top_logprobs [(id, logprob)] or None)
    ("done", finish_reason, usage dict)          finish_reason: "stop" | "length" | "cancelled"
    ("error", message)                           NaN/Inf logits, a refused setting, shutdown or an engine bug
"""

from __future__ import annotations

import itertools
import queue
import sys
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field

from xlstm_mlx.generation.batch_sample import BatchSampler, RowSampling, first_history, first_key, history_array
from xlstm_mlx.generation.server.metrics import Metrics
from xlstm_mlx.generation.server.state_cache import PrefixStateCache
from xlstm_mlx.generation.server.textstream import TextStream


class QueueFull(Exception):
    """More requests are waiting than --max-queue allows (the HTTP side answers 429)."""


class ShuttingDown(Exception):
    """The engine is stopping and takes no new request."""


@dataclass
class Job:
    """One validated request, plain Python values only (protocol.py builds it)."""

    prompt: list[int]
    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    seed: int | None = None
    repetition_penalty: float | None = None
    repetition_context_size: int = 20
    logit_bias: dict[int, float] | None = None
    stop: list[str] = field(default_factory=list)
    logprobs: int | None = None  # None: off; else how many top alternatives to return (0 = only the chosen)
    save_at: list[int] = field(default_factory=list)  # prompt lengths whose state is worth storing (boundaries)


@dataclass
class _Row:
    rid: int
    job: Job
    sink: object
    t_submit: float
    cached: int = 0
    text: TextStream | None = None
    spec: RowSampling | None = None
    generated: list[int] = field(default_factory=list)
    next_token: int = -1
    t_first: float | None = None
    cancelled: bool = False
    last_saved: int = 0  # prompt tokens in the last stored prefix state


@dataclass
class _Group:
    """Rows being prefilled together: tokens left-padded to one length, a mask, one cache."""

    rows: list
    cache: object
    tokens: list  # [rows][L] ids (pad = 0 where masked)
    pads: list[int]
    pos: int = 0

    @property
    def length(self) -> int:
        return len(self.tokens[0])


class Engine:
    def __init__(self, model_dir, *, dtype=None, profile=None, max_batch: int = 8, max_queue: int = 64,
                 state_cache_bytes: int = 1 << 30, prefill_chunk: int = 256, save_every: int = 512,
                 verbose: bool = False):
        self.model_dir = model_dir
        self._load_args = dict(dtype=dtype, profile=profile, verbose=verbose)
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.prefill_chunk = prefill_chunk
        self.save_every = save_every
        self.verbose = verbose
        self.state_cache = PrefixStateCache(state_cache_bytes)
        self.metrics = Metrics()
        self.tokenizer = None
        self.vocab_size = 0
        self.state_bytes_per_row = 0
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._waiting_count = 0
        self._active_count = 0
        self._accepting = False
        self._owner: threading.Thread | None = None
        self._running = False
        # engine-thread state
        self._waiting: deque[_Row] = deque()
        self._group: _Group | None = None
        self._active: list[_Row] = []
        self._state = None  # rows.RowState of the active rows: recurrent state, sampler keys, histories
        self._sampler: BatchSampler | None = None  # the active rows' settings (rebuilt when they change)
        self._inflight = None  # (Draw, RowState after) of a pipelined step still computing
        self._pending: list = []  # (row, one-row RowState) that joined while a step was in flight

    # ------------------------------------------------------------------ other threads
    def load(self) -> None:
        """Load the model on the calling thread, which becomes the engine thread (run() must run there too).

        `xlstm-mlx serve` makes it the main thread (cli.py): MLX 0.32 can abort the process at exit ("terminate
        called without an active exception") after a thread that ran MLX work has ended, even joined; the main
        thread never ends before the process does."""
        self._owner = threading.current_thread()
        self._load()
        with self._lock:
            self._accepting = True

    def submit(self, job: Job, sink) -> int:
        """Queue a job; returns its id. Raises QueueFull beyond max_queue waiting jobs, ShuttingDown when stopping."""
        with self._lock:
            if not self._accepting:
                raise ShuttingDown("the server is shutting down")
            if self._waiting_count >= self.max_queue:
                self.metrics.rejected += 1
                raise QueueFull(f"{self._waiting_count} requests are already waiting (--max-queue {self.max_queue})")
            self._waiting_count += 1
            rid = next(self._ids)
        self._inbox.put(("submit", rid, job, sink, time.perf_counter()))
        return rid

    def cancel(self, rid: int) -> None:
        self._inbox.put(("cancel", rid))

    def stop(self) -> None:
        """Cancel everything and make run() return (callable from any thread)."""
        with self._lock:
            self._accepting = False
        self._inbox.put(("stop",))

    @property
    def alive(self) -> bool:
        return self._running

    def health(self) -> dict:
        return {"active": self._active_count, "queued": self._waiting_count, "max_batch": self.max_batch,
                "max_queue": self.max_queue}

    # ------------------------------------------------------------------ the engine thread
    def run(self, should_stop=None) -> None:
        """The engine loop, on the thread that called load(); returns after stop() or once should_stop() is true."""
        if threading.current_thread() is not self._owner:
            raise RuntimeError("Engine.run must run on the thread that loaded the model (MLX arrays are per thread)")
        self._running = True
        try:
            while self._drain_inbox() and not (should_stop is not None and should_stop()):
                try:
                    self._admit()
                    if self._group is not None:
                        self._prefill_chunk()
                    if self._active:
                        self._decode_step()
                except Exception as e:  # a bug: fail the rows in flight, keep serving the others
                    traceback.print_exc(file=sys.stderr)
                    self._fail_all(f"internal error in the engine: {type(e).__name__}: {e}")
                self._active_count = (len(self._active) + len(self._pending)
                                      + (len(self._group.rows) if self._group else 0))
        finally:
            with self._lock:
                self._accepting = False
            self._fail_all("the server is shutting down", finish="cancelled")
            while True:  # whatever arrived meanwhile
                try:
                    msg = self._inbox.get_nowait()
                except queue.Empty:
                    break
                if msg[0] == "submit":
                    self._send(msg[3], ("done", "cancelled", self._usage(msg[2], 0, 0)))
            self._active_count = 0
            self._running = False
            self._release()

    def _release(self) -> None:
        """Free the MLX objects the engine holds, on its own thread, once it stops."""
        import gc

        self.state_cache.clear()
        self._state = self._inflight = self._sampler = None
        self.model = self.decode = None
        gc.collect()
        self._mx.synchronize()

    def _load(self) -> None:
        import mlx.core as mx

        from xlstm_mlx.checkpoints.load import load
        from xlstm_mlx.errors import UsageError
        from xlstm_mlx.models.compiled import decode_fn

        self._mx = mx
        model, tok = load(self.model_dir, **self._load_args)
        if tok is None:
            raise UsageError(f"{self.model_dir} has no tokenizer.json; the server needs one to encode text")
        self.model, self.tokenizer = model, tok
        self.vocab_size = max(int(model.args.vocab_size), tok.vocab_size)
        self.decode = decode_fn(model)
        self.state_bytes_per_row = sum(a.nbytes for a in model.make_cache(1).arrays())
        if self.verbose:
            print(f"[xlstm-mlx serve] engine: continuous batching over up to {self.max_batch} rows, "
                  f"prefill chunk {self.prefill_chunk}, decode step: {'compiled' if self.decode.compiled else 'plain'}, "
                  f"pipelined, every row sampled in one batched graph (generation/batch_sample.py), "
                  f"state {self.state_bytes_per_row / 1e6:.2f} MB per row, prefix-state cache "
                  f"{self.state_cache.max_bytes / 1e6:.0f} MB", file=sys.stderr)

    def _drain_inbox(self) -> bool:
        """Apply inbox messages; block briefly when idle. False once a stop arrived."""
        idle = not (self._active or self._group or self._waiting)
        first = True
        while True:
            try:
                msg = self._inbox.get(timeout=0.1) if (idle and first) else self._inbox.get_nowait()
            except queue.Empty:
                return True
            first = False
            kind = msg[0]
            if kind == "stop":
                return False
            if kind == "submit":
                _, rid, job, sink, t = msg
                self._waiting.append(_Row(rid, job, sink, t))
            elif kind == "cancel":
                self._cancel(msg[1])

    def _cancel(self, rid: int) -> None:
        for r in list(self._waiting):
            if r.rid == rid:
                self._waiting.remove(r)
                with self._lock:
                    self._waiting_count -= 1
                self._finish(r, "cancelled")
                return
        if self._group is not None and any(r.rid == rid for r in self._group.rows):
            g = self._group
            b = next(i for i, r in enumerate(g.rows) if r.rid == rid)
            from xlstm_mlx.generation.server import rows

            kept = [i for i in range(len(g.rows)) if i != b]
            self._finish(g.rows[b], "cancelled")
            if not kept:
                self._group = None
            else:
                self._group = _Group([g.rows[i] for i in kept], rows.keep(g.cache, kept),
                                     [g.tokens[i] for i in kept], [g.pads[i] for i in kept], g.pos)
            return
        for r in [r for r, _ in self._pending]:
            if r.rid == rid:
                r.cancelled = True  # left out when the pending rows join
                return
        for b, r in enumerate(self._active):
            if r.rid == rid:
                if self._inflight is not None:  # its next step is computing: the decode step drops it
                    r.cancelled = True
                    return
                self._save_row(r, b)
                self._finish(r, "cancelled")
                self._drop_active({b})
                return

    # -- admission and prefill -------------------------------------------------------------------------
    def _admit(self) -> None:
        if self._group is not None or not self._waiting:
            return
        free = self.max_batch - len(self._active) - len(self._pending)
        if free <= 0:
            return
        from xlstm_mlx.generation.server import rows

        now = time.perf_counter()
        starting, joining = [], []
        while self._waiting and len(starting) + len(joining) < free:
            r = self._waiting.popleft()
            with self._lock:
                self._waiting_count -= 1
            self.metrics.queue_wait.observe(now - r.t_submit)
            try:
                self._make_sampling(r)
            except Exception as e:  # validated upstream; a clear message all the same
                self._send(r.sink, ("error", str(e)))
                continue
            n, state = self.state_cache.longest_prefix(r.job.prompt)
            r.cached = n
            r.last_saved = n
            r.next_token = r.job.prompt[-1]
            cache = state.copy() if state is not None else self.model.make_cache(1)  # never advance a stored state
            self.metrics.prompt_tokens += len(r.job.prompt)
            self.metrics.cached_tokens += n
            self._send(r.sink, ("admitted", n))
            (joining if n == len(r.job.prompt) - 1 else starting).append((r, cache))
        if joining:
            self._join_active([r for r, _ in joining], rows.join([c for _, c in joining]))
        if starting:
            rest = [r.job.prompt[r.cached:-1] for r, _ in starting]
            L = max(len(t) for t in rest)
            pads = [L - len(t) for t in rest]
            self._group = _Group([r for r, _ in starting], rows.join([c for _, c in starting]),
                                 [[0] * p + t for p, t in zip(pads, rest)], pads)

    def _make_sampling(self, r: _Row) -> None:
        j = r.job
        r.spec = RowSampling(temperature=j.temperature, top_k=j.top_k, top_p=j.top_p, min_p=j.min_p, seed=j.seed,
                             repetition_penalty=j.repetition_penalty,
                             repetition_context_size=j.repetition_context_size, logit_bias=j.logit_bias,
                             logprobs=j.logprobs)
        r.text = TextStream(self.tokenizer, j.stop, self.tokenizer.eos_token_ids, j.max_tokens)

    def _boundaries(self, g: _Group, s: int) -> list[tuple[int, int]]:
        """(group position, row) of the rows' `save_at` boundaries after position `s`, in order."""
        out = []
        for b, r in enumerate(g.rows):
            for k in r.job.save_at:
                at = g.pads[b] + k - r.cached  # k prompt tokens consumed at this group position
                if k > max(r.cached, r.last_saved) and s < at < g.length:
                    out.append((at, b))
        return sorted(out)

    def _prefill_chunk(self) -> None:
        mx = self._mx
        g = self._group
        s = g.pos
        e = min(g.length, s + self.prefill_chunk)
        marks = self._boundaries(g, s)
        if marks and marks[0][0] < e:  # end this chunk at the next boundary, to store the state there
            e = marks[0][0]
        t0 = time.perf_counter()
        tokens = mx.array([t[s:e] for t in g.tokens], dtype=mx.int32)
        mask = None
        if any(p > s for p in g.pads):  # some row still has padding in this chunk
            mask = mx.array([[i >= p for i in range(s, e)] for p in g.pads])
        self.model(tokens, cache=g.cache, mask=mask)  # the logits are never evaluated: only the state is
        mx.eval(g.cache.arrays())
        g.pos = e
        self.metrics.prefill_tokens += sum(max(0, e - max(s, p)) for p in g.pads)
        self.metrics.prefill_seconds += time.perf_counter() - t0
        if e < g.length:
            for b, r in enumerate(g.rows):
                consumed = r.cached + max(0, e - g.pads[b])
                at_boundary = consumed in r.job.save_at and consumed > r.last_saved
                if at_boundary or (self.save_every and consumed - r.last_saved >= self.save_every):
                    self._store(r.job.prompt[:consumed], g.cache, b)
                    r.last_saved = consumed
            return
        for b, r in enumerate(g.rows):  # the prompt-boundary state: the next chat turn starts from it
            if len(r.job.prompt) - 1 > r.last_saved:
                self._store(r.job.prompt[:-1], g.cache, b)
        self._group = None
        self._join_active(g.rows, g.cache)

    def _join_active(self, new_rows: list, cache) -> None:
        """Rows whose state `cache` (their rows in order) has consumed all of the prompt but its last token."""
        from xlstm_mlx.generation.server import rows

        mx = self._mx
        state = rows.RowState(cache, mx.stack([first_key(r.spec) for r in new_rows]),
                              history_array([first_history(r.spec, r.job.prompt) for r in new_rows]))
        self._join_states(new_rows, state)

    def _join_states(self, new_rows: list, state) -> None:
        from xlstm_mlx.generation.server import rows

        if self._inflight is not None:  # a speculative step is computing for the current rows: join after it
            self._pending.extend((r, rows.state_row(state, b)) for b, r in enumerate(new_rows))
            return
        self._set_active(self._active + new_rows,
                         rows.join_states(([self._state] if self._active else []) + [state]))

    def _set_active(self, active: list, state) -> None:
        if [r.rid for r in active] != [r.rid for r in self._active]:
            self._sampler = None  # the settings are per composition
        self._active, self._state = active, state

    def _merge_pending(self) -> None:
        pending, self._pending = self._pending, []
        live = []
        for r, cache in pending:
            if r.cancelled:
                self._finish(r, "cancelled")
            else:
                live.append((r, cache))
        if live:
            from xlstm_mlx.generation.server import rows

            self._join_states([r for r, _ in live], rows.join_states([st for _, st in live]))

    # -- decoding -----------------------------------------------------------------------------------------
    def _launch(self, tokens, state):
        """Start one decode step for every row of `state` (left untouched): (Draw, RowState after)."""
        from xlstm_mlx.generation.server import rows
        from xlstm_mlx.models.cache import Cache

        if self._sampler is None:
            self._sampler = BatchSampler([r.spec for r in self._active])
        after = Cache(list(state.cache.layers), state.cache.batch_size)
        draw = self._sampler(self.decode(tokens, after)[:, -1], state.keys, state.history)
        return draw, rows.RowState(after, draw.keys, draw.history)

    def _decode_step(self) -> None:
        """One decode step, pipelined as generate_step is: the next step is built on the still-lazy tokens (and
        keys and histories) and started before they are read back, so the Python work of a step overlaps the next
        step's compute. A row that ends was stepped once more for nothing: its stored state is the one before
        that step, and the step's output for it is dropped."""
        from xlstm_mlx.generation.server import rows

        act = self._active
        mx = self._mx
        t0 = time.perf_counter()
        if self._inflight is None:
            tokens = mx.array([[r.next_token] for r in act], dtype=mx.int32)
            self._inflight = self._launch(tokens, self._state)
        draw, state = self._inflight
        speculate = not self._pending and not any(r.cancelled for r in act)
        nxt = None
        if speculate:
            nxt = self._launch(draw.tokens[:, None], state)
            mx.async_eval(*nxt[0].arrays(), *nxt[1].arrays())
        else:
            mx.eval(*draw.arrays(), *state.arrays())
        ys, finite = draw.tokens.tolist(), draw.finite.tolist()
        logprobs = self._logprobs(act, draw)
        now = time.perf_counter()
        self._count_step(t0, now, len(act))
        gone = set()
        for b, (r, token) in enumerate(zip(act, ys)):
            if r.cancelled:  # cancelled while this step computed: nothing more is sent or stored
                self._finish(r, "cancelled")
                gone.add(b)
            elif not finite[b]:
                self._fail(r, self._nan_message(len(r.generated) + 1))
                gone.add(b)
            elif self._emit(r, b, token, logprobs[b], now, state.cache):
                gone.add(b)
        kept = [b for b in range(len(act)) if b not in gone]
        self._set_active([act[b] for b in kept], rows.keep_state(state, kept))
        if nxt is not None and kept:
            ndraw, nstate = nxt
            self._inflight = (ndraw.rows(kept) if gone else ndraw, rows.keep_state(nstate, kept))
        else:
            self._inflight = None
            for b in kept:
                act[b].next_token = ys[b]
            self._merge_pending()

    @staticmethod
    def _logprobs(act: list, draw) -> list:
        """Per row: None, or (chosen logprob, [(id, logprob)] of the row's top alternatives)."""
        if draw.logprob is None:
            return [None] * len(act)
        chosen = draw.logprob.tolist()
        ids = draw.top_ids.tolist() if draw.top_ids is not None else None
        values = draw.top_logprobs.tolist() if draw.top_logprobs is not None else None
        out = []
        for b, r in enumerate(act):
            k = r.job.logprobs
            if k is None:
                out.append(None)
            else:
                out.append((chosen[b], list(zip(ids[b][:k], values[b][:k])) if k else []))
        return out

    @staticmethod
    def _nan_message(n: int) -> str:
        from xlstm_mlx.generation.generate import NUMERICS_FIX

        return f"the model produced NaN or Inf logits at generated token {n}; {NUMERICS_FIX}"

    def _count_step(self, t0: float, now: float, n_rows: int) -> None:
        self.metrics.decode_steps += 1
        self.metrics.decode_seconds += now - t0
        self.metrics.batch_rows += n_rows

    def _emit(self, r, b: int, token: int, logprobs, now: float, state) -> bool:
        """Hand one sampled token of row `b` to its request; True when the row has ended (its state, row `b` of
        `state`, stored first)."""
        if r.t_first is None:
            r.t_first = now
            self.metrics.ttft.observe(now - r.t_submit)
        r.generated.append(token)
        self.metrics.generated_tokens += 1
        text, finish = r.text.add(token)
        chosen, top = logprobs if logprobs is not None else (None, None)
        self._send(r.sink, ("token", text, token, chosen, top))
        if finish is None:
            return False
        self._save_row(r, b, state)
        self._finish(r, finish)
        return True

    def _drop_active(self, gone: set) -> None:
        from xlstm_mlx.generation.server import rows

        kept = [b for b in range(len(self._active)) if b not in gone]
        self._set_active([self._active[b] for b in kept], rows.keep_state(self._state, kept))

    # -- results ------------------------------------------------------------------------------------------
    def _store(self, tokens: list[int], cache, b: int) -> None:
        from xlstm_mlx.generation.server import rows

        if self.state_cache.max_bytes <= 0 or not tokens:
            return
        one = rows.row(cache, b)
        self._mx.eval(one.arrays())
        self.state_cache.put(tokens, one, rows.nbytes(one))

    def _save_row(self, r: _Row, b: int, state=None) -> None:
        """Store the state of an ending row (row `b` of `state`, default the batch's): it consumed the prompt and
        every generated token but the last."""
        consumed = r.job.prompt + r.generated[:-1] if r.generated else r.job.prompt[:-1]
        if len(consumed) > r.last_saved:
            self._store(consumed, self._state.cache if state is None else state, b)

    def _usage(self, job: Job, completion: int, cached: int) -> dict:
        return {"prompt_tokens": len(job.prompt), "completion_tokens": completion,
                "total_tokens": len(job.prompt) + completion, "cached_tokens": cached}

    def _fail(self, r: _Row, message: str) -> None:
        self.metrics.finished["error"] = self.metrics.finished.get("error", 0) + 1
        self._send(r.sink, ("error", message))

    def _finish(self, r: _Row, reason: str) -> None:
        self.metrics.finished[reason] = self.metrics.finished.get(reason, 0) + 1
        self._send(r.sink, ("done", reason, self._usage(r.job, len(r.generated), r.cached)))

    def _fail_all(self, message: str, finish: str | None = None) -> None:
        everyone = (list(self._waiting) + (self._group.rows if self._group else []) + list(self._active)
                    + [r for r, _ in self._pending])
        for r in everyone:
            if finish is None:
                self._send(r.sink, ("error", message))
            else:
                self._finish(r, finish)
        with self._lock:
            self._waiting_count -= len(self._waiting)
        self._waiting.clear()
        self._group = None
        self._active = []
        self._state = None
        self._sampler = None
        self._inflight = None
        self._pending = []

    def _send(self, sink, event: tuple) -> None:
        try:
            sink(event)
        except Exception:  # the receiving loop is gone (shutdown): nothing is listening any more
            pass
