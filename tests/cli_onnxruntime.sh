#!/usr/bin/env bash
# kiln against onnxruntime (npm onnxruntime-node in bench/node_modules, installed by `cd bench && npm ci`;
# this test never downloads anything and is skipped without it). On the same seeded random inputs at
# batch 1 and 8 (bench/compare_one.sh), every output must satisfy max |kiln - ort| <= 1e-4 * max |ort|:
#   - the committed PyTorch exports tests/ref/data/onnx_{mlp,cnn,vit}.onnx, both engines reading the file;
#   - tests/ref/data/onnx_qoperator.onnx (tests/ref/make_qoperator_onnx.py): QLinearConv chains and a
#     DynamicQuantizeLinear -> MatMulInteger product, which kiln's integer layers run: equal levels and sums
#     give a difference of 0;
#   - when Fashion-MNIST is installed and kiln can export ONNX (`kiln convert`), the MLP and the CNN of
#     examples/specs/ that `kiln train` trains for one epoch on 2000 test images: kiln runs the .kiln model,
#     onnxruntime its export.
source "$(dirname "$0")/support/cli_common.sh" "$@"
build=$(cd "$(dirname "$kiln")" && pwd)

if ! cli_onnxruntime_loads; then
    echo "skipped: onnxruntime-node does not load from bench/node_modules (scripts/install-deps.sh installs it)"
    echo "0 passed, 0 failed, 1 skipped"
    exit 0
fi
driver=$(bash "$src/bench/build_driver.sh" "$build")
check "bench/kiln_driver builds against $build" '[ -x "$driver" ]'

compare() { # KILN_MODEL ORT_MODEL: batch 1 and 8
    local kiln_model=$1 ort_model=$2
    for batch in 1 8; do
        check "$(basename "$kiln_model") batch $batch agrees with onnxruntime" \
            'bash "$src/bench/compare_one.sh" "$driver" "$kiln_model" "$ort_model" $batch "$work"'
    done
}
for m in mlp cnn vit qoperator; do
    compare "$src/tests/ref/data/onnx_$m.onnx" "$src/tests/ref/data/onnx_$m.onnx"
done

# A model trained on CSV features standardises them (mean/std of the training data): its ONNX export does
# so in the graph (Sub/Div at the input), so onnxruntime on the raw rows gives what `kiln run` gives on the
# CSV; kiln's own import of that ONNX file runs it without standardising twice.
/usr/bin/python3 -c "
import numpy as np
rng = np.random.default_rng(3)
x = rng.normal(size=(64, 4)) * np.array([50.0, 0.01, 3.0, 1000.0]) + np.array([300.0, -2.0, 0.0, 5e4])
y = ((x[:, 0] - 300) / 50 + (x[:, 3] - 5e4) / 1000 > 0).astype(int) + (x[:, 2] > 2)
with open('$work/rows.csv', 'w') as f:
    f.write('a,b,c,d,label\\n')
    for row, label in zip(x, y):
        f.write(','.join(f'{v:.6f}' for v in row) + f',{label}\\n')
np.save('$work/rows.npy', np.loadtxt('$work/rows.csv', delimiter=',', skiprows=1)[:, :4].astype(np.float32))"
printf 'input 4\ndense 16\nrelu\ndense 3\n' > "$work/csv_spec.txt"
"$kiln" train --model "$work/csv_spec.txt" --data "$work/rows.csv" --epochs 3 --batch 16 --quiet \
    --out "$work/csv.kiln" > /dev/null
check "kiln exports the CSV model to ONNX" '"$kiln" convert "$work/csv.kiln" "$work/csv.onnx" > /dev/null'
check "kiln runs the CSV model on the CSV" '"$kiln" run "$work/csv.kiln" "$work/rows.csv" --out "$work/csv_kiln" > /dev/null'
check "kiln runs its ONNX export on the CSV" \
    '"$kiln" run "$work/csv.onnx" "$work/rows.csv" --out "$work/csv_onnx" > /dev/null'
check "onnxruntime runs the export on the raw rows" \
    'node "$src/bench/ort_run.js" "$work/csv.onnx" "$work/csv_ort" "$work/rows.npy" > /dev/null'
check "kiln run wrote the outputs" 'ls "$work"/csv_kiln/*.npy > /dev/null 2>&1'
for out in "$work"/csv_kiln/*.npy; do
    name=$(basename "$out")
    check "onnxruntime on raw rows matches kiln run on the CSV ($name)" \
        'node "$src/bench/compare_npy.js" "$out" "$work/csv_ort/$name" --rtol 1e-4 --label "CSV model" > /dev/null'
    check "kiln's import of the export does not standardise twice ($name)" \
        'node "$src/bench/compare_npy.js" "$work/csv_onnx/$name" "$work/csv_ort/$name" --rtol 1e-4 --label "CSV model, imported" > /dev/null'
done
"$kiln" convert --norm-as-metadata "$work/csv.kiln" "$work/csv_meta.onnx" > /dev/null
node "$src/bench/ort_run.js" "$work/csv_meta.onnx" "$work/csv_meta_ort" "$work/rows.npy" > /dev/null
check "--norm-as-metadata leaves the standardisation out of the graph" \
    '! node "$src/bench/compare_npy.js" "$work/csv_kiln/$name" "$work/csv_meta_ort/$name" --rtol 1e-4 > /dev/null 2>&1'

data=${KILN_FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}
if [ ! -f "$data/t10k-images-idx3-ubyte.gz" ]; then
    echo "note: dataset-fashion-mnist is not installed: no kiln-trained models"
elif ! "$kiln" convert --help >/dev/null 2>&1; then
    echo "note: this kiln has no convert command yet: no kiln-trained models exported to ONNX"
else
    # The first 2000 test images and labels as IDX files (count patched in the headers): enough for BatchNorm
    # statistics and weights that have moved, and quick under the sanitizers.
    count=2000 images=$work/part-images-idx3-ubyte
    { perl -e 'print pack("N2", 0x803, $ARGV[0])' $count
      gzip -dc "$data/t10k-images-idx3-ubyte.gz" | tail -c +9 | head -c $((8 + count * 784)); } > "$images"
    { perl -e 'print pack("N2", 0x801, $ARGV[0])' $count
      gzip -dc "$data/t10k-labels-idx1-ubyte.gz" | tail -c +9 | head -c $count; } > "$work/part-labels-idx1-ubyte"
    for m in mlp cnn; do
        "$kiln" train --model "$src/examples/specs/fmnist_$m.txt" --data "$images" --epochs 1 --batch 100 \
            --optimizer adam --seed 5 --threads 2 --quiet --out "$work/fmnist_$m.kiln" >/dev/null
        check "kiln trains fmnist_$m" '[ -s "$work/fmnist_$m.kiln" ]'
        check "kiln exports fmnist_$m to ONNX" '"$kiln" convert "$work/fmnist_$m.kiln" "$work/fmnist_$m.onnx" >/dev/null'
        compare "$work/fmnist_$m.kiln" "$work/fmnist_$m.onnx"
    done
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
