"""Train an xLSTM language model with MLX: gradients by MLX autodiff through our chunkwise kernel.

    xlstm-mlx train --data DIR_OR_FILE --config CONFIG.json --tokenizer TOK_DIR --out OUT [--eval-data ...]

AdamW (decoupled weight decay on matrices only) with linear warm-up and cosine decay, global-norm
gradient clipping, float32 master weights and optimizer state, compute in float32 or bfloat16 (the
recurrent state and gate math stay float32 either way). OUT is always a loadable checkpoint in the
Hugging Face xlstm layout; OUT/trainer/ holds what resuming needs, and a run started again with the
same OUT continues from the last saved step (Ctrl-C saves first). OUT/loss.png is the loss curve.

Under `mlx.launch -n K` the run is data parallel (data_parallel.py): --batch-size is the global batch, each
rank computes its share, the gradients are averaged, and rank 0 alone writes OUT.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten, tree_map
from tokenizers import Tokenizer
from tqdm import tqdm

from xlstm_mlx import atomic
from xlstm_mlx.atomic import check_writable
from xlstm_mlx.distributed import group as dist
from xlstm_mlx.models.xlstm7b.model import Model
from xlstm_mlx.profiles import DTYPES, load_profile
from xlstm_mlx.training.checkpoint import export_model, find_trainer_state, load_trainer_state, save_trainer_state
from xlstm_mlx.training.config import TrainConfig, load_config, model_args
from xlstm_mlx.training.data import WindowSampler, eval_windows, load_stream, unigram_cross_entropy
from xlstm_mlx.training.data_parallel import broadcast_json, broadcast_tree, check_global_batch, local_rows
from xlstm_mlx.training.init import init_weights
from xlstm_mlx.training.plot import plot_losses
from xlstm_mlx.training.schedule import warmup_cosine
from xlstm_mlx.errors import MissingFileError, NumericsError, UsageError


def special_ids(tokenizer_dir: Path, tok: Tokenizer) -> tuple[int, int]:
    """BOS and EOS ids from tokenizer_config.json / special_tokens_map.json."""
    names = {}
    for fname in ("special_tokens_map.json", "tokenizer_config.json"):
        f = tokenizer_dir / fname
        if f.is_file():
            for key in ("bos_token", "eos_token"):
                v = json.loads(f.read_text()).get(key)
                if isinstance(v, dict):
                    v = v.get("content")
                if isinstance(v, str):
                    names[key] = v
    ids = []
    for key in ("bos_token", "eos_token"):
        if key not in names or tok.token_to_id(names[key]) is None:
            raise UsageError(f"{tokenizer_dir}: tokenizer_config.json must name a {key} that is in the vocabulary")
        ids.append(tok.token_to_id(names[key]))
    return ids[0], ids[1]


def fit_steps_to_budget(cfg: TrainConfig, step: int, elapsed: float, sec_per_step: float) -> int:
    """The total step count that ends the run inside cfg.time_budget_s (5% kept for evals and saves)."""
    left = cfg.time_budget_s * 0.95 - elapsed
    return max(step + 1, min(cfg.steps, step + int(left / sec_per_step)))


def build_optimizer(cfg: TrainConfig) -> optim.Optimizer:
    sched = warmup_cosine(cfg.lr, cfg.min_lr, cfg.warmup_steps, cfg.steps)
    kw = dict(learning_rate=sched, betas=[cfg.beta1, cfg.beta2], eps=cfg.adam_eps)
    decayed = optim.AdamW(weight_decay=cfg.weight_decay, **kw)
    plain = optim.AdamW(weight_decay=0.0, **kw)
    # matrices (projections, embeddings, lm_head) decay; norm weights and biases do not
    return optim.MultiOptimizer([decayed, plain], filters=[lambda path, p: p.ndim == 2])


class Trainer:
    def __init__(self, model: Model, cfg: TrainConfig, group=None):
        self.model, self.cfg = model, cfg
        self.group = group  # None or one rank: no communication
        self.optimizer = build_optimizer(cfg)
        cdt = DTYPES[cfg.dtype]
        if cfg.dtype == "float32":
            self.compute = model
        else:  # a bfloat16 twin that receives casts of the float32 master weights in every step
            self.compute = Model(model.args, model.profile)
        self._cdt = cdt
        self.optimizer.init(model.trainable_parameters())
        self.step_fn = None

    def set_total_steps(self, steps: int):
        """Re-aim the cosine schedule at a new last step (recompiles the step function)."""
        self.cfg.steps = steps
        sched = warmup_cosine(self.cfg.lr, self.cfg.min_lr, self.cfg.warmup_steps, steps)
        for o in self.optimizer.optimizers:
            o._schedulers["learning_rate"] = sched
        self.build()

    def build(self):
        """Make the step function; call after any restore (compile captures the state containers)."""
        model, cfg = self.model, self.cfg
        compute, grad_fn = self.compute, nn.value_and_grad(model, self._loss)
        state = [model.state, self.optimizer.state]

        group = self.group if self.group is not None and self.group.size() > 1 else None

        def step(x, y):
            loss, grads = grad_fn(model, compute, x, y)
            if group is not None:  # the mean of the ranks' local-mean gradients = the global-batch gradient
                grads = nn.average_gradients(grads, group=group)
                loss = mx.distributed.all_sum(loss, group=group) / group.size()
            grads, gnorm = optim.clip_grad_norm(grads, cfg.grad_clip)
            self.optimizer.update(model, grads)
            return loss, gnorm

        self.step_fn = mx.compile(step, inputs=state, outputs=state) if cfg.compile else step

    def _loss(self, model, compute, x, y):
        if compute is not model:
            compute.update(tree_map(lambda p: p.astype(self._cdt), model.trainable_parameters()))
        logits = compute(x)
        return nn.losses.cross_entropy(logits, y, reduction="mean")

    def sync_compute(self):
        if self.compute is not self.model:
            self.compute.update(tree_map(lambda p: p.astype(self._cdt), self.model.parameters()))

    def evaluate(self, inputs: np.ndarray, targets: np.ndarray) -> float:
        """Mean cross-entropy (nats/token) over the given windows."""
        self.sync_compute()
        total, count, B = 0.0, 0, self.cfg.batch_size
        for s in range(0, len(inputs), B):
            x, y = mx.array(inputs[s:s + B]), mx.array(targets[s:s + B])
            loss = nn.losses.cross_entropy(self.compute(x), y, reduction="sum")
            total += loss.item()
            count += y.size
        return total / count


def check_out_dir(out: Path, resume: bool, force: bool) -> None:
    """OUT may be new, empty, or this command's own run (resumed); a model or run there is never overwritten
    without `force`; a file is refused. Checked before any data is read or step taken."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; give a directory for the checkpoint")
    has_run = find_trainer_state(out) is not None if out.is_dir() else False
    has_model = out.is_dir() and ((out / "config.json").exists() or any(out.glob("*.safetensors")))
    if has_run and not resume and not force:
        raise UsageError(f"--out {out} holds a training run; --no-resume would overwrite it: pass --force as well, "
                         "or train into another --out")
    if has_model and not has_run and not force:
        raise UsageError(f"--out {out} already holds a model that is not a training run of `xlstm-mlx train`; "
                         "choose another --out, or pass --force to overwrite it")
    check_writable(out / "config.json", "--out")


def train(data: str | Path, config: str | Path, tokenizer: str | Path, out: str | Path,
          eval_data: str | Path | None = None, overrides: dict | None = None, resume: bool = True,
          progress: bool = True, force: bool = False) -> dict:
    """Run (or continue) a training run; returns a summary dict (also written to OUT/train_summary.json).

    OUT is refused when it is a file, or holds a model or run this call would overwrite, unless `force`."""
    out, tokenizer = Path(out).expanduser(), Path(tokenizer)
    check_out_dir(out, resume, force)
    if not (tokenizer / "tokenizer.json").is_file():
        raise MissingFileError(f"{tokenizer} has no tokenizer.json (train one with scripts/train_tokenizer.py)")
    model_cfg, cfg = load_config(config, overrides)
    group = dist.world()
    rank, world_size = group.rank(), group.size()
    check_global_batch(cfg.batch_size, world_size)
    lead = rank == 0  # the one rank that reads a run to resume and writes OUT
    tok = Tokenizer.from_file(str(tokenizer / "tokenizer.json"))
    bos, eos = special_ids(tokenizer, tok)
    args = model_args(model_cfg, tok.get_vocab_size(), cfg.dtype)
    args.bos_token_id, args.eos_token_id = bos, eos

    stream = load_stream(data, tok, eos)
    sampler = WindowSampler(stream, cfg.seq_len, cfg.batch_size, bos, cfg.seed)
    held = load_stream(eval_data, tok, eos) if eval_data is not None else None
    ev = eval_windows(held, cfg.seq_len, bos, cfg.eval_windows) if held is not None else None

    profile = load_profile("parity").replace(name="train", compute_dtype=cfg.dtype, kernel_dtype=cfg.dtype,
                                            chunk_size=args.chunk_size)
    model = init_weights(Model(args, profile), cfg.seed)
    trainer = Trainer(model, cfg, group)
    n_params = sum(v.size for _, v in tree_flatten(model.parameters()))

    state = {"step": 0, "history": [], "evals": [], "best": None, "config": json.loads(Path(config).read_text()),
             "train": cfg.__dict__, "elapsed_s": 0.0}
    found = find_trainer_state(out) if resume and lead else None
    if world_size > 1:  # rank 0 decides; the others take its weights, optimizer state and history
        found = broadcast_json(str(found) if found is not None else None, group)
    if found is not None:
        saved = load_trainer_state(Path(found), model, trainer.optimizer) if lead else None
        if world_size > 1:
            saved = broadcast_json(saved, group)
        if saved["config"]["model"] != state["config"]["model"]:
            raise UsageError(f"{out} holds a run with a different model config; use another --out or --no-resume")
        state.update({k: saved[k] for k in ("step", "history", "evals", "best", "elapsed_s")})
        if (saved["train"].get("time_budget_s") and saved["step"] < saved["train"]["steps"] != cfg.steps):
            # the interrupted run had fitted its length to a time budget: finish that schedule
            cfg.steps, cfg.time_budget_s = saved["train"]["steps"], None
            trainer.set_total_steps(cfg.steps)
        if lead and saved["step"] >= cfg.steps:
            print(f"[xlstm-mlx train] {out} already finished {saved['step']} steps; raise --steps to go on")
        elif lead:
            print(f"[xlstm-mlx train] resuming {out} at step {state['step']}/{cfg.steps}"
                  + (f" (saved under {saved.get('world_size', 1)} rank(s), now {world_size})" if world_size > 1
                     or saved.get("world_size", 1) > 1 else ""))
    if world_size > 1:  # one set of starting weights everywhere, whatever each rank drew or read
        model.update(broadcast_tree(model.parameters(), group))
        trainer.optimizer.state = broadcast_tree(trainer.optimizer.state, group)
        mx.eval(model.parameters(), trainer.optimizer.state)
    state["world_size"] = world_size
    trainer.build()
    extra = {"training": {"data": str(data), "steps": cfg.steps, "seq_len": cfg.seq_len,
                          "batch_size": cfg.batch_size, "compute_dtype": cfg.dtype}}

    def save(reason: str):
        mx.eval(model.parameters())
        if not lead:
            return
        export_model(model, out, cfg.save_dtype, tokenizer, {**extra, "training_step": state["step"]})
        save_trainer_state(out, model, trainer.optimizer, state)
        plot_losses(state["history"], state["evals"], out / "loss.png",
                    f"xLSTM {n_params / 1e6:.2f}M params, {reason}")

    def run_eval():
        loss = trainer.evaluate(*ev)
        state["evals"].append({"step": state["step"], "loss": loss, "ppl": math.exp(loss)})
        if state["best"] is None or loss < state["best"]["loss"]:
            state["best"] = {"step": state["step"], "loss": loss, "ppl": math.exp(loss)}
            export_model(model, out / "best", cfg.save_dtype, tokenizer, {**extra, "training_step": state["step"]})
        return loss

    if lead:
        print(f"[xlstm-mlx train] {n_params:,} parameters; {len(stream):,} training tokens"
              + (f", {ev[1].size:,} held-out tokens" if ev is not None else "")
              + f"; backend {mx.default_device()}; compute {cfg.dtype}; {cfg.steps} steps of "
              f"{cfg.batch_size}x{cfg.seq_len} tokens"
              + (f"; data parallel over {world_size} ranks ({cfg.batch_size // world_size} rows each, gradients "
                 "averaged)" if world_size > 1 else ""))
    start_step = state["step"]
    bar = tqdm(total=cfg.steps, initial=state["step"], disable=not (progress and lead), unit="step",
               dynamic_ncols=True)
    t_last, tokens_since, acc = time.perf_counter(), 0, []
    t_run, budget_probe = time.perf_counter(), None
    try:
        while state["step"] < cfg.steps:
            if cfg.time_budget_s is not None and state["step"] == start_step + 10:
                mx.eval(model.parameters())
                budget_probe = (state["step"], time.perf_counter())  # compile and warm-up are behind us
            if budget_probe is not None and state["step"] == budget_probe[0] + 40:
                mx.eval(model.parameters())
                now = time.perf_counter()
                rate = (now - budget_probe[1]) / 40
                total = fit_steps_to_budget(cfg, state["step"], now - t_run, rate)
                total = dist.broadcast_int(total, group)  # rank 0's clock decides for every rank
                if total != cfg.steps:
                    if lead:
                        bar.write(f"[xlstm-mlx train] {rate * 1e3:.1f} ms/step: {total} steps fit the "
                                  f"{cfg.time_budget_s:.0f} s budget (config said {cfg.steps}); schedule re-aimed")
                    trainer.set_total_steps(total)
                    bar.total = total
                budget_probe = None
            x, y = sampler.batch(state["step"])  # the global batch; this rank keeps its share
            if world_size > 1:
                x, y = local_rows(x, rank, world_size), local_rows(y, rank, world_size)
            loss, gnorm = trainer.step_fn(mx.array(x), mx.array(y))
            acc.append((loss, gnorm))
            state["step"] += 1
            tokens_since += x.size * world_size
            bar.update(1)
            s = state["step"]
            if s % cfg.log_every == 0 or s == cfg.steps:
                mx.eval(acc)
                now = time.perf_counter()
                dt = now - t_last
                state["elapsed_s"] += dt
                losses = [a[0].item() for a in acc]
                rec = {"step": s, "loss": float(np.mean(losses)), "grad_norm": float(acc[-1][1].item()),
                       "lr": float(trainer.optimizer.optimizers[0].learning_rate.item()),
                       "tok_per_s": tokens_since / dt}
                if not all(math.isfinite(v) for v in losses):
                    raise NumericsError(f"non-finite training loss at step {s}; lower --lr or use --dtype float32 "
                                        "(the last saved step is kept in --out)")
                state["history"].append(rec)
                bar.set_postfix(loss=f"{rec['loss']:.3f}", lr=f"{rec['lr']:.2e}", tok_s=f"{rec['tok_per_s']:.0f}")
                t_last, tokens_since, acc = now, 0, []
            if lead and ev is not None and (s % cfg.eval_every == 0 or s == cfg.steps):
                t0 = time.perf_counter()
                loss_ev = run_eval()
                bar.write(f"step {s}: held-out loss {loss_ev:.4f} (ppl {math.exp(loss_ev):.2f})")
                t_last += time.perf_counter() - t0
            if s % cfg.save_every == 0 and s < cfg.steps:
                t0 = time.perf_counter()
                save(f"step {s}")
                t_last += time.perf_counter() - t0
    except KeyboardInterrupt:
        bar.close()
        save(f"interrupted at step {state['step']}")
        if lead:
            print(f"[xlstm-mlx train] interrupted: saved step {state['step']} to {out}; run the same command to resume")
        raise
    bar.close()
    save(f"step {state['step']}")
    summary = {"params": n_params, "steps": state["step"], "train_tokens": len(stream),
               "final_train_loss": state["history"][-1]["loss"] if state["history"] else None,
               "best": state["best"], "elapsed_s": state["elapsed_s"], "world_size": world_size,
               "global_batch_size": cfg.batch_size}
    if held is not None:
        uni = unigram_cross_entropy(stream, ev[1].reshape(-1), args.vocab_size)
        summary["unigram_heldout"] = {"loss": uni, "ppl": math.exp(uni)}
    if lead:
        atomic.write_text(out / "train_summary.json", json.dumps(summary, indent=2) + "\n")
    return summary
