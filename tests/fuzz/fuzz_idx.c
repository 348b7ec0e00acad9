/* libFuzzer target: the IDX loader, which reads an images file and the labels file beside it. The input
 * is both: its first byte tells where the images end (as a share of the rest, in 256ths). Seeds in
 * tests/fuzz/corpus/idx. */
#include "fuzz_input.h"
#include "train/data.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1)
        return 0;
    size_t rest = size - 1, split = rest * data[0] / 256;
    fuzz_write_file("f-labels-idx1-ubyte", data + 1 + split, rest - split);
    const char *images = fuzz_write_file("f-images-idx3-ubyte", data + 1, split);
    kn_dataset ds;
    kn_data_options options = {.quiet = true};
    if (kn_dataset_load(images, &options, &ds) == KILN_OK)
        kn_dataset_free(&ds);
    return 0;
}
