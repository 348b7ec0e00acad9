/* ONNX TensorProto decoding: initializers, Constant values and the backend tests' .pb files.
 *
 * A tensor's elements come from exactly one place: raw_data (little-endian, fixed width), the typed
 * field of its data type (float_data, int32_data, int64_data, double_data), or an external file named
 * relative to the model's directory. Each is checked against dims x element size before any copy, so
 * a tensor claiming more elements than the file holds is an error, never a large allocation.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/half.h"
#include "core/status.h"
#include "format/onnx/onnx_import.h"
#include "format/onnx/onnx_internal.h"

typedef enum onnx_dtype {
    ONNX_FLOAT = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT,
    ONNX_UINT8 = ONNX__TENSOR_PROTO__DATA_TYPE__UINT8,
    ONNX_INT8 = ONNX__TENSOR_PROTO__DATA_TYPE__INT8,
    ONNX_INT32 = ONNX__TENSOR_PROTO__DATA_TYPE__INT32,
    ONNX_INT64 = ONNX__TENSOR_PROTO__DATA_TYPE__INT64,
    ONNX_BOOL = ONNX__TENSOR_PROTO__DATA_TYPE__BOOL,
    ONNX_FLOAT16 = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT16,
    ONNX_DOUBLE = ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE,
    ONNX_INT16 = ONNX__TENSOR_PROTO__DATA_TYPE__INT16,
    ONNX_UINT16 = ONNX__TENSOR_PROTO__DATA_TYPE__UINT16,
    ONNX_UINT32 = ONNX__TENSOR_PROTO__DATA_TYPE__UINT32,
    ONNX_UINT64 = ONNX__TENSOR_PROTO__DATA_TYPE__UINT64,
    ONNX_BFLOAT16 = ONNX__TENSOR_PROTO__DATA_TYPE__BFLOAT16,
    ONNX_STRING = ONNX__TENSOR_PROTO__DATA_TYPE__STRING,
} onnx_dtype;

bool kn_onnx_dtype_to_kiln(int32_t onnx_type, kn_dtype *out) {
    switch (onnx_type) {
    case ONNX_FLOAT: *out = KN_F32; return true;
    case ONNX_UINT8: *out = KN_U8; return true;
    case ONNX_INT8: *out = KN_I8; return true;
    case ONNX_INT32: *out = KN_I32; return true;
    case ONNX_INT64: *out = KN_I64; return true;
    case ONNX_BOOL: *out = KN_BOOL; return true;
    case ONNX_FLOAT16: *out = KN_F16; return true;
    case ONNX_DOUBLE: *out = KN_F64; return true;
    case ONNX_INT16: *out = KN_I16; return true;
    case ONNX_UINT16: *out = KN_U16; return true;
    case ONNX_UINT32: *out = KN_U32; return true;
    case ONNX_UINT64: *out = KN_U64; return true;
    case ONNX_BFLOAT16: *out = KN_BF16; return true;
    case ONNX_STRING: *out = KN_STRING; return true;
    default: return false;
    }
}

const char *kn_onnx_dtype_name(int32_t onnx_type, char *buf, size_t size) {
    static const char *const names[] = {"UNDEFINED", "FLOAT",  "UINT8",     "INT8",       "UINT16",
                                        "INT16",     "INT32",  "INT64",     "STRING",     "BOOL",
                                        "FLOAT16",   "DOUBLE", "UINT32",    "UINT64",     "COMPLEX64",
                                        "COMPLEX128", "BFLOAT16"};
    if (onnx_type >= 0 && onnx_type < (int32_t)(sizeof names / sizeof names[0]))
        return names[onnx_type];
    snprintf(buf, size, "type %d", (int)onnx_type);
    return buf;
}

/* Bytes of one element as ONNX stores it in raw_data; 0 for types kiln does not read and for STRING,
 * which has no raw form. */
static size_t onnx_dtype_size(int32_t onnx_type) {
    switch (onnx_type) {
    case ONNX_FLOAT: case ONNX_INT32: case ONNX_UINT32: return 4;
    case ONNX_INT64: case ONNX_DOUBLE: case ONNX_UINT64: return 8;
    case ONNX_FLOAT16: case ONNX_BFLOAT16: case ONNX_INT16: case ONNX_UINT16: return 2;
    case ONNX_UINT8: case ONNX_INT8: case ONNX_BOOL: return 1;
    default: return 0;
    }
}

kiln_status kn_onnx_tensor_header(const Onnx__TensorProto *t, bool widen, kn_dtype *dtype,
                                  kn_shape *shape) {
    char buf[32];
    int32_t type = t->has_data_type ? t->data_type : 0;
    if (widen && type == ONNX_FLOAT16)
        *dtype = KN_F32;
    else if (!kn_onnx_dtype_to_kiln(type, dtype))
        return kn_fail(KILN_ERR_UNSUPPORTED, "data type %s is not supported",
                       kn_onnx_dtype_name(type, buf, sizeof buf));
    if (t->n_dims > KN_MAX_DIMS)
        return kn_fail(KILN_ERR_UNSUPPORTED, "rank %zu is above kiln's maximum of %d", t->n_dims,
                       KN_MAX_DIMS);
    shape->ndim = (int)t->n_dims;
    for (size_t i = 0; i < t->n_dims; i++) {
        if (t->dims[i] < 0)
            return kn_fail(KILN_ERR_FORMAT, "dim %zu is negative (%lld)", i, (long long)t->dims[i]);
        shape->d[i] = t->dims[i];
    }
    KN_TRY(kn_shape_check_size(shape));
    size_t bytes;
    if (!kn_shape_bytes(shape, *dtype, &bytes))
        return kn_fail(KILN_ERR_FORMAT, "the byte size overflows");
    return KILN_OK;
}

/* Converts n little-endian elements of ONNX type `type` in src into dst of kiln dtype `dtype`. The
 * pairs are those kn_onnx_tensor_header allows: the same type, or f16 widened to f32. */
static void convert_raw(int32_t type, const unsigned char *src, int64_t n, kn_dtype dtype, void *dst) {
    if (type == ONNX_FLOAT16 && dtype == KN_F32) {
        float *out = dst;
        for (int64_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, src + 2 * i, 2);
            out[i] = kn_f16_to_f32(h);
        }
    } else if (type == ONNX_BOOL) {
        unsigned char *out = dst;
        for (int64_t i = 0; i < n; i++)
            out[i] = src[i] != 0;
    } else if (n > 0 && dst != src) {
        memcpy(dst, src, (size_t)n * kn_dtype_size(dtype));
    }
}

/* int32_data holds int32, int16, uint16, int8, uint8, bool, and f16 / bf16 bit patterns: each value
 * must fit its type. */
static kiln_status convert_int32_field(const Onnx__TensorProto *t, int64_t n, kn_dtype dtype,
                                       void *dst) {
    int32_t type = t->data_type;
    for (int64_t i = 0; i < n; i++) {
        int32_t v = t->int32_data[i];
        bool fits = true;
        switch (type) {
        case ONNX_INT32: ((int32_t *)dst)[i] = v; break;
        case ONNX_INT8: fits = v >= INT8_MIN && v <= INT8_MAX; ((int8_t *)dst)[i] = (int8_t)v; break;
        case ONNX_UINT8: fits = v >= 0 && v <= UINT8_MAX; ((uint8_t *)dst)[i] = (uint8_t)v; break;
        case ONNX_BOOL: fits = v == 0 || v == 1; ((uint8_t *)dst)[i] = (uint8_t)v; break;
        case ONNX_INT16: fits = v >= INT16_MIN && v <= INT16_MAX; ((int16_t *)dst)[i] = (int16_t)v; break;
        case ONNX_UINT16:
        case ONNX_BFLOAT16: fits = v >= 0 && v <= UINT16_MAX; ((uint16_t *)dst)[i] = (uint16_t)v; break;
        case ONNX_FLOAT16:
            fits = v >= 0 && v <= UINT16_MAX;
            if (dtype == KN_F32)
                ((float *)dst)[i] = kn_f16_to_f32((uint16_t)v);
            else
                ((uint16_t *)dst)[i] = (uint16_t)v;
            break;
        default: fits = false; break;
        }
        if (!fits) {
            char buf[32];
            return kn_fail(KILN_ERR_FORMAT, "int32_data[%lld] = %d does not fit data type %s",
                           (long long)i, (int)v, kn_onnx_dtype_name(type, buf, sizeof buf));
        }
    }
    return KILN_OK;
}

/* The typed field that holds this tensor's elements, and how many it has. */
static kiln_status typed_field(const Onnx__TensorProto *t, size_t *count) {
    char buf[32];
    const char *type_name = kn_onnx_dtype_name(t->data_type, buf, sizeof buf);
    struct { const char *name; size_t count; bool fits; } fields[] = {
        {"float_data", t->n_float_data, t->data_type == ONNX_FLOAT},
        {"int32_data", t->n_int32_data,
         t->data_type == ONNX_INT32 || t->data_type == ONNX_INT8 || t->data_type == ONNX_UINT8 ||
             t->data_type == ONNX_BOOL || t->data_type == ONNX_FLOAT16 || t->data_type == ONNX_INT16 ||
             t->data_type == ONNX_UINT16 || t->data_type == ONNX_BFLOAT16},
        {"int64_data", t->n_int64_data, t->data_type == ONNX_INT64},
        {"double_data", t->n_double_data, t->data_type == ONNX_DOUBLE},
        {"uint64_data", t->n_uint64_data, t->data_type == ONNX_UINT32 || t->data_type == ONNX_UINT64},
        {"string_data", t->n_string_data, t->data_type == ONNX_STRING},
    };
    *count = 0;
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        if (fields[i].count && !fields[i].fits)
            return kn_fail(KILN_ERR_FORMAT, "%s is set in a %s tensor", fields[i].name, type_name);
        if (fields[i].fits)
            *count = fields[i].count;
    }
    return KILN_OK;
}

static kiln_status fill_from_typed(const Onnx__TensorProto *t, kn_dtype dtype, int64_t n, void *dst) {
    size_t count;
    KN_TRY(typed_field(t, &count));
    if ((uint64_t)count != (uint64_t)n)
        return kn_fail(KILN_ERR_FORMAT, "the tensor has %lld elements but its typed data field "
                       "holds %zu%s", (long long)n, count, count == 0 ? " (no data at all)" : "");
    if (n == 0)
        return KILN_OK;
    switch (t->data_type) {
    case ONNX_FLOAT: memcpy(dst, t->float_data, (size_t)n * sizeof(float)); return KILN_OK;
    case ONNX_INT64: memcpy(dst, t->int64_data, (size_t)n * sizeof(int64_t)); return KILN_OK;
    case ONNX_DOUBLE: memcpy(dst, t->double_data, (size_t)n * sizeof(double)); return KILN_OK;
    case ONNX_UINT64: memcpy(dst, t->uint64_data, (size_t)n * sizeof(uint64_t)); return KILN_OK;
    case ONNX_UINT32:
        for (int64_t i = 0; i < n; i++) {
            if (t->uint64_data[i] > UINT32_MAX)
                return kn_fail(KILN_ERR_FORMAT, "uint64_data[%lld] does not fit UINT32", (long long)i);
            ((uint32_t *)dst)[i] = (uint32_t)t->uint64_data[i];
        }
        return KILN_OK;
    default: return convert_int32_field(t, n, dtype, dst);
    }
}

/* A decimal string of digits only, without overflow. */
static bool parse_u64(const char *s, uint64_t *out) {
    if (!s || !*s)
        return false;
    uint64_t v = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9' || __builtin_mul_overflow(v, 10, &v) ||
            __builtin_add_overflow(v, (uint64_t)(*s - '0'), &v))
            return false;
    }
    *out = v;
    return true;
}

/* A relative path that stays inside its directory: no leading '/', no ".." component. */
static bool path_stays_inside(const char *location) {
    if (!*location || location[0] == '/')
        return false;
    for (const char *p = location; *p;) {
        size_t len = strcspn(p, "/");
        if (len == 2 && p[0] == '.' && p[1] == '.')
            return false;
        p += len;
        if (*p == '/')
            p++;
    }
    return true;
}

/* Opens base_dir/location for reading after checking that, with symbolic links resolved, it is a
 * regular file inside base_dir; *st is its status. The open does not block (a FIFO would wait for a
 * writer), and the file type is checked on the opened descriptor, so the file checked is the file
 * read. */
static kiln_status open_external(const char *base_dir, const char *location, int *fd,
                                 struct stat *st) {
    char path[PATH_MAX], real_dir[PATH_MAX], real_file[PATH_MAX];
    if (!path_stays_inside(location))
        return kn_fail(KILN_ERR_FORMAT, "external data location '%s' leaves the model's directory",
                       location);
    if (snprintf(path, sizeof path, "%s/%s", base_dir, location) >= (int)sizeof path)
        return kn_fail(KILN_ERR_FORMAT, "external data path '%s/%s' is too long", base_dir, location);
    if (!realpath(base_dir, real_dir) || !realpath(path, real_file))
        return kn_fail(KILN_ERR_IO, "cannot find external data '%s': %s", path, strerror(errno));
    size_t dir_len = strlen(real_dir);
    if (strncmp(real_file, real_dir, dir_len) != 0 || (real_file[dir_len] != '/' && dir_len > 1))
        return kn_fail(KILN_ERR_FORMAT, "external data '%s' resolves to '%s', outside the model's "
                       "directory", location, real_file);
    *fd = open(real_file, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (*fd < 0)
        return kn_fail(KILN_ERR_IO, "cannot open external data '%s': %s", path, strerror(errno));
    if (fstat(*fd, st) != 0 || !S_ISREG(st->st_mode)) {
        close(*fd);
        return kn_fail(KILN_ERR_FORMAT, "external data '%s' is not a regular file", location);
    }
    return KILN_OK;
}

/* Opens t's external data and checks that it holds exactly `bytes` bytes: *fd then reads them at
 * *offset; *location names the file in messages. */
static kiln_status external_span(const Onnx__TensorProto *t, const char *base_dir, size_t bytes, int *fd,
                                 uint64_t *offset, const char **location) {
    uint64_t length = 0;
    bool has_length = false;
    *location = NULL;
    *offset = 0;
    for (size_t i = 0; i < t->n_external_data; i++) {
        const char *key = t->external_data[i]->key, *value = t->external_data[i]->value;
        if (!key || !value)
            return kn_fail(KILN_ERR_FORMAT, "external data entry %zu has no key or value", i);
        if (strcmp(key, "location") == 0)
            *location = value;
        else if (strcmp(key, "offset") == 0 && !parse_u64(value, offset))
            return kn_fail(KILN_ERR_FORMAT, "external data offset '%s' is not a number", value);
        else if (strcmp(key, "length") == 0 && !(has_length = parse_u64(value, &length)))
            return kn_fail(KILN_ERR_FORMAT, "external data length '%s' is not a number", value);
    }
    if (!*location)
        return kn_fail(KILN_ERR_FORMAT, "external data has no location");
    if (!base_dir)
        return kn_fail(KILN_ERR_UNSUPPORTED, "external data '%s' needs the model's directory "
                       "(import the model from a file)", *location);
    struct stat st;
    KN_TRY(open_external(base_dir, *location, fd, &st));
    kiln_status status = KILN_OK;
    if (*offset > (uint64_t)st.st_size) {
        status = kn_fail(KILN_ERR_FORMAT, "external data '%s': offset %llu is past its end (%lld "
                         "bytes)", *location, (unsigned long long)*offset, (long long)st.st_size);
    } else {
        uint64_t available = (uint64_t)st.st_size - *offset;
        uint64_t span = has_length ? length : available;
        if (span > available || span != bytes)
            status = kn_fail(KILN_ERR_FORMAT, "external data '%s': %llu bytes at offset %llu (file "
                             "of %lld bytes) for a tensor of %zu bytes", *location,
                             (unsigned long long)span, (unsigned long long)*offset,
                             (long long)st.st_size, bytes);
    }
    if (status != KILN_OK)
        close(*fd);
    return status;
}

static kiln_status read_external(const Onnx__TensorProto *t, const char *base_dir, size_t bytes,
                                 unsigned char *dst) {
    int fd;
    uint64_t offset;
    const char *location;
    KN_TRY(external_span(t, base_dir, bytes, &fd, &offset, &location));
    kiln_status status = KILN_OK;
    for (size_t done = 0; status == KILN_OK && done < bytes;) {
        ssize_t got = pread(fd, dst + done, bytes - done, (off_t)(offset + done));
        if (got <= 0)
            status = kn_fail(KILN_ERR_IO, "reading external data '%s' failed: %s", location,
                             got < 0 ? strerror(errno) : "unexpected end of file");
        else
            done += (size_t)got;
    }
    close(fd);
    return status;
}

kiln_status kn_onnx_tensor_check_data(const Onnx__TensorProto *t, const char *base_dir, int64_t numel) {
    size_t raw_bytes;
    if (!kn_size_mul(onnx_dtype_size(t->data_type), (size_t)numel, &raw_bytes))
        return kn_fail(KILN_ERR_FORMAT, "the byte size overflows");
    int location = t->has_data_location ? (int)t->data_location : 0;
    bool external = location == ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL;
    if (!external && location != ONNX__TENSOR_PROTO__DATA_LOCATION__DEFAULT)
        return kn_fail(KILN_ERR_FORMAT, "unknown data_location %d", location);
    if (t->data_type == ONNX_STRING && (external || t->has_raw_data))
        return kn_fail(KILN_ERR_FORMAT, "a STRING tensor keeps its elements in string_data, not in %s",
                       external ? "external data" : "raw_data");
    size_t typed;
    KN_TRY(typed_field(t, &typed));
    int sources = (t->has_raw_data ? 1 : 0) + (typed ? 1 : 0) + (external ? 1 : 0);
    if (sources > 1)
        return kn_fail(KILN_ERR_FORMAT, "the elements are given in more than one place (raw_data, "
                       "typed field, external data)");
    if (external) {
        int fd;
        uint64_t offset;
        const char *name;
        KN_TRY(external_span(t, base_dir, raw_bytes, &fd, &offset, &name));
        close(fd);
    } else if (t->has_raw_data && t->raw_data.len != raw_bytes) {
        return kn_fail(KILN_ERR_FORMAT, "raw_data has %zu bytes; %lld elements need %zu",
                       t->raw_data.len, (long long)numel, raw_bytes);
    } else if (!t->has_raw_data && (uint64_t)typed != (uint64_t)numel) {
        return kn_fail(KILN_ERR_FORMAT, "the tensor has %lld elements but its typed data field "
                       "holds %zu%s", (long long)numel, typed, typed == 0 ? " (no data at all)" : "");
    }
    return KILN_OK;
}

/* string_data[i] as a C string: it must hold no NUL byte (kiln's strings end at the first). */
static kiln_status string_element(const Onnx__TensorProto *t, int64_t i) {
    const ProtobufCBinaryData *b = &t->string_data[i];
    if (b->len && memchr(b->data, 0, b->len))
        return kn_fail(KILN_ERR_FORMAT, "string_data[%lld] holds a NUL byte", (long long)i);
    return KILN_OK;
}

/* string_data into kn_string elements; strings too long to sit in place are copied into `arena`. */
static kiln_status fill_strings(const Onnx__TensorProto *t, int64_t numel, kn_arena *arena, kn_string *dst) {
    if (!arena)
        return kn_fail(KILN_ERR_INTERNAL, "a STRING tensor decoded without an arena for its strings");
    for (int64_t i = 0; i < numel; i++) {
        KN_TRY(string_element(t, i));
        const ProtobufCBinaryData *b = &t->string_data[i];
        char *copy = (char *)b->data;
        if (b->len >= KN_STRING_SMALL) { /* len + 1 cannot overflow: the bytes are in memory */
            if (!(copy = kn_arena_alloc(arena, b->len + 1)))
                return kn_fail(KILN_ERR_NOMEM, "out of memory for a string of %zu bytes", b->len);
            memcpy(copy, b->data, b->len);
            copy[b->len] = '\0';
        }
        kn_string_set(&dst[i], b->len ? copy : "", b->len);
    }
    return KILN_OK;
}

kiln_status kn_onnx_tensor_fill(const Onnx__TensorProto *t, const char *base_dir, kn_dtype dtype,
                                int64_t numel, void *dst, kn_arena *strings) {
    KN_TRY(kn_onnx_tensor_check_data(t, base_dir, numel));
    if (dtype == KN_STRING)
        return fill_strings(t, numel, strings, dst);
    size_t raw_bytes = onnx_dtype_size(t->data_type) * (size_t)numel; /* checked above */
    bool external = t->has_data_location && t->data_location == ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL;
    if (!external && !t->has_raw_data)
        return fill_from_typed(t, dtype, numel, dst);
    unsigned char *raw = t->raw_data.data;
    unsigned char *staging = NULL;
    if (external) {
        /* The file's bytes are converted in place when kiln's dtype has the same width. */
        bool same_width = kn_dtype_size(dtype) == onnx_dtype_size(t->data_type);
        staging = same_width ? dst : malloc(raw_bytes ? raw_bytes : 1);
        if (!staging)
            return kn_fail(KILN_ERR_NOMEM, "out of memory reading %zu bytes of external data", raw_bytes);
        kiln_status st = read_external(t, base_dir, raw_bytes, staging);
        if (st != KILN_OK) {
            if (staging != dst)
                free(staging);
            return st;
        }
        raw = staging;
    }
    convert_raw(t->data_type, raw, numel, dtype, dst);
    if (staging && staging != dst)
        free(staging);
    return KILN_OK;
}

kiln_status kn_onnx_read_whole_file(const char *path, unsigned char **bytes, size_t *size) {
    *bytes = NULL;
    *size = 0;
    FILE *f = fopen(path, "rb");
    if (!f)
        return kn_fail(KILN_ERR_IO, "cannot open '%s': %s", path, strerror(errno));
    unsigned char *buf = NULL;
    size_t used = 0, cap = 0;
    for (;;) {
        if (used == cap) {
            cap = cap ? 2 * cap : 1 << 16;
            unsigned char *grown = realloc(buf, cap);
            if (!grown) {
                free(buf);
                fclose(f);
                return kn_fail(KILN_ERR_NOMEM, "out of memory reading '%s'", path);
            }
            buf = grown;
        }
        size_t got = fread(buf + used, 1, cap - used, f);
        used += got;
        if (got == 0)
            break;
    }
    bool failed = ferror(f);
    fclose(f);
    if (failed) {
        free(buf);
        return kn_fail(KILN_ERR_IO, "reading '%s' failed", path);
    }
    *bytes = buf;
    *size = used;
    return KILN_OK;
}

/* A STRING tensor as the C API passes one: numel `const char *` then the strings they point at, in one
 * malloc'ed block. */
static kiln_status strings_block(const Onnx__TensorProto *t, int64_t numel, void **data) {
    size_t bytes;
    if (!kn_size_mul((size_t)numel, sizeof(char *), &bytes))
        return kn_fail(KILN_ERR_FORMAT, "the byte size overflows");
    for (int64_t i = 0; i < numel; i++) {
        KN_TRY(string_element(t, i));
        if (!kn_size_add(bytes, t->string_data[i].len + 1, &bytes))
            return kn_fail(KILN_ERR_FORMAT, "the byte size overflows");
    }
    char **ptrs = malloc(bytes ? bytes : 1);
    if (!ptrs)
        return kn_fail(KILN_ERR_NOMEM, "out of memory for %zu bytes", bytes);
    char *text = (char *)(ptrs + numel);
    for (int64_t i = 0; i < numel; i++) {
        const ProtobufCBinaryData *b = &t->string_data[i];
        ptrs[i] = text;
        if (b->len)
            memcpy(text, b->data, b->len);
        text[b->len] = '\0';
        text += b->len + 1;
    }
    *data = ptrs;
    return KILN_OK;
}

kiln_status kn_onnx_read_tensor_file(const char *path, kn_tensor *out, char **name) {
    memset(out, 0, sizeof *out);
    if (name)
        *name = NULL;
    unsigned char *bytes;
    size_t size;
    KN_TRY(kn_onnx_read_whole_file(path, &bytes, &size));
    Onnx__TensorProto *t = onnx__tensor_proto__unpack(NULL, size, bytes);
    free(bytes);
    if (!t)
        return kn_fail(KILN_ERR_FORMAT, "'%s' is not a valid ONNX TensorProto", path);

    char *dir = strdup(path);
    const char *base_dir = dir ? kn_onnx_dirname(dir) : NULL; /* dirname cuts dir in place */
    kiln_status st = dir ? kn_onnx_tensor_header(t, false, &out->dtype, &out->shape)
                         : kn_fail(KILN_ERR_NOMEM, "out of memory");
    size_t n_bytes = 0;
    if (st == KILN_OK)
        st = kn_onnx_tensor_check_data(t, base_dir, kn_shape_numel(&out->shape));
    if (st == KILN_OK && out->dtype == KN_STRING) {
        st = strings_block(t, kn_shape_numel(&out->shape), &out->data);
    } else if (st == KILN_OK) {
        kn_shape_bytes(&out->shape, out->dtype, &n_bytes);
        out->data = malloc(n_bytes ? n_bytes : 1);
        if (!out->data)
            st = kn_fail(KILN_ERR_NOMEM, "out of memory for %zu bytes", n_bytes);
    }
    if (st == KILN_OK && out->dtype != KN_STRING)
        st = kn_onnx_tensor_fill(t, base_dir, out->dtype, kn_shape_numel(&out->shape),
                                 out->data, NULL);
    if (st == KILN_OK && name) {
        *name = strdup(t->name ? t->name : "");
        if (!*name)
            st = kn_fail(KILN_ERR_NOMEM, "out of memory");
    }
    free(dir);
    onnx__tensor_proto__free_unpacked(t, NULL);
    if (st != KILN_OK) {
        kn_error_prefix("'%s': ", path);
        free(out->data);
        out->data = NULL;
    }
    return st;
}

char *kn_onnx_dirname(char *path) {
    char *slash = strrchr(path, '/');
    if (!slash)
        return strcpy(path, ".");
    if (slash == path)
        return strcpy(path, "/");
    *slash = '\0';
    return path;
}
