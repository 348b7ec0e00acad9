#!/usr/bin/env bash
# How much of its idle speed each engine keeps when another process holds one of the cores (issue 9,
# item 5): each case runs ROUNDS (default 3) alternating rounds of idle then busy, busy meaning
# `stress-ng --cpu 1` spinning beside it; kiln and its peer take turns within each. A figure is throughput
# over the whole run (samples/s: stalls count, so not a median latency), and "kept" is the busy median
# over the idle median. Cases (default all):
#   train-mlp, train-cnn, train-vit   kiln train 1 epoch (Fashion-MNIST, batch 64, Adam, 2 threads) against
#                                     PyTorch's loop (bench/torch_train_speed.py, OpenBLAS OpenMP build)
#   infer-resnet18                    batch 1, 2 threads, RUNS runs (default 200): kiln bench against
#                                     onnxruntime (bench/ort_bench.js), mean time per run
# Appends a dated table to bench/results/busy_speed.md.
# Usage: [ROUNDS=N] [RUNS=N] bench/busy_speed.sh [CASE...]
set -euo pipefail
cd "$(dirname "$0")/.."
cases=("$@")
[ ${#cases[@]} -gt 0 ] || cases=(train-mlp train-cnn infer-resnet18)
rounds=${ROUNDS:-3}
runs=${RUNS:-200}
bash scripts/install-deps.sh --bench
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
torch_blas=/usr/lib/x86_64-linux-gnu/openblas-openmp
tmp=$(mktemp -d)
stress_pid=
stop_stress() { [ -z "$stress_pid" ] || { kill "$stress_pid" 2>/dev/null; wait "$stress_pid" 2>/dev/null || true; }; stress_pid=; }
trap 'stop_stress; rm -rf "$tmp"' EXIT

field() { sed -n "s/.*\"$1\": *\([0-9.e+-]*\).*/\1/p"; }
median() { sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }

# samples/s of ENGINE (kiln, peer) on CASE, one run.
measure() {
    local engine=$1 case=$2
    case $case in
    train-*)
        local m=${case#train-}
        if [ "$engine" = kiln ]; then
            build/kiln train --model "examples/specs/fmnist_$m.txt" --data fashion-mnist --epochs 1 --batch 64 \
                --optimizer adam --threads 2 --out "$tmp/$m.kiln" --json --quiet | field samples_per_second
        else
            LD_LIBRARY_PATH=$torch_blas /usr/bin/python3 bench/torch_train_speed.py "$m" 2 | field samples_per_second
        fi
        ;;
    infer-*)
        local model=bench/models/${case#infer-}.onnx
        [ -f "$model" ] || /usr/bin/python3 tests/ref/make_torchvision_onnx.py bench/models "${case#infer-}" >/dev/null
        if [ "$engine" = kiln ]; then
            build/kiln bench "$model" --threads 2 --warmup 5 --iters "$runs" --json |
                awk -v runs="$runs" '{ match($0, /"seconds":[0-9.e+-]+/); print runs / substr($0, RSTART + 10, RLENGTH - 10) }'
        else
            (cd bench && node ort_bench.js "../$model" 1 2 5 "$runs") | field mean_ms | awk '{ print 1000 / $1 }'
        fi
        ;;
    *) echo "unknown case $case" >&2; exit 2 ;;
    esac
}

rows=""
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
for c in "${cases[@]}"; do
    declare -A runs_of=()
    for ((r = 1; r <= rounds; r++)); do
        for state in idle busy; do
            if [ "$state" = busy ]; then
                stress-ng --cpu 1 --quiet & stress_pid=$!
                sleep 1
            fi
            for engine in kiln peer; do
                v=$(measure "$engine" "$c")
                runs_of[$engine.$state]+="$v "
                printf '%-16s round %d %-4s %-4s %10.1f samples/s\n' "$c" "$r" "$state" "$engine" "$v"
            done
            stop_stress
        done
    done
    row="| $c |"
    for engine in kiln peer; do
        idle=$(printf '%s\n' ${runs_of[$engine.idle]} | median)
        busy=$(printf '%s\n' ${runs_of[$engine.busy]} | median)
        row+=$(awk -v i="$idle" -v b="$busy" 'BEGIN { printf " %.1f | %.1f | %.0f%% |", i, b, 100 * b / i }')
    done
    row+=" ${runs_of[kiln.idle]}/ ${runs_of[kiln.busy]}| ${runs_of[peer.idle]}/ ${runs_of[peer.busy]}|"
    echo "$row"
    rows+="$row"$'\n'
    unset runs_of
done
{
    echo
    echo "## $(date -u +%Y-%m-%d) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores"
    echo
    echo "kiln $(git rev-parse --short HEAD); busy = \`stress-ng --cpu 1\` beside the run; medians of $rounds alternating rounds;"
    echo "peer: PyTorch (OpenBLAS OpenMP build) for training, onnxruntime for inference. Load average before: $load_before"
    echo
    echo "| case | kiln idle samples/s | kiln busy | kiln kept | peer idle | peer busy | peer kept | kiln rounds idle / busy | peer rounds idle / busy |"
    echo "|---|---|---|---|---|---|---|---|---|"
    printf '%s' "$rows"
} >> bench/results/busy_speed.md
