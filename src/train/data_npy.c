/* numpy .npy files: the magic "\x93NUMPY", a version byte pair, the header length (uint16 little-endian in
 * version 1, uint32 in versions 2 and 3), the header -- a Python dict literal such as
 *   {'descr': '<f4', 'fortran_order': False, 'shape': (60000, 784), }
 * padded with spaces up to a newline -- then the elements in C order.
 *
 * DATA "X.npy,Y.npy": X holds the inputs, (N, ...) -> N samples of shape (...), or (N) -> samples of shape
 * (1). float32 is used as is, float64 and integers are cast to float, uint8 is scaled by 1/255 into [0, 1]
 * like IDX pixels. Y holds the targets: integers (N) or (N, 1) are class indices, floats (N) or (N, K) are
 * value targets of width 1 or K.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "train/data_internal.h"

/* numpy itself refuses headers over 10000 bytes by default; anything near this limit is not a real file. */
enum { NPY_MAX_HEADER = 1 << 20 };

typedef enum npy_dtype { NPY_F4, NPY_F8, NPY_I4, NPY_I8, NPY_U1 } npy_dtype;

static const struct {
    const char *descr;
    npy_dtype dtype;
    size_t item_size;
} npy_dtypes[] = {
    {"<f4", NPY_F4, 4}, {"<f8", NPY_F8, 8}, {"<i4", NPY_I4, 4}, {"<i8", NPY_I8, 8}, {"|u1", NPY_U1, 1},
};

typedef struct npy_array {
    const char *path;
    npy_dtype dtype;
    size_t item_size;
    kn_shape shape;
    size_t numel;
    uint8_t *data; // numel * item_size bytes, little-endian
} npy_array;

/* ---- header parsing: a cursor over the header text ---- */

typedef struct npy_parser {
    const char *path;
    const char *text, *p, *end;
} npy_parser;

static void npy_skip_space(npy_parser *ps) {
    while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r'))
        ps->p++;
}

static kiln_status npy_syntax(npy_parser *ps, const char *expected) {
    char near[24];
    return kn_fail(KILN_ERR_FORMAT, "%s: malformed .npy header: expected %s at byte %td, found '%s'", ps->path,
                   expected, ps->p - ps->text, kn_data_snippet(ps->p, (size_t)(ps->end - ps->p), near, sizeof near));
}

static bool npy_accept(npy_parser *ps, char c) {
    npy_skip_space(ps);
    if (ps->p < ps->end && *ps->p == c) {
        ps->p++;
        return true;
    }
    return false;
}

static kiln_status npy_expect(npy_parser *ps, char c, const char *expected) {
    return npy_accept(ps, c) ? KILN_OK : npy_syntax(ps, expected);
}

/* A quoted string without escapes (numpy writes none in these headers). */
static kiln_status npy_string(npy_parser *ps, const char **s, size_t *length) {
    npy_skip_space(ps);
    if (ps->p >= ps->end || (*ps->p != '\'' && *ps->p != '"'))
        return npy_syntax(ps, "a quoted string");
    char quote = *ps->p;
    const char *start = ps->p + 1, *q = start;
    while (q < ps->end && *q != quote && *q != '\\')
        q++;
    if (q >= ps->end || *q != quote)
        return npy_syntax(ps, "a quoted string without escapes");
    *s = start;
    *length = (size_t)(q - start);
    ps->p = q + 1;
    return KILN_OK;
}

static bool npy_word(npy_parser *ps, const char *word) {
    size_t n = strlen(word);
    if ((size_t)(ps->end - ps->p) >= n && memcmp(ps->p, word, n) == 0) {
        ps->p += n;
        return true;
    }
    return false;
}

static kiln_status npy_bool(npy_parser *ps, bool *value) {
    npy_skip_space(ps);
    if (npy_word(ps, "True"))
        *value = true;
    else if (npy_word(ps, "False"))
        *value = false;
    else
        return npy_syntax(ps, "True or False");
    return KILN_OK;
}

/* A tuple of non-negative integers: "()", "(5,)", "(60000, 784)". */
static kiln_status npy_shape(npy_parser *ps, kn_shape *shape) {
    memset(shape, 0, sizeof *shape);
    KN_TRY(npy_expect(ps, '(', "'(' opening the shape"));
    if (npy_accept(ps, ')'))
        return KILN_OK;
    for (;;) {
        npy_skip_space(ps);
        if (ps->p >= ps->end || *ps->p < '0' || *ps->p > '9')
            return npy_syntax(ps, "a dimension");
        if (shape->ndim == KN_MAX_DIMS)
            return kn_fail(KILN_ERR_UNSUPPORTED, "%s: the array has more than %d dimensions", ps->path,
                           KN_MAX_DIMS);
        int64_t dim = 0;
        while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9') {
            int digit = *ps->p++ - '0';
            if (dim > (INT64_MAX - digit) / 10)
                return kn_fail(KILN_ERR_FORMAT, "%s: .npy shape dimension %d overflows", ps->path, shape->ndim);
            dim = dim * 10 + digit;
        }
        shape->d[shape->ndim++] = dim;
        bool comma = npy_accept(ps, ',');
        if (npy_accept(ps, ')'))
            return KILN_OK;
        if (!comma)
            return npy_syntax(ps, "',' or ')' in the shape");
    }
}

static kiln_status npy_descr(npy_parser *ps, npy_array *a) {
    const char *descr;
    size_t length;
    KN_TRY(npy_string(ps, &descr, &length));
    for (size_t i = 0; i < sizeof npy_dtypes / sizeof npy_dtypes[0]; i++) {
        if (strlen(npy_dtypes[i].descr) == length && memcmp(npy_dtypes[i].descr, descr, length) == 0) {
            a->dtype = npy_dtypes[i].dtype;
            a->item_size = npy_dtypes[i].item_size;
            return KILN_OK;
        }
    }
    char shown[32];
    return kn_fail(KILN_ERR_UNSUPPORTED, "%s: dtype '%s' is not supported; kiln reads <f4, <f8, <i4, <i8 and |u1",
                   ps->path, kn_data_snippet(descr, length, shown, sizeof shown));
}

static kiln_status npy_parse_header(npy_parser *ps, npy_array *a) {
    bool have_descr = false, have_order = false, have_shape = false;
    KN_TRY(npy_expect(ps, '{', "'{' opening the header dict"));
    while (!npy_accept(ps, '}')) {
        const char *key;
        size_t length;
        KN_TRY(npy_string(ps, &key, &length));
        KN_TRY(npy_expect(ps, ':', "':' after a key"));
        bool *seen;
        if (length == 5 && memcmp(key, "descr", 5) == 0) {
            seen = &have_descr;
            KN_TRY(npy_descr(ps, a));
        } else if (length == 13 && memcmp(key, "fortran_order", 13) == 0) {
            seen = &have_order;
            bool fortran_order = false;
            KN_TRY(npy_bool(ps, &fortran_order));
            if (fortran_order)
                return kn_fail(KILN_ERR_UNSUPPORTED,
                               "%s: fortran_order True (column-major) arrays are not supported; save a C-order "
                               "array (numpy.ascontiguousarray)",
                               ps->path);
        } else if (length == 5 && memcmp(key, "shape", 5) == 0) {
            seen = &have_shape;
            KN_TRY(npy_shape(ps, &a->shape));
        } else {
            char shown[32];
            return kn_fail(KILN_ERR_FORMAT, "%s: unknown key '%s' in the .npy header", ps->path,
                           kn_data_snippet(key, length, shown, sizeof shown));
        }
        if (*seen)
            return kn_fail(KILN_ERR_FORMAT, "%s: key '%.*s' appears twice in the .npy header", ps->path,
                           (int)length, key);
        *seen = true;
        if (!npy_accept(ps, ',')) {
            KN_TRY(npy_expect(ps, '}', "',' or '}' after a value"));
            break;
        }
    }
    npy_skip_space(ps);
    if (ps->p != ps->end)
        return npy_syntax(ps, "the end of the header");
    if (!have_descr || !have_order || !have_shape)
        return kn_fail(KILN_ERR_FORMAT, "%s: the .npy header lacks '%s'", ps->path,
                       !have_descr ? "descr" : !have_order ? "fortran_order" : "shape");
    return KILN_OK;
}

/* ---- reading a file ---- */

static uint32_t load_le32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t load_le64(const uint8_t *p) { return (uint64_t)load_le32(p) | (uint64_t)load_le32(p + 4) << 32; }

static kiln_status npy_read_header(kn_data_file *f, npy_array *a) {
    uint8_t preamble[8];
    KN_TRY(kn_data_file_read(f, preamble, sizeof preamble, "the .npy magic"));
    if (memcmp(preamble, "\x93NUMPY", 6) != 0)
        return kn_fail(KILN_ERR_FORMAT, "%s: not a .npy file (bad magic)", f->path);
    int major = preamble[6], minor = preamble[7];
    if (major < 1 || major > 3)
        return kn_fail(KILN_ERR_UNSUPPORTED, "%s: .npy version %d.%d is not supported; kiln reads 1.0 to 3.0",
                       f->path, major, minor);

    uint8_t length_bytes[4];
    size_t length_size = major == 1 ? 2 : 4;
    KN_TRY(kn_data_file_read(f, length_bytes, length_size, "the .npy header length"));
    size_t header_length = major == 1 ? (size_t)(length_bytes[0] | length_bytes[1] << 8) : load_le32(length_bytes);
    if (header_length > NPY_MAX_HEADER)
        return kn_fail(KILN_ERR_FORMAT, "%s: .npy header length %zu is over kiln's limit of %d bytes", f->path,
                       header_length, NPY_MAX_HEADER);

    char *header = malloc(header_length + 1);
    if (!header)
        return kn_data_nomem(f->path, "the .npy header", header_length + 1, 1);
    kiln_status st = kn_data_file_read(f, header, header_length, "the .npy header");
    if (st == KILN_OK) {
        npy_parser ps = {f->path, header, header, header + header_length};
        st = npy_parse_header(&ps, a);
    }
    free(header);
    return st;
}

/* Reads the array in `path`; a->data is a new buffer (free() it). */
static kiln_status npy_read(const char *path, npy_array *a) {
    memset(a, 0, sizeof *a);
    a->path = path;
    kn_data_file f;
    KN_TRY(kn_data_file_open(&f, path));
    kiln_status st = npy_read_header(&f, a);
    if (st == KILN_OK) {
        /* Count elements; every element must also fit once widened to 8 bytes (int64 labels). */
        size_t widest;
        a->numel = 1;
        for (int i = 0; i < a->shape.ndim && st == KILN_OK; i++)
            if (!kn_size_mul(a->numel, (size_t)a->shape.d[i], &a->numel) ||
                !kn_size_mul(a->numel, sizeof(int64_t), &widest))
                st = kn_fail(KILN_ERR_FORMAT, "%s: the .npy shape overflows (dimension %d is %lld)", path, i,
                             (long long)a->shape.d[i]);
    }
    if (st == KILN_OK)
        st = kn_data_file_read_alloc(&f, a->numel * a->item_size, "the array data", &a->data);
    if (st == KILN_OK)
        st = kn_data_file_expect_end(&f);
    kn_data_file_close(&f);
    return st;
}

/* ---- converting to a dataset ---- */

static void npy_to_floats(const npy_array *a, float *dst) {
    const uint8_t *src = a->data;
    switch (a->dtype) {
    case NPY_F4:
        for (size_t i = 0; i < a->numel; i++) {
            uint32_t bits = load_le32(src + 4 * i);
            memcpy(&dst[i], &bits, sizeof bits);
        }
        break;
    case NPY_F8:
        for (size_t i = 0; i < a->numel; i++) {
            uint64_t bits = load_le64(src + 8 * i);
            double value;
            memcpy(&value, &bits, sizeof bits);
            dst[i] = (float)value;
        }
        break;
    case NPY_I4:
        for (size_t i = 0; i < a->numel; i++)
            dst[i] = (float)(int32_t)load_le32(src + 4 * i);
        break;
    case NPY_I8:
        for (size_t i = 0; i < a->numel; i++)
            dst[i] = (float)(int64_t)load_le64(src + 8 * i);
        break;
    case NPY_U1:
        kn_data_u8_to_unit(src, dst, a->numel);
        break;
    }
}

static kiln_status npy_check_finite(const npy_array *a, const float *values) {
    for (size_t i = 0; i < a->numel; i++)
        if (!isfinite(values[i]))
            return kn_fail(KILN_ERR_NUMERIC, "%s: element %zu is %g as a float32; kiln needs finite numbers",
                           a->path, i, (double)values[i]);
    return KILN_OK;
}

static kiln_status npy_fill_inputs(const npy_array *a, kn_dataset *out) {
    if (a->shape.ndim < 1)
        return kn_fail(KILN_ERR_SHAPE, "%s: X is a scalar; it needs a first dimension of samples", a->path);
    if (a->numel == 0)
        return kn_fail(KILN_ERR_FORMAT, "%s: the array is empty", a->path);
    out->count = a->shape.d[0];
    out->sample_shape = a->shape.ndim == 1 ? kn_shape_of(1, (int64_t[]){1})
                                           : kn_shape_of(a->shape.ndim - 1, a->shape.d + 1);
    out->sample_size = kn_shape_numel(&out->sample_shape);
    out->x = kn_data_malloc(a->numel, sizeof(float)); // (count, sample_size)
    if (!out->x)
        return kn_data_nomem(a->path, "the inputs", a->numel, sizeof(float));
    npy_to_floats(a, out->x);
    return npy_check_finite(a, out->x);
}

static kiln_status npy_fill_labels(const npy_array *a, kn_dataset *out) {
    if (a->shape.ndim > 2 || (a->shape.ndim == 2 && a->shape.d[1] != 1)) {
        char shape[96];
        return kn_fail(KILN_ERR_SHAPE, "%s: integer targets are class indices of shape (N) or (N, 1), not %s",
                       a->path, kn_shape_str(&a->shape, shape, sizeof shape));
    }
    out->labels = kn_data_malloc(a->numel, sizeof(int64_t)); // (count)
    if (!out->labels)
        return kn_data_nomem(a->path, "the labels", a->numel, sizeof(int64_t));
    for (size_t i = 0; i < a->numel; i++) {
        const uint8_t *p = a->data + i * a->item_size;
        int64_t label = a->dtype == NPY_I8   ? (int64_t)load_le64(p)
                        : a->dtype == NPY_I4 ? (int32_t)load_le32(p)
                                             : p[0];
        if (label < 0 || label >= KN_DATA_MAX_CLASSES)
            return kn_fail(KILN_ERR_FORMAT, "%s: label %lld at index %zu is not a class index in [0, %d)", a->path,
                           (long long)label, i, KN_DATA_MAX_CLASSES);
        out->labels[i] = label;
    }
    out->class_count = kn_data_class_count(out->labels, out->count);
    return KILN_OK;
}

static kiln_status npy_fill_values(const npy_array *a, kn_dataset *out) {
    if (a->shape.ndim > 2) {
        char shape[96];
        return kn_fail(KILN_ERR_SHAPE, "%s: float targets have shape (N) or (N, K), not %s", a->path,
                       kn_shape_str(&a->shape, shape, sizeof shape));
    }
    out->target_width = a->shape.ndim == 2 ? a->shape.d[1] : 1;
    if (out->target_width == 0)
        return kn_fail(KILN_ERR_SHAPE, "%s: the targets are empty (width 0)", a->path);
    out->targets = kn_data_malloc(a->numel, sizeof(float)); // (count, target_width)
    if (!out->targets)
        return kn_data_nomem(a->path, "the targets", a->numel, sizeof(float));
    npy_to_floats(a, out->targets);
    return npy_check_finite(a, out->targets);
}

static kiln_status npy_fill_targets(const npy_array *a, const char *x_path, kn_dataset *out) {
    if (a->shape.ndim < 1 || a->shape.d[0] != out->count)
        return kn_fail(KILN_ERR_SHAPE, "%s has %lld samples but %s has %lld", x_path, (long long)out->count,
                       a->path, a->shape.ndim < 1 ? 0ll : (long long)a->shape.d[0]);
    if (a->dtype == NPY_F4 || a->dtype == NPY_F8)
        return npy_fill_values(a, out);
    return npy_fill_labels(a, out);
}

kiln_status kn_data_load_npy(const char *x_path, const char *y_path, kn_dataset *out) {
    npy_array x, y = {0};
    kiln_status st = npy_read(x_path, &x);
    if (st == KILN_OK)
        st = npy_read(y_path, &y);
    if (st == KILN_OK)
        st = npy_fill_inputs(&x, out);
    if (st == KILN_OK)
        st = npy_fill_targets(&y, x_path, out);
    free(x.data);
    free(y.data);
    return st;
}
