/* numpy .npy files for `kiln run`: reading input arrays and writing output arrays.
 *
 * The reader treats its file as hostile: the magic, version, header length, header dict, shape and data
 * size are all checked, so a truncated, padded or crafted file gives one KILN_ERR_FORMAT line naming
 * the file, never a crash. Versions 1.0 to 3.0; C order only; little-endian dtypes <f4, <f8 (read as
 * f32), <f2, <i8, <i4, |u1, |i1 and |b1. The writer writes version 1.0 with the header padded so the
 * data starts on a 64-byte boundary, as numpy does.
 */
#ifndef KILN_CLI_NPY_H
#define KILN_CLI_NPY_H

#include "core/tensor.h"

/* Reads the array in `path`: out->data is malloc'ed (free() it), in the kiln dtype the file's dtype maps
 * to (float64 becomes f32, refusing values a float cannot hold). On failure out->data is NULL. */
kiln_status cli_npy_read(const char *path, kn_tensor *out);

/* Writes `t` (any kiln dtype) to `path`. */
kiln_status cli_npy_write(const char *path, const kn_tensor *t);

#endif
