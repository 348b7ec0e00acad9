r"""Writes the small hostile models tests/cli_hostile.sh feeds to kiln: each declares or computes a shape
far too large to exist, or names external data that is not a regular file. kiln must answer each with
a one-line error, quickly, without a crash or undefined behaviour.

Usage: /usr/bin/python3 make_hostile_fixtures.py OUT_DIR KILN_FILE

OUT_DIR receives the ONNX files, and two copies of KILN_FILE, a valid .kiln model whose graph input
'input' is (1, 1, H, W), with H enlarged and the checksums fixed: hostile_kiln_input_dim.kiln
(H = 2^40) and hostile_kiln_input_huge.kiln (H = 2^62). The committed ones come from

    printf 'input 1 8 8\nconv 2 3 pad=1\nmaxpool 2\nflatten\ndense 2\n' > tiny.txt
    kiln convert tiny.txt tiny.kiln

Exit status 77 without the onnx package.
"""
import os
import struct
import sys
import zlib

try:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper
except ImportError:
    print("the onnx Python package is not installed (Debian: python3-onnx); skipping")
    sys.exit(77)


def save(out_dir, name, nodes, inputs, outputs, initializers=(), opset=13):
    graph = helper.make_graph(nodes, name, inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    # No onnx.checker: its shape checks are what these files are built to break.
    onnx.save(model, os.path.join(out_dir, "hostile_%s.onnx" % name))


def f32(name, dims):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, dims)


def i64(name, values):
    return numpy_helper.from_array(np.array(values, dtype=np.int64), name)


def write_onnx(out_dir):
    # MaxPool over an input declared (1, 1, 4e18, 1): its checks must cost O(rank), not O(positions).
    save(out_dir, "maxpool_huge", [helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[1, 1])],
         [f32("x", [1, 1, 4 * 10**18, 1])], [f32("y", None)])
    # Tile repeats 2^31 on both axes of a (1, 2): 2^63 elements.
    save(out_dir, "tile_huge", [helper.make_node("Tile", ["x", "repeats"], ["y"])],
         [f32("x", [1, 2])], [f32("y", None)], [i64("repeats", [2**31, 2**31])])
    # Pad a (1, 1) by 2^31 on every side: (2^32 + 1)^2 elements.
    save(out_dir, "pad_huge", [helper.make_node("Pad", ["x", "pads"], ["y"])],
         [f32("x", [1, 1])], [f32("y", None)], [i64("pads", [2**31] * 4)])
    # Pads of 2^62 on both sides of one axis: the dim's sum itself overflows int64.
    save(out_dir, "pad_sum_overflow", [helper.make_node("Pad", ["x", "pads"], ["y"])],
         [f32("x", [1, 4])], [f32("y", None)], [i64("pads", [0, 2**62, 0, 2**62])])
    # Resize to sizes (1, 1, 2^62, 2^62).
    save(out_dir, "resize_huge", [helper.make_node("Resize", ["x", "", "", "sizes"], ["y"])],
         [f32("x", [1, 1, 2, 2])], [f32("y", None)], [i64("sizes", [1, 1, 2**62, 2**62])])
    # ConstantOfShape [2^62, 2^62], added to an input so that it is not folded away unseen.
    save(out_dir, "constant_of_shape_huge",
         [helper.make_node("ConstantOfShape", ["shape"], ["c"]), helper.make_node("Add", ["x", "c"], ["y"])],
         [f32("x", [1])], [f32("y", None)], [i64("shape", [2**62, 2**62])])
    # Pads of 2^30 around a (2^31, 2^31) plane: the output plane, 2^64 positions, overflows int64.
    save(out_dir, "conv_pads_overflow",
         [helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[1, 1], pads=[2**30] * 4)],
         [f32("x", [1, 1, 2**31, 2**31])], [f32("y", None)],
         [numpy_helper.from_array(np.ones((1, 1, 1, 1), np.float32), "w")])
    # The same for MaxPool, whose windows must each reach the input: 2^30 wide over pads of 2^30 - 1.
    save(out_dir, "maxpool_pads_overflow",
         [helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2**30] * 2, pads=[2**30 - 1] * 4)],
         [f32("x", [1, 1, 2**31, 2**31])], [f32("y", None)])
    # MatMul batch dims (1, 2^40, 1) and (1, 1, 2^40) broadcast to 2^80 matrices.
    save(out_dir, "matmul_batch_overflow", [helper.make_node("MatMul", ["a", "b"], ["y"])],
         [f32("a", [1, 2**40, 1, 1, 1]), f32("b", [1, 1, 2**40, 1, 1])], [f32("y", None)])
    # A weight whose external data is "fifo.bin": the test puts a FIFO there, which must be refused,
    # not opened and waited on.
    w = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4])
    w.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "fifo.bin"), ("offset", "0"), ("length", "16")):
        entry = w.external_data.add()
        entry.key, entry.value = key, value
    save(out_dir, "external_fifo", [helper.make_node("Add", ["x", "w"], ["y"])], [f32("x", [4])],
         [f32("y", [4])], [w])
    # Weights that declare 2^30 elements over 12 bytes of data (fuzzing found these): refused before
    # 4 GiB are allocated for them, as an initializer and as a Constant node's value.
    big = TensorProto(name="big", data_type=TensorProto.FLOAT, dims=[2**20, 2**10], raw_data=b"\0" * 12)
    save(out_dir, "initializer_without_data", [helper.make_node("Add", ["x", "big"], ["y"])],
         [f32("x", [1])], [f32("y", None)], [big])
    save(out_dir, "constant_without_data", [helper.make_node("Constant", [], ["big"], value=big),
                                            helper.make_node("Add", ["x", "big"], ["y"])],
         [f32("x", [1])], [f32("y", None)])


def crc(data):
    return zlib.crc32(data) & 0xFFFFFFFF


def enlarge_kiln_input(src, dst, value_name, dim_index, new_dim):
    """Sets dim `dim_index` of the graph value named value_name to new_dim, then recomputes the GRPH,
    directory and header CRCs (docs/format.md)."""
    data = bytearray(open(src, "rb").read())
    n_sections = struct.unpack_from("<I", data, 12)[0]
    for s in range(n_sections):
        entry = 64 + 32 * s
        kind, _, offset, size = struct.unpack_from("<4sIQQ", data, entry)
        if kind != b"GRPH":
            continue
        # GRPH: u32 n_values, then per value: str name, u8 kind, u8 dtype, u8 rank, i64 dims[rank].
        n_values = struct.unpack_from("<I", data, offset)[0]
        at = offset + 4
        for _ in range(n_values):
            name_len = struct.unpack_from("<I", data, at)[0]
            name = bytes(data[at + 4:at + 4 + name_len])
            rank = data[at + 4 + name_len + 2]
            dims_at = at + 4 + name_len + 3
            if name == value_name:
                assert dim_index < rank
                struct.pack_into("<q", data, dims_at + 8 * dim_index, new_dim)
                break
            at = dims_at + 8 * rank
        else:
            sys.exit("no value named %r" % value_name)
        struct.pack_into("<I", data, entry + 4, crc(bytes(data[offset:offset + size])))
    struct.pack_into("<I", data, 24, crc(bytes(data[64:64 + 32 * n_sections])))
    struct.pack_into("<I", data, 60, crc(bytes(data[0:60])))
    open(dst, "wb").write(bytes(data))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    write_onnx(sys.argv[1])
    enlarge_kiln_input(sys.argv[2], os.path.join(sys.argv[1], "hostile_kiln_input_dim.kiln"), b"input", 2,
                       2**40)
    enlarge_kiln_input(sys.argv[2], os.path.join(sys.argv[1], "hostile_kiln_input_huge.kiln"), b"input", 2,
                       2**62)
