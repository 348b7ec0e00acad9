#!/usr/bin/python3
"""Writes tests/ref/data/extra_ops.onnx, groupnorm21.onnx and extra_ops.bin for tests/test_onnx_extra_ops.c: an
opset-20 model (and an opset-21 one for gn_chan) running ops the Debian ONNX test data (onnx 1.12) has no
tests of, most on the same input x (2, 6, 5, 4) f32, with numpy implementations of onnx's definitions as
the oracle (tests/cli_dynamic_shapes.sh also holds kiln to onnxruntime's outputs on them):

  l2_c      LpNormalization(axis 1, p 2)          l1_w   LpNormalization(axis -1, p 1)
  lp3       LpPool(kernel 2x3, p 3, strides 2x1, pads 1,0,0,1)
  lp2_ceil  LpPool(kernel 2x2, p 2, strides 2, ceil_mode 1, dilations 1)
  glp       GlobalLpPool(p 2)
  gn_group  GroupNormalization(num_groups 3, scale and bias per group: opset 18's form)
  gn_chan   GroupNormalization(num_groups 2, scale and bias per channel: opset 21's form)
  crop_pad  CenterCropPad(shape (3, 7) on axes (2, 3)): crops 5 -> 3, pads 4 -> 7
  col2im    Col2Im(cols (2, 8, 9), image (5, 5), block (2, 2), strides 2x1, dilations 1x2, pads 1,0,1,0)
  grid2     AffineGrid(theta (2, 2, 3), size (2, 3, 4, 5))                 align_corners 0
  grid3     AffineGrid(theta (1, 3, 4), size (1, 1, 2, 3, 4))              align_corners 1

onnx 1.12 (python3-onnx) knows none of GroupNormalization, CenterCropPad, Col2Im and AffineGrid, so the
model is not run through onnx.checker. The bundle holds records of (u32 name length, name, u32 ndim,
i64 dims, f32 data) (tests/support/fixture.h): the inputs x and cols, and each output.

usage: /usr/bin/python3 tests/ref/make_onnx_extra_ops_fixture.py [OUT_DIR]   (default tests/ref/data)
"""
import os
import struct
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper

RNG = np.random.default_rng(31)
GN_GROUP_SCALE = RNG.standard_normal(3).astype(np.float32)
GN_GROUP_BIAS = RNG.standard_normal(3).astype(np.float32)
GN_CHAN_SCALE = RNG.standard_normal(6).astype(np.float32)
GN_CHAN_BIAS = RNG.standard_normal(6).astype(np.float32)
THETA2 = RNG.standard_normal((2, 2, 3)).astype(np.float32)
THETA3 = RNG.standard_normal((1, 3, 4)).astype(np.float32)
OUTPUTS = ["l2_c", "l1_w", "lp3", "lp2_ceil", "glp", "gn_group", "gn_chan", "crop_pad", "col2im", "grid2", "grid3"]


def build(name, opset, wanted):
    """The model of the nodes that write the outputs `wanted`, with the initializers and inputs they read."""
    f32, i64 = TensorProto.FLOAT, TensorProto.INT64
    inits = [
        helper.make_tensor("gs", f32, [3], GN_GROUP_SCALE), helper.make_tensor("gb", f32, [3], GN_GROUP_BIAS),
        helper.make_tensor("cs", f32, [6], GN_CHAN_SCALE), helper.make_tensor("cb", f32, [6], GN_CHAN_BIAS),
        helper.make_tensor("target", i64, [2], [3, 7]),
        helper.make_tensor("image", i64, [2], [5, 5]), helper.make_tensor("block", i64, [2], [2, 2]),
        helper.make_tensor("theta2", f32, [2, 2, 3], THETA2), helper.make_tensor("size2", i64, [4], [2, 3, 4, 5]),
        helper.make_tensor("theta3", f32, [1, 3, 4], THETA3),
        helper.make_tensor("size3", i64, [5], [1, 1, 2, 3, 4]),
    ]
    nodes = [
        helper.make_node("LpNormalization", ["x"], ["l2_c"], axis=1, p=2),
        helper.make_node("LpNormalization", ["x"], ["l1_w"], axis=-1, p=1),
        helper.make_node("LpPool", ["x"], ["lp3"], kernel_shape=[2, 3], p=3, strides=[2, 1], pads=[1, 0, 0, 1]),
        helper.make_node("LpPool", ["x"], ["lp2_ceil"], kernel_shape=[2, 2], p=2, strides=[2, 2], ceil_mode=1,
                         dilations=[1, 1]),
        helper.make_node("GlobalLpPool", ["x"], ["glp"], p=2),
        helper.make_node("GroupNormalization", ["x", "gs", "gb"], ["gn_group"], num_groups=3, epsilon=1e-5),
        helper.make_node("GroupNormalization", ["x", "cs", "cb"], ["gn_chan"], num_groups=2, epsilon=1e-3),
        helper.make_node("CenterCropPad", ["x", "target"], ["crop_pad"], axes=[2, 3]),
        helper.make_node("Col2Im", ["cols", "image", "block"], ["col2im"], strides=[2, 1], dilations=[1, 2],
                         pads=[1, 0, 1, 0]),
        helper.make_node("AffineGrid", ["theta2", "size2"], ["grid2"], align_corners=0),
        helper.make_node("AffineGrid", ["theta3", "size3"], ["grid3"], align_corners=1),
    ]
    nodes = [n for n in nodes if n.output[0] in wanted]
    read = {i for n in nodes for i in n.input}
    outputs = [helper.make_tensor_value_info(n, f32, None) for n in wanted]
    inputs = [helper.make_tensor_value_info("x", f32, [2, 6, 5, 4]),
              helper.make_tensor_value_info("cols", f32, [2, 8, 9])]
    graph = helper.make_graph(nodes, name, [i for i in inputs if i.name in read], outputs,
                              initializer=[t for t in inits if t.name in read])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="kiln tests/ref/make_onnx_extra_ops_fixture.py")
    model.ir_version = 8
    return model


def lp_norm(x, axis, p):
    norm = np.sum(np.abs(x.astype(np.float64)) ** p, axis=axis, keepdims=True) ** (1.0 / p)
    return x / norm


def lp_pool(x, kernel, p, strides, pads, ceil_mode=False):
    """pads: begin_h, begin_w, end_h, end_w; padding adds 0."""
    n, c, h, w = x.shape
    xp = np.zeros((n, c, h + pads[0] + pads[2], w + pads[1] + pads[3]))
    xp[:, :, pads[0]:pads[0] + h, pads[1]:pads[1] + w] = x
    rnd = np.ceil if ceil_mode else np.floor
    oh = int(rnd((xp.shape[2] - kernel[0]) / strides[0])) + 1
    ow = int(rnd((xp.shape[3] - kernel[1]) / strides[1])) + 1
    y = np.zeros((n, c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            win = xp[:, :, i * strides[0]:i * strides[0] + kernel[0], j * strides[1]:j * strides[1] + kernel[1]]
            y[:, :, i, j] = np.sum(np.abs(win) ** p, axis=(2, 3)) ** (1.0 / p)
    return y


def group_norm(x, groups, scale, bias, eps):
    n, c = x.shape[:2]
    g = x.astype(np.float64).reshape(n, groups, -1)
    normed = ((g - g.mean(axis=2, keepdims=True)) / np.sqrt(g.var(axis=2, keepdims=True) + eps)).reshape(x.shape)
    per_channel = lambda v: np.repeat(v, c // groups) if v.size == groups else v
    return normed * per_channel(scale).reshape(1, c, 1, 1) + per_channel(bias).reshape(1, c, 1, 1)


def center_crop_pad(x, target, axes):
    y = x
    for a, t in zip(axes, target):
        d = y.shape[a]
        if t < d:
            y = np.take(y, np.arange((d - t) // 2, (d - t) // 2 + t), axis=a)
        elif t > d:
            shape = list(y.shape)
            shape[a] = t
            z = np.zeros(shape, dtype=y.dtype)
            idx = [slice(None)] * y.ndim
            idx[a] = slice((t - d) // 2, (t - d) // 2 + d)
            z[tuple(idx)] = y
            y = z
    return y


def col2im(cols, image, block, strides, dilations, pads):
    """pads: begin_h, begin_w, end_h, end_w."""
    n, ck, _ = cols.shape
    taps = block[0] * block[1]
    out = [(image[a] + pads[a] + pads[a + 2] - dilations[a] * (block[a] - 1) - 1) // strides[a] + 1 for a in (0, 1)]
    y = np.zeros((n, ck // taps, image[0], image[1]), dtype=np.float64)
    for i in range(out[0]):
        for j in range(out[1]):
            for ki in range(block[0]):
                for kj in range(block[1]):
                    r = i * strides[0] - pads[0] + ki * dilations[0]
                    c = j * strides[1] - pads[1] + kj * dilations[1]
                    if 0 <= r < image[0] and 0 <= c < image[1]:
                        y[:, :, r, c] += cols[:, ki * block[1] + kj::taps, i * out[1] + j]
    return y


def affine_grid(theta, dims, align_corners):
    """dims: the spatial sizes (H, W) or (D, H, W); grid coordinates (x, y[, z]), x along the last axis."""
    def axis(n):
        if align_corners:
            return np.linspace(-1, 1, n) if n > 1 else np.zeros(1)
        return (2 * np.arange(n) + 1) / n - 1
    mesh = np.meshgrid(*[axis(n) for n in dims], indexing="ij")        # each of shape dims
    base = np.stack([m for m in reversed(mesh)] + [np.ones(dims)], axis=-1)  # (..., rank + 1)
    return np.einsum("...k,nrk->n...r", base, theta.astype(np.float64))


def expected(x, cols):
    return {
        "l2_c": lp_norm(x, 1, 2), "l1_w": lp_norm(x, -1, 1),
        "lp3": lp_pool(x, [2, 3], 3, [2, 1], [1, 0, 0, 1]),
        # ceil_mode on 5 x 4 with kernel 2, stride 2: a last window on the height starts inside (at 4), so
        # it is kept and reads one row; no padding is given, so it adds nothing beyond the edge.
        "lp2_ceil": lp_pool(np.pad(x, ((0, 0), (0, 0), (0, 1), (0, 0))), [2, 2], 2, [2, 2], [0, 0, 0, 0]),
        "glp": np.sqrt(np.sum(x.astype(np.float64) ** 2, axis=(2, 3), keepdims=True)),
        "gn_group": group_norm(x, 3, GN_GROUP_SCALE, GN_GROUP_BIAS, 1e-5),
        "gn_chan": group_norm(x, 2, GN_CHAN_SCALE, GN_CHAN_BIAS, 1e-3),
        "crop_pad": center_crop_pad(x, [3, 7], [2, 3]),
        "col2im": col2im(cols, [5, 5], [2, 2], [2, 1], [1, 2], [1, 0, 1, 0]),
        "grid2": affine_grid(THETA2, (4, 5), False),
        "grid3": affine_grid(THETA3, (2, 3, 4), True),
    }


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "data")
    if not hasattr(onnx, "load") or not hasattr(helper, "make_model"):
        sys.exit("python3-onnx (onnx.helper) is required")
    # GroupNormalization's scale per channel is opset 21's form; the rest is valid at opset 20.
    with open(os.path.join(out, "extra_ops.onnx"), "wb") as f:
        f.write(build("extra_ops", 20, [n for n in OUTPUTS if n != "gn_chan"]).SerializeToString())
    with open(os.path.join(out, "groupnorm21.onnx"), "wb") as f:
        f.write(build("groupnorm21", 21, ["gn_chan"]).SerializeToString())
    x = RNG.standard_normal((2, 6, 5, 4)).astype(np.float32)
    cols = RNG.standard_normal((2, 8, 9)).astype(np.float32)
    with open(os.path.join(out, "extra_ops.bin"), "wb") as f:
        for name, a in [("x", x), ("cols", cols)] + list(expected(x, cols).items()):
            a = np.asarray(a).astype("<f4")
            raw = name.encode()
            f.write(struct.pack("<I", len(raw)) + raw + struct.pack("<I", a.ndim))
            f.write(struct.pack("<%dq" % a.ndim, *a.shape) + a.tobytes())


if __name__ == "__main__":
    main()
