"""Checks ONNX files written by kiln's exporter with the onnx package's own checker.

Usage: /usr/bin/python3 check_onnx_export.py MODEL.onnx...

Each file must pass onnx.checker.check_model with full_check (which also runs strict shape inference,
so declared input/output types must agree with what the ops produce), name each node once, be IR
version 8 with opset 17 of the default domain from producer "kiln", and carry its kiln.* metadata as
valid JSON. Prints one
line per file. Exit status: 0 all passed, 1 a file failed, 77 the onnx package is not installed
(Debian: python3-onnx), which the caller reports as skipped.
"""
import json
import sys

# Debian's libonnx-testdata alone leaves an onnx/ folder of test data that imports as an empty namespace
# package, so the probe asks for what this script calls, not for the import.
try:
    import onnx
    import onnx.checker
    onnx.load  # noqa: B018
except (ImportError, AttributeError):
    print("the onnx Python package is not installed (Debian: python3-onnx); skipping")
    sys.exit(77)


def check(path):
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    opsets = {o.domain: o.version for o in model.opset_import}
    assert model.ir_version == 8, f"ir_version {model.ir_version}"
    assert opsets == {"": 17}, f"opsets {opsets}"
    assert model.producer_name == "kiln", f"producer {model.producer_name!r}"
    # onnxruntime refuses two nodes of one name, which onnx 1.12's checker lets pass.
    names = [n.name for n in model.graph.node if n.name]
    assert len(set(names)) == len(names), "two nodes share a name"
    props = {p.key: p.value for p in model.metadata_props}
    for key in ("kiln.class_names", "kiln.input_mean", "kiln.input_std"):
        if key in props:
            assert isinstance(json.loads(props[key]), list), f"{key} is not a JSON list"
    ops = sorted({n.op_type for n in model.graph.node})
    print(f"  {path}: onnx {onnx.__version__} checker passed ({len(model.graph.node)} nodes: "
          f"{' '.join(ops)}; metadata {sorted(props)})")


def main():
    failed = 0
    for path in sys.argv[1:]:
        try:
            check(path)
        except Exception as e:  # every failure is reported, then the run fails
            print(f"  {path}: FAILED: {type(e).__name__}: {e}")
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
