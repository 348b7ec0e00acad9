#!/usr/bin/python3
"""The ONNX backend test data (Debian libonnx-testdata) run as a user runs it: for every test with a
test_data_set_0, `kiln run model.onnx input_0.npy ... --batch-dim --out DIR`, each .npy holding one whole
input tensor as given, and every output compared with ONNX's tolerances (rtol 1e-3, atol 1e-7; shape and
dtype must match). Prints passed/wrong/errored per suite, then the ops of failing tests, and writes one
line per test to --results (suite, test, result, first line of kiln's error).

usage: onnx_backend_cli.py KILN DATA_DIR WORK_DIR [--suite NAME]... [--filter GLOB] [--results FILE]
                           [--ops-md docs/ops.md] [--exclusions FILE] [--expect-supported]
--exclusions: a failing test that tests/onnx_backend_exclusions.txt lists counts as "excluded", not
wrong or errored. A Dropout in training mode draws a random mask, which only numpy's generator
reproduces: such a test passes on what does not depend on the draw (dropout_draw_consistent, as
tests/test_onnx_backend.c checks it), and is listed as such. --expect-supported: exit 1 when a node test whose ops are all listed in docs/ops.md
does not pass (excluded ones aside).
"""
import argparse
import collections
import fnmatch
import os
import re
import shutil
import subprocess
import sys

import numpy as np

SUITES = ["node", "pytorch-converted", "pytorch-operator", "simple"]
RTOL, ATOL = 1e-3, 1e-7


def onnx_module():
    """onnx with its loader, or None: Debian's libonnx-testdata alone leaves an empty `onnx` namespace."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        return None
    if not hasattr(onnx, "load") or not hasattr(numpy_helper, "to_array"):
        return None
    return onnx


def read_tensor(onnx, path):
    """The TensorProto in `path` as (name, array); raises ValueError for sequences, maps, optionals."""
    from onnx import numpy_helper
    with open(path, "rb") as f:
        data = f.read()
    t = onnx.TensorProto()
    t.ParseFromString(data)
    if t.data_type == 0:
        raise ValueError("not a tensor (a sequence, map or optional)")
    return t.name, as_text(numpy_helper.to_array(t))


def as_text(arr):
    """A STRING tensor (an object array of str or bytes) as numpy's fixed-width unicode, which .npy files
    hold without pickling and kiln reads and writes; other arrays as they are."""
    if arr.dtype != object:
        return arr
    text = [x.decode("utf-8") if isinstance(x, bytes) else x for x in arr.ravel().tolist()]
    return np.array(text, dtype=np.str_).reshape(arr.shape)


def safe_name(name):
    """The file name `kiln run --out` gives an output (docs/cli.md)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


def listed_ops(ops_md):
    """The ONNX op names docs/ops.md lists as supported (the tables before "does not run")."""
    ops = set()
    with open(ops_md) as f:
        for line in f:
            if line.startswith("## ") and "does not run" in line:
                break
            m = re.match(r"\|\s*([A-Za-z][A-Za-z0-9]*)\s*\|\s*([^|]*)\|", line)
            if m and m.group(1) not in ("Op", "ONNX") and m.group(2).strip() != "unsupported":
                ops.add(m.group(1))
    return ops


def compare(ref, out):
    """None when `out` matches `ref` as ONNX's backend tests require, else why not."""
    same_kind = ref.dtype.kind == "U" and out.dtype.kind == "U"  # text: the width is the longest string's
    if ref.dtype != out.dtype and not same_kind:
        return "dtype %s, expected %s" % (out.dtype, ref.dtype)
    if ref.shape != out.shape:
        return "shape %s, expected %s" % (out.shape, ref.shape)
    if ref.dtype.kind in "fc":
        ok = np.isclose(out, ref, rtol=RTOL, atol=ATOL, equal_nan=True)
    else:
        ok = out == ref
    if not np.all(ok):
        bad = int(np.size(ok) - np.count_nonzero(ok))
        return "%d of %d values differ" % (bad, np.size(ok))
    return None


def dropout_draw_consistent(model, arrays, outs):
    """None when a one-Dropout model in training mode with 0 < ratio < 1 gave outputs that only the random
    draw can make differ from the data's: y of x's shape and dtype, each element 0 or x / (1 - ratio)
    within the tolerances, the mask (if asked for) bool and true exactly where y kept x, and the share
    dropped within 5 standard deviations of the ratio. Else why not ("not a random draw" when the model
    or data set is not one)."""
    nodes = model.graph.node
    if len(nodes) != 1 or nodes[0].op_type != "Dropout" or len(arrays) < 3:
        return "not a random draw"
    x, ratio, training = arrays[0], arrays[1], arrays[2]
    if x.dtype != np.float32 or ratio.size != 1 or training.dtype != np.bool_ or training.size != 1:
        return "not a random draw"
    r = float(ratio.reshape(()))
    if not bool(training.reshape(())) or not 0 < r < 1:
        return "not a random draw"
    y = outs[0]
    if y.dtype != x.dtype or y.shape != x.shape:
        return "random mask: y is %s %s, x %s %s" % (y.dtype, y.shape, x.dtype, x.shape)
    kept = (y != 0) | (x == 0)
    scaled = x.astype(np.float64) / (1 - r)
    if not np.all(~kept | np.isclose(y, scaled, rtol=RTOL, atol=ATOL)):
        return "random mask: a kept element is not x / (1 - ratio)"
    if len(outs) > 1 and (outs[1].dtype != np.bool_ or outs[1].shape != x.shape or np.any(outs[1] != kept)):
        return "random mask: the mask is not true exactly where y kept x"
    dropped = int(np.count_nonzero(~kept))
    if abs(dropped - x.size * r) > 5 * np.sqrt(x.size * r * (1 - r)):
        return "random mask: %d of %d dropped at ratio %g" % (dropped, x.size, r)
    return None


def run_test(onnx, kiln, test_dir, work):
    """('passed' | 'wrong' | 'errored', detail) of one test."""
    model_path = os.path.join(test_dir, "model.onnx")
    data_dir = os.path.join(test_dir, "test_data_set_0")
    model = onnx.load(model_path)
    inits = {t.name for t in model.graph.initializer}
    fed = [v for v in model.graph.input if v.name not in inits]
    for v in list(fed) + list(model.graph.output):
        if not v.type.HasField("tensor_type"):
            return "errored", "test data: '%s' is not a tensor (a sequence, map or optional)" % v.name
    inputs, arrays, refs = [], [], []
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    try:
        i = 0
        while os.path.exists(os.path.join(data_dir, "input_%d.pb" % i)):
            _, arr = read_tensor(onnx, os.path.join(data_dir, "input_%d.pb" % i))
            path = os.path.join(work, "input_%d.npy" % i)
            np.save(path, arr)
            inputs.append(path)
            arrays.append(arr)
            i += 1
        i = 0
        while os.path.exists(os.path.join(data_dir, "output_%d.pb" % i)):
            refs.append(read_tensor(onnx, os.path.join(data_dir, "output_%d.pb" % i))[1])
            i += 1
    except ValueError as e:
        return "errored", "test data: %s" % e
    out_dir = os.path.join(work, "out")
    cmd = [kiln, "run", model_path] + inputs + ["--batch-dim", "--threads", "1", "--out", out_dir]
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
    except subprocess.TimeoutExpired:
        return "errored", "timed out"
    if p.returncode != 0:
        err = p.stderr.decode("utf-8", "replace").strip().splitlines()
        return "errored", (err[0] if err else "exit status %d" % p.returncode)
    outs = []
    for i, ref in enumerate(refs):
        path = os.path.join(out_dir, safe_name(model.graph.output[i].name) + ".npy")
        if not os.path.exists(path):
            return "wrong", "no file for output %d" % i
        outs.append(np.load(path))
    for i, ref in enumerate(refs):
        why = compare(ref, outs[i])
        if why:
            draw = dropout_draw_consistent(model, arrays, outs)
            if draw is None:
                return "passed", "random mask"
            return "wrong", "output %d: %s%s" % (i, why, "" if draw == "not a random draw" else "; " + draw)
    return "passed", ""


def read_exclusions(path):
    pats = []
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line and not line.startswith("#"):
                    pats.append(line.split()[0])
    return pats


def excluded_by(patterns, test):
    """Whether tests/onnx_backend_exclusions.txt covers the test (its rule: an _expanded test only by a
    pattern that says "expanded")."""
    expanded = test.endswith("_expanded")
    return any(fnmatch.fnmatchcase(test, p) and (not expanded or "expanded" in p) for p in patterns)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("kiln")
    ap.add_argument("data")
    ap.add_argument("work")
    ap.add_argument("--suite", action="append")
    ap.add_argument("--filter", default="*")
    ap.add_argument("--results")
    ap.add_argument("--ops-md")
    ap.add_argument("--exclusions")
    ap.add_argument("--expect-supported", action="store_true")
    args = ap.parse_args()
    onnx = onnx_module()
    if onnx is None:
        print("skipped: python3-onnx (onnx.load) is not installed")
        return 0
    listed = listed_ops(args.ops_md) if args.ops_md else set()
    excluded = read_exclusions(args.exclusions) if args.exclusions else []
    results = []
    for suite in args.suite or SUITES:
        root = os.path.join(args.data, suite)
        if not os.path.isdir(root):
            continue
        for name in sorted(os.listdir(root)):
            test_dir = os.path.join(root, name)
            if not fnmatch.fnmatch(name, args.filter):
                continue
            if not os.path.isdir(os.path.join(test_dir, "test_data_set_0")):
                continue
            result, detail = run_test(onnx, args.kiln, test_dir, args.work)
            if result != "passed" and excluded_by(excluded, name):
                result, detail = "excluded", "%s (%s)" % (result, detail)
            ops = sorted({n.op_type for n in onnx.load(os.path.join(test_dir, "model.onnx")).graph.node})
            results.append((suite, name, result, detail, ops))

    by_suite = collections.OrderedDict()
    for suite, _, result, _, _ in results:
        by_suite.setdefault(suite, collections.Counter())[result] += 1
    total = collections.Counter()
    for suite, c in by_suite.items():
        total.update(c)
        print("%-18s %4d passed %4d wrong %4d errored %4d excluded of %4d" %
              (suite, c["passed"], c["wrong"], c["errored"], c["excluded"], sum(c.values())))
    print("%-18s %4d passed %4d wrong %4d errored %4d excluded of %4d" %
          ("all", total["passed"], total["wrong"], total["errored"], total["excluded"],
           sum(total.values())))

    draws = [name for _, name, result, detail, _ in results if result == "passed" and detail == "random mask"]
    if draws:
        print("passed on what does not depend on a random draw (Dropout's mask): %s" % " ".join(draws))

    per_op = collections.defaultdict(collections.Counter)
    for _, _, result, _, ops in results:
        for op in ops:
            per_op[op][result] += 1
    failing = sorted((op for op in per_op if per_op[op]["wrong"] + per_op[op]["errored"]),
                     key=lambda op: -(per_op[op]["wrong"] + per_op[op]["errored"]))
    if failing:
        print("ops in failing tests (passed/wrong/errored):")
        for op in failing:
            c = per_op[op]
            mark = " (listed)" if op in listed else ""
            print("  %-28s %3d %3d %3d%s" % (op, c["passed"], c["wrong"], c["errored"], mark))
    if args.results:
        with open(args.results, "w") as f:
            for suite, name, result, detail, ops in results:
                f.write("%s\t%s\t%s\t%s\t%s\n" % (suite, name, result, ",".join(ops), detail))

    if listed:
        sup = [r for r in results if r[0] == "node" and all(op in listed for op in r[4])]
        sup_pass = sum(1 for r in sup if r[2] == "passed")
        print("node tests of listed ops: %d passed of %d" % (sup_pass, len(sup)))
        if args.expect_supported:
            bad = [r for r in sup if r[2] not in ("passed", "excluded")]
            for r in bad:
                print("FAILED (listed op): %s %s: %s" % (r[1], r[2], r[3]))
            return 1 if bad else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
