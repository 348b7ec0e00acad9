#!/usr/bin/env python3
"""ONNX models whose shapes are fixed, symbolic or computed at run time, for tests/test_onnx_shapes.c
and tests/cli_onnx_shapes.sh.

- shape_fixed2.onnx: a PyTorch export WITHOUT dynamic axes of a model run on a batch of 2: its Reshape
  target is the constant (2, 12) and its LayerNormalization scale a 1-D initializer, so kiln must keep
  the first dim at 2 (it is not an open batch dimension).
- shape_dynamic.onnx: a PyTorch export with dynamic axes {0: batch, 1: seq} whose forward reshapes by
  x.shape[0] and x.shape[1]: the exporter writes Shape -> Gather -> Unsqueeze -> Concat -> Reshape chains
  driven by the batch and the sequence length. Run at (2, 5, 8) and (3, 7, 8).
- shape_input.onnx: written with onnx.helper: Reshape(data (N, 6), shape) -> Relu, with the target shape a
  graph input (int64, 2 values) — a shape computed at run time from data. Run with shape (3, 4).

Each model's inputs and PyTorch's (or numpy's) outputs go to tests/ref/data/<model>.bin as records of
    u32 name length, name bytes, u32 ndim, i64 dims[ndim], f32 data[prod(dims)]   (little-endian)
(the shape input stored as f32 values), and as .npy files <model>_<name>.npy for `kiln run` (each in its
own dtype: the shape input is int64, as the model declares).

Run with Debian's interpreter:  /usr/bin/python3 tests/ref/make_onnx_shape_fixtures.py
"""
import os
import struct

import numpy as np
import torch
import torch.nn as nn

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "data")


def write_bundle(name, tensors):
    with open(os.path.join(OUT, name + ".bin"), "wb") as f:
        for key, array in tensors:
            a = np.ascontiguousarray(array, dtype=np.float32)
            f.write(struct.pack("<I", len(key)) + key.encode())
            f.write(struct.pack("<I", a.ndim) + struct.pack("<%dq" % a.ndim, *a.shape))
            f.write(a.tobytes())
    for key, array in tensors:
        np.save(os.path.join(OUT, "%s_%s.npy" % (name, key)), array)


class Fixed(nn.Module):
    """(2, 3, 4) -> reshape (2, 12) -> LayerNorm(12) -> Linear(12, 5) -> ReLU."""

    def __init__(self):
        super().__init__()
        self.norm = nn.LayerNorm(12)
        self.fc = nn.Linear(12, 5)

    def forward(self, x):
        return torch.relu(self.fc(self.norm(x.reshape(x.shape[0], 12))))


class Dynamic(nn.Module):
    """(B, T, 8) -> Linear -> reshape (B, T, 2, 4) -> swap the last two -> reshape (B, T, 8) -> GELU."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        b, t = x.shape[0], x.shape[1]
        h = self.fc(x).reshape(b, t, 2, 4).transpose(2, 3)
        return nn.functional.gelu(h.reshape(b, t, 8))


def export(model, example, name, dynamic_axes=None):
    model.eval()
    path = os.path.join(OUT, name + ".onnx")
    torch.onnx.export(model, example, path, input_names=["x"], output_names=["y"], opset_version=13,
                      dynamic_axes=dynamic_axes)
    return path


def main():
    torch.manual_seed(7)
    fixed = Fixed()
    with torch.no_grad():
        fixed.norm.weight.uniform_(0.5, 1.5)
        fixed.norm.bias.uniform_(-0.2, 0.2)
    x = torch.randn(2, 3, 4)
    export(fixed, x, "shape_fixed2")
    with torch.no_grad():
        write_bundle("shape_fixed2", [("x", x.numpy()), ("y", fixed(x).numpy())])

    dynamic = Dynamic()
    export(dynamic, torch.randn(2, 5, 8), "shape_dynamic", {"x": {0: "batch", 1: "seq"},
                                                             "y": {0: "batch", 1: "seq"}})
    a, b = torch.randn(2, 5, 8), torch.randn(3, 7, 8)
    with torch.no_grad():
        write_bundle("shape_dynamic", [("x_a", a.numpy()), ("y_a", dynamic(a).numpy()),
                                       ("x_b", b.numpy()), ("y_b", dynamic(b).numpy())])

    from onnx import TensorProto, helper, save
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["data", "shape"], ["r"]), helper.make_node("Relu", ["r"], ["y"])],
        "shape_input",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, ["N", 6]),
         helper.make_tensor_value_info("shape", TensorProto.INT64, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    save(model, os.path.join(OUT, "shape_input.onnx"))
    data = np.random.default_rng(3).standard_normal((2, 6)).astype(np.float32)
    shape = np.array([3, 4], dtype=np.int64)
    write_bundle("shape_input", [("data", data), ("shape", shape),
                                 ("y", np.maximum(data.reshape(3, 4), 0))])


if __name__ == "__main__":
    main()
