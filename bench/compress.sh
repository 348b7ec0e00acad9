#!/usr/bin/env bash
# What each compression method buys on the Fashion-MNIST CNN (examples/specs/fmnist_cnn.txt), against
# the targets of the Compress issue, with PyTorch beside kiln on the same trained model
# (bench/torch_compress.py). Writes bench/results/compress.md and prints it.
#
# Every accuracy is on the 10,000 test images. A row that fine-tunes (QAT, pruning) is compared with the
# baseline trained for the same total number of epochs (5 + 2 = 7), as the issue asks; the others with
# the 5-epoch baseline. Latency: medians of 3 alternating rounds of `kiln bench --batch 32`.
# Usage: [SKIP_DISTILL=1] bench/compress.sh [THREADS]   (default 2; about 30 minutes on 2 cores without
# bench/distill.sh, which takes about as long again)
# Needs: scripts/install-deps.sh --bench (PyTorch), onnxruntime-node in bench/node_modules.
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-2}
kiln=build/kiln
work=build/compress-bench
mkdir -p "$work" bench/results
cmake --build build -j"$(nproc)" > /dev/null
driver=$(bash bench/build_driver.sh build)
cpu=$(lscpu | sed -n 's/^Model name: *//p' | head -1)
spec=examples/specs/fmnist_cnn.txt
data=(--data fashion-mnist --threads "$threads" --quiet)
train_opts=(--batch 64 --optimizer adam --seed 1)
# The 2 epochs of QAT and of pruning's fine-tuning (kiln prune calls the LR schedule --lr-schedule: its
# --schedule is the pruning schedule).
finetune_opts=(--lr 5e-4 --schedule cosine)
prune_finetune_opts=(--lr 5e-4 --lr-schedule cosine)

log() { echo "== $*" >&2; }
accuracy() { "$kiln" eval "$1" --data fashion-mnist:test --threads "$threads" --json | sed -n 's/.*"accuracy":\([0-9.]*\).*/\1/p'; }
bytes() { stat -c %s "$1"; }
# The median latency (ms) at batch 32 of each model, over 3 rounds that alternate between the models.
latency_b32() {
    local round model
    declare -A runs
    for round in 1 2 3; do
        for model in "$@"; do
            runs[$model]+="$("$kiln" bench "$model" --batch 32 --threads "$threads" --seconds 2 --json |
                sed -n 's/.*"median":\([0-9.]*\).*/\1/p') "
        done
    done
    for model in "$@"; do
        echo "${runs[$model]}" | tr ' ' '\n' | grep . | sort -g | sed -n 2p
    done
}

# ---- the models ----
[ -f "$work/base5.kiln" ] || { log "baseline, 5 epochs"; "$kiln" train --model "$spec" "${data[@]}" "${train_opts[@]}" --epochs 5 --out "$work/base5.kiln" > /dev/null; }
[ -f "$work/base7.kiln" ] || { log "baseline, 7 epochs"; "$kiln" train --model "$spec" "${data[@]}" "${train_opts[@]}" --epochs 7 --out "$work/base7.kiln" > /dev/null; }
base=$work/base5.kiln
calib=(--calib fashion-mnist --calib-samples 512)

quantize() { # NAME ARGS...
    local name=$1
    shift
    log "quantize $name"
    "$kiln" quantize "$base" --out "$work/$name.kiln" --threads "$threads" --json "$@" > "$work/$name.json"
}
quantize f16 --float f16
quantize bf16 --float bf16
quantize int8 --bits 8 --granularity channel "${calib[@]}"
quantize int4_ptq --bits 4 --granularity channel --weight-clip mse --weights-only
quantize int4_block --bits 4 --granularity block:32 --weight-clip mse --weights-only
# AdaRound (learned up/down rounding per layer on the 512 calibration images, 500 steps per layer).
quantize int4_adaround --bits 4 --granularity channel --weight-clip mse --weights-only --adaround "${calib[@]}"
quantize w4a8 --bits 4 --granularity channel --weight-clip mse "${calib[@]}"
quantize w4a8_adaround --bits 4 --granularity channel --weight-clip mse --adaround "${calib[@]}"
quantize codebook4 --codebook 16 --weights-only
quantize log2 --log2 --weights-only
log "quantize --max-drop 0.5"
"$kiln" quantize "$base" --out "$work/maxdrop.kiln" --max-drop 0.5 --val fashion-mnist:test "${calib[@]}" \
    --threads "$threads" --json > "$work/maxdrop.json"

qat() { # NAME ARGS...
    local name=$1
    shift
    log "QAT $name, 2 epochs"
    "$kiln" train --model "$base" "${data[@]}" "${train_opts[@]}" --epochs 2 "${finetune_opts[@]}" --qat "$@" --out "$work/$name.kiln" > /dev/null
}
qat qat_int4 --bits 4
qat qat_w4a8 --bits 4 --act-bits 8 --lsq
qat qat_int2 --bits 2
qat qat_binary --bits 1 --lsq

log "prune: global L1 90% + 2 epochs"
"$kiln" prune "$base" "${data[@]}" "${train_opts[@]}" --method l1 --amount 0.9 --scope global --finetune 2 "${prune_finetune_opts[@]}" \
    --out "$work/l1_90.kiln" --no-latency > /dev/null
"$kiln" quantize "$work/l1_90.kiln" --out "$work/l1_90_int8.kiln" --bits 8 --weights-only --threads "$threads" > /dev/null
log "prune: structured 50% of channels + 2 epochs"
"$kiln" prune "$base" "${data[@]}" "${train_opts[@]}" --method l1 --amount 0.5 --structured channel --finetune 2 "${prune_finetune_opts[@]}" \
    --out "$work/struct50.kiln" --no-latency > /dev/null

log "gradients at 8 bits and at 2 bits with error feedback, 5 epochs"
"$kiln" train --model "$spec" "${data[@]}" "${train_opts[@]}" --epochs 5 --grad-bits 8 --out "$work/grad8.kiln" > /dev/null
"$kiln" train --model "$spec" "${data[@]}" "${train_opts[@]}" --epochs 5 --grad-bits 2 --error-feedback \
    --out "$work/grad2ef.kiln" > /dev/null

# Distillation: bench/distill.sh, with its own teacher and recipe. SKIP_DISTILL=1 keeps the section its
# last run left in $work/distill.md (it names its date and command); run alone, distill.sh also puts its
# section into bench/results/compress.md.
if [ -z "${SKIP_DISTILL:-}" ]; then
    bash bench/distill.sh "$threads" > /dev/null
elif [ ! -f "$work/distill.md" ]; then
    echo "Distillation: not run (SKIP_DISTILL=1); \`bench/distill.sh\` writes this section." > "$work/distill.md"
fi

log "PyTorch on the same trained model"
"$kiln" convert "$base" "$work/base5.onnx" > /dev/null
torch_float=$(/usr/bin/python3 bench/torch_compress.py "$work/base5.onnx" float --threads "$threads")
torch_ptq=$(/usr/bin/python3 bench/torch_compress.py "$work/base5.onnx" ptq --threads "$threads")
torch_prune=$(/usr/bin/python3 bench/torch_compress.py "$work/base5.onnx" prune --amount 0.9 --epochs 2 --threads "$threads")
field() { echo "$1" | sed -n "s/.*\"$2\": \([0-9.]*\).*/\1/p"; }

log "latency at batch 32"
mapfile -t lat < <(latency_b32 "$base" "$work/struct50.kiln")

# ---- the table ----
b5=$(accuracy "$base")
b7=$(accuracy "$work/base7.kiln")
f32_bytes=$(bytes "$base")
flops() { "$kiln" info "$1" --json | sed -n 's/.*"flops":\([0-9]*\).*/\1/p'; }
rows=()
check() { # ACCURACY BASELINE MAX_DROP_PT -> "met"/"MISSED"
    awk -v a="$1" -v b="$2" -v d="$3" 'BEGIN { print (100 * (b - a) <= d + 1e-9) ? "met" : "MISSED" }'
}
row() { # METHOD MODEL BASELINE_ACC BASELINE_NAME TARGET_PT [EXTRA_TARGET_TEXT EXTRA_RESULT]
    local method=$1 model=$2 b=$3 bname=$4 target=$5 extra=${6:-}
    local a size
    a=$(accuracy "$model")
    size=$(bytes "$model")
    local verdict="-"
    [ "$target" != "-" ] && verdict="drop ≤ $target pt: $(check "$a" "$b" "$target")"
    rows+=("| $method | $a | $(awk -v a="$a" -v b="$b" 'BEGIN { printf "%+.2f", 100 * (a - b) }') vs $bname | $size | $(awk -v s="$size" -v f="$f32_bytes" 'BEGIN { printf "%.2f×", f / s }') | $verdict${extra:+; $extra} |")
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
meets() { awk -v v="$1" -v t="$2" 'BEGIN { print (v >= t) ? "met" : "MISSED" }'; }

row "f32 baseline, 5 epochs" "$base" "$b5" 5ep -
row "f32 baseline, 7 epochs" "$work/base7.kiln" "$b7" 7ep -
row "f16 weights" "$work/f16.kiln" "$b5" 5ep 0.05 "2.0× smaller: $(meets "$(ratio "$f32_bytes" "$(bytes "$work/f16.kiln")")" 1.95)"
row "bf16 weights" "$work/bf16.kiln" "$b5" 5ep 0.05 "2.0× smaller: $(meets "$(ratio "$f32_bytes" "$(bytes "$work/bf16.kiln")")" 1.95)"
row "int8 PTQ, weights per channel + activations (512 images)" "$work/int8.kiln" "$b5" 5ep 0.2 "≥ 3.9× smaller: $(meets "$(ratio "$f32_bytes" "$(bytes "$work/int8.kiln")")" 3.9)"
row "int4 weights PTQ, per channel, MSE clipping" "$work/int4_ptq.kiln" "$b5" 5ep 0.8
row "int4 weights PTQ, blocks of 32, MSE clipping" "$work/int4_block.kiln" "$b5" 5ep 0.8
row "int4 weights PTQ + AdaRound, per channel, MSE clipping (512 images)" "$work/int4_adaround.kiln" "$b5" 5ep 0.8
row "W4A8 PTQ, per channel, MSE clipping (512 images)" "$work/w4a8.kiln" "$b5" 5ep -
row "W4A8 PTQ + AdaRound, per channel, MSE clipping (512 images)" "$work/w4a8_adaround.kiln" "$b5" 5ep 0.5 "W4A8 QAT's target without training"
cb=$(accuracy "$work/codebook4.kiln")
row "4-bit k-means codebook weights" "$work/codebook4.kiln" "$b5" 5ep - "at least int4 PTQ's accuracy: $(awk -v a="$cb" -v b="$(accuracy "$work/int4_ptq.kiln")" 'BEGIN { print (a >= b) ? "met" : "MISSED" }')"
row "power-of-two (log2) weights" "$work/log2.kiln" "$b5" 5ep -
row "int4 weights QAT, 2 epochs" "$work/qat_int4.kiln" "$b7" 7ep 0.3
row "W4A8 QAT, 2 epochs" "$work/qat_w4a8.kiln" "$b7" 7ep 0.5
row "int2 (ternary) weights QAT, 2 epochs" "$work/qat_int2.kiln" "$b7" 7ep 2
row "binary weights (±α) QAT, 2 epochs" "$work/qat_binary.kiln" "$b7" 7ep 5
row "--max-drop 0.5 mixed precision" "$work/maxdrop.kiln" "$b5" 5ep 0.5 "smaller than uniform int8: $(awk -v a="$(bytes "$work/maxdrop.kiln")" -v b="$(bytes "$work/int8.kiln")" 'BEGIN { print (a < b) ? "met" : "MISSED" }')"
row "global unstructured L1 90% + 2 epochs" "$work/l1_90.kiln" "$b7" 7ep 0.5 "≥ 5× smaller: $(meets "$(ratio "$f32_bytes" "$(bytes "$work/l1_90.kiln")")" 5)"
row "… + int8 weights on top" "$work/l1_90_int8.kiln" "$b7" 7ep - "≥ 15× smaller: $(meets "$(ratio "$f32_bytes" "$(bytes "$work/l1_90_int8.kiln")")" 15)"
speedup=$(ratio "${lat[0]}" "${lat[1]}")
fewer=$(ratio "$(flops "$base")" "$(flops "$work/struct50.kiln")")
row "structured 50% of channels + 2 epochs" "$work/struct50.kiln" "$b7" 7ep 1.0 "batch-32 latency ${lat[0]} → ${lat[1]} ms, ${speedup}× faster (≥ 1.7: $(meets "$speedup" 1.7)); ${fewer}× fewer FLOPs (≥ 1.9: $(meets "$fewer" 1.9))"
row "gradients at 8 bits, 5 epochs" "$work/grad8.kiln" "$b5" 5ep 0.2
row "gradients at 2 bits + error feedback, 5 epochs" "$work/grad2ef.kiln" "$b5" 5ep 1

# QDQ ONNX of the quantized models in onnxruntime: predictions agree on ≥ 99.5% of the test images.
agreement=()
for name in int8 qat_w4a8 w4a8_adaround; do
    "$kiln" convert "$work/$name.kiln" "$work/$name.onnx" > /dev/null
    line=$(MAX_MISMATCHES=50 RTOL=1 bash bench/fmnist_agreement.sh "$driver" "$work/$name.kiln" "$work/$name.onnx" 2>&1 | tail -1)
    agreement+=("- $name: $line")
done

# bench/compress_models.sh's section (imported models, MLP, ViT) stays at the end of the file.
models_section=$(sed -n '/^## Beyond the Fashion-MNIST CNN$/,$p' bench/results/compress.md 2> /dev/null || true)
{
    echo "# Compression of the Fashion-MNIST CNN"
    echo
    echo "\`bash bench/compress.sh $threads\` on $cpu, $(date -u +%Y-%m-%d). Accuracy on the 10,000 test images;"
    echo "file bytes of the \`.kiln\` file (f32 baseline: $f32_bytes). Fine-tuned rows are compared with the"
    echo "baseline trained as many epochs in all (7)."
    echo
    echo "| method | accuracy | change | file bytes | smaller | target |"
    echo "|---|---|---|---|---|---|"
    printf '%s\n' "${rows[@]}"
    echo
    cat "$work/distill.md"
    echo
    echo "PyTorch 1.13 on the same trained weights (\`bench/torch_compress.py\`; file = \`torch.save\` of the state_dict):"
    echo
    echo "| PyTorch | accuracy | file bytes |"
    echo "|---|---|---|"
    echo "| float (the model as kiln trained it) | $(field "$torch_float" accuracy) | $(field "$torch_float" file_bytes) |"
    echo "| static PTQ int8, onednn engine (Debian's build has no fbgemm), 512 images | $(field "$torch_ptq" accuracy) | $(field "$torch_ptq" file_bytes) |"
    echo "| global_unstructured L1 90% + 2 epochs | $(field "$torch_prune" accuracy) | $(field "$torch_prune" file_bytes) |"
    echo
    echo "QDQ ONNX export in onnxruntime (target: predictions agree on ≥ 99.5% of the images, ≤ 50 differ):"
    printf '%s\n' "${agreement[@]}"
    [ -z "$models_section" ] || printf '\n%s\n' "$models_section"
} > bench/results/compress.md
cat bench/results/compress.md
