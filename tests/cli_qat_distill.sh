#!/usr/bin/env bash
# kiln train --qat / --grad-bits and kiln distill end to end on the Fashion-MNIST test set (small model):
#  - QAT at W4A8 with learned scales writes weights as affine i4 and activations as QuantizeLinear pairs,
#    still classifies; a QAT run stopped after one epoch and resumed equals the straight run byte for byte;
#  - binary weights are stored as a codebook; the model exports to ONNX;
#  - gradient quantization prints the bytes exchanged and trains;
#  - distillation into a smaller student trains and writes it;
#  - bad input (--bits 3, --grad-bits 3, --act-bits 4, a teacher whose output does not match, an output
#    that is an input) is a one-line error and writes nothing.
source "$(dirname "$0")/support/cli_common.sh" "$@"

if [ ! -d /usr/share/datasets/fashion-mnist ] && [ -z "${KILN_FASHION_MNIST_DIR:-}" ]; then
    echo "skipped: dataset-fashion-mnist is not installed"; echo "0 passed, 0 failed, 1 skipped"; exit 0
fi
cat > "$work/small.txt" <<'SPEC'
input 1 28 28
conv 4 3 stride=2 pad=1
batchnorm
relu
flatten
dense 10
SPEC
cat > "$work/tiny.txt" <<'SPEC'
input 1 28 28
conv 2 3 stride=2 pad=1
relu
flatten
dense 10
SPEC
cat > "$work/wrong.txt" <<'SPEC'
input 1 28 28
flatten
dense 5
SPEC
common=(--data fashion-mnist:test --batch 100 --seed 3 --threads 2 --quiet)
accuracy() { "$kiln" eval "$1" --data fashion-mnist:test --json | sed -n 's/.*"accuracy":\([0-9.]*\).*/\1/p'; }

"$kiln" train --model "$work/small.txt" "${common[@]}" --epochs 1 --out "$work/base.kiln"
check "baseline trains" '[ -s "$work/base.kiln" ]'

"$kiln" train --model "$work/base.kiln" "${common[@]}" --epochs 2 --qat --bits 4 --act-bits 8 --lsq --out "$work/w4a8.kiln"
check "QAT W4A8 writes a model" '[ -s "$work/w4a8.kiln" ]'
info=$("$kiln" info "$work/w4a8.kiln")
check "weights stored as affine i4" 'echo "$info" | grep -q "affine i4"'
check "activations as QuantizeLinear / DequantizeLinear" 'echo "$info" | grep -q QuantizeLinear && echo "$info" | grep -q DequantizeLinear'
check "no FakeQuantize left" '! echo "$info" | grep -q FakeQuantize'
acc=$(accuracy "$work/w4a8.kiln")
check "the W4A8 model classifies (accuracy $acc > 0.6)" 'awk -v a="$acc" "BEGIN{exit !(a > 0.6)}"'

"$kiln" train --model "$work/base.kiln" "${common[@]}" --epochs 1 --qat --bits 4 --act-bits 8 --lsq --out "$work/half.kiln"
"$kiln" train --resume "$work/half.kiln.ckpt" "${common[@]}" --epochs 2 --qat --bits 4 --act-bits 8 --lsq --out "$work/resumed.kiln"
check "QAT resumed from its checkpoint == straight (byte-identical)" 'cmp -s "$work/w4a8.kiln" "$work/resumed.kiln"'

"$kiln" train --model "$work/base.kiln" "${common[@]}" --epochs 1 --qat --bits 1 --out "$work/binary.kiln"
check "binary weights stored as a codebook" '"$kiln" info "$work/binary.kiln" | grep -q "codebook 1-bit"'
if "$kiln" convert "$work/w4a8.kiln" "$work/w4a8.onnx" >/dev/null 2>&1; then
    check "the QAT model exports to ONNX" '[ -s "$work/w4a8.onnx" ]'
    a_kiln=$(accuracy "$work/w4a8.kiln"); a_onnx=$(accuracy "$work/w4a8.onnx")
    check "its ONNX export (QDQ activations) classifies the same ($a_kiln, $a_onnx)" '[ "$a_kiln" = "$a_onnx" ]'
    err=$("$kiln" convert "$work/half.kiln.ckpt" "$work/ckpt.onnx" 2>&1)
    check "a QAT checkpoint (FakeQuantize) is not exported to ONNX" '[ ! -e "$work/ckpt.onnx" ] && echo "$err" | grep -q FakeQuantize'
fi

out=$("$kiln" train --model "$work/small.txt" --data fashion-mnist:test --batch 100 --seed 3 --threads 2 --epochs 1 \
      --grad-bits 2 --error-feedback --out "$work/g2.kiln" 2>/dev/null)
check "--grad-bits prints the bytes exchanged" 'echo "$out" | grep -q "gradients at 2 bits: .* bytes per data-parallel step instead of .* in f32"'
check "--grad-bits trains" '[ -s "$work/g2.kiln" ]'

out=$("$kiln" distill --teacher "$work/base.kiln" --student "$work/tiny.txt" "${common[@]}" --epochs 1 --out "$work/student.kiln" 2>&1)
check "distill writes the student" '[ -s "$work/student.kiln" ]'
acc=$(accuracy "$work/student.kiln")
check "the distilled student classifies (accuracy $acc > 0.5)" 'awk -v a="$acc" "BEGIN{exit !(a > 0.5)}"'
"$kiln" distill --teacher "$work/base.kiln" --student "$work/tiny.txt" "${common[@]}" --epochs 1 --match relu3:relu2 \
    --out "$work/matched.kiln" 2>/dev/null
params() { "$kiln" info "$1" --json | sed -n 's/.*"params":\([0-9]*\).*/\1/p'; }
check "distill --match trains and drops the projection ($(params "$work/matched.kiln") params)" \
    '[ -s "$work/matched.kiln" ] && [ "$(params "$work/matched.kiln")" = "$(params "$work/student.kiln")" ]'
if "$kiln" convert "$work/base.kiln" "$work/base.onnx" >/dev/null 2>&1; then
    "$kiln" distill --teacher "$work/base.onnx" --student "$work/tiny.txt" "${common[@]}" --epochs 1 --out "$work/from_onnx.kiln" 2>/dev/null
    check "an ONNX teacher gives the same student as its .kiln (byte-identical)" 'cmp -s "$work/student.kiln" "$work/from_onnx.kiln"'
fi

# Bad input: one line on stderr, exit status 1, nothing written.
bad() {
    local what=$1 needle=$2 out=$3; shift 3
    err=$("$kiln" "$@" 2>&1 >/dev/null); rc=$?
    check "$what: refused" '[ $rc -ne 0 ] && [ "$(echo "$err" | wc -l)" -eq 1 ] && echo "$err" | grep -q -- "$needle"'
    check "$what: nothing written" '[ ! -e "$out" ]'
}
bad "--bits 3" "--bits 3" "$work/b3.kiln" train --model "$work/base.kiln" "${common[@]}" --qat --bits 3 --out "$work/b3.kiln"
bad "--act-bits 4" "--act-bits 4" "$work/a4.kiln" train --model "$work/base.kiln" "${common[@]}" --qat --bits 4 --act-bits 4 --out "$work/a4.kiln"
bad "--grad-bits 3" "--grad-bits 3" "$work/g3.kiln" train --model "$work/base.kiln" "${common[@]}" --grad-bits 3 --out "$work/g3.kiln"
bad "teacher/student mismatch" "does not match" "$work/wrong.kiln" distill --teacher "$work/base.kiln" --student "$work/wrong.txt" "${common[@]}" --out "$work/wrong.kiln"
bad "--match of a value the teacher lacks names the ones it has" "no activation named 'relu99' (its activations of rank 2 or 4: input, .*relu3" \
    "$work/nomatch.kiln" distill --teacher "$work/base.kiln" --student "$work/tiny.txt" "${common[@]}" --match relu99:relu2 \
    --out "$work/nomatch.kiln"
cp "$work/base.kiln" "$work/same.kiln"
"$kiln" distill --teacher "$work/same.kiln" --student "$work/tiny.txt" "${common[@]}" --out "$work/same.kiln" 2>/dev/null
check "distill output == teacher: refused, teacher intact" '[ $? -ne 0 ] && cmp -s "$work/base.kiln" "$work/same.kiln"'

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
