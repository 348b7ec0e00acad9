/* Shared by the storage codec files (storage.c and storage_{float,affine,codebook,sparse}.c). */
#ifndef KN_STORAGE_INTERNAL_H
#define KN_STORAGE_INTERNAL_H

#include "format/storage.h"

/* Packed payloads (affine levels, codebook indices) view the tensor as (rows, cols) with cols the last
 * dimension (1 for a scalar). Each row starts on a byte boundary, and element c of a row sits in bits
 * [c * bits % 8, ...) of byte c * bits / 8: the first element in the least significant bits. */
static inline int64_t kn_packed_cols(const kn_shape *s) { return s->ndim ? s->d[s->ndim - 1] : 1; }
static inline int64_t kn_packed_rows(const kn_shape *s) { return s->ndim ? kn_shape_span(s, 0, s->ndim - 1) : 1; }

/* Bytes of one packed row of `cols` elements of `bits` bits. */
static inline int64_t kn_packed_stride(int64_t cols, int bits) { return (cols * bits + 7) / 8; }

static inline unsigned kn_packed_get(const uint8_t *row, int64_t c, int bits) {
    int64_t bit = c * bits;
    return (unsigned)(row[bit / 8] >> (bit % 8)) & ((1u << bits) - 1);
}

/* ORs `code` (bits wide) into place: the row must start zeroed. */
static inline void kn_packed_put(uint8_t *row, int64_t c, int bits, unsigned code) {
    int64_t bit = c * bits;
    row[bit / 8] |= (uint8_t)((code & ((1u << bits) - 1)) << (bit % 8));
}

/* rows * ceil(cols * bits / 8) into *out, false on overflow (shape dims are checked >= 0). */
bool kn_packed_bytes(int64_t rows, int64_t cols, int bits, size_t *out);

/* Whether the bits past the last element of every row are zero (a canonical payload: any flipped bit
 * of a file is caught). */
bool kn_packed_padding_is_zero(const uint8_t *p, int64_t rows, int64_t cols, int bits);

/* The first element of x that is NaN or infinite, or -1. */
int64_t kn_first_non_finite(const float *x, int64_t n);

/* Per family: encoding (spec already validated against the shape), checking and decoding. */
kiln_status kn_float_encode(kn_arena *arena, const float *x, kn_storage *s);
kiln_status kn_float_check(const kn_storage *s);
void kn_float_decode(const kn_storage *s, float *out);

kiln_status kn_affine_encode(kn_arena *arena, const float *x, const kn_storage_spec *spec, kn_storage *s);
kiln_status kn_affine_check(const kn_storage *s);
void kn_affine_decode(const kn_storage *s, float *out);
/* The smallest and largest level of an affine encoding. */
void kn_affine_range(kn_encoding e, int *lo, int *hi);
/* Zero point of group g (0 without zero points). */
int kn_affine_zero_point(const kn_storage *s, int64_t g);
/* Level of element c of packed row `row`, sign-extended for the signed encodings. */
int kn_affine_level(const kn_storage *s, const uint8_t *row, int64_t c);

kiln_status kn_codebook_encode(kn_arena *arena, const float *x, const kn_storage_spec *spec, kn_storage *s);
kiln_status kn_codebook_check(const kn_storage *s);
void kn_codebook_decode(const kn_storage *s, float *out);

kiln_status kn_sparse_encode(kn_arena *arena, const float *x, const kn_storage_spec *spec, kn_storage *s);
kiln_status kn_sparse_check(const kn_storage *s);
void kn_sparse_decode(const kn_storage *s, float *out);

#endif
