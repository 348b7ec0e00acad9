#!/usr/bin/env bash
# Distillation on Fashion-MNIST against the Compress issue's target: a student with a quarter of the
# CNN's channels (conv 8, conv 16, dense 32; 26,746 parameters), distilled, must beat the same student
# trained alone — same recipe, same epochs, seeds 1-3 — by more than the seed-to-seed spread (max - min).
# kiln (`kiln train` / `kiln distill`) and PyTorch 1.13 (bench/torch_distill.py, the same teacher read
# from kiln's ONNX export, the same student, loss and recipe) side by side.
#
# The teacher is examples/specs/fmnist_cnn.txt trained TEACHER_EPOCHS epochs with the same schedule as
# the students (trained here unless build/compress-bench/teacher_E.kiln exists). docs/compress.md,
# "Distillation", has the scan behind the recipe's defaults.
# Writes the section to build/compress-bench/distill.md, puts it in place of the distillation section of
# bench/results/compress.md when that file has one (bench/compress.sh writes the file), and prints it.
# AUGMENT (kiln's --augment: shift:N, flip, mixup:A, joined by commas; default none) gives both students,
# alone and distilled, in kiln and in PyTorch, the same augmentation; the distilled ones then have the teacher
# label each augmented view or mix (Beyer et al. 2022's "function matching"). With AUGMENT the student alone is
# also trained without it, and with each of ALONE_AUGMENT (space-separated, e.g. "shift:1"), and the distilled
# student is judged against the best of them.
# TEACHER_AUGMENT (default none) is the teacher's own augmentation (a teacher that labels shifted views well
# is one trained on them). LIMIT=N trains the students on the first N training images (default: all 60,000);
# the teacher is trained on all of them either way (it then knows more than the data the students see). TORCH=0 leaves PyTorch's rows out (with augmentation its distilled runs label every batch with the
# teacher and take hours of CPU on a busy machine; bench/torch_distill.py has no mixup, so mixup needs TORCH=0).
# Usage: [EPOCHS=10] [TEACHER_EPOCHS=15] [SCHEDULE=cosine] [TEMPERATURE=2] [ALPHA=0.5] [AUGMENT=none]
#        [TEACHER_AUGMENT=none] [ALONE_AUGMENT=] [LIMIT=0] [TORCH=1] bench/distill.sh [THREADS]
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-2}
epochs=${EPOCHS:-10}
teacher_epochs=${TEACHER_EPOCHS:-15}
schedule=${SCHEDULE:-cosine}
temperature=${TEMPERATURE:-2}
alpha=${ALPHA:-0.5}
augment=${AUGMENT:-none}
teacher_augment=${TEACHER_AUGMENT:-none}
limit=${LIMIT:-0}
torch=${TORCH:-1}
kiln=build/kiln
work=build/compress-bench
mkdir -p "$work"
cmake --build build -j"$(nproc)" > /dev/null
log() { echo "== $*" >&2; }
accuracy() { "$kiln" eval "$1" --data fashion-mnist:test --threads "$threads" --json | sed -n 's/.*"accuracy":\([0-9.]*\).*/\1/p'; }
train_data=fashion-mnist
if [ "$limit" != 0 ]; then # the first LIMIT training images as an .npy pair
    train_data=$work/train_first$limit.x.npy,$work/train_first$limit.y.npy
    [ -f "$work/train_first$limit.y.npy" ] || /usr/bin/python3 - "$limit" "$work" <<'PY'
import gzip, sys
import numpy as np
n, work = int(sys.argv[1]), sys.argv[2]
src = "/usr/share/datasets/fashion-mnist"
x = np.frombuffer(gzip.open(src + "/train-images-idx3-ubyte.gz").read(), np.uint8, offset=16)[:n * 784]
y = np.frombuffer(gzip.open(src + "/train-labels-idx1-ubyte.gz").read(), np.uint8, offset=8)[:n]
np.save(f"{work}/train_first{n}.x.npy", x.reshape(-1, 1, 28, 28))
np.save(f"{work}/train_first{n}.y.npy", y.astype(np.int64))
PY
fi
data=(--data "$train_data" --threads "$threads" --quiet)
recipe=(--batch 64 --optimizer adam --schedule "$schedule")
students=("${recipe[@]}" --augment "$augment")
slice=$([ "$limit" = 0 ] || echo "_n$limit")

teacher_tag=$([ "$teacher_augment" = none ] || echo "_${teacher_augment//[:,]/-}")
teacher=$work/teacher_$teacher_epochs$teacher_tag.kiln
[ -f "$teacher" ] || { log "teacher: the CNN, $teacher_epochs epochs, augmentation $teacher_augment"
    "$kiln" train --model examples/specs/fmnist_cnn.txt --data fashion-mnist --threads "$threads" --quiet \
        "${recipe[@]}" --epochs "$teacher_epochs" --seed 1 \
        --augment "$teacher_augment" --out "$teacher" > /dev/null; }
cat > "$work/student.txt" <<'SPEC'
input 1 28 28
conv 8 3 pad=1
batchnorm
relu
maxpool 2
conv 16 3 pad=1
batchnorm
relu
maxpool 2
flatten
dropout 0.25
dense 32
relu
dense 10
SPEC
# A student is trained unless its file, named by every setting that makes it, exists (as the teacher):
# seeds can be trained apart (in parallel, by the commands below) and gathered by a last run.
tag="e${epochs}_${schedule}_${augment//[:,]/-}$slice"
# The augmentations the student alone trains with: the distilled one's, none, and ALONE_AUGMENT's.
alone_augments=("$augment")
for a in none ${ALONE_AUGMENT:-}; do
    [[ " ${alone_augments[*]} " == *" $a "* ]] || alone_augments+=("$a")
done
declare -A alone_of # augmentation -> "accuracy accuracy accuracy"
kd=()
for seed in 1 2 3; do
    log "student seed $seed: alone (${alone_augments[*]}) and distilled ($augment), $epochs epochs"
    for a in "${alone_augments[@]}"; do
        solo=$work/student_alone_e${epochs}_${schedule}_${a//[:,]/-}${slice}_$seed.kiln
        [ -f "$solo" ] || "$kiln" train --model "$work/student.txt" "${data[@]}" "${recipe[@]}" --augment "$a" \
            --epochs "$epochs" --seed "$seed" --out "$solo" > /dev/null
        alone_of[$a]+="$(accuracy "$solo") "
    done
    distilled=$work/student_kd_t${teacher_epochs}${teacher_tag}_T${temperature}_a${alpha}_${tag}_$seed.kiln
    [ -f "$distilled" ] || "$kiln" distill --teacher "$teacher" --student "$work/student.txt" "${data[@]}" \
        "${students[@]}" --epochs "$epochs" --seed "$seed" --temperature "$temperature" --alpha "$alpha" \
        --out "$distilled" > /dev/null
    kd+=("$(accuracy "$distilled")")
done
mean_of() { echo "$*" | tr ' ' '\n' | grep . | awk '{ s += $1 } END { printf "%.6f", s / NR }'; }
best_augment=$augment
for a in "${alone_augments[@]}"; do
    awk -v m="$(mean_of ${alone_of[$a]})" -v b="$(mean_of ${alone_of[$best_augment]})" 'BEGIN { exit !(m > b) }' &&
        best_augment=$a
done
read -r -a best_alone <<< "${alone_of[$best_augment]}"
best_alone_label="kiln, alone, $best_augment"

torch_alone=() torch_distilled=()
[ "$torch" = 0 ] || {
    log "PyTorch: the student alone and distilled, 3 seeds"
    teacher_onnx=$work/teacher_$teacher_epochs$teacher_tag.onnx
    torch_runs=$work/torch_distill_t${teacher_epochs}${teacher_tag}_T${temperature}_a${alpha}_${tag}.jsonl # kept, as the students
    [ -s "$torch_runs" ] || { "$kiln" convert "$teacher" "$teacher_onnx" > /dev/null &&
        /usr/bin/python3 bench/torch_distill.py "$teacher_onnx" --epochs "$epochs" \
        --schedule "$schedule" --temperature "$temperature" --alpha "$alpha" --seeds 1,2,3 --threads "$threads" \
        --augment "$augment" $([ "$limit" = 0 ] || echo --train-count "$limit") > "$torch_runs.part" &&
        mv "$torch_runs.part" "$torch_runs"; }
    torch_kd=$(cat "$torch_runs")
    mapfile -t torch_alone < <(echo "$torch_kd" | sed -n 's/.*"mode": "alone", "accuracy": \([0-9.]*\).*/\1/p')
    mapfile -t torch_distilled < <(echo "$torch_kd" | sed -n 's/.*"mode": "distilled", "accuracy": \([0-9.]*\).*/\1/p')
}

# Mean and spread (max - min) over the seeds; the gain must exceed the larger of the two spreads.
stats() { tr ' ' '\n' | grep . | awk '{ s += $1; v[NR] = $1 } END { m = s / NR; lo = hi = v[1]; for (i in v) { if (v[i] < lo) lo = v[i]; if (v[i] > hi) hi = v[i] } printf "%.4f %.4f", m, hi - lo }'; }
kd_row() { # LABEL ACCURACIES...
    local label=$1
    shift
    read -r mean spread <<< "$(echo "$*" | stats)"
    echo "| $label | $(printf '%.4f | ' "$@")$mean | $spread |"
}
gain_verdict() { # ALONE... -- DISTILLED...
    local alone=() kd=() side=alone v
    for v in "$@"; do
        if [ "$v" = -- ]; then side=kd; elif [ $side = alone ]; then alone+=("$v"); else kd+=("$v"); fi
    done
    read -r am as <<< "$(echo "${alone[*]}" | stats)"
    read -r km ks <<< "$(echo "${kd[*]}" | stats)"
    awk -v a="$am" -v sa="$as" -v k="$km" -v sk="$ks" 'BEGIN { s = (sa > sk) ? sa : sk; g = k - a;
        printf "gain %+.4f against a spread of %.4f: %s", g, s, (g > s) ? "met" : "MISSED" }'
}
{
    echo "Distillation (\`bench/distill.sh $threads\`, $(date -u +%Y-%m-%d)): a student with a quarter of the channels"
    echo "(conv 8, conv 16, dense 32; 26,746 parameters), $epochs epochs, Adam 1e-3 with a $schedule schedule, batch 64,"
    echo "training images: $([ "$limit" = 0 ] && echo "all 60,000" || echo "the first $limit"); augmentation: $augment"
    echo "(both students; the distilled one's teacher labels each augmented view);"
    echo "distilled at T = $temperature, α = $alpha from the CNN trained $teacher_epochs epochs on all 60,000 images with the"
    echo "same schedule and augmentation $teacher_augment (test accuracy $(accuracy "$teacher")). Test accuracy, seeds 1–3;"
    echo "spread = max − min."
    echo
    echo "| student | seed 1 | seed 2 | seed 3 | mean | spread |"
    echo "|---|---|---|---|---|---|"
    for a in "${alone_augments[@]}"; do
        kd_row "kiln, alone, $a" ${alone_of[$a]}
    done
    kd_row "kiln, distilled, $augment" "${kd[@]}"
    if [ "$torch" != 0 ]; then
        kd_row "PyTorch, alone (\`bench/torch_distill.py\`)" "${torch_alone[@]}"
        kd_row "PyTorch, distilled" "${torch_distilled[@]}"
        echo
        echo "Beats the seed-to-seed spread — kiln (against $best_alone_label): $(gain_verdict "${best_alone[@]}" -- "${kd[@]}"); PyTorch:"
        echo "$(gain_verdict "${torch_alone[@]}" -- "${torch_distilled[@]}")."
    else
        echo
        echo "Beats the seed-to-seed spread — kiln (against $best_alone_label, the best student alone):"
        echo "$(gain_verdict "${best_alone[@]}" -- "${kd[@]}"). PyTorch not run (TORCH=0)."
    fi
} > "$work/distill.md"
results=bench/results/compress.md
if [ -f "$results" ] && grep -q '^Distillation' "$results"; then
    # The distillation sections stand between the first "Distillation (" line and PyTorch's table: this
    # run's goes first, in place of an earlier one of the same settings (its lines 2-3), the others kept.
    /usr/bin/python3 - "$results" "$work/distill.md" <<'PY'
import sys
results, section = open(sys.argv[1]).read().split("\n"), open(sys.argv[2]).read().rstrip("\n").split("\n")
start = next(i for i, line in enumerate(results) if line.startswith("Distillation ("))
end = next(i for i, line in enumerate(results) if line.startswith("PyTorch 1.13 on the same trained weights"))
starts = [i for i in range(start, end) if results[i].startswith("Distillation (")] + [end]
kept = [results[a:b] for a, b in zip(starts, starts[1:]) if results[a + 1:a + 3] != section[1:3]]
body = [line for part in [section + [""]] + kept for line in part]
open(sys.argv[1], "w").write("\n".join(results[:start] + body + results[end:]))
PY
fi
cat "$work/distill.md"
