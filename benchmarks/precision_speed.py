"""CPU prefill speed before/after the float32-accuracy change of the chunkwise and parallel forms.

"before" is the chunkwise and parallel kernels as of commit aba2d04 (b_t - b_s as a difference of one running
sum), read from git; "after" is the working tree (segment sums, mlstm_gates.log_decay_matrix). Both run
alternately, round after round, best time of each kept (the machine is shared: a busy spell hits both).
Measured: the kernel alone at the xLSTM-7B head shape and at a small shape, and a whole-model prefill of the
random "64m" shape through the kernel registry.

    python benchmarks/precision_speed.py [--rounds 7] [--out benchmarks/results/precision_speed]
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import platform as pyplatform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mlx.core as mx

ROOT = Path(__file__).resolve().parents[1]
BEFORE = "aba2d04"


def old_kernels(tmp: Path):
    """The before-kernels as a module, from git (mlstm_chunkwise imports mlstm_parallel: both are loaded)."""
    mods = {}
    for name in ("mlstm_parallel", "mlstm_chunkwise"):
        src = subprocess.run(["git", "-C", str(ROOT), "show", f"{BEFORE}:xlstm_mlx/kernels/{name}.py"],
                             check=True, capture_output=True, text=True).stdout
        src = src.replace("from xlstm_mlx.kernels.mlstm_parallel import", "from old_mlstm_parallel import")
        f = tmp / f"old_{name}.py"
        f.write_text(src)
        spec = importlib.util.spec_from_file_location(f"old_{name}", f)
        mods[name] = importlib.util.module_from_spec(spec)
        sys.modules[f"old_{name}"] = mods[name]
        spec.loader.exec_module(mods[name])
    return mods["mlstm_chunkwise"], mods["mlstm_parallel"]


def paired_times(before, after, rounds: int) -> tuple[float, float]:
    """Best time of each, the two run alternately round after round so that a busy spell of the shared
    machine hits both alike."""
    mx.eval(before())  # warm up
    mx.eval(after())
    tb, ta = [], []
    for _ in range(rounds):
        for fn, times in ((before, tb), (after, ta)):
            t = time.perf_counter()
            mx.eval(fn())
            times.append(time.perf_counter() - t)
    return min(tb), min(ta)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/precision_speed"))
    args = ap.parse_args()
    mx.set_default_device(mx.cpu if args.device == "cpu" else mx.gpu)
    from xlstm_mlx import kernels
    from xlstm_mlx.checkpoints.random import make_random_checkpoint
    from xlstm_mlx.kernels import Kernel, mlstm_chunkwise, mlstm_parallel
    import xlstm_mlx

    rows = []
    with tempfile.TemporaryDirectory() as d:
        old_chunk, old_par = old_kernels(Path(d))
        k = mx.random.split(mx.random.key(0), 5)
        shapes = {"7b_heads (B1 NH8 T1024 Dqk256 Dv512)": (1, 8, 1024, 256, 512),
                  "small (B2 NH4 T2048 Dqk16 Dv32)": (2, 4, 2048, 16, 32)}
        for label, (B, NH, T, Dqk, Dv) in shapes.items():
            q = mx.random.normal((B, NH, T, Dqk), key=k[0]); kk = mx.random.normal((B, NH, T, Dqk), key=k[1])
            v = mx.random.normal((B, NH, T, Dv), key=k[2])
            i = 3 * mx.random.normal((B, NH, T), key=k[3]); f = 3 * mx.random.normal((B, NH, T), key=k[4]) + 2
            mx.eval(q, kk, v, i, f)
            for name, before, after in (("chunkwise", old_chunk.mlstm_chunkwise, mlstm_chunkwise),
                                        ("parallel", old_par.mlstm_parallel, mlstm_parallel)):
                if name == "parallel" and T * T * NH * B * Dv > 2**30:  # the quadratic form at the 7B shape: minutes on CPU
                    continue
                tb, ta = paired_times(lambda: before(q, kk, v, i, f)[0], lambda: after(q, kk, v, i, f)[0],
                                      args.rounds)
                rows.append({"what": f"{name} kernel, {label}", "before_ms": 1e3 * tb, "after_ms": 1e3 * ta})
                print(rows[-1], file=sys.stderr, flush=True)

        path = make_random_checkpoint(Path(d) / "m64", "64m", seed=0)
        model, _ = xlstm_mlx.load(path, profile="parity")
        ids = mx.random.randint(0, 50000, (1, 1024), key=k[0])
        entry = kernels.KERNELS["mlstm.chunkwise"]

        def with_kernel(fn):
            def call():
                kernels.KERNELS["mlstm.chunkwise"] = Kernel(fn, entry.reference, entry.label)
                return model(ids)
            return call

        tb, ta = paired_times(with_kernel(old_chunk.mlstm_chunkwise), with_kernel(mlstm_chunkwise), args.rounds)
        kernels.KERNELS["mlstm.chunkwise"] = entry
        rows.append({"what": "64m model prefill, T=1024 (parity profile)", "before_ms": 1e3 * tb, "after_ms": 1e3 * ta})
        print(rows[-1], file=sys.stderr, flush=True)

    meta = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "device": f"{mx.default_device()} {pyplatform.machine()} ({pyplatform.processor() or 'unknown'}), "
                      f"mlx {mx.__version__}",
            "command": "python " + " ".join(sys.argv), "before": BEFORE}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({**meta, "rows": rows}, indent=1))
    lines = ["| what | before (ms) | after (ms) | after/before |", "|---|---|---|---|"]
    lines += [f"| {r['what']} | {r['before_ms']:.1f} | {r['after_ms']:.1f} | {r['after_ms'] / r['before_ms']:.2f} |"
              for r in rows]
    md = (f"# prefill speed before/after the segment-sum change\n\ndate {meta['date']}; device {meta['device']}; "
          f"before = commit {BEFORE}\n\ncommand: `{meta['command']}`\n\n" + "\n".join(lines) + "\n")
    out.with_suffix(".md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
