#!/usr/bin/python3
"""ONNX models for `kiln run` inputs that are not batches, for tests/cli_onnx_shapes.sh (written with
onnx.helper; the expected outputs are numpy's):

- scalar_clip.onnx: y = Clip(x (N, 4) f32, lo () f32, hi () f32), opset 13: the bounds are 0-d inputs,
  each given as one 0-d .npy (scalar_clip_lo.npy, scalar_clip_hi.npy), which is the whole input and no
  batch. scalar_clip_x.npy is a batch of 3; scalar_clip_y.npy numpy's np.clip.
- constant_only.onnx: no inputs; y = Constant (2, 3) f32 (constant_only_y.npy): `kiln run` with no files.

usage: /usr/bin/python3 tests/ref/make_onnx_scalar_fixtures.py [OUT_DIR]   (default tests/ref/data)
"""
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper


def scalar_clip():
    f32 = TensorProto.FLOAT
    graph = helper.make_graph(
        [helper.make_node("Clip", ["x", "lo", "hi"], ["y"])], "scalar_clip",
        [helper.make_tensor_value_info("x", f32, ["N", 4]), helper.make_tensor_value_info("lo", f32, []),
         helper.make_tensor_value_info("hi", f32, [])],
        [helper.make_tensor_value_info("y", f32, ["N", 4])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def constant_only(value):
    graph = helper.make_graph(
        [helper.make_node("Constant", [], ["y"], value=helper.make_tensor("v", TensorProto.FLOAT, value.shape,
                                                                          value.ravel().tolist()))],
        "constant_only", [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(value.shape))])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
    rng = np.random.default_rng(8)
    x = rng.standard_normal((3, 4)).astype(np.float32)
    lo, hi = np.array(-0.5, np.float32), np.array(0.75, np.float32)
    onnx.save(scalar_clip(), os.path.join(out, "scalar_clip.onnx"))
    for name, a in [("x", x), ("lo", lo), ("hi", hi), ("y", np.clip(x, lo, hi))]:
        np.save(os.path.join(out, "scalar_clip_%s.npy" % name), a)
    value = np.arange(6, dtype=np.float32).reshape(2, 3) / 4
    onnx.save(constant_only(value), os.path.join(out, "constant_only.onnx"))
    np.save(os.path.join(out, "constant_only_y.npy"), value)


if __name__ == "__main__":
    main()
