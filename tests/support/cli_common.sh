# The start every tests/cli_*.sh shares. Source it with the script's arguments (the kiln binary and the
# source tree, as tests/CMakeLists.txt passes them):
#   source "$(dirname "$0")/support/cli_common.sh" "$@"
# It sets kiln and src (absolute paths), work (a temporary folder, removed at exit) and the counters
# passed and failed, and defines
#   check NAME CONDITION    evaluates CONDITION (a string), counts it, prints NAME when it fails;
#                           CONDITION may read $?, the status of the command before the check
#   cli_onnxruntime_loads   true when npm onnxruntime-node loads from the source tree's bench/node_modules
#   cli_fmnist_npy N        writes the first N Fashion-MNIST test images and labels to $work/x.npy and
#                           $work/y.npy ((N, 1, 28, 28) u8, (N) i64): data for runs of seconds
# A script ends with: echo "$passed passed, $failed failed"; [ "$failed" -eq 0 ]
set -u
kiln=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
src=$(cd "${2:-.}" && pwd)
work=$(mktemp -d)
trap 'chmod -R u+w "$work"; rm -rf "$work"' EXIT # u+w: a test may leave read-only files behind
passed=0 failed=0
check() { if eval "$2"; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "FAILED: $1"; fi; }
cli_onnxruntime_loads() {
    command -v node >/dev/null && (cd "$src/bench" && node -e "require('onnxruntime-node')" 2>/dev/null)
}
cli_fmnist_npy() {
    /usr/bin/python3 - "${KILN_FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}" "$work" "$1" <<'PY'
import gzip, sys
import numpy as np
src, work, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
x = np.frombuffer(gzip.open(src + "/t10k-images-idx3-ubyte.gz").read(), np.uint8, offset=16)[:n * 784]
y = np.frombuffer(gzip.open(src + "/t10k-labels-idx1-ubyte.gz").read(), np.uint8, offset=8)[:n]
np.save(work + "/x.npy", x.reshape(n, 1, 28, 28))
np.save(work + "/y.npy", y.astype(np.int64))
PY
}
