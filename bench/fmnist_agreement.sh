#!/usr/bin/env bash
# A Fashion-MNIST model trained by kiln and exported to ONNX by kiln predicts the same classes in
# onnxruntime as in kiln, on the whole test set (10000 images): kiln runs the .kiln model, onnxruntime
# the exported .onnx, on the same normalised images (bench/kiln_driver `dataset`). Prints max |kiln - ort|
# over the scores and the number of images whose predicted classes differ; fails unless that is at most
# MAX_MISMATCHES (default 0) and the scores agree within RTOL of their scale (default 1e-4; a quantized
# model, whose integer rounding each engine may do in its own order, is held to its predictions only).
# Usage: [MAX_MISMATCHES=N] [RTOL=R] bench/fmnist_agreement.sh KILN_DRIVER MODEL.kiln MODEL.onnx
set -euo pipefail
driver=$1
kiln_model=$2
onnx_model=$3
bench=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mapfile -t parts < <("$driver" dataset "$kiln_model" fashion-mnist:test "$work/in" 2000)
kiln_out=() ort_out=()
for part in "${parts[@]}"; do
    name=$(basename "$part" .npy)
    "$driver" run "$kiln_model" "$work/kiln-$name" "$part"
    node "$bench/ort_run.js" "$onnx_model" "$work/ort-$name" "$part"
    kiln_out+=("$(ls "$work/kiln-$name"/*.npy)")
    ort_out+=("$(ls "$work/ort-$name"/*.npy)")
done
join() { local IFS=,; echo "$*"; }
node "$bench/compare_npy.js" "$(join "${kiln_out[@]}")" "$(join "${ort_out[@]}")" --rtol "${RTOL:-1e-4}" --argmax \
    --max-mismatches "${MAX_MISMATCHES:-0}" --label "$(basename "$kiln_model") vs onnxruntime on $(basename "$onnx_model"), Fashion-MNIST test set"
