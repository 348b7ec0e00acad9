/* libFuzzer target: the .npy reader (train/npy.h), directly as `kiln run` reads an input and through the
 * X.npy,Y.npy pair of the data loader (train, eval). The input is both files: its first byte tells where X
 * ends (as a share of the rest, in 256ths); X is also read on its own. Seeds in tests/fuzz/corpus/npy. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_input.h"
#include "train/data.h"
#include "train/npy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1)
        return 0;
    size_t rest = size - 1, split = rest * data[0] / 256;
    const char *x = fuzz_write_file("x.npy", data + 1, split);
    fuzz_write_file("y.npy", data + 1 + split, rest - split);
    kn_tensor t;
    if (kn_npy_read(x, &t) == KILN_OK)
        free(t.data);
    kn_dataset ds;
    kn_data_options options = {.quiet = true};
    char pair[600];
    snprintf(pair, sizeof pair, "%s,%.*s/y.npy", x, (int)(strrchr(x, '/') - x), x);
    if (kn_dataset_load(pair, &options, &ds) == KILN_OK)
        kn_dataset_free(&ds);
    return 0;
}
