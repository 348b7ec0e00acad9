#!/usr/bin/python3
"""Writes tests/ref/data/dynamic_shapes.onnx and dynamic_shapes.bin for tests/test_dynamic_shapes.c: a small
opset-13 graph whose shapes follow the values of its input, through ops that size their outputs when they
run (kiln's kn_op.sizes_at_run), with ops after them that must be shaped and planned from what they gave:

  x (N, 5) f32
  nz     = NonZero(x > 0.5)                       (2, k)
  vals   = GatherND(x, Transpose(nz))             (k,)    -> "doubled" = vals * 2, "total" = ReduceSum(vals)
  "count" = Cast(Shape(vals), f32)                (1,)
  rows, row_counts = Unique(Gather(nz, 0))        the distinct rows holding such an element, and how many
  "kept_mean" = ReduceMean(Compress(x, ReduceMax(x, axis 1) > 0.8, axis 0), axis 1)
                                                  a Compress whose condition is computed in the run

Also writes run_values.onnx and run_values.bin: shapes that follow values computed in the run (stages in
kiln's session) rather than an op's output shape:

  x (N, 4) f32, n = Cast(Floor(ReduceMax(x)), i64)
  "ramp"  = Cast(Range(0, n, 1), f32) * 0.5          (n,)
  "ones"  = ConstantOfShape(Unsqueeze(n), 1.0)      (n,)
  "tri"   = Cast(Range(0, Cast(Floor(ReduceSum(x)), i64), 1), f32)   a second stage: its size is
                                                     computed after the first stage's node
  "top"   = TopK(Flatten(x, 0), Unsqueeze(Min(n, 4)))            the largest min(n, 4) elements

The expected outputs are numpy's (the oracle), for several inputs: batches 4 and 6, one with no element
above 0.5 (k = 0), and one repeated (the test checks that the run then plans nothing new). The bundle holds
records of (u32 name length, name, u32 ndim, i64 dims, f32 data) (tests/support/fixture.h): x<i> and
<output><i> for each case i; the integer outputs are cast to f32 in the graph.

usage: /usr/bin/python3 tests/ref/make_onnx_dynamic_fixture.py [OUT_DIR]   (default tests/ref/data)
"""
import os
import struct
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper

OUTPUTS = ["doubled", "total", "count", "rows", "row_counts", "kept_mean"]


def build():
    f32, i64 = TensorProto.FLOAT, TensorProto.INT64
    inits = [
        helper.make_tensor("half", f32, [], [0.5]),
        helper.make_tensor("point8", f32, [], [0.8]),
        helper.make_tensor("two", f32, [], [2.0]),
        helper.make_tensor("zero", i64, [], [0]),
    ]
    nodes = [
        helper.make_node("Greater", ["x", "half"], ["mask"]),
        helper.make_node("NonZero", ["mask"], ["nz"]),
        helper.make_node("Transpose", ["nz"], ["nz_t"], perm=[1, 0]),
        helper.make_node("GatherND", ["x", "nz_t"], ["vals"]),
        helper.make_node("Mul", ["vals", "two"], ["doubled"]),
        helper.make_node("ReduceSum", ["vals"], ["total"], keepdims=0),
        helper.make_node("Shape", ["vals"], ["k"]),
        helper.make_node("Cast", ["k"], ["count"], to=f32),
        helper.make_node("Gather", ["nz", "zero"], ["row_of"], axis=0),
        helper.make_node("Unique", ["row_of"], ["rows_i", "", "", "row_counts_i"]),
        helper.make_node("Cast", ["rows_i"], ["rows"], to=f32),
        helper.make_node("Cast", ["row_counts_i"], ["row_counts"], to=f32),
        helper.make_node("ReduceMax", ["x"], ["row_max"], axes=[1], keepdims=0),
        helper.make_node("Greater", ["row_max", "point8"], ["keep"]),
        helper.make_node("Compress", ["x", "keep"], ["kept"], axis=0),
        helper.make_node("ReduceMean", ["kept"], ["kept_mean"], axes=[1], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes, "dynamic_shapes", [helper.make_tensor_value_info("x", f32, ["N", 5])],
        [helper.make_tensor_value_info("doubled", f32, ["k"]),
         helper.make_tensor_value_info("total", f32, []),
         helper.make_tensor_value_info("count", f32, [1]),
         helper.make_tensor_value_info("rows", f32, ["r"]),
         helper.make_tensor_value_info("row_counts", f32, ["r"]),
         helper.make_tensor_value_info("kept_mean", f32, ["m"])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                              producer_name="kiln tests/ref/make_onnx_dynamic_fixture.py")
    model.ir_version = 7
    return model


def expected(x):
    nz = np.array(np.nonzero(x > 0.5), dtype=np.int64)
    vals = x[tuple(nz)]
    rows, counts = np.unique(nz[0], return_counts=True)
    kept = np.compress(x.max(axis=1) > 0.8, x, axis=0)
    return {"doubled": vals * 2, "total": np.array(vals.sum(), dtype=np.float32),
            "count": np.array([vals.size], dtype=np.float32), "rows": rows, "row_counts": counts,
            "kept_mean": kept.mean(axis=1)}


def cases():
    rng = np.random.default_rng(7)
    a = rng.random((4, 5), dtype=np.float32)
    b = rng.random((4, 5), dtype=np.float32) * 0.7   # fewer above 0.5, fewer rows kept
    none = np.full((4, 5), 0.25, dtype=np.float32)   # k = 0, no row kept
    c = rng.random((6, 5), dtype=np.float32)         # another batch
    return [a, b, none, a, c]


RUN_OUTPUTS = ["ramp", "ones", "tri", "top"]


def build_run_values():
    f32, i64 = TensorProto.FLOAT, TensorProto.INT64
    inits = [
        helper.make_tensor("zero", i64, [], [0]), helper.make_tensor("one", i64, [], [1]),
        helper.make_tensor("four", i64, [], [4]), helper.make_tensor("half", f32, [], [0.5]),
        helper.make_tensor("axis0", i64, [1], [0]),
    ]
    nodes = [
        helper.make_node("ReduceMax", ["x"], ["xmax"], keepdims=0),
        helper.make_node("Floor", ["xmax"], ["xfloor"]),
        helper.make_node("Cast", ["xfloor"], ["n"], to=i64),
        helper.make_node("Range", ["zero", "n", "one"], ["r"]),
        helper.make_node("Cast", ["r"], ["rf"], to=f32),
        helper.make_node("Mul", ["rf", "half"], ["ramp"]),
        helper.make_node("Unsqueeze", ["n", "axis0"], ["n1"]),
        helper.make_node("ConstantOfShape", ["n1"], ["ones"], value=helper.make_tensor("v", f32, [1], [1.0])),
        helper.make_node("ReduceSum", ["x"], ["xsum"], keepdims=0),
        helper.make_node("Floor", ["xsum"], ["xsum_floor"]),
        helper.make_node("Cast", ["xsum_floor"], ["rsum"], to=i64),
        helper.make_node("Range", ["zero", "rsum", "one"], ["r2"]),
        helper.make_node("Cast", ["r2"], ["tri"], to=f32),
        helper.make_node("Flatten", ["x"], ["flat"], axis=0),
        helper.make_node("Min", ["n", "four"], ["k0"]),
        helper.make_node("Unsqueeze", ["k0", "axis0"], ["k"]),
        helper.make_node("TopK", ["flat", "k"], ["top", "top_i"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "run_values", [helper.make_tensor_value_info("x", f32, ["N", 4])],
        [helper.make_tensor_value_info(n, f32, ["d%d" % i]) if n != "top" else
         helper.make_tensor_value_info(n, f32, [1, "k"]) for i, n in enumerate(RUN_OUTPUTS)], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                              producer_name="kiln tests/ref/make_onnx_dynamic_fixture.py")
    model.ir_version = 7
    return model


def expected_run_values(x):
    n = int(np.floor(x.max()))
    r = np.arange(n)
    k = min(n, 4)
    return {"ramp": r * 0.5, "ones": np.ones(n), "tri": np.arange(int(np.floor(x.sum(dtype=np.float32)))),
            "top": np.sort(x.flatten())[::-1][:k].reshape(1, k)}


def run_value_cases():
    rng = np.random.default_rng(11)
    a = rng.random((3, 4), dtype=np.float32) * 3.9        # n = 3
    b = rng.random((3, 4), dtype=np.float32) * 7.5        # n = 7 (most likely)
    b[0, 0] = 7.25
    c = rng.random((3, 4), dtype=np.float32) * 0.9        # n = 0: empty outputs
    d = rng.random((5, 4), dtype=np.float32) * 5.5        # another batch
    d[1, 1] = 5.125
    return [a, b, c, a, d]


def write_bundle(path, records):
    with open(path, "wb") as f:
        for name, a in records:
            a = np.asarray(a).astype("<f4")
            raw = name.encode()
            f.write(struct.pack("<I", len(raw)) + raw + struct.pack("<I", a.ndim))
            f.write(struct.pack("<%dq" % a.ndim, *a.shape) + a.tobytes())


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "data")
    if not hasattr(onnx, "load") or not hasattr(helper, "make_model"):
        sys.exit("python3-onnx (onnx.helper) is required")
    model = build()
    onnx.checker.check_model(model)
    with open(os.path.join(out, "dynamic_shapes.onnx"), "wb") as f:
        f.write(model.SerializeToString())
    records = []
    for i, x in enumerate(cases()):
        records += [("x%d" % i, x)] + [("%s%d" % (n, i), v) for n, v in expected(x).items()]
    write_bundle(os.path.join(out, "dynamic_shapes.bin"), records)
    model = build_run_values()
    onnx.checker.check_model(model)
    with open(os.path.join(out, "run_values.onnx"), "wb") as f:
        f.write(model.SerializeToString())
    records = []
    for i, x in enumerate(run_value_cases()):
        records += [("x%d" % i, x)] + [("%s%d" % (n, i), v) for n, v in expected_run_values(x).items()]
    write_bundle(os.path.join(out, "run_values.bin"), records)


if __name__ == "__main__":
    main()
