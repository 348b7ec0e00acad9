/* Cast, ConstantOfShape and EyeLike: the ops whose output dtype an attribute chooses (a kn_dtype code; the
 * ONNX importer maps ONNX's TensorProto types to it).
 *
 * Conversions among every kiln dtype (f32, f64, f16, bf16, the integers, bool) follow ONNX (and
 * numpy): float to integer truncates toward zero, anything to bool is x != 0, bool to anything is 0 or
 * 1, an integer to a narrower integer wraps modulo 2^bits, floats round to nearest even. ONNX leaves a
 * float outside the target's range undefined; here it saturates to the i64 range (the u64 range for
 * u64; NaN gives 0) and then wraps like an integer, so the result is at least the same everywhere. f16
 * and bf16 are converted in portable C; f64 to f16 rounds through f32.
 */
#include <math.h>
#include <string.h>

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
    if (dtype_is_float(from)) {
#pragma omp parallel for num_threads(kn_threads_get()) schedule(static) if (n >= KN_MOVE_PARALLEL_MIN)
        for (int64_t i = 0; i < n; i++)
            store_float(y->data, to, i, load_float(x->data, from, i));
    } else {
#pragma omp parallel for num_threads(kn_threads_get()) schedule(static) if (n >= KN_MOVE_PARALLEL_MIN)
        for (int64_t i = 0; i < n; i++)
            store_int(y->data, to, i, load_int(x->data, from, i), from == KN_U64);
    }
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
    char *dst = y->data;
#pragma omp parallel for num_threads(kn_threads_get()) schedule(static) if (n >= KN_MOVE_PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++)
        memcpy(dst + (size_t)i * esize, element, esize);
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
