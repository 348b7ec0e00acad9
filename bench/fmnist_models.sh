#!/usr/bin/env bash
# The Fashion-MNIST models of examples/specs/ (MLP and CNN) as kiln trained them and as ONNX files, for
# the comparisons with onnxruntime:
#   OUT_DIR/fmnist_<m>.kiln   out/fmnist_<m>.kiln when the pipeline has made it, else `kiln train` for
#                             one epoch (seeded)
#   OUT_DIR/fmnist_<m>.onnx   that model exported by `kiln convert`; when this kiln cannot export yet,
#                             the PyTorch-exported quarter-width twin tests/ref/data/onnx_<m>.onnx
# and prints one line per model: "<m> exported" or "<m> twin".
# Usage: bench/fmnist_models.sh KILN_BINARY OUT_DIR
set -euo pipefail
kiln=$1
out=$2
src=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$out"
for m in mlp cnn; do
    model=$out/fmnist_$m.kiln
    if [ -f "$src/out/fmnist_$m.kiln" ]; then
        cp "$src/out/fmnist_$m.kiln" "$model"
    elif [ ! -f "$model" ]; then
        "$kiln" train --model "$src/examples/specs/fmnist_$m.txt" --data fashion-mnist --epochs 1 --batch 64 \
            --optimizer adam --seed 1 --threads 2 --quiet --out "$model" >&2
    fi
    rm -f "$out/fmnist_$m.onnx"
    if "$kiln" convert "$model" "$out/fmnist_$m.onnx" >/dev/null 2>&1; then
        echo "$m exported"
    else
        cp "$src/tests/ref/data/onnx_$m.onnx" "$out/fmnist_$m.onnx"
        echo "$m twin"
    fi
done
