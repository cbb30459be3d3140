"""Weight sizes of quantized checkpoints, xLSTM-7B shape included, without materializing any weights.

    python benchmarks/quant_size.py                 # 7B sizes for each bits/group size; check on 'tiny'
    python benchmarks/quant_size.py --check-shape 64m

Three counts that must agree:
  analytic   per layer: out*in*bits/8 + 2*out*(in/group)*scale_bytes for a quantized matrix (packed
             weights + one scale and one bias per group), out*in*dtype_bytes for a float one, plus the
             norms and biases; group sizes as the plan picks them (fallbacks included)
  lazy       the model built with xlstm_mlx.checkpoints.quantize on lazily created weights: MLX's own shapes and
             dtypes, summed without evaluating anything
  file       (on --check-shape only) the tensor bytes of a real `convert -q` output (file size minus the
             safetensors header)
The bar (quantization): xLSTM-7B 4-bit weights <= 4.3 GB.
"""

from __future__ import annotations

import argparse
import struct
import sys
import tempfile
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from xlstm_mlx.checkpoints.convert import convert
from xlstm_mlx.models.xlstm7b.model import Model
from xlstm_mlx.checkpoints.quantize import parameter_bytes, plan_quantization, quantize_model
from xlstm_mlx.checkpoints.random import make_random_checkpoint, shape_args

DT = {"bfloat16": mx.bfloat16, "float16": mx.float16, "float32": mx.float32}


def analytic_bytes(model: Model, qcfg: dict | None, dtype_bytes: int) -> int:
    """Bytes from the formula above, using only the float model's parameter shapes and the plan."""
    layers = qcfg["layers"] if qcfg else {}
    total = 0
    for name, p in tree_flatten(model.parameters()):
        layer, leaf = name.rsplit(".", 1)
        if leaf == "weight" and layer in layers:
            out, inp = p.shape
            bits, g = layers[layer]["bits"], layers[layer]["group_size"]
            total += out * inp * bits // 8 + 2 * out * (inp // g) * dtype_bytes
        else:
            total += p.size * dtype_bytes
    return total


def lazy_model(shape: str, dtype: str) -> Model:
    m = Model(shape_args(shape))
    m.set_dtype(DT[dtype])  # lazy: nothing is drawn or cast until evaluated, and nothing is evaluated
    return m


def sizes(shape: str, dtype: str, bits: int, group_size: int, embeddings: bool = True) -> tuple[int, int, dict]:
    m = lazy_model(shape, dtype)
    qcfg = plan_quantization(m, bits, group_size, embeddings)
    a = analytic_bytes(m, qcfg, mx.zeros((), DT[dtype]).itemsize)
    quantize_model(m, qcfg)
    return a, parameter_bytes(m), qcfg


def file_tensor_bytes(path: Path) -> int:
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
    return path.stat().st_size - 8 - n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", default="7b")
    ap.add_argument("--dtype", default="bfloat16", choices=sorted(DT), help="dtype of scales/biases and float layers")
    ap.add_argument("--check-shape", default="tiny", help="shape converted for real to check the counts")
    ns = ap.parse_args()
    ok = True
    m = lazy_model(ns.shape, ns.dtype)
    print(f"{ns.shape} in {ns.dtype}: {parameter_bytes(m) / 1e9:.3f} GB "
          f"({sum(p.size for _, p in tree_flatten(m.parameters())) / 1e9:.3f} B parameters)")
    for bits, g, emb in ((4, 32, True), (4, 64, True), (4, 128, True), (4, 64, False), (8, 64, True), (8, 128, True)):
        a, lz, qcfg = sizes(ns.shape, ns.dtype, bits, g, emb)
        ok &= a == lz
        fb = "; ".join(sorted({w for w in qcfg["group_size_fallbacks"].values()}))
        print(f"  {bits}-bit g{g:<3} {'' if emb else 'embeddings float':17}: analytic {a / 1e9:.4f} GB, "
              f"lazy {lz / 1e9:.4f} GB{' MISMATCH' if a != lz else ''}{'  [' + fb + ']' if fb else ''}")
    a4, _, _ = sizes(ns.shape, ns.dtype, 4, 64)
    if ns.shape == "7b":
        print(f"bar: 4-bit (g64, {ns.dtype} scales) {a4 / 1e9:.3f} GB <= 4.3 GB: {'PASS' if a4 <= 4.3e9 else 'FAIL'}")
        ok &= a4 <= 4.3e9

    with tempfile.TemporaryDirectory() as tmp:
        src = make_random_checkpoint(Path(tmp) / "src", ns.check_shape)
        for bits, g in ((4, 64), (8, 128)):
            out = Path(tmp) / f"q{bits}"
            convert(src, out, dtype=ns.dtype, quantize=True, bits=bits, group_size=g, progress=False)
            real = file_tensor_bytes(out / "model.safetensors")
            a, lz, _ = sizes(ns.check_shape, ns.dtype, bits, g)
            same = a == lz == real
            ok &= same
            print(f"check on {ns.check_shape}, {bits}-bit g{g}: file {real} B, analytic {a} B, lazy {lz} B: "
                  f"{'equal' if same else 'DIFFERENT'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
