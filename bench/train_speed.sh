#!/usr/bin/env bash
# Training speed, kiln vs PyTorch, on the same Fashion-MNIST models in the same run: one epoch each,
# batch 64, Adam, THREADS threads (default 2), ROUNDS rounds (default 3) alternating the two engines.
# Each engine's figure is its median round: the machine is shared, and one epoch of either engine
# varies by 5-10% between runs. Prints every round and the ratio kiln / PyTorch per model, and appends
# a dated table to bench/results/train_speed.md.
# Usage: [ROUNDS=N] bench/train_speed.sh [THREADS] [MODELS...]     (models: mlp cnn vit; default mlp cnn)
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
rounds=${ROUNDS:-3}
median() { sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
for m in "${models[@]}"; do
    kiln_runs=() torch_runs=()
    for ((r = 1; r <= rounds; r++)); do
        kiln_json=$(build/kiln train --model "examples/specs/fmnist_$m.txt" --data fashion-mnist --epochs 1 \
            --batch 64 --optimizer adam --threads "$threads" --out "$tmp/$m.kiln" --json --quiet)
        torch_json=$(LD_LIBRARY_PATH=$torch_blas /usr/bin/python3 bench/torch_train_speed.py "$m" "$threads")
        kiln_runs+=("$(echo "$kiln_json" | field samples_per_second)")
        torch_runs+=("$(echo "$torch_json" | field samples_per_second)")
        printf '%-4s round %d: kiln %8.0f samples/s, pytorch %8.0f samples/s\n' "$m" "$r" "${kiln_runs[-1]}" \
            "${torch_runs[-1]}"
    done
    k=$(printf '%s\n' "${kiln_runs[@]}" | median)
    t=$(printf '%s\n' "${torch_runs[@]}" | median)
    ratio=$(awk -v k="$k" -v t="$t" 'BEGIN{printf "%.2f", k / t}')
    printf '%-4s threads %s: kiln %8.0f samples/s, pytorch %8.0f samples/s (medians of %d), ratio %s\n' "$m" \
        "$threads" "$k" "$t" "$rounds" "$ratio"
    all_kiln=$(printf '%.0f ' "${kiln_runs[@]}")
    all_torch=$(printf '%.0f ' "${torch_runs[@]}")
    rows+=$(printf '| %s | %s | %.0f | %.0f | %s | %s| %s|' "$m" "$threads" "$k" "$t" "$ratio" "$all_kiln" \
        "$all_torch")$'\n'
done
{
    echo
    echo "## $(date -u +%Y-%m-%d) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores"
    echo
    echo "kiln $(git rev-parse --short HEAD); PyTorch with OpenBLAS (OpenMP build); medians of $rounds alternating rounds."
    echo "Load average before the run: $load_before; after: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo
    echo "| model | threads | kiln samples/s | PyTorch samples/s | kiln / PyTorch | kiln rounds | PyTorch rounds |"
    echo "|---|---|---|---|---|---|---|"
    printf '%s' "$rows"
} >> bench/results/train_speed.md
