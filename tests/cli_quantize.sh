#!/usr/bin/env bash
# kiln quantize on a small CNN that kiln trains here for one epoch on the first 2000 Fashion-MNIST test
# images: int8 weights and activations keep the accuracy and shrink the file ~4x; int4 weights-only,
# binary, codebook and log2 models are written and run; --adaround learns int4 rounding; --qat trains and
# writes a quantized model; --dry-run writes nothing; bad input is one error
# line and no file; the QDQ ONNX export predicts the same classes in onnxruntime (when bench/node_modules
# has onnxruntime-node) as kiln on the .kiln model.
source "$(dirname "$0")/support/cli_common.sh" "$@"
build=$(cd "$(dirname "$kiln")" && pwd)

data=${KILN_FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}
if [ ! -f "$data/t10k-images-idx3-ubyte.gz" ]; then
    echo "skipped: dataset-fashion-mnist is not installed"
    echo "0 passed, 0 failed, 1 skipped"
    exit 0
fi
count=2000 images=$work/part-images-idx3-ubyte
{ perl -e 'print pack("N2", 0x803, $ARGV[0])' $count
  gzip -dc "$data/t10k-images-idx3-ubyte.gz" | tail -c +9 | head -c $((8 + count * 784)); } > "$images"
{ perl -e 'print pack("N2", 0x801, $ARGV[0])' $count
  gzip -dc "$data/t10k-labels-idx1-ubyte.gz" | tail -c +9 | head -c $count; } > "$work/part-labels-idx1-ubyte"
"$kiln" train --model "$src/examples/specs/fmnist_cnn.txt" --data "$images" --epochs 1 --batch 50 \
    --seed 5 --threads 2 --quiet --out "$work/cnn.kiln" >/dev/null
check "kiln trains the CNN" '[ -s "$work/cnn.kiln" ]'

accuracy() { "$kiln" eval "$1" --data "$images" --json | sed -n 's/.*"accuracy":\([0-9.]*\).*/\1/p'; }
size() { stat -c %s "$1"; }
base=$(accuracy "$work/cnn.kiln")

# int8 weights per channel + calibrated activations.
"$kiln" quantize "$work/cnn.kiln" --out "$work/q8.kiln" --calib "$images" --calib-samples 256 > "$work/q8.txt"
check "int8 W+A is written" '[ -s "$work/q8.kiln" ]'
q8=$(accuracy "$work/q8.kiln")
echo "accuracy f32 $base, int8 W+A $q8; bytes $(size "$work/cnn.kiln") -> $(size "$work/q8.kiln")"
check "int8 W+A keeps the accuracy within 1 pt ($base -> $q8)" \
    'awk -v a="$base" -v b="$q8" "BEGIN { exit !(a - b <= 0.01) }"'
check "int8 W+A file is >= 3.8x smaller" \
    'awk -v a="$(size "$work/cnn.kiln")" -v b="$(size "$work/q8.kiln")" "BEGIN { exit !(a / b >= 3.8) }"'
check "the report has a line for every weight and activation with an SQNR" \
    '[ "$(grep -c "QDQ per-tensor" "$work/q8.txt")" -eq 4 ] && [ "$(grep -c "affine i8 per-channel" "$work/q8.txt")" -eq 4 ] && grep -q "SQNR dB" "$work/q8.txt"'
check "the before/after table shows the file shrinking" 'grep -q "file .*x smaller" "$work/q8.txt"'
check "kiln info sees QuantizeLinear in the model" '"$kiln" info "$work/q8.kiln" | grep -q QuantizeLinear'

# Other widths and level sets, each through the CLI and evaluated.
for variant in "w4:--bits 4 --weights-only" "bin:--bits 1 --weights-only" "cb16:--codebook 16 --weights-only" \
               "log2:--bits 4 --log2 --weights-only" "f16:--float f16" \
               "kl:--calib-method kl --bias-correction --recalibrate-bn --symmetric --granularity tensor"; do
    name=${variant%%:*} args=${variant#*:}
    # shellcheck disable=SC2086
    "$kiln" quantize "$work/cnn.kiln" --out "$work/$name.kiln" --calib "$images" --calib-samples 128 $args >/dev/null
    acc=$(accuracy "$work/$name.kiln")
    echo "  $name ($args): accuracy $acc, $(size "$work/$name.kiln") bytes"
    check "$name is written and evaluates" '[ -n "$acc" ]'
done
check "f16 is 2x smaller" 'awk -v a="$(size "$work/cnn.kiln")" -v b="$(size "$work/f16.kiln")" "BEGIN { exit !(a / b >= 1.95) }"'
check "f16 keeps the accuracy within 0.1 pt" 'awk -v a="$base" -v b="$(accuracy "$work/f16.kiln")" "BEGIN { exit !(a - b <= 0.001) }"'
check "int4 weights are >= 6x smaller" 'awk -v a="$(size "$work/cnn.kiln")" -v b="$(size "$work/w4.kiln")" "BEGIN { exit !(a / b >= 6) }"'

# Mixed precision under a budget, on a 300-image validation slice (fast): the sensitivity table names
# every layer, the chosen configuration keeps the budget, the file is smaller than uniform int8.
small=$work/small-images-idx3-ubyte
{ perl -e 'print pack("N2", 0x803, 300)'; tail -c +9 "$images" | head -c $((8 + 300 * 784)); } > "$small"
{ perl -e 'print pack("N2", 0x801, 300)'; tail -c +9 "$work/part-labels-idx1-ubyte" | head -c 300; } > "$work/small-labels-idx1-ubyte"
"$kiln" quantize "$work/cnn.kiln" --out "$work/mixed.kiln" --calib "$small" --calib-samples 64 --val "$small" \
    --max-drop 1 > "$work/mixed.txt"
drop=$(sed -n 's/.*with these bits (drop \([-0-9.]*\) pt.*/\1/p' "$work/mixed.txt")
echo "  --max-drop 1: drop $drop pt, $(size "$work/mixed.kiln") bytes"
check "--max-drop prints the sensitivity of every layer" '[ "$(grep -cE "^(conv|dense)[0-9]+ .*bit" "$work/mixed.txt")" -eq 4 ]'
check "--max-drop keeps its budget" 'awk -v d="$drop" "BEGIN { exit !(d != \"\" && d <= 1) }"'
check "--max-drop writes a file no larger than uniform int8" '[ "$(size "$work/mixed.kiln")" -le "$(size "$work/q8.kiln")" ]'

# --dry-run writes nothing; --json is one object.
"$kiln" quantize "$work/cnn.kiln" --out "$work/dry.kiln" --calib "$images" --calib-samples 64 --dry-run > "$work/dry.txt"
check "--dry-run writes nothing" '[ ! -e "$work/dry.kiln" ] && grep -q "nothing written" "$work/dry.txt"'
"$kiln" quantize "$work/cnn.kiln" --dry-run --weights-only --bits 4 --json > "$work/dry.json"
check "--json prints one object with the layers and the summary" \
    '[ "$(wc -l < "$work/dry.json")" -eq 1 ] && grep -q "\"layers\":\[{" "$work/dry.json" && grep -q "\"sqnr_db\"" "$work/dry.json" && grep -q "\"summary\":\[" "$work/dry.json"'

# AdaRound: learned rounding of the int4 weights on calibration data (a short run), with its report lines.
"$kiln" quantize "$work/cnn.kiln" --out "$work/ada.kiln" --bits 4 --weights-only --adaround --adaround-iters 10 \
    --calib "$small" --calib-samples 32 --threads 2 > "$work/ada.txt"
ada=$(accuracy "$work/ada.kiln")
echo "  int4 + AdaRound (10 steps per layer): accuracy $ada (nearest rounding: $(accuracy "$work/w4.kiln"))"
check "--adaround writes a model that evaluates" '[ -n "$ada" ]'
check "--adaround reports each layer's output error before and after" \
    '[ "$(grep -c "^AdaRound .*(nearest) -> .*(learned)" "$work/ada.txt")" -eq 4 ]'
check "kiln info shows the AdaRound model's int4 storage" '"$kiln" info "$work/ada.kiln" | grep -q "affine i4 per-channel: 4 tensors"'

# kiln quantize --qat: quantization-aware training with kiln train's options, the quantized model written
# (on the MLP spec, from fresh weights: the cheapest model that goes through every step).
mlp=$src/examples/specs/fmnist_mlp.txt
"$kiln" quantize "$mlp" --qat --epochs 1 --data "$small" --bits 4 --batch 50 --lr 5e-4 --threads 2 \
    --quiet --out "$work/qat.kiln" > "$work/qat.txt"
qat=$(accuracy "$work/qat.kiln")
echo "  --qat W4A8 MLP, 1 epoch on 300 images: accuracy $qat"
check "--qat writes a model that evaluates" '[ -n "$qat" ]'
check "--qat's model has int4 weights and QDQ activations (kiln info)" \
    '"$kiln" info "$work/qat.kiln" > "$work/qat_info.txt" && grep -q "affine i4 per-channel: 3 tensors" "$work/qat_info.txt" && grep -q QuantizeLinear "$work/qat_info.txt"'
check "--qat prints the before/after table" 'grep -q "quantized (QAT)" "$work/qat.txt"'
"$kiln" train --model "$mlp" --qat --epochs 1 --data "$small" --bits 4 --act-bits 8 --batch 50 --lr 5e-4 --threads 2 \
    --quiet --out "$work/qat_train.kiln" > /dev/null
# (kiln train's file also has the checkpoint's train.* metadata: compare what the models compute.)
evaluation() { "$kiln" eval "$1" --data "$images" --json | sed 's/.*"samples"//'; }
check "kiln quantize --qat gives the model kiln train --qat gives with the same options (loss, accuracy, confusion)" \
    '[ "$(evaluation "$work/qat.kiln")" = "$(evaluation "$work/qat_train.kiln")" ] && [ -n "$(evaluation "$work/qat.kiln")" ]'
"$kiln" quantize "$mlp" --qat --epochs 1 --data "$small" --bits 8 --weights-only --quiet --json --threads 2 \
    --out "$work/qat8.onnx" > "$work/qat8.json"
check "--qat --weights-only --json writes ONNX and one JSON object" \
    '[ -s "$work/qat8.onnx" ] && [ "$(wc -l < "$work/qat8.json")" -eq 1 ] && grep -q "\"qat\":true" "$work/qat8.json"'

# Bad input: one error line, exit status 1 or 2, nothing written.
/usr/bin/python3 -c 'import numpy as np, sys
np.save(sys.argv[1] + "/x.npy", np.zeros((8, 10), np.float32)); np.save(sys.argv[1] + "/y.npy", np.zeros(8, np.int64))' "$work" \
    2>/dev/null || true
bad() { # NAME ARGS...
    local name=$1
    shift
    rm -f "$work/bad.kiln"
    "$kiln" quantize "$@" > /dev/null 2> "$work/err.txt"
    local rc=$?
    check "$name: fails with one error line and writes nothing ($(head -c 120 "$work/err.txt"))" \
        '[ $rc -ne 0 ] && [ "$(wc -l < "$work/err.txt")" -eq 1 ] && grep -q "error" "$work/err.txt" && [ ! -e "$work/bad.kiln" ]'
}
bad "--bits 3" "$work/cnn.kiln" --out "$work/bad.kiln" --bits 3 --weights-only
bad "unknown calibration method" "$work/cnn.kiln" --out "$work/bad.kiln" --calib "$images" --calib-method median
bad "unknown granularity" "$work/cnn.kiln" --out "$work/bad.kiln" --granularity row --weights-only
bad "--codebook 5" "$work/cnn.kiln" --out "$work/bad.kiln" --codebook 5 --weights-only
bad "activations without --calib" "$work/cnn.kiln" --out "$work/bad.kiln"
if [ -f "$work/x.npy" ]; then
    bad "--calib of the wrong shape" "$work/cnn.kiln" --out "$work/bad.kiln" --calib "$work/x.npy,$work/y.npy"
fi
bad "--max-drop without --val" "$work/cnn.kiln" --out "$work/bad.kiln" --calib "$small" --max-drop 1
bad "--adaround without --calib" "$work/cnn.kiln" --out "$work/bad.kiln" --bits 4 --weights-only --adaround
bad "--adaround with codebook levels" "$work/cnn.kiln" --out "$work/bad.kiln" --codebook 16 --weights-only --adaround --calib "$small"
bad "--qat without --data" "$work/cnn.kiln" --out "$work/bad.kiln" --qat --epochs 1
bad "--qat --epochs 0" "$work/cnn.kiln" --out "$work/bad.kiln" --qat --epochs 0 --data "$small"
bad "--qat --bits 3" "$work/cnn.kiln" --out "$work/bad.kiln" --qat --epochs 1 --bits 3 --data "$small"
bad "--qat with a PTQ option" "$work/cnn.kiln" --out "$work/bad.kiln" --qat --epochs 1 --data "$small" --codebook 16
bad "--data without --qat" "$work/cnn.kiln" --out "$work/bad.kiln" --weights-only --data "$small"
bad "output without .kiln/.onnx" "$work/cnn.kiln" --out "$work/bad.txt" --weights-only
before=$(md5sum < "$work/cnn.kiln")
"$kiln" quantize "$work/cnn.kiln" --out "$work/cnn.kiln" --weights-only > /dev/null 2> "$work/err.txt"
check "output == input is refused and the input is unchanged" \
    '[ $? -ne 0 ] && [ "$(wc -l < "$work/err.txt")" -eq 1 ] && [ "$(md5sum < "$work/cnn.kiln")" = "$before" ]'
ln -s "$work/cnn.kiln" "$work/link.kiln"
"$kiln" quantize "$work/cnn.kiln" --out "$work/link.kiln" --weights-only > /dev/null 2>&1
check "output == input through a symlink is refused" '[ $? -ne 0 ] && [ "$(md5sum < "$work/cnn.kiln")" = "$before" ]'

# The QDQ ONNX export against onnxruntime: the same classes on >= 99.5% of the 2000 images.
if cli_onnxruntime_loads; then
    "$kiln" quantize "$work/cnn.kiln" --out "$work/q8.onnx" --calib "$images" --calib-samples 256 > /dev/null
    check "int8 W+A exports to ONNX" '[ -s "$work/q8.onnx" ]'
    driver=$(bash "$src/bench/build_driver.sh" "$build")
    mapfile -t parts < <("$driver" dataset "$work/q8.kiln" "$images" "$work/in" 2000)
    "$driver" run "$work/q8.kiln" "$work/kiln-out" "${parts[0]}"
    node "$src/bench/ort_run.js" "$work/q8.onnx" "$work/ort-out" "${parts[0]}"
    check "onnxruntime on the QDQ export predicts kiln's classes on >= 99.5% of the images" \
        'node "$src/bench/compare_npy.js" "$(ls "$work"/kiln-out/*.npy)" "$(ls "$work"/ort-out/*.npy)" --rtol 0.05 --argmax --max-mismatches 10 --label "int8 QDQ"'
else
    echo "note: onnxruntime-node does not load from bench/node_modules: QDQ export not run in onnxruntime"
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
