#!/usr/bin/env bash
# kiln train --resume continues the run the checkpoint recorded: its seed, batch, optimizer and parameters
# and schedule come from the checkpoint, so resuming without repeating them gives the model of a run that
# never stopped (byte for byte), and the final model records the run's true seed. An option given on
# --resume that differs from the recorded one is refused in one line naming it, unless --override.
# Ctrl-C (SIGINT) stops at the next step boundary, writes the checkpoint mid-epoch and prints the command
# that resumes; that command finishes the run with the same model and log as an uninterrupted one.
source "$(dirname "$0")/support/cli_common.sh" "$@"
export OMP_NUM_THREADS=1

# A CSV task: 64 features, the class is which of the first 8 is largest.
/usr/bin/python3 -c "
import random
random.seed(2)
print(','.join('f%d' % i for i in range(64)) + ',label')
for _ in range(2000):
    x = [random.random() for _ in range(64)]
    print(','.join(f'{v:.3f}' for v in x) + f',{x.index(max(x[:8]))}')" > "$work/data.csv"
printf 'input 64\ndense 32\nrelu\ndense 8\n' > "$work/spec.txt"
cd "$work" || exit 1

# Options recorded and reused: SGD with momentum, a step schedule, seed 7, batch 16.
run=(--data data.csv --optimizer sgd --lr 0.05 --momentum 0.9 --schedule step --gamma 0.5 --seed 7 --batch 16
     --threads 1 --quiet)
"$kiln" train --model spec.txt "${run[@]}" --epochs 2 --out straight.kiln > /dev/null
"$kiln" train --model spec.txt "${run[@]}" --epochs 1 --out half.kiln > /dev/null
check "the first half succeeds" '[ -s half.kiln.ckpt ]'
"$kiln" train --resume half.kiln.ckpt --data data.csv --epochs 2 --threads 1 --quiet --out resumed.kiln > /dev/null
check "resuming without repeating the options gives the straight run's model" 'cmp -s straight.kiln resumed.kiln'
check "the final model records the run's seed (7)" '"$kiln" info resumed.kiln --json | grep -q "\"train.seed\":\"7\""'

conflict() { # NAME FLAG ARGS...
    local name=$1 flag=$2
    shift 2
    "$kiln" train --resume half.kiln.ckpt --data data.csv --epochs 2 --threads 1 --quiet --out c.kiln "$@" \
        > /dev/null 2> err.txt
    local rc=$?
    check "$name: refused" '[ $rc -eq 1 ] && [ ! -e c.kiln ]'
    check "$name: one line naming $flag" '[ "$(wc -l < err.txt)" -eq 1 ] && grep -q -- "$flag" err.txt && grep -q -- "--override" err.txt'
}
conflict "another --batch" "--batch 32" --batch 32
conflict "another --lr" "--lr 0.1" --lr 0.1
conflict "another --seed" "--seed 8" --seed 8
conflict "another --momentum" "--momentum 0.5" --momentum 0.5
conflict "another --schedule" "--schedule cosine" --schedule cosine
"$kiln" train --resume half.kiln.ckpt --data data.csv --epochs 2 --threads 1 --quiet --out same.kiln --batch 16 \
    --lr 0.05 --seed 7 > /dev/null
check "repeating the recorded values is accepted and changes nothing" 'cmp -s straight.kiln same.kiln'
"$kiln" train --resume half.kiln.ckpt --data data.csv --epochs 2 --threads 1 --quiet --out over.kiln --lr 0.01 \
    --override > /dev/null
check "--override takes a different --lr" '[ -s over.kiln ] && ! cmp -s straight.kiln over.kiln && "$kiln" info over.kiln --json | grep -q "\"train.optim.lr\":\"0.00999999978\""'
"$kiln" train --model spec.txt --data data.csv --epochs 1 --quiet --out x.kiln --override > /dev/null 2> err.txt
check "--override without --resume is refused" '[ $? -ne 0 ] && grep -q "goes with --resume" err.txt'

# Ctrl-C once the first epoch's line is out: a checkpoint mid-epoch and the command that resumes. The run
# lasts about 3 s whatever the build (a sanitizer build is 100 times slower): its epoch count comes from
# the rate of a one-epoch run.
rate=$("$kiln" train --model spec.txt --data data.csv --batch 4 --threads 1 --epochs 1 --quiet --out rate.kiln |
       sed -n 's/.*(\([0-9]*\) samples\/s).*/\1/p')
epochs=$(( ${rate:-0} * 3 / 2000 ))
epochs=$(( epochs < 3 ? 3 : epochs > 300 ? 300 : epochs ))
echo "note: $epochs epochs (one ran at ${rate:-?} samples/s)"
long=(--data data.csv --batch 4 --seed 5 --threads 1 --epochs "$epochs")
"$kiln" train --model spec.txt "${long[@]}" --out ref.kiln --log ref.log > /dev/null 2>&1
: > int.out
"$kiln" train --model spec.txt "${long[@]}" --out int.kiln --log int.log > int.out 2> int.err &
pid=$!
while kill -0 "$pid" 2> /dev/null && ! grep -q "^epoch *1/$epochs " int.out; do sleep 0.01; done
kill -INT "$pid"
wait "$pid"
rc=$?
check "SIGINT ends the run with status 130" '[ $rc -eq 130 ]'
check "SIGINT writes the checkpoint, not the model" '[ -s int.kiln.ckpt ] && [ ! -e int.kiln ]'
check "SIGINT stops mid-run ($epochs epochs) and says where" \
    'grep -q "interrupted after step [0-9]* (epoch [0-9]* of $epochs); checkpoint written to int.kiln.ckpt" int.err && ! grep -q "(epoch 1 of" int.err'
command=$(sed -n 's/^resume with: //p' int.err)
check "SIGINT prints the command that resumes" '[[ "$command" == "kiln train --resume int.kiln.ckpt "* ]]'
eval "\"$kiln\" ${command#kiln }" > /dev/null 2>&1
check "the printed command finishes the run" '[ -s int.kiln ]'
check "interrupted + resumed == uninterrupted (byte-identical model)" 'cmp -s ref.kiln int.kiln'
check "interrupted + resumed == uninterrupted (same per-epoch metrics)" \
    'diff <(cut -d, -f1-7 ref.log) <(cut -d, -f1-7 int.log) > /dev/null'
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
