#!/usr/bin/env bash
# kiln info, kiln run and kiln convert on ONNX models whose shapes are fixed, symbolic or computed at run
# time (tests/ref/make_onnx_shape_fixtures.py): a PyTorch export with a fixed batch of 2, one with dynamic
# batch and sequence reshaped through Shape -> Gather -> Concat -> Reshape, and a Reshape whose target is
# a graph input. Each runs as .onnx and converted to .kiln; every output must be within 1e-5 (relative to
# its largest value) of onnxruntime's (npm onnxruntime-node in bench/node_modules, when it loads) and of
# PyTorch's (the committed .npy, compared with numpy). Bad values get one clear error. Then inputs that
# are not batches: 0-d arrays, a batch of none, a model without inputs; then outputs sized by input values
# (TopK, OneHot: tests/ref/make_onnx_scalar_fixtures.py).
source "$(dirname "$0")/support/cli_common.sh" "$@"
data=$src/tests/ref/data

ort=false
if cli_onnxruntime_loads; then
    ort=true
else
    echo "note: onnxruntime-node does not load from bench/node_modules: outputs checked against PyTorch only"
fi

close() { # GOT.npy WANT.npy: max |got - want| <= 1e-5 max |want|, same shape
    /usr/bin/python3 - "$1" "$2" <<'EOF'
import sys
import numpy as np
got, want = np.load(sys.argv[1]), np.load(sys.argv[2])
ok = got.shape == want.shape and np.abs(got - want).max() <= 1e-5 * max(1.0, np.abs(want).max())
print("  %s vs %s: %s" % (sys.argv[1].split("/")[-2], sys.argv[2].split("/")[-1], "ok" if ok else "DIFFERS"))
sys.exit(0 if ok else 1)
EOF
}

# run LABEL MODEL WANT.npy INPUT.npy...: kiln run, then PyTorch's and onnxruntime's outputs.
run() {
    local label=$1 model=$2 want=$3
    shift 3
    inputs=("$@")
    local out=$work/out_$label
    check "$label: kiln run" '"$kiln" run "$model" "${inputs[@]}" --batch-dim --out "$out" >"$work/log" 2>&1 || { cat "$work/log"; false; }'
    check "$label: within 1e-5 of PyTorch" 'close "$out/y.npy" "$want"'
    if $ort; then
        check "$label: within 1e-5 of onnxruntime" '(cd "$src/bench" && node ort_run.js "$onnx" "$out.ort" "${inputs[@]}" >/dev/null &&
            node compare_npy.js "$out/y.npy" "$out.ort/y.npy" --rtol 1e-5 --label "$label")'
    fi
}

for name in shape_fixed2 shape_dynamic shape_input; do
    onnx=$data/$name.onnx
    check "$name: kiln convert to .kiln" '"$kiln" convert "$onnx" "$work/$name.kiln" >/dev/null'
    for ext in onnx kiln; do
        model=$work/$name.$ext
        [ "$ext" = onnx ] && model=$onnx
        "$kiln" info "$model" >"$work/info" 2>&1
        case $name in
        shape_fixed2)
            check "$name.$ext: info keeps the fixed batch" 'grep -q "x (2, 3, 4) f32" "$work/info" && grep -q "y (2, 5) f32" "$work/info"'
            run "$name.$ext" "$model" "$data/shape_fixed2_y.npy" "$data/shape_fixed2_x.npy"
            /usr/bin/python3 -c "import numpy as np; np.save('$work/one.npy', np.load('$data/shape_fixed2_x.npy')[:1])"
            check "$name.$ext: a batch of 1 is one clear error" '! "$kiln" run "$model" "$work/one.npy" --batch-dim >"$work/log" 2>&1 &&
                [ "$(wc -l <"$work/log")" -eq 1 ] && grep -q "fixed at 2" "$work/log"' ;;
        shape_dynamic)
            check "$name.$ext: info shows the open batch and sequence" 'grep -q "x (N, ?, 8) f32" "$work/info"'
            run "$name.$ext.a" "$model" "$data/shape_dynamic_y_a.npy" "$data/shape_dynamic_x_a.npy"
            run "$name.$ext.b" "$model" "$data/shape_dynamic_y_b.npy" "$data/shape_dynamic_x_b.npy" ;;
        shape_input)
            check "$name.$ext: info says the outputs follow input values" 'grep -q "follow the values of the inputs" "$work/info"'
            run "$name.$ext" "$model" "$data/shape_input_y.npy" "$data/shape_input_data.npy" "$data/shape_input_shape.npy"
            /usr/bin/python3 -c "import numpy as np; np.save('$work/negative.npy', np.array([-5, 3], np.int64));
np.save('$work/more.npy', np.array([4, 6], np.int64)); np.save('$work/float.npy', np.array([3, 4], np.float32))"
            check "$name.$ext: a negative target is one clear error" '! "$kiln" run "$model" "$data/shape_input_data.npy" \
                "$work/negative.npy" --batch-dim >"$work/log" 2>&1 && [ "$(wc -l <"$work/log")" -eq 1 ] && grep -q "has dim -5" "$work/log"'
            check "$name.$ext: a target of more elements than the data is one clear error" '! "$kiln" run "$model" \
                "$data/shape_input_data.npy" "$work/more.npy" --batch-dim >"$work/log" 2>&1 && [ "$(wc -l <"$work/log")" -eq 1 ] &&
                grep -q "cannot reshape (2, 6)" "$work/log"'
            check "$name.$ext: a float target for an int64 input is one clear error" '! "$kiln" run "$model" \
                "$data/shape_input_data.npy" "$work/float.npy" --batch-dim >"$work/log" 2>&1 && [ "$(wc -l <"$work/log")" -eq 1 ] &&
                grep -q "i64" "$work/log"' ;;
        esac
    done
done

# Inputs that are not batches (tests/ref/make_onnx_scalar_fixtures.py): 0-d .npy bounds of a Clip are each
# the whole input, with or without --batch-dim; a batch may hold no samples; a model without inputs runs
# with no files.
clip=$data/scalar_clip.onnx
check "scalar inputs with --batch-dim" '"$kiln" run "$clip" "$data/scalar_clip_x.npy" "$data/scalar_clip_lo.npy" \
    "$data/scalar_clip_hi.npy" --batch-dim --out "$work/clip" >/dev/null && close "$work/clip/y.npy" "$data/scalar_clip_y.npy"'
/usr/bin/python3 -c "import numpy as np; x = np.load('$data/scalar_clip_x.npy'); np.save('$work/row.npy', x[1]);
np.save('$work/row_y.npy', np.load('$data/scalar_clip_y.npy')[1:2]); np.save('$work/none.npy', x[:0])"
check "scalar inputs beside one sample (no --batch-dim)" '"$kiln" run "$clip" "$work/row.npy" "$data/scalar_clip_lo.npy" \
    "$data/scalar_clip_hi.npy" --out "$work/clip1" >/dev/null && close "$work/clip1/y.npy" "$work/row_y.npy"'
check "a batch of no samples gives an output of none" '"$kiln" run "$clip" "$work/none.npy" "$data/scalar_clip_lo.npy" \
    "$data/scalar_clip_hi.npy" --batch-dim --out "$work/clip0" >/dev/null &&
    /usr/bin/python3 -c "import numpy as np, sys; sys.exit(np.load(\"$work/clip0/y.npy\").shape != (0, 4))"'
check "a second file for a scalar input is one clear error" '! "$kiln" run "$clip" "$data/scalar_clip_x.npy" \
    "lo=$data/scalar_clip_lo.npy" "lo=$data/scalar_clip_lo.npy" "hi=$data/scalar_clip_hi.npy" --batch-dim >"$work/log" 2>&1 &&
    [ "$(wc -l <"$work/log")" -eq 1 ] && grep -q "whole value" "$work/log"'
check "a model without inputs runs with no files" '"$kiln" run "$data/constant_only.onnx" --out "$work/const" >/dev/null &&
    close "$work/const/y.npy" "$data/constant_only_y.npy"'
check "a model with inputs and no files is one clear error" '! "$kiln" run "$clip" >"$work/log" 2>&1 &&
    [ "$(wc -l <"$work/log")" -eq 1 ] && grep -q "got no file" "$work/log"'

# Outputs sized by input values (TopK's k, OneHot's depth), as .onnx and as .kiln; bad values get one error.
tk=$data/topk_onehot
same() { /usr/bin/python3 -c "import numpy as np, sys; a, b = np.load(sys.argv[1]), np.load(sys.argv[2])
sys.exit(not (a.dtype == b.dtype and a.shape == b.shape and (a == b).all()))" "$1" "$2"; }
"$kiln" convert "$tk.onnx" "$work/topk_onehot.kiln" >/dev/null
for model in "$tk.onnx" "$work/topk_onehot.kiln"; do
    name=$(basename "$model")
    check "$name: TopK and OneHot give numpy's values" '"$kiln" run "$model" "$tk"_x.npy "$tk"_k.npy "$tk"_classes.npy \
        "$tk"_depth.npy --batch-dim --out "$work/tk" >/dev/null && same "$work/tk/values.npy" "$tk"_values.npy &&
        same "$work/tk/indices.npy" "$tk"_indices.npy && same "$work/tk/hot.npy" "$tk"_hot.npy'
done
/usr/bin/python3 -c "import numpy as np; np.save('$work/k9.npy', np.array([9], np.int64)); np.save('$work/d0.npy', np.array(0, np.int64))"
check "a K above the axis is one clear error" '! "$kiln" run "$tk.onnx" "$tk"_x.npy "$work/k9.npy" "$tk"_classes.npy \
    "$tk"_depth.npy --batch-dim >"$work/log" 2>&1 && [ "$(wc -l <"$work/log")" -eq 1 ] && grep -q "K is 9; axis 1 has 5" "$work/log"'
check "a depth of 0 is one clear error" '! "$kiln" run "$tk.onnx" "$tk"_x.npy "$tk"_k.npy "$tk"_classes.npy \
    "$work/d0.npy" --batch-dim >"$work/log" 2>&1 && [ "$(wc -l <"$work/log")" -eq 1 ] && grep -q "depth is 0" "$work/log"'

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
