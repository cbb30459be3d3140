"""Command line: `xlstm-mlx <command> ...` (mlx-lm conventions)."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import mlx.core as mx


def default_model_dir() -> tuple[Path, str]:
    """The model used when --model is not given, with a label saying what it is."""
    d = Path(tempfile.gettempdir()) / "xlstm-mlx-random-tiny"
    if not (d / "model.safetensors").exists():
        from .random_checkpoint import make_random_checkpoint

        make_random_checkpoint(d, "tiny", seed=0)
    return d, "NOTE: no --model given; using a tiny RANDOM-WEIGHT model created on the fly (its output is noise)"


def _generate_command(args) -> int:
    from .loading import load

    model_path = args.model
    if model_path is None:
        model_path, label = default_model_dir()
        print(label, file=sys.stderr)
    model, tok = load(model_path, dtype=args.dtype, verbose=args.verbose)
    if tok is None:
        raise SystemExit(f"error: {model_path} has no tokenizer.json; this command needs one to encode the prompt")
    if args.temp < 0:
        raise SystemExit(f"error: --temp must be >= 0, got {args.temp}")
    if args.max_tokens < 0:
        raise SystemExit(f"error: --max-tokens must be >= 0, got {args.max_tokens}")
    prompt = args.prompt if args.prompt is not None else sys.stdin.read()
    ids = tok.encode(prompt)
    if not ids:
        raise SystemExit("error: the prompt encodes to no tokens; give a non-empty --prompt")
    if args.seed is not None:
        mx.random.seed(args.seed)
    cache = model.make_cache(1)
    logits = model(mx.array([ids]), cache=cache)[:, -1]
    detok = tok.detokenizer()
    eos = set(tok.eos_token_ids)
    for _ in range(args.max_tokens):
        token = mx.argmax(logits, -1) if args.temp == 0 else mx.random.categorical(logits / args.temp)
        t = token.item()
        if t in eos:
            break
        sys.stdout.write(detok.add_token(t))
        sys.stdout.flush()
        logits = model(token.reshape(1, 1), cache=cache)[:, -1]
    sys.stdout.write(detok.finalize() + "\n")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="xlstm-mlx", description="Run xLSTM language models with MLX")
    sub = p.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="generate text from a prompt")
    g.add_argument("--model", help="checkpoint directory or Hugging Face repo id")
    g.add_argument("--prompt", help="prompt text (default: read stdin)")
    g.add_argument("--max-tokens", type=int, default=100)
    g.add_argument("--temp", type=float, default=0.0, help="sampling temperature; 0 = greedy")
    g.add_argument("--seed", type=int)
    g.add_argument("--dtype", choices=["float32", "bfloat16", "float16"],
                   help="compute dtype (default: bfloat16 on GPU, float32 on CPU)")
    g.add_argument("--verbose", action="store_true", help="say which backend, dtypes and kernels run")
    g.set_defaults(func=_generate_command)
    from . import convert_official

    c = sub.add_parser("convert-official", help="convert an official xlstm xLSTMLMModel (state_dict + config)")
    convert_official.add_arguments(c)
    c.set_defaults(func=convert_official.run)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .config import CheckpointError

    try:
        return args.func(args)
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
