#!/usr/bin/env bash
# The main job, the whole life of a model: build kiln; train the example models on Fashion-MNIST (MLP,
# CNN, vision transformer); compress the CNN — prune + fine-tune, post-training int8, quantization-aware
# int4, distillation into a quarter-size student; export to ONNX; run in kiln and in onnxruntime; and
# print the final table and write an HTML report. Installs what it needs first. Outputs go to out/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)"
mkdir -p out
threads=$(nproc)
start=$SECONDS

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
train vit 8 --optimizer adam --lr 2e-3 --schedule cosine --warmup 500

echo
echo "== Fashion-MNIST test accuracy"
printf '%-12s %10s %10s\n' model accuracy loss
for name in mlp cnn vit; do
    json=$(build/kiln eval "out/fmnist_$name.kiln" --data fashion-mnist:test --json)
    acc=$(echo "$json" | sed -n 's/.*"accuracy":\([0-9.]*\).*/\1/p')
    loss=$(echo "$json" | sed -n 's/.*"loss":\([0-9.]*\).*/\1/p')
    printf '%-12s %10s %10s\n' "fmnist_$name" "$acc" "$loss"
done

cnn=out/fmnist_cnn.kiln
common=(--data fashion-mnist --val fashion-mnist:test --threads "$threads" --batch 64 --optimizer adam)
echo
echo "== compress fmnist_cnn: global L1 pruning of 90% of the weights, 2 epochs of fine-tuning"
build/kiln prune "$cnn" "${common[@]}" --method l1 --amount 0.9 --scope global --finetune 2 --lr 5e-4 --lr-schedule cosine \
    --no-latency --out out/cnn_pruned90.kiln
echo
echo "== compress fmnist_cnn: post-training int8 (weights per channel, activations from 512 images)"
build/kiln quantize "$cnn" --bits 8 --calib fashion-mnist --calib-samples 512 --val fashion-mnist:test \
    --threads "$threads" --out out/cnn_int8.kiln
echo
echo "== compress fmnist_cnn: quantization-aware training, int4 weights, 2 epochs"
build/kiln train --model "$cnn" "${common[@]}" --epochs 2 --lr 5e-4 --schedule cosine --qat --bits 4 --out out/cnn_qat_int4.kiln
echo
echo "== compress fmnist_cnn: distillation into a student with a quarter of the channels, 3 epochs"
sed 's/^conv 32 /conv 8 /; s/^conv 64 /conv 16 /; s/^dense 128/dense 32/' examples/specs/fmnist_cnn.txt > out/student.txt
build/kiln distill --teacher "$cnn" --student out/student.txt "${common[@]}" --epochs 3 \
    --out out/cnn_student.kiln

echo
echo "== deploy: the int8 model as QDQ ONNX, run in kiln and in onnxruntime on the 10,000 test images"
build/kiln convert out/cnn_int8.kiln out/cnn_int8.onnx
build/kiln info out/cnn_int8.kiln
build/kiln run out/cnn_int8.onnx tests/data/fmnist_test_2_trouser.png --top 3
if node -e "require('./bench/node_modules/onnxruntime-node')" 2>/dev/null; then
    driver=$(bash bench/build_driver.sh build)
    MAX_MISMATCHES=50 RTOL=1 bash bench/fmnist_agreement.sh "$driver" out/cnn_int8.kiln out/cnn_int8.onnx
    build/kiln convert out/cnn_pruned90.kiln out/cnn_pruned90.onnx > /dev/null
    bash bench/fmnist_agreement.sh "$driver" out/cnn_pruned90.kiln out/cnn_pruned90.onnx
else
    echo "(onnxruntime-node is not installed: scripts/install-deps.sh installs it)"
fi

echo
echo "== the final table: every model of the CNN's life, measured as saved (out/report.html draws it)"
build/kiln report "$cnn" out/cnn_pruned90.kiln out/cnn_int8.kiln out/cnn_qat_int4.kiln out/cnn_student.kiln \
    --data fashion-mnist:test --threads "$threads" --out out/report.html --quiet --json > out/report.json
/usr/bin/python3 - out/report.json <<'PY'
import json, sys
models = json.load(open(sys.argv[1]))["models"]
base = models[0]
print(f"{'model':<22}{'accuracy':>9}{'change':>9}{'file':>11}{'smaller':>9}{'MFLOPs':>8}{'b1 ms':>8}{'b32 ms':>8}")
for m in models:
    print(f"{m['label']:<22}{m['accuracy']:>9.4f}{100 * (m['accuracy'] - base['accuracy']):>+8.2f}pt"
          f"{m['file_bytes'] / 1024:>8.0f}KiB{base['file_bytes'] / m['file_bytes']:>8.2f}x{m['flops'] / 1e6:>8.2f}"
          f"{m['latency_ms_batch1']:>8.3f}{m['latency_ms_batch32']:>8.3f}")
PY
echo
echo "done in $((SECONDS - start)) s after the build; report: out/report.html"
