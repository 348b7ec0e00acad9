// libFuzzer target for the .kiln reader (not built by CMake). From the repository root:
//
//   clang -g -O1 -fsanitize=fuzzer,address,undefined -DFUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION \
//       -Iinclude -Isrc tests/fuzz/fuzz_kiln_file.c src/format/*.c src/core/*.c src/ops/*.c \
//       src/kernels/gemm.c src/kernels/generic/*.c -fopenmp -lm -o fuzz_kiln_file
//   mkdir -p corpus && cp some_model.kiln corpus/ && ./fuzz_kiln_file -max_len=65536 corpus
//
// FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION makes the reader skip its checksum comparisons, so that
// mutated files reach the parsers instead of stopping at the first checksum. Any .kiln file makes a
// seed. Besides crashes, the target traps when the reader accepts a graph the writer refuses: the two
// must agree on what a valid graph is.
#include <stdint.h>
#include <stdlib.h>

#include "format/kiln_file.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    kn_graph g;
    kn_named_tensor *extras;
    int n_extras;
    if (kn_kiln_load_buffer(data, size, &g, &extras, &n_extras) != KILN_OK)
        return 0;
    void *buf;
    size_t bytes;
    if (kn_kiln_save_buffer(&g, extras, n_extras, &buf, &bytes) != KILN_OK)
        __builtin_trap();
    free(buf);
    kn_named_tensors_free(extras, n_extras);
    kn_graph_free(&g);
    return 0;
}
