/* Affine integer storage: x = (q - zero_point) * scale, with q an integer of 8, 4, 2 or 1 bits and one
 * scale (and zero point) per tensor, per channel (an index of `axis`) or per block (`block`
 * consecutive elements along the last axis).
 *
 * Encoding and the choice of scale and zero point from each group's range are core/quant.h's, the
 * arithmetic of ONNX's QuantizeLinear, so that decoding is exactly its DequantizeLinear.
 */
#include <float.h>
#include <math.h>
#include <stdlib.h>

#include "core/quant.h"
#include "format/storage_internal.h"

void kn_affine_range(kn_encoding e, int *lo, int *hi) {
    switch (e) {
    case KN_ENC_AFFINE_I8: *lo = -128, *hi = 127; return;
    case KN_ENC_AFFINE_U8: *lo = 0, *hi = 255; return;
    case KN_ENC_AFFINE_I4: *lo = -8, *hi = 7; return;
    case KN_ENC_AFFINE_I2: *lo = -2, *hi = 1; return;
    default: *lo = 0, *hi = 1; return; /* i1 */
    }
}

/* u8 and i1 are unsigned; their zero points are u8, the others' i8. */
static bool is_unsigned(kn_encoding e) { return e == KN_ENC_AFFINE_U8 || e == KN_ENC_AFFINE_I1; }

int kn_affine_zero_point(const kn_storage *s, int64_t g) {
    if (!s->zero_point)
        return 0;
    return is_unsigned(s->encoding) ? ((const uint8_t *)s->zero_point)[g] : ((const int8_t *)s->zero_point)[g];
}

int kn_affine_level(const kn_storage *s, int64_t i) {
    unsigned code = kn_packed_get(s->payload, i, s->bits);
    if (is_unsigned(s->encoding))
        return (int)code;
    unsigned sign = 1u << (s->bits - 1); /* two's complement of `bits` bits */
    return (int)(code ^ sign) - (int)sign;
}

/* The group of element (row r, column c) of the (rows, cols) view; `inner` is the product of the dims
 * after the channel axis. */
typedef struct affine_groups {
    int64_t rows, cols, inner, channels, blocks_per_row;
} affine_groups;

static affine_groups groups_of(const kn_storage *s) {
    affine_groups a = {kn_packed_rows(&s->shape), kn_packed_cols(&s->shape), 1, 1, 1};
    if (s->axis >= 0) {
        a.inner = kn_shape_span(&s->shape, s->axis + 1, s->shape.ndim);
        a.channels = s->shape.d[s->axis];
    }
    if (s->block > 0)
        a.blocks_per_row = (a.cols + s->block - 1) / s->block;
    return a;
}

static int64_t group_at(const kn_storage *s, const affine_groups *a, int64_t r, int64_t c) {
    if (s->axis >= 0)
        return (r * a->cols + c) / a->inner % a->channels;
    if (s->block > 0)
        return r * a->blocks_per_row + c / s->block;
    return 0;
}

/* ---- encoding ---- */

kiln_status kn_affine_encode(kn_arena *arena, const float *x, const kn_storage_spec *spec, kn_storage *s) {
    int64_t n = kn_shape_numel(&s->shape), bad = kn_first_non_finite(x, n);
    if (bad >= 0)
        return kn_fail(KILN_ERR_INVALID_ARG, "element %lld is %f; affine storage holds finite values",
                       (long long)bad, (double)x[bad]);
    s->axis = spec->axis;
    s->block = spec->axis < 0 ? spec->block : 0;
    affine_groups a = groups_of(s);
    int64_t n_groups = kn_storage_group_count(s);
    kn_packed_bytes(n, s->bits, &s->payload_bytes); /* <= the f32 bytes */
    float *scale = kn_arena_alloc(arena, sizeof(float) * (size_t)(n_groups ? n_groups : 1));
    uint8_t *zero_point = spec->symmetric ? NULL : kn_arena_alloc(arena, (size_t)(n_groups ? n_groups : 1));
    uint8_t *payload = kn_arena_alloc(arena, s->payload_bytes ? s->payload_bytes : 1);
    float *lo_x = calloc(2 * (size_t)(n_groups ? n_groups : 1), sizeof(float)); /* each group's range */
    if (!scale || (!spec->symmetric && !zero_point) || !payload || !lo_x) {
        free(lo_x);
        return kn_fail(KILN_ERR_NOMEM, "out of memory for %lld affine groups", (long long)n_groups);
    }
    float *hi_x = lo_x + n_groups;
    for (int64_t r = 0; r < a.rows; r++)
        for (int64_t c = 0; c < a.cols; c++) {
            int64_t k = group_at(s, &a, r, c);
            float v = x[r * a.cols + c];
            lo_x[k] = fminf(lo_x[k], v);
            hi_x[k] = fmaxf(hi_x[k], v);
        }
    int lo, hi;
    kn_affine_range(s->encoding, &lo, &hi);
    kn_quant_range range = {lo, hi};
    for (int64_t k = 0; k < n_groups; k++) {
        int32_t zp;
        kn_quant_params(lo_x[k], hi_x[k], range, spec->symmetric, &scale[k], &zp);
        if (zero_point)
            zero_point[k] = (uint8_t)(zp & 0xff); /* an i8 zero point keeps its two's-complement byte */
    }
    free(lo_x);
    s->scale = scale;
    s->zero_point = zero_point;
    for (int64_t r = 0; r < a.rows; r++)
        for (int64_t c = 0; c < a.cols; c++) {
            int64_t k = group_at(s, &a, r, c);
            int32_t level = kn_quant_level(x[r * a.cols + c], scale[k], kn_affine_zero_point(s, k), range);
            kn_packed_put(payload, r * a.cols + c, s->bits, (unsigned)level);
        }
    s->payload = payload;
    return KILN_OK;
}

/* ---- checking and decoding ---- */

kiln_status kn_affine_check(const kn_storage *s) {
    const char *name = kn_encoding_name(s->encoding);
    if (s->bits != kn_encoding_bits(s->encoding))
        return kn_fail(KILN_ERR_FORMAT, "%s storage of %d bits per element", name, s->bits);
    if (s->block < 0 || s->block > UINT32_MAX || (s->block > 0 && (s->axis != -1 || s->shape.ndim < 1)))
        return kn_fail(KILN_ERR_FORMAT, "block %lld with axis %d for a rank-%d tensor: per-block scales need "
                       "axis -1 and a rank of 1 or more", (long long)s->block, s->axis, s->shape.ndim);
    int64_t n = kn_shape_numel(&s->shape);
    size_t bytes;
    if (!kn_packed_bytes(n, s->bits, &bytes) || bytes != s->payload_bytes)
        return kn_fail(KILN_ERR_FORMAT, "%zu bytes of %s levels; %lld levels need %zu", s->payload_bytes, name,
                       (long long)n, bytes);
    if (!kn_packed_padding_is_zero(s->payload, n, s->bits))
        return kn_fail(KILN_ERR_FORMAT, "nonzero padding bits after the last %s level", name);
    if (!s->scale)
        return kn_fail(KILN_ERR_FORMAT, "%s storage without scales", name);
    int lo, hi;
    kn_affine_range(s->encoding, &lo, &hi);
    for (int64_t k = 0; k < kn_storage_group_count(s); k++) {
        if (!isfinite(s->scale[k]) || !(s->scale[k] > 0))
            return kn_fail(KILN_ERR_FORMAT, "scale %lld is %g; scales are finite and > 0", (long long)k,
                           (double)s->scale[k]);
        int zp = kn_affine_zero_point(s, k);
        if (zp < lo || zp > hi)
            return kn_fail(KILN_ERR_FORMAT, "zero point %lld is %d, outside the %s range [%d, %d]", (long long)k,
                           zp, name, lo, hi);
    }
    return KILN_OK;
}

void kn_affine_decode(const kn_storage *s, float *out) {
    affine_groups a = groups_of(s);
    for (int64_t r = 0; r < a.rows; r++)
        for (int64_t c = 0; c < a.cols; c++) {
            int64_t i = r * a.cols + c, k = group_at(s, &a, r, c);
            out[i] = (float)(kn_affine_level(s, i) - kn_affine_zero_point(s, k)) * s->scale[k];
        }
}

int64_t kn_storage_group_of(const kn_storage *s, int64_t i) {
    affine_groups a = groups_of(s);
    return group_at(s, &a, i / a.cols, i % a.cols);
}

int kn_storage_level(const kn_storage *s, int64_t i) { return kn_affine_level(s, i); }

int kn_storage_zero_point(const kn_storage *s, int64_t k) { return kn_affine_zero_point(s, k); }
