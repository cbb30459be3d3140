#!/usr/bin/env bash
# One device call that answers "did the last prefill change work on the GPU, and what did it buy": the GPU tests
# of the prefill kernels, kernels A / B / the gate projection profiled alone per launch (ncu), then the bench A/B
# of OLD (a checkout of the comparison code, e.g. `git archive <rev> xlstm_mlx | tar -x -C scratch/old`) against
# this tree, then the official prefill comparator (needs mlstm_kernels / xlstm on PYTHONPATH). Results under $OUT.
#
#   OLD=scratch/old bash benchmarks/probes/prefill_session_check.sh        # after the MLX wheels' install
#
# About 6-8 minutes on an H200 (the official comparator's compiles ~3 minutes of it): split it over two calls if
# the per-call limit is closer. SKIP_OFFICIAL=1 leaves the comparator out; OFFICIAL is its path (default
# scratch/official_prefill.py: the device's copy of the tree has no ../shared, so copy it into scratch/ first).
# PARTS picks the stages (default "tests ncu bench official"), e.g. PARTS="tests ncu" for one call and
# PARTS="bench official" for the next.
set -u
PARTS=" ${PARTS:-tests ncu bench official} "
has() { [[ "$PARTS" == *" $1 "* ]]; }
export PYTHONPATH=/tmp/site:$PWD
OUT=${OUT:-.}
has tests && XLSTM_MLX_TEST_DEVICE=gpu timeout 420 python3 -m pytest -q -p no:cacheprovider tests/kernels/test_mlstm_chunkwise_cuda.py \
    tests/kernels/test_gate_preact.py 2>&1 | tail -3 | tee "$OUT/gpu_tests.txt"
has ncu && for k in chunk_recurrent chunk_parallel gate_preact; do
    echo "== $k alone, every launch of a 1x2048 prefill (us)"
    ncu --clock-control none --profile-from-start off -k "regex:$k" --metrics gpu__time_duration.sum --csv \
        python3 benchmarks/gpu_step_profile.py --shape 7b --batch 1 --prefill 2048 2>/dev/null \
        | grep gpu__time | awk -F'","' '{print $NF}' | tr -d '"' | paste -sd' ' | tee "$OUT/ncu_$k.txt"
done
B="bench --shape 7b --dtype bfloat16 --decode-batch --prefill-grid 1x2048 8x8192 --ttft-len 2048 --reps 3 --budget 1"
has bench && for r in 1 2; do
    if [ -n "${OLD:-}" ]; then
        echo "== old round $r"
        (cd "$OLD" && PYTHONPATH=/tmp/site:$PWD timeout 120 python3 -m xlstm_mlx.cli $B --json "$OUT/old_$r.json" 2>&1 \
            | grep -E "^\[bench\]" | grep -E "measured|prefill|first token" | cut -c1-150)
    fi
    echo "== new round $r"
    timeout 120 python3 -m xlstm_mlx.cli $B --json "$OUT/new_$r.json" 2>&1 | grep -E "^\[bench\]" \
        | grep -E "measured|prefill|first token" | cut -c1-150
done
if has bench; then
    echo "== new 1x65536"
    timeout 150 python3 -m xlstm_mlx.cli bench --shape 7b --dtype bfloat16 --decode-batch --prefill-grid 1x65536 \
        --ttft-len 0 --reps 2 --budget 1 --json "$OUT/new_65k.json" 2>&1 | grep -E "^\[bench\] prefill" | cut -c1-150
fi
if has official && [ -z "${SKIP_OFFICIAL:-}" ]; then
    echo "== official prefill"
    SHAPES=1x2048,1x65536,8x8192 COMPILED_SHAPES=1x2048,8x8192 timeout 330 \
        python3 "${OFFICIAL:-scratch/official_prefill.py}" 2>&1 | tail -8
fi
