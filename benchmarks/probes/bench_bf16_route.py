"""`xlstm-mlx bench` with the bf16 GEMV (kernels/bf16_gemv.py) routed for EVERY product it applies to, not only
where its H200 table says it was faster (bf16_gemv.faster_than_mlx): an end-to-end A/B of the kernel against
MLX's matmul, before a new table is written. Needs XLSTM_MLX_BF16_GEMV=1 (the switch itself) and takes the
bench's own arguments. A probe for the record; the library's routing is unchanged.

    XLSTM_MLX_BF16_GEMV=1 XLSTM_MLX_BF16_XAHEAD=1 python3 benchmarks/probes/bench_bf16_route.py \
        bench --shape 7b --dtype bfloat16 --decode-batch 1 16 --prefill-grid 1x128 --ttft-len 0 --reps 3
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from xlstm_mlx import cli  # noqa: E402
from xlstm_mlx.kernels import bf16_gemv  # noqa: E402

bf16_gemv.faster_than_mlx = lambda rows, n, k: True
sys.exit(cli.main(sys.argv[1:]))
