"""Held-out loss and perplexity of a trained checkpoint beside a unigram baseline, on the same tokens.

    python scripts/eval_demo.py [--model xlstm_mlx/demo_model] [--heldout data/shakespeare/heldout]
                                [--train data/shakespeare/train] [--seq-len 256] [--json OUT.json]

Two measurements, each over every held-out token:
  windows   non-overlapping windows of seq_len tokens, each with BOS in front (as in training)
  streamed  each held-out work as one sequence, BOS + tokens + EOS, the state carried chunk to chunk
The unigram baseline is the add-one-smoothed token frequency of the training split, scored on the
same targets.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from tokenizers import Tokenizer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from xlstm_mlx import load  # noqa: E402
from xlstm_mlx.training.data import encode_files, text_files  # noqa: E402


def nll_sum(model, inputs: np.ndarray, targets: np.ndarray, cache=None) -> float:
    logits = model(mx.array(inputs), cache=cache)
    return nn.losses.cross_entropy(logits, mx.array(targets), reduction="sum").item()


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(ROOT / "xlstm_mlx" / "demo_model"))
    p.add_argument("--heldout", default=str(ROOT / "data" / "shakespeare" / "heldout"))
    p.add_argument("--train", default=str(ROOT / "data" / "shakespeare" / "train"))
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--json", help="also write the results here")
    a = p.parse_args(argv)

    model, _ = load(a.model, dtype="float32")
    hf = Tokenizer.from_file(str(Path(a.model) / "tokenizer.json"))
    bos, eos = model.args.bos_token_id, model.args.eos_token_id
    V = model.args.vocab_size
    train = encode_files(text_files(a.train), hf, eos)
    counts = np.bincount(train, minlength=V).astype(np.float64) + 1.0
    unigram_logp = np.log(counts / counts.sum())

    # windows
    held = encode_files(text_files(a.heldout), hf, eos)
    T = a.seq_len
    total, n_tok, uni = 0.0, 0, 0.0
    for s in range(0, len(held), T):
        tgt = held[s:s + T]
        inp = np.concatenate([[bos], tgt[:-1]]).astype(np.int32)
        total += nll_sum(model, inp[None], tgt[None].astype(np.int32))
        uni -= unigram_logp[tgt].sum()
        n_tok += len(tgt)
    windows = {"tokens": n_tok, "loss": total / n_tok, "ppl": math.exp(total / n_tok),
               "unigram_loss": uni / n_tok, "unigram_ppl": math.exp(uni / n_tok)}

    # streamed whole works
    total, n_tok, uni = 0.0, 0, 0.0
    for f in text_files(a.heldout):
        ids = hf.encode(f.read_text(encoding="utf-8"), add_special_tokens=False).ids
        seq = np.asarray([bos] + ids + [eos], np.int32)
        cache = model.make_cache(1)
        for s in range(0, len(seq) - 1, 1024):
            inp, tgt = seq[s:s + 1024], seq[s + 1:s + 1025]
            inp = inp[:len(tgt)]
            total += nll_sum(model, inp[None], tgt[None], cache=cache)
            uni -= unigram_logp[tgt].sum()
            n_tok += len(tgt)
    streamed = {"tokens": n_tok, "loss": total / n_tok, "ppl": math.exp(total / n_tok),
                "unigram_loss": uni / n_tok, "unigram_ppl": math.exp(uni / n_tok)}
    model_name = Path(a.model).resolve()
    model_name = model_name.relative_to(ROOT) if model_name.is_relative_to(ROOT) else model_name
    out = {"model": str(model_name), "seq_len": T, "windows": windows, "streamed": streamed}
    print(json.dumps(out, indent=2))
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
