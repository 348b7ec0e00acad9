// libFuzzer target for the ONNX importer (not built by CMake). From the repository root, after a
// CMake build in build/ (for the protobuf-c code generated from onnx.proto):
//
//   clang -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude -Isrc -Ibuild/generated/onnx \
//       tests/fuzz/fuzz_onnx_import.c build/generated/onnx/onnx.pb-c.c src/format/onnx/*.c \
//       src/format/*.c src/core/*.c src/ops/*.c src/kernels/gemm.c src/kernels/generic/*.c \
//       src/train/tape.c -lprotobuf-c -fopenmp -lm -o fuzz_onnx_import
//   mkdir -p corpus && cp tests/ref/data/onnx_*.onnx corpus/ && ./fuzz_onnx_import -max_len=65536 corpus
//
// Whatever the importer accepts is also bound at batch 2 and run once, so the rewrites, the folding
// and shape inference meet mutated graphs too.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "format/onnx/onnx_import.h"
#include "train/tape.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    kn_graph g;
    if (kn_onnx_import_buffer(data, size, NULL, &g) == KILN_OK) {
        kn_tape t;
        if (g.n_inputs > 0 && kn_tape_init(&t, &g, 2, false) == KILN_OK) {
            for (int i = 0; i < g.n_inputs; i++) {
                kn_tensor *x = kn_tape_input(&t, i);
                size_t bytes;
                if (x->data && kn_shape_bytes(&x->shape, x->dtype, &bytes))
                    memset(x->data, 0, bytes);
            }
            kn_tape_forward(&t, false);
            kn_tape_free(&t);
        }
    }
    kn_graph_free(&g);
    return 0;
}
