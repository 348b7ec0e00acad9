#!/usr/bin/env bash
# The command line's rough edges: kiln -h and kiln help CMD work and the help names --version; an unknown
# command or option is one line with the nearest name ("did you mean --epochs?") and a pointer to --help,
# not the whole usage; options that do nothing for the chosen optimizer or schedule, --threads outside
# 1..1024, a negative --clip-norm, bench --iters 0 and a spec attribute given twice are errors; counts
# take the singular for 1 ("1 thread", "1 sample"); the first progress line shows no rate (none is
# measured yet).
source "$(dirname "$0")/support/cli_common.sh" "$@"

printf 'a,b,label\n1,2,0\n2,1,1\n3,3,0\n4,1,1\n' > "$work/d.csv"
printf 'a,b,label\n1,2,0\n' > "$work/one.csv"
printf 'input 2\ndense 2\n' > "$work/spec.txt"
"$kiln" train --model "$work/spec.txt" --data "$work/d.csv" --epochs 1 --quiet --out "$work/m.kiln" > /dev/null

# ---- help ----
out=$("$kiln" -h 2> /dev/null)
check "kiln -h prints the usage and exits 0" '[ $? -eq 0 ] && echo "$out" | grep -q "^usage: kiln <command>"'
check "the usage names --version" 'echo "$out" | grep -q -- "--version"'
out=$("$kiln" help train 2> /dev/null)
check "kiln help train prints train's options" '[ $? -eq 0 ] && echo "$out" | grep -q "^usage: kiln train" && echo "$out" | grep -q -- "--epochs"'

# ERRORS: NAME EXPECTED_PATTERN COMMAND...: fails, one line on stderr matching the pattern
one_line_error() {
    local name=$1 pattern=$2
    shift 2
    "$@" > /dev/null 2> "$work/err.txt"
    local rc=$?
    check "$name: fails" '[ $rc -ne 0 ]'
    check "$name: one line matching '$pattern'" '[ "$(wc -l < "$work/err.txt")" -eq 1 ] && grep -q -- "$pattern" "$work/err.txt"'
}
one_line_error "unknown command" "unknown command 'trian' (did you mean train?); kiln --help" "$kiln" trian
one_line_error "help for an unknown command" "did you mean eval?" "$kiln" help evl
one_line_error "unknown option" "unknown option '--epoch' (did you mean --epochs?); kiln train --help lists the options" \
    "$kiln" train --model "$work/spec.txt" --data "$work/d.csv" --out "$work/x.kiln" --epoch 3
one_line_error "unknown option of eval" "did you mean --data?" "$kiln" eval "$work/m.kiln" --dat "$work/d.csv"
one_line_error "an unknown option far from all" "unknown option '--zzzzzz'; kiln run --help" \
    "$kiln" run "$work/m.kiln" --zzzzzz

train=("$kiln" train --model "$work/spec.txt" --data "$work/d.csv" --epochs 1 --quiet --out "$work/x.kiln")
one_line_error "--momentum with adam" "--momentum applies to --optimizer sgd; it does nothing for adam" "${train[@]}" --momentum 0.9
one_line_error "--nesterov with adamw" "--nesterov applies to --optimizer sgd" "${train[@]}" --optimizer adamw --nesterov
one_line_error "--gamma without the step schedule" "--gamma applies to --schedule step" "${train[@]}" --gamma 0.5
one_line_error "--min-lr with the step schedule" "--min-lr applies to --schedule cosine" "${train[@]}" --schedule step --min-lr 0.001
check "--momentum with sgd is fine" '"${train[@]}" --optimizer sgd --momentum 0.9 > /dev/null'
one_line_error "--clip-norm -1" "--clip-norm must be positive" "${train[@]}" --clip-norm -1
for t in 0 1025 -1; do
    one_line_error "train --threads $t" "--threads must be from 1 to 1024, got $t" "${train[@]}" --threads $t
done
one_line_error "run --threads 0" "--threads must be from 1 to 1024" "$kiln" run "$work/m.kiln" "$work/d.csv" --threads 0
one_line_error "eval --threads 2000" "--threads must be from 1 to 1024" "$kiln" eval "$work/m.kiln" --data "$work/d.csv" --threads 2000
one_line_error "bench --threads 0" "--threads must be from 1 to 1024" "$kiln" bench "$work/m.kiln" --threads 0
one_line_error "bench --iters 0" "--iters must be at least 1" "$kiln" bench "$work/m.kiln" --iters 0
printf 'input 1 8 8\nconv 4 3 pad=1 pad=2\n' > "$work/twice.txt"
one_line_error "a spec attribute given twice" "option 'pad' is given twice" "$kiln" info "$work/twice.txt"

# ---- plurals ----
out=$("$kiln" train --model "$work/spec.txt" --data "$work/one.csv" --epochs 1 --threads 1 --out "$work/o.kiln" 2> "$work/err.txt")
check "1 sample, 1 thread, 1 epoch" 'echo "$out" | grep -q "(1 sample), 6 params, adam, batch 64, 1 thread$" && echo "$out" | grep -q "done: 1 epoch, 1 step in"'
check "the data line says 1 sample" 'grep -q "one.csv: 1 sample of (2), 1 class," "$work/err.txt"'
check "eval says 1 sample" '"$kiln" eval "$work/o.kiln" --data "$work/one.csv" 2> /dev/null | grep -q "one.csv: 1 sample$"'

# ---- the first progress line ----
"$kiln" train --model "$work/spec.txt" --data "$work/d.csv" --epochs 1 --batch 1 --threads 1 --out "$work/p.kiln" \
    > /dev/null 2> "$work/err.txt"
first=$(grep "^epoch 1/1" "$work/err.txt" | head -1)
check "the first progress line shows no rate: $first" '[[ "$first" == *" 1/4 loss "* ]] && [[ "$first" != *"samples/s"* ]]'
check "the last one does" 'grep "^epoch 1/1" "$work/err.txt" | tail -1 | grep -q "4/4 .*samples/s ETA"'

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
