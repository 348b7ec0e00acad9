#!/usr/bin/env bash
# Writes the seed corpora of the fuzz targets into tests/fuzz/corpus/<target>/: small valid inputs made
# with kiln itself and /usr/bin/python3 (numpy), so that every seed is reproducible. Usage, after a build:
#   bash tests/fuzz/make_seeds.sh build/kiln
set -euo pipefail
kiln=$(realpath "$1")
cd "$(dirname "$0")"
rm -rf corpus
mkdir -p corpus/{spec,kiln_file,checkpoint,onnx_import,csv,idx,npy,image}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cat > corpus/spec/mlp.txt <<'SPEC'
input 4
dense 8
relu
dropout 0.1
dense 3
SPEC
cat > corpus/spec/cnn.txt <<'SPEC'
input 1 12 12   # C H W
conv 4 3 pad=1
batchnorm
relu
maxpool 2
conv 4 3 stride=2 groups=2 dilation=1 bias=0
avgpool 2 stride=1
flatten
dense 3
softmax
SPEC
cat > corpus/spec/vit.txt <<'SPEC'
input 1 8 8
patchify 4
dense 8
transformer 8 2 16
layernorm
meanpool
dense 3
SPEC
cat > corpus/spec/residual.txt <<'SPEC'
input 2 6 6
conv 2 3 pad=1
residual
conv 2 3 pad=1
leakyrelu=0.1
end
globalavgpool
flatten
gelu
dense 2
sigmoid
SPEC
for s in mlp cnn vit residual; do
    "$kiln" convert "corpus/spec/$s.txt" "corpus/kiln_file/$s.kiln" > /dev/null
    "$kiln" convert "corpus/spec/$s.txt" "corpus/onnx_import/$s.onnx" > /dev/null
done
cp ../ref/data/strings.onnx corpus/onnx_import/ # STRING inputs, outputs, initializer, Constant and Casts

/usr/bin/python3 - "$work" <<'PY'
import gzip, os, struct, sys
import numpy as np
work = sys.argv[1]
rng = np.random.default_rng(0)
# CSV: numeric targets, class names, a quoted field, an empty cell.
open("corpus/csv/numeric.csv", "w").write("a,b,c,label\n1,2,3,0\n4.5,-6,7e-3,1\n0,0,0,2\n")
open("corpus/csv/names.csv", "w").write('x,"y z",species\n0.1,0.2,setosa\n0.3,,virginica\n-1,2,setosa\n')
open(os.path.join(work, "train.csv"), "w").write("f1,f2,f3,f4,label\n" +
    "".join(f"{a:.3f},{b:.3f},{c:.3f},{d:.3f},{i % 3}\n" for i, (a, b, c, d) in enumerate(rng.random((12, 4)))))
# IDX: the first byte says where the images file ends (in 256ths of the rest).
images = struct.pack(">IIII", 0x803, 3, 4, 4) + bytes(rng.integers(0, 256, 48, dtype=np.uint8))
labels = struct.pack(">II", 0x801, 3) + bytes([0, 1, 2])
split = (len(images) * 256 + len(images + labels) - 1) // len(images + labels)
open("corpus/idx/three.bin", "wb").write(bytes([split]) + images + labels)
open("corpus/idx/gzip.bin", "wb").write(bytes([200]) + gzip.compress(images) + labels)
# NPY: the same split byte, then X.npy and Y.npy.
def npy(a):
    import io
    b = io.BytesIO()
    np.save(b, a)
    return b.getvalue()
for name, x, y in [("f32_i64", rng.random((3, 4)).astype(np.float32), np.array([0, 1, 2])),
                   ("f64_f32", rng.random((2, 2, 2)), rng.random((2, 1)).astype(np.float32)),
                   ("u8_u8", rng.integers(0, 255, (4, 3), dtype=np.uint8), np.array([1, 0, 1, 0], np.uint8)),
                   ("text", np.array([["1.5", "\u00e9t\u00e9"], ["", "NaN"]]), np.array([b"ab", b"c"]))]:
    xb, yb = npy(x), npy(y)
    split = (len(xb) * 256 + len(xb + yb) - 1) // len(xb + yb)
    open(f"corpus/npy/{name}.bin", "wb").write(bytes([split]) + xb + yb)
PY
"$kiln" train --model corpus/spec/mlp.txt --data "$work/train.csv" --epochs 1 --batch 4 \
    --out "$work/mlp.kiln" --quiet > /dev/null
cp "$work/mlp.kiln.ckpt" corpus/checkpoint/mlp_adam.ckpt
"$kiln" train --model corpus/spec/mlp.txt --data "$work/train.csv" --epochs 1 --batch 4 --optimizer sgd \
    --momentum 0.9 --out "$work/sgd.kiln" --quiet > /dev/null
cp "$work/sgd.kiln.ckpt" corpus/checkpoint/mlp_sgd.ckpt
cp ../data/fmnist_test_2_trouser.png corpus/image/
echo "seeds: $(find corpus -type f | wc -l) files, $(du -sh corpus | cut -f1)"
