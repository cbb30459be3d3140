"""Command line: `xlstm-mlx <command> ...` (mlx-lm conventions)."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from xlstm_mlx import platform
from xlstm_mlx.errors import UsageError, XLSTMError



def default_model_dir() -> tuple[Path, str]:
    """The model used when --model is not given, with a label saying what it is."""
    from xlstm_mlx.checkpoints.demo import DEMO_LABEL, demo_model_dir

    if demo_model_dir() is not None:
        return demo_model_dir(), DEMO_LABEL
    d = Path(tempfile.gettempdir()) / "xlstm-mlx-random-tiny"
    if not (d / "model.safetensors").exists():
        from xlstm_mlx.checkpoints.random import make_random_checkpoint

        make_random_checkpoint(d, "tiny", seed=0)
    return d, "NOTE: no --model given; using a tiny RANDOM-WEIGHT model created on the fly (its output is noise)"


def _load_model(args):
    from xlstm_mlx.checkpoints.load import load

    model_path = args.model
    if model_path is None:
        model_path, label = default_model_dir()
        print(label, file=sys.stderr)
    model, tok = load(model_path, dtype=args.dtype, profile=args.profile, verbose=args.verbose,
                      check_numerics=args.check_numerics)
    if tok is None:
        raise UsageError(f"{model_path} has no tokenizer.json; this command needs one to encode text")
    return model, tok


def _sampling(args) -> dict:
    """The sampling options as stream_generate takes them, validated now (bad values exit before loading)."""
    from xlstm_mlx.generation.generate import make_sampling

    opts = dict(temp=args.temp, top_k=args.top_k, top_p=args.top_p, min_p=args.min_p, seed=args.seed,
                repetition_penalty=args.repetition_penalty, repetition_context_size=args.repetition_context_size)
    make_sampling(**opts)
    return opts


def _read_prompt(args, optional: bool) -> str:
    if args.prompt is not None:
        return args.prompt
    if not sys.stdin.isatty():
        return sys.stdin.read()
    if optional:
        return ""
    raise UsageError("give the prompt with --prompt or pipe it on stdin")


def _generate_command(args) -> int:
    from xlstm_mlx.generation.generate import format_stats, stream_generate
    from xlstm_mlx.generation.snapshot import load_snapshot, save_snapshot

    sampling = _sampling(args)
    if args.max_tokens < 0:
        raise UsageError(f"--max-tokens must be >= 0, got {args.max_tokens}")
    model, tok = _load_model(args)
    prompt = _read_prompt(args, optional=args.load_state is not None)
    if args.load_state:
        snap = load_snapshot(args.load_state, model)
        cache, prior = snap.cache, snap.tokens
        ids = snap.pending + tok.encode(prompt, add_special_tokens=False)
        if not ids:
            raise UsageError(f"{args.load_state} has no pending token; give a --prompt to continue from it")
    else:
        cache, prior = model.make_cache(1), []
        if args.chat_template:
            text = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True)
            ids = tok.encode(text, add_special_tokens=False)
        else:
            ids = tok.encode(prompt)
        if not ids:
            raise UsageError("the prompt encodes to no tokens; give a non-empty --prompt")

    def save(c):
        save_snapshot(args.save_state, model, c, prior + ids[:-1], ids[-1:])
        print(f"[xlstm-mlx] saved the state after {len(prior) + len(ids)} prompt tokens to {args.save_state}",
              file=sys.stderr)

    last = None
    for last in stream_generate(model, tok, ids, args.max_tokens, cache=cache, stop=args.stop,
                                prefill_step_size=args.prefill_step_size,
                                on_prefill=save if args.save_state else None, **sampling):
        sys.stdout.write(last.text)
        sys.stdout.flush()
    sys.stdout.write("\n")
    if args.verbose and last is not None:
        print(format_stats(last), file=sys.stderr)
    return 0


def _chat_command(args) -> int:
    from xlstm_mlx.generation.chat import ChatSession, run_chat

    sampling = _sampling(args)
    model, tok = _load_model(args)
    session = ChatSession(model, tok, system=args.system, max_tokens=args.max_tokens, stop=args.stop,
                          prefill_step_size=args.prefill_step_size, **sampling)
    if args.load_state:
        session.load(args.load_state)
    return run_chat(session, sys.stdin, sys.stdout, sys.stderr, interactive=sys.stdin.isatty(), verbose=args.verbose)


def _info_command(args) -> int:
    from xlstm_mlx.tools.info import describe_checkpoint

    model_path = args.model
    if model_path is None:
        model_path, label = default_model_dir()
        print(label, file=sys.stderr)
    print(describe_checkpoint(model_path))
    return 0


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="checkpoint directory or Hugging Face repo id")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"],
                   help="compute dtype (default: bfloat16 on GPU, float32 on CPU)")
    p.add_argument("--profile", help="numerics profile: 'parity', 'fast', 'exact' (float64, CPU only) or a JSON "
                   "file (docs/profiles.md)")
    p.add_argument("--check-numerics", action="store_true",
                   help="NaN locator: stop at the first block/sub-layer producing NaN or Inf (slow)")
    p.add_argument("--verbose", action="store_true",
                   help="say which backend, dtypes and kernels run; print speed and memory statistics")


def _add_sampling_args(p: argparse.ArgumentParser, max_tokens: int) -> None:
    p.add_argument("--max-tokens", type=int, default=max_tokens, help=f"tokens to generate (default {max_tokens})")
    p.add_argument("--temp", type=float, default=0.0, help="sampling temperature; 0 = greedy (default)")
    p.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens; 0 = off")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass in (0, 1]; 1 = off")
    p.add_argument("--min-p", type=float, default=0.0, help="drop tokens below min_p x the top probability; 0 = off")
    p.add_argument("--repetition-penalty", type=float, help="penalize recent tokens (> 1 discourages repeats)")
    p.add_argument("--repetition-context-size", type=int, default=20, help="tokens the penalty looks back over")
    p.add_argument("--seed", type=int, help="seed for reproducible sampling")
    p.add_argument("--stop", action="append", help="stop string (not printed); repeat for several")
    p.add_argument("--prefill-step-size", type=int, default=2048, help="prompt tokens per prefill chunk")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="xlstm-mlx", description="Run xLSTM language models with MLX")
    sub = p.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="generate text from a prompt")
    _add_model_args(g)
    g.add_argument("--prompt", help="prompt text (default: read stdin)")
    _add_sampling_args(g, max_tokens=100)
    g.add_argument("--chat-template", action="store_true", help="wrap the prompt as a user turn in the chat template")
    g.add_argument("--save-state", metavar="FILE", help="save the state after the prompt (safetensors) to resume later")
    g.add_argument("--load-state", metavar="FILE",
                   help="resume from a saved state; the prompt (may be empty) continues it")
    g.set_defaults(func=_generate_command)
    from xlstm_mlx.tools import bench

    b = sub.add_parser("bench", help="prefill/decode throughput, time to first token, peak memory vs hardware floors")
    bench.add_arguments(b)
    b.set_defaults(func=bench.main)

    c = sub.add_parser("chat", help="interactive multi-turn chat on the carried state (/reset, /save, /load)")
    _add_model_args(c)
    _add_sampling_args(c, max_tokens=512)
    c.add_argument("--system", help="system prompt")
    c.add_argument("--load-state", metavar="FILE", help="start from a saved chat or prompt state")
    c.set_defaults(func=_chat_command)

    i = sub.add_parser("info", help="describe a checkpoint: blocks, dims, heads, parameters, dtypes, state size")
    i.add_argument("--model", help="checkpoint directory or Hugging Face repo id")
    i.set_defaults(func=_info_command)
    from xlstm_mlx.checkpoints import convert_official

    c = sub.add_parser("convert-official", help="convert an official xlstm xLSTMLMModel (state_dict + config)")
    convert_official.add_arguments(c)
    c.set_defaults(func=convert_official.run)
    from xlstm_mlx.checkpoints import convert
    from xlstm_mlx.tools import perplexity

    c = sub.add_parser("convert", help="convert a checkpoint to a self-contained directory, optionally quantized")
    convert.add_arguments(c)
    c.set_defaults(func=convert.run)
    c = sub.add_parser("perplexity", help="perplexity of a text file, streamed through the recurrent state")
    perplexity.add_arguments(c)
    c.set_defaults(func=perplexity.run)
    from xlstm_mlx.tools import drift

    c = sub.add_parser("drift", help="precision drift along a long text: float32 and bfloat16 against float64")
    drift.add_arguments(c)
    c.set_defaults(func=drift.run)
    from xlstm_mlx.training import cli as train_cli

    train_cli.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """The one error path: a project error (errors.py) prints one clean line and exits 2; anything else is a
    bug and keeps its traceback."""
    args = build_parser().parse_args(argv)
    try:
        platform.setup()
        return args.func(args)
    except XLSTMError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
