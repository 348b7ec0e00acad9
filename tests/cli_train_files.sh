#!/usr/bin/env bash
# kiln train never destroys a file it was handed: --out, --checkpoint and --log that name the training
# data, the validation data or the model (also through a link) are refused before anything is written;
# --out must be .kiln or .onnx; an unwritable or missing folder is refused before the first epoch; --log appends,
# on a fresh run too. Each refusal is one line and leaves every file as it was. A failed write names --out;
# a killed run's leftover temporary file is removed by the next run.
source "$(dirname "$0")/support/cli_common.sh" "$@"

# A small CSV task: 3 features, class = which feature is largest.
/usr/bin/python3 -c "
import random
random.seed(1)
print('a,b,c,label')
for _ in range(120):
    x = [random.random() for _ in range(3)]
    print(','.join(f'{v:.4f}' for v in x) + f',{x.index(max(x))}')" > "$work/data.csv"
printf 'input 3\ndense 8\nrelu\ndense 3\n' > "$work/spec.txt"
cp "$work/data.csv" "$work/data.orig"
cp "$work/spec.txt" "$work/spec.orig"
ln -s "$work/data.csv" "$work/link.kiln"
train() { "$kiln" train --model "$work/spec.txt" --data "$work/data.csv" --epochs 1 --batch 16 --quiet "$@"; }

refused() { # NAME PATTERN ARGS...
    local name=$1 pattern=$2
    shift 2
    train "$@" > "$work/out.txt" 2> "$work/err.txt"
    local rc=$?
    check "$name: refused" '[ $rc -eq 1 ] || [ $rc -eq 2 ]'
    check "$name: one line saying '$pattern'" '[ "$(wc -l < "$work/err.txt")" -eq 1 ] && grep -q -- "$pattern" "$work/err.txt"'
    check "$name: the data and spec are intact" 'cmp -s "$work/data.csv" "$work/data.orig" && cmp -s "$work/spec.txt" "$work/spec.orig"'
}
refused "--out without .kiln/.onnx" "written as .kiln or .onnx" --out "$work/data.csv"
refused "--out a link to the data" "is an input" --out "$work/link.kiln"
refused "--log is the data" "is an input" --out "$work/m.kiln" --log "$work/data.csv"
refused "--checkpoint is the data" "is an input" --out "$work/m.kiln" --checkpoint "$work/data.csv"
refused "--log is the validation data" "is an input" --out "$work/m.kiln" --val "$work/data.csv" --log "$work/data.csv"
check "nothing was written by the refusals" '[ ! -e "$work/m.kiln" ] && [ ! -e "$work/m.kiln.ckpt" ]'
mkdir "$work/locked"
chmod a-w "$work/locked"
if [ "$(id -u)" -eq 0 ]; then
    echo "note: running as root, which writes into read-only folders: the unwritable-folder case is not checked"
else
    refused "an unwritable folder" "Permission denied" --out "$work/locked/m.kiln"
fi
refused "a folder that does not exist" "No such file or directory" --out "$work/no/such/folder/m.kiln"

# --log appends, on a fresh run too.
printf 'an earlier run\n' > "$work/log.csv"
check "a run with --log succeeds" 'train --out "$work/m.kiln" --log "$work/log.csv" > /dev/null'
check "--log kept the earlier content" 'head -1 "$work/log.csv" | grep -q "an earlier run"'
check "--log appended this run's epoch" '[ "$(wc -l < "$work/log.csv")" -eq 2 ] && tail -1 "$work/log.csv" | grep -q "^1,"'
train --out "$work/m2.kiln" --log "$work/fresh.csv" > /dev/null
check "an empty log gets the header" 'head -1 "$work/fresh.csv" | grep -q "^epoch,step,lr"'
# A write that fails names --out, not the temporary file it writes first, and leaves no temporary behind.
mkdir "$work/dir.kiln"
train --out "$work/dir.kiln" > /dev/null 2> "$work/err.txt"
check "a failed write is refused" '[ $? -ne 0 ]'
check "the failed write names --out" 'grep -q "dir.kiln" "$work/err.txt" && ! grep -q "\.tmp\." "$work/err.txt"'
check "the failed write leaves no temporary file" '[ -z "$(ls "$work" | grep "\.tmp\.")" ]'

# A killed run's temporary file (a pid that is not alive) is removed by the next write to that path; a
# live process's one is kept.
sleep 30 &
live=$!
dead=$(sh -c 'echo $$')
while kill -0 "$dead" 2> /dev/null; do dead=$(sh -c 'echo $$'); done
printf 'stale' > "$work/m3.kiln.ckpt.tmp.$dead"
printf 'stale' > "$work/m3.kiln.tmp.$dead"
printf 'live' > "$work/m3.kiln.ckpt.tmp.$live"
printf 'other' > "$work/m3.kiln.ckpt.tmp.x$dead"
check "a run next to stale temporary files succeeds" 'train --out "$work/m3.kiln" > /dev/null'
check "the dead run's checkpoint temporary is gone" '[ ! -e "$work/m3.kiln.ckpt.tmp.$dead" ]'
check "the dead run's model temporary is gone" '[ ! -e "$work/m3.kiln.tmp.$dead" ]'
check "a live process's temporary is kept" '[ -e "$work/m3.kiln.ckpt.tmp.$live" ]'
check "a file not of our naming is kept" '[ -e "$work/m3.kiln.ckpt.tmp.x$dead" ]'
kill "$live"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
