#!/usr/bin/env bash
# String tensors through kiln run: text .npy files (numpy's <U and |S arrays) in, text .npy files out, with
# tests/ref/data/strings_run.onnx (tests/ref/make_string_fixtures.py: t -> Cast to float -> num -> Cast to
# string -> text; w -> Identity -> words). Outputs are held to numpy (astype, ONNX's reference Cast).
# Hostile text files get one clear error each; a .kiln conversion is refused by name, an ONNX one keeps
# the strings; kiln info and kiln bench take the model.
source "$(dirname "$0")/support/cli_common.sh" "$@"
data=$src/tests/ref/data
model=$data/strings_run.onnx

/usr/bin/python3 - "$work" <<'PY'
import sys, numpy as np
w = sys.argv[1]
np.save(w + "/t.npy", np.array(["1.5", " -2e3 ", "NaN", "1e-5"], dtype=np.str_))
words = ["a string of more than thirty-two bytes: \u00e9t\u00e9 \u65e5\u672c \U0001f600", "", "x", "\u00fc"]
np.save(w + "/w.npy", np.array(words, dtype=np.str_))
np.save(w + "/w_bytes.npy", np.array([b"ab", b"\xff\xfe", b"", b"c"], dtype="S2"))
np.save(w + "/t_bad.npy", np.array(["1", "two", "3", "4"], dtype=np.str_))
np.save(w + "/f.npy", np.array([1, 2, 3, 4], dtype=np.float32))
PY

check "kiln run takes text .npy inputs" \
    '"$kiln" run "$model" "t=$work/t.npy" "w=$work/w.npy" --batch-dim --out "$work/out" > "$work/run.txt"'
check "the outputs are numpy's Cast (astype) and the strings moved as they were" '/usr/bin/python3 - "$work" <<PY
import sys, numpy as np
w = sys.argv[1]
t, words = np.load(w + "/t.npy"), np.load(w + "/w.npy")
num, text, moved = (np.load(w + "/out/%s.npy" % n) for n in ("num", "text", "words"))
want = t.astype(np.float32)
assert num.dtype == np.float32 and np.array_equal(num, want, equal_nan=True), num
assert text.dtype.kind == "U" and text.tolist() == want.astype(np.str_).tolist(), text
assert moved.dtype == words.dtype and moved.tolist() == words.tolist(), moved
PY'
check "kiln run prints the string output" 'grep -q "output .text. (4) string" "$work/run.txt"'
check "kiln info and kiln bench take a string model (bench feeds \"0\" text)" \
    '"$kiln" info "$model" | grep -q "t (N) string" && "$kiln" bench "$model" --iters 3 --warmup 1 >/dev/null'

check "bytes (|S) input, non-UTF-8 output written as |S" \
    '"$kiln" run "$model" "t=$work/t.npy" "w=$work/w_bytes.npy" --batch-dim --out "$work/bytes" >/dev/null &&
     /usr/bin/python3 -c "import sys, numpy as np; a = np.load(sys.argv[1]); b = np.load(sys.argv[2])
assert a.dtype.kind == \"S\" and a.tolist() == b.tolist(), (a, b)" "$work/bytes/words.npy" "$work/w_bytes.npy"'

"$kiln" run "$model" "t=$work/t_bad.npy" "w=$work/w.npy" --batch-dim > "$work/bad.txt" 2>&1
check "text that is no number: one error naming it" \
    '[ $? -ne 0 ] && [ "$(wc -l < "$work/bad.txt")" -eq 1 ] && grep -q "element 1, \"two\", is not a number" "$work/bad.txt"'
"$kiln" run "$model" "t=$work/f.npy" "w=$work/w.npy" --batch-dim > "$work/dtype.txt" 2>&1
check "numbers for a string input: one error" \
    '[ $? -ne 0 ] && [ "$(wc -l < "$work/dtype.txt")" -eq 1 ] && grep -q "is string, got f32 data" "$work/dtype.txt"'

# Hostile text arrays: a header and data written by hand.
hostile() { # NAME DESCR SHAPE DATA_PYTHON_BYTES
    /usr/bin/python3 - "$work/$1.npy" "$2" "$3" "$4" <<'PY'
import sys
path, descr, shape, data = sys.argv[1], sys.argv[2], sys.argv[3], eval(sys.argv[4])
header = "{'descr': '%s', 'fortran_order': False, 'shape': %s, }" % (descr, shape)
header += " " * (63 - (10 + len(header)) % 64) + "\n"
open(path, "wb").write(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode() + data)
PY
}
hostile nul "<U2" "(4,)" 'b"a\0\0\0" + b"\0\0\0\0" + b"\0\0\0\0b\0\0\0" + b"c\0\0\0" * 2 + b"d\0\0\0" * 2'
hostile surrogate "<U1" "(4,)" 'b"a\0\0\0" + b"\x00\xd8\0\0" + b"b\0\0\0" * 2'
hostile toobig "<U1" "(4,)" 'b"a\0\0\0" + b"\0\0\x11\0" + b"b\0\0\0" * 2'
hostile wide "<U99999999" "(4,)" 'b""'
hostile short "<U3" "(4,)" 'b"a\0\0\0" * 5'
hostile huge "<U1048576" "(576460752303423488,)" 'b""'
for case in "nul:holds a NUL character" "surrogate:U+D800, which is no Unicode character" \
            "toobig:U+110000, which is no Unicode character" "wide:is not supported" "short:truncated" "huge:data size overflows"; do
    name=${case%%:*} message=${case#*:}
    "$kiln" run "$model" "t=$work/t.npy" "w=$work/$name.npy" --batch-dim > "$work/$name.txt" 2>&1
    check "hostile text array '$name': one clear error" \
        '[ $? -ne 0 ] && [ "$(wc -l < "$work/$name.txt")" -eq 1 ] && grep -qF "$message" "$work/$name.txt"'
done

"$kiln" convert "$model" "$work/m.kiln" > "$work/convert.txt" 2>&1
check ".kiln refuses strings by name, and writes no file" \
    '[ $? -ne 0 ] && grep -q "string tensor: .kiln files do not store strings" "$work/convert.txt" && [ ! -e "$work/m.kiln" ]'
check "an ONNX conversion keeps them and runs the same" \
    '"$kiln" convert "$model" "$work/m.onnx" >/dev/null &&
     "$kiln" run "$work/m.onnx" "t=$work/t.npy" "w=$work/w.npy" --batch-dim --out "$work/again" >/dev/null &&
     cmp "$work/out/text.npy" "$work/again/text.npy" && cmp "$work/out/words.npy" "$work/again/words.npy"'

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
