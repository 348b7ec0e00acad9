#!/usr/bin/env bash
# examples/c/classify end to end: `kiln train` a small network for one epoch on the Fashion-MNIST test set,
# write the third test image (a pair of trousers) as raw float32, and classify it with the example program:
# five ranked lines with class names and probabilities, the right class first; bad inputs give one
# clear error line and a non-zero exit.
set -u
kiln=$1
classify=$2
src=$3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
passed=0 failed=0
check() { if eval "$2"; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "FAILED: $1"; fi; }

data=${KILN_FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}
if [ ! -f "$data/t10k-images-idx3-ubyte.gz" ]; then
    echo "skipped: dataset-fashion-mnist is not installed"; echo "0 passed, 0 failed, 1 skipped"; exit 0
fi
cat > "$work/small.txt" <<'SPEC'
input 1 28 28
flatten
dense 64
batchnorm
relu
dense 10
SPEC
"$kiln" train --model "$work/small.txt" --data fashion-mnist:test --epochs 1 --batch 50 --optimizer adam \
    --seed 3 --threads 2 --quiet --out "$work/small.kiln"
check "kiln train writes the model" '[ -s "$work/small.kiln" ]'

# IDX images: a 16-byte header, then 28 x 28 unsigned bytes per image, scaled to [0, 1] as in training.
# Image 2 is labelled 1, trousers (labels: an 8-byte header, then one byte per image).
gzip -dc "$data/t10k-images-idx3-ubyte.gz" | head -c $((16 + 3 * 784)) | tail -c 784 |
    perl -e 'read(STDIN, my $b, 784); print pack("f<*", map { $_ / 255 } unpack("C*", $b))' > "$work/trousers.f32"
check "the image is 784 floats" '[ "$(wc -c < "$work/trousers.f32")" -eq 3136 ]'
label=$(gzip -dc "$data/t10k-labels-idx1-ubyte.gz" | head -c $((8 + 3)) | tail -c 1 | od -An -tu1 | tr -d ' ')
check "its label is 1" '[ "$label" = 1 ]'

out=$("$classify" "$work/small.kiln" "$work/trousers.f32")
status=$?
echo "$out"
check "classify succeeds" '[ $status -eq 0 ]'
check "five ranked lines" '[ "$(echo "$out" | grep -c "^[1-5]\. ")" -eq 5 ]'
check "the trousers come first" 'echo "$out" | head -1 | grep -q "^1\. Trouser "'
check "probabilities fall from line to line" \
    'echo "$out" | awk "{p = \$NF; if (NR > 1 && p > last) bad = 1; last = p} END {exit bad}"'

head -c 3132 "$work/trousers.f32" > "$work/short.f32"
err=$("$classify" "$work/small.kiln" "$work/short.f32" 2>&1 >/dev/null)
status=$?
check "a short input fails with one line: $err" '[ $status -ne 0 ] && echo "$err" | grep -q "not one sample of float32 values"'
err=$("$classify" "$work/missing.kiln" "$work/trousers.f32" 2>&1 >/dev/null)
status=$?
check "a missing model fails with one line: $err" '[ $status -ne 0 ] && echo "$err" | grep -q "missing.kiln"'
err=$("$classify" "$work/small.kiln" 2>&1 >/dev/null)
status=$?
check "a missing argument is a usage error: $err" '[ $status -ne 0 ] && echo "$err" | grep -q "usage"'

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
