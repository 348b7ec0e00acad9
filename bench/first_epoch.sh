#!/usr/bin/env bash
# First-epoch test accuracy of the Fashion-MNIST MLP, kiln against PyTorch (docs/training.md, "First
# epoch against PyTorch"): Adam at its default rate, batch 64, one epoch, per seed, four ways:
#   kiln            kiln's initialisation and data order (kiln train --seed S)
#   pytorch         PyTorch's initialisation (torch.manual_seed(S)) and torch.randperm order
#   kiln/torch-init kiln from PyTorch's initial weights of seed S (exported to ONNX), kiln's order
#   pytorch/kiln-order  PyTorch's initialisation with kiln's order for seed S
# The last two start from the same weights and visit the samples in the same order: they differ only in
# the engines' arithmetic. Prints one table row per seed. Takes about 20 s per seed on 2 cores.
# Usage: bench/first_epoch.sh KILN [SEEDS...]   (default seeds 1 to 10)
set -euo pipefail
kiln=$1
shift
seeds=("${@:-1 2 3 4 5 6 7 8 9 10}")
bench=$(cd "$(dirname "$0")" && pwd)
spec=$bench/../examples/specs/fmnist_mlp.txt
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export OMP_WAIT_POLICY=passive
accuracy() { "$kiln" eval "$1" --data fashion-mnist:test --json 2> /dev/null | sed 's/.*"accuracy":\([0-9.]*\).*/\1/'; }
torch_accuracy() { /usr/bin/python3 "$bench/torch_first_epoch.py" "$@" | sed 's/.*accuracy //'; }
echo "| seed | kiln | pytorch | kiln/torch-init | pytorch/kiln-order |"
echo "|---|---|---|---|---|"
for s in ${seeds[*]}; do
    "$kiln" train --model "$spec" --data fashion-mnist --epochs 1 --batch 64 --seed "$s" --threads 2 --quiet \
        --out "$work/k$s.kiln" > /dev/null 2>&1
    /usr/bin/python3 "$bench/torch_first_epoch.py" "$s" --export-init "$work"
    "$kiln" train --model "$work/torch_init$s.onnx" --data fashion-mnist --epochs 1 --batch 64 --seed "$s" \
        --threads 2 --quiet --out "$work/t$s.kiln" > /dev/null 2>&1
    printf '| %s | %.4f | %s | %.4f | %s |\n' "$s" "$(accuracy "$work/k$s.kiln")" "$(torch_accuracy "$s")" \
        "$(accuracy "$work/t$s.kiln")" "$(torch_accuracy "$s" --kiln-order)"
done
