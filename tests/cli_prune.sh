#!/usr/bin/env bash
# kiln prune end to end on a small CNN and 2000 Fashion-MNIST test images:
#  - unstructured global L1: the sparsity asked for, a smaller file, kiln info's per-layer sparsity;
#  - --finetune keeps the pruned weights at zero, also when resumed from its checkpoint;
#  - structured channels: fewer channels, fewer FLOPs; --json prints one object with the table;
#  - --sensitivity prints the per-layer table; --schedule agp prunes while fine-tuning;
#  - bad input: each a one-line error and no file written.
source "$(dirname "$0")/support/cli_common.sh" "$@"

if [ ! -d /usr/share/datasets/fashion-mnist ] && [ -z "${KILN_FASHION_MNIST_DIR:-}" ]; then
    echo "skipped: dataset-fashion-mnist is not installed"; echo "0 passed, 0 failed, 1 skipped"; exit 0
fi
# The first 2000 test images as an npy pair: small enough for seconds of fine-tuning.
cli_fmnist_npy 2000
data="$work/x.npy,$work/y.npy"
cat > "$work/small.txt" <<'SPEC'
input 1 28 28
conv 8 3 stride=2 pad=1
batchnorm
relu
conv 8 3 stride=2 pad=1
batchnorm
relu
flatten
dense 32
relu
dense 10
SPEC
"$kiln" train --model "$work/small.txt" --data "$data" --epochs 2 --batch 50 --seed 3 --threads 2 \
    --quiet --out "$work/m.kiln" > /dev/null
check "a model to prune" '[ -s "$work/m.kiln" ]'
common=(--data "$data" --threads 2 --no-latency --quiet)

# zero count of a weight in a model, from kiln info --json
zeros_of() { "$kiln" info --json "$1" | /usr/bin/python3 -c "import json,sys; print(json.load(sys.stdin)['layer_sparsity'].get('$2', 0))"; }

out=$("$kiln" prune "$work/m.kiln" "${common[@]}" --amount 0.8 --scope global --out "$work/u.kiln")
check "unstructured prune succeeds and prints the table" 'echo "$out" | grep -q "non-zeros" && [ -s "$work/u.kiln" ]'
check "the pruned file is smaller" '[ "$(stat -c %s "$work/u.kiln")" -lt "$(( $(stat -c %s "$work/m.kiln") / 2 ))" ]'
info=$("$kiln" info "$work/u.kiln")
check "kiln info shows per-layer sparsity and sparse storage" 'echo "$info" | grep -q "^sparsity   conv1.weight" && echo "$info" | grep -q "sparse"'
total=$("$kiln" info --json "$work/u.kiln" | /usr/bin/python3 -c "import json,sys; print(json.load(sys.stdin)['sparsity'])")
check "about 80% of the parameters are zero ($total)" 'awk -v s="$total" "BEGIN{exit !(s > 0.78 && s < 0.81)}"'

# Fine-tuning: pruned weights stay zero, straight and resumed
"$kiln" prune "$work/m.kiln" "${common[@]}" --amount 0.7 --finetune 2 --batch 100 --out "$work/f.kiln" > /dev/null
"$kiln" prune "$work/m.kiln" "${common[@]}" --amount 0.7 --finetune 1 --batch 100 --out "$work/h.kiln" > /dev/null
"$kiln" prune --resume "$work/h.kiln.ckpt" "${common[@]}" --amount 0.7 --finetune 2 --batch 100 --out "$work/r.kiln" > /dev/null
for w in conv1.weight conv4.weight dense8.weight; do
    check "$w: 70% zero after fine-tuning" 'awk -v s="$(zeros_of "$work/f.kiln" $w)" "BEGIN{exit !(s > 0.69 && s < 0.71)}"'
done
check "resumed fine-tune == straight fine-tune (byte-identical)" 'cmp -s "$work/f.kiln" "$work/r.kiln"'

# Structured
json=$("$kiln" prune "$work/m.kiln" "${common[@]}" --structured channel --amount 0.5 --json --out "$work/s.kiln")
check "--json prints one JSON object" 'echo "$json" | grep -q "^{\"command\":\"prune\".*}$" && [ "$(echo "$json" | wc -l)" -eq 1 ]'
check "structured: channels 8 -> 4 and fewer FLOPs" 'echo "$json" | /usr/bin/python3 -c "
import json, sys
j = json.load(sys.stdin)
assert [l[\"units_after\"] for l in j[\"layers\"]] == [4, 4], j[\"layers\"]
assert j[\"summary\"][1][\"flops\"] * 2 < j[\"summary\"][0][\"flops\"]"'

out=$("$kiln" prune "$work/m.kiln" "${common[@]}" --val "$data" --sensitivity --amount 0.5 --out "$work/sens.kiln")
check "--sensitivity prints its table" 'echo "$out" | grep -q "^sensitivity" && echo "$out" | grep -q "chosen"'
"$kiln" prune "$work/m.kiln" "${common[@]}" --schedule agp --steps 4 --amount 0.6 --finetune 2 --batch 100 --out "$work/agp.kiln" > /dev/null
check "agp reaches its final sparsity" 'awk -v s="$(zeros_of "$work/agp.kiln" dense8.weight)" "BEGIN{exit !(s > 0.59 && s < 0.61)}"'

# Bad input: one line on stderr, exit 1, nothing written
bad() {
    local name=$1; shift
    "$kiln" prune "$@" 2> "$work/err" > /dev/null
    local rc=$?
    check "$name: exit 1 ($rc), one line: $(head -c 120 "$work/err")" '[ $rc -eq 1 ] && [ "$(wc -l < "$work/err")" -eq 1 ] && grep -q "^kiln prune: error: " "$work/err"'
    check "$name: nothing written" '[ ! -e "$work/bad.kiln" ]'
}
bad "--amount 1.5" "$work/m.kiln" "${common[@]}" --amount 1.5 --out "$work/bad.kiln"
bad "unknown method" "$work/m.kiln" "${common[@]}" --method magnitude --out "$work/bad.kiln"
printf 'input 1 28 28\nflatten\n' > "$work/none.txt"
bad "no prunable layer" "$work/none.txt" "${common[@]}" --out "$work/bad.kiln"
bad "output == input" "$work/m.kiln" "${common[@]}" --out "$work/m.kiln"
ln -s "$work/m.kiln" "$work/link.kiln"
bad "output == input through a link" "$work/m.kiln" "${common[@]}" --out "$work/link.kiln"
bad "unknown --scope" "$work/m.kiln" "${common[@]}" --scope model --out "$work/bad.kiln"
bad "--skip of no layer" "$work/m.kiln" "${common[@]}" --skip nothing.weight --out "$work/bad.kiln"
bad "no extension" "$work/m.kiln" "${common[@]}" --out "$work/bad"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
