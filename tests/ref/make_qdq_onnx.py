"""Writes a small QDQ model, the way quantization tools export one, for tests/cli_storage.sh.

Usage: /usr/bin/python3 make_qdq_onnx.py OUT.onnx

x (N, 784) -> Gemm(w1, b1, transB) -> Relu -> MatMul(Transpose(w2)) -> y (N, 10), where w1 is
DequantizeLinear(int8 (64, 784), per-channel scale (64), axis 0) and w2 is Cast(float16 (10, 64) -> float).
Seeded, so the file is the same on every run. Exit status 77 without the onnx package (python3-onnx).
"""
import sys

try:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    onnx.save  # noqa: B018 (an empty namespace package from libonnx-testdata has no save)
except (ImportError, AttributeError):
    print("the onnx Python package is not installed (Debian: python3-onnx); skipping")
    sys.exit(77)


def main(path):
    rng = np.random.default_rng(0)
    levels = rng.integers(-127, 128, size=(64, 784), dtype=np.int8)
    scale = ((rng.random(64) + 0.5) * 0.01).astype(np.float32)
    w2 = rng.standard_normal((10, 64)).astype(np.float16)
    initializers = [numpy_helper.from_array(levels, "w1/quantized"), numpy_helper.from_array(scale, "w1/scale"),
                    numpy_helper.from_array(w2, "w2/f16"), numpy_helper.from_array(np.zeros(64, np.float32), "b1")]
    nodes = [helper.make_node("DequantizeLinear", ["w1/quantized", "w1/scale"], ["w1"], axis=0),
             helper.make_node("Cast", ["w2/f16"], ["w2"], to=TensorProto.FLOAT),
             helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], transB=1),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Transpose", ["w2"], ["w2t"]),
             helper.make_node("MatMul", ["r", "w2t"], ["y"])]
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 784])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    onnx.save(model, path)


if __name__ == "__main__":
    main(sys.argv[1])
