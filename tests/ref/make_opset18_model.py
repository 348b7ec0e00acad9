#!/usr/bin/python3
"""Writes tests/ref/data/opset18.onnx: a hand-written opset-18 model (python3-torch 1.13 exports only up to
17) using the forms opset 18 introduced: ReduceMean / ReduceMax / ReduceLogSumExp with axes as an input,
Split with num_outputs (7 into 3, 3, 1), Pad with an axes input, and Resize with axes and
keep_aspect_ratio_policy = not_larger. Input x is (N, 3, 7, 4) with an open batch N. Also writes
opset18_x.npy, a seeded input of batch 2. The expected outputs are onnxruntime's (tests/cli_onnx_opset18.sh
writes them with bench/ort_run.js when they are missing, and compares kiln with them and with a fresh
onnxruntime run when onnxruntime-node is installed).

usage: /usr/bin/python3 tests/ref/make_opset18_model.py [OUT_DIR]   (default tests/ref/data)
       /usr/bin/python3 tests/ref/make_opset18_model.py --bundle OUT_DIR
           packs opset18_x.npy and opset18_ort_*.npy into opset18_ort.bin for tests/test_onnx_opset18.c:
           records of (u32 name length, name, u32 ndim, i64 dims, f32 data), tests/support/fixture.h
"""
import struct
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper


def build():
    f32, i64 = TensorProto.FLOAT, TensorProto.INT64
    inits = [
        helper.make_tensor("axes_h", i64, [1], [-2]),
        helper.make_tensor("axes_c", i64, [1], [1]),
        helper.make_tensor("axes_w", i64, [1], [3]),
        helper.make_tensor("pads_w", i64, [2], [1, 2]),
        helper.make_tensor("pad_value", f32, [], [0.5]),
        helper.make_tensor("sizes_hw", i64, [2], [5, 20]),
    ]
    nodes = [
        helper.make_node("ReduceMean", ["x", "axes_h"], ["mean_h"], keepdims=1),
        helper.make_node("Split", ["x"], ["s0", "s1", "s2"], axis=2, num_outputs=3),
        helper.make_node("Pad", ["s0", "pads_w", "pad_value", "axes_w"], ["padded"], mode="constant"),
        helper.make_node("Resize", ["padded", "", "", "sizes_hw"], ["resized"], mode="linear",
                         axes=[2, 3], keep_aspect_ratio_policy="not_larger"),
        helper.make_node("ReduceMax", ["s2", "axes_c"], ["max_c"], keepdims=0),
        helper.make_node("ReduceLogSumExp", ["s1", "axes_w"], ["lse_w"], keepdims=1),
    ]
    graph = helper.make_graph(
        nodes, "opset18", [helper.make_tensor_value_info("x", f32, ["N", 3, 7, 4])],
        [helper.make_tensor_value_info("mean_h", f32, ["N", 3, 1, 4]),
         helper.make_tensor_value_info("resized", f32, ["N", 3, 5, 12]),
         helper.make_tensor_value_info("max_c", f32, ["N", 1, 4]),
         helper.make_tensor_value_info("lse_w", f32, ["N", 3, 3, 1])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)],
                              producer_name="kiln tests/ref/make_opset18_model.py")
    model.ir_version = 8
    return model


OUTPUTS = ["mean_h", "resized", "max_c", "lse_w"]


def bundle(out):
    with open(os.path.join(out, "opset18_ort.bin"), "wb") as f:
        for name, file in [("x", "opset18_x.npy")] + [(n, "opset18_ort_%s.npy" % n) for n in OUTPUTS]:
            a = np.load(os.path.join(out, file)).astype("<f4")
            raw = name.encode()
            f.write(struct.pack("<I", len(raw)) + raw + struct.pack("<I", a.ndim))
            f.write(struct.pack("<%dq" % a.ndim, *a.shape) + a.tobytes())


def main():
    if len(sys.argv) > 2 and sys.argv[1] == "--bundle":
        bundle(sys.argv[2])
        return
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "data")
    if not hasattr(onnx, "load") or not hasattr(helper, "make_model"):
        sys.exit("python3-onnx (onnx.helper) is required")
    with open(os.path.join(out, "opset18.onnx"), "wb") as f:
        f.write(build().SerializeToString())
    x = np.random.default_rng(18).standard_normal((2, 3, 7, 4)).astype(np.float32)
    np.save(os.path.join(out, "opset18_x.npy"), x)


if __name__ == "__main__":
    main()
