#!/usr/bin/env bash
# One device session for the persistent one-launch decode kernel (kernels/decode_layer.py, session 18).
# Parts (PARTS="..."):
#   tests        the GPU tests of decode_layer (grids 1, 5 and every SM; the 7B shapes, B=1/4/16) and of the kernels
#                it is made from (the quantized GEMV, the decode cell, add-norm, SwiGLU), plus the model-level test
#   ab4 ab8      the 7B decode bench (-q 4 / -q 8, single weight mode, B=1 4 16): XLSTM_MLX_DECODE_LAYER on
#                (default) and off, alternating, ROUNDS rounds (default 1)
#   split4       host split (decode_host_split.py) of 4-bit decode at B=1 4 16, on and off
#   census       the graph census (nodes / launches per step) of 4-bit B=1 decode, on and off
#   encode       the per-launch build / encode cost of tiny MLX custom kernels (kernel_encode_cost.py)
#   official     the official bf16 decode comparator at B=1 and 16
# after the MLX wheels' install; results under $OUT.
set -u
PARTS=" ${PARTS:-tests ab4} "
ROUNDS=${ROUNDS:-1}
has() { [[ "$PARTS" == *" $1 "* ]]; }
export PYTHONPATH=/tmp/site:$PWD
OUT=${OUT:-.}
if has tests; then
    XLSTM_MLX_TEST_DEVICE=gpu timeout 300 python3 -m pytest -q -p no:cacheprovider tests/kernels/test_decode_layer.py \
        tests/models/test_decode_layer_model.py 2>&1 | tail -5 | tee "$OUT/gpu_tests.txt"
fi
B="bench --shape 7b --dtype bfloat16 --decode-batch 1 4 16 --prefill-grid 1x128 --ttft-len 0 --reps 3 --budget 0.5"
show() { grep -E "^\[bench\]" | grep -E "decode|path" | cut -c1-160; }
ab() {  # bits
    for r in $(seq 1 "$ROUNDS"); do
        for sw in 1 0; do
            echo "== bench ${1}-bit round $r XLSTM_MLX_DECODE_LAYER=$sw"
            XLSTM_MLX_DECODE_LAYER=$sw timeout 200 python3 -m xlstm_mlx.cli $B --weight-mode single -q "$1" \
                --json "$OUT/bench_q${1}_layer${sw}_r$r.json" 2>&1 | show
        done
    done
}
has ab4 && ab 4
has ab8 && ab 8
has split4 && timeout 400 python3 benchmarks/probes/decode_host_split.py --shape 7b -q 4 --weight-mode single \
    --batch 1 4 16 --env default no_decode_layer --rounds 1 --steps 64 --json "$OUT/host_split_q4.json" 2>&1 | tail -10
if has census; then
    for sw in 1 0; do
        echo "== census 4-bit B=1 XLSTM_MLX_DECODE_LAYER=$sw"
        XLSTM_MLX_DECODE_LAYER=$sw timeout 200 python3 benchmarks/probes/decode_graph_census.py --blocks 32 -q 4 \
            --weight-mode single 2>&1 | tail -4
    done
fi
has encode && timeout 200 python3 benchmarks/probes/kernel_encode_cost.py --json "$OUT/kernel_encode_cost.json" 2>&1 | tail -12
if has official; then
    echo "== official decode, batch 1 and 16"
    BATCHES=1,16 timeout 300 python3 ../shared/tools/comparators/official_best.py 2>&1 | tail -6
fi
