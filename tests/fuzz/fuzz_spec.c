/* libFuzzer target: the model spec language, and the runtime on what it builds. A spec declares the
 * model's size, and a user may ask for a large one; so that one input cannot claim gigabytes, the harness
 * skips specs with a number above 256 (two `conv 612 12` lines already ask for 53 million weights): the
 * parser's own checks, below its size limits, are what is fuzzed. Seeds in tests/fuzz/corpus/spec,
 * keywords in spec.dict. */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_input.h"
#include "runtime/runtime.h"
#include "train/spec.h"

static bool declares_a_large_size(const char *text) {
    for (const char *p = text; *p; p++)
        if (isdigit((unsigned char)*p) && (p == text || !isalnum((unsigned char)p[-1])) && strtod(p, NULL) > 256)
            return true;
    return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = malloc(size + 1);
    memcpy(text, data, size);
    text[size] = 0;
    kn_graph g;
    if (!declares_a_large_size(text) && kn_spec_parse(text, "fuzz", 1, &g) == KILN_OK) {
        kiln_model *model;
        if (kn_model_from_graph(&g, &model) == KILN_OK) {
            fuzz_run_model(model);
            kiln_model_free(model);
        }
    }
    free(text);
    return 0;
}
