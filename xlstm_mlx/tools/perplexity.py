"""`xlstm-mlx perplexity`: perplexity of a text file, streamed through the recurrent state.

    xlstm-mlx perplexity --model M --data FILE_OR_DIR [--context N] [--chunk-size 512]

The data (a .txt file, or every .txt file under a directory, sorted) becomes one token stream: each file
encoded without special tokens and followed by EOS, exactly as the trainer builds its streams. Every token
of the stream is scored once, predicted from what precedes it:

  --context 0 (default)  one sequence: BOS, then the whole stream; the state is carried all the way.
  --context N            the stream is cut into windows of N tokens (the last one may be shorter); each
                         window starts from a fresh state with BOS in front (the trainer's held-out
                         windows, seq_len = N), so a token sees at most the N - 1 tokens before it.

Within a sequence the tokens go through the model `--chunk-size` at a time, the cache carrying C, n, m
from chunk to chunk: memory is constant in the length of the file (one chunk's logits plus the state).
With --context, independent windows are scored side by side, up to --chunk-size tokens per call.
The last line printed is `perplexity: <value>` = exp(mean negative log-likelihood per scored token).
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import numpy as np
from tqdm import tqdm

from xlstm_mlx.checkpoints.demo import model_or_default
from xlstm_mlx.checkpoints.load import load
from xlstm_mlx.errors import NumericsError, UsageError
from xlstm_mlx.generation.generate import NUMERICS_FIX, PROGRESS_DELAY_S

from xlstm_mlx.training.data import text_files


@dataclass
class PerplexityResult:
    nll: float  # summed negative log-likelihood, nats
    tokens: int  # scored tokens
    bytes: int | None = None  # UTF-8 bytes of the text, when known

    @property
    def mean_nll(self) -> float:
        return self.nll / self.tokens

    @property
    def perplexity(self) -> float:
        return math.exp(self.mean_nll) if self.mean_nll < 709 else math.inf  # exp overflows float64 above ~709

    @property
    def bits_per_byte(self) -> float | None:
        return None if not self.bytes else self.nll / math.log(2) / self.bytes


def read_tokens(data: str | Path, tokenizer) -> tuple[np.ndarray, int]:
    """(token stream int32, UTF-8 byte count): each file's tokens followed by EOS when the tokenizer has one."""
    parts, nbytes = [], 0
    eos = tokenizer.eos_token_id
    for f in text_files(data):
        try:
            text = f.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise UsageError(f"{f}: not UTF-8 text ({e})") from None
        if not text:
            continue  # an empty file adds nothing (not even an EOS)
        nbytes += len(text.encode("utf-8"))
        ids = tokenizer.encode(text, add_special_tokens=False)
        parts.append(np.asarray(ids + ([eos] if eos is not None else []), dtype=np.int32))
    if not parts:
        raise UsageError(f"{data} is empty; give a text to score")
    stream = np.concatenate(parts)
    if len(stream) == 0:
        raise UsageError(f"{data} encodes to no tokens")
    return stream, nbytes


def _score(model, inputs: np.ndarray, targets: np.ndarray, chunk_size: int, bar, acc: "PerplexityResult") -> None:
    """Add the NLL of targets [B, T] given inputs [B, T] to `acc`, chunk by chunk (so an interrupted run still
    has every finished chunk): B independent sequences (each from a fresh state), fed `chunk_size` time steps at
    a time through one cache."""
    cache = model.make_cache(inputs.shape[0])
    for s in range(0, inputs.shape[1], chunk_size):
        x = mx.array(inputs[:, s : s + chunk_size])
        y = mx.array(targets[:, s : s + chunk_size])
        logits = model(x, cache=cache)  # float32 [B, L, V]
        nll = mx.logsumexp(logits, axis=-1) - mx.take_along_axis(logits, y[..., None], axis=-1)[..., 0]
        part = nll.sum()
        mx.eval(part, *cache.arrays())
        value = part.item()
        if not math.isfinite(value):  # finite logits give a finite NLL: the sum is the one isfinite check
            raise NumericsError(f"the model produced NaN or Inf logits within tokens {s}..{s + y.shape[1]} of "
                                f"the text; {NUMERICS_FIX}")
        acc.nll += value
        acc.tokens += y.size
        bar.update(y.size)


def _windows(tokens: np.ndarray, bos_id: int | None, span: int):
    """(inputs, targets) of each window of `span` tokens, BOS in front (or the first token as context)."""
    for s in range(0, len(tokens), span):
        w = tokens[s : s + span]
        if bos_id is not None:
            yield np.concatenate([[bos_id], w[:-1]]).astype(np.int32), w
        elif len(w) > 1:  # no BOS to predict the first token from: it is context only
            yield w[:-1], w[1:]


def perplexity(model, tokens: np.ndarray, bos_id: int | None, context: int = 0, chunk_size: int = 2048,
               progress: bool = False) -> PerplexityResult:
    """Score every token of `tokens` (see the module doc for what `context` means).

    Each forward call takes about `chunk_size` tokens: one sequence `chunk_size` steps at a time, or, with a
    context, max(1, chunk_size // context) whole windows side by side (they are independent)."""
    if context < 0 or chunk_size < 1:
        raise UsageError(f"--context must be >= 0 and --chunk-size >= 1 (got {context}, {chunk_size})")
    tokens = np.asarray(tokens, dtype=np.int32)
    windows = list(_windows(tokens, bos_id, context or len(tokens)))
    per_call = max(1, chunk_size // context) if context else 1
    acc = PerplexityResult(0.0, 0)
    with tqdm(total=len(tokens), desc="scoring", unit="tok", unit_scale=True, disable=not progress,
              file=sys.stderr, delay=PROGRESS_DELAY_S, leave=False) as bar:
        i = 0
        try:
            while i < len(windows):
                n = len(windows[i][1])  # windows of one length go together (all but possibly the last)
                group = [w for w in windows[i : i + per_call] if len(w[1]) == n]
                inputs, targets = np.stack([w[0] for w in group]), np.stack([w[1] for w in group])
                _score(model, inputs, targets, chunk_size, bar, acc)
                i += len(group)
        except KeyboardInterrupt as e:  # the caller can still report the chunks scored so far
            e.partial = acc
            raise
    if acc.tokens == 0:
        raise UsageError("nothing to score: the text has one token and the tokenizer no BOS")
    return acc


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-m", "--model", help="checkpoint directory (float or quantized; default: the bundled model)")
    p.add_argument("--data", required=True, help="a text file, or a directory of .txt files (sorted, concatenated)")
    p.add_argument("--context", type=int, default=0,
                   help="reset the state every N tokens (fresh BOS-started windows); 0 = carry it through the "
                        "whole text (default)")
    p.add_argument("--chunk-size", type=int, default=2048,
                   help="tokens per forward call (with --context, whole windows are batched up to it); "
                        "changes memory and speed, not the result")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"],
                   help="compute dtype (default: bfloat16 on GPU, float32 on CPU)")
    p.add_argument("--profile", help="numerics profile: 'parity', 'fast' or a JSON file (docs/profiles.md)")
    p.add_argument("--check-numerics", action="store_true",
                   help="NaN locator: stop at the first block/sub-layer producing NaN or Inf (slow)")
    p.add_argument("--verbose", action="store_true", help="say which path runs")


def run(ns: argparse.Namespace) -> int:
    if ns.context < 0 or ns.chunk_size < 1:
        raise UsageError(f"--context must be >= 0 and --chunk-size >= 1 (got {ns.context}, {ns.chunk_size})")
    text_files(ns.data)  # a missing --data is said before the model loads
    model_path = model_or_default(ns.model, sys.stderr)
    model, tok = load(model_path, dtype=ns.dtype, profile=ns.profile, verbose=ns.verbose,
                      check_numerics=ns.check_numerics)
    if tok is None:
        raise UsageError(f"{model_path} has no tokenizer.json; perplexity needs one to encode the text")
    tokens, nbytes = read_tokens(ns.data, tok)
    mode = f"windows of {ns.context} tokens" if ns.context else "state carried through the whole text"
    try:
        r = perplexity(model, tokens, tok.bos_token_id, ns.context, ns.chunk_size, progress=True)
    except KeyboardInterrupt as e:  # say what was scored before the interrupt (the CLI then exits 130)
        partial = getattr(e, "partial", None)
        if partial is not None and partial.tokens:
            print(f"interrupted: scored {partial.tokens} of {len(tokens)} tokens ({mode})")
            print(f"perplexity so far: {partial.perplexity:.4f}")
        raise
    r.bytes = nbytes
    print(f"scored {r.tokens} tokens ({mode}; {nbytes} bytes)")
    print(f"mean NLL: {r.mean_nll:.5f} nats/token, {r.bits_per_byte:.5f} bits/byte")
    print(f"perplexity: {r.perplexity:.4f}")
    return 0
