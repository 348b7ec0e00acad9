#!/usr/bin/env bash
# 4-bit and 2-bit weights used in place (docs/runtime.md, "Low-bit weights") against f32, in kiln, 1 thread:
#   mlp          the Fashion-MNIST MLP: out/fmnist_mlp.kiln, else bench/models/fmnist_mlp.kiln, else one epoch
#                of `kiln train` (as bench/fmnist_models.sh)
#   cnn          the Fashion-MNIST CNN: out/fmnist_cnn.kiln, else bench/models/fmnist_cnn.kiln, else one epoch;
#                its int4 QAT model (out/cnn_qat_int4.kiln of scripts/pipeline.sh, else
#                bench/models/cnn_qat_int4.kiln) as the variant i4_qat, when there is one
#   transformer  the 4-layer transformer encoder of tests/ref/make_torchvision_onnx.py (batch 1 is 128 tokens)
#   big_mlp      a 1024-4096-4096-1024 MLP from a spec, untrained: weights that do not fit in a cache
# each as f32 and as `kiln quantize --weights-only` with --bits 4 (per channel), --bits 4 --granularity
# block:32 and --bits 2. A round's figure is CPU time per run: the task-clock of `kiln bench --warmup 1
# --iters RUNS+1` less that of `--iters 1`, over RUNS (perf stat), so that waiting for the shared cores
# does not count. ROUNDS (default 3) alternating rounds; the table gives the median and the range, with
# the session's weight bytes (kiln_session_memory) and the peak RSS of a bench process.
# Appends the table, with the date and the CPU, to bench/results/lowbit.md.
# KILN=path/to/kiln measures another build (say, an older commit's, for a before/after) on the same
# files, without building this one.
# Usage: [ROUNDS=N] [BATCH=B] [KILN=BIN] bench/lowbit_speed.sh [MODEL...]   (mlp cnn transformer big_mlp;
#        default all)
set -euo pipefail
cd "$(dirname "$0")/.."
models=("$@")
[ ${#models[@]} -gt 0 ] || models=(mlp cnn transformer big_mlp)
rounds=${ROUNDS:-3}
batch=${BATCH:-1}
command -v perf >/dev/null || { echo "lowbit_speed.sh: needs perf (linux-perf)" >&2; exit 1; }

kiln=${KILN:-build/kiln}
if [ -z "${KILN:-}" ]; then
    cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
    cmake --build build -j2 >/dev/null
fi
dir=bench/models
mkdir -p "$dir" bench/results

# bench/models/<m>_f32.kiln
prepare() {
    case $1 in
    mlp) # as bench/fmnist_models.sh finds or makes it, without the CNN
        if [ -f out/fmnist_mlp.kiln ]; then
            cp out/fmnist_mlp.kiln "$dir/fmnist_mlp.kiln"
        elif [ ! -f "$dir/fmnist_mlp.kiln" ]; then
            "$kiln" train --model examples/specs/fmnist_mlp.txt --data fashion-mnist --epochs 1 --batch 64 \
                --optimizer adam --seed 1 --threads 2 --quiet --out "$dir/fmnist_mlp.kiln" >&2
        fi
        cp "$dir/fmnist_mlp.kiln" "$dir/mlp_f32.kiln" ;;
    cnn)
        if [ -f out/fmnist_cnn.kiln ]; then
            cp out/fmnist_cnn.kiln "$dir/fmnist_cnn.kiln"
        elif [ ! -f "$dir/fmnist_cnn.kiln" ]; then
            "$kiln" train --model examples/specs/fmnist_cnn.txt --data fashion-mnist --epochs 1 --batch 64 \
                --optimizer adam --seed 1 --threads 2 --quiet --out "$dir/fmnist_cnn.kiln" >&2
        fi
        cp "$dir/fmnist_cnn.kiln" "$dir/cnn_f32.kiln"
        [ ! -f out/cnn_qat_int4.kiln ] || cp out/cnn_qat_int4.kiln "$dir/cnn_qat_int4.kiln" ;;
    transformer)
        [ -f "$dir/transformer.onnx" ] || /usr/bin/python3 tests/ref/make_torchvision_onnx.py "$dir" transformer >/dev/null
        "$kiln" convert "$dir/transformer.onnx" "$dir/transformer_f32.kiln" >/dev/null ;;
    big_mlp)
        printf 'input 1024\ndense 4096\nrelu\ndense 4096\nrelu\ndense 1024\n' > "$dir/big_mlp.txt"
        "$kiln" convert "$dir/big_mlp.txt" "$dir/big_mlp_f32.kiln" >/dev/null ;;
    *) echo "lowbit_speed.sh: unknown model $1" >&2; exit 1 ;;
    esac
}

variants=(f32 i4 i4_block32 i2)
quantize() { # model variant
    local args=(--bits 4)
    case $2 in i4_block32) args=(--bits 4 --granularity block:32) ;; i2) args=(--bits 2) ;; esac
    "$kiln" quantize "$dir/$1_f32.kiln" "${args[@]}" --weights-only --out "$dir/$1_$2.kiln" >/dev/null
}

task_clock() { # model iters
    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=passive perf stat -x, -e task-clock "$kiln" bench "$1" --threads 1 \
        --batch "$batch" --warmup 1 --iters "$2" 2>&1 >/dev/null | awk -F, '/task-clock/ { print $1 }'
}
cpu_ms() { # model runs
    local a b
    a=$(task_clock "$1" $(($2 + 1)))
    b=$(task_clock "$1" 1)
    awk -v a="$a" -v b="$b" -v n="$2" 'BEGIN { printf "%.5f\n", (a - b) / n }'
}
summary() { sort -g | awk '{ v[NR] = $1 } END { m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
                                              printf "%.4g [%.4g - %.4g]", m, v[1], v[NR] }'; }
field() { sed -n "s/.*\"$1\":\([0-9.e+-]*\).*/\1/p"; }

{
    echo
    echo "## $(date -u +%Y-%m-%d), $(lscpu | sed -n 's/^Model name: *//p'), batch $batch, 1 thread, CPU ms per run, $kiln"
    echo
    echo "| model | variant | CPU ms (median [range]) | weights MiB | peak RSS MiB |"
    echo "|---|---|---:|---:|---:|"
} > /tmp/lowbit_speed.$$
all_variants=("${variants[@]}")
for m in "${models[@]}"; do
    prepare "$m"
    variants=("${all_variants[@]}")
    for v in "${variants[@]}"; do [ "$v" = f32 ] || quantize "$m" "$v"; done
    if [ "$m" = cnn ] && [ -f "$dir/cnn_qat_int4.kiln" ]; then
        cp "$dir/cnn_qat_int4.kiln" "$dir/cnn_i4_qat.kiln"
        variants+=(i4_qat)
    fi
    # About a second of runs per measurement at f32's speed.
    one=$(cpu_ms "$dir/${m}_f32.kiln" 5)
    runs=$(awk -v t="$one" 'BEGIN { n = int(1000 / (t > 0.001 ? t : 0.001)); print (n < 10 ? 10 : (n > 4000 ? 4000 : n)) }')
    declare -A times=()
    for r in $(seq "$rounds"); do
        for v in "${variants[@]}"; do times[$v]+="$(cpu_ms "$dir/${m}_$v.kiln" "$runs") "; done
    done
    for v in "${variants[@]}"; do
        json=$("$kiln" bench "$dir/${m}_$v.kiln" --threads 1 --batch "$batch" --iters 3 --json)
        weights=$(echo "$json" | field weight_bytes | awk '{ printf "%.2f", $1 / 1048576 }')
        rss=$(echo "$json" | field peak_rss_bytes | awk '{ printf "%.2f", $1 / 1048576 }')
        echo "| $m | $v | $(echo "${times[$v]}" | tr ' ' '\n' | grep . | summary) | $weights | $rss |" >> /tmp/lowbit_speed.$$
    done
    unset times
done
cat /tmp/lowbit_speed.$$ | tee -a bench/results/lowbit.md
rm -f /tmp/lowbit_speed.$$
