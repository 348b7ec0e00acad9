#!/usr/bin/env bash
# Inference speed, kiln vs onnxruntime (npm onnxruntime-node, its CPU library), in the same run on the
# same ONNX files: torchvision's resnet18, mobilenet_v2 and mobilenet_v3_large and a 4-layer torch.nn
# transformer encoder (random weights, tests/ref/make_torchvision_onnx.py) and the Fashion-MNIST MLP and
# CNN (bench/fmnist_models.sh), at 1 and 2 threads, batch 1 and 32.
#
# kiln: bench/kiln_driver `time` (the public C API; kiln's ONNX importer reads the file). onnxruntime:
# bench/ort_bench.js (intra-op threads T, inter-op 1, sequential, every graph optimization). Both fill
# the inputs with seeded random values, make the same warm-up runs, then time the same number of runs
# (chosen per case so that the timed runs take about 2 s), timing only the run call; each reports the
# median. The two alternate, two rounds each, and the faster round of each counts, so that a burst of
# load on the machine does not land on one engine only. Before each case the script waits (up to a
# minute) for other processes to leave the CPUs, and records how busy they were: on a shared machine a
# thread that loses its core stalls every parallel region of a 2-thread run.
#
# Prints the table and appends it, with the date, the CPU and kiln's per-op profile of its slowest cases
# against onnxruntime, to bench/results/deploy_speed.md.
# Usage: bench/deploy_speed.sh [MODEL...]
#   (resnet18 mobilenet_v2 mobilenet_v3_large transformer fmnist_mlp fmnist_cnn; default all)
set -euo pipefail
cd "$(dirname "$0")/.."
models=("$@")
[ ${#models[@]} -gt 0 ] || models=(resnet18 mobilenet_v2 mobilenet_v3_large transformer fmnist_mlp fmnist_cnn)

(cd bench && npm ci --ignore-scripts --no-audit --no-fund >/dev/null) # the package ships its CPU library
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
driver=$(bash bench/build_driver.sh build)
mkdir -p bench/models
for m in resnet18 mobilenet_v2 mobilenet_v3_large transformer; do
    [ -f "bench/models/$m.onnx" ] || /usr/bin/python3 tests/ref/make_torchvision_onnx.py bench/models "$m"
done
fmnist_source=$(bash bench/fmnist_models.sh build/kiln bench/models)
load_before=$(cut -d' ' -f1-3 /proc/loadavg)

field() { sed -n "s/.*\"$1\": *\([0-9.e+-]*\).*/\1/p"; }
# Percent of the machine's CPU time in use over one second (from /proc/stat: user, nice, system, idle,
# iowait, irq, softirq, steal).
busy_percent() {
    local a b
    a=$(head -1 /proc/stat)
    sleep 1
    b=$(head -1 /proc/stat)
    echo "$a $b" | awk '{ for (i = 2; i <= 9; i++) { t0 += $i; t1 += $(i + NF / 2) }
                          idle = ($(5 + NF / 2) + $(6 + NF / 2)) - ($5 + $6)
                          printf "%.0f", 100 * (1 - idle / (t1 - t0)) }'
}
# Waits up to a minute for the other processes to leave the CPUs (below 10 % busy); prints the last figure.
wait_quiet() {
    local busy tries=0
    busy=$(busy_percent)
    while [ "$busy" -ge 10 ] && [ $tries -lt 60 ]; do
        busy=$(busy_percent)
        tries=$((tries + 1))
    done
    echo "$busy"
}
# The faster of two medians.
faster() { awk -v a="$1" -v b="$2" 'BEGIN { print (a < b ? a : b) }'; }

rows=""
worst=()
for m in "${models[@]}"; do
    onnx=bench/models/$m.onnx
    for threads in 1 2; do
        for batch in 1 32; do
            # Iterations for about 2 s of timed runs, from a short kiln run.
            probe=$("$driver" time "$onnx" "$batch" "$threads" 1 3 | field median_ms)
            iters=$(awk -v t="$probe" 'BEGIN { n = int(2000 / t); print (n < 10 ? 10 : (n > 300 ? 300 : n)) }')
            warmup=$(( iters / 10 > 3 ? iters / 10 : 3 ))
            busy=$(wait_quiet)
            k1=$("$driver" time "$onnx" "$batch" "$threads" "$warmup" "$iters")
            o1=$(node bench/ort_bench.js "$onnx" "$batch" "$threads" "$warmup" "$iters")
            k2=$("$driver" time "$onnx" "$batch" "$threads" "$warmup" "$iters")
            o2=$(node bench/ort_bench.js "$onnx" "$batch" "$threads" "$warmup" "$iters")
            k=$(faster "$(echo "$k1" | field median_ms)" "$(echo "$k2" | field median_ms)")
            o=$(faster "$(echo "$o1" | field median_ms)" "$(echo "$o2" | field median_ms)")
            ratio=$(awk -v k="$k" -v o="$o" 'BEGIN { printf "%.2f", k / o }')
            line=$(awk -v m="$m" -v t="$threads" -v b="$batch" -v n="$iters" -v k="$k" -v o="$o" -v r="$ratio" \
                -v busy="$busy" 'BEGIN { printf "| %s | %d | %d | %d | %.3f | %.3f | %.0f | %.0f | %s | %s |", m, t, b,
                                         n, k, o, b * 1000 / k, b * 1000 / o, r, busy }')
            echo "$line"
            rows+=$line$'\n'
            worst+=("$ratio $m $threads $batch")
        done
    done
done

# kiln's per-op profile for its three slowest cases against onnxruntime.
profiles=""
while read -r ratio m threads batch; do
    profile=$("$driver" time "bench/models/$m.onnx" "$batch" "$threads" 3 20 8 2>&1 >/dev/null)
    profiles+=$'\n'"kiln profile, $m, $threads thread(s), batch $batch (kiln / onnxruntime $ratio):"$'\n\n'
    profiles+='```'$'\n'"$profile"$'\n''```'$'\n'
done < <(printf '%s\n' "${worst[@]}" | sort -rn | head -3)

{
    echo
    echo "## $(date -u +%Y-%m-%d) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores"
    echo
    echo "kiln $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src || echo '+changes'), onnxruntime-node" \
         "$(node -p "require('./bench/node_modules/onnxruntime-node/package.json').version");" \
         "Fashion-MNIST ONNX files: $(echo "$fmnist_source" | paste -sd, - | sed 's/,/, /g')." \
         "Load average (1, 5, 15 min) before the runs: $load_before; after: $(cut -d' ' -f1-3 /proc/loadavg)."
    echo
    echo "| model | threads | batch | runs | kiln ms | onnxruntime ms | kiln samples/s | onnxruntime samples/s" \
         "| kiln / onnxruntime | CPU busy before, % |"
    echo "|---|---|---|---|---|---|---|---|---|---|"
    printf '%s' "$rows"
    printf '%s' "$profiles"
} >> bench/results/deploy_speed.md
echo "appended to bench/results/deploy_speed.md"
