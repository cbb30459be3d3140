"""Measure the float32 logits error of xlstm-mlx against the canonical implementations, per case.

The same cases as tests/models/test_parity_canonical.py, printed as a Markdown table (the tests assert the
bound; this records the numbers). Run from the repo root:  python benchmarks/parity_report.py
"""

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import mlx.core as mx  # noqa: E402

import xlstm_mlx  # noqa: E402
from oracles import hf_native_logits, make_hf_checkpoint, official_large, official_logits, save_official  # noqa: E402
from test_parity_canonical import HF_CASES, OFFICIAL_CASES  # noqa: E402

mx.set_default_device(mx.cpu)


def main():
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for case in sorted(HF_CASES):
            opts, lengths, batch = HF_CASES[case]
            opts = dict(opts)
            dtype = opts.pop("dtype", torch.float32)
            path = make_hf_checkpoint(tmp / case, seed=sorted(HF_CASES).index(case), dtype=dtype, **opts)
            ids = np.random.default_rng(1).integers(0, opts.get("vocab", 101), (batch, max(lengths)))
            ref = hf_native_logits(path, ids, tmp)
            model, _ = xlstm_mlx.load(path, dtype="float32")
            errs = [np.abs(np.array(model(mx.array(ids[:, :T]))) - ref[:, :T]).max() for T in lengths]
            rows.append((f"transformers native: {case}", batch, lengths, errs))
        for case in sorted(OFFICIAL_CASES):
            om, cfg = official_large(seed=3, **OFFICIAL_CASES[case])
            path = save_official(om, cfg, tmp / f"official_{case}")
            ids = np.random.default_rng(2).integers(0, 101, (2, 200))
            model, _ = xlstm_mlx.load(path, dtype="float32")
            lengths = [1, 7, 65, 200]
            errs = [np.abs(np.array(model(mx.array(ids[:, :T]))) - official_logits(om, ids[:, :T])).max()
                    for T in lengths]
            rows.append((f"official xLSTMLarge: {case}", 2, lengths, errs))
    print("| case | batch | length: max-abs logits error |")
    print("|---|---|---|")
    for name, batch, lengths, errs in rows:
        print(f"| {name} | {batch} | " + ", ".join(f"{T}: {e:.1e}" for T, e in zip(lengths, errs)) + " |")


if __name__ == "__main__":
    main()
