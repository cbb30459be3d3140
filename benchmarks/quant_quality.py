"""Held-out perplexity of a model and of its quantized conversions: the quantization quality bars.

    python benchmarks/quant_quality.py                                  # the bundled demo model
    python benchmarks/quant_quality.py --model DIR --data data/shakespeare/heldout --json out.json

Each variant is written with xlstm_mlx.checkpoints.convert (the code of `xlstm-mlx convert`) into a temporary
directory, loaded back with xlstm_mlx.load and scored with xlstm_mlx.tools.perplexity on the held-out split,
twice: with the state carried through the whole text (--context 0) and in fresh windows of the training
length (--context 256). Bars: 8-bit within 0.5 % of the float model, 4-bit within 5 % (both settings).
Prints a Markdown table (for README / docs/quantization.md) and exits 1 if a bar is missed.

MLX's CPU backend has no optimized quantized matmul (~30x slower than its float matmul here), so the
full held-out split is scored with `dequantized_copy` of the loaded model (the same weights, plain
matmuls); on the first --check-tokens tokens the loaded quantized model itself is scored too, and the two
must agree to 1e-4 relative (float32 rounding), else the run fails. On a GPU, pass --check-tokens 0
--direct to score the quantized model itself throughout.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from xlstm_mlx.checkpoints.convert import convert
from xlstm_mlx.checkpoints.load import load
from xlstm_mlx.tools.perplexity import perplexity, read_tokens
from xlstm_mlx.checkpoints.quantize import dequantized_copy, parameter_bytes

ROOT = Path(__file__).resolve().parent.parent
# (label, convert options, bar: max relative perplexity increase, or None = informative only)
VARIANTS = [
    ("float32", {}, None),
    ("8-bit g64", dict(quantize=True, bits=8, group_size=64), 0.005),
    ("8-bit g128", dict(quantize=True, bits=8, group_size=128), 0.005),
    ("4-bit g32", dict(quantize=True, bits=4, group_size=32), 0.05),
    ("4-bit g64", dict(quantize=True, bits=4, group_size=64), 0.05),
    ("4-bit g128", dict(quantize=True, bits=4, group_size=128), 0.05),
    ("4-bit g64, embeddings float", dict(quantize=True, bits=4, group_size=64, embeddings=False), None),
    ("4-bit g64, bf16 scales", dict(quantize=True, bits=4, group_size=64, dtype="bfloat16"), 0.05),
    ("8-bit g64, bf16 scales", dict(quantize=True, bits=8, group_size=64, dtype="bfloat16"), 0.005),
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(ROOT / "xlstm_mlx" / "demo_model"))
    ap.add_argument("--data", default=str(ROOT / "data" / "shakespeare" / "heldout"))
    ap.add_argument("--contexts", type=int, nargs="+", default=[0, 256])
    ap.add_argument("--json", help="write the results here too")
    ap.add_argument("--check-tokens", type=int, default=1024,
                    help="tokens on which the quantized model itself must match its dequantized copy")
    ap.add_argument("--direct", action="store_true", help="score the quantized model itself (fast on a GPU)")
    ns = ap.parse_args()

    rows, ok = [], True
    with tempfile.TemporaryDirectory() as tmp:
        for label, opts, bar in VARIANTS:
            out = Path(tmp) / label.replace(" ", "_").replace(",", "")
            convert(ns.model, out, progress=False, **({"dtype": "float32"} | opts))
            model, tok = load(out, dtype="float32")
            tokens, nbytes = read_tokens(ns.data, tok)
            row = {"variant": label, "MB": round(parameter_bytes(model) / 1e6, 3), "ppl": {}, "bar": bar}
            scored = model if ns.direct or not opts.get("quantize") else dequantized_copy(model)
            if scored is not model and ns.check_tokens:
                head = tokens[: ns.check_tokens]
                a = perplexity(model, head, tok.bos_token_id).nll
                b = perplexity(scored, head, tok.bos_token_id).nll
                row["check"] = abs(a - b) / abs(a)
                print(f"{label}: quantized vs dequantized NLL on {len(head)} tokens: {a:.6f} vs {b:.6f}",
                      file=sys.stderr, flush=True)
                ok &= row["check"] <= 1e-4
            for ctx in ns.contexts:
                t = time.perf_counter()
                row["ppl"][ctx] = perplexity(scored, tokens, tok.bos_token_id, context=ctx).perplexity
                print(f"{label}: context {ctx}: {row['ppl'][ctx]:.4f} ({time.perf_counter() - t:.1f} s)",
                      file=sys.stderr, flush=True)
            rows.append(row)
    base = rows[0]["ppl"]
    print(f"\nheld-out: {ns.data} ({len(tokens)} tokens, {nbytes} bytes); model: {ns.model}\n")
    head = " | ".join(f"ppl (context {c or 'carried'}) | vs float" for c in ns.contexts)
    print(f"| weights | MB | {head} | bar |")
    print("|---|---:|" + "---:|---:|" * len(ns.contexts) + "---|")
    for r in rows:
        cells, passed = [], True
        for c in ns.contexts:
            rel = r["ppl"][c] / base[c] - 1
            r.setdefault("rel", {})[c] = rel
            passed &= r["bar"] is None or rel <= r["bar"]
            cells.append(f"{r['ppl'][c]:.3f} | {100 * rel:+.2f} %")
        verdict = "" if r["bar"] is None else (f"<= {100 * r['bar']:g} %: " + ("pass" if passed else "FAIL"))
        ok &= passed
        print(f"| {r['variant']} | {r['MB']:.2f} | {' | '.join(cells)} | {verdict} |")
    if ns.json:
        Path(ns.json).write_text(json.dumps({"model": ns.model, "data": ns.data, "tokens": len(tokens),
                                             "rows": rows}, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
