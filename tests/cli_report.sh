#!/usr/bin/env bash
# kiln report in a real browser: two models trained here for one epoch on the Fashion-MNIST test set, and
# the first pruned after a sensitivity scan, go into one page; headless Chromium loads it, and the DOM it dumps must hold the summary table with a
# row per model, every chart (accuracy against size and latency, histograms) with a point or curve per
# model, and the per-layer table; a screenshot of the page must not be blank. Bad arguments give one
# error line and write nothing.
source "$(dirname "$0")/support/cli_common.sh" "$@"

data=${KILN_FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}
if [ ! -f "$data/t10k-images-idx3-ubyte.gz" ]; then
    echo "skipped: dataset-fashion-mnist is not installed"; echo "0 passed, 0 failed, 1 skipped"; exit 0
fi
printf 'input 1 28 28\nflatten\ndense 32\nrelu\ndense 10\n' > "$work/a.txt"
printf 'input 1 28 28\nflatten\ndense 8\nrelu\ndense 10\n' > "$work/b.txt"
for m in a b; do
    "$kiln" train --model "$work/$m.txt" --data fashion-mnist:test --epochs 1 --batch 128 --out "$work/$m.kiln" \
        --quiet > /dev/null
done
# A third model, pruned after a sensitivity scan, brings the per-layer curves.
"$kiln" prune "$work/a.kiln" --data fashion-mnist:test --val fashion-mnist:test --amount 0.5 --sensitivity \
    --out "$work/s.kiln" --no-latency --quiet > /dev/null
check "kiln report writes the page" \
    '"$kiln" report "$work/a.kiln" "$work/b.kiln" "$work/s.kiln" --data fashion-mnist:test --out "$work/r.html" > "$work/table.txt" 2>&1'
check "the table on stdout compares the last with the first" 'grep -q "s.kiln vs a.kiln" "$work/table.txt" && grep -q "^  accuracy" "$work/table.txt"'
check "the page loads nothing from elsewhere" '! grep -Eq "<script|src=\"http|href=\"http" "$work/r.html"'

# Bad arguments: one line, exit status 1 or 2, nothing written.
expect_error() { # NAME PATTERN ARGS...
    local name=$1 pattern=$2
    shift 2
    "$kiln" report "$@" > "$work/err.out" 2> "$work/err.txt"
    local rc=$?
    check "$name: fails" '[ $rc -ne 0 ]'
    check "$name: says '$pattern'" 'grep -q -- "$pattern" "$work/err.txt"'
}
expect_error "output is not .html" "must name an .html file" "$work/a.kiln" --out "$work/r.txt"
check "output is not .html: nothing written" '[ ! -e "$work/r.txt" ]'
cp "$work/a.kiln" "$work/copy.html"
expect_error "output is the model" "refusing to overwrite" "$work/copy.html" --out "$work/copy.html"
check "output is the model: model unchanged" 'cmp -s "$work/a.kiln" "$work/copy.html"'
expect_error "missing model" "no-such.kiln" "$work/no-such.kiln" --out "$work/x.html"
check "missing model: nothing written" '[ ! -e "$work/x.html" ]'

browser=$(command -v chromium || true)
if [ -z "$browser" ]; then
    echo "note: chromium is not installed (scripts/install-deps.sh installs it): the page was not rendered"
    failed=$((failed + 1))
else
    flags=(--headless --no-sandbox --disable-gpu --disable-dev-shm-usage --user-data-dir="$work/profile")
    timeout 120 "$browser" "${flags[@]}" --dump-dom "file://$work/r.html" > "$work/dom.html" 2> /dev/null
    timeout 120 "$browser" "${flags[@]}" --window-size=1200,1600 --screenshot="$work/shot.png" \
        "file://$work/r.html" > /dev/null 2>&1
    /usr/bin/python3 - "$work/dom.html" "$work/shot.png" > "$work/browser.txt" <<'PY'
import html.parser, struct, sys, zlib

class Dom(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids, self.classes, self.in_svg, self.svg_marks = set(), {}, None, {}
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        for c in (a.get("class") or "").split():
            self.classes[c] = self.classes.get(c, 0) + 1
        if tag == "svg" and "id" in a:
            self.in_svg = a["id"]
        if self.in_svg and tag in ("circle", "polyline"):
            self.svg_marks[self.in_svg] = self.svg_marks.get(self.in_svg, 0) + 1
    def handle_endtag(self, tag):
        if tag == "svg":
            self.in_svg = None

dom = Dom()
dom.feed(open(sys.argv[1]).read())
for chart in ("summary", "accuracy-size", "accuracy-latency", "accuracy-latency32", "layers", "histograms",
              "sensitivity"):
    print(f"element #{chart}: {'present' if chart in dom.ids else 'MISSING'}")
for chart in ("accuracy-size", "accuracy-latency", "histograms", "sensitivity"):
    print(f"marks in #{chart}: {dom.svg_marks.get(chart, 0)}")
print(f"model rows: {dom.classes.get('model-row', 0)}")
print(f"layer rows: {dom.classes.get('layer-row', 0)}")

# The screenshot: decode the PNG (8-bit RGB or RGBA, no interlace) and count distinct colours.
data = open(sys.argv[2], "rb").read()
assert data[:8] == b"\x89PNG\r\n\x1a\n"
pos, idat, width, height, channels = 8, b"", 0, 0, 0
while pos < len(data):
    length, kind = struct.unpack(">I4s", data[pos:pos + 8])
    body = data[pos + 8:pos + 8 + length]
    if kind == b"IHDR":
        width, height, depth, colour = struct.unpack(">IIBB", body[:10])
        channels = {2: 3, 6: 4}[colour]
    elif kind == b"IDAT":
        idat += body
    pos += 12 + length
raw = zlib.decompress(idat)
stride = width * channels + 1
# Filter bytes aside, unfiltered or not, a blank page gives almost no distinct byte values per row.
colours = set()
for y in range(0, height, 8):
    row = raw[y * stride + 1:(y + 1) * stride]
    colours.update(row[i:i + channels] for i in range(0, len(row), channels * 8))
print(f"screenshot {width}x{height}, distinct pixel values sampled: {len(colours)}")
PY
    cat "$work/browser.txt"
    for chart in summary accuracy-size accuracy-latency accuracy-latency32 layers histograms sensitivity; do
        check "the browser's DOM has #$chart" 'grep -q "element #$chart: present" "$work/browser.txt"'
    done
    check "a point per model in each scatter chart" \
        'grep -q "marks in #accuracy-size: 3" "$work/browser.txt" && grep -q "marks in #accuracy-latency: 3" "$work/browser.txt"'
    check "a histogram per model" 'grep -q "marks in #histograms: 3" "$work/browser.txt"'
    check "a sensitivity curve per layer of the scanned model" 'grep -q "marks in #sensitivity: 2" "$work/browser.txt"'
    check "a summary row per model" 'grep -q "model rows: 3" "$work/browser.txt"'
    check "a row per weight (the two models name theirs alike)" 'grep -q "layer rows: 2" "$work/browser.txt"'
    check "the screenshot is not blank" \
        '[ "$(sed -n "s/.*distinct pixel values sampled: \([0-9]*\)/\1/p" "$work/browser.txt")" -gt 20 ]'
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
