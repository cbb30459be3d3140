#!/usr/bin/env bash
# One device session that answers "did the quantized GEMV change work on the GPU, and what did it buy": the
# kernels alone under Nsight Compute (duration per variant: the defaults against config overrides, e.g. XPRE=0,
# the x loads each at its use as before session 13), the stall profile of one kernel (ncu --set full, per SASS
# instruction), the 7B decode bench at 4 bits A/B ($XLSTM_MLX_QUANT_XPRE=0 against unset) and 8 bits, the GPU
# tests, the official bf16 decode comparator at batch 1.
#
#   PARTS="ncu source bench4" bash benchmarks/probes/quant_session_check.sh     # after the MLX wheels' install
#   PARTS="bench8 tests official" ...                                          # the next call
#
# VARIANTS: the probe's variants (default: "XPRE=0" "" "KSPLIT=8,WARPS=8,R=1,U=1,S=4"). The quantized benches take
# ~2 min each (random 7B weights quantized, NVRTC compiles); the official comparator needs mlstm_kernels / xlstm
# on PYTHONPATH and its script copied into scratch/ (the device's copy of the tree has no ../shared). Results
# under $OUT.
set -u
PARTS=" ${PARTS:-ncu source bench4} "
has() { [[ "$PARTS" == *" $1 "* ]]; }
export PYTHONPATH=/tmp/site:$PWD
OUT=${OUT:-.}
if has ncu; then
    echo "== ncu: the kernels alone, 4 and 8 bits, rows 1 4 16, per variant"
    for bits in 4 8; do
        timeout 200 ncu --clock-control none -k regex:quant_gemv --metrics gpu__time_duration.sum --csv \
            python3 benchmarks/probes/quant_gemv_ncu_probe.py --bits $bits --rows 1 4 16 --calls 2 \
            --variants "XPRE=0" "" "KSPLIT=8,WARPS=8,R=1,U=1,S=4" > "$OUT/ncu_q$bits.csv" 2>"$OUT/ncu_q$bits.err"
        python3 benchmarks/probes/quant_gemv_ncu_probe.py --table "$OUT/ncu_q$bits.csv" | tee "$OUT/ncu_q$bits.md"
    done
fi
if has source; then
    echo "== ncu --set full: q|k|v|o 4-bit, 1 row, XPRE=0 and the default"
    for v in "XPRE=0" "XPRE=1"; do
        timeout 150 ncu --set full --import-source no -k regex:quant_gemv --launch-skip 1 --launch-count 1 \
            -o "$OUT/src_$v" python3 benchmarks/probes/quant_gemv_ncu_probe.py --matrices qkvo --rows 1 \
            --variants "$v" --calls 1 > /dev/null 2>&1
        ncu -i "$OUT/src_$v.ncu-rep" --page source --csv > "$OUT/src_$v.csv" 2>&1
        ncu -i "$OUT/src_$v.ncu-rep" --page details > "$OUT/src_$v.txt" 2>&1
        grep -E "Duration|DRAM Throughput|Achieved Occupancy|Warp Cycles Per Issued|L1/TEX Hit|L2 Hit" "$OUT/src_$v.txt"
    done
fi
B="bench --shape 7b --dtype bfloat16 --weight-mode single --decode-batch 1 16 --prefill-grid 1x128 --ttft-len 0 --reps 3 --budget 0.5"
bench() {  # bits, XPRE env value or "default"
    echo "== bench ${1}-bit XPRE $2"
    if [ "$2" = default ]; then unset XLSTM_MLX_QUANT_XPRE; else export XLSTM_MLX_QUANT_XPRE=$2; fi
    timeout 200 python3 -m xlstm_mlx.cli $B -q "$1" --json "$OUT/bench_q${1}_xpre$2.json" 2>&1 | grep -E "^\[bench\]" \
        | grep -E "measured|decode|probe" | cut -c1-160
    unset XLSTM_MLX_QUANT_XPRE
}
has bench4 && { bench 4 0; bench 4 default; }
has bench8 && bench 8 default
if has tests; then
    XLSTM_MLX_TEST_DEVICE=gpu timeout 300 python3 -m pytest -q -x -p no:cacheprovider tests/kernels/test_quant_gemv.py \
        2>&1 | tail -4 | tee "$OUT/gpu_tests.txt"
fi
if has official; then
    echo "== official decode, batch 1"
    BATCHES=1 timeout 240 python3 scratch/official_best.py 2>&1 | tail -4
fi
