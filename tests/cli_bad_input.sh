#!/usr/bin/env bash
# Bad input to kiln train / eval: one clear error line naming the file, line or layer; a non-zero
# exit; no crash; no output file left behind.
source "$(dirname "$0")/support/cli_common.sh" "$@"

# expect_error NAME PATTERN -- ARGS: the command fails (exit 1 or 2, not a signal), stderr matches
# PATTERN, and no model file appears.
expect_error() {
    local name=$1 pattern=$2
    shift 3
    rm -f "$work/out.kiln"
    "$kiln" "$@" >"$work/stdout" 2>"$work/stderr"
    local rc=$?
    if [ $rc -ne 1 ] && [ $rc -ne 2 ]; then
        failed=$((failed + 1)); echo "FAILED: $name: exit code $rc"; cat "$work/stderr"; return
    fi
    if ! grep -q -- "$pattern" "$work/stderr"; then
        failed=$((failed + 1)); echo "FAILED: $name: stderr lacks '$pattern':"; cat "$work/stderr"; return
    fi
    if [ -e "$work/out.kiln" ] || ls "$work"/out.kiln.tmp* >/dev/null 2>&1; then
        failed=$((failed + 1)); echo "FAILED: $name: an output file was left"; return
    fi
    passed=$((passed + 1))
}

printf 'input 4\ndense 3\nfrobnicate 2\n' > "$work/bad_layer.txt"
printf 'input 4\nconv 3 3\n' > "$work/bad_shape.txt"
printf 'input 4\ndense 3\n' > "$work/mlp4.txt"
printf 'input 4\ndense 0\n' > "$work/bad_number.txt"
printf 'residual\n' > "$work/no_input.txt"
printf 'input 4\nresidual\ndense 3\nend\n' > "$work/bad_residual.txt"
printf 'a,b,c,d,y\n1,2,3,4,0\n5,6,7,8,1\n9,10,11,12,7\n' > "$work/labels.csv"
printf 'a,b,c,d,y\n1,2,3,4,0\n5,6,x,8,1\n' > "$work/nonnumeric.csv"
printf 'a,b,c,d,y\n1,2,3,4,0\n1e30,1e30,1e30,1e30,1\n-1e30,2,3,4,2\n' > "$work/huge.csv"
printf 'not an idx file' > "$work/train-images-idx3-ubyte"
head -c 100 /dev/urandom > "$work/corrupt.kiln"

expect_error "unknown layer" "bad_layer.txt:3: unknown layer 'frobnicate'" -- train --model "$work/bad_layer.txt" --data "$work/labels.csv" --out "$work/out.kiln"
expect_error "conv on a vector" "bad_shape.txt:2: conv needs an image input" -- train --model "$work/bad_shape.txt" --data "$work/labels.csv" --out "$work/out.kiln"
expect_error "bad number" "bad_number.txt:2: dense out_features must be" -- train --model "$work/bad_number.txt" --data "$work/labels.csv" --out "$work/out.kiln"
expect_error "no input line" "no_input.txt:1: the first layer must be 'input'" -- train --model "$work/no_input.txt" --data "$work/labels.csv" --out "$work/out.kiln"
expect_error "residual shape mismatch" "bad_residual.txt:4: residual block from line 2" -- train --model "$work/bad_residual.txt" --data "$work/labels.csv" --out "$work/out.kiln"
expect_error "missing spec" "nope.txt" -- train --model "$work/nope.txt" --data "$work/labels.csv" --out "$work/out.kiln"
expect_error "missing data" "missing.csv" -- train --model "$work/mlp4.txt" --data "$work/missing.csv" --out "$work/out.kiln"
expect_error "non-numeric feature" "nonnumeric.csv" -- train --model "$work/mlp4.txt" --data "$work/nonnumeric.csv" --out "$work/out.kiln"
expect_error "corrupt IDX" "train-images-idx3-ubyte" -- train --model "$work/mlp4.txt" --data "$work/train-images-idx3-ubyte" --out "$work/out.kiln"
expect_error "more classes than outputs" "3 outputs but" -- train --model "$work/mlp4.txt" --data "$work/labels.csv" --out "$work/out.kiln"
expect_error "input size mismatch" "takes samples of" -- train --model "$work/mlp4.txt" --data fashion-mnist:test --out "$work/out.kiln"
printf 'input 4\ndense 8\n' > "$work/mlp8.txt"
printf 'input 4\ndense 1\n' > "$work/regress.txt"
expect_error "NaN loss" "diverged" -- train --model "$work/regress.txt" --data "$work/huge.csv" --loss mse --optimizer sgd --lr 1e30 --epochs 3 --batch 1 --out "$work/out.kiln"
expect_error "unknown optimizer" "adamx" -- train --model "$work/mlp8.txt" --data "$work/labels.csv" --optimizer adamx --out "$work/out.kiln"
expect_error "unknown option" "unknown option '--epoch'" -- train --model "$work/mlp8.txt" --data "$work/labels.csv" --epoch 3 --out "$work/out.kiln"
expect_error "corrupt model" "corrupt.kiln" -- eval "$work/corrupt.kiln" --data "$work/labels.csv"
expect_error "unknown command" "unknown command" -- frobnicate

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
