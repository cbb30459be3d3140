"""CPU comparison in one run: `xlstm-mlx bench` against transformers' xLSTMForCausalLM (its own native
torch kernels, the official `xlstm` package hidden) on the same random-weight checkpoint, same
prefill grid, same decode batches, float32. The two alternate (A B A B ...) and each figure is the best
of all its rounds, so a passing load on the machine hurts both sides alike.

    python benchmarks/cpu_vs_transformers.py --shape 64m --out benchmarks/results/cpu_64m
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

_TRANSFORMERS = textwrap.dedent(
    """
    import json, sys, time, torch
    import transformers.utils as tu, transformers.utils.import_utils as iu
    tu.is_xlstm_available = iu.is_xlstm_available = lambda: False   # its own native kernels
    from transformers import xLSTMForCausalLM
    from transformers.models.xlstm import modeling_xlstm as m
    assert not m.external_xlstm
    m.xLSTMPreTrainedModel._init_weights = lambda self, module: None
    path, spec = sys.argv[1], json.loads(sys.argv[2])
    torch.set_num_threads(spec["threads"])
    model = xLSTMForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    V = model.config.vocab_size
    g = torch.Generator().manual_seed(0)

    def best(fn, reps, budget):
        fn()
        ts, end = [], time.perf_counter() + budget
        while len(ts) < reps or (time.perf_counter() < end and len(ts) < 20):
            t = time.perf_counter(); fn(); ts.append(time.perf_counter() - t)
        return min(ts)

    out = {"prefill": [], "decode": [], "torch": torch.__version__, "threads": torch.get_num_threads()}
    with torch.inference_mode():
        for b, t in spec["prefill"]:
            ids = torch.randint(0, V, (b, t), generator=g)
            def pf():
                cache = m.xLSTMCache(model.config, max_batch_size=b, dtype=torch.float32)
                # state only, then the last position's logits (as a generator needs; ours: state only)
                hs = model.backbone(ids, cache_params=cache, use_cache=True).last_hidden_state
                m.soft_cap(model.lm_head(hs[:, -1:]).float(), model.config.output_logit_soft_cap).argmax(-1)
            s = best(pf, spec["reps"], spec["budget"])
            out["prefill"].append({"batch": b, "length": t, "seconds": s, "tok_s": b * t / s})
        for b in spec["decode"]:
            ids = torch.randint(0, V, (b, 16), generator=g)
            cache = m.xLSTMCache(model.config, max_batch_size=b, dtype=torch.float32)
            cur = [model(ids, cache_params=cache, use_cache=True).logits[:, -1].argmax(-1, keepdim=True)]
            def dec():
                for _ in range(spec["steps"]):
                    cur[0] = model(cur[0], cache_params=cache, use_cache=True).logits[:, -1].argmax(-1, keepdim=True)
                    cur[0].tolist()
            s = best(dec, spec["reps"], spec["budget"]) / spec["steps"]
            out["decode"].append({"batch": b, "ms_per_step": s * 1e3, "tok_s": b / s})
    print(json.dumps(out))
    """
)


def _best(rows_list: list[list[dict]], key: tuple) -> list[dict]:
    best: dict = {}
    for rows in rows_list:
        for r in rows:
            k = tuple(r[f] for f in key)
            if k not in best or r["tok_s"] > best[k]["tok_s"]:
                best[k] = r
    return [best[k] for k in sorted(best)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="64m")
    ap.add_argument("--prefill", nargs="+", default=["1x512", "1x2048", "8x256"], help="BATCHxLENGTH")
    ap.add_argument("--decode-batch", type=int, nargs="+", default=[1, 8, 64])
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds of each side")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--budget", type=float, default=2.0)
    ap.add_argument("--out", default="benchmarks/results/cpu_64m", help="output prefix (.json, .md, .png)")
    args = ap.parse_args()
    grid = [tuple(int(v) for v in s.split("x")) for s in args.prefill]
    threads = os.cpu_count()
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "ckpt"
        subprocess.run([py, "-c", "import sys; from xlstm_mlx.checkpoints.random import make_random_checkpoint; "
                        "make_random_checkpoint(sys.argv[1], sys.argv[2])", str(ckpt), args.shape],
                       check=True, env=env)
        ours_runs, theirs_runs = [], []
        for _ in range(args.rounds):
            j = Path(tmp) / "ours.json"
            cmd = [py, "-m", "xlstm_mlx.cli", "bench", "--model", str(ckpt), "--dtype", "float32", "--cpu",
                   "--prefill-grid", *args.prefill, "--decode-batch", *map(str, args.decode_batch),
                   "--decode-steps", str(args.steps), "--ttft-len", "0", "--reps", str(args.reps),
                   "--budget", str(args.budget), "--json", str(j)]
            subprocess.run(cmd, check=True, env=env)
            runs = [json.loads(j.read_text())]
            ours_runs.append(runs)
            spec = {"prefill": grid, "decode": args.decode_batch, "steps": args.steps, "reps": args.reps,
                    "budget": args.budget, "threads": threads}
            p = subprocess.run([py, "-c", _TRANSFORMERS, str(ckpt), json.dumps(spec)], env=env,
                               capture_output=True, text=True)
            if p.returncode != 0:
                raise SystemExit(f"transformers side failed:\n{p.stderr[-3000:]}")
            theirs_runs.append(json.loads(p.stdout.strip().splitlines()[-1]))
    base = ours_runs[0][0]
    ours = dict(base)
    ours["prefill"] = _best([r["prefill"] for runs in ours_runs for r in runs], ("batch", "length"))
    ours["decode"] = _best([r["decode"] for runs in ours_runs for r in runs], ("batch",))
    theirs = {"prefill": _best([r["prefill"] for r in theirs_runs], ("batch", "length")),
              "decode": _best([r["decode"] for r in theirs_runs], ("batch",)), "torch": theirs_runs[0]["torch"]}
    result = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "command": " ".join(sys.argv),
              "shape": args.shape, "device": base["device"], "xlstm_mlx": ours, "transformers": theirs}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [f"# CPU: xlstm-mlx vs transformers xLSTMForCausalLM (native kernels), shape {args.shape}, float32",
             "", f"- date: {result['date']}", f"- device: {base['device']}", f"- mlx {base['mlx_version']}, "
             f"torch {theirs['torch']}; CPU BLAS: {base.get('cpu_blas', {}).get('version', 'n/a')}",
             f"- command: `{result['command']}`", f"- {base['profile']}", "",
             "| figure | xlstm-mlx tok/s | transformers tok/s | ratio | xlstm-mlx % of floor |", "|---|---|---|---|---|"]
    for r in ours["prefill"]:
        t = next(x for x in theirs["prefill"] if (x["batch"], x["length"]) == (r["batch"], r["length"]))
        lines.append(f"| prefill B={r['batch']} T={r['length']} | {r['tok_s']:.0f} | {t['tok_s']:.0f} | "
                     f"{r['tok_s'] / t['tok_s']:.2f}x | {r['ratio_to_floor']:.1%} |")
    for r in ours["decode"]:
        t = next(x for x in theirs["decode"] if x["batch"] == r["batch"])
        lines.append(f"| decode B={r['batch']} | {r['tok_s']:.1f} | {t['tok_s']:.1f} | "
                     f"{r['tok_s'] / t['tok_s']:.2f}x | {r['ratio_to_floor']:.1%} |")
    text = "\n".join(lines) + "\n"
    out.with_suffix(".md").write_text(text)
    print(text)
    try:
        from xlstm_mlx.tools.bench_plot import plot

        plot(ours, str(out.with_suffix(".png")), comparators={"transformers": theirs})
    except SystemExit as e:
        print(e, file=sys.stderr)


if __name__ == "__main__":
    main()
