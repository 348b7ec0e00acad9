#!/usr/bin/env bash
# kiln train --augment (random views of image samples, per sample and epoch, from the seed) end to end on the
# first 300 Fashion-MNIST test images:
#  - no --augment and --augment none write the same model file byte for byte (off is today's training);
#  - the same seed twice: byte-identical models; another augmentation: another model;
#  - the model records the augmentation; 2 epochs straight == 1 epoch + --resume (which keeps the recorded
#    augmentation), byte for byte; resuming with another --augment is refused without --override;
#  - kiln distill takes --augment; a bad value, and tabular data, are one error line each;
#  - mixup:A: recorded, the same seed twice byte-identical, another model than without it, resumable byte for
#    byte, taken by kiln distill, accepted on tabular data (where shift and flip are refused).
source "$(dirname "$0")/support/cli_common.sh" "$@"

if [ ! -d /usr/share/datasets/fashion-mnist ] && [ -z "${KILN_FASHION_MNIST_DIR:-}" ]; then
    echo "skipped: dataset-fashion-mnist is not installed"; echo "0 passed, 0 failed, 1 skipped"; exit 0
fi
cli_fmnist_npy 300
cat > "$work/small.txt" <<'SPEC'
input 1 28 28
conv 4 3 stride=2 pad=1
relu
flatten
dense 10
SPEC
cd "$work" || exit 1
common=(--model small.txt --data x.npy,y.npy --batch 50 --seed 3 --threads 1 --quiet)

"$kiln" train "${common[@]}" --epochs 1 --out plain.kiln > /dev/null
"$kiln" train "${common[@]}" --epochs 1 --augment none --out none.kiln > /dev/null
check "--augment none writes the model a run without it writes" '[ -s plain.kiln ] && cmp -s plain.kiln none.kiln'
check "a run without augmentation records none" '! "$kiln" info plain.kiln | grep -q "train.augment"'

"$kiln" train "${common[@]}" --epochs 2 --augment shift:2,flip --out aug.kiln > /dev/null
"$kiln" train "${common[@]}" --epochs 2 --augment flip,shift:2 --out aug_again.kiln > /dev/null
check "the same seed and augmentation twice: byte-identical models" '[ -s aug.kiln ] && cmp -s aug.kiln aug_again.kiln'
"$kiln" train "${common[@]}" --epochs 2 --augment shift:1 --out shift1.kiln > /dev/null
check "another augmentation trains another model" '[ -s shift1.kiln ] && ! cmp -s aug.kiln shift1.kiln'
check "the model records its augmentation" '"$kiln" info aug.kiln --json | grep -q "\"train.augment\":\"shift:2,flip\""'

"$kiln" train "${common[@]}" --epochs 1 --augment shift:2,flip --out half.kiln > /dev/null
"$kiln" train --resume half.kiln.ckpt --data x.npy,y.npy --threads 1 --quiet --epochs 2 --out resumed.kiln > /dev/null
check "2 epochs straight == 1 epoch + resume (the checkpoint's augmentation), byte-identical" \
    '[ -s resumed.kiln ] && cmp -s aug.kiln resumed.kiln'
"$kiln" train --resume half.kiln.ckpt --data x.npy,y.npy --threads 1 --quiet --epochs 2 --augment flip \
    --out other.kiln > /dev/null 2> err.txt
check "resuming with another --augment is refused" '[ $? -ne 0 ] && grep -q "\-\-augment flip differs" err.txt'

"$kiln" distill --teacher plain.kiln --student small.txt --data x.npy,y.npy --batch 50 --epochs 1 --threads 1 \
    --quiet --augment shift:1,flip --out student.kiln > /dev/null 2> err.txt
check "kiln distill --augment trains a student" '[ $? -eq 0 ] && [ -s student.kiln ] && "$kiln" info student.kiln --json | grep -q "\"train.augment\":\"shift:1,flip\""'

"$kiln" train "${common[@]}" --epochs 2 --augment mixup:1,shift:1 --out mix.kiln > /dev/null
"$kiln" train "${common[@]}" --epochs 2 --augment shift:1,mixup:1 --out mix_again.kiln > /dev/null
check "mixup: the same seed twice, byte-identical models" '[ -s mix.kiln ] && cmp -s mix.kiln mix_again.kiln'
check "mixup trains another model than the same views without it" '! cmp -s mix.kiln shift1.kiln'
check "the model records mixup" '"$kiln" info mix.kiln --json | grep -q "\"train.augment\":\"shift:1,mixup:1\""'
"$kiln" train "${common[@]}" --epochs 1 --augment shift:1,mixup:1 --out mix_half.kiln > /dev/null
"$kiln" train --resume mix_half.kiln.ckpt --data x.npy,y.npy --threads 1 --quiet --epochs 2 --out mix_resumed.kiln > /dev/null
check "mixup: 2 epochs straight == 1 epoch + resume, byte-identical" '[ -s mix_resumed.kiln ] && cmp -s mix.kiln mix_resumed.kiln'
"$kiln" distill --teacher plain.kiln --student small.txt --data x.npy,y.npy --batch 50 --epochs 1 --threads 1 \
    --quiet --alpha 1 --augment mixup:1 --out mix_student.kiln > /dev/null 2> err.txt
check "kiln distill --augment mixup:1 trains a student" '[ $? -eq 0 ] && [ -s mix_student.kiln ]'
"$kiln" train "${common[@]}" --epochs 1 --augment mixup:0 --out bad.kiln > /dev/null 2> err.txt
check "mixup:0 is one error line" '[ $? -ne 0 ] && [ "$(wc -l < err.txt)" -eq 1 ] && grep -q "mixup:A" err.txt && [ ! -e bad.kiln ]'

"$kiln" train "${common[@]}" --epochs 1 --augment shift:2,twirl --out bad.kiln > /dev/null 2> err.txt
check "a bad --augment is one error line naming it" '[ $? -ne 0 ] && [ "$(wc -l < err.txt)" -eq 1 ] && grep -q "twirl" err.txt && [ ! -e bad.kiln ]'
printf 'a,b,label\n0.1,0.2,0\n0.3,0.1,1\n0.5,0.9,0\n0.7,0.3,1\n' > t.csv
printf 'input 2\ndense 2\n' > tab.txt
"$kiln" train --model tab.txt --data t.csv --epochs 1 --augment flip --quiet --out tab.kiln > /dev/null 2> err.txt
check "--augment on tabular data is one error line" '[ $? -ne 0 ] && [ "$(wc -l < err.txt)" -eq 1 ] && grep -q "(C, H, W)" err.txt'
"$kiln" train --model tab.txt --data t.csv --epochs 1 --augment mixup:1 --quiet --out tab.kiln > /dev/null 2> err.txt
check "--augment mixup:1 on tabular data trains" '[ $? -eq 0 ] && [ -s tab.kiln ]'
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
