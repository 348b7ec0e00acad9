#!/usr/bin/env bash
# A model trained on CSV standardises its features; its ONNX export does so in the graph (Sub/Div at the
# input). Without onnxruntime (tests/cli_onnxruntime.sh compares with it), this checks kiln's own use of
# the export: kiln run and kiln eval on the .onnx give what they give on the .kiln (the import does not
# standardise a second time), and fine-tuning the .onnx on the CSV feeds the graph raw features (a
# learning rate of 0 leaves its outputs as they were), as does fine-tuning its .kiln conversion.
source "$(dirname "$0")/support/cli_common.sh" "$@"
export OMP_NUM_THREADS=1
if ! "$kiln" convert --help 2>&1 | grep -q -- "--norm-as-metadata"; then
    echo "skipped: this kiln has no ONNX export"; echo "0 passed, 0 failed, 1 skipped"; exit 0
fi
/usr/bin/python3 -c "
import random
random.seed(7)
print('a,b,c,label')
for _ in range(120):
    x = [random.gauss(300, 50), random.gauss(-2, 0.01), random.gauss(5e4, 1e3)]
    print(','.join(f'{v:.5f}' for v in x) + f',{int(x[0] > 300) + int(x[2] > 5e4)}')" > "$work/rows.csv"
printf 'input 3\ndense 16\nrelu\ndense 3\n' > "$work/spec.txt"
cd "$work" || exit 1
"$kiln" train --model spec.txt --data rows.csv --epochs 3 --batch 16 --quiet --out m.kiln > /dev/null
"$kiln" convert m.kiln m.onnx > /dev/null
"$kiln" convert m.onnx back.kiln > /dev/null
same_outputs() { # A B: kiln run on rows.csv gives the same outputs within 1e-5 of their scale
    "$kiln" run "$1" rows.csv --out "out_$1" > /dev/null 2>&1 && "$kiln" run "$2" rows.csv --out "out_$2" > /dev/null 2>&1 &&
        /usr/bin/python3 -c "
import glob, numpy as np, sys
a = [np.load(f) for f in sorted(glob.glob('out_$1/*.npy'))]
b = [np.load(f) for f in sorted(glob.glob('out_$2/*.npy'))]
sys.exit(not (a and len(a) == len(b) and all(np.abs(x - y).max() <= 1e-5 * np.abs(x).max() for x, y in zip(a, b))))"
}
check "kiln run on the export equals kiln run on the model" 'same_outputs m.kiln m.onnx'
check "the export has no mean/std to apply twice" '"$kiln" info m.kiln | grep -q "^input norm" && ! "$kiln" info m.onnx | grep -q "^input norm" && "$kiln" info m.onnx | grep -q "kiln.input_standardized = in the graph"'
acc_kiln=$("$kiln" eval m.kiln --data rows.csv --json 2> /dev/null | sed 's/.*"loss":\([0-9.]*\).*/\1/')
acc_onnx=$("$kiln" eval m.onnx --data rows.csv --json 2> /dev/null | sed 's/.*"loss":\([0-9.]*\).*/\1/')
check "kiln eval on the export gives the model's loss ($acc_kiln, $acc_onnx)" '[ -n "$acc_kiln" ] && awk -v a="$acc_kiln" -v b="$acc_onnx" "BEGIN{d=a-b; exit !(d < 1e-4 && d > -1e-4)}"'
for m in m.onnx back.kiln; do
    "$kiln" train --model "$m" --data rows.csv --epochs 1 --optimizer sgd --lr 1e-30 --quiet --out "ft_${m%.*}.kiln" > /dev/null
    check "fine-tuning $m feeds it raw features" "same_outputs m.kiln ft_${m%.*}.kiln"
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
