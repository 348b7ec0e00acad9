/* Compact storage (storage.h): what every encoding shares — names, packed rows, the checks on a spec
 * and a storage — and the dispatch to the codec families (storage_float.c, storage_affine.c,
 * storage_codebook.c, storage_sparse.c). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "format/storage_internal.h"

int kn_encoding_bits(kn_encoding e) {
    switch (e) {
    case KN_ENC_F32: return 32;
    case KN_ENC_F16:
    case KN_ENC_BF16: return 16;
    case KN_ENC_AFFINE_I8:
    case KN_ENC_AFFINE_U8: return 8;
    case KN_ENC_AFFINE_I4: return 4;
    case KN_ENC_AFFINE_I2: return 2;
    case KN_ENC_AFFINE_I1: return 1;
    case KN_ENC_CODEBOOK:
    case KN_ENC_SPARSE_CSR:
    case KN_ENC_SPARSE_BITMASK: break;
    }
    return 0;
}

bool kn_encoding_is_affine(kn_encoding e) { return e >= KN_ENC_AFFINE_I8 && e <= KN_ENC_AFFINE_I1; }

bool kn_encoding_is_sparse(kn_encoding e) { return e == KN_ENC_SPARSE_CSR || e == KN_ENC_SPARSE_BITMASK; }

const char *kn_encoding_name(kn_encoding e) {
    switch (e) {
    case KN_ENC_F32: return "f32";
    case KN_ENC_F16: return "f16";
    case KN_ENC_BF16: return "bf16";
    case KN_ENC_AFFINE_I8: return "affine i8";
    case KN_ENC_AFFINE_U8: return "affine u8";
    case KN_ENC_AFFINE_I4: return "affine i4";
    case KN_ENC_AFFINE_I2: return "affine i2";
    case KN_ENC_AFFINE_I1: return "affine i1";
    case KN_ENC_CODEBOOK: return "codebook";
    case KN_ENC_SPARSE_CSR: return "sparse CSR";
    case KN_ENC_SPARSE_BITMASK: return "sparse bitmask";
    }
    return "unknown encoding";
}

/* ---- packed codes ---- */

bool kn_packed_bytes(int64_t n, int bits, size_t *out) {
    size_t total_bits;
    if (!kn_size_mul((size_t)n, (size_t)bits, &total_bits) || total_bits > SIZE_MAX - 7)
        return false;
    *out = (total_bits + 7) / 8;
    return true;
}

bool kn_packed_padding_is_zero(const uint8_t *p, int64_t n, int bits) {
    int64_t used = n * bits % 8;
    return used == 0 || (p[n * bits / 8] & (uint8_t)(0xFF << used)) == 0;
}

/* The codes of a packed payload, viewed as the rows format 1.1 started on a byte: affine levels and
 * codebook indices along the last axis, a bitmask along its 2-D view's rows. False: no codes of 1, 2
 * or 4 bits (8-bit codes fill their bytes; a codebook of another width, read from a file, is left to
 * the codebook's check to reject). */
static bool packed_view(const kn_storage *s, int *bits, int64_t *rows, int64_t *cols) {
    if (s->encoding == KN_ENC_SPARSE_BITMASK) {
        if (s->shape.ndim < 1)
            return false;
        *bits = 1;
        *rows = s->shape.d[0];
        *cols = kn_shape_span(&s->shape, 1, s->shape.ndim);
        return true;
    }
    if (!kn_encoding_is_affine(s->encoding) && s->encoding != KN_ENC_CODEBOOK)
        return false;
    *bits = s->bits;
    *rows = kn_packed_rows(&s->shape);
    *cols = kn_packed_cols(&s->shape);
    return s->bits == 1 || s->bits == 2 || s->bits == 4;
}

bool kn_storage_has_packed_codes(const kn_storage *s) {
    int bits;
    int64_t rows, cols;
    return packed_view(s, &bits, &rows, &cols);
}

bool kn_storage_rows_share_bytes(const kn_storage *s) {
    int bits;
    int64_t rows, cols;
    return packed_view(s, &bits, &rows, &cols) && rows > 1 && cols * bits % 8 != 0;
}

kiln_status kn_storage_repack_rows(kn_arena *arena, kn_storage *s, const void *rows_payload, size_t bytes) {
    int bits;
    int64_t rows, cols;
    if (!packed_view(s, &bits, &rows, &cols))
        return kn_fail(KILN_ERR_FORMAT, "%s storage has no packed codes", kn_encoding_name(s->encoding));
    size_t row_bytes = 0, want = 0, packed = 0;
    if (!kn_packed_bytes(cols, bits, &row_bytes) || !kn_size_mul((size_t)rows, row_bytes, &want) || want != bytes)
        return kn_fail(KILN_ERR_FORMAT, "%zu bytes of %s codes in rows that start on a byte (format 1.1); "
                       "%lld rows of %lld need %zu", bytes, kn_encoding_name(s->encoding), (long long)rows,
                       (long long)cols, want);
    const uint8_t *in = rows_payload; // (rows, row_bytes)
    for (int64_t r = 0; r < rows; r++)
        if (!kn_packed_padding_is_zero(in + (size_t)r * row_bytes, cols, bits))
            return kn_fail(KILN_ERR_FORMAT, "nonzero padding bits after the last %s code of row %lld",
                           kn_encoding_name(s->encoding), (long long)r);
    kn_packed_bytes(rows * cols, bits, &packed); /* <= want */
    uint8_t *out = kn_arena_alloc(arena, packed ? packed : 1);
    if (!out)
        return kn_fail(KILN_ERR_NOMEM, "out of memory repacking %zu bytes of %s codes", bytes,
                       kn_encoding_name(s->encoding));
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++)
            kn_packed_put(out, r * cols + c, bits, kn_packed_get(in + (size_t)r * row_bytes, c, bits));
    s->payload = out;
    s->payload_bytes = packed;
    return KILN_OK;
}

int64_t kn_first_non_finite(const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(x[i]))
            return i;
    return -1;
}

/* ---- groups of an affine storage ---- */

int64_t kn_storage_group_count(const kn_storage *s) {
    if (s->axis >= 0)
        return s->shape.d[s->axis];
    if (s->block > 0)
        return kn_packed_rows(&s->shape) * ((kn_packed_cols(&s->shape) + s->block - 1) / s->block);
    return 1;
}

kn_shape kn_storage_scale_shape(const kn_storage *s) {
    if (s->axis >= 0)
        return kn_shape_of(1, (int64_t[]){s->shape.d[s->axis]});
    if (s->block > 0)
        return kn_shape_of(2, (int64_t[]){kn_packed_rows(&s->shape),
                                          (kn_packed_cols(&s->shape) + s->block - 1) / s->block});
    return kn_shape_of(0, NULL);
}

/* ---- checks ---- */

/* The logical shape: a real rank, non-negative dims, and a numel whose f32 bytes fit in size_t (which
 * keeps every element count below in int64_t). */
static kiln_status check_shape(const kn_shape *shape) {
    size_t bytes;
    if (shape->ndim < 0 || shape->ndim > KN_MAX_DIMS)
        return kn_fail(KILN_ERR_FORMAT, "rank %d; kiln supports 0 to %d", shape->ndim, KN_MAX_DIMS);
    if (!kn_shape_bytes(shape, KN_F32, &bytes))
        return kn_fail(KILN_ERR_FORMAT, "a shape with a negative dimension or an overflowing size");
    return KILN_OK;
}

/* axis: -1 or an axis of the shape. */
static kiln_status check_axis(const kn_storage *s) {
    if (s->axis < -1 || s->axis >= s->shape.ndim)
        return kn_fail(KILN_ERR_FORMAT, "axis %d is not -1 or an axis of a rank-%d tensor", s->axis,
                       s->shape.ndim);
    return KILN_OK;
}

kiln_status kn_storage_check(const kn_storage *s) {
    KN_TRY(check_shape(&s->shape));
    if (!s->payload && s->payload_bytes)
        return kn_fail(KILN_ERR_FORMAT, "%s storage without its bytes", kn_encoding_name(s->encoding));
    switch (s->encoding) {
    case KN_ENC_F32:
    case KN_ENC_F16:
    case KN_ENC_BF16:
        return kn_float_check(s);
    case KN_ENC_AFFINE_I8:
    case KN_ENC_AFFINE_U8:
    case KN_ENC_AFFINE_I4:
    case KN_ENC_AFFINE_I2:
    case KN_ENC_AFFINE_I1:
        KN_TRY(check_axis(s));
        return kn_affine_check(s);
    case KN_ENC_CODEBOOK:
        KN_TRY(check_axis(s));
        return kn_codebook_check(s);
    case KN_ENC_SPARSE_CSR:
    case KN_ENC_SPARSE_BITMASK:
        return kn_sparse_check(s);
    }
    return kn_fail(KILN_ERR_FORMAT, "storage encoding %d is unknown", (int)s->encoding);
}

void kn_storage_decode(const kn_storage *s, float *out) {
    switch (s->encoding) {
    case KN_ENC_F32:
    case KN_ENC_F16:
    case KN_ENC_BF16: kn_float_decode(s, out); return;
    case KN_ENC_AFFINE_I8:
    case KN_ENC_AFFINE_U8:
    case KN_ENC_AFFINE_I4:
    case KN_ENC_AFFINE_I2:
    case KN_ENC_AFFINE_I1: kn_affine_decode(s, out); return;
    case KN_ENC_CODEBOOK: kn_codebook_decode(s, out); return;
    case KN_ENC_SPARSE_CSR:
    case KN_ENC_SPARSE_BITMASK: kn_sparse_decode(s, out); return;
    }
}

/* ---- encoding ---- */

/* What the spec asks must make sense for the shape before any work is done. */
static kiln_status check_spec(const kn_shape *shape, const kn_storage_spec *spec) {
    bool per_channel = kn_encoding_is_affine(spec->encoding) || spec->encoding == KN_ENC_CODEBOOK;
    if (per_channel && (spec->axis < -1 || spec->axis >= shape->ndim))
        return kn_fail(KILN_ERR_INVALID_ARG, "axis %d is not -1 or an axis of a rank-%d tensor", spec->axis,
                       shape->ndim);
    if (kn_encoding_is_affine(spec->encoding) && spec->block != 0) {
        if (spec->block < 0 || spec->block > UINT32_MAX)
            return kn_fail(KILN_ERR_INVALID_ARG, "block size %lld is not 1 to 2^32 - 1", (long long)spec->block);
        if (spec->axis != -1)
            return kn_fail(KILN_ERR_INVALID_ARG, "per-block scales go along the last axis; axis must be -1");
    }
    if (spec->encoding == KN_ENC_CODEBOOK && spec->bits != 1 && spec->bits != 2 && spec->bits != 4 &&
        spec->bits != 8)
        return kn_fail(KILN_ERR_INVALID_ARG, "codebook indices of %d bits; 1, 2, 4 or 8 are supported",
                       spec->bits);
    if (kn_encoding_is_sparse(spec->encoding)) {
        if (shape->ndim < 1)
            return kn_fail(KILN_ERR_INVALID_ARG, "sparse storage needs a tensor of rank 1 or more");
        kn_encoding v = spec->values;
        if (v != KN_ENC_F32 && v != KN_ENC_F16 && v != KN_ENC_BF16 && !kn_encoding_is_affine(v))
            return kn_fail(KILN_ERR_INVALID_ARG, "sparse values stored as %s; f32, f16, bf16 or affine "
                           "are supported", kn_encoding_name(v));
    }
    return KILN_OK;
}

kiln_status kn_storage_encode(kn_arena *arena, const float *x, const kn_shape *shape,
                              const kn_storage_spec *spec, kn_storage **out) {
    *out = NULL;
    kiln_status st = check_shape(shape);
    if (st != KILN_OK)
        return kn_fail(KILN_ERR_INVALID_ARG, "cannot store this tensor: %s", kiln_last_error());
    KN_TRY(check_spec(shape, spec));
    kn_storage *s = kn_arena_alloc(arena, sizeof *s);
    if (!s)
        return kn_fail(KILN_ERR_NOMEM, "out of memory for a storage descriptor");
    s->encoding = spec->encoding;
    s->shape = *shape;
    s->axis = -1;
    s->bits = kn_encoding_bits(spec->encoding);
    switch (spec->encoding) {
    case KN_ENC_F32:
    case KN_ENC_F16:
    case KN_ENC_BF16: KN_TRY(kn_float_encode(arena, x, s)); break;
    case KN_ENC_AFFINE_I8:
    case KN_ENC_AFFINE_U8:
    case KN_ENC_AFFINE_I4:
    case KN_ENC_AFFINE_I2:
    case KN_ENC_AFFINE_I1: KN_TRY(kn_affine_encode(arena, x, spec, s)); break;
    case KN_ENC_CODEBOOK: KN_TRY(kn_codebook_encode(arena, x, spec, s)); break;
    case KN_ENC_SPARSE_CSR:
    case KN_ENC_SPARSE_BITMASK: KN_TRY(kn_sparse_encode(arena, x, spec, s)); break;
    }
    *out = s;
    return KILN_OK;
}

kiln_status kn_value_compress(kn_graph *g, int id, const kn_storage_spec *spec) {
    if (id < 0 || id >= g->n_values)
        return kn_fail(KILN_ERR_INVALID_ARG, "value %d does not exist (%d values)", id, g->n_values);
    kn_value *v = &g->values[id];
    if (v->kind != KN_VALUE_PARAM && v->kind != KN_VALUE_STATE && v->kind != KN_VALUE_CONST)
        return kn_fail(KILN_ERR_INVALID_ARG, "value '%s' is not an initializer", v->name);
    if (v->dtype != KN_F32 || !v->data)
        return kn_fail(KILN_ERR_INVALID_ARG, "value '%s' is %s%s; compact storage holds f32 data", v->name,
                       kn_dtype_name(v->dtype), v->data ? "" : " without data");
    if (spec->encoding == KN_ENC_F32)
        return kn_fail(KILN_ERR_INVALID_ARG, "value '%s': plain f32 needs no storage", v->name);
    kn_storage *s;
    kiln_status st = kn_storage_encode(&g->arena, v->data, &v->shape, spec, &s);
    if (st != KILN_OK) {
        kn_error_prefix("value '%s' as %s: ", v->name, kn_encoding_name(spec->encoding));
        return st;
    }
    kn_storage_decode(s, v->data);
    v->storage = s;
    return KILN_OK;
}

/* ---- sizes and names ---- */

int64_t kn_storage_bytes(const kn_storage *s) {
    int64_t bytes = (int64_t)s->payload_bytes;
    if (kn_encoding_is_affine(s->encoding))
        bytes += kn_storage_group_count(s) * ((int64_t)sizeof(float) + (s->zero_point ? 1 : 0));
    if (s->encoding == KN_ENC_CODEBOOK)
        bytes += (s->axis >= 0 ? s->shape.d[s->axis] : 1) * s->k * (int64_t)sizeof(float);
    if (s->values)
        bytes += kn_storage_bytes(s->values);
    return bytes;
}

static const char *granularity(const kn_storage *s) {
    return s->axis >= 0 ? "per-channel" : s->block > 0 ? "per-block" : "per-tensor";
}

char *kn_storage_describe(const kn_storage *s, char *buf, size_t size) {
    if (kn_encoding_is_affine(s->encoding))
        snprintf(buf, size, "%s %s", kn_encoding_name(s->encoding), granularity(s));
    else if (s->encoding == KN_ENC_CODEBOOK)
        snprintf(buf, size, "codebook %d-bit %s", s->bits, granularity(s));
    else if (kn_encoding_is_sparse(s->encoding))
        snprintf(buf, size, "%s (%s values)", kn_encoding_name(s->encoding),
                 kn_encoding_name(s->values->encoding));
    else
        snprintf(buf, size, "%s", kn_encoding_name(s->encoding));
    return buf;
}
