/* libFuzzer target: the .kiln reader. Built by CMake with -DKILN_FUZZ=ON (scripts/fuzz.sh).
 * FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION makes the reader skip its checksum comparisons, so that mutated
 * files reach the parsers instead of stopping at the first checksum. Whatever the reader accepts must be
 * accepted by the writer too (the two agree on what a valid graph is) and runs through the runtime API. */
#include <stdlib.h>

#include "format/kiln_file.h"
#include "fuzz_input.h"

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
    kiln_model *model;
    if (kiln_model_load_memory(data, size, &model) == KILN_OK) {
        fuzz_run_model(model);
        kiln_model_free(model);
    }
    return 0;
}
