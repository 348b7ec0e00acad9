#!/usr/bin/env bash
# kiln's outputs against onnxruntime's (npm onnxruntime-node, its CPU library) on the same seeded random
# inputs, at batch 1 and 8 (bench/compare_one.sh): torchvision's resnet18 and mobilenet_v2 (random weights,
# tests/ref/make_torchvision_onnx.py), both engines reading the same ONNX file; and the Fashion-MNIST MLP
# and CNN (bench/fmnist_models.sh), kiln running the .kiln model it trained and onnxruntime its ONNX
# export, or — while kiln cannot export — both running the PyTorch twins. Each output must satisfy
# max |kiln - ort| <= 1e-4 * max |ort|; the figures are printed. Then, when the Fashion-MNIST models were
# exported by kiln, bench/fmnist_agreement.sh counts the test images on which onnxruntime running the
# exported file and kiln running the .kiln model predict different classes.
# Usage: bench/compare_ort.sh
set -euo pipefail
cd "$(dirname "$0")/.."
(cd bench && npm ci --ignore-scripts --no-audit --no-fund >/dev/null) # the package ships its CPU library
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
driver=$(bash bench/build_driver.sh build)
mkdir -p bench/models
for m in resnet18 mobilenet_v2; do
    [ -f "bench/models/$m.onnx" ] || /usr/bin/python3 tests/ref/make_torchvision_onnx.py bench/models "$m"
done
fmnist_source=$(bash bench/fmnist_models.sh build/kiln bench/models)
echo "Fashion-MNIST ONNX files: $(echo "$fmnist_source" | tr '\n' ' ')"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

status=0
for m in resnet18 mobilenet_v2 fmnist_mlp fmnist_cnn; do
    kiln_model=bench/models/$m.onnx
    if [[ $m == fmnist_* ]] && ! echo "$fmnist_source" | grep -q twin; then
        kiln_model=bench/models/$m.kiln
    fi
    for batch in 1 8; do
        bash bench/compare_one.sh "$driver" "$kiln_model" "bench/models/$m.onnx" "$batch" "$work" || status=1
    done
done
if ! echo "$fmnist_source" | grep -q twin; then
    for m in mlp cnn; do
        bash bench/fmnist_agreement.sh "$driver" "bench/models/fmnist_$m.kiln" "bench/models/fmnist_$m.onnx" || status=1
    done
else
    echo "kiln cannot export ONNX yet: no test-set agreement of exported models"
fi
[ $status -eq 0 ] && echo "all outputs agree" || echo "FAILED: some outputs disagree"
exit $status
