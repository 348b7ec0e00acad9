/* ArgMax, ArgMin and Hardmax: the position of the largest (smallest) element along one axis.
 *
 *     ArgMax, ArgMin  x (..., d, ...) -> i64 indices, the axis kept as 1 (keepdims = 1, the default)
 *                     or dropped; axis 0 by default. Ties go to the first index, or to the last with
 *                     select_last_index = 1. A NaN counts as larger (ArgMax) or smaller (ArgMin) than
 *                     every number, so the first NaN wins, as in numpy.
 *     Hardmax         f32 x -> 1 at the first largest element along `axis` (default -1), 0 elsewhere
 *
 * Dtypes: ArgMax / ArgMin take f32, i64, i32, u8, i8; Hardmax f32. Integers are compared as
 * integers. No gradients. FLOPs: one compare per input element.
 */
#include <math.h>
#include <string.h>

#include "core/status.h"
#include "ops/elements.h"
#include "ops/op.h"

/* x seen as (outer, dim, inner) around the axis. */
typedef struct axis_split {
    int axis;
    int64_t outer, dim, inner;
} axis_split;

static kiln_status axis_split_make(const kn_shape *x, int64_t axis_attr, axis_split *s) {
    int rank = x->ndim;
    s->axis = kn_axis_normalize(axis_attr, rank > 0 ? rank : 1);
    if (s->axis < 0 || (rank == 0 && axis_attr != 0 && axis_attr != -1))
        return kn_fail(KILN_ERR_INVALID_ARG, "axis %lld is out of range for a %d-D input",
                       (long long)axis_attr, rank);
    s->outer = rank ? kn_shape_span(x, 0, s->axis) : 1;
    s->dim = rank ? x->d[s->axis] : 1;
    s->inner = rank ? kn_shape_span(x, s->axis + 1, rank) : 1;
    return KILN_OK;
}

/* True when v should replace the current best b (is_max: larger wins; NaN beats numbers). `last`:
 * ties replace too. */
static inline bool float_beats(float v, float b, bool is_max, bool last) {
    if (isnan(b))
        return false;
    if (isnan(v))
        return true;
    return is_max ? (v > b || (last && v == b)) : (v < b || (last && v == b));
}

/* The index along the axis of the winner in row (o, i). */
static int64_t arg_one(const kn_tensor *x, const axis_split *s, int64_t o, int64_t i, bool is_max,
                       bool last) {
    int64_t base = o * s->dim * s->inner + i, best = 0;
    if (x->dtype == KN_F32) {
        const float *xs = kn_f32(x);
        for (int64_t k = 1; k < s->dim; k++)
            if (float_beats(xs[base + k * s->inner], xs[base + best * s->inner], is_max, last))
                best = k;
        return best;
    }
    int64_t b = kn_int_load(x->data, x->dtype, base);
    for (int64_t k = 1; k < s->dim; k++) {
        int64_t v = kn_int_load(x->data, x->dtype, base + k * s->inner);
        if (is_max ? (v > b || (last && v == b)) : (v < b || (last && v == b))) {
            b = v;
            best = k;
        }
    }
    return best;
}

static kiln_status arg_infer(kn_graph *g, const kn_node *node) {
    const kn_value *x = kn_node_input(g, node, 0);
    if (!x)
        return kn_fail(KILN_ERR_INVALID_ARG, "input 0 is required");
    if (x->dtype != KN_F32 && !kn_dtype_is_integer(x->dtype))
        return kn_fail(KILN_ERR_UNSUPPORTED, "input '%s' is %s; supported: f32, i64, i32, u8, i8",
                       x->name, kn_dtype_name(x->dtype));
    if (x->shape.ndim == 0)
        return kn_fail(KILN_ERR_INVALID_ARG, "input '%s' is a scalar; %s needs an axis", x->name,
                       node->op->name);
    axis_split s;
    KN_TRY(axis_split_make(&x->shape, kn_node_int(node, "axis", 0), &s));
    if (s.dim == 0)
        return kn_fail(KILN_ERR_INVALID_ARG, "the axis has no elements to choose from");
    bool keepdims = kn_node_int(node, "keepdims", 1) != 0;
    kn_value *y = kn_node_output(g, node, 0);
    y->dtype = KN_I64;
    y->shape.ndim = 0;
    for (int k = 0; k < x->shape.ndim; k++)
        if (k != s.axis)
            y->shape.d[y->shape.ndim++] = x->shape.d[k];
        else if (keepdims)
            y->shape.d[y->shape.ndim++] = 1;
    return KILN_OK;
}

static kiln_status arg_forward(const kn_op_call *call, bool is_max) {
    const kn_tensor *x = call->in[0];
    axis_split s;
    KN_TRY(axis_split_make(&x->shape, kn_node_int(call->node, "axis", 0), &s));
    if (s.dim == 0)
        return kn_fail(KILN_ERR_INVALID_ARG, "the axis has no elements to choose from");
    bool last = kn_node_int(call->node, "select_last_index", 0) != 0;
    int64_t *y = call->out[0]->data; /* (outer, inner) */
    for (int64_t o = 0; o < s.outer; o++)
        for (int64_t i = 0; i < s.inner; i++)
            y[o * s.inner + i] = arg_one(x, &s, o, i, is_max, last);
    return KILN_OK;
}

static kiln_status argmax_forward(const kn_op_call *call) { return arg_forward(call, true); }
static kiln_status argmin_forward(const kn_op_call *call) { return arg_forward(call, false); }

static kiln_status hardmax_infer(kn_graph *g, const kn_node *node) {
    const kn_value *x = kn_node_input(g, node, 0);
    if (!x)
        return kn_fail(KILN_ERR_INVALID_ARG, "input 0 is required");
    if (x->dtype != KN_F32)
        return kn_fail(KILN_ERR_UNSUPPORTED, "input '%s' is %s; supported: f32", x->name,
                       kn_dtype_name(x->dtype));
    axis_split s;
    KN_TRY(axis_split_make(&x->shape, kn_node_int(node, "axis", -1), &s));
    kn_value *y = kn_node_output(g, node, 0);
    y->shape = x->shape;
    y->dtype = KN_F32;
    return KILN_OK;
}

static kiln_status hardmax_forward(const kn_op_call *call) {
    const kn_tensor *x = call->in[0];
    axis_split s;
    KN_TRY(axis_split_make(&x->shape, kn_node_int(call->node, "axis", -1), &s));
    float *y = kn_f32(call->out[0]); /* x's shape */
    memset(y, 0, sizeof(float) * (size_t)kn_numel(x));
    if (s.dim == 0)
        return KILN_OK;
    for (int64_t o = 0; o < s.outer; o++)
        for (int64_t i = 0; i < s.inner; i++) {
            int64_t k = arg_one(x, &s, o, i, true, false);
            y[(o * s.dim + k) * s.inner + i] = 1.0f;
        }
    return KILN_OK;
}

static int64_t arg_flops(const kn_graph *g, const kn_node *node) {
    return kn_shape_numel(&kn_node_input(g, node, 0)->shape);
}

const kn_op kn_op_argmax = {.name = "ArgMax", .min_inputs = 1, .max_inputs = 1, .infer = arg_infer,
                            .forward = argmax_forward, .flops = arg_flops};
const kn_op kn_op_argmin = {.name = "ArgMin", .min_inputs = 1, .max_inputs = 1, .infer = arg_infer,
                            .forward = argmin_forward, .flops = arg_flops};
const kn_op kn_op_hardmax = {.name = "Hardmax", .min_inputs = 1, .max_inputs = 1,
                             .infer = hardmax_infer, .forward = hardmax_forward, .flops = arg_flops};
