#!/usr/bin/env bash
# The thread pool and the bodies of kiln's parallel loops under ThreadSanitizer (scripts/test.sh builds
# BUILD with -DKILN_SANITIZE_THREAD=ON): test_threads, then the kiln command at 2 threads on what runs
# most loops — the MLP, CNN and ViT trained on 512 Fashion-MNIST images (Adam, and SGD with mixup on the
# CNN), the CNN quantized to int8 (calibration, QDQ) and run, pruned by channel with a fine-tuning epoch,
# and its int4 weights run. Any report of a data race fails.
# Usage: tests/tsan_loops.sh BUILD
set -euo pipefail
build=$(cd "$1" && pwd)
src=$(cd "$(dirname "$0")/.." && pwd)
kiln=$build/kiln
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export TSAN_OPTIONS="halt_on_error=1 exitcode=66"

"$build/tests/test_threads"

data=${KILN_FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}
/usr/bin/python3 - "$data" "$work" <<'PY'
import gzip, sys
import numpy as np
data, work = sys.argv[1], sys.argv[2]
with gzip.open(f"{data}/train-images-idx3-ubyte.gz") as f:
    x = np.frombuffer(f.read(), np.uint8, offset=16)[:512 * 784].reshape(512, 1, 28, 28)
with gzip.open(f"{data}/train-labels-idx1-ubyte.gz") as f:
    y = np.frombuffer(f.read(), np.uint8, offset=8)[:512].astype(np.int64)
np.save(f"{work}/x.npy", x); np.save(f"{work}/y.npy", y)
np.save(f"{work}/in.npy", (x[:5].astype(np.float32) / 255))
PY
d=$work/x.npy,$work/y.npy
step() { echo "tsan: $*"; "$@" > "$work/out.txt" 2>&1 || { cat "$work/out.txt"; exit 1; }; }
for m in mlp cnn vit; do
    step "$kiln" train --model "$src/examples/specs/fmnist_$m.txt" --data "$d" --epochs 1 --threads 2 --quiet --out "$work/$m.kiln"
done
step "$kiln" train --model "$src/examples/specs/fmnist_cnn.txt" --data "$d" --epochs 1 --threads 2 --quiet \
    --optimizer sgd --augment shift:1,mixup:0.2 --out "$work/cnn_sgd.kiln"
step "$kiln" quantize "$work/cnn.kiln" --calib "$d" --calib-samples 128 --threads 2 --out "$work/cnn_int8.kiln"
step "$kiln" run "$work/cnn_int8.kiln" "$work/in.npy" --batch-dim --threads 2 --out "$work/int8_out"
step "$kiln" quantize "$work/cnn.kiln" --bits 4 --weights-only --threads 2 --out "$work/cnn_int4.kiln"
step "$kiln" run "$work/cnn_int4.kiln" "$work/in.npy" --batch-dim --threads 2 --out "$work/int4_out"
step "$kiln" prune "$work/cnn.kiln" --data "$d" --structured channel --amount 0.3 --finetune 1 --threads 2 \
    --out "$work/cnn_pruned.kiln"
echo "tsan: no data race"
