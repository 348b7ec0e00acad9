/* .npy reading and writing for the CLI. Layout: "\x93NUMPY", version major and minor bytes, the header
 * length (little-endian u16 in version 1, u32 in 2 and 3), the header -- a Python dict literal such as
 *   {'descr': '<f4', 'fortran_order': False, 'shape': (5, 1, 28, 28), }
 * padded with spaces and a newline -- then the elements in C order. */
#include "npy.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "core/status.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the .npy reader and writer use little-endian data in place"
#endif

/* numpy refuses headers over 10 kB by default; a longer one is not a real array file. */
enum { NPY_MAX_HEADER = 1 << 16, NPY_ALIGN = 64 };

/* numpy's dtype strings and the kiln dtype each is read as. */
static const struct {
    const char *descr;
    kn_dtype dtype;
    size_t file_item_size;
} npy_types[] = {
    {"<f4", KN_F32, 4}, {"<f8", KN_F64, 8}, {"<f2", KN_F16, 2}, {"<i8", KN_I64, 8},
    {"<i4", KN_I32, 4}, {"<i2", KN_I16, 2}, {"|u1", KN_U8, 1},  {"|i1", KN_I8, 1},
    {"<u2", KN_U16, 2}, {"<u4", KN_U32, 4}, {"<u8", KN_U64, 8}, {"|b1", KN_BOOL, 1},
};
enum { NPY_TYPE_COUNT = sizeof npy_types / sizeof npy_types[0] };

/* ---- the header dict ---------------------------------------------------------------------------- */

/* A cursor over the header text, which is NUL-terminated. */
typedef struct header_cursor {
    const char *path;
    const char *start, *at;
} header_cursor;

static void skip_space(header_cursor *c) {
    while (*c->at == ' ' || *c->at == '\t' || *c->at == '\n' || *c->at == '\r')
        c->at++;
}

static bool take(header_cursor *c, char ch) {
    skip_space(c);
    if (*c->at != ch)
        return false;
    c->at++;
    return true;
}

static kiln_status malformed(const header_cursor *c, const char *expected) {
    return kn_fail(KILN_ERR_FORMAT, "%s: malformed .npy header: %s expected at byte %td", c->path, expected,
                   c->at - c->start);
}

/* A quoted string (numpy writes no escapes in these headers); *len bytes from *s. */
static kiln_status read_string(header_cursor *c, const char **s, size_t *len) {
    skip_space(c);
    char quote = *c->at;
    if (quote != '\'' && quote != '"')
        return malformed(c, "a quoted string");
    const char *end = strchr(c->at + 1, quote);
    if (!end)
        return malformed(c, "a closing quote");
    *s = c->at + 1;
    *len = (size_t)(end - *s);
    c->at = end + 1;
    return KILN_OK;
}

static bool string_is(const char *s, size_t len, const char *word) {
    return strlen(word) == len && memcmp(s, word, len) == 0;
}

/* "()", "(7,)", "(5, 1, 28, 28)". */
static kiln_status read_shape(header_cursor *c, kn_shape *shape) {
    shape->ndim = 0;
    if (!take(c, '('))
        return malformed(c, "'(' opening the shape");
    while (!take(c, ')')) {
        skip_space(c);
        if (*c->at < '0' || *c->at > '9')
            return malformed(c, "a dimension");
        if (shape->ndim == KN_MAX_DIMS)
            return kn_fail(KILN_ERR_UNSUPPORTED, "%s: the array has more than %d dimensions", c->path,
                           KN_MAX_DIMS);
        errno = 0;
        char *end;
        unsigned long long dim = strtoull(c->at, &end, 10);
        if (errno || dim > (unsigned long long)INT64_MAX)
            return kn_fail(KILN_ERR_FORMAT, "%s: .npy dimension %d is too large", c->path, shape->ndim);
        c->at = end;
        shape->d[shape->ndim++] = (int64_t)dim;
        if (!take(c, ',')) {
            if (!take(c, ')'))
                return malformed(c, "',' or ')' in the shape");
            break;
        }
    }
    return KILN_OK;
}

/* Parses the dict into the file's dtype (an index into npy_types) and shape. */
static kiln_status parse_header(header_cursor *c, int *type, kn_shape *shape) {
    bool seen_descr = false, seen_order = false, seen_shape = false;
    if (!take(c, '{'))
        return malformed(c, "'{'");
    while (!take(c, '}')) {
        const char *key, *value;
        size_t key_len, value_len;
        KN_TRY(read_string(c, &key, &key_len));
        if (!take(c, ':'))
            return malformed(c, "':' after a key");
        bool *seen;
        if (string_is(key, key_len, "descr")) {
            seen = &seen_descr;
            KN_TRY(read_string(c, &value, &value_len));
            *type = -1;
            for (int i = 0; i < NPY_TYPE_COUNT && *type < 0; i++)
                if (string_is(value, value_len, npy_types[i].descr))
                    *type = i;
            if (*type < 0)
                return kn_fail(KILN_ERR_UNSUPPORTED,
                               "%s: .npy dtype '%.*s' is not supported (kiln reads <f4, <f8, <f2, <i8, <i4, |u1, "
                               "|i1 and |b1)",
                               c->path, value_len > 16 ? 16 : (int)value_len, value);
        } else if (string_is(key, key_len, "fortran_order")) {
            seen = &seen_order;
            skip_space(c);
            if (strncmp(c->at, "True", 4) == 0)
                return kn_fail(KILN_ERR_UNSUPPORTED,
                               "%s: a Fortran-order array; save it in C order (numpy.ascontiguousarray)", c->path);
            if (strncmp(c->at, "False", 5) != 0)
                return malformed(c, "True or False");
            c->at += 5;
        } else if (string_is(key, key_len, "shape")) {
            seen = &seen_shape;
            KN_TRY(read_shape(c, shape));
        } else {
            return kn_fail(KILN_ERR_FORMAT, "%s: unknown key '%.*s' in the .npy header", c->path,
                           key_len > 16 ? 16 : (int)key_len, key);
        }
        if (*seen)
            return kn_fail(KILN_ERR_FORMAT, "%s: key '%.*s' is given twice in the .npy header", c->path,
                           (int)key_len, key);
        *seen = true;
        if (!take(c, ',')) {
            if (!take(c, '}'))
                return malformed(c, "',' or '}'");
            break;
        }
    }
    skip_space(c);
    if (*c->at)
        return malformed(c, "the end of the header");
    if (!seen_descr || !seen_order || !seen_shape)
        return kn_fail(KILN_ERR_FORMAT, "%s: the .npy header has no '%s'", c->path,
                       !seen_descr ? "descr" : !seen_order ? "fortran_order" : "shape");
    return KILN_OK;
}

/* ---- reading ------------------------------------------------------------------------------------ */

static uint32_t le32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Checks the preamble; *header and *header_len locate the dict inside `bytes`. */
static kiln_status locate_header(const char *path, const unsigned char *bytes, size_t size, size_t *header,
                                 size_t *header_len) {
    if (size < 10 || memcmp(bytes, "\x93NUMPY", 6) != 0)
        return kn_fail(KILN_ERR_FORMAT, "%s: not a .npy file (%s)", path, size < 10 ? "too short" : "bad magic");
    int major = bytes[6];
    if (major < 1 || major > 3)
        return kn_fail(KILN_ERR_UNSUPPORTED, "%s: .npy version %d.%d is not supported (kiln reads 1.0 to 3.0)",
                       path, major, bytes[7]);
    *header = major == 1 ? 10 : 12;
    if (size < *header)
        return kn_fail(KILN_ERR_FORMAT, "%s: truncated .npy header", path);
    *header_len = major == 1 ? (size_t)(bytes[8] | bytes[9] << 8) : le32(bytes + 8);
    if (*header_len > NPY_MAX_HEADER)
        return kn_fail(KILN_ERR_FORMAT, "%s: .npy header of %zu bytes is over kiln's limit of %d", path,
                       *header_len, NPY_MAX_HEADER);
    if (*header_len > size - *header)
        return kn_fail(KILN_ERR_FORMAT, "%s: truncated .npy header (%zu bytes announced, %zu in the file)", path,
                       *header_len, size - *header);
    return KILN_OK;
}

kiln_status cli_npy_read(const char *path, kn_tensor *out) {
    memset(out, 0, sizeof *out);
    unsigned char *bytes;
    size_t size, header = 0, header_len = 0;
    KN_TRY(cli_read_file(path, &bytes, &size));
    kiln_status st = locate_header(path, bytes, size, &header, &header_len);
    char *text = NULL;
    int type = -1;
    if (st == KILN_OK && !(text = malloc(header_len + 1)))
        st = kn_fail(KILN_ERR_NOMEM, "%s: no memory for the .npy header", path);
    if (st == KILN_OK) {
        memcpy(text, bytes + header, header_len);
        text[header_len] = '\0';
        if (strlen(text) != header_len)
            st = kn_fail(KILN_ERR_FORMAT, "%s: the .npy header holds a NUL byte", path);
    }
    if (st == KILN_OK) {
        header_cursor c = {path, text, text};
        st = parse_header(&c, &type, &out->shape);
    }
    free(text);
    size_t numel = 1, file_bytes = 0, data_at = header + header_len;
    for (int d = 0; st == KILN_OK && d < out->shape.ndim; d++)
        if (!kn_size_mul(numel, (size_t)out->shape.d[d], &numel))
            st = kn_fail(KILN_ERR_FORMAT, "%s: the .npy shape's element count overflows", path);
    if (st == KILN_OK && (!kn_size_mul(numel, npy_types[type].file_item_size, &file_bytes) ||
                          file_bytes != size - data_at))
        st = kn_fail(KILN_ERR_FORMAT, "%s: the .npy header announces %zu elements of %s (%zu bytes) but %zu bytes "
                     "follow it", path, numel, npy_types[type].descr, file_bytes, size - data_at);
    if (st == KILN_OK) {
        out->dtype = npy_types[type].dtype;
        out->data = malloc(numel ? numel * kn_dtype_size(out->dtype) : 1);
        if (out->data)
            memcpy(out->data, bytes + data_at, file_bytes);
        else
            st = kn_fail(KILN_ERR_NOMEM, "%s: no memory for %zu elements", path, numel);
    }
    free(bytes);
    if (st != KILN_OK) {
        free(out->data);
        out->data = NULL;
    }
    return st;
}

/* ---- writing ------------------------------------------------------------------------------------ */

kiln_status cli_npy_write(const char *path, const kn_tensor *t) {
    // numpy has no bfloat16: a bf16 tensor is written as its uint16 bit patterns.
    const char *descr = t->dtype == KN_BF16 ? "<u2" : NULL;
    for (int i = 0; i < NPY_TYPE_COUNT && !descr; i++)
        if (npy_types[i].dtype == t->dtype && npy_types[i].file_item_size == kn_dtype_size(t->dtype))
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
