#!/usr/bin/env bash
# Builds kiln and runs every test: a Release build, then the same suite under AddressSanitizer and
# UndefinedBehaviorSanitizer, then every libFuzzer target for 30 s (scripts/fuzz.sh). Installs what it
# needs first.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
jobs=$(nproc)
# ctest runs tests side by side; the OpenMP threads of the PyTorch that some tests call spin while their
# partner is descheduled, which makes that many times slower, so they sleep instead.
export OMP_WAIT_POLICY=passive

echo "== Release build and tests"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$jobs"
(cd build && ctest --output-on-failure -j"$jobs")

echo "== AddressSanitizer + UndefinedBehaviorSanitizer build and tests"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DKILN_SANITIZE=ON >/dev/null
cmake --build build-asan -j"$jobs"
(cd build-asan && ASAN_OPTIONS=detect_leaks=1 ctest --output-on-failure -j"$jobs" -LE slow)

echo "== ThreadSanitizer build: the thread pool and the parallel loops' bodies at 2 threads"
cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKILN_SANITIZE_THREAD=ON >/dev/null
cmake --build build-tsan -j"$jobs" --target test_threads kiln_cli
bash tests/tsan_loops.sh build-tsan

echo "== libFuzzer targets, 30 s each (clang, ASan + UBSan)"
bash scripts/fuzz.sh 30
