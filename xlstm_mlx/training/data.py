"""Token streams for training: text files -> one token stream -> random windows and held-out windows.

Every document (file) is encoded without special tokens and followed by EOS; the documents are
concatenated into one stream. A training sample is a window of the stream with BOS put in front:
    input  = [BOS] + stream[s : s + T - 1]
    target =         stream[s : s + T]
so every sample starts the way an encoded prompt does (the tokenizer prepends BOS), and the first
target is predicted from BOS alone.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tokenizers import Tokenizer
from xlstm_mlx.errors import MissingFileError, UsageError


def text_files(data: str | Path) -> list[Path]:
    """A .txt file, or every .txt file under a directory (sorted, recursively)."""
    p = Path(data)
    if p.is_file():
        return [p]
    if p.is_dir():
        files = sorted(f for f in p.rglob("*.txt") if f.is_file())
        if files:
            return files
        raise MissingFileError(f"{p} holds no .txt files")
    raise MissingFileError(f"data {p} does not exist (give a .txt file or a directory of them)")


def encode_files(files: list[Path], tokenizer: Tokenizer, eos_id: int) -> np.ndarray:
    """Concatenate the files' tokens, each file followed by EOS. Returns int32 [N]."""
    parts = []
    for f in files:
        ids = tokenizer.encode(f.read_text(encoding="utf-8"), add_special_tokens=False).ids
        parts.append(np.asarray(ids + [eos_id], dtype=np.int32))
    return np.concatenate(parts) if parts else np.zeros((0,), np.int32)


def load_stream(data: str | Path, tokenizer: Tokenizer, eos_id: int) -> np.ndarray:
    """Token stream of a .txt file or a directory of them."""
    return encode_files(text_files(data), tokenizer, eos_id)


class WindowSampler:
    """Random training windows; batch `step` depends only on (seed, step), so resuming repeats nothing."""

    def __init__(self, stream: np.ndarray, seq_len: int, batch_size: int, bos_id: int, seed: int = 0):
        if seq_len < 2:
            raise UsageError(f"seq_len must be at least 2, got {seq_len}")
        if len(stream) < seq_len + 1:
            raise UsageError(f"the training data has {len(stream)} tokens, fewer than seq_len + 1 = {seq_len + 1}")
        self.stream, self.T, self.B, self.bos, self.seed = stream, seq_len, batch_size, bos_id, seed

    def batch(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, step])
        starts = rng.integers(0, len(self.stream) - self.T + 1, size=self.B)
        idx = starts[:, None] + np.arange(self.T)[None, :]
        targets = self.stream[idx]
        inputs = np.concatenate([np.full((self.B, 1), self.bos, np.int32), targets[:, :-1]], axis=1)
        return inputs, targets


def eval_windows(stream: np.ndarray, seq_len: int, bos_id: int, max_windows: int | None = None):
    """Consecutive non-overlapping whole windows of the stream, formatted like training samples.

    Returns (inputs, targets), each int32 [W, seq_len]; a final partial window is left out."""
    n = len(stream) // seq_len
    if max_windows is not None:
        n = min(n, max_windows)
    if n == 0:
        raise UsageError(f"the evaluation data has {len(stream)} tokens, fewer than one window of {seq_len}")
    targets = stream[: n * seq_len].reshape(n, seq_len).astype(np.int32)
    inputs = np.concatenate([np.full((n, 1), bos_id, np.int32), targets[:, :-1]], axis=1)
    return inputs, targets


def unigram_cross_entropy(train: np.ndarray, heldout: np.ndarray, vocab_size: int) -> float:
    """Held-out cross-entropy (nats/token) of add-one-smoothed unigram frequencies of the training stream."""
    counts = np.bincount(train, minlength=vocab_size).astype(np.float64) + 1.0
    logp = np.log(counts / counts.sum())
    return float(-logp[heldout].mean())
