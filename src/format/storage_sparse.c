/* Sparse storage of a pruned tensor viewed as a (dims[0], product of the other dims) matrix: only the
 * stored elements — every element whose bits are not those of +0.0, so -0.0 and NaN survive — are
 * kept, in row-major order, as a dense storage of their own (f32, f16, bf16 or affine), and where they
 * are is given either as CSR (i32 row pointers, then i32 column indices) or as a bitmask with one bit
 * per element, packed contiguously like affine levels. */
#include <stdlib.h>
#include <string.h>

#include "format/storage_internal.h"

static int64_t sparse_rows(const kn_shape *s) { return s->d[0]; }
static int64_t sparse_cols(const kn_shape *s) { return kn_shape_span(s, 1, s->ndim); }

static bool is_stored(float v) {
    uint32_t bits;
    memcpy(&bits, &v, sizeof bits);
    return bits != 0;
}

/* ---- encoding ---- */

static kiln_status encode_positions(kn_arena *arena, const float *x, kn_storage *s) {
    int64_t rows = sparse_rows(&s->shape), cols = sparse_cols(&s->shape);
    if (s->encoding == KN_ENC_SPARSE_CSR) {
        if (cols > INT32_MAX || s->nnz > INT32_MAX)
            return kn_fail(KILN_ERR_INVALID_ARG, "%lld columns and %lld stored elements do not fit CSR's i32 "
                           "indices", (long long)cols, (long long)s->nnz);
        s->payload_bytes = sizeof(int32_t) * (size_t)(rows + 1 + s->nnz);
    } else {
        kn_packed_bytes(rows * cols, 1, &s->payload_bytes); /* <= the f32 bytes */
    }
    uint8_t *payload = kn_arena_alloc(arena, s->payload_bytes ? s->payload_bytes : 1);
    if (!payload)
        return kn_fail(KILN_ERR_NOMEM, "out of memory for %zu bytes of sparse indices", s->payload_bytes);
    int32_t *row_ptr = (int32_t *)payload, *col = row_ptr + rows + 1; // CSR: (rows + 1), (nnz)
    int64_t nnz = 0;
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t c = 0; c < cols; c++) {
            if (!is_stored(x[r * cols + c]))
                continue;
            if (s->encoding == KN_ENC_SPARSE_CSR)
                col[nnz] = (int32_t)c;
            else
                kn_packed_put(payload, r * cols + c, 1, 1);
            nnz++;
        }
        if (s->encoding == KN_ENC_SPARSE_CSR)
            row_ptr[r + 1] = (int32_t)nnz;
    }
    s->payload = payload;
    return KILN_OK;
}

kiln_status kn_sparse_encode(kn_arena *arena, const float *x, const kn_storage_spec *spec, kn_storage *s) {
    int64_t n = kn_shape_numel(&s->shape);
    s->nnz = 0;
    for (int64_t i = 0; i < n; i++)
        s->nnz += is_stored(x[i]);
    KN_TRY(encode_positions(arena, x, s));
    float *stored = malloc(sizeof(float) * (size_t)(s->nnz ? s->nnz : 1));
    if (!stored)
        return kn_fail(KILN_ERR_NOMEM, "out of memory gathering %lld stored elements", (long long)s->nnz);
    int64_t j = 0;
    for (int64_t i = 0; i < n; i++)
        if (is_stored(x[i]))
            stored[j++] = x[i];
    kn_storage_spec values = {.encoding = spec->values, .symmetric = spec->values_symmetric, .axis = -1};
    kn_shape shape = kn_shape_of(1, &s->nnz);
    kn_storage *v;
    kiln_status st = kn_storage_encode(arena, stored, &shape, &values, &v);
    free(stored);
    if (st != KILN_OK) {
        kn_error_prefix("the stored elements: ");
        return st;
    }
    s->values = v;
    return KILN_OK;
}

/* ---- checking and decoding ---- */

static kiln_status check_csr(const kn_storage *s, int64_t rows, int64_t cols) {
    size_t bytes;
    if (!kn_size_add((size_t)rows + 1, (size_t)s->nnz, &bytes) || !kn_size_mul(bytes, sizeof(int32_t), &bytes) ||
        bytes != s->payload_bytes)
        return kn_fail(KILN_ERR_FORMAT, "%zu bytes of CSR indices; %lld rows and %lld stored elements need "
                       "(rows + 1 + stored) x 4", s->payload_bytes, (long long)rows, (long long)s->nnz);
    int32_t row_ptr[2], c, previous = -1;
    const unsigned char *p = s->payload, *col = p + sizeof(int32_t) * (size_t)(rows + 1);
    memcpy(row_ptr, p, sizeof(int32_t));
    if (row_ptr[0] != 0)
        return kn_fail(KILN_ERR_FORMAT, "CSR row pointer 0 is %d, not 0", row_ptr[0]);
    for (int64_t r = 0; r < rows; r++) {
        memcpy(&row_ptr[1], p + sizeof(int32_t) * (size_t)(r + 1), sizeof(int32_t));
        if (row_ptr[1] < row_ptr[0] || row_ptr[1] > s->nnz)
            return kn_fail(KILN_ERR_FORMAT, "CSR row pointer %lld is %d; row pointers rise from 0 to the "
                           "%lld stored elements", (long long)(r + 1), row_ptr[1], (long long)s->nnz);
        previous = -1;
        for (int32_t j = row_ptr[0]; j < row_ptr[1]; j++) {
            memcpy(&c, col + sizeof(int32_t) * (size_t)j, sizeof c);
            if (c <= previous || c >= cols)
                return kn_fail(KILN_ERR_FORMAT, "row %lld: column index %d %s", (long long)r, c,
                               c >= cols ? "is past the last column" : "does not increase");
            previous = c;
        }
        row_ptr[0] = row_ptr[1];
    }
    if (row_ptr[0] != s->nnz)
        return kn_fail(KILN_ERR_FORMAT, "the last CSR row pointer is %d, not the %lld stored elements", row_ptr[0],
                       (long long)s->nnz);
    return KILN_OK;
}

static kiln_status check_bitmask(const kn_storage *s, int64_t rows, int64_t cols) {
    size_t bytes;
    if (!kn_packed_bytes(rows * cols, 1, &bytes) || bytes != s->payload_bytes)
        return kn_fail(KILN_ERR_FORMAT, "%zu bytes of bitmask; %lld elements need %zu", s->payload_bytes,
                       (long long)(rows * cols), bytes);
    if (!kn_packed_padding_is_zero(s->payload, rows * cols, 1))
        return kn_fail(KILN_ERR_FORMAT, "nonzero padding bits after the last bit of a bitmask");
    int64_t ones = 0;
    const uint8_t *p = s->payload;
    for (size_t i = 0; i < bytes; i++)
        ones += __builtin_popcount(p[i]);
    if (ones != s->nnz)
        return kn_fail(KILN_ERR_FORMAT, "the bitmask marks %lld elements but %lld are stored", (long long)ones,
                       (long long)s->nnz);
    return KILN_OK;
}

kiln_status kn_sparse_check(const kn_storage *s) {
    if (s->shape.ndim < 1)
        return kn_fail(KILN_ERR_FORMAT, "sparse storage of a rank-0 tensor");
    if (s->axis != -1 || s->block != 0 || s->bits != 0)
        return kn_fail(KILN_ERR_FORMAT, "sparse storage has an axis, block or bit width");
    int64_t rows = sparse_rows(&s->shape), cols = sparse_cols(&s->shape);
    const kn_storage *v = s->values;
    if (!v)
        return kn_fail(KILN_ERR_FORMAT, "sparse storage without its values");
    if (v->encoding != KN_ENC_F32 && v->encoding != KN_ENC_F16 && v->encoding != KN_ENC_BF16 &&
        !kn_encoding_is_affine(v->encoding))
        return kn_fail(KILN_ERR_FORMAT, "sparse values stored as %s; f32, f16, bf16 or affine are allowed",
                       kn_encoding_name(v->encoding));
    if (v->shape.ndim != 1 || v->shape.d[0] != s->nnz)
        return kn_fail(KILN_ERR_FORMAT, "the values of %lld stored elements are not a vector of that length",
                       (long long)s->nnz);
    if (s->nnz < 0 || s->nnz > rows * cols)
        return kn_fail(KILN_ERR_FORMAT, "%lld stored elements of %lld", (long long)s->nnz,
                       (long long)(rows * cols));
    kiln_status st = kn_storage_check(v);
    if (st != KILN_OK) {
        kn_error_prefix("sparse values: ");
        return st;
    }
    return s->encoding == KN_ENC_SPARSE_CSR ? check_csr(s, rows, cols) : check_bitmask(s, rows, cols);
}

/* The stored elements are decoded into the end of `out`, then moved to their places front to back:
 * the j-th of nnz lands at a position <= numel - nnz + j, so it never overwrites one not moved yet,
 * and the gaps it leaves behind are zeroed as it goes. */
void kn_sparse_decode(const kn_storage *s, float *out) {
    int64_t rows = sparse_rows(&s->shape), cols = sparse_cols(&s->shape), n = rows * cols;
    const float *stored = out + (n - s->nnz);
    kn_storage_decode(s->values, out + (n - s->nnz));
    const uint8_t *p = s->payload;
    int64_t next = 0, j = 0;
    for (int64_t r = 0; r < rows; r++) {
        int32_t begin = 0, end = 0;
        if (s->encoding == KN_ENC_SPARSE_CSR) {
            memcpy(&begin, p + sizeof(int32_t) * (size_t)r, sizeof begin);
            memcpy(&end, p + sizeof(int32_t) * (size_t)(r + 1), sizeof end);
        }
        const unsigned char *col = p + sizeof(int32_t) * (size_t)(rows + 1);
        for (int64_t c = 0; c < cols; c++) {
            bool here;
            if (s->encoding == KN_ENC_SPARSE_CSR) {
                int32_t at = -1;
                if (begin < end)
                    memcpy(&at, col + sizeof(int32_t) * (size_t)begin, sizeof at);
                here = at == c;
                begin += here;
            } else {
                here = kn_packed_get(p, r * cols + c, 1);
            }
            int64_t i = r * cols + c;
            if (!here)
                continue;
            float v = stored[j++];
            for (; next < i; next++)
                out[next] = 0.0f;
            out[i] = v;
            next = i + 1;
        }
    }
    for (; next < n; next++)
        out[next] = 0.0f;
}
