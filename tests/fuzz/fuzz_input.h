/* Shared by the libFuzzer targets: parsers that read a path get the fuzzer's bytes through a file, and
 * models a parser accepts are run through the public runtime API as `kiln run` would. */
#ifndef KILN_FUZZ_INPUT_H
#define KILN_FUZZ_INPUT_H

#include <stddef.h>
#include <stdint.h>

#include "kiln/kiln.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Writes data to a file named `name` in this process's scratch folder and returns its path (static
 * storage, valid until the next call with the same name). */
const char *fuzz_write_file(const char *name, const uint8_t *data, size_t size);

/* Creates a session for `model` (the default thread count, a 256 MiB memory limit), zeroes every input
 * at its planned shape and runs once if it costs at most 2e7 FLOPs. Errors are fine — a crash, hang or leak is not. */
void fuzz_run_model(const kiln_model *model);

#endif
