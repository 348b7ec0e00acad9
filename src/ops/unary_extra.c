/* Elementwise ONNX math without gradients: the trigonometric and hyperbolic functions and their
 * inverses, Sign, Round, Softsign, Selu, Celu, ThresholdedRelu, Shrink, Mish, IsNaN and IsInf.
 *
 *     Sin Cos Tan Asin Acos Atan Sinh Cosh Asinh Acosh Atanh   libm's, in float
 *     Sign             -1, 0 or 1 (NaN stays NaN)
 *     Round            to the nearest integer, halves to even (numpy's round)
 *     Softsign         x / (1 + |x|)
 *     Selu             gamma x for x > 0, gamma alpha (e^x - 1) otherwise (ONNX's default alpha, gamma)
 *     Celu             max(0, x) + min(0, alpha (e^(x/alpha) - 1)), alpha 1 by default
 *     ThresholdedRelu  x where x > alpha (default 1), else 0
 *     Shrink           x + bias below -lambd, x - bias above lambd, else 0 (lambd 0.5, bias 0)
 *     Mish             x tanh(ln(1 + e^x)) (opset 18)
 *     IsNaN, IsInf     -> bool; IsInf's detect_negative / detect_positive (default 1) pick the sign
 *
 * Dtypes: f32 in and out (IsNaN and IsInf: bool out). One call per element; FLOPs count one each.
 */
#include <math.h>

#include "core/status.h"
#include "ops/op.h"

typedef enum extra_kind {
    EXTRA_SIN, EXTRA_COS, EXTRA_TAN, EXTRA_ASIN, EXTRA_ACOS, EXTRA_ATAN, EXTRA_SINH, EXTRA_COSH,
    EXTRA_ASINH, EXTRA_ACOSH, EXTRA_ATANH, EXTRA_SIGN, EXTRA_ROUND, EXTRA_SOFTSIGN, EXTRA_SELU,
    EXTRA_CELU, EXTRA_THRESHOLDED_RELU, EXTRA_SHRINK, EXTRA_ISNAN, EXTRA_ISINF, EXTRA_MISH
} extra_kind;

/* The attributes of the parametrised functions. */
typedef struct extra_params {
    float alpha, gamma, lambd, bias;
    bool negative, positive;
} extra_params;

static extra_params extra_params_of(const kn_node *node, extra_kind kind) {
    extra_params p = {0};
    switch (kind) {
    case EXTRA_SELU:
        p.alpha = kn_node_float(node, "alpha", 1.67326319217681884765625f);
        p.gamma = kn_node_float(node, "gamma", 1.05070102214813232421875f);
        break;
    case EXTRA_CELU:
    case EXTRA_THRESHOLDED_RELU: p.alpha = kn_node_float(node, "alpha", 1.0f); break;
    case EXTRA_SHRINK:
        p.lambd = kn_node_float(node, "lambd", 0.5f);
        p.bias = kn_node_float(node, "bias", 0.0f);
        break;
    case EXTRA_ISINF:
        p.negative = kn_node_int(node, "detect_negative", 1) != 0;
        p.positive = kn_node_int(node, "detect_positive", 1) != 0;
        break;
    default: break;
    }
    return p;
}

static float extra_one(extra_kind kind, const extra_params *p, float x) {
    switch (kind) {
    case EXTRA_SIN: return sinf(x);
    case EXTRA_COS: return cosf(x);
    case EXTRA_TAN: return tanf(x);
    case EXTRA_ASIN: return asinf(x);
    case EXTRA_ACOS: return acosf(x);
    case EXTRA_ATAN: return atanf(x);
    case EXTRA_SINH: return sinhf(x);
    case EXTRA_COSH: return coshf(x);
    case EXTRA_ASINH: return asinhf(x);
    case EXTRA_ACOSH: return acoshf(x);
    case EXTRA_ATANH: return atanhf(x);
    case EXTRA_SIGN: return x > 0.0f ? 1.0f : x < 0.0f ? -1.0f : x; /* 0, -0 and NaN unchanged */
    case EXTRA_ROUND: return nearbyintf(x); /* the default rounding mode: halves to even */
    case EXTRA_SOFTSIGN: return x / (1.0f + fabsf(x));
    case EXTRA_SELU: return x > 0.0f ? p->gamma * x : p->gamma * p->alpha * expm1f(x);
    case EXTRA_CELU:
        return fmaxf(x, 0.0f) + fminf(0.0f, p->alpha * expm1f(x / p->alpha));
    case EXTRA_THRESHOLDED_RELU: return x > p->alpha ? x : 0.0f;
    case EXTRA_SHRINK: return x < -p->lambd ? x + p->bias : x > p->lambd ? x - p->bias : 0.0f;
    case EXTRA_MISH: /* x tanh(softplus(x)), softplus as max(x, 0) + ln(1 + e^-|x|) */
        return x * tanhf(fmaxf(x, 0.0f) + log1pf(expf(-fabsf(x))));
    case EXTRA_ISNAN: return isnan(x) ? 1.0f : 0.0f;
    case EXTRA_ISINF:
        return isinf(x) && ((x > 0.0f && p->positive) || (x < 0.0f && p->negative)) ? 1.0f : 0.0f;
    }
    return x;
}

static bool extra_gives_bool(extra_kind kind) { return kind == EXTRA_ISNAN || kind == EXTRA_ISINF; }

static kiln_status extra_infer(kn_graph *g, const kn_node *node, extra_kind kind) {
    const kn_value *x = kn_node_input(g, node, 0);
    if (!x)
        return kn_fail(KILN_ERR_INVALID_ARG, "input 0 is required");
    if (x->dtype != KN_F32)
        return kn_fail(KILN_ERR_UNSUPPORTED, "input '%s' is %s; supported: f32", x->name,
                       kn_dtype_name(x->dtype));
    if (kind == EXTRA_CELU && kn_node_float(node, "alpha", 1.0f) == 0.0f)
        return kn_fail(KILN_ERR_INVALID_ARG, "Celu's alpha must not be 0");
    kn_value *y = kn_node_output(g, node, 0);
    y->shape = x->shape;
    y->dtype = extra_gives_bool(kind) ? KN_BOOL : KN_F32;
    return KILN_OK;
}

static kiln_status extra_forward(const kn_op_call *call, extra_kind kind) {
    const float *x = kn_f32(call->in[0]); /* (n) */
    int64_t n = kn_numel(call->in[0]);
    extra_params p = extra_params_of(call->node, kind);
    if (extra_gives_bool(kind)) {
        uint8_t *y = call->out[0]->data; /* (n) */
        for (int64_t i = 0; i < n; i++)
            y[i] = extra_one(kind, &p, x[i]) != 0.0f;
    } else {
        float *y = kn_f32(call->out[0]); /* (n) */
        for (int64_t i = 0; i < n; i++)
            y[i] = extra_one(kind, &p, x[i]);
    }
    return KILN_OK;
}

static int64_t extra_flops(const kn_graph *g, const kn_node *node) {
    return kn_shape_numel(&kn_node_output(g, node, 0)->shape);
}

/* One op entry per kind: infer and forward bound to the kind. */
#define KN_EXTRA_OP(id, onnx_name, kind)                                                         \
    static kiln_status id##_infer(kn_graph *g, const kn_node *node) {                            \
        return extra_infer(g, node, kind);                                                       \
    }                                                                                            \
    static kiln_status id##_forward(const kn_op_call *call) { return extra_forward(call, kind); } \
    const kn_op kn_op_##id = {.name = onnx_name, .min_inputs = 1, .max_inputs = 1,               \
                              .infer = id##_infer, .forward = id##_forward, .flops = extra_flops};

KN_EXTRA_OP(sin, "Sin", EXTRA_SIN)
KN_EXTRA_OP(cos, "Cos", EXTRA_COS)
KN_EXTRA_OP(tan, "Tan", EXTRA_TAN)
KN_EXTRA_OP(asin, "Asin", EXTRA_ASIN)
KN_EXTRA_OP(acos, "Acos", EXTRA_ACOS)
KN_EXTRA_OP(atan, "Atan", EXTRA_ATAN)
KN_EXTRA_OP(sinh, "Sinh", EXTRA_SINH)
KN_EXTRA_OP(cosh, "Cosh", EXTRA_COSH)
KN_EXTRA_OP(asinh, "Asinh", EXTRA_ASINH)
KN_EXTRA_OP(acosh, "Acosh", EXTRA_ACOSH)
KN_EXTRA_OP(atanh, "Atanh", EXTRA_ATANH)
KN_EXTRA_OP(sign, "Sign", EXTRA_SIGN)
KN_EXTRA_OP(round, "Round", EXTRA_ROUND)
KN_EXTRA_OP(softsign, "Softsign", EXTRA_SOFTSIGN)
KN_EXTRA_OP(selu, "Selu", EXTRA_SELU)
KN_EXTRA_OP(celu, "Celu", EXTRA_CELU)
KN_EXTRA_OP(thresholdedrelu, "ThresholdedRelu", EXTRA_THRESHOLDED_RELU)
KN_EXTRA_OP(shrink, "Shrink", EXTRA_SHRINK)
KN_EXTRA_OP(isnan, "IsNaN", EXTRA_ISNAN)
KN_EXTRA_OP(isinf, "IsInf", EXTRA_ISINF)
KN_EXTRA_OP(mish, "Mish", EXTRA_MISH)
