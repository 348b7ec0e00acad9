#!/usr/bin/env bash
# Builds the libFuzzer targets of tests/fuzz with clang (ASan + UBSan) and runs each on its seed corpus.
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default 30 s, every target)
# A crash, a leak, an input that takes more than 2 s (a hang) or more than 1 GiB of memory fails the run;
# the input that did it is kept in build-fuzz/findings/ (reproduce: build-fuzz/tests/fuzz/fuzz_X FILE).
# The committed seeds stay as they are: new corpus entries go to build-fuzz/corpus/. Inputs that once
# found a bug are kept in tests/fuzz/regressions/<target>/ and replayed first. Runs are seeded
# (FUZZ_SEED, default 1) so that CI repeats the same exploration; another seed explores further.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-30}
shift || true
CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=Debug -DKILN_FUZZ=ON > /dev/null
targets=("$@")
if ((${#targets[@]} == 0)); then
    for f in tests/fuzz/corpus/*/; do targets+=("$(basename "$f")"); done
fi
cmake --build build-fuzz -j"$(nproc)" --target "${targets[@]/#/fuzz_}" > /dev/null
mkdir -p build-fuzz/findings
failed=()
for t in "${targets[@]}"; do
    corpus=build-fuzz/corpus/$t
    mkdir -p "$corpus"
    cp -n tests/fuzz/corpus/"$t"/* "$corpus"/ 2> /dev/null || true
    dict=()
    [[ -f tests/fuzz/$t.dict ]] && dict=(-dict=tests/fuzz/$t.dict)
    log=build-fuzz/findings/$t.log
    echo "== fuzz_$t: ${seconds}s"
    regressions=(tests/fuzz/regressions/"$t"/*)
    if [[ -e "${regressions[0]}" ]] && ! ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 \
        build-fuzz/tests/fuzz/fuzz_"$t" -timeout=2 -rss_limit_mb=1024 "${regressions[@]}" > "$log" 2>&1; then
        failed+=("$t")
        grep -E "ERROR|SUMMARY|Running" "$log" | tail -3
        continue
    fi
    if ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 \
        build-fuzz/tests/fuzz/fuzz_"$t" "$corpus" "${dict[@]}" -max_total_time="$seconds" -seed="${FUZZ_SEED:-1}" -timeout=2 \
        -rss_limit_mb=1024 -max_len=65536 -print_final_stats=1 -artifact_prefix=build-fuzz/findings/"$t"- \
        > "$log" 2>&1; then
        grep -E "stat::number_of_executed_units|stat::peak_rss_mb" "$log" | tr '\n' ' '
        echo
    else
        failed+=("$t")
        grep -E "ERROR|SUMMARY|Test unit written" "$log" | head -5
    fi
done
if ((${#failed[@]})); then
    echo "fuzzing found problems in: ${failed[*]} (logs and inputs in build-fuzz/findings/)"
fi
echo "fuzzing: $((${#targets[@]} - ${#failed[@]})) passed, ${#failed[@]} failed"
((${#failed[@]} == 0))
