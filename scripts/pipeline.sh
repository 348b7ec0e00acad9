#!/usr/bin/env bash
# The main job: build kiln, train the example models on Fashion-MNIST, evaluate them on the test set,
# then deploy the CNN: convert it to ONNX, inspect it, classify an image with the runtime and time it.
# Installs what it needs first. Outputs go to out/ (models, logs, the .onnx).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)"
mkdir -p out
threads=$(nproc)

train() { # name epochs extra-args...
    local name=$1 epochs=$2
    shift 2
    echo "== training fmnist_$name ($epochs epochs)"
    build/kiln train --model "examples/specs/fmnist_$name.txt" --data fashion-mnist --val fashion-mnist:test \
        --epochs "$epochs" --batch 64 --threads "$threads" --out "out/fmnist_$name.kiln" \
        --log "out/fmnist_$name.csv" "$@"
}

train mlp 5 --optimizer adam --lr 2e-3 --schedule cosine
train cnn 5 --optimizer adam --lr 2e-3 --schedule cosine
train vit 10 --optimizer adam --lr 2e-3 --schedule cosine --warmup 500

echo
echo "== Fashion-MNIST test accuracy"
printf '%-12s %10s %10s\n' model accuracy loss
for name in mlp cnn vit; do
    json=$(build/kiln eval "out/fmnist_$name.kiln" --data fashion-mnist:test --json)
    acc=$(echo "$json" | sed -n 's/.*"accuracy":\([0-9.]*\).*/\1/p')
    loss=$(echo "$json" | sed -n 's/.*"loss":\([0-9.]*\).*/\1/p')
    printf '%-12s %10s %10s\n' "fmnist_$name" "$acc" "$loss"
done

echo
echo "== deploy fmnist_cnn: .kiln -> .onnx, info, run on a test image, bench"
build/kiln convert out/fmnist_cnn.kiln out/fmnist_cnn.onnx
build/kiln info out/fmnist_cnn.kiln
build/kiln run out/fmnist_cnn.onnx tests/data/fmnist_test_2_trouser.png --top 3
build/kiln bench out/fmnist_cnn.kiln --batch 1 --threads "$threads"
build/kiln bench out/fmnist_cnn.kiln --batch 32 --threads "$threads"
