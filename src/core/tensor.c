#include "core/tensor.h"

#include <stdio.h>
#include <string.h>

#include "core/status.h"

size_t kn_dtype_size(kn_dtype dtype) {
    switch (dtype) {
    case KN_F32: return 4;
    case KN_I64: return 8;
    case KN_I32: return 4;
    case KN_U8: return 1;
    case KN_I8: return 1;
    case KN_BOOL: return 1;
    case KN_F16: return 2;
    case KN_F64: return 8;
    case KN_I16: return 2;
    case KN_U16: return 2;
    case KN_U32: return 4;
    case KN_U64: return 8;
    case KN_BF16: return 2;
    case KN_STRING: return sizeof(kn_string);
    case KN_DTYPE_COUNT: break;
    }
    return 0;
}

const char *kn_dtype_name(kn_dtype dtype) {
    switch (dtype) {
    case KN_F32: return "f32";
    case KN_I64: return "i64";
    case KN_I32: return "i32";
    case KN_U8: return "u8";
    case KN_I8: return "i8";
    case KN_BOOL: return "bool";
    case KN_F16: return "f16";
    case KN_F64: return "f64";
    case KN_I16: return "i16";
    case KN_U16: return "u16";
    case KN_U32: return "u32";
    case KN_U64: return "u64";
    case KN_BF16: return "bf16";
    case KN_STRING: return "string";
    case KN_DTYPE_COUNT: break;
    }
    return "?";
}

void kn_string_set(kn_string *s, const char *text, size_t len) {
    memset(s, 0, sizeof *s);
    if (len < KN_STRING_SMALL)
        memcpy(s->small, text, len);
    else
        s->ptr = text;
}

kn_shape kn_shape_of(int ndim, const int64_t *dims) {
    kn_shape s;
    memset(&s, 0, sizeof s);
    s.ndim = ndim;
    for (int i = 0; i < ndim; i++)
        s.d[i] = dims[i];
    return s;
}

int64_t kn_count_add(int64_t a, int64_t b) {
    int64_t sum;
    if (!__builtin_add_overflow(a, b, &sum))
        return sum;
    return a > 0 ? INT64_MAX : INT64_MIN;
}

int64_t kn_count_mul(int64_t a, int64_t b) {
    int64_t product;
    if (!__builtin_mul_overflow(a, b, &product))
        return product;
    return (a < 0) != (b < 0) ? INT64_MIN : INT64_MAX;
}

int64_t kn_shape_numel(const kn_shape *shape) { return kn_shape_span(shape, 0, shape->ndim); }

int64_t kn_shape_span(const kn_shape *shape, int from, int to) {
    int64_t n = 1;
    for (int i = from; i < to; i++)
        n = kn_count_mul(n, shape->d[i]);
    return n;
}

kiln_status kn_shape_check_size(const kn_shape *shape) {
    int64_t n = 1;
    for (int i = 0; i < shape->ndim; i++) {
        int64_t d = shape->d[i] > 1 ? shape->d[i] : 1;
        if (__builtin_mul_overflow(n, d, &n) || n > KN_MAX_ELEMENTS) {
            char text[160];
            return kn_fail(KILN_ERR_SHAPE, "the shape %s has more than 2^62 elements",
                           kn_shape_str(shape, text, sizeof text));
        }
    }
    return KILN_OK;
}

bool kn_shape_equal(const kn_shape *a, const kn_shape *b) {
    if (a->ndim != b->ndim)
        return false;
    for (int i = 0; i < a->ndim; i++)
        if (a->d[i] != b->d[i])
            return false;
    return true;
}

char *kn_shape_str(const kn_shape *shape, char *buf, size_t size) {
    size_t used = 0;
    int n = snprintf(buf, size, "(");
    used = n > 0 ? (size_t)n : 0;
    for (int i = 0; i < shape->ndim && used < size; i++) {
        n = snprintf(buf + used, size - used, i ? ", %lld" : "%lld", (long long)shape->d[i]);
        used += n > 0 ? (size_t)n : 0;
    }
    if (used < size)
        snprintf(buf + used, size - used, ")");
    return buf;
}

bool kn_size_mul(size_t a, size_t b, size_t *out) {
    return !__builtin_mul_overflow(a, b, out);
}

bool kn_size_add(size_t a, size_t b, size_t *out) {
    return !__builtin_add_overflow(a, b, out);
}

bool kn_shape_bytes(const kn_shape *shape, kn_dtype dtype, size_t *out) {
    size_t n = kn_dtype_size(dtype);
    for (int i = 0; i < shape->ndim; i++) {
        if (shape->d[i] < 0 || !kn_size_mul(n, (size_t)shape->d[i], &n))
            return false;
    }
    *out = n;
    return true;
}

int kn_axis_normalize(int64_t axis, int ndim) {
    if (axis < 0)
        axis += ndim;
    return (axis >= 0 && axis < ndim) ? (int)axis : -1;
}
