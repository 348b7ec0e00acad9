#!/usr/bin/env bash
# Two kiln binaries side by side on the same models: `kiln bench` median latency, ROUNDS (default 3)
# alternating rounds of 2 s each, every round printed sorted. For a change to kiln itself (the thread
# pool against the OpenMP build, bench/results/threads.md), where onnxruntime is not the question.
# Usage: [ROUNDS=N] bench/ab_speed.sh KILN_A KILN_B [MODEL:BATCH:THREADS ...]
#   MODEL is a file of bench/models; default: the cases of bench/results/threads.md.
set -euo pipefail
cd "$(dirname "$0")/.."
a=$(readlink -f "$1") b=$(readlink -f "$2")
shift 2
cases=("$@")
[ ${#cases[@]} -gt 0 ] || cases=(resnet18.onnx:1:2 resnet18.onnx:32:2 mobilenet_v2.onnx:1:2 mobilenet_v2.onnx:32:2
    transformer.onnx:1:2 fmnist_cnn.kiln:1:2 fmnist_cnn.kiln:32:2 fmnist_mlp.kiln:1:2 fmnist_mlp.kiln:32:2
    resnet18.onnx:1:1 mobilenet_v2.onnx:1:1 fmnist_cnn_int8.kiln:1:2 resnet18_int8.kiln:1:2)
rounds=${ROUNDS:-3}
median_ms() { "$1" bench "bench/models/$2" --batch "$3" --threads "$4" --seconds 2 --json |
    sed -n 's/.*"median": *\([0-9.e+-]*\).*/\1/p'; }
echo "A: $a"; echo "B: $b"; echo "CPU: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores"
for c in "${cases[@]}"; do
    IFS=: read -r model batch threads <<< "$c"
    ra=() rb=()
    for _ in $(seq "$rounds"); do
        ra+=("$(median_ms "$a" "$model" "$batch" "$threads")")
        rb+=("$(median_ms "$b" "$model" "$batch" "$threads")")
    done
    echo "$model batch $batch threads $threads ms: A $(printf '%s\n' "${ra[@]}" | sort -g | tr '\n' ' ')| B $(printf '%s\n' "${rb[@]}" | sort -g | tr '\n' ' ')"
done
