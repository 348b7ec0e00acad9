#!/usr/bin/env bash
# Installs the Debian packages kiln needs to build and test (run as root on Debian 12).
# Usage: scripts/install-deps.sh [--bench]   (--bench adds PyTorch, torchvision and OpenBLAS for the
#        comparisons: Debian's PyTorch calls whatever libblas.so.3 is installed, and the netlib reference
#        BLAS it otherwise gets would make PyTorch several times slower than its users see it)
set -euo pipefail
packages=(build-essential cmake pkg-config zlib1g-dev dataset-fashion-mnist libstb-dev
          libprotobuf-c-dev protobuf-c-compiler libonnx-dev libonnx-testdata)
if [[ "${1:-}" == "--bench" ]]; then
    packages+=(python3-torch python3-torchvision python3-numpy libopenblas0-openmp)
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
