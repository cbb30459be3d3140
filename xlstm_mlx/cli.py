"""Command line: `xlstm-mlx <command> ...` (mlx-lm conventions)."""

from __future__ import annotations

import argparse
import errno
import os
import sys
import warnings
from pathlib import Path

from xlstm_mlx import platform
from xlstm_mlx.checkpoints.demo import DEMO_REPETITION_PENALTY, default_model_dir, demo_model_dir  # noqa: F401
from xlstm_mlx.errors import MissingFileError, UsageError, XLSTMError
from xlstm_mlx.textinput import clean_text, decode_bytes


def _load_model(args):
    from xlstm_mlx.checkpoints.load import load

    model_path = args.model
    if model_path is None:
        model_path, label = default_model_dir()
        print(label, file=sys.stderr)
        if (model_path == demo_model_dir() and getattr(args, "repetition_penalty", 0) is None
                and getattr(args, "temp", None) == 0):
            # the bundled model's greedy default (checkpoints/demo.py); sampled runs stay as given
            args.repetition_penalty = DEMO_REPETITION_PENALTY
            print(f"NOTE: greedy with --repetition-penalty {DEMO_REPETITION_PENALTY} (the bundled model's default; "
                  "--repetition-penalty 1 turns it off)", file=sys.stderr)
    if getattr(args, "tensor_parallel", False):  # under mlx.launch: this rank's share of every block
        from xlstm_mlx.distributed import rank_io
        from xlstm_mlx.distributed.tensor_parallel import load_sharded

        model, tok = load_sharded(model_path, dtype=args.dtype, profile=args.profile, verbose=args.verbose,
                                  check_numerics=args.check_numerics)
        rank_io.setup(args)
    else:
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


def _read_stdin() -> str:
    """All of stdin as text; invalid UTF-8 replaced (with a warning), whatever the locale says."""
    buffer = getattr(sys.stdin, "buffer", None)
    if buffer is not None:
        return decode_bytes(buffer.read(), "stdin")
    return clean_text(sys.stdin.read(), "stdin")


def _read_prompt(args, optional: bool) -> str:
    if args.prompt is not None and args.prompt_file is not None:
        raise UsageError("give the prompt with --prompt or --prompt-file, not both")
    if args.prompt_file is not None:
        path = Path(args.prompt_file).expanduser()
        if not path.is_file():
            raise MissingFileError(f"--prompt-file {path} " + ("is a directory" if path.is_dir() else "does not exist"))
        try:
            return decode_bytes(path.read_bytes(), f"--prompt-file {path}")
        except OSError as e:
            raise UsageError(f"--prompt-file {path} cannot be read ({e.strerror})") from None
    if args.prompt == "-":
        return _read_stdin()
    if args.prompt is not None:
        return clean_text(args.prompt, "--prompt")
    if sys.stdin is not None and not sys.stdin.isatty():
        return _read_stdin()
    if optional:
        return ""
    raise UsageError("give the prompt with --prompt TEXT, --prompt-file FILE, or pipe it on stdin (--prompt -)")


def _check_state_paths(args) -> None:
    """--load-state must be a file and --save-state writable: found before the model loads and the prompt runs."""
    from xlstm_mlx.atomic import check_writable

    if getattr(args, "load_state", None):
        p = Path(args.load_state).expanduser()
        if p.is_dir():
            raise UsageError(f"--load-state {p} is a directory; give the snapshot file (.safetensors)")
        if not p.is_file():
            raise MissingFileError(f"--load-state {p} does not exist")
    if getattr(args, "save_state", None):
        check_writable(args.save_state, "--save-state")


def _generate_command(args) -> int:
    from xlstm_mlx.generation.generate import format_stats, stream_generate, warm_up_decode
    from xlstm_mlx.generation.snapshot import load_snapshot, save_snapshot

    if args.max_tokens < 0:
        raise UsageError(f"--max-tokens must be >= 0, got {args.max_tokens}")
    _sampling(args)  # bad values exit before anything loads
    _check_state_paths(args)
    prompt = _read_prompt(args, optional=args.load_state is not None)
    model, tok = _load_model(args)
    sampling = _sampling(args)  # again: the bundled model brings its own default
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

    if args.verbose and args.max_tokens > 0:
        warm_up_decode(model, 1)  # the one-time compile stays out of the prompt speed
    last = None
    try:
        for last in stream_generate(model, tok, ids, args.max_tokens, cache=cache, stop=args.stop,
                                    prefill_step_size=args.prefill_step_size, progress=True,
                                    on_prefill=save if args.save_state else None, **sampling):
            sys.stdout.write(last.text)
            sys.stdout.flush()
    finally:  # also when interrupted: the text so far ends its line
        if last is not None:
            sys.stdout.write("\n")
            sys.stdout.flush()
    if last is None:
        sys.stdout.write("\n")
    if args.verbose and last is not None:
        print(format_stats(last), file=sys.stderr)
    return 0


def _chat_command(args) -> int:
    from xlstm_mlx.generation.chat import ChatSession, run_chat

    if args.system is not None and args.system_prompt is not None:
        raise UsageError("give --system or --system-prompt, not both (they are the same option)")
    _sampling(args)
    _check_state_paths(args)
    model, tok = _load_model(args)
    sampling = _sampling(args)
    session = ChatSession(model, tok, system=clean_text(args.system or args.system_prompt or "", "--system") or None,
                          max_tokens=args.max_tokens, stop=args.stop, prefill_step_size=args.prefill_step_size,
                          progress=True, **sampling)
    if args.load_state:
        session.load(args.load_state)
    interactive = sys.stdin is not None and sys.stdin.isatty()
    if interactive:
        try:
            import readline  # noqa: F401  line editing and history for input(), where the platform has it
        except ImportError:
            pass
    return run_chat(session, sys.stdin, sys.stdout, sys.stderr, interactive=interactive, verbose=args.verbose)


def _info_command(args) -> int:
    from xlstm_mlx.tools.info import describe_checkpoint

    model_path = args.model
    if model_path is None:
        model_path, label = default_model_dir()
        print(label, file=sys.stderr)
    print(describe_checkpoint(model_path))
    return 0


def _serve_command(args) -> int:
    from xlstm_mlx.generation.server import cli as serve_cli

    model_path = args.model
    if model_path is None:
        model_path, label = default_model_dir()
        print(label, file=sys.stderr)
    return serve_cli.run(args, model_path)


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-m", "--model", help="checkpoint directory or Hugging Face repo id (default: the bundled model)")
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
    p.add_argument("--repetition-penalty", type=float,
                   help="penalize recent tokens (> 1 discourages repeats; default off; 1.2 for greedy runs of the "
                        "bundled model)")
    p.add_argument("--repetition-context-size", type=int, default=20, help="tokens the penalty looks back over")
    p.add_argument("--seed", type=int, help="seed for reproducible sampling")
    p.add_argument("--stop", action="append", help="stop string (not printed); repeat for several")
    p.add_argument("--prefill-step-size", type=int, default=2048, help="prompt tokens per prefill chunk")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("xlstm-mlx")
    except PackageNotFoundError:
        return "unknown (not installed)"
def _add_tensor_parallel_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tensor-parallel", action="store_true",
                   help="under mlx.launch: split the model's heads and FFN across the ranks (docs/distributed.md)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="xlstm-mlx", description="Run xLSTM language models with MLX")
    p.add_argument("--version", action="version", version=f"xlstm-mlx {_version()}")
    sub = p.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="generate text from a prompt")
    _add_model_args(g)
    g.add_argument("-p", "--prompt", help="prompt text; '-' reads stdin (default: stdin when it is not a terminal)")
    g.add_argument("--prompt-file", metavar="FILE", help="read the prompt from a file (any length)")
    _add_sampling_args(g, max_tokens=100)
    g.add_argument("--chat-template", action="store_true", help="wrap the prompt as a user turn in the chat template")
    g.add_argument("--save-state", metavar="FILE", help="save the state after the prompt (safetensors) to resume later")
    g.add_argument("--load-state", metavar="FILE",
                   help="resume from a saved state; the prompt (may be empty) continues it")
    _add_tensor_parallel_arg(g)
    g.set_defaults(func=_generate_command)
    from xlstm_mlx.tools import bench

    b = sub.add_parser("bench", help="prefill/decode throughput, time to first token, peak memory vs hardware floors")
    bench.add_arguments(b)
    b.set_defaults(func=bench.main)

    c = sub.add_parser("chat", help="interactive multi-turn chat on the carried state (/reset, /save, /load)")
    _add_model_args(c)
    _add_sampling_args(c, max_tokens=512)
    c.add_argument("--system", help="system prompt")
    c.add_argument("--system-prompt", help="the same as --system (mlx-lm's name)")
    c.add_argument("--load-state", metavar="FILE", help="start from a saved chat or prompt state")
    _add_tensor_parallel_arg(c)
    c.set_defaults(func=_chat_command)

    from xlstm_mlx.generation import batch

    bt = sub.add_parser("batch", help="generate or score every row of a JSONL file (resumable; rows sharded "
                        "over ranks under mlx.launch)")
    _add_model_args(bt)
    _add_sampling_args(bt, max_tokens=256)
    batch.add_arguments(bt)
    _add_tensor_parallel_arg(bt)
    bt.set_defaults(func=batch.run)

    from xlstm_mlx.generation.server import cli as serve_cli

    s = sub.add_parser("serve", help="OpenAI-compatible HTTP server with continuous batching (docs/server.md)")
    _add_model_args(s)
    serve_cli.add_arguments(s)
    s.set_defaults(func=_serve_command)

    i = sub.add_parser("info", help="describe a checkpoint: blocks, dims, heads, parameters, dtypes, state size")
    i.add_argument("-m", "--model", help="checkpoint directory or Hugging Face repo id (default: the bundled model)")
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


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's final flush cannot fail again (a closed pipe)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, AttributeError, ValueError):
        pass


def main(argv: list[str] | None = None) -> int:
    """The one error path: a project error (errors.py) prints one clean line and exits 2; anything else is a
    bug and keeps its traceback. Ctrl-C exits 130 (what was printed stays printed), a closed pipe (`| head`)
    ends quietly with 141 (128 + SIGPIPE, as the shell reports it), a full disk gets a message."""
    if sys.stdout is None:  # started with stdout closed (`>&-`)
        print("error: stdout is closed; redirect it to a file or /dev/null", file=sys.stderr)
        return 2
    # library warnings (an unknown config key, invalid UTF-8) read as one line each, not as source locations
    warnings.formatwarning = lambda message, category, filename, lineno, line=None: f"warning: {message}\n"
    if hasattr(sys.stdin, "reconfigure"):
        sys.stdin.reconfigure(errors="surrogateescape")  # invalid UTF-8 reaches textinput.clean_text, not a crash
    try:
        args = build_parser().parse_args(argv)
        platform.setup()
        rc = args.func(args)
        sys.stdout.flush()
        return rc
    except XLSTMError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        try:
            sys.stdout.flush()
        except OSError:
            _silence_stdout()
        print("[xlstm-mlx] interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        _silence_stdout()
        return 141
    except OSError as e:
        if e.errno not in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
            raise
        _silence_stdout()
        where = f" writing {e.filename}" if e.filename else " writing the output"
        print(f"error: no space left on the device{where}; free some space or write elsewhere", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
