#!/usr/bin/env bash
# One device session for the decode GEMVs (session 14): x loaded a step ahead in the quantized GEMV (XPRE=2) and
# in the bf16 GEMV (XAHEAD=1). Parts (PARTS="..."):
#   ncu4 ncu8 ncubf16   each kernel ALONE under Nsight Compute (benchmarks/probes/gemv_ncu_probe.py, marker-bracketed
#                       calls, MLX's own matmul for the same operands beside ours), rows 1 4 16, the 7B matrices
#   bench4 bench8       the 7B decode bench at B=1, 16: the defaults against XLSTM_MLX_QUANT_XPRE=2
#   benchbf16           bf16 decode: MLX's matmul (default) against the bf16 GEMV on every product it applies to
#                       (benchmarks/probes/bench_bf16_route.py) with x at its use and a step ahead
#   benchbf16table      bf16 decode: MLX's matmul against XLSTM_MLX_BF16_GEMV=1 with its kernel-alone table's routing
#   split4 split8 splitbf16   host or GPU (benchmarks/probes/decode_host_split.py, MLX's default graph settings)
#   graphs4 graphsbf16  host split of 4-bit and bf16 under MLX's CUDA-graph commit settings (decode_host_split --env)
#   tests               the GPU tests of the changed kernels (a subset: x-load modes, 7B shapes, routing)
#   tailtests           the GPU tests of the quantized GEMV's add-norm tail (session 16) and of the kernels it joins
#   tail4 tail8         host split of 4-bit (B=1, 4, 16) and 8-bit (B=4, 16) decode: the add-norm tail on (default),
#                       off (XLSTM_MLX_GEMV_ADD_NORM=0) and up to 16 rows (XLSTM_MLX_GEMV_ADD_NORM_ROWS=16), alternating
#   official            the official bf16 decode comparator at B=1 and 16 (scratch/official_best.py)
# after the MLX wheels' install; results under $OUT.
set -u
PARTS=" ${PARTS:-ncu4 ncu8 ncubf16} "
has() { [[ "$PARTS" == *" $1 "* ]]; }
export PYTHONPATH=/tmp/site:$PWD
OUT=${OUT:-.}
P=benchmarks/probes/gemv_ncu_probe.py
ncu_run() {  # tag, probe args...
    local tag=$1; shift
    echo "== ncu $tag"
    timeout 240 ncu --clock-control none --metrics gpu__time_duration.sum --csv python3 $P --calls 2 "$@" \
        > "$OUT/ncu_$tag.csv" 2>"$OUT/ncu_$tag.err"
    python3 $P --table "$OUT/ncu_$tag.csv" | tee "$OUT/ncu_$tag.md"
}
has ncu4 && ncu_run q4 --kernel quant --bits 4 --rows 1 4 16 --variants "" "XPRE=2" mlx
has ncu8 && ncu_run q8 --kernel quant --bits 8 --rows 1 4 16 --variants "" "XPRE=2" mlx
has ncubf16 && ncu_run bf16 --kernel bf16 --rows 1 4 16 --variants "" "XAHEAD=1" "KSPLIT=8,WARPS=8,R=1,U=1,S=4" \
    "KSPLIT=8,WARPS=8,R=1,U=1,S=4,XAHEAD=1" mlx
B="bench --shape 7b --dtype bfloat16 --decode-batch 1 16 --prefill-grid 1x128 --ttft-len 0 --reps 3 --budget 0.5"
show() { grep -E "^\[bench\]" | grep -E "measured|decode|probe" | cut -c1-160; }
qbench() {  # bits, XPRE env value or "default"
    echo "== bench ${1}-bit XPRE $2"
    if [ "$2" = default ]; then unset XLSTM_MLX_QUANT_XPRE; else export XLSTM_MLX_QUANT_XPRE=$2; fi
    timeout 150 python3 -m xlstm_mlx.cli $B --weight-mode single -q "$1" --json "$OUT/bench_q${1}_xpre$2.json" 2>&1 | show
    unset XLSTM_MLX_QUANT_XPRE
}
has bench4 && { qbench 4 default; qbench 4 2; }
has bench8 && { qbench 8 default; qbench 8 2; }
if has benchbf16; then
    echo "== bench bf16, MLX matmul (default)"
    timeout 150 python3 -m xlstm_mlx.cli $B --json "$OUT/bench_bf16_mlx.json" 2>&1 | show
    for xa in 0 1; do
        echo "== bench bf16, the bf16 GEMV on every product, XAHEAD=$xa"
        XLSTM_MLX_BF16_GEMV=1 XLSTM_MLX_BF16_XAHEAD=$xa timeout 150 python3 benchmarks/probes/bench_bf16_route.py $B \
            --json "$OUT/bench_bf16_gemv_xa$xa.json" 2>&1 | show
    done
fi
if has benchbf16table; then
    for round in 1 2; do
        echo "== bench bf16 round $round, MLX matmul (default)"
        timeout 150 python3 -m xlstm_mlx.cli $B --json "$OUT/bench_bf16_mlx_$round.json" 2>&1 | show
        echo "== bench bf16 round $round, XLSTM_MLX_BF16_GEMV=1 (the ALONE_H200 table's routing)"
        XLSTM_MLX_BF16_GEMV=1 timeout 150 python3 -m xlstm_mlx.cli $B --json "$OUT/bench_bf16_table_$round.json" 2>&1 | show
    done
fi
split() {  # tag, extra args
    local tag=$1; shift
    echo "== host split $tag"
    timeout ${SPLIT_TIMEOUT:-300} python3 benchmarks/probes/decode_host_split.py --shape 7b --batch 1 16 --env default --rounds 1 \
        --steps 64 "$@" --json "$OUT/host_split_$tag.json" 2>&1 | tail -8
}
has graphs4 && split q4_graphs -q 4 --weight-mode single --env default big_graphs ops100
has graphsbf16 && split bf16_graphs --env default big_graphs mb_only
has split4 && split q4 -q 4 --weight-mode single
has split8 && split q8 -q 8 --weight-mode single
has splitbf16 && split bf16
has tail4 && split q4_tail -q 4 --weight-mode single --batch 1 4 16 --env default no_add_norm add_norm16 --rounds 2
has tail8 && split q8_tail -q 8 --weight-mode single --batch 4 16 --env default no_add_norm add_norm16 --rounds 1
if has tailtests; then
    XLSTM_MLX_TEST_DEVICE=gpu timeout 300 python3 -m pytest -q -p no:cacheprovider tests/kernels/test_add_norm_tail.py \
        tests/kernels/test_quant_gemv.py tests/kernels/test_cuda_kernels.py -k "tail or fold or 7b or routing or add_rms" \
        2>&1 | tail -6 | tee "$OUT/gpu_tail_tests.txt"
fi
if has tests; then
    XLSTM_MLX_TEST_DEVICE=gpu timeout 240 python3 -m pytest -q -p no:cacheprovider tests/kernels/test_quant_gemv.py \
        tests/kernels/test_bf16_gemv.py -k "x_load_mode or x_loaded_a_step or 7b or routing or default_config_every" \
        2>&1 | tail -4 | tee "$OUT/gpu_tests.txt"
fi
if has official; then
    echo "== official decode, batch 1 and 16"
    BATCHES=1,16 timeout 300 python3 scratch/official_best.py 2>&1 | tail -6
fi
