#!/usr/bin/env bash
# Builds bench/kiln_driver.c against the libraries of a configured and built kiln build tree, with that
# tree's sanitizer flags, into BUILD_DIR/bench/kiln_driver; prints its path. The driver is not a target
# of the main CMake project, so that the bench tools stay out of every normal build.
# Usage: bench/build_driver.sh BUILD_DIR
set -euo pipefail
build=$(cd "$1" && pwd)
src=$(cd "$(dirname "$0")/.." && pwd)
for lib in libkiln_train.a libkiln.a libkiln_onnx.a; do
    if [ ! -f "$build/$lib" ]; then
        echo "build_driver: $build/$lib is missing: build kiln with ONNX support first" >&2
        exit 1
    fi
done
flags=(-std=gnu11 -O2 -g -Wall -Wextra -Werror -pthread)
if grep -q '^KILN_SANITIZE:BOOL=ON' "$build/CMakeCache.txt"; then
    flags+=(-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer)
fi
mkdir -p "$build/bench"
out=$build/bench/kiln_driver
if [ ! -x "$out" ] || [ -n "$(find "$src/bench/kiln_driver.c" "$build/libkiln_train.a" "$build/libkiln_onnx.a" "$build/libkiln.a" -newer "$out")" ]; then
    cc "${flags[@]}" -I"$src/include" -I"$src/src" "$src/bench/kiln_driver.c" -o "$out" \
        "$build/libkiln_train.a" "$build/libkiln_onnx.a" "$build/libkiln.a" $(pkg-config --libs libprotobuf-c) -lz -lm
fi
echo "$out"
