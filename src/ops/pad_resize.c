/* Pad and Resize (ONNX opset 13: pads, constant_value, roi, scales and sizes are inputs).
 *
 * Pad maps every output index, axis by axis, to the input index it reads (or to the constant):
 * constant, reflect (mirror without repeating the edge, periodically, like numpy) and edge modes; a
 * negative pad crops. Forward copies the interior of each row in one piece; backward adds dY back
 * through the same map, so every mode has a gradient.
 *
 * Resize scales the last two dims (H, W) of a tensor of rank >= 2 by nearest or bilinear
 * interpolation, with ONNX's coordinate transformations. Each output row and column gets its source
 * taps once (a table in the op's scratch), then every plane reuses them. Nearest works for every
 * dtype, linear for f32; both have a backward.
 */
#include <math.h>
#include <string.h>

#include "ops/movement.h"

/* ---- Pad ---- */

typedef enum pad_mode { PAD_CONSTANT, PAD_REFLECT, PAD_EDGE } pad_mode;

typedef struct pad_plan {
    pad_mode mode;
    kn_shape out;
    int64_t begin[KN_MAX_DIMS]; /* output index o lies o - begin[k] into the input along dim k */
} pad_plan;

static kiln_status pad_plan_make(const kn_node *node, kn_tensor *const *in, int n_in, pad_plan *p) {
    const kn_tensor *data = kn_input_at(in, n_in, 0), *pads_in = kn_input_at(in, n_in, 1);
    const kn_tensor *constant = kn_input_at(in, n_in, 2);
    if (!data || !pads_in)
        return kn_fail(KILN_ERR_INVALID_ARG, "inputs data and pads are required");
    if (kn_input_at(in, n_in, 3))
        return kn_fail(KILN_ERR_UNSUPPORTED, "the axes input (opset 18) is not supported");
    const char *mode = kn_node_string(node, "mode", "constant");
    if (strcmp(mode, "constant") == 0)
        p->mode = PAD_CONSTANT;
    else if (strcmp(mode, "reflect") == 0)
        p->mode = PAD_REFLECT;
    else if (strcmp(mode, "edge") == 0)
        p->mode = PAD_EDGE;
    else
        return kn_fail(KILN_ERR_UNSUPPORTED, "mode '%s'; constant, reflect and edge are supported",
                       mode);
    if (constant && (constant->dtype != data->dtype || kn_numel(constant) != 1))
        return kn_fail(KILN_ERR_INVALID_ARG, "constant_value must be one %s value, got %lld of "
                       "dtype %s", kn_dtype_name(data->dtype), (long long)kn_numel(constant),
                       kn_dtype_name(constant->dtype));
    int rank = data->shape.ndim, n;
    int64_t pads[2 * KN_MAX_DIMS];
    KN_TRY(kn_read_ints(pads_in, "pads", pads, 2 * KN_MAX_DIMS, &n));
    if (n != 2 * rank)
        return kn_fail(KILN_ERR_INVALID_ARG, "pads has %d elements; data of rank %d needs %d", n,
                       rank, 2 * rank);
    p->out = data->shape;
    for (int k = 0; k < rank; k++) {
        int64_t dim = data->shape.d[k];
        p->begin[k] = pads[k];
        if (__builtin_add_overflow(dim, pads[k], &p->out.d[k]) ||
            __builtin_add_overflow(p->out.d[k], pads[k + rank], &p->out.d[k]) || p->out.d[k] < 0)
            return kn_fail(KILN_ERR_SHAPE, "pads %lld and %lld leave no valid size for dim %d of "
                           "size %lld", (long long)pads[k], (long long)pads[k + rank], k,
                           (long long)dim);
        if (p->mode != PAD_CONSTANT && dim == 0 && p->out.d[k] > 0)
            return kn_fail(KILN_ERR_SHAPE, "cannot pad the empty dim %d in %s mode", k, mode);
    }
    return KILN_OK;
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

static kiln_status pad_forward(const kn_op_call *call) {
    pad_plan p;
    KN_TRY(pad_plan_make(call->node, call->in, call->node->n_in, &p));
    if (!kn_shape_equal(&p.out, &call->out[0]->shape))
        return kn_fail(KILN_ERR_SHAPE, "Pad: the output's shape does not match the pads");
    const kn_tensor *data = call->in[0], *constant = kn_input_at(call->in, call->node->n_in, 2);
    kn_shape in = data->shape;
    pad_scalar_as_vector(&p, &in);
    size_t esize = kn_dtype_size(data->dtype);
    static const char zero[8];
    const char *fill = constant ? constant->data : zero;
    int64_t in_stride[KN_MAX_DIMS];
    kn_shape_strides(&in, in_stride);
    int last = in.ndim - 1;
    int64_t n = p.out.d[last], rows = n > 0 ? kn_shape_numel(&p.out) / n : 0;
    const char *x = data->data;
    char *y = call->out[0]->data;
#pragma omp parallel for schedule(static) if (rows * n >= KN_MOVE_PARALLEL_MIN)
    for (int64_t r = 0; r < rows; r++) {
        int64_t source = pad_row_source(&p, &in, in_stride, r);
        pad_row(y + (size_t)(r * n) * esize, source < 0 ? NULL : x + (size_t)source * esize, &p, n,
                in.d[last], p.begin[last], fill, esize);
    }
    return KILN_OK;
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
    int64_t dim = in.d[last], begin = p.begin[last];
    const float *dy = kn_f32(call->dout[0]);
    float *dx = kn_f32(call->din[0]);
    bool rows_disjoint = p.mode == PAD_CONSTANT;
#pragma omp parallel for schedule(static) if (rows_disjoint && rows * n >= KN_MOVE_PARALLEL_MIN)
    for (int64_t r = 0; r < rows; r++) {
        int64_t source = pad_row_source(&p, &in, in_stride, r);
        if (source < 0)
            continue;
        for (int64_t o = 0; o < n; o++) {
            int64_t i = pad_source(o, begin, dim, p.mode);
            if (i >= 0)
                dx[source + i] += dy[r * n + o];
        }
    }
    return KILN_OK;
}

/* ---- Resize ---- */

typedef enum resize_mode { RESIZE_NEAREST, RESIZE_LINEAR } resize_mode;
typedef enum resize_coord {
    COORD_HALF_PIXEL,
    COORD_PYTORCH_HALF_PIXEL,
    COORD_ALIGN_CORNERS,
    COORD_ASYMMETRIC,
    COORD_TF_HALF_PIXEL_FOR_NN
} resize_coord;
typedef enum resize_round {
    ROUND_PREFER_FLOOR,
    ROUND_PREFER_CEIL,
    ROUND_FLOOR,
    ROUND_CEIL
} resize_round;

/* One resized dim. `resized` is the output length the coordinate formulas use: in * scale as ONNX's
 * reference computes it when scales are given (1.2 for 2 * 0.6, not the floored 1), the size when
 * sizes are. */
typedef struct resize_axis {
    int64_t in, out;
    double scale, resized;
} resize_axis;

typedef struct resize_plan {
    resize_mode mode;
    resize_coord coord;
    resize_round round;
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
    static const char *const modes[] = {"nearest", "linear"};
    static const char *const coords[] = {"half_pixel", "pytorch_half_pixel", "align_corners",
                                         "asymmetric", "tf_half_pixel_for_nn"};
    static const char *const rounds[] = {"round_prefer_floor", "round_prefer_ceil", "floor", "ceil"};
    const char *mode = kn_node_string(node, "mode", "nearest");
    const char *coord = kn_node_string(node, "coordinate_transformation_mode", "half_pixel");
    const char *round = kn_node_string(node, "nearest_mode", "round_prefer_floor");
    int m = pick(mode, modes, 2), c = pick(coord, coords, 5), r = pick(round, rounds, 4);
    if (strcmp(mode, "cubic") == 0)
        return kn_fail(KILN_ERR_UNSUPPORTED, "mode 'cubic' is not supported (nearest and linear "
                       "are)");
    if (m < 0)
        return kn_fail(KILN_ERR_INVALID_ARG, "unknown mode '%s'", mode);
    if (strcmp(coord, "tf_crop_and_resize") == 0)
        return kn_fail(KILN_ERR_UNSUPPORTED, "coordinate_transformation_mode 'tf_crop_and_resize' "
                       "is not supported");
    if (c < 0)
        return kn_fail(KILN_ERR_INVALID_ARG, "unknown coordinate_transformation_mode '%s'", coord);
    if (r < 0)
        return kn_fail(KILN_ERR_INVALID_ARG, "unknown nearest_mode '%s'", round);
    p->mode = (resize_mode)m;
    p->coord = (resize_coord)c;
    p->round = (resize_round)r;
    return KILN_OK;
}

/* The output dims from scales (floor(in * scale)) or sizes; only the last two may change. */
static kiln_status resize_dims(const kn_tensor *x, const kn_tensor *scales, const kn_tensor *sizes,
                               resize_plan *p) {
    int rank = x->shape.ndim;
    bool by_scales = scales && kn_numel(scales) > 0, by_sizes = sizes && kn_numel(sizes) > 0;
    if (by_scales == by_sizes)
        return kn_fail(KILN_ERR_INVALID_ARG, "exactly one of scales and sizes must be given (got %s)",
                       by_scales ? "both" : "neither");
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
    if (n != rank)
        return kn_fail(KILN_ERR_INVALID_ARG, "%s has %d elements; X has rank %d",
                       by_scales ? "scales" : "sizes", n, rank);
    p->out = x->shape;
    resize_axis axes[KN_MAX_DIMS];
    for (int k = 0; k < rank; k++) {
        resize_axis *a = &axes[k];
        a->in = x->shape.d[k];
        if (by_scales) {
            float s = kn_f32(scales)[k];
            if (!(s > 0) || !isfinite(s))
                return kn_fail(KILN_ERR_INVALID_ARG, "scales[%d] is %g; it must be > 0", k, s);
            a->scale = s;
            a->resized = (double)a->in * s;
            if (a->resized >= (double)(INT64_C(1) << 40))
                return kn_fail(KILN_ERR_INVALID_ARG, "scales[%d] = %g makes dim %d too large", k, s,
                               k);
            a->out = (int64_t)floor(a->resized);
        } else {
            if (size[k] < 0 || (a->in == 0 && size[k] > 0))
                return kn_fail(KILN_ERR_INVALID_ARG, "cannot resize dim %d of size %lld to %lld", k,
                               (long long)a->in, (long long)size[k]);
            a->out = size[k];
            a->resized = (double)size[k];
            a->scale = a->in > 0 ? (double)size[k] / (double)a->in : 1.0;
        }
        if (k < rank - 2 && a->out != a->in)
            return kn_fail(KILN_ERR_UNSUPPORTED, "resizing dim %d (%lld -> %lld) is not supported; "
                           "only the last two dims are resized", k, (long long)a->in,
                           (long long)a->out);
        p->out.d[k] = a->out;
    }
    p->planes = kn_shape_span(&x->shape, 0, rank - 2);
    p->h = axes[rank - 2];
    p->w = axes[rank - 1];
    return KILN_OK;
}

static kiln_status resize_plan_make(const kn_node *node, kn_tensor *const *in, int n_in,
                                    resize_plan *p) {
    const kn_tensor *x = kn_input_at(in, n_in, 0);
    if (!x)
        return kn_fail(KILN_ERR_INVALID_ARG, "input X is missing");
    if (x->shape.ndim < 2)
        return kn_fail(KILN_ERR_UNSUPPORTED, "X has rank %d; Resize needs rank >= 2 (it resizes "
                       "the last two dims)", x->shape.ndim);
    KN_TRY(resize_modes(node, p));
    if (p->mode == RESIZE_LINEAR && x->dtype != KN_F32)
        return kn_fail(KILN_ERR_UNSUPPORTED, "linear Resize of %s data; only f32 is supported",
                       kn_dtype_name(x->dtype));
    return resize_dims(x, kn_input_at(in, n_in, 2), kn_input_at(in, n_in, 3), p);
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
    double x = (double)o;
    switch (p->coord) {
    case COORD_HALF_PIXEL: return (x + 0.5) / a->scale - 0.5;
    case COORD_PYTORCH_HALF_PIXEL: return a->resized > 1 ? (x + 0.5) / a->scale - 0.5 : 0.0;
    case COORD_ALIGN_CORNERS:
        return a->resized == 1 ? 0.0 : x * (double)(a->in - 1) / (a->resized - 1);
    case COORD_ASYMMETRIC: return x / a->scale;
    case COORD_TF_HALF_PIXEL_FOR_NN: return (x + 0.5) / a->scale;
    }
    return 0.0;
}

/* The input taps of one output index: nearest reads i0; linear reads (1 - w1) * x[i0] + w1 * x[i1]. */
typedef struct resize_tap {
    int64_t i0, i1;
    float w1;
} resize_tap;

static resize_tap resize_tap_at(const resize_plan *p, const resize_axis *a, int64_t o) {
    double x = resize_source(p, a, o), below = floor(x);
    resize_tap t = {0, 0, 0.0f};
    int64_t last = a->in - 1;
    if (p->mode == RESIZE_NEAREST) {
        double fraction = x - below, i;
        switch (p->round) {
        case ROUND_PREFER_FLOOR: i = fraction <= 0.5 ? below : below + 1; break;
        case ROUND_PREFER_CEIL: i = fraction < 0.5 ? below : below + 1; break;
        case ROUND_FLOOR: i = below; break;
        default: i = ceil(x); break;
        }
        t.i0 = t.i1 = i < 0 ? 0 : i > (double)last ? last : (int64_t)i;
        return t;
    }
    /* Outside [0, in - 1] both taps are the edge sample, as with ONNX's edge-padded reference. */
    x = x < 0 ? 0 : x > (double)last ? (double)last : x;
    t.i0 = (int64_t)floor(x);
    t.i1 = t.i0 < last ? t.i0 + 1 : last;
    t.w1 = (float)(x - (double)t.i0);
    return t;
}

/* The taps of every output row (out_h) then every output column (out_w), in the op's scratch. */
static kiln_status resize_taps(const resize_plan *p, kn_op_ctx *ctx, resize_tap **rows,
                               resize_tap **cols) {
    size_t count = (size_t)(p->h.out + p->w.out), bytes;
    if (!kn_size_mul(count ? count : 1, sizeof(resize_tap), &bytes))
        return kn_fail(KILN_ERR_NOMEM, "Resize: tap table size overflows");
    resize_tap *taps = kn_op_scratch(ctx, bytes);
    if (!taps)
        return kn_fail(KILN_ERR_NOMEM, "Resize: out of memory for %zu taps", count);
    for (int64_t o = 0; o < p->h.out; o++)
        taps[o] = resize_tap_at(p, &p->h, o);
    for (int64_t o = 0; o < p->w.out; o++)
        taps[p->h.out + o] = resize_tap_at(p, &p->w, o);
    *rows = taps;
    *cols = taps + p->h.out;
    return KILN_OK;
}

/* dst[j] = src[taps[j].i0] for n elements of esize bytes. */
static void copy_taps(char *dst, const char *src, const resize_tap *taps, int64_t n, size_t esize) {
    switch (esize) {
    case 1:
        for (int64_t j = 0; j < n; j++)
            dst[j] = src[taps[j].i0];
        break;
    case 4:
        for (int64_t j = 0; j < n; j++)
            memcpy(dst + 4 * j, src + 4 * taps[j].i0, 4);
        break;
    default:
        for (int64_t j = 0; j < n; j++)
            memcpy(dst + (size_t)j * esize, src + (size_t)taps[j].i0 * esize, esize);
    }
}

static kiln_status resize_forward(const kn_op_call *call) {
    resize_plan p;
    KN_TRY(resize_plan_make(call->node, call->in, call->node->n_in, &p));
    if (!kn_shape_equal(&p.out, &call->out[0]->shape))
        return kn_fail(KILN_ERR_SHAPE, "Resize: the output's shape does not match scales/sizes");
    resize_tap *rows, *cols;
    KN_TRY(resize_taps(&p, call->ctx, &rows, &cols));
    int64_t in_h = p.h.in, in_w = p.w.in, out_h = p.h.out, out_w = p.w.out;
    int64_t total = p.planes * out_h * out_w;
    if (p.mode == RESIZE_NEAREST) {
        size_t esize = kn_dtype_size(call->in[0]->dtype);
        const char *x = call->in[0]->data; // (planes, in_h, in_w)
        char *y = call->out[0]->data;      // (planes, out_h, out_w)
#pragma omp parallel for schedule(static) if (total >= KN_MOVE_PARALLEL_MIN)
        for (int64_t r = 0; r < p.planes * out_h; r++) {
            int64_t plane = r / out_h, oy = r % out_h;
            const char *src = x + (size_t)((plane * in_h + rows[oy].i0) * in_w) * esize;
            copy_taps(y + (size_t)(r * out_w) * esize, src, cols, out_w, esize);
        }
        return KILN_OK;
    }
    const float *x = kn_f32(call->in[0]); // (planes, in_h, in_w)
    float *y = kn_f32(call->out[0]);      // (planes, out_h, out_w)
#pragma omp parallel for schedule(static) if (total >= KN_MOVE_PARALLEL_MIN)
    for (int64_t r = 0; r < p.planes * out_h; r++) {
        int64_t plane = r / out_h;
        resize_tap ty = rows[r % out_h];
        const float *top = x + (plane * in_h + ty.i0) * in_w;
        const float *bottom = x + (plane * in_h + ty.i1) * in_w;
        for (int64_t ox = 0; ox < out_w; ox++) {
            resize_tap tx = cols[ox];
            float upper = (1 - tx.w1) * top[tx.i0] + tx.w1 * top[tx.i1];
            float lower = (1 - tx.w1) * bottom[tx.i0] + tx.w1 * bottom[tx.i1];
            y[r * out_w + ox] = (1 - ty.w1) * upper + ty.w1 * lower;
        }
    }
    return KILN_OK;
}

/* dX gathers each dY element back onto the taps that made it. Output rows of one plane may share
 * input rows, so a plane runs in order and threads split the planes. */
static kiln_status resize_backward(const kn_op_call *call) {
    if (!call->dout[0] || !call->din[0])
        return KILN_OK;
    KN_TRY(kn_check_f32_gradient(call, 0));
    resize_plan p;
    KN_TRY(resize_plan_make(call->node, call->in, call->node->n_in, &p));
    resize_tap *rows, *cols;
    KN_TRY(resize_taps(&p, call->ctx, &rows, &cols));
    int64_t in_h = p.h.in, in_w = p.w.in, out_h = p.h.out, out_w = p.w.out;
    const float *dy = kn_f32(call->dout[0]); // (planes, out_h, out_w)
    float *dx = kn_f32(call->din[0]);        // (planes, in_h, in_w)
    bool linear = p.mode == RESIZE_LINEAR;
#pragma omp parallel for schedule(static) if (p.planes * out_h * out_w >= KN_MOVE_PARALLEL_MIN)
    for (int64_t plane = 0; plane < p.planes; plane++) {
        for (int64_t oy = 0; oy < out_h; oy++) {
            resize_tap ty = rows[oy];
            float *top = dx + (plane * in_h + ty.i0) * in_w;
            float *bottom = dx + (plane * in_h + ty.i1) * in_w;
            const float *g = dy + (plane * out_h + oy) * out_w;
            for (int64_t ox = 0; ox < out_w; ox++) {
                resize_tap tx = cols[ox];
                if (!linear) {
                    top[tx.i0] += g[ox];
                    continue;
                }
                float upper = (1 - ty.w1) * g[ox], lower = ty.w1 * g[ox];
                top[tx.i0] += (1 - tx.w1) * upper;
                top[tx.i1] += tx.w1 * upper;
                bottom[tx.i0] += (1 - tx.w1) * lower;
                bottom[tx.i1] += tx.w1 * lower;
            }
        }
    }
    return KILN_OK;
}

const kn_op kn_op_pad = {
    .name = "Pad", .min_inputs = 2, .max_inputs = 4,
    .infer = pad_infer, .forward = pad_forward, .backward = pad_backward,
};

const kn_op kn_op_resize = {
    .name = "Resize", .min_inputs = 1, .max_inputs = 4,
    .infer = resize_infer, .forward = resize_forward, .backward = resize_backward,
};
