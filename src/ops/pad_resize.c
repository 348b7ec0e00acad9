/* Pad and Resize (ONNX opset 13: pads, constant_value, roi, scales and sizes are inputs).
 *
 * Pad maps every output index, axis by axis, to the input index it reads (or to the constant):
 * constant, reflect (mirror without repeating the edge, periodically, like numpy), edge and wrap
 * (opset 19: periodic) modes; a negative pad crops. The optional axes input (opset 18) names the dims
 * pads covers; the others are not padded. Forward copies the interior of each row in one piece; backward adds dY back
 * through the same map, so every mode has a gradient.
 *
 * Resize scales the last two dims (H, W) of a tensor of rank >= 2 by nearest, bilinear or bicubic
 * (cubic_coeff_a, exclude_outside) interpolation, with ONNX's coordinate transformations (opset 19's
 * half_pixel_symmetric too), scales or sizes over the dims `axes` names, keep_aspect_ratio_policy
 * (opset 18), including tf_crop_and_resize (roi, extrapolation_value beyond the input). Each output row and column gets
 * its source taps once (a table in the op's scratch, sized up front by the workspace function), then
 * every plane reuses them. Nearest works for every dtype, linear, cubic and tf_crop_and_resize for
 * f32; all have a backward.
 */
#include <math.h>
#include <string.h>

#include "core/threads.h"
#include "ops/movement.h"

/* ---- Pad ---- */

typedef enum pad_mode { PAD_CONSTANT, PAD_REFLECT, PAD_EDGE, PAD_WRAP } pad_mode;

typedef struct pad_plan {
    pad_mode mode;
    kn_shape out;
    int64_t begin[KN_MAX_DIMS]; /* output index o lies o - begin[k] into the input along dim k */
} pad_plan;

static kiln_status pad_plan_make(const kn_node *node, kn_tensor *const *in, int n_in, pad_plan *p) {
    const kn_tensor *data = kn_input_at(in, n_in, 0), *pads_in = kn_input_at(in, n_in, 1);
    const kn_tensor *constant = kn_input_at(in, n_in, 2), *axes_in = kn_input_at(in, n_in, 3);
    if (!data || !pads_in)
        return kn_fail(KILN_ERR_INVALID_ARG, "inputs data and pads are required");
    const char *mode = kn_node_string(node, "mode", "constant");
    if (strcmp(mode, "constant") == 0)
        p->mode = PAD_CONSTANT;
    else if (strcmp(mode, "reflect") == 0)
        p->mode = PAD_REFLECT;
    else if (strcmp(mode, "edge") == 0)
        p->mode = PAD_EDGE;
    else if (strcmp(mode, "wrap") == 0)
        p->mode = PAD_WRAP;
    else
        return kn_fail(KILN_ERR_UNSUPPORTED, "mode '%s'; constant, reflect, edge and wrap are "
                       "supported", mode);
    if (constant && (constant->dtype != data->dtype || kn_numel(constant) != 1))
        return kn_fail(KILN_ERR_INVALID_ARG, "constant_value must be one %s value, got %lld of "
                       "dtype %s", kn_dtype_name(data->dtype), (long long)kn_numel(constant),
                       kn_dtype_name(constant->dtype));
    int rank = data->shape.ndim, n, n_axes = rank;
    int64_t given[2 * KN_MAX_DIMS], axes[KN_MAX_DIMS];
    KN_TRY(kn_read_ints(pads_in, "pads", given, 2 * KN_MAX_DIMS, &n));
    if (axes_in) { /* opset 18: pads name only these axes (begins, then ends) */
        KN_TRY(kn_read_ints(axes_in, "axes", axes, KN_MAX_DIMS, &n_axes));
    } else {
        for (int k = 0; k < rank; k++)
            axes[k] = k;
    }
    if (n != 2 * n_axes)
        return kn_fail(KILN_ERR_INVALID_ARG, "pads has %d elements; %d axes need %d", n, n_axes,
                       2 * n_axes);
    int64_t pads[2 * KN_MAX_DIMS] = {0}; /* begins of every dim, then ends */
    bool seen[KN_MAX_DIMS] = {false};
    for (int i = 0; i < n_axes; i++) {
        int axis = kn_axis_normalize(axes[i], rank);
        if (axis < 0 || seen[axis])
            return kn_fail(KILN_ERR_INVALID_ARG, "axis %lld is out of range for rank %d or repeated",
                           (long long)axes[i], rank);
        seen[axis] = true;
        pads[axis] = given[i];
        pads[axis + rank] = given[i + n_axes];
    }
    p->out = data->shape;
    for (int k = 0; k < rank; k++) {
        int64_t dim = data->shape.d[k];
        p->begin[k] = pads[k];
        p->out.d[k] = kn_count_add(kn_count_add(dim, pads[k]), pads[k + rank]);
        if (p->out.d[k] < 0)
            return kn_fail(KILN_ERR_SHAPE, "pads %lld and %lld leave no valid size for dim %d of "
                           "size %lld", (long long)pads[k], (long long)pads[k + rank], k,
                           (long long)dim);
        if (p->mode != PAD_CONSTANT && dim == 0 && p->out.d[k] > 0)
            return kn_fail(KILN_ERR_SHAPE, "cannot pad the empty dim %d in %s mode", k, mode);
    }
    return kn_shape_check_size(&p->out);
}

/* The input index that output index o reads along a dim of size `dim`, or -1 for the constant. */
static int64_t pad_source(int64_t o, int64_t begin, int64_t dim, pad_mode mode) {
    int64_t i = o - begin;
    if (i >= 0 && i < dim)
        return i;
    if (mode == PAD_CONSTANT)
        return -1;
    if (mode == PAD_EDGE || dim == 1)
        return i < 0 ? 0 : dim - 1;
    if (mode == PAD_WRAP) { /* ... 2 3 [0 1 2 3] 0 1 ... */
        int64_t m = i % dim;
        return m < 0 ? m + dim : m;
    }
    int64_t period = 2 * (dim - 1), m = i % period; /* reflect: ... 2 1 [0 1 2 3] 2 1 0 1 ... */
    if (m < 0)
        m += period;
    return m < dim ? m : period - m;
}

/* The input offset of the row that output row r (a position in every dim but the last) reads, or -1
 * when the row lies in the constant border. */
static int64_t pad_row_source(const pad_plan *p, const kn_shape *in, const int64_t *in_stride,
                              int64_t r) {
    int64_t offset = 0;
    for (int k = in->ndim - 2; k >= 0; k--) {
        int64_t i = pad_source(r % p->out.d[k], p->begin[k], in->d[k], p->mode);
        r /= p->out.d[k];
        if (i < 0)
            return -1;
        offset += i * in_stride[k];
    }
    return offset;
}

static kiln_status pad_infer(kn_graph *g, const kn_node *node) {
    KN_TRY(kn_check_outputs(node, 1));
    kn_infer_inputs inputs;
    KN_TRY(kn_infer_inputs_get(g, node, &inputs));
    pad_plan p;
    KN_TRY(pad_plan_make(node, inputs.in, inputs.n, &p));
    kn_set_output(g, node, 0, &p.out, inputs.in[0]->dtype);
    return KILN_OK;
}

/* One output row of n elements from the input row `src` (NULL: a border row, all constant): the
 * interior in one copy, the border element by element. */
static void pad_row(char *dst, const char *src, const pad_plan *p, int64_t n, int64_t dim,
                    int64_t begin, const char *constant, size_t esize) {
    int64_t lo = begin > 0 ? begin : 0, hi = begin + dim < n ? begin + dim : n;
    if (!src || lo >= hi)
        lo = hi = 0;
    if (hi > lo)
        memcpy(dst + (size_t)lo * esize, src + (size_t)(lo - begin) * esize,
               (size_t)(hi - lo) * esize);
    for (int64_t o = 0; o < n; o++) {
        if (o >= lo && o < hi)
            continue;
        int64_t i = src ? pad_source(o, begin, dim, p->mode) : -1;
        memcpy(dst + (size_t)o * esize, i < 0 ? constant : src + (size_t)i * esize, esize);
    }
}

/* A rank-0 tensor pads like a one-element vector with no pads, so rows always exist. */
static void pad_scalar_as_vector(pad_plan *p, kn_shape *in) {
    if (in->ndim == 0) {
        *in = kn_shape_of(1, (int64_t[]){1});
        p->out = *in;
        p->begin[0] = 0;
    }
}

/* Pad's output rows of n elements, forward (x to y) or backward (dy to dx), for kn_parallel_range. */
typedef struct pad_rows {
    const pad_plan *p;
    const kn_shape *in;
    const int64_t *in_stride;
    int64_t n, dim, begin; /* the last dim's output and input sizes, and its pad_plan begin */
    size_t esize;
    const char *fill; /* forward's constant */
    const char *x;
    char *y;
    const float *dy;
    float *dx;
} pad_rows;

static void pad_forward_range(void *ctx, int64_t begin, int64_t end, int slot) {
    (void)slot;
    const pad_rows *c = ctx;
    for (int64_t r = begin; r < end; r++) {
        int64_t source = pad_row_source(c->p, c->in, c->in_stride, r);
        pad_row(c->y + (size_t)(r * c->n) * c->esize, source < 0 ? NULL : c->x + (size_t)source * c->esize, c->p,
                c->n, c->dim, c->begin, c->fill, c->esize);
    }
}

static kiln_status pad_forward(const kn_op_call *call) {
    pad_plan p;
    KN_TRY(pad_plan_make(call->node, call->in, call->node->n_in, &p));
    if (!kn_shape_equal(&p.out, &call->out[0]->shape))
        return kn_fail(KILN_ERR_SHAPE, "Pad: the output's shape does not match the pads");
    const kn_tensor *data = call->in[0], *constant = kn_input_at(call->in, call->node->n_in, 2);
    kn_shape in = data->shape;
    pad_scalar_as_vector(&p, &in);
    static const char zero[8];
    int64_t in_stride[KN_MAX_DIMS];
    kn_shape_strides(&in, in_stride);
    int last = in.ndim - 1;
    int64_t n = p.out.d[last], rows = n > 0 ? kn_shape_numel(&p.out) / n : 0;
    pad_rows c = {
        .p = &p, .in = &in, .in_stride = in_stride, .n = n, .dim = in.d[last], .begin = p.begin[last],
        .esize = kn_dtype_size(data->dtype), .fill = constant ? constant->data : zero,
        .x = data->data, .y = call->out[0]->data,
    };
    kn_parallel_range(rows, kn_threads_for(rows * n, KN_MOVE_PARALLEL_MIN), pad_forward_range, &c);
    return KILN_OK;
}

static void pad_backward_range(void *ctx, int64_t begin, int64_t end, int slot) {
    (void)slot;
    const pad_rows *c = ctx;
    for (int64_t r = begin; r < end; r++) {
        int64_t source = pad_row_source(c->p, c->in, c->in_stride, r);
        if (source < 0)
            continue;
        for (int64_t o = 0; o < c->n; o++) {
            int64_t i = pad_source(o, c->begin, c->dim, c->p->mode);
            if (i >= 0)
                c->dx[source + i] += c->dy[r * c->n + o];
        }
    }
}

/* dX[source(o)] += dY[o]. In constant mode distinct output rows read distinct input rows, so rows
 * split across threads; reflect and edge rows may share input rows and run in order. */
static kiln_status pad_backward(const kn_op_call *call) {
    if (!call->dout[0] || !call->din[0])
        return KILN_OK;
    KN_TRY(kn_check_f32_gradient(call, 0));
    pad_plan p;
    KN_TRY(pad_plan_make(call->node, call->in, call->node->n_in, &p));
    kn_shape in = call->in[0]->shape;
    pad_scalar_as_vector(&p, &in);
    int64_t in_stride[KN_MAX_DIMS];
    kn_shape_strides(&in, in_stride);
    int last = in.ndim - 1;
    int64_t n = p.out.d[last], rows = n > 0 ? kn_shape_numel(&p.out) / n : 0;
    pad_rows c = {
        .p = &p, .in = &in, .in_stride = in_stride, .n = n, .dim = in.d[last], .begin = p.begin[last],
        .dy = kn_f32(call->dout[0]), .dx = kn_f32(call->din[0]),
    };
    bool rows_disjoint = p.mode == PAD_CONSTANT;
    int threads = rows_disjoint ? kn_threads_for(rows * n, KN_MOVE_PARALLEL_MIN) : 1;
    kn_parallel_range(rows, threads, pad_backward_range, &c);
    return KILN_OK;
}

/* ---- Resize ---- */

typedef enum resize_mode { RESIZE_NEAREST, RESIZE_LINEAR, RESIZE_CUBIC } resize_mode;
typedef enum resize_coord {
    COORD_HALF_PIXEL,
    COORD_PYTORCH_HALF_PIXEL,
    COORD_ALIGN_CORNERS,
    COORD_ASYMMETRIC,
    COORD_TF_HALF_PIXEL_FOR_NN,
    COORD_TF_CROP_AND_RESIZE,
    COORD_HALF_PIXEL_SYMMETRIC
} resize_coord;
typedef enum resize_round {
    ROUND_PREFER_FLOOR,
    ROUND_PREFER_CEIL,
    ROUND_FLOOR,
    ROUND_CEIL
} resize_round;

/* One resized dim. `resized` is the output length the coordinate formulas use: in * scale as ONNX's
 * reference computes it when scales are given (1.2 for 2 * 0.6, not the floored 1), the size when
 * sizes are. roi_start and roi_end: the crop, as fractions of the input, of tf_crop_and_resize. */
typedef struct resize_axis {
    int64_t in, out;
    double scale, resized;
    double roi_start, roi_end;
} resize_axis;

typedef struct resize_plan {
    resize_mode mode;
    resize_coord coord;
    resize_round round;
    float cubic_a;             /* cubic_coeff_a */
    bool exclude_outside;      /* cubic taps outside the input weigh 0, the rest renormalised */
    float extrapolation_value; /* tf_crop_and_resize output beyond the input */
    kn_shape out;
    int64_t planes; /* the unchanged leading dims, as one */
    resize_axis h, w;
} resize_plan;

/* Which of `names` the attribute is; -1 when none. */
static int pick(const char *value, const char *const *names, int n) {
    for (int i = 0; i < n; i++)
        if (strcmp(value, names[i]) == 0)
            return i;
    return -1;
}

static kiln_status resize_modes(const kn_node *node, resize_plan *p) {
    static const char *const modes[] = {"nearest", "linear", "cubic"};
    static const char *const coords[] = {"half_pixel", "pytorch_half_pixel", "align_corners",
                                         "asymmetric", "tf_half_pixel_for_nn",
                                         "tf_crop_and_resize", "half_pixel_symmetric"};
    static const char *const rounds[] = {"round_prefer_floor", "round_prefer_ceil", "floor", "ceil"};
    const char *mode = kn_node_string(node, "mode", "nearest");
    const char *coord = kn_node_string(node, "coordinate_transformation_mode", "half_pixel");
    const char *round = kn_node_string(node, "nearest_mode", "round_prefer_floor");
    int m = pick(mode, modes, 3), c = pick(coord, coords, 7), r = pick(round, rounds, 4);
    if (m < 0)
        return kn_fail(KILN_ERR_INVALID_ARG, "unknown mode '%s'", mode);
    if (c < 0)
        return kn_fail(KILN_ERR_INVALID_ARG, "unknown coordinate_transformation_mode '%s'", coord);
    if (r < 0)
        return kn_fail(KILN_ERR_INVALID_ARG, "unknown nearest_mode '%s'", round);
    int64_t exclude_outside = kn_node_int(node, "exclude_outside", 0);
    if (exclude_outside != 0 && exclude_outside != 1)
        return kn_fail(KILN_ERR_INVALID_ARG, "exclude_outside %lld must be 0 or 1",
                       (long long)exclude_outside);
    p->mode = (resize_mode)m;
    p->coord = (resize_coord)c;
    p->round = (resize_round)r;
    p->cubic_a = kn_node_float(node, "cubic_coeff_a", -0.75f);
    p->exclude_outside = exclude_outside != 0;
    p->extrapolation_value = kn_node_float(node, "extrapolation_value", 0.0f);
    return KILN_OK;
}

/* Which dims scales / sizes cover: the attribute axes (opset 18), else all of them. k_of[i] is the
 * dim of element i; -1 where a dim is not covered. */
static kiln_status resize_axes(const kn_node *node, int rank, int *n_axes, int *k_of) {
    int64_t axes[KN_MAX_DIMS];
    int n = kn_node_ints(node, "axes", axes, KN_MAX_DIMS);
    if (n > KN_MAX_DIMS)
        return kn_fail(KILN_ERR_INVALID_ARG, "axes has %d elements; X has rank %d", n, rank);
    if (n < 0) {
        n = rank;
        for (int k = 0; k < rank; k++)
            axes[k] = k;
    }
    bool seen[KN_MAX_DIMS] = {false};
    for (int i = 0; i < n; i++) {
        int k = kn_axis_normalize(axes[i], rank);
        if (k < 0 || seen[k])
            return kn_fail(KILN_ERR_INVALID_ARG, "axis %lld is out of range for rank %d or repeated",
                           (long long)axes[i], rank);
        seen[k] = true;
        k_of[i] = k;
    }
    *n_axes = n;
    return KILN_OK;
}

/* keep_aspect_ratio_policy (opset 18) for sizes: "stretch" (default) takes each size as it is;
 * "not_larger" / "not_smaller" take one scale for every covered dim, the smallest / largest of
 * size / in, and round in * scale to the nearest integer (halves to even, as ONNX's reference). */
static kiln_status resize_aspect(const kn_node *node, int n_axes, const int *k_of,
                                 const int64_t *size, resize_axis *axes) {
    const char *policy = kn_node_string(node, "keep_aspect_ratio_policy", "stretch");
    bool not_larger = strcmp(policy, "not_larger") == 0;
    if (strcmp(policy, "stretch") == 0)
        return KILN_OK;
    if (!not_larger && strcmp(policy, "not_smaller") != 0)
        return kn_fail(KILN_ERR_INVALID_ARG, "unknown keep_aspect_ratio_policy '%s'", policy);
    double scale = not_larger ? INFINITY : 0.0;
    for (int i = 0; i < n_axes; i++) {
        int64_t in = axes[k_of[i]].in;
        if (in == 0)
            return kn_fail(KILN_ERR_INVALID_ARG, "keep_aspect_ratio_policy needs non-empty dims");
        double s = (double)size[i] / (double)in;
        scale = not_larger ? fmin(scale, s) : fmax(scale, s);
    }
    for (int i = 0; i < n_axes; i++) {
        resize_axis *a = &axes[k_of[i]];
        a->scale = scale;
        a->resized = (double)a->in * scale;
        a->out = (int64_t)nearbyint(a->resized);
    }
    return KILN_OK;
}

/* The output dims from scales (floor(in * scale)) or sizes over the dims `axes` names (all without
 * it); only the last two may change. */
static kiln_status resize_dims(const kn_node *node, const kn_tensor *x, const kn_tensor *scales,
                               const kn_tensor *sizes, resize_axis *axes, resize_plan *p) {
    int rank = x->shape.ndim;
    bool by_scales = scales && kn_numel(scales) > 0, by_sizes = sizes && kn_numel(sizes) > 0;
    if (by_scales == by_sizes)
        return kn_fail(KILN_ERR_INVALID_ARG, "exactly one of scales and sizes must be given (got %s)",
                       by_scales ? "both" : "neither");
    int n_axes = 0, k_of[KN_MAX_DIMS];
    KN_TRY(resize_axes(node, rank, &n_axes, k_of));
    int64_t size[KN_MAX_DIMS];
    int n = 0;
    if (by_scales) {
        if (scales->dtype != KN_F32 || scales->shape.ndim != 1)
            return kn_fail(KILN_ERR_INVALID_ARG, "scales must be a 1-D f32 tensor");
        KN_TRY(kn_require_data(scales, "scales"));
        n = (int)kn_numel(scales);
    } else {
        KN_TRY(kn_read_ints(sizes, "sizes", size, KN_MAX_DIMS, &n));
    }
    if (n != n_axes)
        return kn_fail(KILN_ERR_INVALID_ARG, "%s has %d elements; X has rank %d and axes %d",
                       by_scales ? "scales" : "sizes", n, rank, n_axes);
    p->out = x->shape;
    for (int k = 0; k < rank; k++)
        axes[k] = (resize_axis){.in = x->shape.d[k], .out = x->shape.d[k], .scale = 1.0,
                                .resized = (double)x->shape.d[k]};
    for (int i = 0; i < n_axes; i++) {
        int k = k_of[i];
        resize_axis *a = &axes[k];
        if (by_scales) {
            float s = kn_f32(scales)[i];
            if (!(s > 0) || !isfinite(s))
                return kn_fail(KILN_ERR_INVALID_ARG, "scales[%d] is %g; it must be > 0", i, s);
            a->scale = s;
            a->resized = (double)a->in * s;
            if (a->resized >= (double)(INT64_C(1) << 40))
                return kn_fail(KILN_ERR_INVALID_ARG, "scales[%d] = %g makes dim %d too large", i, s,
                               k);
            a->out = (int64_t)floor(a->resized);
        } else {
            if (size[i] < 0 || (a->in == 0 && size[i] > 0))
                return kn_fail(KILN_ERR_INVALID_ARG, "cannot resize dim %d of size %lld to %lld", k,
                               (long long)a->in, (long long)size[i]);
            a->out = size[i];
            a->resized = (double)size[i];
            a->scale = a->in > 0 ? (double)size[i] / (double)a->in : 1.0;
        }
    }
    if (by_sizes)
        KN_TRY(resize_aspect(node, n_axes, k_of, size, axes));
    /* antialias (opset 18) widens the filter only when shrinking with linear or cubic */
    for (int k = 0; k < rank; k++)
        if (kn_node_int(node, "antialias", 0) != 0 && p->mode != RESIZE_NEAREST &&
            axes[k].out < axes[k].in)
            return kn_fail(KILN_ERR_UNSUPPORTED, "antialias when shrinking dim %d (%lld -> %lld) "
                           "is not supported", k, (long long)axes[k].in, (long long)axes[k].out);
    for (int k = 0; k < rank; k++) {
        resize_axis *a = &axes[k];
        if (k < rank - 2 && a->out != a->in)
            return kn_fail(KILN_ERR_UNSUPPORTED, "resizing dim %d (%lld -> %lld) is not supported; "
                           "only the last two dims are resized", k, (long long)a->in,
                           (long long)a->out);
        p->out.d[k] = a->out;
    }
    return KILN_OK;
}

/* tf_crop_and_resize's roi (starts of every dim, then ends), when its values are known: shape
 * inference may not have them, and the output shape does not depend on them. The leading dims,
 * which Resize does not resize, must not be cropped either. */
static kiln_status resize_roi(const kn_tensor *roi, int rank, resize_axis *axes) {
    for (int k = 0; k < rank; k++) {
        axes[k].roi_start = 0.0;
        axes[k].roi_end = 1.0;
    }
    if (!roi || kn_numel(roi) == 0)
        return kn_fail(KILN_ERR_INVALID_ARG, "tf_crop_and_resize needs the roi input");
    if (roi->dtype != KN_F32 || kn_numel(roi) != 2 * rank)
        return kn_fail(KILN_ERR_INVALID_ARG, "roi must be %d f32 values (starts, then ends), got "
                       "%lld of dtype %s", 2 * rank, (long long)kn_numel(roi),
                       kn_dtype_name(roi->dtype));
    if (!roi->data)
        return KILN_OK;
    for (int k = 0; k < rank; k++) {
        axes[k].roi_start = kn_f32(roi)[k];
        axes[k].roi_end = kn_f32(roi)[rank + k];
        bool whole = axes[k].roi_start == 0.0 && axes[k].roi_end == 1.0;
        if (k < rank - 2 && axes[k].in > 1 && !whole)
            return kn_fail(KILN_ERR_UNSUPPORTED, "roi crops dim %d to [%g, %g]; only the last two "
                           "dims are resized", k, axes[k].roi_start, axes[k].roi_end);
    }
    return KILN_OK;
}

static kiln_status resize_plan_make(const kn_node *node, kn_tensor *const *in, int n_in,
                                    resize_plan *p) {
    const kn_tensor *x = kn_input_at(in, n_in, 0);
    if (!x)
        return kn_fail(KILN_ERR_INVALID_ARG, "input X is missing");
    int rank = x->shape.ndim;
    if (rank < 2)
        return kn_fail(KILN_ERR_UNSUPPORTED, "X has rank %d; Resize needs rank >= 2 (it resizes "
                       "the last two dims)", rank);
    KN_TRY(resize_modes(node, p));
    if (p->mode != RESIZE_NEAREST && x->dtype != KN_F32)
        return kn_fail(KILN_ERR_UNSUPPORTED, "%s Resize of %s data; only f32 is supported",
                       p->mode == RESIZE_LINEAR ? "linear" : "cubic", kn_dtype_name(x->dtype));
    if (p->coord == COORD_TF_CROP_AND_RESIZE && x->dtype != KN_F32)
        return kn_fail(KILN_ERR_UNSUPPORTED, "tf_crop_and_resize of %s data; only f32 is supported",
                       kn_dtype_name(x->dtype));
    resize_axis axes[KN_MAX_DIMS];
    KN_TRY(resize_dims(node, x, kn_input_at(in, n_in, 2), kn_input_at(in, n_in, 3), axes, p));
    if (p->coord == COORD_TF_CROP_AND_RESIZE)
        KN_TRY(resize_roi(kn_input_at(in, n_in, 1), rank, axes));
    p->planes = kn_shape_span(&x->shape, 0, rank - 2);
    p->h = axes[rank - 2];
    p->w = axes[rank - 1];
    return KILN_OK;
}

static kiln_status resize_infer(kn_graph *g, const kn_node *node) {
    KN_TRY(kn_check_outputs(node, 1));
    kn_infer_inputs inputs;
    KN_TRY(kn_infer_inputs_get(g, node, &inputs));
    resize_plan p;
    KN_TRY(resize_plan_make(node, inputs.in, inputs.n, &p));
    kn_set_output(g, node, 0, &p.out, inputs.in[0]->dtype);
    return KILN_OK;
}

/* Where output index o of an axis lies in the input, by the coordinate transformation. */
static double resize_source(const resize_plan *p, const resize_axis *a, int64_t o) {
    double x = (double)o, span = a->roi_end - a->roi_start;
    switch (p->coord) {
    case COORD_HALF_PIXEL: return (x + 0.5) / a->scale - 0.5;
    case COORD_PYTORCH_HALF_PIXEL: return a->resized > 1 ? (x + 0.5) / a->scale - 0.5 : 0.0;
    case COORD_ALIGN_CORNERS:
        return a->resized == 1 ? 0.0 : x * (double)(a->in - 1) / (a->resized - 1);
    case COORD_ASYMMETRIC: return x / a->scale;
    case COORD_TF_HALF_PIXEL_FOR_NN: return (x + 0.5) / a->scale;
    case COORD_HALF_PIXEL_SYMMETRIC: { /* opset 19: half_pixel, centred for the rounded-down length */
        double adjustment = a->resized > 0 ? (double)a->out / a->resized : 1.0;
        return (double)a->in / 2 * (1 - adjustment) + (x + 0.5) / a->scale - 0.5;
    }
    case COORD_TF_CROP_AND_RESIZE: {
        double last = (double)(a->in - 1);
        double offset = a->resized == 1 ? span * last / 2 : x * span * last / (a->resized - 1);
        return a->roi_start * last + offset;
    }
    }
    return 0.0;
}

enum { RESIZE_MAX_TAPS = 4 };

/* The input taps of one output index along one axis: nearest reads i[0]; linear mixes i[0] and i[1],
 * cubic i[0..3], with weights w. `outside`: a tf_crop_and_resize coordinate beyond the input, whose
 * outputs are extrapolation_value (its taps are still valid indices). */
typedef struct resize_tap {
    int64_t i[RESIZE_MAX_TAPS];
    float w[RESIZE_MAX_TAPS];
    bool outside;
} resize_tap;

/* The cubic convolution kernel (Keys) with coefficient a, at distance d. */
static double cubic_weight(double d, double a) {
    d = fabs(d);
    if (d <= 1)
        return ((a + 2) * d - (a + 3)) * d * d + 1;
    if (d < 2)
        return ((a * d - 5 * a) * d + 8 * a) * d - 4 * a;
    return 0.0;
}

/* Cubic taps: the 4 inputs around x, clamped to the edge (ONNX's edge padding) or, with
 * exclude_outside, weighing 0 with the others renormalised. */
static void cubic_taps(const resize_plan *p, const resize_axis *a, double x, resize_tap *t) {
    double below = floor(x), fraction = x - below, sum = 0;
    double w[RESIZE_MAX_TAPS];
    for (int k = 0; k < RESIZE_MAX_TAPS; k++) {
        int64_t i = (int64_t)below - 1 + k;
        w[k] = cubic_weight(fraction + 1 - k, p->cubic_a);
        if (p->exclude_outside && (i < 0 || i >= a->in))
            w[k] = 0;
        sum += w[k];
        t->i[k] = i < 0 ? 0 : i >= a->in ? a->in - 1 : i;
    }
    for (int k = 0; k < RESIZE_MAX_TAPS; k++)
        t->w[k] = (float)(p->exclude_outside ? w[k] / sum : w[k]);
}

static resize_tap resize_tap_at(const resize_plan *p, const resize_axis *a, int64_t o) {
    double x = resize_source(p, a, o), below = floor(x);
    resize_tap t = {{0}, {0}, false};
    int64_t last = a->in - 1;
    t.outside = p->coord == COORD_TF_CROP_AND_RESIZE && (x < 0 || x > (double)last);
    if (p->mode == RESIZE_NEAREST) {
        double fraction = x - below, i;
        switch (p->round) {
        case ROUND_PREFER_FLOOR: i = fraction <= 0.5 ? below : below + 1; break;
        case ROUND_PREFER_CEIL: i = fraction < 0.5 ? below : below + 1; break;
        case ROUND_FLOOR: i = below; break;
        default: i = ceil(x); break;
        }
        t.i[0] = i < 0 ? 0 : i > (double)last ? last : (int64_t)i;
        return t;
    }
    if (p->mode == RESIZE_CUBIC) {
        cubic_taps(p, a, x, &t);
        return t;
    }
    /* Outside [0, in - 1] both taps are the edge sample, as with ONNX's edge-padded reference. */
    x = x < 0 ? 0 : x > (double)last ? (double)last : x;
    t.i[0] = (int64_t)floor(x);
    t.i[1] = t.i[0] < last ? t.i[0] + 1 : last;
    t.w[1] = (float)(x - (double)t.i[0]);
    t.w[0] = 1 - t.w[1];
    return t;
}

/* Bytes of the tap table: one tap per output row and per output column. */
static bool resize_taps_bytes(int64_t out_h, int64_t out_w, size_t *bytes) {
    size_t count = (size_t)(out_h + out_w);
    return kn_size_mul(count ? count : 1, sizeof(resize_tap), bytes);
}

/* The taps of every output row (out_h) then every output column (out_w), in the op's scratch. */
static kiln_status resize_taps(const resize_plan *p, kn_op_ctx *ctx, resize_tap **rows,
                               resize_tap **cols) {
    size_t bytes;
    if (!resize_taps_bytes(p->h.out, p->w.out, &bytes))
        return kn_fail(KILN_ERR_NOMEM, "Resize: tap table size overflows");
    resize_tap *taps = kn_op_scratch(ctx, bytes);
    if (!taps)
        return kn_fail(KILN_ERR_NOMEM, "Resize: out of memory for %zu bytes of taps", bytes);
    for (int64_t o = 0; o < p->h.out; o++)
        taps[o] = resize_tap_at(p, &p->h, o);
    for (int64_t o = 0; o < p->w.out; o++)
        taps[p->h.out + o] = resize_tap_at(p, &p->w, o);
    *rows = taps;
    *cols = taps + p->h.out;
    return KILN_OK;
}

/* The scratch forward asks for: the tap table at the node's output shape. */
static size_t resize_workspace(const kn_graph *g, const kn_node *node) {
    const kn_shape *y = &kn_node_output(g, node, 0)->shape;
    size_t bytes;
    if (y->ndim < 2 || !resize_taps_bytes(y->d[y->ndim - 2], y->d[y->ndim - 1], &bytes))
        return 0;
    return bytes;
}

/* dst[j] = src[taps[j].i[0]] for n elements of esize bytes. */
static void copy_taps(char *dst, const char *src, const resize_tap *taps, int64_t n, size_t esize) {
    switch (esize) {
    case 1:
        for (int64_t j = 0; j < n; j++)
            dst[j] = src[taps[j].i[0]];
        break;
    case 4:
        for (int64_t j = 0; j < n; j++)
            memcpy(dst + 4 * j, src + 4 * taps[j].i[0], 4);
        break;
    default:
        for (int64_t j = 0; j < n; j++)
            memcpy(dst + (size_t)j * esize, src + (size_t)taps[j].i[0] * esize, esize);
    }
}

/* Resize's output rows (planes * out_h of them) for kn_parallel_range, forward (x to y); backward's
 * planes (dy to dx) for kn_parallel_for. */
typedef struct resize_run {
    const resize_plan *p;
    const resize_tap *rows, *cols;
    size_t esize;
    const void *x; // (planes, in_h, in_w)
    void *y;       // (planes, out_h, out_w)
    int n_taps;    // backward's taps per axis
    const float *dy;
    float *dx;
} resize_run;

static void resize_nearest_rows(void *ctx, int64_t begin, int64_t end, int slot) {
    (void)slot;
    const resize_run *z = ctx;
    const resize_plan *p = z->p;
    int64_t in_h = p->h.in, in_w = p->w.in, out_h = p->h.out, out_w = p->w.out;
    size_t esize = z->esize;
    const char *xd = z->x;
    char *yd = z->y;
    for (int64_t r = begin; r < end; r++) {
        int64_t plane = r / out_h, oy = r % out_h;
        const char *src = xd + (size_t)((plane * in_h + z->rows[oy].i[0]) * in_w) * esize;
        copy_taps(yd + (size_t)(r * out_w) * esize, src, z->cols, out_w, esize);
    }
}

static void resize_linear_rows(void *ctx, int64_t begin, int64_t end, int slot) {
    (void)slot;
    const resize_run *z = ctx;
    const resize_plan *p = z->p;
    const resize_tap *rows = z->rows, *cols = z->cols;
    const float *x = z->x;
    float *y = z->y;
    int64_t in_h = p->h.in, in_w = p->w.in, out_h = p->h.out, out_w = p->w.out;
    for (int64_t r = begin; r < end; r++) {
        int64_t plane = r / out_h;
        resize_tap ty = rows[r % out_h];
        const float *top = x + (plane * in_h + ty.i[0]) * in_w;    // (in_w)
        const float *bottom = x + (plane * in_h + ty.i[1]) * in_w; // (in_w)
        for (int64_t ox = 0; ox < out_w; ox++) {
            const resize_tap *tx = &cols[ox];
            float upper = tx->w[0] * top[tx->i[0]] + tx->w[1] * top[tx->i[1]];
            float lower = tx->w[0] * bottom[tx->i[0]] + tx->w[1] * bottom[tx->i[1]];
            y[r * out_w + ox] = ty.w[0] * upper + ty.w[1] * lower;
        }
    }
}

/* Each output mixes 4 x 4 inputs: the 4 input rows' column mixes, weighted by the row taps. */
static void resize_cubic_rows(void *ctx, int64_t begin, int64_t end, int slot) {
    (void)slot;
    const resize_run *z = ctx;
    const resize_plan *p = z->p;
    const resize_tap *rows = z->rows, *cols = z->cols;
    const float *x = z->x;
    float *y = z->y;
    int64_t in_h = p->h.in, in_w = p->w.in, out_h = p->h.out, out_w = p->w.out;
    for (int64_t r = begin; r < end; r++) {
        int64_t plane = r / out_h;
        const resize_tap *ty = &rows[r % out_h];
        for (int64_t ox = 0; ox < out_w; ox++) {
            const resize_tap *tx = &cols[ox];
            float sum = 0;
            for (int a = 0; a < RESIZE_MAX_TAPS; a++) {
                const float *src = x + (plane * in_h + ty->i[a]) * in_w; // (in_w)
                float row = 0;
                for (int b = 0; b < RESIZE_MAX_TAPS; b++)
                    row += tx->w[b] * src[tx->i[b]];
                sum += ty->w[a] * row;
            }
            y[r * out_w + ox] = sum;
        }
    }
}

/* Whether Resize's outputs are worth the threads. */
static int resize_threads(const resize_plan *p) {
    return kn_threads_for(p->planes * p->h.out * p->w.out, KN_MOVE_PARALLEL_MIN);
}

/* tf_crop_and_resize: outputs whose row or column lies beyond the input take extrapolation_value. */
static void resize_extrapolate(const resize_plan *p, const resize_tap *rows, const resize_tap *cols,
                               float *y) {
    int64_t out_h = p->h.out, out_w = p->w.out;
    for (int64_t r = 0; r < p->planes * out_h; r++)
        for (int64_t ox = 0; ox < out_w; ox++)
            if (rows[r % out_h].outside || cols[ox].outside)
                y[r * out_w + ox] = p->extrapolation_value;
}

static kiln_status resize_forward(const kn_op_call *call) {
    resize_plan p;
    KN_TRY(resize_plan_make(call->node, call->in, call->node->n_in, &p));
    if (!kn_shape_equal(&p.out, &call->out[0]->shape))
        return kn_fail(KILN_ERR_SHAPE, "Resize: the output's shape does not match scales/sizes");
    if (p.coord == COORD_TF_CROP_AND_RESIZE)
        KN_TRY(kn_require_data(call->in[1], "roi"));
    resize_tap *rows, *cols;
    KN_TRY(resize_taps(&p, call->ctx, &rows, &cols));
    const kn_tensor *x = call->in[0];
    kn_tensor *y = call->out[0];
    resize_run z = {.p = &p, .rows = rows, .cols = cols, .esize = kn_dtype_size(x->dtype),
                    .x = x->data, .y = y->data};
    int64_t n = p.planes * p.h.out;
    int threads = resize_threads(&p);
    switch (p.mode) {
    case RESIZE_NEAREST: kn_parallel_range(n, threads, resize_nearest_rows, &z); break;
    case RESIZE_LINEAR: kn_parallel_range(n, threads, resize_linear_rows, &z); break;
    case RESIZE_CUBIC: kn_parallel_range(n, threads, resize_cubic_rows, &z); break;
    }
    if (p.coord == COORD_TF_CROP_AND_RESIZE)
        resize_extrapolate(&p, rows, cols, kn_f32(y));
    return KILN_OK;
}

static void resize_grad_plane_of(void *ctx, int64_t plane, int slot) {
    (void)slot;
    const resize_run *z = ctx;
    const resize_plan *p = z->p;
    int64_t in_h = p->h.in, in_w = p->w.in, out_h = p->h.out, out_w = p->w.out;
    int n_taps = z->n_taps;
    for (int64_t oy = 0; oy < out_h; oy++) {
        const resize_tap *ty = &z->rows[oy];
        const float *g = z->dy + (plane * out_h + oy) * out_w;
        if (ty->outside)
            continue;
        for (int64_t ox = 0; ox < out_w; ox++) {
            const resize_tap *tx = &z->cols[ox];
            if (tx->outside)
                continue;
            if (n_taps == 1) {
                z->dx[(plane * in_h + ty->i[0]) * in_w + tx->i[0]] += g[ox];
                continue;
            }
            for (int a = 0; a < n_taps; a++) {
                float *dst = z->dx + (plane * in_h + ty->i[a]) * in_w; // (in_w)
                float share = ty->w[a] * g[ox];
                for (int b = 0; b < n_taps; b++)
                    dst[tx->i[b]] += tx->w[b] * share;
            }
        }
    }
}

/* dX gathers each dY element back onto the taps that made it (none for extrapolated outputs).
 * Output rows of one plane may share input rows, so a plane runs in order and threads split the
 * planes. */
static kiln_status resize_backward(const kn_op_call *call) {
    if (!call->dout[0] || !call->din[0])
        return KILN_OK;
    KN_TRY(kn_check_f32_gradient(call, 0));
    resize_plan p;
    KN_TRY(resize_plan_make(call->node, call->in, call->node->n_in, &p));
    resize_tap *rows, *cols;
    KN_TRY(resize_taps(&p, call->ctx, &rows, &cols));
    resize_run z = {
        .p = &p, .rows = rows, .cols = cols,
        .n_taps = p.mode == RESIZE_NEAREST ? 1 : p.mode == RESIZE_LINEAR ? 2 : RESIZE_MAX_TAPS,
        .dy = kn_f32(call->dout[0]), // (planes, out_h, out_w)
        .dx = kn_f32(call->din[0]),  // (planes, in_h, in_w)
    };
    kn_parallel_for(p.planes, resize_threads(&p), resize_grad_plane_of, &z);
    return KILN_OK;
}

const kn_op kn_op_pad = {
    .name = "Pad", .min_inputs = 2, .max_inputs = 4,
    .infer = pad_infer, .forward = pad_forward, .backward = pad_backward,
};

const kn_op kn_op_resize = {
    .name = "Resize", .min_inputs = 1, .max_inputs = 4,
    .infer = resize_infer, .forward = resize_forward, .backward = resize_backward,
    .workspace = resize_workspace,
};
