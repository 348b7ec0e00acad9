#!/usr/bin/env bash
# Compression beyond the Fashion-MNIST CNN, written as the section "## Beyond the Fashion-MNIST CNN" of
# bench/results/compress.md (replacing that section, keeping what comes before it) and printed.
#
# 1. Imported PyTorch models: torchvision resnet18 and mobilenet_v2 exported to ONNX with random weights
#    (tests/ref/make_torchvision_onnx.py; bench/models/). `kiln quantize` at 16 (f16, bf16), 8, 4 and 2
#    weight bits per channel, and 8-bit weights + calibrated 8-bit activations (W8A8), calibrated
#    on 32 synthetic images (uniform in [-1, 1], the distribution the BatchNorm statistics were measured
#    on). SQNR (dB) of the model outputs against the f32 model on 16 other such images, and how often
#    the top-1 class agrees. A NumPy reference fake-quantizes every weight to symmetric per-channel int8
#    in the ONNX file itself; its SQNR must equal kiln's W8 row. `kiln prune` on resnet18: global L1
#    unstructured, and structured channels at 0 (must be bit for bit the original), 30% and 50%; on
#    mobilenet_v2 structured channels at 0 and 30% (through its depthwise convs).
# 2. The MLP and ViT specs (examples/specs/fmnist_{mlp,vit}.txt) trained 1 epoch on Fashion-MNIST: int8 PTQ
#    (weights per channel + activations, 512 calibration images), int4 weights per channel, global L1 90%
#    and structured neurons 50%, one-shot and with 1 epoch of fine-tuning; accuracy on
#    the 10,000 test images and file bytes.
#
# Usage: bench/compress_models.sh [THREADS [SPEC...]]   (THREADS default 2; SPECs of part 2: mlp and/or
# vit, default both; about 20 minutes on 2 idle cores, hours when the machine is busy)
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-2}
specs=("${@:2}")
[ ${#specs[@]} -gt 0 ] || specs=(mlp vit)
kiln=build/kiln
work=build/compress-models
mkdir -p "$work" bench/models bench/results
cmake --build build -j2 > /dev/null
cpu=$(lscpu | sed -n 's/^Model name: *//p' | head -1)
log() { echo "== $*" >&2; }
bytes() { stat -c %s "$1"; }

for m in resnet18 mobilenet_v2; do
    [ -f "bench/models/$m.onnx" ] || /usr/bin/python3 tests/ref/make_torchvision_onnx.py bench/models "$m" >&2
done
# Synthetic images: 32 to calibrate on, 16 to measure on (labels are placeholders: no accuracy here).
/usr/bin/python3 - "$work" <<'PY'
import sys
import numpy as np
work = sys.argv[1]
rng = np.random.default_rng(11)
for name, n in (("calib", 32), ("eval", 16)):
    np.save("%s/%s_x.npy" % (work, name), rng.random((n, 3, 224, 224), dtype=np.float32) * 2 - 1)
    np.save("%s/%s_y.npy" % (work, name), np.zeros(n, np.int64))
PY
calib="$work/calib_x.npy,$work/calib_y.npy"

# SQNR (dB) of OUT against REF, and the share of samples whose top-1 class agrees: "sqnr agree".
sqnr() {
    /usr/bin/python3 - "$1" "$2" <<'PY'
import sys
import numpy as np
r, q = (np.load(p).astype(np.float64) for p in sys.argv[1:3])
e = ((r - q) ** 2).sum()
print("%s %.2f" % ("%.2f" % (10 * np.log10((r ** 2).sum() / e)) if e > 0 else "inf", (r.argmax(1) == q.argmax(1)).mean()))
PY
}
# The outputs of model M on the 16 measuring images, as DIR/output.npy.
outputs() { "$kiln" run "$1" "$work/eval_x.npy" --batch-dim --threads "$threads" --top 1 --out "$2" > /dev/null; }
# Models and outputs already in $work are kept (a rerun after an interruption redoes only what is
# missing): delete $work to measure everything again.

# ---- 1. imported models ----
qrows=()
for m in resnet18 mobilenet_v2; do
    model=bench/models/$m.onnx
    [ -f "$work/$m.f32/output.npy" ] || outputs "$model" "$work/$m.f32"
    f32_bytes=$(bytes "$model")
    for cfg in "f16|--float f16" "bf16|--float bf16" "int8 weights|--bits 8 --weights-only" \
               "int4 weights (MSE clipping)|--bits 4 --weights-only" "int2 weights (MSE clipping)|--bits 2 --weights-only" \
               "W8A8 (minmax)|--bits 8 --calib $calib --calib-samples 32"; do
        name=${cfg%%|*}
        read -ra opts <<< "${cfg#*|}"
        out=$work/$m.$(echo "$name" | tr -c 'a-z0-9\n' _)
        if [ ! -f "$out.kiln" ]; then
            log "$m: quantize $name"
            "$kiln" quantize "$model" --out "$out.kiln" "${opts[@]}" --threads "$threads" > /dev/null
        fi
        [ -f "$out/output.npy" ] || outputs "$out.kiln" "$out"
        read -r db agree <<< "$(sqnr "$work/$m.f32/output.npy" "$out/output.npy")"
        ort="-"
        if [[ $name == W* ]] && [ -d bench/node_modules/onnxruntime-node ]; then
            # The QDQ export in onnxruntime, against the same f32 outputs.
            if [ ! -f "$out.ort/output.npy" ]; then
                "$kiln" convert "$out.kiln" "$out.onnx" > /dev/null
                node bench/ort_run.js "$out.onnx" "$out.ort" "$work/eval_x.npy" > /dev/null
            fi
            read -r ort _ <<< "$(sqnr "$work/$m.f32/output.npy" "$out.ort/output.npy")"
        fi
        qrows+=("| $m | $name | $db | $agree | $ort | $(bytes "$out.kiln") |")
    done
    # The oracle for the int8 row: NumPy's symmetric per-channel int8 of every Conv/Gemm weight.
    if [ ! -f "$work/$m.numpy_int8/output.npy" ]; then
        /usr/bin/python3 - "$model" "$work/$m.numpy_int8.onnx" <<'PY'
import sys
import numpy as np
import onnx
from onnx import numpy_helper
m = onnx.load(sys.argv[1])
weights = {n.input[1] for n in m.graph.node if n.op_type in ("Conv", "Gemm")}
for init in m.graph.initializer:
    if init.name in weights:
        w = numpy_helper.to_array(init).astype(np.float32)
        rows = w.reshape(w.shape[0], -1)
        scale = np.abs(rows).max(1, keepdims=True) / 127
        scale[scale == 0] = 1
        q = (np.clip(np.round(rows / scale), -127, 127) * scale).astype(np.float32).reshape(w.shape)
        init.CopyFrom(numpy_helper.from_array(q, init.name))
onnx.save(m, sys.argv[2])
PY
        outputs "$work/$m.numpy_int8.onnx" "$work/$m.numpy_int8"
    fi
    read -r db agree <<< "$(sqnr "$work/$m.f32/output.npy" "$work/$m.numpy_int8/output.npy")"
    qrows+=("| $m | NumPy reference: int8 weights, symmetric per channel | $db | $agree | - | - |")
    qrows+=("| $m | f32 (the ONNX file) | inf | 1.00 | - | $f32_bytes |")
done

prows=()
flops() { "$kiln" info "$1" --json | sed -n 's/.*"flops":\([0-9]*\).*/\1/p'; }
params() { "$kiln" info "$1" --json | sed -n 's/.*"params":\([0-9]*\).*/\1/p'; }
for m in resnet18 mobilenet_v2; do
    model=bench/models/$m.onnx
    prows+=("| $m | f32 (the ONNX file) | $(params "$model") | $(flops "$model") | $(bytes "$model") (ONNX) | inf | yes |")
    cfgs=("structured channels 0%|--structured channel --amount 0" "structured channels 30%|--structured channel --amount 0.3")
    [ "$m" = resnet18 ] && cfgs=("global L1 unstructured 50%|--amount 0.5 --scope global"
        "global L1 unstructured 90%|--amount 0.9 --scope global" "${cfgs[@]}"
        "structured channels 50%|--structured channel --amount 0.5")
    for cfg in "${cfgs[@]}"; do
        name=${cfg%%|*}
        read -ra opts <<< "${cfg#*|}"
        out=$work/$m.$(echo "$name" | tr -c 'a-z0-9\n' _)
        if [ ! -f "$out.kiln" ]; then
            log "$m: prune $name"
            "$kiln" prune "$model" --data "$calib" "${opts[@]}" --no-latency --threads "$threads" --quiet --out "$out.kiln" > /dev/null
        fi
        [ -f "$out/output.npy" ] || outputs "$out.kiln" "$out"
        read -r db agree <<< "$(sqnr "$work/$m.f32/output.npy" "$out/output.npy")"
        same=no
        cmp -s "$work/$m.f32/output.npy" "$out/output.npy" && same=yes
        prows+=("| $m | $name | $(params "$out.kiln") | $(flops "$out.kiln") | $(bytes "$out.kiln") | $db | $same |")
    done
done
model=bench/models/resnet18.onnx
# Which convs ended with the same kept channels (found by their biases, which keep their values): the
# classes the residual Adds impose, as the structured 30% model has them.
"$kiln" convert "$work/resnet18.structured_channels_30_.kiln" "$work/resnet18.structured_30.onnx" > /dev/null
masks=$(/usr/bin/python3 - "$model" "$work/resnet18.structured_30.onnx" <<'PY'
import sys
import numpy as np
import onnx
from onnx import numpy_helper
def convs(path):
    m = onnx.load(path)
    init = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    return {n.name: init[n.input[2]] for n in m.graph.node if n.op_type == "Conv"}
before, after = convs(sys.argv[1]), convs(sys.argv[2])
classes = {}
for name, bias in after.items():
    kept = tuple(int(np.flatnonzero(before[name] == b)[0]) for b in bias)
    parts = [p for p in name.split("/") if p and p != "Conv"]  # /layer2/layer2.0/downsample/downsample.0/Conv
    classes.setdefault(kept, []).append(parts[1] + "." + parts[2] if len(parts) >= 3 else parts[0])
for kept, names in classes.items():
    if len(names) > 1:
        print("- %d channels kept, one mask: %s" % (len(kept), ", ".join(names)))
print("- every other conv (the first of each block) has a mask of its own: %d of them"
      % sum(len(n) == 1 for n in classes.values()))
PY
)

# ---- 2. the MLP and ViT specs ----
# The accuracy of model M on the 10,000 test images (kept in M.accuracy).
accuracy() {
    [ -f "$1.accuracy" ] || "$kiln" eval "$1" --data fashion-mnist:test --threads "$threads" --json |
        sed -n 's/.*"accuracy":\([0-9.]*\).*/\1/p' > "$1.accuracy"
    cat "$1.accuracy"
}
# compress NAME OUT COMMAND...: runs COMMAND (which writes OUT) unless OUT exists, and adds the row.
compress() {
    local name=$1 out=$2
    shift 2
    if [ ! -f "$out" ]; then
        log "$m: $name"
        "$@" > /dev/null
    fi
    srows+=("| $m | $name | $(accuracy "$out") | $(bytes "$out") |")
}
srows=()
for m in "${specs[@]}"; do
    base=$work/$m.kiln
    if [ ! -f "$base" ]; then
        log "$m: train 1 epoch"
        "$kiln" train --model "examples/specs/fmnist_$m.txt" --data fashion-mnist --epochs 1 --batch 64 --seed 1 \
            --threads "$threads" --quiet --out "$base" > /dev/null
    fi
    srows+=("| $m | f32, 1 epoch | $(accuracy "$base") | $(bytes "$base") |")
    common=(--threads "$threads")
    prune=("$kiln" prune "$base" --data fashion-mnist --no-latency --quiet "${common[@]}")
    finetune=(--finetune 1 --batch 64 --lr 5e-4 --seed 1)
    compress "int8 PTQ: weights per channel + activations (512 images)" "$work/$m.int8.kiln" \
        "$kiln" quantize "$base" --out "$work/$m.int8.kiln" --bits 8 --calib fashion-mnist --calib-samples 512 "${common[@]}"
    compress "int4 weights per channel, MSE clipping" "$work/$m.int4.kiln" \
        "$kiln" quantize "$base" --out "$work/$m.int4.kiln" --bits 4 --weights-only "${common[@]}"
    compress "global L1 unstructured 90%, no fine-tuning" "$work/$m.l1_90.kiln" \
        "${prune[@]}" --amount 0.9 --scope global --out "$work/$m.l1_90.kiln"
    compress "global L1 unstructured 90% + 1 epoch fine-tune" "$work/$m.l1_90_ft.kiln" \
        "${prune[@]}" --amount 0.9 --scope global "${finetune[@]}" --out "$work/$m.l1_90_ft.kiln"
    compress "structured neurons 50%, no fine-tuning" "$work/$m.neuron50.kiln" \
        "${prune[@]}" --structured neuron --amount 0.5 --out "$work/$m.neuron50.kiln"
    srows[-1]=${srows[-1]/no fine-tuning/no fine-tuning ($(params "$work/$m.neuron50.kiln") of $(params "$base") parameters)}
    compress "structured neurons 50% + 1 epoch fine-tune" "$work/$m.neuron50_ft.kiln" \
        "${prune[@]}" --structured neuron --amount 0.5 "${finetune[@]}" --out "$work/$m.neuron50_ft.kiln"
done

# ---- the section ----
results=bench/results/compress.md
marker="## Beyond the Fashion-MNIST CNN"
head=$( [ -f "$results" ] && sed "/^$marker\$/,\$d" "$results" || true)
{
    [ -n "$head" ] && printf '%s\n\n' "$head"
    echo "$marker"
    echo
    echo "\`bash bench/compress_models.sh $threads ${specs[*]}\` on $cpu (CPU only, 2 threads, on a machine"
    echo "shared with several other jobs), $(date -u +%Y-%m-%d)."
    echo
    echo "### Imported PyTorch models: SQNR of the outputs per bit width"
    echo
    echo "torchvision resnet18 and mobilenet_v2 with random weights (\`tests/ref/make_torchvision_onnx.py\`), ONNX"
    echo "opset 13. SQNR of the (16, 1000) outputs on 16 synthetic images against the f32 model; top-1 agreement"
    echo "on the same images (random weights: no accuracy to measure). Calibration: 32 other synthetic images."
    echo "onnxruntime SQNR: the W8A8 model exported as QDQ ONNX (\`kiln convert\`) run by onnxruntime-node"
    echo "(bench/node_modules), against the same f32 outputs: the QDQ graph defines the numbers, so both engines"
    echo "should land close (an activation level that rounds the other way in one engine moves the outputs a little)."
    echo "File: the \`.kiln\` written. Random networks amplify weight noise more than trained ones (mobilenet_v2's"
    echo "f16 row), so these SQNRs are lower bounds for the method rather than for a trained model."
    echo
    echo "| model | weights (and activations) | SQNR dB | top-1 agrees | onnxruntime SQNR dB | file bytes |"
    echo "|---|---|---|---|---|---|"
    printf '%s\n' "${qrows[@]}"
    echo
    echo "### Pruning resnet18 and mobilenet_v2"
    echo
    echo "\`kiln prune\` with L1 scores, no fine-tuning; structured pruning keeps each residual Add's two sides on one"
    echo "channel mask (the block's input, its last conv and the downsample conv), and in mobilenet_v2 the"
    echo "expansion convs' channels pass through the depthwise convs. SQNR of the outputs against the original on"
    echo "the same 16 images; \"same\" = bit for bit the original's outputs."
    echo
    echo "| model | pruning | parameters | FLOPs/sample | file bytes | SQNR dB | same |"
    echo "|---|---|---|---|---|---|---|"
    printf '%s\n' "${prows[@]}"
    echo
    echo "The channels the structured 30% model kept, compared conv by conv with the original (the residual Adds'"
    echo "classes):"
    echo
    echo "$masks"
    echo
    echo "### The MLP and ViT specs"
    echo
    echo "\`examples/specs/fmnist_mlp.txt\` and \`fmnist_vit.txt\` trained for 1 epoch only (batch 64, Adam, seed"
    echo "1), so the baselines are below what longer training reaches; accuracy on the 10,000 test images."
    echo "Rows without \"fine-tune\" are one-shot; fine-tuning: 1 epoch, Adam at lr 5e-4, masks kept, so those models had 2 epochs of"
    echo "training in all against the baseline's 1 (part of their gain is that extra epoch). The ViT's"
    echo "structured neurons are the hidden units of its two MLP blocks (fc1's outputs); the residual stream"
    echo "and the attention projections are kept (docs/compress.md)."
    echo
    echo "| model | compression | accuracy | file bytes |"
    echo "|---|---|---|---|"
    printf '%s\n' "${srows[@]}"
    [[ " ${specs[*]} " == *" vit "* ]] || { echo; echo "The ViT was left out of this run (its training epoch did not finish in time on the busy machine)."; }
} > "$results.tmp"
mv "$results.tmp" "$results"
sed -n "/^$marker\$/,\$p" "$results"
