#!/usr/bin/env bash
# Data errors name where they are, and data that does not match the model is refused:
#  - a CSV label -1, 0.5, 2e9 (not a class index) or nan (not a finite number) is one error line naming the
#    file, the line and the column; one nan does not turn a numeric label column into string classes (a
#    column of names holding "nan" still is one);
#  - a model trained on CSV stores its feature column names: kiln eval and kiln run refuse a CSV whose
#    feature columns are swapped (saying so) or renamed, and kiln train refuses such a --val;
#  - train, eval and run read .npy files with one reader: the same dtypes, header limits and non-finite
#    values are accepted or refused by all three.
source "$(dirname "$0")/support/cli_common.sh" "$@"
export OMP_NUM_THREADS=1
printf 'input 2\ndense 3\n' > "$work/spec2.txt"

# ---- labels ----
labels_csv() { # LABEL_OF_ROW_4 OTHER_LABELS...: 10 rows whose 4th (line 5) has the given label
    local bad=$1
    shift
    local others=("$@")
    echo "a,b,label"
    for i in $(seq 0 9); do
        if [ "$i" -eq 3 ]; then echo "$i,$((i * 2)),$bad"; else echo "$i,$((i * 2)),${others[$((i % ${#others[@]}))]}"; fi
    done
}
for bad in -1 0.5 2e9 nan; do
    labels_csv "$bad" 0 1 2 > "$work/bad.csv"
    "$kiln" train --model "$work/spec2.txt" --data "$work/bad.csv" --epochs 1 --quiet --out "$work/b.kiln" \
        > /dev/null 2> "$work/err.txt"
    rc=$?
    check "label $bad: refused" '[ $rc -eq 1 ] && [ ! -e "$work/b.kiln" ]'
    check "label $bad: one line naming the line, column and value" \
        '[ "$(wc -l < "$work/err.txt")" -eq 1 ] && grep -q "bad.csv:5: column 3 ('"'"'label'"'"')" "$work/err.txt" && grep -q -- "$bad" "$work/err.txt"'
done
check "a nan label is not a finite number (not a string class)" 'grep -q "not a finite number" "$work/err.txt"'
labels_csv nan cat dog > "$work/names.csv"
"$kiln" train --model "$work/spec2.txt" --data "$work/names.csv" --epochs 1 --quiet --out "$work/n.kiln" > /dev/null 2>&1
check "a column of names may hold the name 'nan'" '"$kiln" info "$work/n.kiln" | grep -q "nan"'

# ---- column names ----
/usr/bin/python3 -c "
import random
random.seed(4)
rows = [[random.random(), random.random() * 10, random.random() * 100] for _ in range(200)]
def write(path, header, order):
    with open(path, 'w') as f:
        f.write(','.join(header) + '\n')
        for r in rows:
            f.write(','.join(f'{r[i]:.4f}' for i in order) + f',{int(r[0] > 0.5) + int(r[2] > 50)}\n')
write('$work/cols.csv', ['a', 'b', 'c', 'label'], [0, 1, 2])
write('$work/swapped.csv', ['a', 'c', 'b', 'label'], [0, 2, 1])
write('$work/renamed.csv', ['a', 'b', 'd', 'label'], [0, 1, 2])
with open('$work/features.csv', 'w') as f:
    f.write('a,b,c\n')
    for r in rows[:5]:
        f.write(','.join(f'{v:.4f}' for v in r) + '\n')"
printf 'input 3\ndense 8\nrelu\ndense 3\n' > "$work/spec3.txt"
"$kiln" train --model "$work/spec3.txt" --data "$work/cols.csv" --epochs 2 --quiet --out "$work/cols.kiln" > /dev/null
check "the model stores its CSV column names" '"$kiln" info "$work/cols.kiln" | grep -q "train.columns = a,b,c"'
check "eval on the training columns works" '"$kiln" eval "$work/cols.kiln" --data "$work/cols.csv" > /dev/null 2>&1'
check "run on the feature columns alone works" '"$kiln" run "$work/cols.kiln" "$work/features.csv" > /dev/null 2>&1'
refused() { # NAME PATTERN COMMAND...
    local name=$1 pattern=$2
    shift 2
    "$@" > /dev/null 2> "$work/err.txt"
    local rc=$?
    check "$name: refused" '[ $rc -eq 1 ]'
    check "$name: one line saying '$pattern'" '[ "$(wc -l < "$work/err.txt")" -eq 1 ] && grep -q -- "$pattern" "$work/err.txt"'
}
refused "eval on swapped columns" "columns are a,c,b but the model was trained on a,b,c: the same columns in another order" \
    "$kiln" eval "$work/cols.kiln" --data "$work/swapped.csv"
refused "run on swapped columns" "the same columns in another order" "$kiln" run "$work/cols.kiln" "$work/swapped.csv"
refused "eval on a renamed column" "columns are a,b,d but the model was trained on a,b,c: rename" \
    "$kiln" eval "$work/cols.kiln" --data "$work/renamed.csv"
refused "train with a swapped --val" "the same columns in another order" \
    "$kiln" train --model "$work/spec3.txt" --data "$work/cols.csv" --val "$work/swapped.csv" --epochs 1 --quiet \
    --out "$work/v.kiln"

# ---- .npy: one reader for train, eval and run ----
/usr/bin/python3 -c "
import struct, numpy as np
rng = np.random.default_rng(1)
x = rng.normal(size=(40, 4))
np.save('$work/x16.npy', x.astype(np.float16))
np.save('$work/y8.npy', (x[:, 0] > 0).astype(np.int8))
np.save('$work/ybool.npy', x[:, 1] > 0)
nan = x.astype(np.float32)
nan[3, 2] = np.nan
np.save('$work/xnan.npy', nan)
np.save('$work/x32.npy', x.astype(np.float32))
# a valid version 2.0 file whose header is padded past 64 KiB
header = (\"{'descr': '<f4', 'fortran_order': False, 'shape': (40, 4), }\").ljust(70000) + '\\n'
with open('$work/xbig.npy', 'wb') as f:
    f.write(b'\\x93NUMPY\\x02\\x00' + struct.pack('<I', len(header)) + header.encode() + x.astype('<f4').tobytes())"
printf 'input 4\ndense 2\n' > "$work/spec4.txt"
train_npy() { "$kiln" train --model "$work/spec4.txt" --data "$1" --epochs 1 --quiet --out "$work/npy.kiln" > /dev/null 2> "$work/err.txt"; }
check "train reads float16 inputs and int8 labels" 'train_npy "$work/x16.npy,$work/y8.npy"'
check "train reads bool labels" 'train_npy "$work/x32.npy,$work/ybool.npy"'
check "run reads float16 inputs" '"$kiln" run "$work/npy.kiln" "$work/x16.npy" --batch-dim > /dev/null 2>&1'
check "eval reads float16 inputs" '"$kiln" eval "$work/npy.kiln" --data "$work/x16.npy,$work/y8.npy" > /dev/null 2>&1'
train_npy "$work/xnan.npy,$work/y8.npy"
check "train refuses a nan input, naming the element" '[ $? -eq 1 ] && grep -q "xnan.npy: element 14 is not a finite number" "$work/err.txt"'
"$kiln" run "$work/npy.kiln" "$work/xnan.npy" --batch-dim > "$work/out.txt" 2> "$work/err.txt"
check "run takes it as given (an input may hold nan, as ONNX models test for it): the output is nan" \
    '[ $? -eq 0 ] && grep -qi "nan" "$work/out.txt"'
train_npy "$work/xbig.npy,$work/y8.npy"
check "train refuses a header over 64 KiB" '[ $? -eq 1 ] && grep -q "xbig.npy: .npy header length 70001 is over kiln.s limit" "$work/err.txt"'
"$kiln" run "$work/npy.kiln" "$work/xbig.npy" --batch-dim > /dev/null 2> "$work/err.txt"
check "run refuses it the same way" '[ $? -eq 1 ] && grep -q "xbig.npy: .npy header length 70001 is over kiln.s limit" "$work/err.txt"'

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
