#!/usr/bin/env bash
# kiln info and kiln run on models whose shapes follow values (tests/ref/make_onnx_dynamic_fixture.py):
# dynamic_shapes.onnx (NonZero, Unique, Compress: ops that size their outputs when they run) and
# run_values.onnx (Range, ConstantOfShape, TopK sized by values the run computes). kiln info says what is
# known before a run; kiln run on each input of the fixtures (one giving empty outputs) must give numpy's
# outputs (the fixture bundles) and, when npm onnxruntime-node loads from bench/node_modules, onnxruntime's.
# With onnxruntime, also the ops of tests/test_onnx_extra_ops.c (extra_ops.onnx, groupnorm21.onnx), which
# that test holds to numpy.
source "$(dirname "$0")/support/cli_common.sh" "$@"
data=$src/tests/ref/data

ort=false
if cli_onnxruntime_loads; then
    ort=true
else
    echo "note: onnxruntime-node does not load from bench/node_modules: outputs checked against numpy only"
fi

"$kiln" info "$data/run_values.onnx" >"$work/info_rv" 2>&1
check "info: an output sized by run values has no shape before a run" \
    'grep -q "ramp: shape and dtype follow values the model computes as it runs" "$work/info_rv"'
"$kiln" info --json "$data/run_values.onnx" >"$work/info_rv.json" 2>&1
check "info --json: its shape and dtype are null" 'grep -q "\"name\":\"ramp\",\"shape\":null,\"dtype\":null" "$work/info_rv.json"'
"$kiln" info "$data/dynamic_shapes.onnx" >"$work/info_dyn" 2>&1
check "info: an output after NonZero shows its bound and says a run may change it" \
    'grep -q "doubled (5) f32 .*(before a run: values may change it)" "$work/info_dyn"'

# Unpacks a fixture bundle (tests/support/fixture.h records) into DIR/<name>.npy.
unpack() {
    /usr/bin/python3 - "$1" "$2" <<'EOF'
import struct, sys
import numpy as np
raw, out = open(sys.argv[1], "rb").read(), sys.argv[2]
at = 0
while at < len(raw):
    n, = struct.unpack_from("<I", raw, at); at += 4
    name = raw[at:at + n].decode(); at += n
    ndim, = struct.unpack_from("<I", raw, at); at += 4
    dims = struct.unpack_from("<%dq" % ndim, raw, at); at += 8 * ndim
    count = int(np.prod(dims)) if ndim else 1
    np.save("%s/%s.npy" % (out, name), np.frombuffer(raw, "<f4", count, at).reshape(dims))
    at += 4 * count
EOF
}

# compare DIR REF: every DIR/kiln<i>/<name>.npy against REF's, REF "numpy" (DIR/<name><i>.npy from the
# bundle) or "ort" (DIR/ort<i>/<name>.npy): same shape, values within 1e-5 (relative to the largest).
# Prints one line per case: "<i> ok" or "<i> <names that differ>".
compare() {
    /usr/bin/python3 - "$1" "$2" <<'EOF'
import glob, os, sys
import numpy as np
top, ref = sys.argv[1], sys.argv[2]
for i in range(5):
    got_dir = "%s/kiln%d" % (top, i)
    bad = []
    for got in sorted(glob.glob(got_dir + "/*.npy")):
        name = os.path.basename(got)[:-4]
        want = "%s/%s%d.npy" % (top, name, i) if ref == "numpy" else "%s/ort%d/%s.npy" % (top, i, name)
        g, w = np.load(got), np.load(want)
        ok = g.shape == w.shape and (g.size == 0 or
             np.abs(g.astype(np.float64) - w).max() <= 1e-5 * max(1.0, np.abs(w).max()))
        bad += [] if ok else [name]
    print(i, "ok" if glob.glob(got_dir + "/*.npy") and not bad else " ".join(bad) or "no outputs")
EOF
}

for model in dynamic_shapes run_values; do
    mkdir -p "$work/$model"
    unpack "$data/$model.bin" "$work/$model"
    for i in 0 1 2 3 4; do
        "$kiln" run "$data/$model.onnx" "$work/$model/x$i.npy" --batch-dim --out "$work/$model/kiln$i" >"$work/log" 2>&1 ||
            { echo "  $model case $i:"; cat "$work/log"; }
        if $ort; then
            node "$src/bench/ort_run.js" "$data/$model.onnx" "$work/$model/ort$i" "$work/$model/x$i.npy" >/dev/null 2>&1
        fi
    done
    compare "$work/$model" numpy >"$work/numpy"
    for i in 0 1 2 3 4; do
        check "$model case $i: kiln run gives numpy's outputs ($(sed -n "$((i + 1))p" "$work/numpy"))" \
            '[ "$(sed -n "$((i + 1))p" "$work/numpy")" = "$i ok" ]'
    done
    if $ort; then
        compare "$work/$model" ort >"$work/ort"
        check "$model: and onnxruntime's ($(tr '\n' ';' <"$work/ort"))" '[ "$(grep -c " ok$" "$work/ort")" -eq 5 ]'
    fi
done
if $ort; then
    mkdir -p "$work/extra"
    unpack "$data/extra_ops.bin" "$work/extra"
    for model in extra_ops:x,cols groupnorm21:x; do
        name=${model%%:*} inputs=()
        for input in $(echo "${model#*:}" | tr , ' '); do inputs+=("$work/extra/$input.npy"); done
        "$kiln" run "$data/$name.onnx" "${inputs[@]}" --batch-dim --out "$work/extra/kiln_$name" >/dev/null 2>&1
        node "$src/bench/ort_run.js" "$data/$name.onnx" "$work/extra/ort_$name" "${inputs[@]}" >/dev/null 2>&1
        differ=$(/usr/bin/python3 - "$work/extra/kiln_$name" "$work/extra/ort_$name" <<'EOF'
import glob, os, sys
import numpy as np
wants = sorted(glob.glob(sys.argv[2] + "/*.npy"))
bad = [os.path.basename(w) for w in wants if not os.path.exists(os.path.join(sys.argv[1], os.path.basename(w)))
       or np.load(os.path.join(sys.argv[1], os.path.basename(w))).shape != np.load(w).shape
       or np.abs(np.load(os.path.join(sys.argv[1], os.path.basename(w))).astype(np.float64) - np.load(w)).max()
       > 1e-5 * max(1.0, np.abs(np.load(w)).max())]
print(" ".join(bad) if wants else "no onnxruntime outputs")
EOF
)
        check "$name: kiln run gives onnxruntime's outputs${differ:+ (differ: $differ)}" '[ -z "$differ" ]'
    done
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
