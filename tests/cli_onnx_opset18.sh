#!/usr/bin/env bash
# The hand-written opset-18 model of tests/ref/make_opset18_model.py (ReduceX axes inputs, Split num_outputs,
# Pad axes, Resize axes + keep_aspect_ratio_policy) through kiln run, kiln info and kiln convert: every output
# within 1e-5 of onnxruntime's (tests/ref/data/opset18_ort_*.npy, written by bench/ort_run.js; compared with a
# fresh onnxruntime run too when onnxruntime-node is installed), the .kiln conversion giving the same. And
# opsets kiln does not read get one clear error: opset 22, and a node of an unknown domain. Then the
# opset-18 bitwise ops against numpy.
source "$(dirname "$0")/support/cli_common.sh" "$@"
data=$src/tests/ref/data
outputs="mean_h resized max_c lse_w"
close() { # DIR REF_PREFIX: every output within 1e-5
    /usr/bin/python3 - "$1" "$2" $outputs <<'PY'
import sys, numpy as np
d, ref = sys.argv[1], sys.argv[2]
for n in sys.argv[3:]:
    a, b = np.load("%s/%s.npy" % (d, n)), np.load(ref + n + ".npy")
    if a.shape != b.shape or not np.all(np.abs(a - b) <= 1e-5):
        sys.exit("%s: shape %s vs %s, max diff %s" % (n, a.shape, b.shape,
                 np.abs(a - b).max() if a.shape == b.shape else "-"))
PY
}

check "kiln run reads the opset-18 model" \
    '"$kiln" run "$data/opset18.onnx" "$data/opset18_x.npy" --batch-dim --out "$work/run" >/dev/null'
check "kiln run outputs within 1e-5 of onnxruntime" 'close "$work/run" "$data/opset18_ort_"'
/usr/bin/python3 -c 'import numpy, sys; numpy.save(sys.argv[1], numpy.zeros((2, 3, 0, 4), numpy.float32))' \
    "$work/empty.npy"
"$kiln" run "$data/opset18.onnx" "$work/empty.npy" --batch-dim > "$work/empty.txt" 2>&1
check "samples of no elements: one clear error" \
    '[ $? -ne 0 ] && [ "$(wc -l < "$work/empty.txt")" -eq 1 ] && grep -q "dimension 2 is fixed at 7 by the model, got 0" "$work/empty.txt"'
check "kiln info reads the opset-18 model" '"$kiln" info "$data/opset18.onnx" > "$work/info.txt"'
check "kiln info names the Resize" 'grep -q Resize "$work/info.txt"'
check "kiln convert to .kiln" '"$kiln" convert "$data/opset18.onnx" "$work/m.kiln" >/dev/null'
check "the .kiln runs the same" \
    '"$kiln" run "$work/m.kiln" "$data/opset18_x.npy" --batch-dim --out "$work/conv" >/dev/null &&
     close "$work/conv" "$data/opset18_ort_"'
if cli_onnxruntime_loads; then
    check "a fresh onnxruntime run agrees with the fixtures" \
        'node "$src/bench/ort_run.js" "$data/opset18.onnx" "$work/ort" "$data/opset18_x.npy" &&
         close "$work/ort" "$data/opset18_ort_"'
else
    echo "note: onnxruntime-node is not installed in bench/: fixtures only"
fi

# Opsets kiln does not read: one error line naming the reason.
if /usr/bin/python3 -c 'import onnx, sys; sys.exit(not hasattr(onnx, "load"))' 2>/dev/null; then
    /usr/bin/python3 - "$work" "$data/opset18.onnx" <<'PY'
import sys, onnx
from onnx import helper, TensorProto
out = sys.argv[1]
def save(name, opsets, domain=""):
    node = helper.make_node("Relu", ["x"], ["y"], domain=domain)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets])
    m.ir_version = 8
    onnx.save(m, "%s/%s.onnx" % (out, name))
save("opset22", [("", 22)])
save("domain", [("", 18), ("com.example", 1)], domain="com.example")
save("opset1", [("", 1)])
# The opset-18 model without its Resize: Split num_outputs and Pad axes, which export writes as opset 17.
m = onnx.load(sys.argv[2])
keep = [n for n in m.graph.node if n.op_type != "Resize"]
outs = [o for o in m.graph.output if o.name != "resized"]
g = helper.make_graph(keep, "g", list(m.graph.input), outs,
                      initializer=[i for i in m.graph.initializer if i.name != "sizes_hw"])
m2 = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
m2.ir_version = 8
onnx.save(m2, "%s/no_resize.onnx" % out)
PY
    "$kiln" info "$work/opset22.onnx" > "$work/e22.txt" 2>&1
    check "opset 22 is refused" '[ $? -ne 0 ] && grep -q "opset 22 of the default domain is not supported (kiln reads opsets 1 to 21)" "$work/e22.txt"'
    check "opset 22: one line" '[ "$(wc -l < "$work/e22.txt")" -eq 1 ]'
    "$kiln" info "$work/domain.onnx" > "$work/ed.txt" 2>&1
    check "an unknown domain is refused by name" '[ $? -ne 0 ] && grep -q "domain .com.example. is not supported" "$work/ed.txt"'
    check "opset 1 Relu reads" '"$kiln" info "$work/opset1.onnx" >/dev/null'
    "$kiln" convert "$data/opset18.onnx" "$work/back.onnx" > "$work/eb.txt" 2>&1
    check "export refuses Resize's opset-18 form by name" \
        '[ $? -ne 0 ] && grep -q "Resize.*uses a form of opset 18 or later; kiln exports opset 17" "$work/eb.txt"'
    outputs="mean_h max_c lse_w"
    check "Split num_outputs and Pad axes export as opset 17 and run the same" \
        '"$kiln" convert "$work/no_resize.onnx" "$work/no_resize17.onnx" >/dev/null &&
         "$kiln" run "$work/no_resize17.onnx" "$data/opset18_x.npy" --batch-dim --out "$work/r17" >/dev/null &&
         close "$work/r17" "$data/opset18_ort_"'
    if cli_onnxruntime_loads; then
        check "onnxruntime runs the opset-17 export the same" \
            'node "$src/bench/ort_run.js" "$work/no_resize17.onnx" "$work/o17" "$data/opset18_x.npy" &&
             close "$work/o17" "$data/opset18_ort_"'
    fi
fi
# The opset-18 bitwise ops (tests/ref/make_onnx_bitwise_fixture.py) against numpy, bit for bit.
b=$data/bitwise
check "BitwiseAnd/Or/Xor/Not give numpy's bits" '"$kiln" run "$b.onnx" "$b"_a.npy "$b"_b.npy "$b"_c.npy --batch-dim \
    --out "$work/bits" >/dev/null && /usr/bin/python3 -c "import numpy as np, sys
for n in (\"and\", \"or\", \"xor\", \"not\"):
    a, w = np.load(\"$work/bits/%s.npy\" % n), np.load(\"${b}_%s.npy\" % n)
    sys.exit(1) if a.dtype != w.dtype or a.shape != w.shape or (a != w).any() else None"'
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
