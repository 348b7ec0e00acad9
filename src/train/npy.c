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

/* Text arrays: numpy's fixed-width '<U<n>' (n UTF-32 code points per element) and '|S<n>' (n bytes),
 * each element padded with zeros. Read as KN_STRING; a width above this is no real file. */
enum { NPY_MAX_STRING_WIDTH = 1 << 20 };

/* What the header says. */
typedef struct npy_array {
    int type;           /* index into npy_types, or -1 for text */
    char text_kind;     /* text: 'U' (UTF-32) or 'S' (bytes) */
    size_t text_width;  /* text: code points or bytes per element */
    kn_shape shape;
} npy_array;

/* Bytes of one element in the file. */
static size_t npy_item_size(const npy_array *a) {
    if (a->type >= 0)
        return npy_types[a->type].item_size;
    return a->text_kind == 'U' ? 4 * a->text_width : a->text_width;
}

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

/* "<U12" or "|S7": the kind and width of a text dtype; false for any other descr. */
static bool npy_text_descr(const char *descr, size_t length, npy_array *a) {
    if (length < 3 || !((descr[0] == '<' && descr[1] == 'U') || (descr[0] == '|' && descr[1] == 'S')))
        return false;
    size_t width = 0;
    for (size_t i = 2; i < length; i++) {
        if (descr[i] < '0' || descr[i] > '9' || width > NPY_MAX_STRING_WIDTH)
            return false;
        width = width * 10 + (size_t)(descr[i] - '0');
    }
    if (width > NPY_MAX_STRING_WIDTH)
        return false;
    a->type = -1;
    a->text_kind = descr[1];
    a->text_width = width;
    return true;
}

static kiln_status npy_descr(npy_parser *ps, npy_array *a) {
    const char *descr;
    size_t length;
    KN_TRY(npy_string(ps, &descr, &length));
    if (npy_text_descr(descr, length, a))
        return KILN_OK;
    for (int i = 0; i < N_NPY_TYPES; i++) {
        if (strlen(npy_types[i].descr) == length && memcmp(npy_types[i].descr, descr, length) == 0) {
            a->type = i;
            return KILN_OK;
        }
    }
    char shown[32];
    return kn_fail(KILN_ERR_UNSUPPORTED, "%s: dtype '%s' is not supported; kiln reads <f4, <f8, <f2, <i8, <i4, <i2, "
                   "|u1, <u2, <u4, <u8, |i1, |b1, and text <U<n> and |S<n> (n up to %d)", ps->path,
                   kn_data_snippet(descr, length, shown, sizeof shown), NPY_MAX_STRING_WIDTH);
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

/* ---- text ---- */

/* Appends code point c as UTF-8 at out (room for 4 bytes); returns the bytes written, 0 when c is no
 * Unicode scalar value (a surrogate or above U+10FFFF). */
static size_t utf8_put(uint32_t c, char *out) {
    if (c < 0x80) {
        out[0] = (char)c;
        return 1;
    }
    if (c < 0x800) {
        out[0] = (char)(0xc0 | c >> 6);
        out[1] = (char)(0x80 | (c & 0x3f));
        return 2;
    }
    if ((c >= 0xd800 && c <= 0xdfff) || c > 0x10ffff)
        return 0;
    size_t n = c < 0x10000 ? 3 : 4;
    out[0] = (char)(n == 3 ? 0xe0 | c >> 12 : 0xf0 | c >> 18);
    for (size_t k = 1; k < n; k++)
        out[k] = (char)(0x80 | ((c >> (6 * (n - 1 - k))) & 0x3f));
    return n;
}

/* The next code point of the UTF-8 string at *s, advancing it; false at invalid UTF-8 (overlong forms,
 * surrogates, above U+10FFFF, a truncated sequence). */
static bool utf8_next(const unsigned char **s, uint32_t *c) {
    const unsigned char *p = *s;
    int n = p[0] < 0x80 ? 0 : (p[0] & 0xe0) == 0xc0 ? 1 : (p[0] & 0xf0) == 0xe0 ? 2 : (p[0] & 0xf8) == 0xf0 ? 3 : -1;
    if (n < 0)
        return false;
    uint32_t v = n == 0 ? p[0] : p[0] & (0x3f >> n);
    for (int k = 1; k <= n; k++) {
        if ((p[k] & 0xc0) != 0x80) /* also stops at the NUL */
            return false;
        v = v << 6 | (p[k] & 0x3f);
    }
    static const uint32_t least[4] = {0, 0x80, 0x800, 0x10000};
    if (v < least[n] || (v >= 0xd800 && v <= 0xdfff) || v > 0x10ffff)
        return false;
    *c = v;
    *s = p + n + 1;
    return true;
}

/* Element i of a text array: its used length in units (code points or bytes), without the zero padding;
 * a zero before the last nonzero unit is refused (kiln's strings end at the first). */
static kiln_status npy_text_length(const char *path, const npy_array *a, const uint8_t *item, size_t i,
                                   size_t *units) {
    size_t unit = a->text_kind == 'U' ? 4 : 1, n = a->text_width;
    while (n > 0 && (unit == 1 ? item[n - 1] == 0 : load_le32(item + 4 * (n - 1)) == 0))
        n--;
    for (size_t k = 0; k < n; k++)
        if (unit == 1 ? item[k] == 0 : load_le32(item + 4 * k) == 0)
            return kn_fail(KILN_ERR_FORMAT, "%s: text element %zu holds a NUL character", path, i);
    *units = n;
    return KILN_OK;
}

/* A text array's elements (numel, of npy_item_size bytes each, at data) as kiln's API passes strings:
 * numel `const char *`, then the UTF-8 strings they point at, one malloc'ed block into *block. */
static kiln_status npy_text_to_strings(const char *path, const npy_array *a, const uint8_t *data, size_t numel,
                                       void **block) {
    size_t item = npy_item_size(a), bytes;
    /* Every unit takes at most 4 bytes of UTF-8 (a byte of '|S' one); sizes are checked as they add up. */
    if (!kn_size_mul(numel, sizeof(char *), &bytes))
        return kn_fail(KILN_ERR_FORMAT, "%s: the text array's size overflows", path);
    for (size_t i = 0; i < numel; i++) {
        size_t units, utf8;
        KN_TRY(npy_text_length(path, a, data + i * item, i, &units));
        if (!kn_size_mul(units, 4, &utf8) || !kn_size_add(bytes, utf8 + 1, &bytes))
            return kn_fail(KILN_ERR_FORMAT, "%s: the text array's size overflows", path);
    }
    char **ptrs = malloc(bytes ? bytes : 1);
    if (!ptrs)
        return kn_data_nomem(path, "the text array", bytes, 1);
    char *text = (char *)(ptrs + numel);
    for (size_t i = 0; i < numel; i++) {
        const uint8_t *e = data + i * item;
        size_t units;
        npy_text_length(path, a, e, i, &units); /* checked above */
        ptrs[i] = text;
        for (size_t k = 0; k < units; k++) {
            size_t n = a->text_kind == 'S' ? (*text = (char)e[k], 1) : utf8_put(load_le32(e + 4 * k), text);
            if (!n) {
                free(ptrs);
                return kn_fail(KILN_ERR_FORMAT, "%s: text element %zu holds U+%X, which is no Unicode character",
                               path, i, (unsigned)load_le32(e + 4 * k));
            }
            text += n;
        }
        *text++ = '\0';
    }
    *block = ptrs;
    return KILN_OK;
}

kiln_status kn_npy_read(const char *path, kn_tensor *out) {
    memset(out, 0, sizeof *out);
    npy_array a = {.type = -1, .text_kind = 0};
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
    size_t data_bytes = 0;
    if (st == KILN_OK && !kn_size_mul(numel, npy_item_size(&a), &data_bytes))
        st = kn_fail(KILN_ERR_FORMAT, "%s: the .npy data size overflows", path);
    if (st == KILN_OK)
        st = kn_data_file_read_alloc(&f, data_bytes, "the array data", &data);
    if (st == KILN_OK)
        st = kn_data_file_expect_end(&f);
    kn_data_file_close(&f);
    if (st == KILN_OK && a.type < 0) { /* text: replaced by the strings */
        void *strings = NULL;
        st = npy_text_to_strings(path, &a, data, numel, &strings);
        free(data);
        data = strings;
    }
    *out = (kn_tensor){.shape = a.shape, .dtype = a.type >= 0 ? npy_types[a.type].dtype : KN_STRING, .data = data};
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
    if (t->dtype == KN_STRING)
        return kn_fail(KILN_ERR_INVALID_ARG, "%s holds text, not numbers", path);
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

/* The descr of a string tensor's array: '<U<n>' with n the most code points of an element when every
 * string is UTF-8, else '|S<n>' with n the most bytes (numpy reads either); n at least 1, as numpy. */
static kiln_status npy_text_descr_of(const char *path, const kn_tensor *t, char *descr, size_t size,
                                     size_t *item_size) {
    const char *const *s = t->data;
    size_t numel = (size_t)kn_shape_numel(&t->shape), most_points = 1, most_bytes = 1;
    bool utf8 = true;
    for (size_t i = 0; i < numel; i++) {
        size_t points = 0, len = strlen(s[i]);
        uint32_t c;
        for (const unsigned char *p = (const unsigned char *)s[i]; *p && utf8; points++)
            utf8 = utf8_next(&p, &c);
        most_points = points > most_points ? points : most_points;
        most_bytes = len > most_bytes ? len : most_bytes;
    }
    size_t unit = utf8 ? 4 : 1, width = utf8 ? most_points : most_bytes, total;
    if (!kn_size_mul(width, unit, item_size) || !kn_size_mul(*item_size, numel, &total))
        return kn_fail(KILN_ERR_INVALID_ARG, "%s: the text array's size overflows", path);
    snprintf(descr, size, "%s%zu", utf8 ? "<U" : "|S", width);
    return KILN_OK;
}

/* Element s into item (item_size bytes of '<U' or '|S' as descr says), zero-padded. */
static void npy_text_item(const char *s, const char *descr, uint8_t *item, size_t item_size) {
    memset(item, 0, item_size);
    if (descr[1] == 'S') {
        memcpy(item, s, strlen(s));
        return;
    }
    uint32_t c;
    for (const unsigned char *p = (const unsigned char *)s; *p && utf8_next(&p, &c); item += 4) {
        item[0] = (uint8_t)c;
        item[1] = (uint8_t)(c >> 8);
        item[2] = (uint8_t)(c >> 16);
        item[3] = 0;
    }
}

kiln_status kn_npy_write(const char *path, const kn_tensor *t) {
    char text_descr[32];
    size_t item_size = 0;
    if (t->dtype == KN_STRING)
        KN_TRY(npy_text_descr_of(path, t, text_descr, sizeof text_descr, &item_size));
    // numpy has no bfloat16: its uint16 bit patterns
    const char *descr = t->dtype == KN_BF16 ? "<u2" : t->dtype == KN_STRING ? text_descr : NULL;
    for (int i = 0; i < N_NPY_TYPES && !descr; i++)
        if (npy_types[i].dtype == t->dtype && npy_types[i].item_size == kn_dtype_size(t->dtype))
            descr = npy_types[i].descr;
    size_t bytes;
    if (!descr || (t->dtype != KN_STRING && !kn_shape_bytes(&t->shape, t->dtype, &bytes)))
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

    uint8_t *item = t->dtype == KN_STRING ? malloc(item_size ? item_size : 1) : NULL;
    if (t->dtype == KN_STRING && !item)
        return kn_data_nomem(path, "a text element", item_size, 1);
    FILE *f = fopen(path, "wb");
    if (!f) {
        free(item);
        return kn_fail(KILN_ERR_IO, "%s: %s", path, strerror(errno));
    }
    bool ok = fwrite(preamble, 1, sizeof preamble, f) == sizeof preamble &&
              fprintf(f, "%s%*s\n", dict, padded - len - 1, "") == padded;
    if (t->dtype == KN_STRING) {
        const char *const *s = t->data;
        for (int64_t i = 0, n = kn_shape_numel(&t->shape); ok && i < n; i++) {
            npy_text_item(s[i], descr, item, item_size);
            ok = fwrite(item, 1, item_size, f) == item_size;
        }
    } else {
        ok = ok && fwrite(t->data, 1, bytes, f) == bytes;
    }
    free(item);
    ok = fclose(f) == 0 && ok;
    if (!ok) {
        remove(path);
        return kn_fail(KILN_ERR_IO, "%s: write failed", path);
    }
    return KILN_OK;
}
