#!/usr/bin/env bash
# kiln train --early-stop N stops once the validation loss has not improved for N epochs, and --save-best
# writes the epoch of lowest validation loss instead of the last. Oracles: the per-epoch validation losses
# of --log (the stop epoch is the argmin + N, the kept epoch the argmin), and a plain run of exactly that
# many epochs, whose outputs on the data must equal the kept model's bit for bit. A run interrupted by its
# epoch limit and resumed keeps the same best epoch as one that never stopped.
source "$(dirname "$0")/support/cli_common.sh" "$@"
export OMP_NUM_THREADS=1

# Noisy labels and a large network: the validation loss turns up after a few epochs.
/usr/bin/python3 -c "
import random
random.seed(5)
print('a,b,c,d,label')
for _ in range(240):
    x = [random.random() for _ in range(4)]
    y = x.index(max(x[:3])) if random.random() < 0.6 else random.randrange(3)
    print(','.join(f'{v:.4f}' for v in x) + f',{y}')" > "$work/noisy.csv"
printf 'input 4\ndense 64\nrelu\ndense 64\nrelu\ndense 3\n' > "$work/over.txt"
cd "$work" || exit 1
run=(--data noisy.csv --val-split 0.25 --lr 0.001 --batch 16 --threads 1 --seed 3)

out=$("$kiln" train --model over.txt "${run[@]}" --epochs 40 --early-stop 3 --save-best --out best.kiln --log es.log 2> /dev/null)
check "training with --early-stop and --save-best succeeds" '[ $? -eq 0 ] && [ -s best.kiln ]'
epochs=$(($(wc -l < es.log) - 1))
argmin=$(tail -n +2 es.log | sort -t, -k6,6g | head -1 | cut -d, -f1)
check "it stopped early ($epochs of 40 epochs)" '[ "$epochs" -lt 40 ] && echo "$out" | grep -q "early stop after epoch $epochs: the validation loss has not improved for 3 epochs"'
check "it stopped 3 epochs after the lowest validation loss (epoch $argmin)" '[ "$epochs" -eq $((argmin + 3)) ]'
check "it kept that epoch" 'echo "$out" | grep -q "kept epoch $argmin, of lowest validation loss" && "$kiln" info best.kiln --json | grep -q "\"train.best_epoch\":\"$argmin\""'

"$kiln" train --model over.txt "${run[@]}" --epochs "$argmin" --out plain.kiln > /dev/null 2>&1
"$kiln" run best.kiln noisy.csv --out best_out > /dev/null 2>&1
"$kiln" run plain.kiln noisy.csv --out plain_out > /dev/null 2>&1
check "the kept model computes what a plain $argmin-epoch run computes (bit for bit)" \
    '[ -n "$(ls best_out)" ] && diff -r best_out plain_out > /dev/null'
"$kiln" train --model over.txt "${run[@]}" --epochs 40 --early-stop 3 --out last.kiln > /dev/null 2>&1
"$kiln" run last.kiln noisy.csv --out last_out > /dev/null 2>&1
check "without --save-best the last epoch is written" '! diff -r best_out last_out > /dev/null'

# Stopped by its epoch limit after epoch 2 and resumed: the same stop and the same kept epoch.
"$kiln" train --model over.txt "${run[@]}" --epochs 2 --early-stop 3 --save-best --out half.kiln > /dev/null 2>&1
"$kiln" train --resume half.kiln.ckpt --data noisy.csv --val-split 0.25 --threads 1 --epochs 40 --out resumed.kiln \
    > /dev/null 2>&1
"$kiln" run resumed.kiln noisy.csv --out resumed_out > /dev/null 2>&1
check "resumed: the same kept epoch" '"$kiln" info resumed.kiln --json | grep -q "\"train.best_epoch\":\"$argmin\""'
check "resumed: the same model outputs" '[ -n "$(ls resumed_out)" ] && diff -r best_out resumed_out > /dev/null'

"$kiln" train --model over.txt --data noisy.csv --epochs 2 --early-stop 3 --quiet --out x.kiln > /dev/null 2> err.txt
check "--early-stop without validation data is one error line" '[ $? -eq 1 ] && [ "$(wc -l < err.txt)" -eq 1 ] && grep -q "give --val or --val-split" err.txt'
"$kiln" train --model over.txt --data noisy.csv --val-split 0.25 --epochs 2 --early-stop 0 --out x.kiln > /dev/null 2> err.txt
check "--early-stop 0 is refused" '[ $? -ne 0 ] && grep -q "at least 1 epoch" err.txt'
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
