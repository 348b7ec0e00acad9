/* numpy .npy arrays, the one reader `kiln train`/`eval` (X.npy,Y.npy data) and `kiln run` (inputs) share,
 * and the writer of `kiln run --out`.
 *
 * The reader treats its file as hostile: the magic, version (1.0 to 3.0), header length (at most 64 KiB),
 * header dict (keys descr, fortran_order and shape exactly once each), shape (overflow-checked, at most
 * KN_MAX_DIMS dims) and data size are all checked, so a truncated, padded or crafted file gives one error
 * naming the file, never a crash. C order only; little-endian dtypes <f4, <f8 (read as f32, refusing a
 * value a float cannot hold), <f2, <i8, <i4, |u1, |i1 and |b1. A nan or inf in a float array is an error.
 * Files may be gzip-compressed. The writer writes version 1.0 with the header padded so the data starts
 * on a 64-byte boundary, as numpy does.
 */
#ifndef KN_TRAIN_NPY_H
#define KN_TRAIN_NPY_H

#include "core/tensor.h"

/* Reads the array in `path`: out->data is malloc'ed (free() it), in the kiln dtype the file's dtype maps
 * to. On failure *out is zeroed. */
kiln_status kn_npy_read(const char *path, kn_tensor *out);

/* Makes t f32 the way the training data loader reads inputs: uint8 scaled by 1/255 (pixels, exactly as IDX
 * images), every other dtype cast to float. t->data is replaced (free() it as before). */
kiln_status kn_npy_to_f32(const char *path, kn_tensor *t);

/* Writes `t` (f32, f16, i64, i32, u8, i8 or bool) to `path`. */
kiln_status kn_npy_write(const char *path, const kn_tensor *t);

#endif
