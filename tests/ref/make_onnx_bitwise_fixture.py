#!/usr/bin/python3
"""tests/ref/data/bitwise.onnx, for tests/cli_onnx_opset18.sh: opset-18 BitwiseAnd / BitwiseOr / BitwiseXor
of a (3, 4) i32 and a broadcast (4) i32, and BitwiseNot of a (5) u8, written with onnx.helper (python3-onnx
1.12 predates the ops, so the model is not checked). bitwise_{a,b,c}.npy are the inputs and
bitwise_{and,or,xor,not}.npy numpy's np.bitwise_and / _or / _xor / np.invert of them.

usage: /usr/bin/python3 tests/ref/make_onnx_bitwise_fixture.py [OUT_DIR]   (default tests/ref/data)
"""
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
    i32, u8 = TensorProto.INT32, TensorProto.UINT8
    graph = helper.make_graph(
        [helper.make_node("BitwiseAnd", ["a", "b"], ["and"]), helper.make_node("BitwiseOr", ["a", "b"], ["or"]),
         helper.make_node("BitwiseXor", ["a", "b"], ["xor"]), helper.make_node("BitwiseNot", ["c"], ["not"])],
        "bitwise",
        [helper.make_tensor_value_info("a", i32, [3, 4]), helper.make_tensor_value_info("b", i32, [4]),
         helper.make_tensor_value_info("c", u8, [5])],
        [helper.make_tensor_value_info(n, i32, [3, 4]) for n in ("and", "or", "xor")] +
        [helper.make_tensor_value_info("not", u8, [5])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), os.path.join(out, "bitwise.onnx"))
    rng = np.random.default_rng(18)
    a = rng.integers(-2**31, 2**31, (3, 4), dtype=np.int64).astype(np.int32)
    b = np.array([-1, 0, 0x0F0F0F0F, -2**31], np.int32)
    c = np.array([0, 1, 127, 128, 255], np.uint8)
    for name, v in [("a", a), ("b", b), ("c", c), ("and", np.bitwise_and(a, b)), ("or", np.bitwise_or(a, b)),
                    ("xor", np.bitwise_xor(a, b)), ("not", np.invert(c))]:
        np.save(os.path.join(out, "bitwise_%s.npy" % name), v)


if __name__ == "__main__":
    main()
