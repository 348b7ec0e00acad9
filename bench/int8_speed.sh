#!/usr/bin/env bash
# Integer layers against f32, in kiln, 1 thread (and onnxruntime on the same QDQ file where asked):
#   fmnist_cnn  the Fashion-MNIST CNN (bench/fmnist_models.sh) and `kiln quantize --bits 8` of it,
#               calibrated on 512 training images; first the agreement of the integer path with the f32
#               QDQ reference path on the 10,000 test images (bench/kiln_driver.c `agree`)
#   resnet18, mobilenet_v2
#               torchvision's models (random weights, tests/ref/make_torchvision_onnx.py) and
#               `kiln quantize --bits 8` of them calibrated on CALIB (default 64) random images; their QDQ
#               export (`kiln convert`) runs in onnxruntime too when bench/node_modules has onnxruntime-node
# at batch 1 and 32 (BATCHES). The machine is shared: each case runs ROUNDS (default 5) alternating rounds
# of f32 then int8 (then onnxruntime), and the table gives the median of the rounds and their range.
# A round's figure is
#   default  the median wall time of its runs (kiln_driver `time`, ort_bench.js)
#   CPU=1    CPU time per run: the process's CPU time over the timed runs, divided by their number
#            (`kiln bench --json` and ort_bench.js report it as cpu_ms_per_run): what waiting for the
#            shared cores adds to wall time does not count.
# Appends the table, with the date and the CPU, to bench/results/int8.md.
# Usage: [ROUNDS=N] [REUSE=1] [CPU=1] [BATCHES="1 32"] bench/int8_speed.sh [MODEL...]
#        (fmnist_cnn resnet18 mobilenet_v2; default fmnist_cnn resnet18)
set -euo pipefail
cd "$(dirname "$0")/.."
models=("$@")
[ ${#models[@]} -gt 0 ] || models=(fmnist_cnn resnet18)
rounds=${ROUNDS:-5}
calib=${CALIB:-64}
batches=${BATCHES:-1 32}

cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j2 >/dev/null
driver=$(bash bench/build_driver.sh build)
mkdir -p bench/models
have_ort=0
[ -d bench/node_modules/onnxruntime-node ] && have_ort=1

field() { sed -n "s/.*\"$1\": *\([0-9.e+-]*\).*/\1/p"; }
# "median [min - max]" of the numbers on stdin.
summary() { sort -g | awk '{ v[NR] = $1 } END { m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
                                              printf "%.4f %.4f %.4f\n", m, v[1], v[NR] }'; }

# Prepares bench/models/<m>_f32.kiln, <m>_int8.kiln and <m>_int8.onnx; prints a note on the agreement.
# With REUSE=1 the files of an earlier run are kept.
prepare() {
    local m=$1
    if [ "${REUSE:-0}" = 1 ] && [ -f "bench/models/${m}_int8.onnx" ]; then
        echo "models of an earlier run reused"
        return
    fi
    case $m in
    fmnist_cnn)
        bash bench/fmnist_models.sh build/kiln bench/models >/dev/null
        cp bench/models/fmnist_cnn.kiln bench/models/fmnist_cnn_f32.kiln
        build/kiln quantize bench/models/fmnist_cnn_f32.kiln --out bench/models/fmnist_cnn_int8.kiln --bits 8 \
            --calib fashion-mnist --calib-samples 512 --threads 2 >/dev/null
        echo "integer path vs f32 QDQ reference on fashion-mnist:test: $("$driver" agree bench/models/fmnist_cnn_int8.kiln fashion-mnist:test)"
        ;;
    resnet18 | mobilenet_v2)
        [ -f "bench/models/$m.onnx" ] || /usr/bin/python3 tests/ref/make_torchvision_onnx.py bench/models "$m"
        build/kiln convert "bench/models/$m.onnx" "bench/models/${m}_f32.kiln" >/dev/null
        /usr/bin/python3 -c "import numpy as np; r = np.random.default_rng(3)
np.save('bench/models/calib_x.npy', r.standard_normal(($calib, 3, 224, 224)).astype(np.float32))
np.save('bench/models/calib_y.npy', r.integers(0, 1000, $calib).astype(np.int64))"
        build/kiln quantize "bench/models/${m}_f32.kiln" --out "bench/models/${m}_int8.kiln" --bits 8 \
            --calib bench/models/calib_x.npy,bench/models/calib_y.npy --calib-samples "$calib" --threads 2 >/dev/null
        echo "integer path vs f32 QDQ reference on the $calib calibration images: $("$driver" agree "bench/models/${m}_int8.kiln" bench/models/calib_x.npy,bench/models/calib_y.npy)"
        ;;
    esac
    build/kiln convert "bench/models/${m}_int8.kiln" "bench/models/${m}_int8.onnx" >/dev/null
}

# One round's ms per run of ENGINE (kiln, ort) on MODEL at BATCH, ITERS runs after WARMUP.
measure() {
    local engine=$1 model=$2 batch=$3 warmup=$4 iters=$5
    if [ "${CPU:-0}" = 1 ] && [ "$engine" = kiln ]; then
        OMP_WAIT_POLICY=passive build/kiln bench "$model" --batch "$batch" --threads 1 --warmup "$warmup" \
            --iters "$iters" --json | sed -n 's/.*"cpu_ms_per_run":\([0-9.e+-]*\).*/\1/p'
    elif [ "${CPU:-0}" = 1 ]; then
        node bench/ort_bench.js "$model" "$batch" 1 "$warmup" "$iters" | field cpu_ms_per_run
    elif [ "$engine" = kiln ]; then
        "$driver" time "$model" "$batch" 1 "$warmup" "$iters" | field median_ms
    else
        node bench/ort_bench.js "$model" "$batch" 1 "$warmup" "$iters" | field median_ms
    fi
}

rows=""
notes=""
for m in "${models[@]}"; do
    notes+="- $m: $(prepare "$m")"$'\n'
    for batch in $batches; do
        probe=$("$driver" time "bench/models/${m}_f32.kiln" "$batch" 1 1 3 | field median_ms)
        iters=$(awk -v t="$probe" 'BEGIN { n = int(1000 / t); print (n < 5 ? 5 : (n > 300 ? 300 : n)) }')
        warmup=$(( iters / 10 > 3 ? iters / 10 : 3 ))
        : > /tmp/int8_f32.$$ && : > /tmp/int8_int8.$$ && : > /tmp/int8_ort.$$
        for ((r = 0; r < rounds; r++)); do
            measure kiln "bench/models/${m}_f32.kiln" "$batch" "$warmup" "$iters" >> /tmp/int8_f32.$$
            measure kiln "bench/models/${m}_int8.kiln" "$batch" "$warmup" "$iters" >> /tmp/int8_int8.$$
            if [ $have_ort = 1 ]; then
                measure ort "bench/models/${m}_int8.onnx" "$batch" "$warmup" "$iters" >> /tmp/int8_ort.$$
            fi
        done
        read -r f f_lo f_hi < <(summary < /tmp/int8_f32.$$)
        read -r q q_lo q_hi < <(summary < /tmp/int8_int8.$$)
        ort="-"
        if [ $have_ort = 1 ]; then
            read -r o o_lo o_hi < <(summary < /tmp/int8_ort.$$)
            ort=$(awk -v o="$o" -v a="$o_lo" -v b="$o_hi" -v q="$q" 'BEGIN { printf "%.3f [%.3f - %.3f] (int8 kiln / ort %.2f)", o, a, b, q / o }')
        fi
        line=$(awk -v m="$m" -v b="$batch" -v n="$iters" -v f="$f" -v fl="$f_lo" -v fh="$f_hi" -v q="$q" -v ql="$q_lo" \
            -v qh="$q_hi" -v ort="$ort" 'BEGIN { printf "| %s | %d | %d | %.3f [%.3f - %.3f] | %.3f [%.3f - %.3f] | %.2fx | %s |",
                                              m, b, n, f, fl, fh, q, ql, qh, f / q, ort }')
        echo "$line"
        rows+=$line$'\n'
    done
done
rm -f /tmp/int8_f32.$$ /tmp/int8_int8.$$ /tmp/int8_ort.$$

{
    echo
    echo "## $(date -u +%Y-%m-%d) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores"
    echo
    if [ "${CPU:-0}" = 1 ]; then
        per_run="CPU ms per run (the process's CPU time over the timed runs: kiln bench's and ort_bench.js's cpu_ms_per_run)"
    else
        per_run="ms per run: median of the rounds' medians"
    fi
    echo "kiln $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src || echo '+changes'), 1 thread, $rounds alternating" \
         "rounds; $per_run [fastest - slowest round]. Load average after: $(cut -d' ' -f1-3 /proc/loadavg)."
    echo
    printf '%s' "$notes"
    echo
    echo "| model | batch | runs per round | f32 ms | int8 ms | int8 speed-up | onnxruntime on the int8 QDQ file, ms |"
    echo "|---|---|---|---|---|---|---|"
    printf '%s' "$rows"
} >> bench/results/int8.md
echo "appended to bench/results/int8.md"
