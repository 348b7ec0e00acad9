/* numpy .npy arrays, the one reader `kiln train`/`eval` (X.npy,Y.npy data) and `kiln run` (inputs) share,
 * and the writer of `kiln run --out`.
 *
 * The reader treats its file as hostile: the magic, version (1.0 to 3.0), header length (at most 64 KiB),
 * header dict (keys descr, fortran_order and shape exactly once each), shape (overflow-checked, at most
 * KN_MAX_DIMS dims) and data size are all checked, so a truncated, padded or crafted file gives one error
 * naming the file, never a crash. C order only; little-endian dtypes <f4, <f8, <f2, <i8, <i4, <i2, |u1,
 * <u2, <u4, <u8, |i1 and |b1, each read as the kiln dtype of that name (a model input may hold NaN: the
 * training data loader refuses it with kn_npy_check_finite). Text arrays, numpy's fixed-width <U<n> (UTF-32
 * code points) and |S<n> (bytes), n at most 2^20, are read as KN_STRING: every code point a Unicode
 * character, no NUL before an element's zero padding. Files may be gzip-compressed. The writer writes
 * version 1.0 with the header padded so the data starts on a 64-byte boundary, as numpy does.
 *
 * A KN_STRING tensor here is laid out as the C API passes strings: numel `const char *` (UTF-8 when read
 * from <U), followed, when read, by the strings themselves in the same malloc'ed block.
 */
#ifndef KN_TRAIN_NPY_H
#define KN_TRAIN_NPY_H

#include "core/tensor.h"

/* Reads the array in `path`: out->data is malloc'ed (free() it), in the kiln dtype the file's dtype maps
 * to. On failure *out is zeroed. */
kiln_status kn_npy_read(const char *path, kn_tensor *out);

/* KILN_ERR_NUMERIC naming the first nan or inf of a float array. */
kiln_status kn_npy_check_finite(const char *path, const kn_tensor *t);

/* Makes t f32 the way the training data loader reads inputs: uint8 scaled by 1/255 (pixels, exactly as IDX
 * images), every other dtype cast to float (float64 rounded once, refusing a finite value a float cannot
 * hold). t->data is replaced (free() it as before). */
kiln_status kn_npy_to_f32(const char *path, kn_tensor *t);

/* Writes `t` (any dtype the reader reads; bf16 as its uint16 bit patterns) to `path`. Strings are written
 * as <U<n> (n the most code points of an element, at least 1) when all are UTF-8, otherwise as |S<n>. */
kiln_status kn_npy_write(const char *path, const kn_tensor *t);

#endif
