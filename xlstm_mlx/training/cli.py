"""`xlstm-mlx train`: the command-line front of ../train.py (also runnable as python -m xlstm_mlx.training.cli)."""

from __future__ import annotations

import argparse
import json
import sys

HELP = "train an xLSTM language model from text files (MLX autodiff through the chunkwise kernel)"


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("train", help=HELP, description=HELP)
    p.add_argument("--data", required=True, help="a .txt file or a directory of .txt files (one document each)")
    p.add_argument("--config", required=True, help="JSON with a \"model\" and a \"train\" section "
                   "(see configs/shakespeare-demo.json)")
    p.add_argument("--tokenizer", required=True, help="directory with tokenizer.json and tokenizer_config.json")
    p.add_argument("--out", required=True, help="output directory: checkpoint (HF xlstm layout), trainer state, "
                   "loss.png; an existing run there is resumed")
    p.add_argument("--eval-data", help="held-out .txt file or directory, evaluated every eval_every steps")
    p.add_argument("--no-resume", action="store_true", help="start from scratch even if OUT holds a run (with --force)")
    p.add_argument("--force", action="store_true",
                   help="overwrite a model or run in OUT (without it, OUT must be new, empty or this command's run)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    g = p.add_argument_group("overrides of the config's \"train\" section")
    for name, typ in (("steps", int), ("batch_size", int), ("seq_len", int), ("lr", float), ("min_lr", float),
                      ("warmup_steps", int), ("weight_decay", float), ("grad_clip", float), ("eval_every", int),
                      ("eval_windows", int), ("save_every", int), ("log_every", int), ("seed", int)):
        g.add_argument("--" + name.replace("_", "-"), dest=name, type=typ)
    g.add_argument("--time-budget", dest="time_budget_s", type=float, metavar="SECONDS",
                   help="fit the number of steps (and the cosine schedule) to this wall-clock time")
    g.add_argument("--dtype", choices=["float32", "bfloat16"], help="compute dtype (master weights stay float32)")
    g.add_argument("--save-dtype", choices=["float32", "bfloat16"], dest="save_dtype")
    g.add_argument("--no-compile", dest="compile", action="store_false", default=None,
                   help="do not mx.compile the training step")
    p.set_defaults(func=run)
    return p


OVERRIDES = ("steps", "batch_size", "seq_len", "lr", "min_lr", "warmup_steps", "weight_decay", "grad_clip",
             "eval_every", "eval_windows", "save_every", "log_every", "seed", "dtype", "save_dtype", "compile", "time_budget_s")


def run(ns: argparse.Namespace) -> int:
    from xlstm_mlx.training.trainer import train

    overrides = {k: getattr(ns, k) for k in OVERRIDES}
    try:
        summary = train(ns.data, ns.config, ns.tokenizer, ns.out, eval_data=ns.eval_data, overrides=overrides,
                        resume=not ns.no_resume, progress=not ns.no_progress, force=ns.force)
    except KeyboardInterrupt:  # the trainer saved the step it reached and said so
        return 130
    from xlstm_mlx.distributed import group as dist

    if dist.rank() == 0:  # data parallel: one summary, from the rank that wrote OUT
        print(json.dumps(summary, indent=2))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="xlstm-mlx")
    register(parser.add_subparsers(dest="command", required=True))
    ns = parser.parse_args(argv)
    return ns.func(ns)


if __name__ == "__main__":
    sys.exit(main())
