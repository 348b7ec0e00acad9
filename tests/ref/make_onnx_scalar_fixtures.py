#!/usr/bin/python3
"""ONNX models for `kiln run` inputs that are not batches, for tests/cli_onnx_shapes.sh (written with
onnx.helper; the expected outputs are numpy's):

- scalar_clip.onnx: y = Clip(x (N, 4) f32, lo () f32, hi () f32), opset 13: the bounds are 0-d inputs,
  each given as one 0-d .npy (scalar_clip_lo.npy, scalar_clip_hi.npy), which is the whole input and no
  batch. scalar_clip_x.npy is a batch of 3; scalar_clip_y.npy numpy's np.clip.
- constant_only.onnx: no inputs; y = Constant (2, 3) f32 (constant_only_y.npy): `kiln run` with no files.
- topk_onehot.onnx: values, indices = TopK(x (N, 5) f32, k (1) i64, axis 1), and
  hot = OneHot(classes (N) i64, depth () i64, [0, 1] f32): outputs sized by input values (a
  data-dependent session). topk_onehot_{x,k,classes,depth}.npy and numpy's expected
  topk_onehot_{values,indices,hot}.npy (np.argsort, stable, of -x).

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


def topk_onehot():
    f32, i64 = TensorProto.FLOAT, TensorProto.INT64
    graph = helper.make_graph(
        [helper.make_node("TopK", ["x", "k"], ["values", "indices"], axis=1),
         helper.make_node("OneHot", ["classes", "depth", "off_on"], ["hot"])], "topk_onehot",
        [helper.make_tensor_value_info("x", f32, ["N", 5]), helper.make_tensor_value_info("k", i64, [1]),
         helper.make_tensor_value_info("classes", i64, ["N"]), helper.make_tensor_value_info("depth", i64, [])],
        [helper.make_tensor_value_info("values", f32, None), helper.make_tensor_value_info("indices", i64, None),
         helper.make_tensor_value_info("hot", f32, None)],
        [helper.make_tensor("off_on", f32, [2], [0.0, 1.0])])
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
    onnx.save(topk_onehot(), os.path.join(out, "topk_onehot.onnx"))
    x = np.array([[3, 1, 4, 1, 5], [9, 2, 6, 5, 3], [5, 8, 9, 7, 9]], np.float32)
    k, classes, depth = np.array([3], np.int64), np.array([2, 0, -1], np.int64), np.array(4, np.int64)
    indices = np.argsort(-x, axis=1, kind="stable")[:, :3]
    hot = np.eye(4, dtype=np.float32)[classes % 4]
    for name, a in [("x", x), ("k", k), ("classes", classes), ("depth", depth),
                    ("values", np.take_along_axis(x, indices, axis=1)), ("indices", indices), ("hot", hot)]:
        np.save(os.path.join(out, "topk_onehot_%s.npy" % name), a)


if __name__ == "__main__":
    main()
