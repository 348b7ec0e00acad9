#!/usr/bin/env bash
# kiln convert / info / run / bench end to end, and kiln train on a PyTorch-exported ONNX model:
#  - a PyTorch-exported ONNX MLP fine-tunes through `kiln train --model M.onnx` and its loss falls;
#  - convert .onnx -> .kiln, .kiln -> .onnx -> .kiln and .onnx -> .onnx: the models run identically;
#  - info prints ops, params, FLOPs, memory, classes (text and --json);
#  - run reads .npy (u8 and f32, one sample or --batch-dim), a PNG and CSV rows, prints the top classes,
#    and --out writes <output>.npy; the same pixels from a PNG and an .npy give the same scores;
#  - bench --json has latency, throughput and memory fields, --profile the per-op table;
#  - bad files and inputs fail with exit 1 (usage errors 2) and one clear line.
# The ONNX checks are skipped by a kiln built without ONNX support (-DKILN_WITH_ONNX=OFF).
source "$(dirname "$0")/support/cli_common.sh" "$@"
skipped=0

data=${KILN_FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}
if [ ! -f "$data/t10k-images-idx3-ubyte.gz" ]; then
    echo "skipped: dataset-fashion-mnist is not installed"; echo "0 passed, 0 failed, 1 skipped"; exit 0
fi

# npy_header DESCR SHAPE: a version 1.0 .npy header, padded so the data starts at a multiple of 64 bytes.
npy_header() {
    local dict="{'descr': '$1', 'fortran_order': False, 'shape': $2, }"
    local len=$(( (10 + ${#dict} + 1 + 63) / 64 * 64 - 10 ))
    printf '\x93NUMPY\x01\x00'
    printf "\\x$(printf %02x $((len & 255)))\\x$(printf %02x $((len >> 8)))"
    printf '%s%*s\n' "$dict" $((len - ${#dict} - 1)) ''
}
# test_images FIRST COUNT: raw bytes of Fashion-MNIST test images FIRST .. FIRST+COUNT-1.
test_images() { gzip -dc "$data/t10k-images-idx3-ubyte.gz" | tail -c +$((17 + $1 * 784)) | head -c $(($2 * 784)); }
test_labels() { gzip -dc "$data/t10k-labels-idx1-ubyte.gz" | tail -c +$((9 + $1)) | head -c "$2"; }

# expect_error NAME EXIT PATTERN -- ARGS: kiln exits with EXIT and one stderr line matching PATTERN.
expect_error() {
    local name=$1 want=$2 pattern=$3
    shift 4
    "$kiln" "$@" >"$work/stdout" 2>"$work/stderr"
    local rc=$?
    if [ $rc -ne "$want" ]; then
        failed=$((failed + 1)); echo "FAILED: $name: exit code $rc, not $want"; cat "$work/stderr"; return
    fi
    if [ "$want" -eq 1 ] && [ "$(wc -l < "$work/stderr")" -ne 1 ]; then
        failed=$((failed + 1)); echo "FAILED: $name: not one line:"; cat "$work/stderr"; return
    fi
    if ! grep -q -- "$pattern" "$work/stderr"; then
        failed=$((failed + 1)); echo "FAILED: $name: stderr lacks '$pattern':"; cat "$work/stderr"; return
    fi
    passed=$((passed + 1))
}
# run_kiln ARGS: a kiln command that must succeed. A failure is recorded in a file, since the call often
# sits in a command substitution (a subshell).
run_kiln() {
    "$kiln" "$@" 2>"$work/run_stderr"
    local rc=$?
    if [ $rc -ne 0 ]; then
        echo "FAILED: kiln $* exited with $rc: $(head -c 400 "$work/run_stderr")" | tee -a "$work/failures" >&2
    fi
    return $rc
}
# json_number KEY: the first number after "KEY": on stdin.
json_number() { sed -n "s/.*\"$1\":\(-\{0,1\}[0-9.e+-]*\).*/\1/p" | head -1; }

# ---- kiln train on a PyTorch-exported ONNX model: the loss falls ---------------------------------
if "$kiln" info "$src/tests/ref/data/onnx_mlp.onnx" > /dev/null 2>&1; then onnx=1; else onnx=0; fi
if [ $onnx = 1 ]; then
    { npy_header '|u1' '(1000, 1, 28, 28)'; test_images 0 1000; } > "$work/x1000.npy"
    { npy_header '|u1' '(1000,)'; test_labels 0 1000; } > "$work/y1000.npy"
    pair="$work/x1000.npy,$work/y1000.npy"
    before=$(run_kiln eval "$src/tests/ref/data/onnx_mlp.onnx" --data "$pair" --json | json_number loss)
    run_kiln train --model "$src/tests/ref/data/onnx_mlp.onnx" --data "$pair" --epochs 2 --batch 50 \
        --optimizer adam --seed 1 --threads 2 --quiet --out "$work/tuned.kiln" > /dev/null
    after=$(run_kiln eval "$work/tuned.kiln" --data "$pair" --json | json_number loss)
    check "ONNX MLP fine-tuned for 40 steps: loss falls from $before to $after" \
        'awk -v b="$before" -v a="$after" "BEGIN{exit !(b > 0 && a > 0 && a < 0.7 * b)}"'
else
    echo "skipped: kiln is built without ONNX support"; skipped=$((skipped + 1))
fi

# ---- a small model of our own ---------------------------------------------------------------------
printf 'input 1 28 28\nflatten\ndense 32\nrelu\ndense 10\n' > "$work/small.txt"
run_kiln train --model "$work/small.txt" --data fashion-mnist:test --epochs 1 --batch 100 --seed 3 --threads 2 \
    --quiet --out "$work/small.kiln" > /dev/null
check "kiln train writes the model" '[ -s "$work/small.kiln" ]'

# ---- info -----------------------------------------------------------------------------------------
out=$(run_kiln info "$work/small.kiln")
check "info lists the ops" 'echo "$out" | grep -q "^ops  *4 nodes (3 after optimization): Flatten 1, Gemm 2, Relu 1"'
check "info shows the input with an open batch" 'echo "$out" | grep -q "^inputs  *input (N, 1, 28, 28) f32"'
check "info counts 25450 params" 'echo "$out" | grep -q "^params  *25450 trainable; sparsity"'
check "info lists the class names" 'echo "$out" | grep -q "^classes  *10: T-shirt/top, Trouser"'
json=$(run_kiln info "$work/small.kiln" --json)
check "info --json is one object" 'echo "$json" | grep -q "^{\"command\":\"info\".*}$" && [ "$(echo "$json" | wc -l)" -eq 1 ]'
check "info --json params" '[ "$(echo "$json" | json_number params)" = 25450 ]'
# Two Gemms at batch 1: 2 * (784 * 32 + 32 * 10) multiply-adds, plus the bias adds and the Relu.
flops=$(echo "$json" | json_number flops)
check "info --json FLOPs ($flops) cover the two Gemms" '[ "$flops" -ge 50816 ] && [ "$flops" -le 51200 ]'
check "info --json planned activation bytes" '[ "$(echo "$json" | json_number activation_bytes)" -gt 0 ]'
check "info --json f32 weight bytes" '[ "$(echo "$json" | json_number f32)" = $((25450 * 4)) ]'
check "info --json classes and metadata" 'echo "$json" | grep -q "\"classes\":\[\"T-shirt/top\",\"Trouser\"" && echo "$json" | grep -q "\"train.loss\":\"ce\""'

# ---- run: .npy, PNG, --out --------------------------------------------------------------------------
{ npy_header '|u1' '(28, 28)'; test_images 2 1; } > "$work/trouser_u8.npy"
{ npy_header '<f4' '(1, 28, 28)'; test_images 2 1 | perl -e 'read(STDIN, my $b, 784); print pack("f<*", map { $_ / 255 } unpack("C*", $b))'; } > "$work/trouser_f32.npy"
{ npy_header '|u1' '(4, 1, 28, 28)'; test_images 0 4; } > "$work/four.npy"
png="$src/tests/data/fmnist_test_2_trouser.png"

out=$(run_kiln run "$work/small.kiln" "$work/trouser_u8.npy" --top 3)
check "run on a u8 .npy: the trousers first, 3 classes" \
    'echo "$out" | grep -q "^  1\. Trouser " && [ "$(echo "$out" | grep -c "^  [0-9]\. ")" -eq 3 ]'
top_f32=$(run_kiln run "$work/small.kiln" "$work/trouser_f32.npy" --top 1)
check "run on an f32 .npy: the trousers first" 'echo "$top_f32" | grep -q "^  1\. Trouser "'
from_png=$(run_kiln run "$work/small.kiln" "$png" --json | sed 's/.*"outputs"://')
from_npy=$(run_kiln run "$work/small.kiln" "$work/trouser_u8.npy" --json | sed 's/.*"outputs"://')
check "the PNG and the .npy of the same pixels give the same scores" '[ -n "$from_png" ] && [ "$from_png" = "$from_npy" ]'
for jpeg in fmnist_test_2_trouser.jpg fmnist_test_2_trouser_progressive.jpg; do
    top_jpeg=$(run_kiln run "$work/small.kiln" "$src/tests/data/$jpeg" --top 1)
    check "run on $jpeg: the trousers first" 'echo "$top_jpeg" | grep -q "^  1\. Trouser "'
done
cp "$src/tests/fuzz/regressions/image/jpeg-dht-over-256-codes" "$work/bad_dht.jpg"
bad_jpeg=$("$kiln" run "$work/small.kiln" "$work/bad_dht.jpg" 2>&1)
bad_status=$?
check "a JPEG whose Huffman table has more than 256 codes: one line, refused" \
    '[ $bad_status -ne 0 ] && [ "$(echo "$bad_jpeg" | wc -l)" -eq 1 ] && echo "$bad_jpeg" | grep -q "corrupt JPEG"'
check "run --json names the class" 'echo "$from_png" | grep -q "^\[{\"name\":\"dense4\",\"shape\":\[1,10\],\"dtype\":\"f32\",\"top\":\[\[{\"class\":1,\"name\":\"Trouser\""'

json=$(run_kiln run "$work/small.kiln" "$png" "$work/trouser_u8.npy" "$png" --json)
check "several files form one batch" 'echo "$json" | grep -q "\"batch\":3," && echo "$json" | grep -q "\"shape\":\[3,10\]"'
out=$(run_kiln run "$work/small.kiln" "$work/four.npy" --batch-dim --out "$work/outdir")
check "run --batch-dim: four samples labelled by index" \
    '[ "$(echo "$out" | grep -c "four.npy\[[0-3]\]")" -eq 4 ] && echo "$out" | grep -A1 "four.npy\[2\]" | grep -q "Trouser"'
size=$(wc -c < "$work/outdir/dense4.npy" 2>/dev/null || echo 0)
check "run --out writes dense4.npy: a 128-byte header (as numpy writes) + 4 x 10 floats ($size bytes)" \
    '[ "$size" -eq $((128 + 160)) ] && head -c 6 "$work/outdir/dense4.npy" | grep -q NUMPY && grep -q "(4, 10)" "$work/outdir/dense4.npy"'
# The written array read back as an input: one sample of a 10-feature model is any array of 10 values.
printf 'input 10\ndense 2\n' > "$work/ten.txt"
run_kiln convert "$work/ten.txt" "$work/ten.kiln" > /dev/null
json=$(run_kiln run "$work/ten.kiln" "$work/outdir/dense4.npy" --batch-dim --json)
check "an output .npy reads back as a batch of 4" 'echo "$json" | grep -q "\"batch\":4,"'

# ---- run: CSV rows ------------------------------------------------------------------------------------
cat > "$work/iris.csv" <<'CSV'
sepal_length,sepal_width,petal_length,petal_width,species
5.1,3.5,1.4,0.2,setosa
4.9,3.0,1.4,0.2,setosa
7.0,3.2,4.7,1.4,versicolor
6.4,3.2,4.5,1.5,versicolor
6.3,3.3,6.0,2.5,virginica
5.8,2.7,5.1,1.9,virginica
5.0,3.6,1.4,0.2,setosa
6.9,3.1,4.9,1.5,versicolor
7.1,3.0,5.9,2.1,virginica
CSV
cut -d, -f1-4 "$work/iris.csv" > "$work/features.csv"
printf 'input 4\ndense 16\nrelu\ndense 3\n' > "$work/iris.txt"
run_kiln train --model "$work/iris.txt" --data "$work/iris.csv" --epochs 100 --batch 9 --lr 0.05 --seed 1 \
    --quiet --out "$work/iris.kiln" > /dev/null
out=$(run_kiln run "$work/iris.kiln" "$work/iris.csv" --top 1)
check "CSV rows: one sample per row, labelled by line, with class names" \
    '[ "$(echo "$out" | grep -c "iris.csv:[0-9]*$")" -eq 9 ] && echo "$out" | grep -A1 "iris.csv:2$" | grep -q setosa &&
     echo "$out" | grep -A1 "iris.csv:6$" | grep -q virginica'
with_target=$(run_kiln run "$work/iris.kiln" "$work/iris.csv" --json | sed 's/.*"outputs"://')
without=$(run_kiln run "$work/iris.kiln" "$work/features.csv" --json | sed 's/.*"outputs"://')
named=$(run_kiln run "$work/iris.kiln" "$work/iris.csv" --label species --json | sed 's/.*"outputs"://')
check "CSV with and without the target column give the same scores" \
    '[ -n "$without" ] && [ "$with_target" = "$without" ] && [ "$named" = "$without" ]'

# ---- convert --------------------------------------------------------------------------------------------
json=$(run_kiln convert "$work/small.kiln" "$work/resaved.kiln" --json)
check "convert .kiln -> .kiln --json: nodes and sizes in and out" \
    '[ "$(echo "$json" | json_number nodes)" = 4 ] && [ "$(echo "$json" | json_number bytes_in)" -gt 100000 ] &&
     [ "$(echo "$json" | json_number bytes_out)" -gt 100000 ]'
if [ $onnx = 1 ]; then
    out=$(run_kiln convert "$src/tests/ref/data/onnx_cnn.onnx" "$work/cnn.kiln")
    check "convert .onnx -> .kiln prints a summary" \
        'echo "$out" | grep -q "12 nodes: Conv 2, BatchNormalization 2" && echo "$out" | grep -q "^  params  26746$"'
    a=$(run_kiln run "$src/tests/ref/data/onnx_cnn.onnx" "$work/four.npy" --batch-dim --json | sed 's/.*"outputs"://')
    b=$(run_kiln run "$work/cnn.kiln" "$work/four.npy" --batch-dim --json | sed 's/.*"outputs"://')
    check "the .onnx and its converted .kiln give the same outputs" '[ -n "$a" ] && [ "$a" = "$b" ]'

    run_kiln convert "$work/small.kiln" "$work/small.onnx" > /dev/null
    run_kiln convert "$work/small.onnx" "$work/small2.kiln" > /dev/null
    run_kiln convert "$work/small.onnx" "$work/small3.onnx" > /dev/null
    a=$(run_kiln run "$work/small.kiln" "$work/four.npy" --batch-dim --json | sed 's/.*"outputs"://')
    b=$(run_kiln run "$work/small2.kiln" "$work/four.npy" --batch-dim --json | sed 's/.*"outputs"://')
    c=$(run_kiln run "$work/small3.onnx" "$work/four.npy" --batch-dim --json | sed 's/.*"outputs"://')
    check ".kiln -> .onnx -> .kiln and .onnx -> .onnx run alike, class names kept" \
        '[ -n "$a" ] && [ "$a" = "$b" ] && [ "$a" = "$c" ] && echo "$c" | grep -q "\"name\":\"Trouser\""'
    check ".onnx -> .onnx gives the same bytes" 'cmp -s "$work/small.onnx" "$work/small3.onnx"'
fi

# ---- bench -----------------------------------------------------------------------------------------------
json=$(run_kiln bench "$work/small.kiln" --iters 20 --batch 4 --threads 1 --warmup 2 --json)
check "bench --json is one object" 'echo "$json" | grep -q "^{\"command\":\"bench\".*}$"'
check "bench --json: 20 runs at batch 4" '[ "$(echo "$json" | json_number runs)" = 20 ] && [ "$(echo "$json" | json_number batch)" = 4 ]'
min=$(echo "$json" | json_number min) median=$(echo "$json" | json_number median) p99=$(echo "$json" | json_number p99)
check "bench latencies: 0 < min <= median <= p99 ($min, $median, $p99 ms)" \
    'awk -v a="$min" -v b="$median" -v c="$p99" "BEGIN{exit !(a > 0 && a <= b && b <= c)}"'
check "bench throughput and peak RSS" \
    'awk -v t="$(echo "$json" | json_number samples_per_second)" "BEGIN{exit !(t > 0)}" && [ "$(echo "$json" | json_number peak_rss_bytes)" -gt 1000000 ]'
out=$(run_kiln bench "$work/small.kiln" --iters 10 --profile)
# The optimizer packs a Gemm's weights once when they have at least 4096 values (GemmPacked).
check "bench --profile prints the per-op table" \
    'echo "$out" | grep -q "p99" && echo "$out" | grep -Eq "^  Gemm(Packed)?\+Relu  *1 " && echo "$out" | grep -Eq "^  Gemm(Packed)?  *1 "'
if [ $onnx = 1 ]; then
    json=$(run_kiln bench "$src/tests/ref/data/onnx_cnn.onnx" --iters 5 --profile --json)
    check "bench an .onnx model with --profile --json" 'echo "$json" | grep -q "\"profile\":\[.*{\"op\":\"Conv+Relu\",\"nodes\":2,"'
fi

# ---- bad input -------------------------------------------------------------------------------------------
head -c 3000 "$work/small.kiln" > "$work/truncated.kiln"
cp "$work/small.kiln" "$work/flipped.kiln"
printf '\xff' | dd of="$work/flipped.kiln" bs=1 seek=5000 conv=notrunc 2>/dev/null
head -c 4000 "$src/tests/ref/data/onnx_cnn.onnx" > "$work/truncated.onnx"
{ npy_header '|u1' '(27, 27)'; test_images 0 1 | head -c 729; } > "$work/small_image.npy"
{ npy_header '|u1' '(2, 1, 27, 27)'; test_images 0 2 | head -c 1458; } > "$work/small_batch.npy"
{ npy_header '|u1' '(28, 28)'; test_images 0 1 | head -c 700; } > "$work/short.npy"
{ npy_header '<i8' '(1, 28, 28)'; head -c 6272 /dev/zero; } > "$work/int64.npy"
{ npy_header '<f4' '(1, 28, 28)'; head -c 3136 /dev/zero; } > "$work/zeros_f32.npy"
printf 'a,b,c\n1,2,3\n' > "$work/three.csv"

expect_error "truncated .kiln" 1 "truncated.kiln: truncated" -- info "$work/truncated.kiln"
expect_error "corrupt .kiln" 1 "flipped.kiln: .*checksum mismatch" -- run "$work/flipped.kiln" "$png"
expect_error "missing model" 1 "missing.kiln" -- bench "$work/missing.kiln"
expect_error "missing input file" 1 "missing.npy: cannot open: No such file" -- run "$work/small.kiln" "$work/missing.npy"
expect_error "wrong sample shape" 1 "small_image.npy: an array of (27, 27) is not one sample of input 'input' (N, 1, 28, 28)" -- run "$work/small.kiln" "$work/small_image.npy"
expect_error "wrong batch shape" 1 "small_batch.npy: input 'input' .*dimension 2 is fixed at 28 by the model, got 27" -- run "$work/small.kiln" "$work/small_batch.npy" --batch-dim
expect_error "truncated .npy" 1 "short.npy: truncated: expected 784 bytes of the array data" -- run "$work/small.kiln" "$work/short.npy"
# An integer array for a float input is cast, as kiln train reads X.npy (one .npy reader for both).
check "an int64 .npy for a float input is read as training reads it" \
    '[ "$(run_kiln run "$work/small.kiln" "$work/int64.npy" --json | sed "s/.*\"outputs\"://")" = "$(run_kiln run "$work/small.kiln" "$work/zeros_f32.npy" --json | sed "s/.*\"outputs\"://")" ]'

expect_error "unknown input name" 1 "no input named 'pixels' (its inputs: 'input')" -- run "$work/small.kiln" "pixels=$png"
expect_error "CSV of the wrong width" 1 "three.csv: 3 columns, but input 'input' takes 4 features" -- run "$work/iris.kiln" "$work/three.csv"
expect_error "image for a vector input" 1 "is not an image input" -- run "$work/iris.kiln" "$png"
expect_error "unknown output format" 2 "must end in .kiln or .onnx" -- convert "$work/small.kiln" "$work/small.pt"
expect_error "run without inputs" 1 "input 'input' (input 1 of 1) got no file" -- run "$work/small.kiln"
expect_error "run without a model" 2 "a model is required" -- run
expect_error "bench --batch 0" 2 "--batch must be at least 1" -- bench "$work/small.kiln" --batch 0
if [ $onnx = 1 ]; then
    expect_error "truncated .onnx" 1 "truncated.onnx: not a valid ONNX model" -- convert "$work/truncated.onnx" "$work/x.kiln"
    unsupported=/usr/share/libonnx-testdata/data/node/test_if/model.onnx
    if [ -f "$unsupported" ]; then
        expect_error "unsupported op" 1 "node 'If_0' (index 0): op 'If' (opset 11) is not supported" -- run "$unsupported" "$png"
    else
        echo "skipped: libonnx-testdata is not installed"; skipped=$((skipped + 1))
    fi
fi

failed=$((failed + $(cat "$work/failures" 2>/dev/null | wc -l)))
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
