"""The graph of one decode step as MLX's CUDA backend would run it, counted on any machine (the CPU included).

    python benchmarks/probes/decode_graph_census.py [--blocks 32] [-q 4 --weight-mode single] [--batch 1]

Every `mx.fast.cuda_kernel` is replaced by a stand-in (zeros of the output shapes, tied to the inputs by
mx.depends: one `Depends` node per kernel launch) and every kernels/ module's `cuda_available` answers True, so
the model takes its CUDA path; the width is scaled down (hidden 1,024, 2 heads of 256 / 512, FFN 2,752: shapes
the CUDA kernels accept) and the depth is the 7B's. Prints the nodes of the compiled step's graph by primitive
and the time the host takes to call the compiled step (Python, and MLX replaying its tape: no arithmetic runs
here), median of --calls calls. Every node is host work at every decode step on a GPU (built here, then encoded
by its eval_gpu), and a view (Reshape, Flatten, Transpose, ExpandDims) costs about what a kernel's node does.
Why it exists: the 4-bit batch-1 step on an H200 ran 4.19 ms of kernels in a 5.0-7.1 ms step (session 8).
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import re
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import mlx.core as mx  # noqa: E402


def mock_cuda() -> None:
    import xlstm_mlx.kernels as kernels_pkg

    for info in pkgutil.iter_modules(kernels_pkg.__path__):
        mod = importlib.import_module(f"xlstm_mlx.kernels.{info.name}")
        if hasattr(mod, "cuda_available"):
            mod.cuda_available = lambda: True

    def stand_in(name, input_names, output_names, source, header="", **_):
        def launch(inputs, output_shapes, output_dtypes, **__):
            return mx.depends([mx.zeros(s, dtype=d) for s, d in zip(output_shapes, output_dtypes)], list(inputs))
        return launch

    mx.fast.cuda_kernel = stand_in


def census(blocks: int, quantize: int | None, weight_mode: str, batch: int, calls: int) -> tuple[Counter, float]:
    from mlx.utils import tree_flatten

    from xlstm_mlx.checkpoints.random import randomize, shape_args
    from xlstm_mlx.models import family_of
    from xlstm_mlx.models.compiled import decode_fn
    from xlstm_mlx.models.xlstm7b.model import Model
    from xlstm_mlx.profiles import default_profile
    from xlstm_mlx.tools.bench import quantized

    args = shape_args("7b", num_blocks=blocks, hidden_size=1024, num_heads=2, qk_dim=512, v_dim=1024, ffn_dim=2752,
                      vocab_size=512, weight_mode=weight_mode)
    prof = default_profile("bfloat16")
    model = Model(args, prof)
    randomize(model, 0, dtype=lambda name: family_of(model).param_dtype(name, prof))
    model.fuse_projections()
    if quantize:
        model, _ = quantized(model, "", quantize, 64)
    mx.eval(model.parameters())
    cache = model.make_cache(batch)
    decode = decode_fn(model)
    tokens = mx.zeros((batch, 1), dtype=mx.int32)

    def states():
        return [v for _, v in tree_flatten(cache.layers) if isinstance(v, mx.array)]

    times = []
    for i in range(calls + 5):
        t = time.perf_counter()
        out = decode(tokens, cache)
        times.append(time.perf_counter() - t)
        if i < calls + 4:
            mx.eval(out, states())
    with tempfile.NamedTemporaryFile(suffix=".dot") as f:
        mx.export_to_dot(f.name, out, *states())
        nodes = Counter(re.findall(r'label\s*=\s*"([A-Za-z_]+)', Path(f.name).read_text()))
    return nodes, statistics.median(times[5:])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--blocks", type=int, default=32)
    p.add_argument("-q", "--quantize", type=int)
    p.add_argument("--weight-mode", default="fused", choices=["fused", "single"])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--calls", type=int, default=30)
    args = p.parse_args()
    mx.set_default_device(mx.cpu)
    mock_cuda()
    nodes, t = census(args.blocks, args.quantize, args.weight_mode, args.batch, args.calls)
    print(f"{sum(nodes.values())} nodes ({nodes['Depends']} CUDA kernel launches), compiled-step call "
          f"{t * 1e3:.2f} ms on this host")
    for name, n in nodes.most_common():
        print(f"  {n:5d}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
