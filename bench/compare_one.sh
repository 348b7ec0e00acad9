#!/usr/bin/env bash
# One model at one batch size through kiln and onnxruntime on the same seeded random inputs: prints, per
# output, max |kiln - ort|, max |ort| and their ratio, and fails when the ratio exceeds 1e-4.
# kiln runs KILN_MODEL (.onnx through its importer, or .kiln) with bench/kiln_driver, onnxruntime runs
# ORT_MODEL with bench/ort_run.js: the same file, or a .kiln model and its ONNX export.
# Usage: bench/compare_one.sh KILN_DRIVER KILN_MODEL ORT_MODEL.onnx BATCH WORK_DIR
set -euo pipefail
driver=$1
kiln_model=$2
ort_model=$3
batch=$4
work=$5
bench=$(cd "$(dirname "$0")" && pwd)
name=$(basename "$kiln_model")
dir=$work/$name-$batch
rm -rf "$dir"
mkdir -p "$dir"
mapfile -t inputs < <("$driver" inputs "$kiln_model" "$batch" 7 "$dir/in")
"$driver" run "$kiln_model" "$dir/kiln" "${inputs[@]}"
node "$bench/ort_run.js" "$ort_model" "$dir/ort" "${inputs[@]}"
status=0
for out in "$dir"/ort/*.npy; do
    node "$bench/compare_npy.js" "$dir/kiln/$(basename "$out")" "$out" --rtol 1e-4 \
        --label "$name batch $batch, output $(basename "$out" .npy)" || status=1
done
exit $status
