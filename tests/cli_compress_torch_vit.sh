#!/usr/bin/env bash
# kiln quantize and kiln prune on a PyTorch export whose Linear layers reach MatMul through a Transpose of
# the weight: tests/ref/data/onnx_vit.onnx (torch 1.13, do_constant_folding=False) computes
# x @ Transpose(W) for the patch embedding, the attention's in_proj and the MLP, and Gemm(transB) for
# out_proj and the head. kiln's importer folds Transpose(W) into W, so all 10 Linear weights are found:
#  - the imported model still gives PyTorch's outputs;
#  - int8 and int4 weights: 10 weights quantized, output SQNR against the f32 model and top-1 agreement on
#    64 random images (labels: the f32 model's classes);
#  - L1 pruning at 50%: checked in NumPy against the ONNX file's own weights, through kiln's ONNX export of
#    the pruned model (each of the 10 weights, transposed back where the file transposed it, is the
#    original with its smallest half zeroed);
#  - with onnxruntime-node in bench/node_modules: kiln running the pruned .kiln agrees with onnxruntime
#    running its ONNX export (bench/compare_one.sh, batch 1 and 8), and the int8 one with its QDQ export.
source "$(dirname "$0")/support/cli_common.sh" "$@"
build=$(cd "$(dirname "$kiln")" && pwd)
vit=$src/tests/ref/data/onnx_vit.onnx

# The fixture's input and PyTorch's output (records of name, rank, dims, f32), and 64 random images.
/usr/bin/python3 - "$src/tests/ref/data/onnx_vit.bin" "$work" <<'PY'
import struct, sys
import numpy as np
path, work = sys.argv[1], sys.argv[2]
blob, at = open(path, "rb").read(), 0
while at < len(blob):
    n, = struct.unpack_from("<I", blob, at); name = blob[at + 4:at + 4 + n].decode(); at += 4 + n
    rank, = struct.unpack_from("<I", blob, at); at += 4
    dims = struct.unpack_from("<%dq" % rank, blob, at); at += 8 * rank
    count = int(np.prod(dims))
    np.save("%s/torch_%s.npy" % (work, name), np.frombuffer(blob, "<f4", count, at).reshape(dims))
    at += 4 * count
np.save(work + "/x.npy", np.random.default_rng(5).random((64, 1, 28, 28), dtype=np.float32))
PY
# SQNR (dB) of B against A and the fraction of rows whose argmax agrees: "sqnr agreement".
compare() {
    /usr/bin/python3 -c "
import sys, numpy as np
a, b = np.load(sys.argv[1]).astype(np.float64), np.load(sys.argv[2]).astype(np.float64)
print('%.2f %.4f' % (10 * np.log10((a * a).sum() / ((a - b) ** 2).sum()) if (a != b).any() else 999,
                     (a.argmax(1) == b.argmax(1)).mean()))" "$1" "$2"
}

check "kiln runs the export" '"$kiln" run "$vit" "$work/torch_input.npy" --out "$work/f32_torch" --batch-dim > /dev/null'
check "the import gives PyTorch's outputs" '/usr/bin/python3 -c "
import numpy as np
a, b = np.load(\"$work/torch_output.npy\"), np.load(\"$work/f32_torch/output.npy\")
assert np.abs(a - b).max() <= 1e-5 * max(1, np.abs(a).max()), np.abs(a - b).max()"'
"$kiln" run "$vit" "$work/x.npy" --out "$work/f32" --batch-dim > /dev/null
/usr/bin/python3 -c "
import numpy as np
np.save('$work/y.npy', np.load('$work/f32/output.npy').argmax(1).astype(np.int64))"

for bits in 8 4; do
    "$kiln" quantize "$vit" --out "$work/q$bits.kiln" --bits "$bits" --weights-only --json > "$work/q$bits.json"
    layers=$(grep -o '"kind":"weight"' "$work/q$bits.json" | wc -l)
    check "int$bits: the 10 Linear weights are quantized (found $layers)" '[ "$layers" -eq 10 ]'
    for w in embed.weight blocks.0.attn.in_proj_weight blocks.0.mlp.0.weight blocks.1.mlp.2.weight head.weight; do
        check "int$bits: $w is one of them" 'grep -q "\"value\":\"$w\"" "$work/q$bits.json"'
    done
    "$kiln" run "$work/q$bits.kiln" "$work/x.npy" --out "$work/q$bits" --batch-dim > /dev/null
    read -r sqnr agree < <(compare "$work/f32/output.npy" "$work/q$bits/output.npy")
    echo "int$bits weights: output SQNR $sqnr dB against f32, top-1 agreement $agree on 64 images"
    floor=$([ "$bits" = 8 ] && echo "35 0.95" || echo "12 0.6")
    check "int$bits: SQNR $sqnr dB and agreement $agree reach $floor" \
        '/usr/bin/python3 -c "import sys; s, a, fs, fa = map(float, sys.argv[1:]); sys.exit(not (s >= fs and a >= fa))" $sqnr $agree $floor'
done

check "kiln prune finds and prunes the weights" \
    '"$kiln" prune "$vit" --data "$work/x.npy,$work/y.npy" --out "$work/p.kiln" --amount 0.5 --no-latency > "$work/prune.txt"'
check "the pruned model exports to ONNX" '"$kiln" convert "$work/p.kiln" "$work/p.onnx" > /dev/null'
check "each of the 10 Linear weights is the file's with its smallest half zeroed" '/usr/bin/python3 - "$vit" "$work/p.onnx" <<"PY"
import sys
import numpy as np
import onnx
from onnx import numpy_helper
def weights(path):
    m = onnx.load(path)
    return {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}, m.graph
orig, graph = weights(sys.argv[1])
pruned, _ = weights(sys.argv[2])
transposed = {n.input[0] for n in graph.node if n.op_type == "Transpose" and n.input[0] in orig}
names = [n for n in orig if n.endswith("weight") and orig[n].ndim == 2]
assert len(names) == 10, names
for name in names:
    w = orig[name]
    p = pruned[name].T if name in transposed else pruned[name]
    assert p.shape == w.shape, (name, p.shape, w.shape)
    kept = p != 0
    assert (p[kept] == w[kept]).all(), name
    assert abs(kept.mean() - 0.5) <= 1 / w.size, (name, kept.mean())
    assert np.abs(w[kept]).min() >= np.abs(w[~kept]).max(), name
print("pruned: 10 weights at 50%%, %d of them stored transposed by the file" % len(transposed & set(names)))
PY'

if cli_onnxruntime_loads; then
    driver=$(bash "$src/bench/build_driver.sh" "$build")
    check "int8 weights export to QDQ ONNX" '"$kiln" convert "$work/q8.kiln" "$work/q8.onnx" > /dev/null'
    for batch in 1 8; do
        check "p.kiln batch $batch agrees with onnxruntime on its export" \
            'bash "$src/bench/compare_one.sh" "$driver" "$work/p.kiln" "$work/p.onnx" $batch "$work"'
    done
    # onnxruntime runs DequantizeLinear -> MatMul as an integer MatMul with activations quantized on the
    # fly (its graph optimizations), about 3e-3 of the outputs away from the dequantized f32 weights: the
    # outputs agree to 1e-2 of their range and the classes of all 64 images agree.
    "$driver" run "$work/q8.kiln" "$work/q8_kiln" "$work/x.npy" > /dev/null
    node "$src/bench/ort_run.js" "$work/q8.onnx" "$work/q8_ort" "$work/x.npy"
    check "q8.kiln agrees with onnxruntime on its QDQ export (64 images)" \
        'node "$src/bench/compare_npy.js" "$work/q8_kiln/output.npy" "$work/q8_ort/output.npy" --rtol 1e-2 --argmax \
             --max-mismatches 0 --label "q8.kiln vs onnxruntime on q8.onnx"'

else
    echo "onnxruntime-node does not load from bench/node_modules: the onnxruntime comparisons are skipped"
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
