/* Cast, ConstantOfShape and EyeLike: the ops whose output dtype an attribute chooses (a kn_dtype code; the
 * ONNX importer maps ONNX's TensorProto types to it).
 *
 * Conversions among every kiln dtype (f32, f64, f16, bf16, the integers, bool) follow ONNX (and
 * numpy): float to integer truncates toward zero, anything to bool is x != 0, bool to anything is 0 or
 * 1, an integer to a narrower integer wraps modulo 2^bits, floats round to nearest even. ONNX leaves a
 * float outside the target's range undefined; here it saturates to the i64 range (the u64 range for
 * u64; NaN gives 0) and then wraps like an integer, so the result is at least the same everywhere. f16
 * and bf16 are converted in portable C; f64 to f16 rounds through f32.
 *
 * Strings (ONNX's STRING, kn_string elements) convert both ways as ONNX's reference (numpy's astype)
 * does. A number becomes numpy's str() of it: the shortest decimal that reads back as the same value
 * of its own type, positional for 1e-4 <= |x| < 1e16 and zero ("0.1", "100.0", "-0.0"), scientific
 * otherwise ("1e-05", "1.5e+16"); "nan", "inf", "-inf"; integers in decimal; bool "True" / "False". A
 * string becomes a number when it is a decimal number in plain or scientific form, spaces around
 * allowed, or (any case) "nan", "inf", "+inf", "-inf", "infinity": to floats by one correct rounding
 * into the type (strtof / strtod; f16 and bf16 through f32), to integers exactly when it is an integer
 * and otherwise as its float value converts, to bool "True" / "False" or a number's x != 0. ONNX leaves
 * other strings undefined; here they fail the run, naming the element (so does a number written with
 * 512 characters or more).
 */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/threads.h"
#include "core/half.h"
#include "ops/elements.h"
#include "ops/movement.h"

/* ---- element conversions ---- */

static bool dtype_is_float(kn_dtype t) {
    return t == KN_F32 || t == KN_F16 || t == KN_BF16 || t == KN_F64;
}

/* A float element, exactly, as a double. */
static double load_float(const void *src, kn_dtype t, int64_t i) {
    switch (t) {
    case KN_F16: return kn_f16_to_f32(((const uint16_t *)src)[i]);
    case KN_BF16: return kn_bf16_to_f32(((const uint16_t *)src)[i]);
    case KN_F64: return ((const double *)src)[i];
    default: return ((const float *)src)[i];
    }
}

/* An integer or bool element as int64 (u64 as its bit pattern, see ops/elements.h). */
static int64_t load_int(const void *src, kn_dtype t, int64_t i) {
    return t == KN_BOOL ? ((const uint8_t *)src)[i] != 0 : kn_int_load(src, t, i);
}

/* Truncation toward zero, saturating at the target's range when it is u64 and at the i64 range
 * otherwise; NaN gives 0. */
static int64_t float_to_int(double v, kn_dtype to) {
    if (isnan(v))
        return 0;
    if (to == KN_U64) {
        if (v <= 0.0)
            return 0;
        return v >= 18446744073709551616.0 ? -1 : (int64_t)(uint64_t)v;
    }
    if (v >= 9223372036854775808.0)
        return INT64_MAX;
    if (v <= -9223372036854775808.0)
        return INT64_MIN;
    return (int64_t)v;
}

static void store_float(void *dst, kn_dtype t, int64_t i, double v);

/* An integer v (unsigned when from_u64) into dtype t: narrow integers keep the low bits (two's
 * complement), floats round once. */
static void store_int(void *dst, kn_dtype t, int64_t i, int64_t v, bool from_u64) {
    if (t == KN_BOOL)
        ((uint8_t *)dst)[i] = v != 0;
    else if (kn_dtype_is_integer(t))
        kn_int_store(dst, t, i, v);
    else if (t == KN_F32) /* one rounding, from the integer itself */
        ((float *)dst)[i] = from_u64 ? (float)(uint64_t)v : (float)v;
    else if (t == KN_F64)
        ((double *)dst)[i] = from_u64 ? (double)(uint64_t)v : (double)v;
    else /* f16, bf16: through f32, exact up to 2^24, beyond either type's precision */
        store_float(dst, t, i, from_u64 ? (double)(float)(uint64_t)v : (double)(float)v);
}

static void store_float(void *dst, kn_dtype t, int64_t i, double v) {
    switch (t) {
    case KN_F32: ((float *)dst)[i] = (float)v; break;
    case KN_F64: ((double *)dst)[i] = v; break;
    case KN_F16: ((uint16_t *)dst)[i] = kn_f32_to_f16((float)v); break;
    case KN_BF16: ((uint16_t *)dst)[i] = kn_f32_to_bf16((float)v); break;
    case KN_BOOL: ((uint8_t *)dst)[i] = v != 0; break;
    default: store_int(dst, t, i, float_to_int(v, t), false); break;
    }
}

/* ---- strings ---- */

/* Element i of a float tensor read back from the decimal `text`: whether it is the same value. */
static bool reads_back(const char *text, double v, kn_dtype t) {
    switch (t) {
    case KN_F64: return strtod(text, NULL) == v;
    case KN_F16: return kn_f32_to_f16(strtof(text, NULL)) == kn_f32_to_f16((float)v);
    case KN_BF16: return kn_f32_to_bf16(strtof(text, NULL)) == kn_f32_to_bf16((float)v);
    default: return strtof(text, NULL) == (float)v;
    }
}

/* A finite nonzero v as the fewest significant digits that read back as v in dtype t: the digits
 * (no dot, no trailing zeros) into digits[18] and the decimal exponent of the first one. */
static void shortest_digits(double v, kn_dtype t, char *digits, int *exp10) {
    char text[40]; /* "-d.dddddddddddddddde-308" */
    for (int p = 1; p <= 17; p++) {
        snprintf(text, sizeof text, "%.*e", p - 1, fabs(v));
        if (reads_back(text, fabs(v), t))
            break;
    }
    char *e = strchr(text, 'e');
    *exp10 = atoi(e + 1);
    int n = 0;
    for (const char *c = text; c < e; c++)
        if (isdigit((unsigned char)*c))
            digits[n++] = *c;
    while (n > 1 && digits[n - 1] == '0')
        n--;
    digits[n] = '\0';
}

/* numpy's str() of a float element (see the top) into out[KN_STRING_SMALL]. */
static void format_float(double v, kn_dtype t, char *out) {
    if (isnan(v) || isinf(v)) {
        snprintf(out, KN_STRING_SMALL, "%s", isnan(v) ? "nan" : v < 0 ? "-inf" : "inf");
        return;
    }
    char digits[20];
    int e = 0, n = 0;
    if (v == 0)
        snprintf(digits, sizeof digits, "0");
    else
        shortest_digits(v, t, digits, &e);
    int len = (int)strlen(digits);
    if (signbit(v))
        out[n++] = '-';
    if (v != 0 && !(fabs(v) >= 1e-4 && fabs(v) < 1e16)) { /* d.ddde+XX */
        out[n++] = digits[0];
        if (len > 1)
            n += snprintf(out + n, (size_t)(KN_STRING_SMALL - n), ".%s", digits + 1);
        snprintf(out + n, (size_t)(KN_STRING_SMALL - n), "e%c%02d", e < 0 ? '-' : '+', abs(e));
        return;
    }
    if (e < 0) { /* 0.000ddd: at most 3 zeros after the point (|v| >= 1e-4) */
        snprintf(out + n, (size_t)(KN_STRING_SMALL - n), "0.%.*s%s", -e - 1, "000", digits);
        return;
    }
    for (int k = 0; k <= e; k++) /* the integer part, padded with zeros past the digits */
        out[n++] = k < len ? digits[k] : '0';
    snprintf(out + n, (size_t)(KN_STRING_SMALL - n), ".%s", len > e + 1 ? digits + e + 1 : "0");
}

/* Element i of x as text, into out[KN_STRING_SMALL] (every number fits: at most 24 characters). */
static void format_element(const kn_tensor *x, int64_t i, char *out) {
    if (dtype_is_float(x->dtype))
        format_float(load_float(x->data, x->dtype, i), x->dtype, out);
    else if (x->dtype == KN_BOOL)
        snprintf(out, KN_STRING_SMALL, "%s", ((const uint8_t *)x->data)[i] ? "True" : "False");
    else if (x->dtype == KN_U64)
        snprintf(out, KN_STRING_SMALL, "%llu", (unsigned long long)((const uint64_t *)x->data)[i]);
    else
        snprintf(out, KN_STRING_SMALL, "%lld", (long long)kn_int_load(x->data, x->dtype, i));
}

/* s without the spaces around it, into buf[size]; false when nothing is left, when it does not fit (no
 * number needs NUMBER_TEXT_MAX characters), or when it holds what strtod reads but a decimal number is
 * not: a hex float, "nan(...)". */
enum { NUMBER_TEXT_MAX = 512 };
static bool trimmed_number(const char *s, char *buf, size_t size) {
    while (isspace((unsigned char)*s))
        s++;
    size_t len = strlen(s);
    while (len > 0 && isspace((unsigned char)s[len - 1]))
        len--;
    if (len == 0 || len >= size || memchr(s, 'x', len) || memchr(s, 'X', len) || memchr(s, '(', len))
        return false;
    memcpy(buf, s, len);
    buf[len] = '\0';
    return true;
}

/* Converts string element i of x into element i of y (a number type); false when it holds no number. */
static bool parse_element(const kn_string *x, int64_t i, kn_tensor *y) {
    char buf[NUMBER_TEXT_MAX], *stop;
    if (!trimmed_number(kn_string_get(&x[i]), buf, sizeof buf))
        return false;
    kn_dtype to = y->dtype;
    if (to == KN_BOOL && (strcasecmp(buf, "true") == 0 || strcasecmp(buf, "false") == 0)) {
        ((uint8_t *)y->data)[i] = strcasecmp(buf, "true") == 0;
        return true;
    }
    if (kn_dtype_is_integer(to)) { /* an integer exactly, when the string is one and fits 64 bits */
        errno = 0;
        bool negative = buf[0] == '-';
        long long sv = 0;
        unsigned long long uv = 0;
        if (to == KN_U64 && !negative)
            uv = strtoull(buf, &stop, 10);
        else
            sv = strtoll(buf, &stop, 10);
        if (*stop == '\0' && errno == 0) {
            store_int(y->data, to, i, to == KN_U64 && !negative ? (int64_t)uv : (int64_t)sv, to == KN_U64 && !negative);
            return true;
        }
    }
    if (to == KN_F64 || kn_dtype_is_integer(to) || to == KN_BOOL) {
        double v = strtod(buf, &stop);
        if (*stop != '\0')
            return false;
        store_float(y->data, to, i, v);
    } else { /* f32, f16, bf16: one rounding into f32 (f16 and bf16 then round from it) */
        float v = strtof(buf, &stop);
        if (*stop != '\0')
            return false;
        store_float(y->data, to, i, v);
    }
    return true;
}

static kiln_status cast_from_string(const kn_tensor *x, kn_tensor *y, int64_t n) {
    const kn_string *in = x->data;
    for (int64_t i = 0; i < n; i++)
        if (!parse_element(in, i, y))
            return kn_fail(KILN_ERR_INVALID_ARG, "Cast: element %lld, \"%.40s\"%s, is not a number",
                           (long long)i, kn_string_get(&in[i]), strlen(kn_string_get(&in[i])) > 40 ? "..." : "");
    return KILN_OK;
}

/* Cast's elementwise conversions: x's elements into y's. */
typedef struct cast_pass {
    const kn_tensor *x;
    kn_tensor *y;
} cast_pass;

static void cast_string_range(void *ctx, int64_t begin, int64_t end, int slot) {
    (void)slot;
    const cast_pass *c = ctx;
    kn_string *out = c->y->data;
    for (int64_t i = begin; i < end; i++) {
        memset(&out[i], 0, sizeof out[i]);
        format_element(c->x, i, out[i].small);
    }
}

static void cast_to_string(const kn_tensor *x, kn_tensor *y, int64_t n) {
    cast_pass c = {x, y};
    kn_parallel_range(n, kn_threads_for(n, KN_MOVE_PARALLEL_MIN), cast_string_range, &c);
}

/* A dtype code attribute; `fallback` NULL makes it required. */
static kiln_status dtype_attr(const kn_node *node, const char *name, const kn_dtype *fallback,
                              kn_dtype *dtype) {
    const kn_attr *a = kn_node_attr(node, name);
    if (!a) {
        if (!fallback)
            return kn_fail(KILN_ERR_INVALID_ARG, "attribute '%s' is missing", name);
        *dtype = *fallback;
        return KILN_OK;
    }
    int64_t code = kn_node_int(node, name, 0);
    if (a->type != KN_ATTR_INT || code < 0 || code >= KN_DTYPE_COUNT)
        return kn_fail(KILN_ERR_INVALID_ARG, "attribute '%s' = %lld is not a kiln dtype code "
                       "(0 to %d)", name, (long long)code, KN_DTYPE_COUNT - 1);
    *dtype = (kn_dtype)code;
    return KILN_OK;
}

/* ---- Cast ---- */

static kiln_status cast_infer(kn_graph *g, const kn_node *node) {
    const kn_value *x = kn_node_input(g, node, 0);
    if (!x)
        return kn_fail(KILN_ERR_INVALID_ARG, "input is missing");
    KN_TRY(kn_check_outputs(node, 1));
    kn_dtype to = KN_F32;
    KN_TRY(dtype_attr(node, "to", NULL, &to));
    kn_set_output(g, node, 0, &x->shape, to);
    return KILN_OK;
}

static void cast_float_range(void *ctx, int64_t begin, int64_t end, int slot) {
    (void)slot;
    const cast_pass *c = ctx;
    const void *src = c->x->data;
    void *dst = c->y->data;
    kn_dtype from = c->x->dtype, to = c->y->dtype;
    for (int64_t i = begin; i < end; i++)
        store_float(dst, to, i, load_float(src, from, i));
}

static void cast_int_range(void *ctx, int64_t begin, int64_t end, int slot) {
    (void)slot;
    const cast_pass *c = ctx;
    const void *src = c->x->data;
    void *dst = c->y->data;
    kn_dtype from = c->x->dtype, to = c->y->dtype;
    for (int64_t i = begin; i < end; i++)
        store_int(dst, to, i, load_int(src, from, i), from == KN_U64);
}

static kiln_status cast_forward(const kn_op_call *call) {
    const kn_tensor *x = call->in[0];
    kn_tensor *y = call->out[0];
    kn_dtype from = x->dtype, to = y->dtype;
    int64_t n = kn_numel(x);
    if (kn_numel(y) != n)
        return kn_fail(KILN_ERR_SHAPE, "Cast: input has %lld elements but output %lld",
                       (long long)n, (long long)kn_numel(y));
    if (from == to) {
        if (n > 0 && y->data != x->data)
            memcpy(y->data, x->data, (size_t)n * kn_dtype_size(from));
        return KILN_OK;
    }
    if (from == KN_STRING)
        return cast_from_string(x, y, n);
    if (to == KN_STRING) {
        cast_to_string(x, y, n);
        return KILN_OK;
    }
    cast_pass c = {x, y};
    kn_parallel_range(n, kn_threads_for(n, KN_MOVE_PARALLEL_MIN), dtype_is_float(from) ? cast_float_range : cast_int_range,
                      &c);
    return KILN_OK;
}

/* ---- ConstantOfShape: a tensor of the shape given as input, filled with one value ---- */

static kiln_status constant_shape(const kn_tensor *shape_in, kn_shape *out) {
    if (!shape_in)
        return kn_fail(KILN_ERR_INVALID_ARG, "input shape is missing");
    int n;
    KN_TRY(kn_read_ints(shape_in, "shape", out->d, KN_MAX_DIMS, &n));
    out->ndim = n;
    for (int k = 0; k < n; k++)
        if (out->d[k] < 0)
            return kn_fail(KILN_ERR_INVALID_ARG, "shape[%d] is %lld; dims must be >= 0", k,
                           (long long)out->d[k]);
    return KILN_OK;
}

static kiln_status constantofshape_infer(kn_graph *g, const kn_node *node) {
    KN_TRY(kn_check_outputs(node, 1));
    kn_infer_inputs inputs;
    KN_TRY(kn_infer_inputs_get(g, node, &inputs));
    kn_shape y;
    KN_TRY(constant_shape(inputs.in[0], &y));
    kn_dtype dtype = KN_F32;
    KN_TRY(dtype_attr(node, "dtype", &(kn_dtype){KN_F32}, &dtype));
    const kn_attr *value = kn_node_attr(node, "value");
    if (value && value->type != KN_ATTR_FLOAT && value->type != KN_ATTR_INT)
        return kn_fail(KILN_ERR_INVALID_ARG, "attribute 'value' must be one number");
    kn_set_output(g, node, 0, &y, dtype);
    return KILN_OK;
}

/* Copies of one element over a range of the output. */
typedef struct constant_fill {
    char *dst;
    const unsigned char *element;
    size_t esize;
} constant_fill;

static void constant_fill_range(void *ctx, int64_t begin, int64_t end, int slot) {
    (void)slot;
    const constant_fill *f = ctx;
    char *dst = f->dst;
    size_t esize = f->esize;
    for (int64_t i = begin; i < end; i++)
        memcpy(dst + (size_t)i * esize, f->element, esize);
}

/* "value" is a float attribute, or an int one when the importer keeps an integer fill exact. */
static kiln_status constantofshape_forward(const kn_op_call *call) {
    kn_tensor *y = call->out[0];
    kn_shape shape;
    KN_TRY(constant_shape(call->in[0], &shape));
    if (!kn_shape_equal(&shape, &y->shape))
        return kn_fail(KILN_ERR_SHAPE, "ConstantOfShape: the output's shape is not the shape input");
    size_t esize = kn_dtype_size(y->dtype);
    unsigned char element[8];
    const kn_attr *value = kn_node_attr(call->node, "value");
    if (value && value->type == KN_ATTR_INT)
        store_int(element, y->dtype, 0, value->i, false);
    else
        store_float(element, y->dtype, 0, value ? value->f : 0.0f);
    int64_t n = kn_numel(y);
    constant_fill f = {y->data, element, esize};
    kn_parallel_range(n, kn_threads_for(n, KN_MOVE_PARALLEL_MIN), constant_fill_range, &f);
    return KILN_OK;
}

/* ---- EyeLike: ones on diagonal k (default 0) of a 2-D tensor of the input's shape ---- */

static kiln_status eyelike_infer(kn_graph *g, const kn_node *node) {
    KN_TRY(kn_check_outputs(node, 1));
    const kn_value *x = kn_node_input(g, node, 0);
    if (!x)
        return kn_fail(KILN_ERR_INVALID_ARG, "input is missing");
    if (x->shape.ndim != 2)
        return kn_fail(KILN_ERR_SHAPE, "input '%s' has %d dims; EyeLike needs 2", x->name, x->shape.ndim);
    kn_dtype dtype = x->dtype;
    KN_TRY(dtype_attr(node, "dtype", &x->dtype, &dtype));
    kn_set_output(g, node, 0, &x->shape, dtype);
    return KILN_OK;
}

/* Reads only the input's shape. */
static kiln_status eyelike_forward(const kn_op_call *call) {
    kn_tensor *y = call->out[0];
    int64_t rows = y->shape.d[0], cols = y->shape.d[1], k = kn_node_int(call->node, "k", 0);
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < cols; j++)
            store_int(y->data, y->dtype, i * cols + j, j - i == k, false);
    return KILN_OK;
}

const kn_op kn_op_eyelike = {
    .name = "EyeLike", .min_inputs = 1, .max_inputs = 1,
    .infer = eyelike_infer, .forward = eyelike_forward,
};

const kn_op kn_op_cast = {
    .name = "Cast", .min_inputs = 1, .max_inputs = 1,
    .infer = cast_infer, .forward = cast_forward,
};

const kn_op kn_op_constantofshape = {
    .name = "ConstantOfShape", .min_inputs = 1, .max_inputs = 1,
    .infer = constantofshape_infer, .forward = constantofshape_forward,
};
