#!/usr/bin/env bash
# Hostile models: specs, ONNX and .kiln files that declare or compute shapes far too large to exist,
# or name external data that is a FIFO. Each must end fast (within `timeout 10`) with a non-zero exit
# and one clear error line: no crash, no hang, no sanitizer report (run under the ASan build too).
# The ONNX and .kiln files are tests/ref/data/hostile_*, made by tests/ref/make_hostile_fixtures.py.
source "$(dirname "$0")/support/cli_common.sh" "$@"
data=$src/tests/ref/data

# run NAME -- ARGS: runs kiln under timeout 10; sets rc and leaves stdout/stderr in $work.
# Every run gets 10 s and, outside sanitizer builds (whose shadow memory needs terabytes of address
# space), 2 GiB of address space: a file that makes kiln allocate what it merely declares fails here.
if grep -q __asan_init "$kiln"; then memory_limit=unlimited; else memory_limit=$((2 * 1024 * 1024)); fi
run() {
    (ulimit -v "$memory_limit" && exec timeout 10 "$kiln" "$@") >"$work/stdout" 2>"$work/stderr"
    rc=$?
}

# expect_error NAME PATTERN -- ARGS: exit 1 or 2 (not a signal, not the timeout's 124), one stderr line
# matching PATTERN.
expect_error() {
    local name=$1 pattern=$2
    shift 3
    run "$@"
    if [ $rc -ne 1 ] && [ $rc -ne 2 ]; then
        failed=$((failed + 1)); echo "FAILED: $name: exit code $rc"; head -c 2000 "$work/stderr"; return
    fi
    if [ "$(wc -l <"$work/stderr")" -ne 1 ] || ! grep -q -- "$pattern" "$work/stderr"; then
        failed=$((failed + 1)); echo "FAILED: $name: stderr is not one line matching '$pattern':"
        head -c 2000 "$work/stderr"; return
    fi
    passed=$((passed + 1))
}

# expect_ok NAME PATTERN -- ARGS: exit 0, nothing on stderr (no sanitizer report), stdout matches PATTERN.
expect_ok() {
    local name=$1 pattern=$2
    shift 3
    run "$@"
    if [ $rc -ne 0 ] || [ -s "$work/stderr" ] || ! grep -q -- "$pattern" "$work/stdout"; then
        failed=$((failed + 1)); echo "FAILED: $name: exit code $rc, stdout lacks '$pattern' or stderr is not empty:"
        head -c 2000 "$work/stderr"; return
    fi
    passed=$((passed + 1))
}

# ---- specs whose layers read the current shape while adding parameters (g->values grows) ----
{ echo 'input 8'; yes relu | head -63; echo layernorm; } >"$work/relu64.txt"
expect_ok "layernorm after 64 values" "params  *16 trainable" -- info "$work/relu64.txt"
sed '/^transformer/d; /^posembed/a transformer 64 4 128\ntransformer 64 4 128\ntransformer 64 4 128\ntransformer 64 4 128\ntransformer 64 4 128\ntransformer 64 4 128\ntransformer 64 4 128\ntransformer 64 4 128\ntransformer 64 4 128\ntransformer 64 4 128' \
    "$src/examples/specs/fmnist_vit.txt" >"$work/vit10.txt"
expect_ok "ViT of 10 transformer blocks" "ops .*Softmax 10" -- info "$work/vit10.txt"

# ---- sizes past 2^62 elements ----
printf 'input 16777216 16777216 16777216\ndense 3\n' >"$work/huge_input.txt"
expect_error "spec input of 2^72 elements" "huge_input.txt:1: .*has more than 2^62 elements" -- info "$work/huge_input.txt"
expect_error ".kiln input of 2^65 elements" "hostile_kiln_input_huge.kiln: graph section .*has more than 2^62 elements" -- info "$data/hostile_kiln_input_huge.kiln"
expect_error "ONNX Tile repeats 2^31" "(Tile).*has more than 2^62 elements" -- info "$data/hostile_tile_huge.onnx"
expect_error "ONNX Pad pads 2^31" "(Pad).*has more than 2^62 elements" -- info "$data/hostile_pad_huge.onnx"
expect_error "ONNX Pad pads summing past int64" "(Pad).*has more than 2^62 elements" -- info "$data/hostile_pad_sum_overflow.onnx"
expect_error "ONNX Resize sizes 2^62" "(Resize).*has more than 2^62 elements" -- info "$data/hostile_resize_huge.onnx"
expect_error "ONNX Conv whose pads take the plane past 2^63" "(Conv).*has more than 2^62 elements" -- info "$data/hostile_conv_pads_overflow.onnx"
expect_error "ONNX MaxPool whose pads take the plane past 2^63" "(MaxPool).*has more than 2^62 elements" -- info "$data/hostile_maxpool_pads_overflow.onnx"
expect_error "ONNX MatMul batch broadcast to 2^80" "(MatMul).*has more than 2^62 elements" -- info "$data/hostile_matmul_batch_overflow.onnx"
expect_error "ONNX ConstantOfShape [2^62, 2^62]" "(ConstantOfShape).*has more than 2^62 elements" -- info "$data/hostile_constant_of_shape_huge.onnx"

# ---- checks that once ran once per element or window ----
expect_error "ONNX initializer of 2^30 elements over 12 bytes" "raw_data has 12 bytes; 1073741824 elements need" -- info "$data/hostile_initializer_without_data.onnx"
expect_error "ONNX Constant of 2^30 elements over 12 bytes" "raw_data has 12 bytes; 1073741824 elements need" -- info "$data/hostile_constant_without_data.onnx"
expect_error "ONNX MaxPool over a (1, 1, 4e18, 1) input" "buffers overflow the address space" -- info "$data/hostile_maxpool_huge.onnx"
expect_error ".kiln input height enlarged to 2^40" "hostile_kiln_input_dim.kiln\|input (1, 1, 1099511627776, 8)" -- info "$data/hostile_kiln_input_dim.kiln"

# ---- external data that is a FIFO: refused, not waited on ----
mkdir "$work/fifo"
cp "$data/hostile_external_fifo.onnx" "$work/fifo/"
mkfifo "$work/fifo/fifo.bin"
expect_error "external data in a FIFO" "external data 'fifo.bin' is not a regular file" -- info "$work/fifo/hostile_external_fifo.onnx"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
