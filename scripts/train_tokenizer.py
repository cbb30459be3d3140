"""Train the byte-level BPE tokenizer of the bundled demo model (Hugging Face `tokenizers`).

    python scripts/train_tokenizer.py --data data/shakespeare/train --vocab-size 4096 --out OUT_DIR

Writes OUT_DIR/tokenizer.json, tokenizer_config.json and special_tokens_map.json. Special tokens take the
first ids, matching the defaults of transformers' xLSTMConfig: <|bos|>=0, <|pad|>=1, <|eos|>=2. Encoding
prepends <|bos|> (the post-processor does it), so any encoded prompt starts the way training samples do.
Only the training split is read: the held-out works never influence the vocabulary.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

BOS, PAD, EOS = "<|bos|>", "<|pad|>", "<|eos|>"
SPECIALS = [BOS, PAD, EOS]


def text_files(data: Path) -> list[Path]:
    files = sorted(data.rglob("*.txt")) if data.is_dir() else [data]
    if not files:
        raise SystemExit(f"no .txt files under {data}")
    return files


def build(files: list[Path], vocab_size: int) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train([str(f) for f in files], trainer)
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]),
    ])
    for i, s in enumerate(SPECIALS):
        assert tok.token_to_id(s) == i, (s, tok.token_to_id(s))
    return tok


def save(tok: Tokenizer, out: Path, model_max_length: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    special = {"bos_token": BOS, "eos_token": EOS, "pad_token": PAD}
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **special,
        "add_bos_token": True,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": model_max_length,
        "padding_side": "left",
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")


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
