#!/usr/bin/env bash
# Compact storage from the command line: a QDQ ONNX model (int8 per-channel weights and an f16 weight,
# made by tests/ref/make_qdq_onnx.py; skipped without python3-onnx) converts to a .kiln file that keeps
# them compact; kiln info reports bytes by storage encoding and the size against f32 weights; the .kiln
# file exports back to QDQ ONNX that onnx.checker accepts, and runs like the original.
source "$(dirname "$0")/support/cli_common.sh" "$@"

/usr/bin/python3 "$src/tests/ref/make_qdq_onnx.py" "$work/q.onnx"
status=$?
if [ $status -eq 77 ]; then
    echo "0 passed, 0 failed, 1 skipped (python3-onnx is not installed)"
    exit 0
fi
check "the QDQ model is written" '[ $status -eq 0 ] && [ -s "$work/q.onnx" ]'
check "convert q.onnx -> q.kiln" '"$kiln" convert "$work/q.onnx" "$work/q.kiln" > "$work/convert.txt"'
check "DequantizeLinear and Cast are folded into storage" 'grep -q "ops     4 nodes: Gemm 1, Relu 1, Transpose 1, MatMul 1" "$work/convert.txt"'
size=$(stat -c %s "$work/q.kiln")
check "the .kiln file ($size bytes) keeps the int8 weights (64 x 784 as f32 would be 200704 bytes)" '[ "$size" -lt 60000 ]'

info=$("$kiln" info "$work/q.kiln")
echo "$info" | sed -n '/^weights/,/^size/p'
check "info: affine i8 per-channel bytes" 'echo "$info" | grep -q "affine i8 per-channel: 1 tensor, 50,432 bytes (50,176 values)"'
check "info: f16 bytes" 'echo "$info" | grep -q "f16: 1 tensor, 1,280 bytes (640 values)"'
check "info: size against f32 weights" 'echo "$info" | grep -q "^size  *[0-9,]*-byte file; about [0-9,]* bytes with f32 weights (3\.[0-9]*x smaller)"'
json=$("$kiln" info "$work/q.kiln" --json)
check "info --json: weight bytes by encoding" 'echo "$json" | grep -q "\"weight_bytes\":{\"f32\":256,\"affine i8 per-channel\":50432,\"f16\":1280}"'
check "info --json: file_bytes_f32" 'echo "$json" | grep -q "\"file_bytes_f32\":[0-9]*"'

check "convert q.kiln -> back.onnx" '"$kiln" convert "$work/q.kiln" "$work/back.onnx" > /dev/null'
check "back.onnx passes onnx.checker" '/usr/bin/python3 "$src/tests/ref/check_onnx_export.py" "$work/back.onnx" > /dev/null'
check "back.onnx has a DequantizeLinear and a Cast" '/usr/bin/python3 -c "
import onnx, sys
ops = [n.op_type for n in onnx.load(sys.argv[1]).graph.node]
sys.exit(0 if ops.count(\"DequantizeLinear\") == 1 and ops.count(\"Cast\") == 1 else 1)" "$work/back.onnx"'
check "convert back.onnx -> back.kiln stays compact" '"$kiln" convert "$work/back.onnx" "$work/back.kiln" > /dev/null && [ "$(stat -c %s "$work/back.kiln")" -lt 60000 ]'

# The three files give the same outputs.
/usr/bin/python3 -c "
import numpy as np
np.save('$work/x.npy', np.random.default_rng(1).standard_normal((3, 784)).astype(np.float32))"
for m in q.onnx q.kiln back.kiln; do
    "$kiln" run "$work/$m" "$work/x.npy" --batch-dim --out "$work/out_$m" > /dev/null
done
check "q.onnx, q.kiln and back.kiln give identical outputs" 'cmp -s "$work/out_q.onnx/y.npy" "$work/out_q.kiln/y.npy" && cmp -s "$work/out_q.onnx/y.npy" "$work/out_back.kiln/y.npy"'

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
