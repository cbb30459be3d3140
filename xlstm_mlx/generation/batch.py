"""`xlstm-mlx batch`: generate (or score) every row of a JSONL file, resumable, sharded over launched ranks.

    xlstm-mlx batch --model DIR --input IN.jsonl --output OUT.jsonl [generation flags] [--score]
    mlx.launch --backend ring -n 2 -- $(which python) -m xlstm_mlx.cli batch ...     (rows over 2 ranks)

Input lines: {"id": str | int, "prompt": str} with optional "max_tokens", "temperature", "seed" (they
override --max-tokens, --temp and the per-row seed for that row). Output lines, exactly one per input id:
    generation  {"id", "text", "finish_reason", "prompt_tokens", "completion_tokens"}
    --score     {"id", "prompt_tokens", "scored_tokens", "logprob", "mean_logprob", "perplexity"}
finish_reason is "stop" (EOS or a stop string) or "length"; completion_tokens counts the sampled tokens,
an EOS included. logprob is the summed natural log-likelihood of every prompt token after the first (BOS),
each predicted from the tokens before it; perplexity = exp(-mean_logprob) (null with nothing scored).

Throughput: the pending rows are sorted by prompt length and cut into buckets of --batch-size rows, each
generated as one left-padded, masked batch (generate.generate_step; a masked position is an exact identity
step on the state, so a row's greedy tokens do not depend on its neighbours). Launched with K ranks, bucket
i goes to rank i mod K: every row is computed in the very bucket one process would use, so greedy results
are identical to one process. Sampling: a row's seed is its "seed", else derived from --seed and its id
(so it does not depend on buckets or ranks), else the global generator (not reproducible).

Resuming: rows are written as they finish (append, flush, fsync; distributed/rows.py); a rerun skips the ids
OUT already holds, repairs a torn last line, and merges what crashed ranks left. --tensor-parallel splits
the model instead of the rows: every rank runs every bucket and rank 0 writes.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
from tqdm import tqdm

from xlstm_mlx.distributed import group as dist
from xlstm_mlx.distributed.rows import Appender, id_key, merge_parts, part_path, read_rows, write_in_order
from xlstm_mlx.errors import MissingFileError, UsageError
from xlstm_mlx.generation.generate import generate_step, make_sampling
from xlstm_mlx.generation.sample import Sampler, check_temperature
from xlstm_mlx.generation.stopping import StopStringFilter, check_stop_strings

ROW_KEYS = {"id", "prompt", "max_tokens", "temperature", "seed"}
GENERATE_KEYS = ("text", "finish_reason", "completion_tokens")
SCORE_KEYS = ("logprob", "scored_tokens")


@dataclass
class Row:
    index: int  # position in the input file
    id: object  # as given (str or int)
    key: str  # canonical id (rows.id_key)
    prompt: str
    max_tokens: int
    temperature: float
    seed: int | None
    ids: list[int] | None = None  # the encoded prompt (pending rows only)


# ---------------------------------------------------------------------------------------------- input
def _int_field(row: dict, name: str, where: str, default):
    v = row.get(name, default)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise UsageError(f"{where}: \"{name}\" must be an integer >= 0, got {v!r}")
    return v


def read_input(path: Path, max_tokens: int, temperature: float, seed: int | None) -> list[Row]:
    """Every row of IN.jsonl, validated (blank lines skipped); duplicate ids are an error."""
    if not path.is_file():
        raise MissingFileError(f"input {path} does not exist")
    rows, seen = [], {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise UsageError(f"{where}: not valid JSON ({e})") from None
            if not isinstance(obj, dict):
                raise UsageError(f"{where}: each line must be a JSON object {{\"id\": ..., \"prompt\": ...}}")
            unknown = sorted(set(obj) - ROW_KEYS)
            if unknown:
                raise UsageError(f"{where}: unknown keys {unknown}; a row may have {sorted(ROW_KEYS)}")
            if "id" not in obj or "prompt" not in obj:
                raise UsageError(f"{where}: a row needs an \"id\" and a \"prompt\"")
            key = id_key(obj["id"], where)
            if key in seen:
                raise UsageError(f"{where}: id {obj['id']!r} repeats line {seen[key]}; every id must be unique "
                                 "(the output has one line per id)")
            seen[key] = n
            if not isinstance(obj["prompt"], str):
                raise UsageError(f"{where}: \"prompt\" must be a string, got {type(obj['prompt']).__name__}")
            temp = obj.get("temperature", temperature)
            try:
                temp = check_temperature(temp)
            except UsageError as e:
                raise UsageError(f"{where}: {e}") from None
            row_seed = _int_field(obj, "seed", where, None)
            if row_seed is None and seed is not None:  # independent of buckets and ranks: from the id
                row_seed = (seed * 1_000_003 + zlib.crc32(key.encode())) % 2**31
            rows.append(Row(len(rows), obj["id"], key, obj["prompt"], _int_field(obj, "max_tokens", where, max_tokens),
                            temp, row_seed))
    if not rows:
        raise UsageError(f"{path} holds no rows")
    return rows


def read_done(out: Path, rows: list[Row], score: bool) -> set[str]:
    """The ids OUT already holds; rows of another input or of the other mode are an error (never mixed)."""
    keys = {r.key for r in rows}
    done = set()
    for r in read_rows(out, repair=False):
        k = id_key(r["id"], str(out))
        if k not in keys:
            raise UsageError(f"{out} holds id {r['id']!r}, which is not in the input: it belongs to another "
                             "input; choose another --output")
        want, other = (SCORE_KEYS, GENERATE_KEYS) if score else (GENERATE_KEYS, SCORE_KEYS)
        if not all(f in r for f in want):
            theirs = ("generation" if score else "score") if all(f in r for f in other) else "unrecognised"
            raise UsageError(f"{out} holds {theirs} results (id {r['id']!r}); this run "
                             f"{'scores' if score else 'generates'}: choose another --output")
        done.add(k)
    return done


def encode_rows(rows: list[Row], tokenizer, chat_template: bool) -> None:
    for r in rows:
        if chat_template:
            text = tokenizer.apply_chat_template([{"role": "user", "content": r.prompt}], add_generation_prompt=True)
            r.ids = tokenizer.encode(text, add_special_tokens=False)
        else:
            r.ids = tokenizer.encode(r.prompt)
        if not r.ids:
            raise UsageError(f"row id {r.id!r}: the prompt encodes to no tokens (the tokenizer adds no BOS); "
                             "give a non-empty prompt")


def buckets(rows: list[Row], batch_size: int) -> list[list[Row]]:
    """Rows sorted by prompt length (then input order), cut into groups of batch_size."""
    order = sorted(rows, key=lambda r: (len(r.ids), r.index))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def _pad(rows: list[Row], pad: int) -> tuple[mx.array, mx.array | None]:
    L = max(len(r.ids) for r in rows)
    ids = mx.array([[pad] * (L - len(r.ids)) + r.ids for r in rows], dtype=mx.int32)
    if all(len(r.ids) == L for r in rows):
        return ids, None
    return ids, mx.array([[False] * (L - len(r.ids)) + [True] * len(r.ids) for r in rows])


# ---------------------------------------------------------------------------------------------- generation
class RowSampler:
    """Logits [B, V] -> tokens [B] with each row's own Sampler (temperature, seed); the top-k/top-p/min-p
    filters are shared. A row draws exactly what a one-row Sampler with its seed draws on the same logits."""

    def __init__(self, rows: list[Row], top_k: int, top_p: float, min_p: float):
        self.samplers = [Sampler(r.temperature, top_k, top_p, min_p, r.seed) for r in rows]
        self.greedy = all(s.greedy for s in self.samplers)

    def __call__(self, logits: mx.array) -> mx.array:
        if self.greedy:
            return mx.argmax(logits, axis=-1).astype(mx.int32)
        return mx.concatenate([s(logits[b : b + 1]) for b, s in enumerate(self.samplers)])


def generate_bucket(model, tokenizer, rows: list[Row], opts: dict, emit) -> None:
    """Generate every row of one bucket; emit(row, result dict) as each row finishes."""
    eos = set(tokenizer.eos_token_ids)
    live = []
    for b, r in enumerate(rows):
        if r.max_tokens == 0:
            emit(r, {"text": "", "finish_reason": "length", "completion_tokens": 0})
        else:
            live.append(b)
    if not live:
        return
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids, mask = _pad(rows, pad)
    _, procs = make_sampling(repetition_penalty=opts["repetition_penalty"],
                             repetition_context_size=opts["repetition_context_size"])
    sampler = RowSampler(rows, opts["top_k"], opts["top_p"], opts["min_p"])
    detoks = [tokenizer.detokenizer() for _ in rows]
    stoppers = [StopStringFilter(opts["stop"]) for _ in rows]
    pieces = [[] for _ in rows]
    done = [r.max_tokens == 0 for r in rows]

    def finish(b, n, reason):
        done[b] = True
        emit(rows[b], {"text": "".join(pieces[b]), "finish_reason": reason, "completion_tokens": n})

    gen = generate_step(model, ids, None, mask=mask, sampler=sampler, logits_processors=procs,
                        max_tokens=max(r.max_tokens for r in rows), prefill_step_size=opts["prefill_step_size"])
    try:
        for n, y in enumerate(gen, 1):
            for b, token in enumerate(y.tolist()):
                if done[b]:
                    continue
                if token in eos:
                    text, _ = stoppers[b].feed(detoks[b].finalize())
                    pieces[b].append(text + stoppers[b].flush())
                    finish(b, n, "stop")
                    continue
                text, stopped = stoppers[b].feed(detoks[b].add_token(token))
                pieces[b].append(text)
                if stopped:
                    finish(b, n, "stop")
                elif n == rows[b].max_tokens:
                    tail, stopped = stoppers[b].feed(detoks[b].finalize())
                    pieces[b].append(tail + stoppers[b].flush())
                    finish(b, n, "stop" if stopped else "length")
            if all(done):
                break
    finally:
        gen.close()


# ---------------------------------------------------------------------------------------------- scoring
def score_bucket(model, rows: list[Row], chunk_size: int, emit) -> None:
    """Log-likelihood of each row's prompt: every token after the first, predicted from those before it.

    The bucket goes through the model `chunk_size` positions at a time, the cache carrying the state, so
    memory holds one chunk's logits. Pad positions are masked (identity steps) and not scored."""
    ids, mask = _pad(rows, 0)
    B, T = ids.shape
    total = mx.zeros((B,), dtype=mx.float32)
    if T > 1:
        inputs, targets = ids[:, :-1], ids[:, 1:]
        valid = mask[:, :-1] if mask is not None else None  # left padding: a real input has a real target
        cache = model.make_cache(B)
        for s in range(0, T - 1, chunk_size):
            m = None if valid is None else valid[:, s : s + chunk_size]
            logits = model(inputs[:, s : s + chunk_size], cache=cache, mask=m)  # float32 [B, L, V]
            y = targets[:, s : s + chunk_size]
            logp = mx.take_along_axis(logits, y[..., None], axis=-1)[..., 0] - mx.logsumexp(logits, axis=-1)
            if m is not None:
                logp = mx.where(m, logp, 0.0)
            total = total + logp.sum(axis=1)
            mx.eval(total, *cache.arrays())
    for r, lp in zip(rows, total.tolist()):
        n = len(r.ids) - 1
        mean = lp / n if n else None
        emit(r, {"logprob": lp, "scored_tokens": n, "mean_logprob": mean,
                 "perplexity": math.exp(-mean) if n else None})


# ---------------------------------------------------------------------------------------------- the command
def add_arguments(p: argparse.ArgumentParser) -> None:
    """The batch-only options (cli.py adds the model and sampling options shared with generate)."""
    p.add_argument("--input", required=True, help="JSONL: {\"id\", \"prompt\"} per line, optionally "
                   "\"max_tokens\", \"temperature\", \"seed\"")
    p.add_argument("--output", required=True, help="JSONL results, one line per id; an existing file is resumed")
    p.add_argument("--batch-size", type=int, default=8, help="rows per batched generation (default 8)")
    p.add_argument("--score", action="store_true", help="score each prompt (log-likelihood, perplexity) instead "
                   "of generating")
    p.add_argument("--chat-template", action="store_true", help="wrap each prompt as a user turn in the chat "
                   "template")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def run(args) -> int:
    inp, out = Path(args.input), Path(args.output)
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.max_tokens < 0:
        raise UsageError(f"--max-tokens must be >= 0, got {args.max_tokens}")
    if args.prefill_step_size < 1:
        raise UsageError(f"--prefill-step-size must be >= 1, got {args.prefill_step_size}")
    if out.resolve() == inp.resolve():
        raise UsageError("--output must differ from --input")
    if args.model is None:
        raise UsageError("batch needs --model (a checkpoint directory or Hugging Face repo id)")
    if not out.parent.is_dir():
        raise MissingFileError(f"the directory of --output ({out.parent}) does not exist")
    stop = check_stop_strings(args.stop)
    make_sampling(top_k=args.top_k, top_p=args.top_p, min_p=args.min_p, repetition_penalty=args.repetition_penalty,
                  repetition_context_size=args.repetition_context_size)  # bad values fail before any loading
    rows = read_input(inp, args.max_tokens, args.temp, args.seed)

    g = dist.world()
    R, K = g.rank(), g.size()
    tp = bool(getattr(args, "tensor_parallel", False))
    if R == 0:  # step 1 (rows.py): repair OUT, fold in what an interrupted run's ranks left
        read_rows(out, repair=True)
        merge_parts(out)
    dist.barrier(g)
    done = read_done(out, rows, args.score)
    pending = [r for r in rows if r.key not in done]

    if tp:  # every rank holds its share of every block; unseeded sampling must draw alike everywhere
        from xlstm_mlx.distributed.tensor_parallel import load_sharded, seed_alike

        model, tok = load_sharded(args.model, g, dtype=args.dtype, profile=args.profile, verbose=args.verbose,
                                  check_numerics=args.check_numerics)
        seed_alike(g)
    else:
        from xlstm_mlx.checkpoints.load import load

        model, tok = load(args.model, dtype=args.dtype, profile=args.profile, verbose=args.verbose and R == 0,
                          check_numerics=args.check_numerics)
    if tok is None:
        raise UsageError(f"{args.model} has no tokenizer.json; batch needs one to encode the prompts")
    encode_rows(pending, tok, args.chat_template)
    groups = buckets(pending, args.batch_size)
    mine = groups if (tp or K == 1) else groups[R::K]
    writer = out if K == 1 or (tp and R == 0) else (None if tp else part_path(out, R))
    if args.verbose and R == 0:
        mode = "; tensor parallel (every rank runs every bucket)" if tp else ("; rows sharded over the ranks" if K > 1 else "")
        print(f"[xlstm-mlx batch] {len(rows)} rows, {len(done)} already in {out}, {len(pending)} to "
              f"{'score' if args.score else 'generate'} in {len(groups)} buckets of <= {args.batch_size}; "
              f"{dist.describe(g)}{mode}", file=sys.stderr)
    opts = dict(stop=stop, top_k=args.top_k, top_p=args.top_p, min_p=args.min_p,
                repetition_penalty=args.repetition_penalty, repetition_context_size=args.repetition_context_size,
                prefill_step_size=args.prefill_step_size)
    total = sum(len(b) for b in mine)
    show = not args.no_progress and (R == 0 or not tp)
    with Appender(writer) as app, tqdm(total=total, desc=f"rank {R}" if K > 1 else "rows", unit="row",
                                       file=sys.stderr, disable=not show, dynamic_ncols=True) as bar:
        def emit(row: Row, result: dict):
            if args.score:
                line = {"id": row.id, "prompt_tokens": len(row.ids), **result}
            else:
                line = {"id": row.id, "text": result["text"], "finish_reason": result["finish_reason"],
                        "prompt_tokens": len(row.ids), "completion_tokens": result["completion_tokens"]}
            app.write(line)
            bar.update(1)

        for bucket in mine:
            if args.score:
                score_bucket(model, bucket, args.prefill_step_size, emit)
            else:
                generate_bucket(model, tok, bucket, opts, emit)

    dist.barrier(g)  # every rank's rows are on disk
    if R == 0:
        merge_parts(out)
        final = read_done(out, rows, args.score)
        if len(final) == len(rows):
            write_in_order(out, [r.key for r in rows])
        print(f"[xlstm-mlx batch] {len(final) - len(done)} rows written, {len(final)}/{len(rows)} in {out}",
              file=sys.stderr)
    dist.barrier(g)
    return 0
