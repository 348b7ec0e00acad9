#!/usr/bin/env bash
# Training speed, kiln vs PyTorch, on the same Fashion-MNIST models in the same run: one epoch each,
# batch 64, Adam, THREADS threads (default 2). Prints samples/s and the ratio kiln / PyTorch per model
# and appends a dated table to bench/results/train_speed.md.
# Usage: bench/train_speed.sh [THREADS] [MODELS...]     (models: mlp cnn vit; default mlp cnn)
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-2}
shift || true
models=("${@:-mlp cnn}")
read -r -a models <<< "${models[*]}"
bash scripts/install-deps.sh --bench
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
# PyTorch's dense layers go through libblas.so.3; the OpenMP build of OpenBLAS shares PyTorch's thread
# pool (the pthread build oversubscribes the cores: 3x slower on the MLP here).
torch_blas=/usr/lib/x86_64-linux-gnu/openblas-openmp
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

field() { sed -n "s/.*\"$1\": *\([0-9.e+-]*\).*/\1/p"; }
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
rows=""
for m in "${models[@]}"; do
    kiln_json=$(build/kiln train --model "examples/specs/fmnist_$m.txt" --data fashion-mnist --epochs 1 --batch 64 \
        --optimizer adam --threads "$threads" --out "$tmp/$m.kiln" --json --quiet)
    torch_json=$(LD_LIBRARY_PATH=$torch_blas /usr/bin/python3 bench/torch_train_speed.py "$m" "$threads")
    k=$(echo "$kiln_json" | field samples_per_second)
    t=$(echo "$torch_json" | field samples_per_second)
    ratio=$(awk -v k="$k" -v t="$t" 'BEGIN{printf "%.2f", k / t}')
    printf '%-4s threads %s: kiln %8.0f samples/s, pytorch %8.0f samples/s, ratio %s\n' "$m" "$threads" "$k" "$t" "$ratio"
    rows+=$(printf '| %s | %s | %.0f | %.0f | %s |' "$m" "$threads" "$k" "$t" "$ratio")$'\n'
done
{
    echo
    echo "## $(date -u +%Y-%m-%d) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores"
    echo
    echo "PyTorch with OpenBLAS (OpenMP build). Load average before the run: $load_before"
    echo
    echo "| model | threads | kiln samples/s | PyTorch samples/s | kiln / PyTorch |"
    echo "|---|---|---|---|---|"
    printf '%s' "$rows"
} >> bench/results/train_speed.md
