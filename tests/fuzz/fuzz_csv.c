/* libFuzzer target: the CSV data loader (header row, numeric or class-name targets, standardisation),
 * through a file as `kiln train --data table.csv` reads it, then again as a model trained on columns
 * "a", "b,c" and "d\" would read it (kiln eval: the header's names checked against those). Seeds in
 * tests/fuzz/corpus/csv. */
#include "fuzz_input.h"
#include "train/data.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_write_file("data.csv", data, size);
    kn_dataset ds;
    kn_data_options options = {.quiet = true};
    if (kn_dataset_load(path, &options, &ds) == KILN_OK)
        kn_dataset_free(&ds);
    options.columns = "a,b\\,c,d\\\\";
    if (kn_dataset_load(path, &options, &ds) == KILN_OK)
        kn_dataset_free(&ds);
    return 0;
}
