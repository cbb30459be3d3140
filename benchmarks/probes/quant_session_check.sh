#!/usr/bin/env bash
# One device session that answers "did the quantized GEMV change work on the GPU, and what did it buy": the
# quantized-matmul lab with the scale prefetch depth A/B (SD = 1, the old kernel, against the rule), the kernels
# under Nsight Compute (duration, DRAM throughput, warp stalls), the 7B decode bench at 4 and 8 bits with the
# same A/B ($XLSTM_MLX_QUANT_SCALE_DEPTH=1 against unset), the GPU tests, the official bf16 decode comparator.
#
#   PARTS="lab ncu" bash benchmarks/probes/quant_session_check.sh      # after the MLX wheels' install
#   PARTS="bench" ...; PARTS="tests official" ...                     # the next calls
#
# Each part is a few minutes on an H200 (the quantized benches ~2 min each: random 7B weights quantized, the
# NVRTC compiles); the official comparator needs mlstm_kernels / xlstm on PYTHONPATH and its script copied into
# scratch/ (the device's copy of the tree has no ../shared). Results under $OUT.
set -u
PARTS=" ${PARTS:-lab ncu} "
has() { [[ "$PARTS" == *" $1 "* ]]; }
export PYTHONPATH=/tmp/site:$PWD
OUT=${OUT:-.}
if has lab; then
    echo "== lab: 4 and 8 bits, rows 1 4 16, the default config at SD rule / 1"
    timeout 300 python3 benchmarks/gpu_quant_lab.py --bits 4 8 --rows 1 4 16 --sweep default --scale-depth 0 1 \
        --calls 10 --reps 3 --max-seconds 240 --json "$OUT/quant_lab.json" 2>"$OUT/quant_lab.err" | head -40
    tail -3 "$OUT/quant_lab.err"
fi
if has ncu; then
    echo "== ncu: 4-bit, rows 1 and 16, SD 1 then the rule (order: matrix, rows, depth; compile call + 1)"
    timeout 200 ncu --clock-control none -k regex:quant_gemv --section SpeedOfLight --section WarpStateStats \
        --section Occupancy python3 benchmarks/probes/quant_gemv_ncu_probe.py --calls 1 > "$OUT/ncu_quant.txt" 2>&1
    grep -E "^\[probe\]|Duration|DRAM Throughput|Achieved Occupancy|Warp Cycles Per Issued|Memory Throughput" \
        "$OUT/ncu_quant.txt" | head -120
fi
B="bench --shape 7b --dtype bfloat16 --weight-mode single --decode-batch 1 16 --prefill-grid 1x128 --ttft-len 0 --reps 3 --budget 0.5"
if has bench; then
    for v in "4 1" "4 rule" "8 rule"; do
        set -- $v
        echo "== bench ${1}-bit SD $2"
        if [ "$2" = rule ]; then unset XLSTM_MLX_QUANT_SCALE_DEPTH; else export XLSTM_MLX_QUANT_SCALE_DEPTH=$2; fi
        timeout 180 python3 -m xlstm_mlx.cli $B -q "$1" --json "$OUT/bench_q${1}_sd$2.json" 2>&1 | grep -E "^\[bench\]" \
            | grep -E "measured|decode|probe" | cut -c1-160
    done
    unset XLSTM_MLX_QUANT_SCALE_DEPTH
fi
if has tests; then
    XLSTM_MLX_TEST_DEVICE=gpu timeout 360 python3 -m pytest -q -x -p no:cacheprovider tests/kernels/test_quant_gemv.py \
        2>&1 | tail -4 | tee "$OUT/gpu_tests.txt"
fi
if has official; then
    echo "== official decode, batch 1"
    BATCHES=1 timeout 240 python3 scratch/official_best.py 2>&1 | tail -4
fi
