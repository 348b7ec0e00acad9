#!/usr/bin/env bash
# kiln installed as a C library: `cmake --install` of this build into a fresh prefix, then
# examples/c/classify.c built against the installed copy with `pkg-config --cflags --libs kiln` and with
# find_package(kiln) in a CMake project of its own, each run on a model the installed kiln command
# trained. libkiln.so must have a versioned soname, export only kiln_* functions, and need nothing beyond
# libc and libm (and the sanitizer runtimes in a sanitizer build): its threads are its own pool's.
source "$(dirname "$0")/support/cli_common.sh" "$@"
build=$(cd "$(dirname "$kiln")" && pwd)

prefix=$work/prefix
check "cmake --install puts kiln into a prefix" 'cmake --install "$build" --prefix "$prefix" > "$work/install.log" 2>&1'
libdir=$prefix/lib
[ -d "$prefix/lib64" ] && libdir=$prefix/lib64
[ -d "$prefix/lib/x86_64-linux-gnu" ] && libdir=$prefix/lib/x86_64-linux-gnu
for f in "$prefix/include/kiln/kiln.h" "$libdir/libkiln.a" "$libdir/pkgconfig/kiln.pc" \
         "$libdir/cmake/kiln/kilnConfig.cmake" "$prefix/bin/kiln" "$prefix/include/kiln/train.h" \
         "$prefix/include/kiln/compress.h" "$libdir/libkiln_train.a" "$libdir/pkgconfig/kiln-train.pc"; do
    check "installed: ${f#$prefix/}" '[ -f "$f" ]'
done
check "libkiln.so has a versioned soname" 'readelf -d "$libdir/libkiln.so" | grep -q "SONAME.*\[libkiln.so.0\]"'
needed=$(readelf -d "$libdir/libkiln.so" | sed -n 's/.*NEEDED.*\[\(.*\)\]/\1/p' | tr '\n' ' ')
echo "libkiln.so needs: $needed"
check "libkiln.so needs only libc and libm" \
    '! echo "$needed" | tr " " "\n" | grep -v -E "^(libc|libm|libpthread|ld-linux-x86-64|libasan|libubsan)\.so" | grep -q .'
others=$(nm -D --defined-only "$libdir/libkiln.so" | awk '{print $3}' | grep -v '^kiln_' | grep -v '^_' | tr '\n' ' ')
check "libkiln.so exports only kiln_* functions (found also: ${others:-none})" '[ -z "$others" ]'

# A model to classify with: the third Fashion-MNIST test image, as examples/c/classify.c reads it.
data=${KILN_FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}
if [ ! -f "$data/t10k-images-idx3-ubyte.gz" ]; then
    echo "skipped the runs: dataset-fashion-mnist is not installed"; echo "$passed passed, $failed failed"
    [ "$failed" -eq 0 ]; exit
fi
printf 'input 1 28 28\nflatten\ndense 32\nrelu\ndense 10\n' > "$work/small.txt"
"$prefix/bin/kiln" train --model "$work/small.txt" --data fashion-mnist:test --epochs 1 --batch 128 \
    --out "$work/small.kiln" --quiet > /dev/null
/usr/bin/python3 -c "
import gzip, sys, struct
raw = gzip.open(sys.argv[1]).read()[16 + 2 * 784:16 + 3 * 784]
open(sys.argv[2], 'wb').write(struct.pack('784f', *[b / 255 for b in raw]))" \
    "$data/t10k-images-idx3-ubyte.gz" "$work/trouser.f32"

# A sanitizer build's library needs its programs built with the sanitizers too (the runtime must load first).
sanitize=()
echo "$needed" | grep -q libasan && sanitize=(-fsanitize=address,undefined)

# pkg-config, against the shared library (classify.c calls exp() itself, hence its own -lm).
export PKG_CONFIG_PATH=$libdir/pkgconfig
check "pkg-config builds classify.c" \
    'cc -std=c11 -O2 "${sanitize[@]}" $(pkg-config --cflags kiln) "$src/examples/c/classify.c" -o "$work/classify-pc" $(pkg-config --libs kiln) -lm 2> "$work/cc.log"'
check "the pkg-config build uses the installed libkiln.so" \
    'LD_LIBRARY_PATH="$libdir" ldd "$work/classify-pc" | grep -q "$libdir/libkiln.so.0"'
check "it classifies the trousers" \
    'LD_LIBRARY_PATH="$libdir" "$work/classify-pc" "$work/small.kiln" "$work/trouser.f32" > "$work/pc.out" && head -1 "$work/pc.out" | grep -q "Trouser"'

# find_package(kiln), in a project of its own.
mkdir -p "$work/app"
cat > "$work/app/CMakeLists.txt" <<CMAKE
cmake_minimum_required(VERSION 3.18)
project(classify_app LANGUAGES C)
find_package(kiln 0.1 REQUIRED)
add_executable(classify "$src/examples/c/classify.c")
target_link_libraries(classify PRIVATE kiln::kiln)
CMAKE
check "find_package(kiln) configures and builds classify.c" \
    'cmake -S "$work/app" -B "$work/app/build" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_C_FLAGS="${sanitize[*]}" > "$work/app.log" 2>&1 && cmake --build "$work/app/build" >> "$work/app.log" 2>&1'
check "the find_package build classifies the trousers" \
    'LD_LIBRARY_PATH="$libdir" "$work/app/build/classify" "$work/small.kiln" "$work/trouser.f32" > "$work/cm.out" && head -1 "$work/cm.out" | grep -q "Trouser"'
# The training and compression library: examples/c/train_prune.c trains, prunes, fine-tunes and saves,
# built with pkg-config kiln-train and with find_package's kiln::kiln_train.
train_data=fashion-mnist:test
check "pkg-config kiln-train builds train_prune.c" \
    'cc -std=c11 -O2 "${sanitize[@]}" $(pkg-config --cflags kiln-train) "$src/examples/c/train_prune.c" -o "$work/train-pc" $(pkg-config --libs kiln-train) 2> "$work/cc-train.log"'
check "it trains, prunes and saves a model the installed kiln reads" \
    '"$work/train-pc" "$work/small.txt" "$train_data" "$train_data" "$work/pruned.kiln" > "$work/train.out" 2>&1 && grep -q "^pruned " "$work/train.out" && "$prefix/bin/kiln" info "$work/pruned.kiln" | grep -q "sparsity"'
cat >> "$work/app/CMakeLists.txt" <<CMAKE
add_executable(train_prune "$src/examples/c/train_prune.c")
target_link_libraries(train_prune PRIVATE kiln::kiln_train)
CMAKE
check "find_package(kiln) builds train_prune.c against kiln::kiln_train" \
    'cmake -S "$work/app" -B "$work/app/build" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_C_FLAGS="${sanitize[*]}" >> "$work/app.log" 2>&1 && cmake --build "$work/app/build" >> "$work/app.log" 2>&1'
check "the find_package build trains and prunes" \
    '"$work/app/build/train_prune" "$work/small.txt" "$train_data" "$train_data" "$work/pruned2.kiln" > "$work/train2.out" 2>&1 && grep -q "^pruned " "$work/train2.out"'
cat "$work/train.out" 2>/dev/null
[ "$failed" -eq 0 ] || { cat "$work/install.log" "$work/cc.log" "$work/cc-train.log" "$work/app.log" 2>/dev/null | tail -20; }
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
