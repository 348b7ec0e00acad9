#!/usr/bin/env bash
# Installs what kiln needs to build and to run its tests (run as root on Debian 12): the Debian packages
# below with apt-get, and onnxruntime-node (the correctness peer) from the npm registry into bench/.
# Usage: scripts/install-deps.sh [--bench]   (--bench adds PyTorch, torchvision and OpenBLAS for the
#        comparisons: Debian's PyTorch calls whatever libblas.so.3 is installed, and the netlib reference
#        BLAS it otherwise gets would make PyTorch several times slower than its users see it)
# Every package a test uses must be named here: tests/deps_declared.sh fails when one is not.
set -euo pipefail
cd "$(dirname "$0")/.."
build_packages=(build-essential cmake pkg-config zlib1g-dev libstb-dev
                libprotobuf-c-dev protobuf-c-compiler libonnx-dev)
test_packages=(dataset-fashion-mnist libonnx-testdata python3 python3-numpy python3-onnx nodejs chromium
               clang libclang-rt-14-dev)
bench_packages=(python3-torch python3-torchvision libopenblas0-openmp stress-ng)
packages=("${build_packages[@]}" "${test_packages[@]}")
if [[ "${1:-}" == "--bench" ]]; then
    packages+=("${bench_packages[@]}")
fi
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
# onnxruntime-node ships the onnxruntime CPU library inside the package: no install script needs to run.
if [[ ! -f bench/node_modules/onnxruntime-node/package.json ]]; then
    echo "installing: onnxruntime-node (npm, bench/package-lock.json)"
    (cd bench && npm ci --ignore-scripts --no-audit --no-fund)
fi
