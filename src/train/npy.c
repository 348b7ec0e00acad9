/* numpy .npy files (see npy.h): the magic "\x93NUMPY", a version byte pair, the header length (uint16
 * little-endian in version 1, uint32 in versions 2 and 3), the header -- a Python dict literal such as
 *   {'descr': '<f4', 'fortran_order': False, 'shape': (60000, 784), }
 * padded with spaces up to a newline -- then the elements in C order.
 */
#include "train/npy.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/half.h"
#include "core/status.h"
#include "train/data_internal.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the .npy reader and writer use little-endian data in place"
#endif

/* numpy itself refuses headers over 10000 bytes by default; anything near this limit is not a real file. */
enum { NPY_MAX_HEADER = 1 << 16, NPY_ALIGN = 64 };

/* numpy's dtype strings and the kiln dtype each is read as. */
static const struct {
    const char *descr;
    kn_dtype dtype;
    size_t item_size; /* in the file */
} npy_types[] = {
    {"<f4", KN_F32, 4}, {"<f8", KN_F64, 8}, {"<f2", KN_F16, 2}, {"<i8", KN_I64, 8},
    {"<i4", KN_I32, 4}, {"<i2", KN_I16, 2}, {"|u1", KN_U8, 1},  {"|i1", KN_I8, 1},
    {"<u2", KN_U16, 2}, {"<u4", KN_U32, 4}, {"<u8", KN_U64, 8}, {"|b1", KN_BOOL, 1},
};
enum { N_NPY_TYPES = sizeof npy_types / sizeof npy_types[0] };

/* What the header says. */
typedef struct npy_array {
    int type; /* index into npy_types */
    kn_shape shape;
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
    for (int i = 0; i < N_NPY_TYPES; i++) {
        if (strlen(npy_types[i].descr) == length && memcmp(npy_types[i].descr, descr, length) == 0) {
            a->type = i;
            return KILN_OK;
        }
    }
    char shown[32];
    return kn_fail(KILN_ERR_UNSUPPORTED, "%s: dtype '%s' is not supported; kiln reads <f4, <f8, <f2, <i8, <i4, <i2, "
                   "|u1, <u2, <u4, <u8, |i1 and |b1", ps->path, kn_data_snippet(descr, length, shown, sizeof shown));
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

/* The first element that is not a finite number, or -1: for float arrays (f16: its exponent all ones). */
static int64_t first_non_finite(const kn_tensor *t, size_t numel) {
    for (size_t i = 0; i < numel && t->dtype == KN_F32; i++)
        if (!isfinite(((const float *)t->data)[i]))
            return (int64_t)i;
    for (size_t i = 0; i < numel && t->dtype == KN_F64; i++)
        if (!isfinite(((const double *)t->data)[i]))
            return (int64_t)i;
    for (size_t i = 0; i < numel && t->dtype == KN_F16; i++)
        if ((((const uint16_t *)t->data)[i] & 0x7c00) == 0x7c00)
            return (int64_t)i;
    return -1;
}

kiln_status kn_npy_check_finite(const char *path, const kn_tensor *t) {
    int64_t bad = first_non_finite(t, (size_t)kn_shape_numel(&t->shape));
    if (bad >= 0)
        return kn_fail(KILN_ERR_NUMERIC, "%s: element %lld is not a finite number; kiln needs finite numbers", path,
                       (long long)bad);
    return KILN_OK;
}

kiln_status kn_npy_read(const char *path, kn_tensor *out) {
    memset(out, 0, sizeof *out);
    npy_array a = {.type = -1};
    kn_data_file f;
    KN_TRY(kn_data_file_open(&f, path));
    kiln_status st = npy_read_header(&f, &a);
    /* Count elements; every element must also fit once widened to 8 bytes (int64 labels). */
    size_t numel = 1, widest;
    for (int i = 0; i < a.shape.ndim && st == KILN_OK; i++)
        if (!kn_size_mul(numel, (size_t)a.shape.d[i], &numel) || !kn_size_mul(numel, sizeof(int64_t), &widest))
            st = kn_fail(KILN_ERR_FORMAT, "%s: the .npy shape overflows (dimension %d is %lld)", path, i,
                         (long long)a.shape.d[i]);
    uint8_t *data = NULL;
    if (st == KILN_OK)
        st = kn_data_file_read_alloc(&f, numel * npy_types[a.type].item_size, "the array data", &data);
    if (st == KILN_OK)
        st = kn_data_file_expect_end(&f);
    kn_data_file_close(&f);
    *out = (kn_tensor){.shape = a.shape, .dtype = npy_types[a.type >= 0 ? a.type : 0].dtype, .data = data};
    if (st != KILN_OK) {
        free(data);
        memset(out, 0, sizeof *out);
    }
    return st;
}

/* ---- conversion ---- */

/* Element i of t as a float (u8 as it is). */
static float element_as_float(const kn_tensor *t, size_t i) {
    switch (t->dtype) {
    case KN_F32: return ((const float *)t->data)[i];
    case KN_F16: return kn_f16_to_f32(((const uint16_t *)t->data)[i]);
    case KN_F64: return (float)((const double *)t->data)[i];
    case KN_I64: return (float)((const int64_t *)t->data)[i];
    case KN_I32: return (float)((const int32_t *)t->data)[i];
    case KN_I16: return ((const int16_t *)t->data)[i];
    case KN_U16: return ((const uint16_t *)t->data)[i];
    case KN_U32: return (float)((const uint32_t *)t->data)[i];
    case KN_U64: return (float)((const uint64_t *)t->data)[i];
    case KN_I8: return ((const int8_t *)t->data)[i];
    case KN_U8: case KN_BOOL: return ((const uint8_t *)t->data)[i];
    default: return 0;
    }
}

kiln_status kn_npy_to_f32(const char *path, kn_tensor *t) {
    if (t->dtype == KN_F32)
        return KILN_OK;
    size_t numel = (size_t)kn_shape_numel(&t->shape);
    float *x = kn_data_malloc(numel ? numel : 1, sizeof *x); // (numel)
    if (!x)
        return kn_data_nomem(path, "the array as float", numel, sizeof *x);
    if (t->dtype == KN_U8)
        kn_data_u8_to_unit(t->data, x, numel);
    else
        for (size_t i = 0; i < numel; i++)
            x[i] = element_as_float(t, i);
    for (size_t i = 0; t->dtype == KN_F64 && i < numel; i++)
        if (isfinite(((const double *)t->data)[i]) && !isfinite(x[i])) {
            double v = ((const double *)t->data)[i];
            free(x);
            return kn_fail(KILN_ERR_NUMERIC, "%s: element %zu (%g) does not fit in a float", path, i, v);
        }
    free(t->data);
    t->data = x;
    t->dtype = KN_F32;
    return KILN_OK;
}

/* ---- writing ---- */

kiln_status kn_npy_write(const char *path, const kn_tensor *t) {
    const char *descr = t->dtype == KN_BF16 ? "<u2" : NULL; // numpy has no bfloat16: its uint16 bit patterns
    for (int i = 0; i < N_NPY_TYPES && !descr; i++)
        if (npy_types[i].dtype == t->dtype && npy_types[i].item_size == kn_dtype_size(t->dtype))
            descr = npy_types[i].descr;
    size_t bytes;
    if (!descr || !kn_shape_bytes(&t->shape, t->dtype, &bytes))
        return kn_fail(KILN_ERR_INVALID_ARG, "%s: cannot write a %s tensor as .npy", path, kn_dtype_name(t->dtype));

    char dict[256];
    int len = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (", descr);
    for (int d = 0; d < t->shape.ndim; d++)
        len += snprintf(dict + len, sizeof dict - (size_t)len, "%lld, ", (long long)t->shape.d[d]);
    if (t->shape.ndim > 1)
        len -= 2; // numpy writes "(5,)" for one dimension and "(5, 10)" for more
    else if (t->shape.ndim == 1)
        len -= 1;
    len += snprintf(dict + len, sizeof dict - (size_t)len, "), }");
    // The dict is padded with spaces and ends in a newline so the data starts 64-byte aligned.
    int padded = ((10 + len + 1 + NPY_ALIGN - 1) / NPY_ALIGN) * NPY_ALIGN - 10;
    unsigned char preamble[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)(padded & 0xff),
                                  (unsigned char)(padded >> 8)};

    FILE *f = fopen(path, "wb");
    if (!f)
        return kn_fail(KILN_ERR_IO, "%s: %s", path, strerror(errno));
    bool ok = fwrite(preamble, 1, sizeof preamble, f) == sizeof preamble &&
              fprintf(f, "%s%*s\n", dict, padded - len - 1, "") == padded &&
              fwrite(t->data, 1, bytes, f) == bytes;
    ok = fclose(f) == 0 && ok;
    if (!ok) {
        remove(path);
        return kn_fail(KILN_ERR_IO, "%s: write failed", path);
    }
    return KILN_OK;
}
