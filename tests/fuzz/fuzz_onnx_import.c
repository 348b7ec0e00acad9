/* libFuzzer target: the ONNX importer, and what `kiln run` does with an imported model: the optimizer,
 * shape inference, planning and one run on zeroed inputs, through the runtime API. Built by CMake with
 * -DKILN_FUZZ=ON (scripts/fuzz.sh); seeds in tests/fuzz/corpus/onnx_import. */
#include "format/onnx/onnx_import.h"
#include "fuzz_input.h"
#include "runtime/runtime.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    kn_graph g;
    if (kn_onnx_import_buffer(data, size, NULL, &g) != KILN_OK) {
        kn_graph_free(&g);
        return 0;
    }
    kiln_model *model;
    if (kn_model_from_graph(&g, &model) == KILN_OK) { /* takes g over, success or not */
        fuzz_run_model(model);
        kiln_model_free(model);
    }
    return 0;
}
