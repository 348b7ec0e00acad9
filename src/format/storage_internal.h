/* Shared by the storage codec files (storage.c and storage_{float,affine,codebook,sparse}.c). */
#ifndef KN_STORAGE_INTERNAL_H
#define KN_STORAGE_INTERNAL_H

#include "format/storage.h"

/* Packed payloads (affine levels of fewer than 8 bits, codebook indices, bitmasks) hold the codes of
 * all elements in flat order with no gaps: element i sits in bits [i * bits % 8, ...) of byte
 * i * bits / 8, the first element in the least significant bits, so n codes take ceil(n * bits / 8)
 * bytes and only the last byte has unused (zero) high bits. Format 1.1 started every row (along the
 * last axis; a bitmask's rows of its 2-D view) on a byte; the reader repacks such payloads
 * (kn_storage_repack_rows), so in memory the codes are always contiguous. */
static inline int64_t kn_packed_cols(const kn_shape *s) { return s->ndim ? s->d[s->ndim - 1] : 1; }
static inline int64_t kn_packed_rows(const kn_shape *s) { return s->ndim ? kn_shape_span(s, 0, s->ndim - 1) : 1; }

static inline unsigned kn_packed_get(const uint8_t *p, int64_t i, int bits) {
    int64_t bit = i * bits;
    return (unsigned)(p[bit / 8] >> (bit % 8)) & ((1u << bits) - 1);
}

/* ORs `code` (bits wide) into place: the payload must start zeroed. */
static inline void kn_packed_put(uint8_t *p, int64_t i, int bits, unsigned code) {
    int64_t bit = i * bits;
    p[bit / 8] |= (uint8_t)((code & ((1u << bits) - 1)) << (bit % 8));
}

/* ceil(n * bits / 8) into *out, false on overflow (n >= 0: shapes are checked first). */
bool kn_packed_bytes(int64_t n, int bits, size_t *out);

/* Whether the bits past the last of n codes are zero (a canonical payload: any flipped bit of a file
 * is caught). p holds kn_packed_bytes(n, bits) bytes. */
bool kn_packed_padding_is_zero(const uint8_t *p, int64_t n, int bits);

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
/* Level of flat element i, sign-extended for the signed encodings. */
int kn_affine_level(const kn_storage *s, int64_t i);

kiln_status kn_codebook_encode(kn_arena *arena, const float *x, const kn_storage_spec *spec, kn_storage *s);
kiln_status kn_codebook_check(const kn_storage *s);
void kn_codebook_decode(const kn_storage *s, float *out);

kiln_status kn_sparse_encode(kn_arena *arena, const float *x, const kn_storage_spec *spec, kn_storage *s);
kiln_status kn_sparse_check(const kn_storage *s);
void kn_sparse_decode(const kn_storage *s, float *out);

#endif
