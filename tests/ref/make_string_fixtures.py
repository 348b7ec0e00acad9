#!/usr/bin/python3
"""Writes the string-tensor fixtures of tests/test_strings.c and tests/cli_strings.sh into tests/ref/data:

strings.onnx (opset 17): Cast between STRING and numbers, string data movement and string constants.
  inputs  x_f32 (n), x_f64 (n), x_f16 (n), x_i64 (n), x_bool (n): numbers, each cast to STRING
          -> outputs s_f32, s_f64, s_f16, s_i64, s_bool
          t_f32 (m), t_f64 (m), t_i64 (m), t_bool (m): STRING, cast to that type
          -> outputs n_f32, n_f64, n_i64, n_bool
          text (2, k): STRING -> Reshape to (2k) -> Identity -> output moved
  initializer words (3) STRING: a long UTF-8 string, a short one, an empty one -> Identity -> output words
  Constant num_text = "2.5" (STRING) -> Cast to FLOAT -> output const_num
strings_cast.txt: the cases, one per line, tab-separated:
  to    TYPE  VALUE  EXPECTED      VALUE a number of TYPE (floats as the hex of their bits), EXPECTED its text
  from  TYPE  TEXT   EXPECTED      EXPECTED the number TEXT becomes (floats as hex bits, bool 0/1)
The oracle is ONNX's reference for Cast (onnx.reference's Cast is numpy's astype): numpy's str() of each
number (shortest round-trip digits), numpy's parse of each text to a float (correctly rounded); to an
integer, an integer text is exact and another one truncates its float value (as C and numpy's float to
int); to bool, "True"/"False" in any case or a number's x != 0. Written with python3-numpy 1.24 and
python3-onnx of Debian.
strings_add.onnx: Add of two STRING inputs, which kiln refuses (ONNX's Add takes no strings either; the
  file skips onnx.checker).
strings_run.onnx: for kiln run (tests/cli_strings.sh): input t (n) STRING -> Cast to FLOAT -> output num ->
  Cast to STRING -> output text; input w (n) STRING -> Identity -> output words.
strings_in.npy: a (3,) '<U' array for kiln run (input t_f32 of strings.onnx, ... see cli_strings.sh).

usage: /usr/bin/python3 tests/ref/make_string_fixtures.py [OUT_DIR]   (default tests/ref/data)
"""
import os
import struct
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper

LONG = "a string longer than kiln keeps in place: \u00e9t\u00e9, \u65e5\u672c, \U0001f600 and more"

F32_VALUES = [0.0, -0.0, 1.0, 100.0, 1e-4, 9.9999e-5, 1e-5, 1.5e-7, 1e16, 9999999999999998.0, 1.2345e16,
              123456789.0, 3.4028235e38, -3.4028235e38, 1.4e-45, float("nan"), float("inf"), float("-inf"),
              0.1, 16777216.0, -2.5, 0.9767611, 0.039187793, 5e-5, 12345.678, 1e15, 33554432.0]
F64_VALUES = [0.0, -0.0, 1e16, 1e15, 0.1, 2.2250738585072014e-308, -1.7976931348623157e308, 5e-324,
              123456.789, 1.0 / 3.0, float("nan"), float("-inf"), 9007199254740993.0, 0.30000000000000004]
F16_VALUES = [0.1, 65504.0, -0.0, 6e-8, 0.333, 1000.0, 1e-4, float("inf")]
I64_VALUES = [0, -1, 7, 9223372036854775807, -9223372036854775808, 1000000]
BOOL_VALUES = [True, False, True]

TEXT_F32 = ["3.14", "1000", "1e-5", "1E8", " 2.5 ", "+INF", "INF", "-INF", "NaN", "inf", "-Infinity", "nan",
            "0.47892547", "-0", "1e39", "1e-46", "16777217", "0.1", "+7", "  42"]
TEXT_F64 = ["3.14", "1e308", "2.2250738585072014e-308", "0.1", "-INF", "NaN", "9007199254740993"]
TEXT_I64 = ["100.5", "-7", "9223372036854775807", "-9223372036854775808", "1e3", "-2.9", " 12 ", "+5", "0"]
TEXT_BOOL = ["True", "false", "TRUE", "1", "0", "0.0", "2.5", "-1"]


def f32_hex(v):
    return "%08x" % struct.unpack("<I", struct.pack("<f", v))[0]


def f64_hex(v):
    return "%016x" % struct.unpack("<Q", struct.pack("<d", v))[0]


def f16_hex(v):
    return "%04x" % int(np.array([v], dtype=np.float16).view(np.uint16)[0])


def to_int(text):
    s = text.strip()
    try:
        return int(s, 10)
    except ValueError:
        return int(float(s))  # truncation toward zero, as the float-to-integer Cast


def to_bool(text):
    s = text.strip()
    if s.lower() in ("true", "false"):
        return int(s.lower() == "true")
    return int(float(s) != 0)


def cases():
    lines = []
    for v in F32_VALUES:
        x = np.array([v], dtype=np.float32)
        lines.append(("to", "f32", f32_hex(x[0]), x.astype(np.str_)[0]))
    for v in F64_VALUES:
        x = np.array([v], dtype=np.float64)
        lines.append(("to", "f64", f64_hex(x[0]), x.astype(np.str_)[0]))
    for v in F16_VALUES:
        x = np.array([v], dtype=np.float16)
        lines.append(("to", "f16", f16_hex(x[0]), x.astype(np.str_)[0]))
    for v in I64_VALUES:
        lines.append(("to", "i64", str(v), np.array([v], dtype=np.int64).astype(np.str_)[0]))
    for v in BOOL_VALUES:
        lines.append(("to", "bool", str(int(v)), np.array([v]).astype(np.str_)[0]))
    for t in TEXT_F32:
        lines.append(("from", "f32", t, f32_hex(np.array([t]).astype(np.float32)[0])))
    for t in TEXT_F64:
        lines.append(("from", "f64", t, f64_hex(np.array([t]).astype(np.float64)[0])))
    for t in TEXT_I64:
        lines.append(("from", "i64", t, str(to_int(t))))
    for t in TEXT_BOOL:
        lines.append(("from", "bool", t, str(to_bool(t))))
    return lines


def build():
    S = TensorProto.STRING
    types = {"f32": TensorProto.FLOAT, "f64": TensorProto.DOUBLE, "f16": TensorProto.FLOAT16,
             "i64": TensorProto.INT64, "bool": TensorProto.BOOL}
    inputs, outputs, nodes = [], [], []
    for name in ("f32", "f64", "f16", "i64", "bool"):
        inputs.append(helper.make_tensor_value_info("x_" + name, types[name], ["n_" + name]))
        outputs.append(helper.make_tensor_value_info("s_" + name, S, ["n_" + name]))
        nodes.append(helper.make_node("Cast", ["x_" + name], ["s_" + name], to=S))
    for name in ("f32", "f64", "i64", "bool"):
        inputs.append(helper.make_tensor_value_info("t_" + name, S, ["m_" + name]))
        outputs.append(helper.make_tensor_value_info("n_" + name, types[name], ["m_" + name]))
        nodes.append(helper.make_node("Cast", ["t_" + name], ["n_" + name], to=types[name]))
    inputs.append(helper.make_tensor_value_info("text", S, [2, "k"]))
    outputs.append(helper.make_tensor_value_info("moved", S, [None]))
    nodes += [helper.make_node("Reshape", ["text", "flat"], ["flat_text"]),
              helper.make_node("Identity", ["flat_text"], ["moved"])]
    words = helper.make_tensor("words", S, [3], [LONG.encode(), b"short", b""])
    outputs.append(helper.make_tensor_value_info("words_out", S, [3]))
    nodes.append(helper.make_node("Identity", ["words"], ["words_out"]))
    nodes.append(helper.make_node("Constant", [], ["num_text"],
                                  value=helper.make_tensor("v", S, [], [b"2.5"])))
    outputs.append(helper.make_tensor_value_info("const_num", TensorProto.FLOAT, []))
    nodes.append(helper.make_node("Cast", ["num_text"], ["const_num"], to=TensorProto.FLOAT))
    inits = [words, helper.make_tensor("flat", TensorProto.INT64, [1], [-1])]
    graph = helper.make_graph(nodes, "strings", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="kiln-tests")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def build_add():
    S = TensorProto.STRING
    graph = helper.make_graph([helper.make_node("Add", ["a", "b"], ["c"])], "strings_add",
                              [helper.make_tensor_value_info(n, S, [2]) for n in ("a", "b")],
                              [helper.make_tensor_value_info("c", S, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="kiln-tests")
    model.ir_version = 8
    return model


def build_run():
    S, F = TensorProto.STRING, TensorProto.FLOAT
    nodes = [helper.make_node("Cast", ["t"], ["num"], to=F), helper.make_node("Cast", ["num"], ["text"], to=S),
             helper.make_node("Identity", ["w"], ["words"])]
    graph = helper.make_graph(nodes, "strings_run",
                              [helper.make_tensor_value_info(n, S, ["n"]) for n in ("t", "w")],
                              [helper.make_tensor_value_info("num", F, ["n"]),
                               helper.make_tensor_value_info("text", S, ["n"]),
                               helper.make_tensor_value_info("words", S, ["n"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="kiln-tests")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "data")
    onnx.save(build(), os.path.join(out, "strings.onnx"))
    onnx.save(build_add(), os.path.join(out, "strings_add.onnx"))
    onnx.save(build_run(), os.path.join(out, "strings_run.onnx"))
    with open(os.path.join(out, "strings_cast.txt"), "w") as f:
        f.write("# tests/ref/make_string_fixtures.py: numpy %s astype (see there)\n" % np.__version__)
        for line in cases():
            assert all("\t" not in part and "\n" not in part for part in line)
            f.write("\t".join(line) + "\n")
    np.save(os.path.join(out, "strings_in.npy"), np.array(["1.5", " -2e3 ", "NaN"], dtype=np.str_))


if __name__ == "__main__":
    main()
