/* Indexing ops for every dtype: Shape, Size, Gather, Slice, Split, Squeeze, Unsqueeze, Expand, Tile,
 * Range (ONNX opsets up to 17: Slice starts/ends/axes/steps, Split split, Squeeze/Unsqueeze axes,
 * Expand shape and Tile repeats are inputs).
 *
 * Each op works out its plan (the output shape, and where each output element comes from) in one
 * function that shape inference and forward share, from the same tensors: at shape inference the
 * data input has no data yet, while inputs whose values decide the output shape must be known.
 * Slice, Split, Expand and Tile read through a strided view of the input (movement.h) and their
 * backward adds dY back through the same view; Gather copies rows; Squeeze and Unsqueeze are plain
 * copies. Data moves by element size; gradients flow for f32 only.
 */
#include <math.h>
#include <string.h>

#include "core/threads.h"
#include "ops/movement.h"

static kiln_status check_output_shape(const kn_op_call *call, int i, const kn_shape *expected) {
    const kn_tensor *y = call->out[i];
    if (!kn_shape_equal(&y->shape, expected)) {
        char got[96], want[96];
        return kn_fail(KILN_ERR_SHAPE, "%s: output %d has shape %s but the inputs give %s",
                       call->node->op->name, i, kn_shape_str(&y->shape, got, sizeof got),
                       kn_shape_str(expected, want, sizeof want));
    }
    return KILN_OK;
}

static int64_t clamp64(int64_t v, int64_t lo, int64_t hi) { return v < lo ? lo : v > hi ? hi : v; }

/* Reads axes (possibly negative) for a tensor of `rank` dims into out[0..n), normalized, unique. */
static kiln_status read_axes(const kn_tensor *t, int rank, int64_t *out, int *n) {
    KN_TRY(kn_read_ints(t, "axes", out, KN_MAX_DIMS, n));
    bool seen[KN_MAX_DIMS] = {false};
    for (int i = 0; i < *n; i++) {
        int axis = kn_axis_normalize(out[i], rank);
        if (axis < 0)
            return kn_fail(KILN_ERR_INVALID_ARG, "axis %lld is out of range for rank %d",
                           (long long)out[i], rank);
        if (seen[axis])
            return kn_fail(KILN_ERR_INVALID_ARG, "axis %lld appears twice", (long long)out[i]);
        seen[axis] = true;
        out[i] = axis;
    }
    return KILN_OK;
}

/* The view reading a whole contiguous tensor of `shape` in order. */
static kn_view view_of_shape(const kn_shape *shape) {
    kn_view v = {.ndim = shape->ndim, .offset = 0};
    kn_shape_strides(shape, v.stride);
    for (int k = 0; k < shape->ndim; k++)
        v.dims[k] = shape->d[k];
    return v;
}

/* ---- Shape: the input's dims [start, end) as i64 (opset 15 start/end) ---- */

static void shape_range(const kn_node *node, int rank, int64_t *start, int64_t *end) {
    int64_t s = kn_node_int(node, "start", 0), e = kn_node_int(node, "end", rank);
    s = clamp64(s < 0 ? s + rank : s, 0, rank);
    e = clamp64(e < 0 ? e + rank : e, 0, rank);
    *start = s;
    *end = e > s ? e : s;
}

static kiln_status shape_infer(kn_graph *g, const kn_node *node) {
    KN_TRY(kn_check_outputs(node, 1));
    const kn_value *x = kn_node_input(g, node, 0);
    if (!x)
        return kn_fail(KILN_ERR_INVALID_ARG, "input data is missing");
    int64_t start, end;
    shape_range(node, x->shape.ndim, &start, &end);
    kn_shape y = kn_shape_of(1, (int64_t[]){end - start});
    kn_set_output(g, node, 0, &y, KN_I64);
    return KILN_OK;
}

/* Reads only the input's shape, never its data. */
static kiln_status shape_forward(const kn_op_call *call) {
    const kn_shape *x = &call->in[0]->shape;
    int64_t start, end;
    shape_range(call->node, x->ndim, &start, &end);
    KN_TRY(check_output_shape(call, 0, &(kn_shape){1, {end - start}}));
    int64_t *y = call->out[0]->data;
    for (int64_t k = start; k < end; k++)
        y[k - start] = x->d[k];
    return KILN_OK;
}

/* ---- Size: the input's element count, an i64 scalar ---- */

static kiln_status size_infer(kn_graph *g, const kn_node *node) {
    KN_TRY(kn_check_outputs(node, 1));
    if (!kn_node_input(g, node, 0))
        return kn_fail(KILN_ERR_INVALID_ARG, "input data is missing");
    kn_set_output(g, node, 0, &(kn_shape){0, {0}}, KN_I64);
    return KILN_OK;
}

/* Reads only the input's shape, never its data. */
static kiln_status size_forward(const kn_op_call *call) {
    *(int64_t *)call->out[0]->data = kn_numel(call->in[0]);
    return KILN_OK;
}

/* ---- Gather: y[outer, k, inner] = data[outer, indices[k], inner] along axis ---- */

typedef struct gather_plan {
    kn_shape out;
    int64_t outer, dim, inner, count; /* data as (outer, dim, inner); count indices */
} gather_plan;

static kiln_status gather_plan_make(const kn_node *node, const kn_tensor *data,
                                    const kn_tensor *indices, gather_plan *p) {
    if (!data || !indices)
        return kn_fail(KILN_ERR_INVALID_ARG, "inputs data and indices are required");
    if (indices->dtype != KN_I64 && indices->dtype != KN_I32)
        return kn_fail(KILN_ERR_INVALID_ARG, "indices must be i64 or i32, got %s",
                       kn_dtype_name(indices->dtype));
    int rank = data->shape.ndim;
    int64_t axis_attr = kn_node_int(node, "axis", 0);
    int axis = kn_axis_normalize(axis_attr, rank);
    if (axis < 0)
        return kn_fail(KILN_ERR_INVALID_ARG, "axis %lld is out of range for data of rank %d",
                       (long long)axis_attr, rank);
    int out_rank = rank - 1 + indices->shape.ndim;
    if (out_rank > KN_MAX_DIMS)
        return kn_fail(KILN_ERR_UNSUPPORTED, "the output would have rank %d; at most %d supported",
                       out_rank, KN_MAX_DIMS);
    p->out = (kn_shape){0};
    for (int k = 0; k < axis; k++)
        p->out.d[p->out.ndim++] = data->shape.d[k];
    for (int k = 0; k < indices->shape.ndim; k++)
        p->out.d[p->out.ndim++] = indices->shape.d[k];
    for (int k = axis + 1; k < rank; k++)
        p->out.d[p->out.ndim++] = data->shape.d[k];
    p->outer = kn_shape_span(&data->shape, 0, axis);
    p->dim = data->shape.d[axis];
    p->inner = kn_shape_span(&data->shape, axis + 1, rank);
    p->count = kn_numel(indices);
    return KILN_OK;
}

/* Every index must lie in [-dim, dim); negative ones count from the end. */
static kiln_status gather_check_indices(const kn_tensor *indices, int64_t dim) {
    for (int64_t k = 0; k < kn_numel(indices); k++) {
        int64_t index = kn_int_at(indices, k);
        if (index < -dim || index >= dim)
            return kn_fail(KILN_ERR_INVALID_ARG,
                           "index %lld (element %lld of indices) is out of range [%lld, %lld)",
                           (long long)index, (long long)k, (long long)-dim, (long long)dim);
    }
    return KILN_OK;
}

static int64_t gather_index(const kn_tensor *indices, int64_t k, int64_t dim) {
    int64_t index = kn_int_at(indices, k);
    return index < 0 ? index + dim : index;
}

static kiln_status gather_infer(kn_graph *g, const kn_node *node) {
    KN_TRY(kn_check_outputs(node, 1));
    kn_infer_inputs inputs;
    KN_TRY(kn_infer_inputs_get(g, node, &inputs));
    gather_plan p;
    KN_TRY(gather_plan_make(node, inputs.in[0], inputs.in[1], &p));
    if (inputs.in[1]->data) /* constant indices: report a bad index before anything runs */
        KN_TRY(gather_check_indices(inputs.in[1], p.dim));
    kn_set_output(g, node, 0, &p.out, inputs.in[0]->dtype);
    return KILN_OK;
}

/* Gather's rows, forward (x to y, row bytes each) or backward (dy to dx), for kn_parallel_range. */
typedef struct gather_rows {
    const gather_plan *p;
    const kn_tensor *indices;
    size_t row;
    const char *x; // (outer, dim, inner)
    char *y;       // (outer, count, inner)
    const float *dy;
    float *dx;
} gather_rows;

/* Output rows [begin, end) of the outer * count. */
static void gather_range(void *ctx, int64_t begin, int64_t end, int slot) {
    (void)slot;
    const gather_rows *g = ctx;
    const gather_plan *p = g->p;
    for (int64_t r = begin; r < end; r++) {
        int64_t o = r / p->count, index = gather_index(g->indices, r % p->count, p->dim);
        memcpy(g->y + (size_t)r * g->row, g->x + (size_t)(o * p->dim + index) * g->row, g->row);
    }
}

static kiln_status gather_forward(const kn_op_call *call) {
    const kn_tensor *data = call->in[0], *indices = call->in[1];
    gather_plan p;
    KN_TRY(gather_plan_make(call->node, data, indices, &p));
    KN_TRY(check_output_shape(call, 0, &p.out));
    KN_TRY(gather_check_indices(indices, p.dim));
    gather_rows g = {
        .p = &p, .indices = indices, .row = (size_t)p.inner * kn_dtype_size(data->dtype),
        .x = data->data, .y = call->out[0]->data,
    };
    int64_t rows = p.outer * p.count;
    if (g.row == 0)
        return KILN_OK;
    kn_parallel_range(rows, kn_threads_for(rows * p.inner, KN_MOVE_PARALLEL_MIN), gather_range, &g);
    return KILN_OK;
}

/* Outer rows [begin, end), each adding its count rows of dY in index order. */
static void gather_grad_range(void *ctx, int64_t begin, int64_t end, int slot) {
    (void)slot;
    const gather_rows *g = ctx;
    const gather_plan *p = g->p;
    for (int64_t o = begin; o < end; o++) {
        for (int64_t k = 0; k < p->count; k++) {
            float *dst = g->dx + (o * p->dim + gather_index(g->indices, k, p->dim)) * p->inner;
            const float *src = g->dy + (o * p->count + k) * p->inner;
            for (int64_t j = 0; j < p->inner; j++)
                dst[j] += src[j];
        }
    }
}

/* dData[outer, indices[k], :] += dY[outer, k, :]; a repeated index adds once per occurrence, in
 * index order. Threads split the outer rows, which never share a dData row. */
static kiln_status gather_backward(const kn_op_call *call) {
    if (!call->dout[0] || !call->din[0])
        return KILN_OK;
    KN_TRY(kn_check_f32_gradient(call, 0));
    const kn_tensor *indices = call->in[1];
    gather_plan p;
    KN_TRY(gather_plan_make(call->node, call->in[0], indices, &p));
    KN_TRY(gather_check_indices(indices, p.dim));
    gather_rows g = {
        .p = &p, .indices = indices,
        .dy = kn_f32(call->dout[0]), // (outer, count, inner)
        .dx = kn_f32(call->din[0]),  // (outer, dim, inner)
    };
    int threads = kn_threads_for(p.outer * p.count * p.inner, KN_MOVE_PARALLEL_MIN);
    kn_parallel_range(p.outer, threads, gather_grad_range, &g);
    return KILN_OK;
}

/* ---- Slice: data[starts:ends:steps] on the given axes ---- */

typedef struct slice_plan {
    kn_shape out;
    kn_view view; /* output position -> data element */
} slice_plan;

/* One axis of size dim sliced by ONNX's rules: negative start and end count from the end, then both
 * are clamped to [0, dim] for a positive step, start to [0, dim - 1] and end to [-1, dim - 1] for a
 * negative one (so INT64_MAX and INT64_MIN mean "to the end"). Returns the first index and count. */
static void slice_axis(int64_t dim, int64_t start, int64_t end, int64_t step, int64_t *first,
                       int64_t *count) {
    *first = 0;
    *count = 0;
    if (dim == 0)
        return;
    if (start < 0)
        start += dim;
    if (end < 0)
        end += dim;
    if (step > 0) {
        start = clamp64(start, 0, dim);
        end = clamp64(end, 0, dim);
        *count = end > start ? (end - start - 1) / step + 1 : 0;
    } else {
        start = clamp64(start, 0, dim - 1);
        end = clamp64(end, -1, dim - 1);
        *count = start > end ? (end - start + 1) / step + 1 : 0; /* no -step: it may be INT64_MIN */
    }
    *first = start;
}

static kiln_status slice_plan_make(kn_tensor *const *in, int n_in, slice_plan *p) {
    const kn_tensor *data = kn_input_at(in, n_in, 0), *starts_in = kn_input_at(in, n_in, 1);
    const kn_tensor *ends_in = kn_input_at(in, n_in, 2), *axes_in = kn_input_at(in, n_in, 3);
    const kn_tensor *steps_in = kn_input_at(in, n_in, 4);
    if (!data || !starts_in || !ends_in)
        return kn_fail(KILN_ERR_INVALID_ARG, "inputs data, starts and ends are required");
    int rank = data->shape.ndim;
    int64_t starts[KN_MAX_DIMS], ends[KN_MAX_DIMS], axes[KN_MAX_DIMS], steps[KN_MAX_DIMS];
    int n, n_ends, n_axes, n_steps;
    KN_TRY(kn_read_ints(starts_in, "starts", starts, KN_MAX_DIMS, &n));
    KN_TRY(kn_read_ints(ends_in, "ends", ends, KN_MAX_DIMS, &n_ends));
    if (axes_in) {
        KN_TRY(read_axes(axes_in, rank, axes, &n_axes));
    } else {
        n_axes = n;
        for (int i = 0; i < n; i++)
            axes[i] = i;
    }
    if (steps_in) {
        KN_TRY(kn_read_ints(steps_in, "steps", steps, KN_MAX_DIMS, &n_steps));
    } else {
        n_steps = n;
        for (int i = 0; i < n; i++)
            steps[i] = 1;
    }
    if (n_ends != n || n_axes != n || n_steps != n)
        return kn_fail(KILN_ERR_INVALID_ARG, "starts, ends, axes and steps have %d, %d, %d and %d "
                       "elements; they must agree", n, n_ends, n_axes, n_steps);
    if (n > rank)
        return kn_fail(KILN_ERR_INVALID_ARG, "%d axes sliced but the data has rank %d", n, rank);

    int64_t first[KN_MAX_DIMS], step[KN_MAX_DIMS];
    p->out = data->shape;
    for (int k = 0; k < rank; k++) {
        first[k] = 0;
        step[k] = 1;
    }
    for (int i = 0; i < n; i++) {
        if (steps[i] == 0)
            return kn_fail(KILN_ERR_INVALID_ARG, "steps[%d] is 0", i);
        int axis = (int)axes[i];
        slice_axis(data->shape.d[axis], starts[i], ends[i], steps[i], &first[axis],
                   &p->out.d[axis]);
        /* With at most one element taken the step never moves; keeping it 1 keeps strides small. */
        step[axis] = p->out.d[axis] > 1 ? steps[i] : 1;
    }
    int64_t strides[KN_MAX_DIMS];
    kn_shape_strides(&data->shape, strides);
    p->view = (kn_view){.ndim = rank, .offset = 0};
    for (int k = 0; k < rank; k++) {
        p->view.dims[k] = p->out.d[k];
        p->view.stride[k] = step[k] * strides[k];
        p->view.offset += first[k] * strides[k];
    }
    return KILN_OK;
}

static kiln_status slice_infer(kn_graph *g, const kn_node *node) {
    KN_TRY(kn_check_outputs(node, 1));
    kn_infer_inputs inputs;
    KN_TRY(kn_infer_inputs_get(g, node, &inputs));
    slice_plan p;
    KN_TRY(slice_plan_make(inputs.in, inputs.n, &p));
    kn_set_output(g, node, 0, &p.out, inputs.in[0]->dtype);
    return KILN_OK;
}

static kiln_status slice_forward(const kn_op_call *call) {
    slice_plan p;
    KN_TRY(slice_plan_make(call->in, call->node->n_in, &p));
    KN_TRY(check_output_shape(call, 0, &p.out));
    kn_view_copy(call->out[0]->data, call->in[0]->data, kn_dtype_size(call->in[0]->dtype), &p.view);
    return KILN_OK;
}

static kiln_status slice_backward(const kn_op_call *call) {
    if (!call->dout[0] || !call->din[0])
        return KILN_OK;
    KN_TRY(kn_check_f32_gradient(call, 0));
    slice_plan p;
    KN_TRY(slice_plan_make(call->in, call->node->n_in, &p));
    kn_view_add(kn_f32(call->din[0]), kn_f32(call->dout[0]), &p.view);
    return KILN_OK;
}

/* ---- Split: consecutive parts along axis, sized by the split input or equal ---- */

/* Checks the split input, or without it the attribute num_outputs (opset 18), which must match the
 * outputs, or else that the outputs divide the dim evenly (opsets before 18). */
static kiln_status split_check(const kn_node *node, const kn_tensor *input, const kn_tensor *split,
                               int n_out, int axis) {
    if (n_out < 1)
        return kn_fail(KILN_ERR_INVALID_ARG, "needs at least one output");
    int64_t dim = input->shape.d[axis];
    int64_t num_outputs = kn_node_int(node, "num_outputs", 0);
    if (split && num_outputs)
        return kn_fail(KILN_ERR_INVALID_ARG, "give either the split input or num_outputs, not both");
    if (num_outputs && num_outputs != n_out)
        return kn_fail(KILN_ERR_INVALID_ARG, "num_outputs is %lld but the node has %d outputs",
                       (long long)num_outputs, n_out);
    if (!split) {
        if (!num_outputs && dim % n_out != 0)
            return kn_fail(KILN_ERR_SHAPE, "cannot split a dim of %lld into %d equal parts; give the "
                           "split input", (long long)dim, n_out);
        return KILN_OK;
    }
    if (split->dtype != KN_I64 && split->dtype != KN_I32)
        return kn_fail(KILN_ERR_INVALID_ARG, "split must be i64 or i32, got %s",
                       kn_dtype_name(split->dtype));
    if (split->shape.ndim != 1 || split->shape.d[0] != n_out)
        return kn_fail(KILN_ERR_INVALID_ARG, "split must be 1-D with one size per output (%d), got "
                       "%lld sizes of rank %d", n_out, (long long)kn_numel(split), split->shape.ndim);
    KN_TRY(kn_require_data(split, "split"));
    int64_t sum = 0;
    for (int k = 0; k < n_out; k++) {
        int64_t size = kn_int_at(split, k);
        if (size < 0 || size > dim)
            return kn_fail(KILN_ERR_SHAPE, "split size %lld (output %d) is outside [0, %lld]",
                           (long long)size, k, (long long)dim);
        sum = kn_count_add(sum, size); /* up to 32 sizes of up to 2^62 each */
    }
    if (sum != dim)
        return kn_fail(KILN_ERR_SHAPE, "split sizes sum to %lld but axis %d has size %lld",
                       (long long)sum, axis, (long long)dim);
    return KILN_OK;
}

static kiln_status split_axis(const kn_node *node, const kn_tensor *input, int *axis) {
    if (!input)
        return kn_fail(KILN_ERR_INVALID_ARG, "input is missing");
    int64_t axis_attr = kn_node_int(node, "axis", 0);
    *axis = kn_axis_normalize(axis_attr, input->shape.ndim);
    if (*axis < 0)
        return kn_fail(KILN_ERR_INVALID_ARG, "axis %lld is out of range for rank %d",
                       (long long)axis_attr, input->shape.ndim);
    return KILN_OK;
}

/* Output k's size along the axis: from the split input, else parts of ceil(dim / n_out) with a
 * smaller (possibly empty) remainder last, as opset 18's num_outputs splits; these are equal parts
 * whenever n_out divides dim. */
static int64_t split_size(const kn_tensor *split, int n_out, int64_t dim, int k) {
    if (split)
        return kn_int_at(split, k);
    int64_t part = dim / n_out + (dim % n_out != 0), begin = part * k;
    return begin >= dim ? 0 : dim - begin < part ? dim - begin : part;
}

/* The view of the input that output k reads: the input's strides, starting `begin` into the axis. */
static kn_view split_view(const kn_shape *in, int axis, int64_t begin, int64_t size) {
    kn_view v = view_of_shape(in);
    v.offset = begin * v.stride[axis];
    v.dims[axis] = size;
    return v;
}

static kiln_status split_infer(kn_graph *g, const kn_node *node) {
    kn_infer_inputs inputs;
    KN_TRY(kn_infer_inputs_get(g, node, &inputs));
    const kn_tensor *input = inputs.in[0], *split = kn_input_at(inputs.in, inputs.n, 1);
    int axis = 0;
    KN_TRY(split_axis(node, input, &axis));
    KN_TRY(split_check(node, input, split, node->n_out, axis));
    int64_t dim = input->shape.d[axis];
    for (int k = 0; k < node->n_out; k++) {
        kn_shape y = input->shape;
        y.d[axis] = split_size(split, node->n_out, dim, k);
        kn_set_output(g, node, k, &y, input->dtype);
    }
    return KILN_OK;
}

static kiln_status split_forward(const kn_op_call *call) {
    const kn_tensor *input = call->in[0], *split = kn_input_at(call->in, call->node->n_in, 1);
    int axis = 0, n_out = call->node->n_out;
    KN_TRY(split_axis(call->node, input, &axis));
    KN_TRY(split_check(call->node, input, split, n_out, axis));
    int64_t dim = input->shape.d[axis], begin = 0;
    for (int k = 0; k < n_out; k++) {
        int64_t size = split_size(split, n_out, dim, k);
        kn_view v = split_view(&input->shape, axis, begin, size);
        kn_shape y = input->shape;
        y.d[axis] = size;
        KN_TRY(check_output_shape(call, k, &y));
        kn_view_copy(call->out[k]->data, input->data, kn_dtype_size(input->dtype), &v);
        begin += size;
    }
    return KILN_OK;
}

static kiln_status split_backward(const kn_op_call *call) {
    if (!call->din[0])
        return KILN_OK;
    KN_TRY(kn_check_f32_gradient(call, 0));
    const kn_tensor *input = call->in[0], *split = kn_input_at(call->in, call->node->n_in, 1);
    int axis = 0, n_out = call->node->n_out;
    KN_TRY(split_axis(call->node, input, &axis));
    KN_TRY(split_check(call->node, input, split, n_out, axis));
    int64_t dim = input->shape.d[axis], begin = 0;
    for (int k = 0; k < n_out; k++) {
        int64_t size = split_size(split, n_out, dim, k);
        kn_view v = split_view(&input->shape, axis, begin, size);
        if (call->dout[k])
            kn_view_add(kn_f32(call->din[0]), kn_f32(call->dout[k]), &v);
        begin += size;
    }
    return KILN_OK;
}

/* ---- Squeeze and Unsqueeze: remove or insert size-1 dims (axes as an input, opset 13) ---- */

static kiln_status squeeze_shape(kn_tensor *const *in, int n_in, kn_shape *out) {
    const kn_tensor *x = kn_input_at(in, n_in, 0), *axes_in = kn_input_at(in, n_in, 1);
    if (!x)
        return kn_fail(KILN_ERR_INVALID_ARG, "input data is missing");
    int rank = x->shape.ndim;
    bool drop[KN_MAX_DIMS] = {false};
    if (axes_in) {
        int64_t axes[KN_MAX_DIMS];
        int n;
        KN_TRY(read_axes(axes_in, rank, axes, &n));
        for (int i = 0; i < n; i++) {
            if (x->shape.d[axes[i]] != 1)
                return kn_fail(KILN_ERR_SHAPE, "cannot squeeze axis %lld of size %lld",
                               (long long)axes[i], (long long)x->shape.d[axes[i]]);
            drop[axes[i]] = true;
        }
    } else {
        for (int k = 0; k < rank; k++)
            drop[k] = x->shape.d[k] == 1;
    }
    *out = (kn_shape){0};
    for (int k = 0; k < rank; k++)
        if (!drop[k])
            out->d[out->ndim++] = x->shape.d[k];
    return KILN_OK;
}

static kiln_status unsqueeze_shape(kn_tensor *const *in, int n_in, kn_shape *out) {
    const kn_tensor *x = kn_input_at(in, n_in, 0), *axes_in = kn_input_at(in, n_in, 1);
    if (!x || !axes_in)
        return kn_fail(KILN_ERR_INVALID_ARG, "inputs data and axes are required");
    int64_t axes[KN_MAX_DIMS];
    int n;
    KN_TRY(kn_read_ints(axes_in, "axes", axes, KN_MAX_DIMS, &n));
    int rank = x->shape.ndim + n;
    if (rank > KN_MAX_DIMS)
        return kn_fail(KILN_ERR_UNSUPPORTED, "the output would have rank %d; at most %d supported",
                       rank, KN_MAX_DIMS);
    KN_TRY(read_axes(axes_in, rank, axes, &n));
    bool inserted[KN_MAX_DIMS] = {false};
    for (int i = 0; i < n; i++)
        inserted[axes[i]] = true;
    *out = (kn_shape){.ndim = rank};
    for (int k = 0, from = 0; k < rank; k++)
        out->d[k] = inserted[k] ? 1 : x->shape.d[from++];
    return KILN_OK;
}

/* Squeeze and Unsqueeze share one infer, which takes the shape rule of the node's entry; both
 * run as a copy. */
extern const kn_op kn_op_squeeze;

static kiln_status resqueeze_infer(kn_graph *g, const kn_node *node) {
    KN_TRY(kn_check_outputs(node, 1));
    kn_infer_inputs inputs;
    KN_TRY(kn_infer_inputs_get(g, node, &inputs));
    kn_shape y;
    KN_TRY(node->op == &kn_op_squeeze ? squeeze_shape(inputs.in, inputs.n, &y)
                                      : unsqueeze_shape(inputs.in, inputs.n, &y));
    kn_set_output(g, node, 0, &y, inputs.in[0]->dtype);
    return KILN_OK;
}

/* ---- Expand and Tile: broadcast reads (stride 0), backward sums ---- */

/* The data input, its strides, and the ints of input 1 (`what`: Expand's shape, Tile's repeats). */
static kiln_status broadcast_operands(kn_tensor *const *in, int n_in, const char *what,
                                      const kn_tensor **x, int64_t *strides, int64_t *ints, int *n) {
    const kn_tensor *arg = kn_input_at(in, n_in, 1);
    *x = kn_input_at(in, n_in, 0);
    if (!*x || !arg)
        return kn_fail(KILN_ERR_INVALID_ARG, "inputs input and %s are required", what);
    KN_TRY(kn_read_ints(arg, what, ints, KN_MAX_DIMS, n));
    kn_shape_strides(&(*x)->shape, strides);
    return KILN_OK;
}

/* Expand's output: the input and the shape input broadcast together, numpy style (so a 1 in the
 * shape keeps the input's dim). The view reads the input with stride 0 along broadcast dims. */
static kiln_status expand_plan_make(kn_tensor *const *in, int n_in, kn_shape *out, kn_view *view) {
    const kn_tensor *x;
    int64_t strides[KN_MAX_DIMS], dims[KN_MAX_DIMS];
    int n;
    KN_TRY(broadcast_operands(in, n_in, "shape", &x, strides, dims, &n));
    int rank = x->shape.ndim > n ? x->shape.ndim : n;
    *out = (kn_shape){.ndim = rank};
    *view = (kn_view){.ndim = rank, .offset = 0};
    for (int k = 0; k < rank; k++) {
        int kx = k - (rank - x->shape.ndim), ks = k - (rank - n);
        int64_t a = kx >= 0 ? x->shape.d[kx] : 1, b = ks >= 0 ? dims[ks] : 1;
        if (b < 0 || (a != b && a != 1 && b != 1)) {
            char xs[96], ss[96];
            kn_shape requested = kn_shape_of(n, dims);
            return kn_fail(KILN_ERR_SHAPE, "cannot expand %s to %s",
                           kn_shape_str(&x->shape, xs, sizeof xs),
                           kn_shape_str(&requested, ss, sizeof ss));
        }
        out->d[k] = a == 1 ? b : a;
        view->dims[k] = out->d[k];
        view->stride[k] = a == 1 ? 0 : strides[kx];
    }
    return KILN_OK;
}

/* Tile's output repeats the input repeats[k] times along dim k: as a view it walks (repeat, dim)
 * pairs, the repeat with stride 0. */
static kiln_status tile_plan_make(kn_tensor *const *in, int n_in, kn_shape *out, kn_view *view) {
    const kn_tensor *x;
    int64_t strides[KN_MAX_DIMS], repeats[KN_MAX_DIMS];
    int n;
    KN_TRY(broadcast_operands(in, n_in, "repeats", &x, strides, repeats, &n));
    int rank = x->shape.ndim;
    if (n != rank)
        return kn_fail(KILN_ERR_INVALID_ARG, "repeats has %d elements; the input has rank %d", n,
                       rank);
    *out = (kn_shape){.ndim = rank};
    *view = (kn_view){.ndim = 2 * rank, .offset = 0};
    for (int k = 0; k < rank; k++) {
        if (repeats[k] < 0)
            return kn_fail(KILN_ERR_INVALID_ARG, "repeats[%d] is %lld; it must be >= 0", k,
                           (long long)repeats[k]);
        out->d[k] = kn_count_mul(x->shape.d[k], repeats[k]);
        view->dims[2 * k] = repeats[k];
        view->stride[2 * k] = 0;
        view->dims[2 * k + 1] = x->shape.d[k];
        view->stride[2 * k + 1] = strides[k];
    }
    return kn_shape_check_size(out);
}

/* Expand and Tile share one infer, forward and backward, which take the plan of the node's entry. */
extern const kn_op kn_op_expand;

static kiln_status broadcast_plan_make(const kn_node *node, kn_tensor *const *in, int n_in,
                                       kn_shape *out, kn_view *view) {
    return node->op == &kn_op_expand ? expand_plan_make(in, n_in, out, view)
                                     : tile_plan_make(in, n_in, out, view);
}

static kiln_status broadcast_infer(kn_graph *g, const kn_node *node) {
    KN_TRY(kn_check_outputs(node, 1));
    kn_infer_inputs inputs;
    KN_TRY(kn_infer_inputs_get(g, node, &inputs));
    kn_shape y;
    kn_view view;
    KN_TRY(broadcast_plan_make(node, inputs.in, inputs.n, &y, &view));
    kn_set_output(g, node, 0, &y, inputs.in[0]->dtype);
    return KILN_OK;
}

static kiln_status broadcast_forward(const kn_op_call *call) {
    kn_shape y;
    kn_view view;
    KN_TRY(broadcast_plan_make(call->node, call->in, call->node->n_in, &y, &view));
    KN_TRY(check_output_shape(call, 0, &y));
    kn_view_copy(call->out[0]->data, call->in[0]->data, kn_dtype_size(call->in[0]->dtype), &view);
    return KILN_OK;
}

static kiln_status broadcast_backward(const kn_op_call *call) {
    if (!call->dout[0] || !call->din[0])
        return KILN_OK;
    KN_TRY(kn_check_f32_gradient(call, 0));
    kn_shape y;
    kn_view view;
    KN_TRY(broadcast_plan_make(call->node, call->in, call->node->n_in, &y, &view));
    kn_view_add(kn_f32(call->din[0]), kn_f32(call->dout[0]), &view);
    return KILN_OK;
}

/* ---- Range: start, start + delta, ... up to limit (exclusive), f32 / i64 / i32 scalars ---- */

/* The number of elements, max(ceil((limit - start) / delta), 0), exactly for integers. */
static kiln_status range_count(kn_tensor *const *in, int n_in, int64_t *count) {
    const kn_tensor *start = kn_input_at(in, n_in, 0), *limit = kn_input_at(in, n_in, 1);
    const kn_tensor *delta = kn_input_at(in, n_in, 2);
    if (!start || !limit || !delta)
        return kn_fail(KILN_ERR_INVALID_ARG, "inputs start, limit and delta are required");
    kn_dtype dtype = start->dtype;
    if (dtype != KN_F32 && dtype != KN_I64 && dtype != KN_I32)
        return kn_fail(KILN_ERR_UNSUPPORTED, "dtype %s; Range supports f32, i64 and i32",
                       kn_dtype_name(dtype));
    const kn_tensor *args[3] = {start, limit, delta};
    static const char *const names[3] = {"start", "limit", "delta"};
    for (int i = 0; i < 3; i++) {
        if (args[i]->dtype != dtype || kn_numel(args[i]) != 1)
            return kn_fail(KILN_ERR_INVALID_ARG, "%s must be one %s value like start, got %lld of "
                           "dtype %s", names[i], kn_dtype_name(dtype),
                           (long long)kn_numel(args[i]), kn_dtype_name(args[i]->dtype));
        KN_TRY(kn_require_data(args[i], names[i]));
    }
    if (dtype == KN_F32) {
        double s = kn_f32(start)[0], l = kn_f32(limit)[0], d = kn_f32(delta)[0];
        double n = ceil((l - s) / d);
        if (d == 0 || !(n < 0x1p62))
            return kn_fail(KILN_ERR_INVALID_ARG, "start %g, limit %g and delta %g give no usable "
                           "count", s, l, d);
        *count = n > 0 ? (int64_t)n : 0;
        return KILN_OK;
    }
    int64_t s = kn_int_at(start, 0), l = kn_int_at(limit, 0), d = kn_int_at(delta, 0), span;
    if (d == 0)
        return kn_fail(KILN_ERR_INVALID_ARG, "delta is 0");
    if (__builtin_sub_overflow(l, s, &span))
        return kn_fail(KILN_ERR_INVALID_ARG, "limit %lld - start %lld overflows", (long long)l,
                       (long long)s);
    if (d > 0)
        *count = span > 0 ? (span - 1) / d + 1 : 0;
    else
        *count = span < 0 ? (span + 1) / d + 1 : 0;
    return KILN_OK;
}

static kiln_status range_infer(kn_graph *g, const kn_node *node) {
    KN_TRY(kn_check_outputs(node, 1));
    kn_infer_inputs inputs;
    KN_TRY(kn_infer_inputs_get(g, node, &inputs));
    int64_t count;
    KN_TRY(range_count(inputs.in, inputs.n, &count));
    kn_shape y = kn_shape_of(1, &count);
    kn_set_output(g, node, 0, &y, inputs.in[0]->dtype);
    return KILN_OK;
}

/* output[i] = start + i * delta, as ONNX defines it (not a running sum, which drifts in f32). */
static kiln_status range_forward(const kn_op_call *call) {
    int64_t count;
    KN_TRY(range_count(call->in, call->node->n_in, &count));
    KN_TRY(check_output_shape(call, 0, &(kn_shape){1, {count}}));
    const kn_tensor *start = call->in[0], *delta = call->in[2];
    void *y = call->out[0]->data;
    if (start->dtype == KN_F32) {
        float s = kn_f32(start)[0], d = kn_f32(delta)[0];
        for (int64_t i = 0; i < count; i++)
            ((float *)y)[i] = s + (float)i * d;
        return KILN_OK;
    }
    int64_t s = kn_int_at(start, 0), d = kn_int_at(delta, 0);
    for (int64_t i = 0; i < count; i++) {
        int64_t v = s + i * d; /* stays between start and limit, so it fits the dtype */
        if (start->dtype == KN_I64)
            ((int64_t *)y)[i] = v;
        else
            ((int32_t *)y)[i] = (int32_t)v;
    }
    return KILN_OK;
}

/* ---- the table ---- */

/* One entry a line: const kn_op kn_op_<id>, named as in ONNX, taking min to max inputs. */
#define INDEX_OP(id, onnx_name, min, max, infer_fn, forward_fn, backward_fn)                     \
    const kn_op kn_op_##id = {.name = onnx_name, .min_inputs = min, .max_inputs = max,            \
                              .infer = infer_fn, .forward = forward_fn, .backward = backward_fn}

/* Shape and Size read only their input's shape. */
const kn_op kn_op_shape = {.name = "Shape", .min_inputs = 1, .max_inputs = 1, .infer = shape_infer,
                           .forward = shape_forward, .reads_only_shapes = true};
const kn_op kn_op_size = {.name = "Size", .min_inputs = 1, .max_inputs = 1, .infer = size_infer,
                          .forward = size_forward, .reads_only_shapes = true};
INDEX_OP(gather, "Gather", 2, 2, gather_infer, gather_forward, gather_backward);
INDEX_OP(slice, "Slice", 3, 5, slice_infer, slice_forward, slice_backward);
INDEX_OP(split, "Split", 1, 2, split_infer, split_forward, split_backward);
INDEX_OP(squeeze, "Squeeze", 1, 2, resqueeze_infer, kn_copy_forward, kn_copy_backward);
INDEX_OP(unsqueeze, "Unsqueeze", 2, 2, resqueeze_infer, kn_copy_forward, kn_copy_backward);
INDEX_OP(expand, "Expand", 2, 2, broadcast_infer, broadcast_forward, broadcast_backward);
INDEX_OP(tile, "Tile", 2, 2, broadcast_infer, broadcast_forward, broadcast_backward);
INDEX_OP(range, "Range", 3, 3, range_infer, range_forward, NULL);
