"""Train the byte-level BPE tokenizer of the bundled demo model (Hugging Face `tokenizers`).

    python scripts/train_tokenizer.py --data data/shakespeare/train --vocab-size 4096 --out OUT_DIR

Writes OUT_DIR/tokenizer.json, tokenizer_config.json and special_tokens_map.json (see
xlstm_mlx/training/bpe.py for the special tokens). Only the training split is read: the held-out works
never influence the vocabulary.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from xlstm_mlx.training.bpe import build, save  # noqa: E402
from xlstm_mlx.training.data import text_files  # noqa: E402


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="a .txt file or a directory of them (training split)")
    p.add_argument("--vocab-size", type=int, default=4096)
    p.add_argument("--model-max-length", type=int, default=4096)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    files = text_files(args.data)
    tok = build(files, args.vocab_size)
    save(tok, args.out, args.model_max_length)
    n = sum(len(tok.encode(f.read_text(encoding="utf-8")).ids) for f in files)
    size = sum(f.stat().st_size for f in files)
    print(f"vocab {tok.get_vocab_size()}; {len(files)} files, {size:,} bytes -> {n:,} tokens "
          f"({size / n:.2f} bytes/token); saved to {args.out}")


if __name__ == "__main__":
    main()
