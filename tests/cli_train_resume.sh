#!/usr/bin/env bash
# kiln train end to end on the Fashion-MNIST test set (small and quick):
#  - 2 epochs straight == 1 epoch, then --resume for the 2nd: byte-identical models, also with gradients
#    quantized to 2 bits with error feedback (its residuals are in the checkpoint);
#  - the same seed and thread count twice: byte-identical models;
#  - kiln eval reads the model back and reports an accuracy;  --json prints one JSON object.
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
dropout 0.2
dense 10
SPEC
common=(--model "$work/small.txt" --data fashion-mnist:test --batch 50 --optimizer adam --seed 3 --threads 2 --quiet)

"$kiln" train "${common[@]}" --epochs 2 --out "$work/straight.kiln" --log "$work/straight.csv"
check "straight run succeeds" '[ $? -eq 0 ] && [ -s "$work/straight.kiln" ]'
"$kiln" train "${common[@]}" --epochs 1 --out "$work/half.kiln"
check "first half succeeds" '[ -s "$work/half.kiln.ckpt" ]'
"$kiln" train "${common[@]}" --epochs 2 --resume "$work/half.kiln.ckpt" --out "$work/resumed.kiln"
check "resume succeeds" '[ -s "$work/resumed.kiln" ]'
check "2 epochs straight == 1 epoch + resume 1 epoch (byte-identical)" 'cmp -s "$work/straight.kiln" "$work/resumed.kiln"'

# Gradients at 2 bits with error feedback: the residuals travel in the checkpoint, so the resumed run is
# the straight one too; a checkpoint holding them does not resume without --error-feedback.
# (On the first 1000 test images, so that these four runs take seconds.)
cli_fmnist_npy 1000
ef_common=("${common[@]}" --data "$work/x.npy,$work/y.npy" --grad-bits 2)
"$kiln" train "${ef_common[@]}" --error-feedback --epochs 2 --out "$work/ef_straight.kiln"
"$kiln" train "${ef_common[@]}" --error-feedback --epochs 1 --out "$work/ef_half.kiln"
"$kiln" train "${ef_common[@]}" --error-feedback --epochs 2 --resume "$work/ef_half.kiln.ckpt" \
    --out "$work/ef_resumed.kiln"
check "--grad-bits 2 --error-feedback: 2 epochs straight == 1 epoch + resume 1 epoch (byte-identical)" \
    '[ -s "$work/ef_straight.kiln" ] && cmp -s "$work/ef_straight.kiln" "$work/ef_resumed.kiln"'
check "... and not the model of gradients without error feedback" \
    '"$kiln" train "${ef_common[@]}" --epochs 2 --out "$work/no_ef.kiln" && ! cmp -s "$work/no_ef.kiln" "$work/ef_straight.kiln"'
msg=$("$kiln" train "${ef_common[@]}" --epochs 2 --resume "$work/ef_half.kiln.ckpt" --out "$work/bad.kiln" 2>&1)
check "resuming it without --error-feedback is refused: $msg" \
    '[ $? -ne 0 ] && echo "$msg" | grep -q "trained with --grad-bits and --error-feedback: pass them to resume" && [ ! -e "$work/bad.kiln" ]'

"$kiln" train "${common[@]}" --epochs 2 --out "$work/again.kiln"
check "same seed and threads give a byte-identical model" 'cmp -s "$work/straight.kiln" "$work/again.kiln"'

check "log has a header and two epochs" '[ "$(wc -l < "$work/straight.csv")" -eq 3 ] && head -1 "$work/straight.csv" | grep -q "^epoch,step,lr"'

out=$("$kiln" eval "$work/straight.kiln" --data fashion-mnist:test)
check "eval prints accuracy and a confusion matrix" 'echo "$out" | grep -q "accuracy" && echo "$out" | grep -q "Ankle boot"'
acc=$("$kiln" eval "$work/straight.kiln" --data fashion-mnist:test --json | sed -n 's/.*"accuracy":\([0-9.]*\).*/\1/p')
check "eval --json accuracy is a learnt one (> 0.6): $acc" 'awk -v a="$acc" "BEGIN{exit !(a > 0.6)}"'
json=$("$kiln" train "${common[@]}" --epochs 1 --out "$work/j.kiln" --json)
check "train --json prints one JSON object" 'echo "$json" | grep -q "^{\"command\":\"train\".*}$" && [ "$(echo "$json" | wc -l)" -eq 1 ]'

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
