#!/usr/bin/env python3
"""A small ONNX model in onnxruntime's "QOperator" and dynamic-quantization forms, for comparing kiln's
integer ops with onnxruntime (tests/cli_onnxruntime.sh): input x (N, 16, 20, 20) f32, outputs

  y = DequantizeLinear(QLinearConv(QLinearConv(QuantizeLinear(x)), stride 2))   (N, 24, 10, 10)
      (int32 bias, per-channel i8 weights, u8 activations)
  z = Cast(MatMulInteger(DynamicQuantizeLinear(x), B)) * (x_scale * b_scale)      (N, 16, 20, 8)
      (u8 weights with zero point 128)

Weights are seeded (numpy default_rng(0)). Run with Debian's interpreter:
  /usr/bin/python3 tests/ref/make_qoperator_onnx.py tests/ref/data/onnx_qoperator.onnx
"""
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def main(path):
    r = np.random.default_rng(0)
    c1, c2, c3 = 16, 32, 24

    def init(name, array):
        return numpy_helper.from_array(array, name)

    inits = [
        init("xs", np.array(0.02, np.float32)), init("xz", np.array(128, np.uint8)),
        init("w1", r.integers(-127, 128, (c2, c1, 3, 3)).astype(np.int8)),
        init("ws1", r.uniform(0.001, 0.004, c2).astype(np.float32)), init("wz1", np.zeros(c2, np.int8)),
        init("ys1", np.array(0.08, np.float32)), init("yz1", np.array(100, np.uint8)),
        init("b1", r.integers(-3000, 3000, c2).astype(np.int32)),
        init("w2", r.integers(-127, 128, (c3, c2, 3, 3)).astype(np.int8)),
        init("ws2", r.uniform(0.001, 0.004, c3).astype(np.float32)), init("wz2", np.zeros(c3, np.int8)),
        init("ys2", np.array(0.1, np.float32)), init("yz2", np.array(90, np.uint8)),
        init("B", r.integers(0, 256, (20, 8)).astype(np.uint8)), init("Bz", np.array(128, np.uint8)),
        init("Bs", np.array(0.01, np.float32)),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
        helper.make_node("QLinearConv", ["xq", "xs", "xz", "w1", "ws1", "wz1", "ys1", "yz1", "b1"], ["h"],
                         pads=[1, 1, 1, 1]),
        helper.make_node("QLinearConv", ["h", "ys1", "yz1", "w2", "ws2", "wz2", "ys2", "yz2"], ["yq"],
                         pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("DequantizeLinear", ["yq", "ys2", "yz2"], ["y"]),
        helper.make_node("DynamicQuantizeLinear", ["x"], ["dq", "dq_scale", "dq_zero"]),
        helper.make_node("MatMulInteger", ["dq", "B", "dq_zero", "Bz"], ["sums"]),
        helper.make_node("Cast", ["sums"], ["sums_f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["dq_scale", "Bs"], ["zs"]),
        helper.make_node("Mul", ["sums_f", "zs"], ["z"]),
    ]
    graph = helper.make_graph(
        nodes, "qoperator", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", c1, 20, 20])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", c3, 10, 10]),
         helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", c1, 20, 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)


if __name__ == "__main__":
    main(sys.argv[1])
