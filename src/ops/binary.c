/* Add, Sub, Mul, Div with numpy / ONNX multidirectional broadcasting (f32, up to KN_MAX_DIMS dims).
 *
 * Shapes are aligned at their last dims; each pair of dims must be equal or contain a 1, and the
 * output takes the larger. An input's gradient is the output gradient's term for it summed over the
 * dims it was broadcast along (ops/reduce.h):
 *     Add: dA = dY,       dB = dY
 *     Sub: dA = dY,       dB = -dY
 *     Mul: dA = dY B,     dB = dY A
 *     Div: dA = dY / B,   dB = -dY A / B^2 = -(dY / B) Y
 * Either input may be a constant; din[i] is then NULL and its gradient is skipped.
 *
 * One strided loop serves every broadcast, but it first merges dims (broadcast_plan), which turns the
 * common cases into fast paths: equal shapes and a scalar operand run as one flat loop, a vector along
 * the last axis (a bias) as rows of contiguous loops; only odd broadcasts pay for index arithmetic,
 * and then once per row.
 */
#include "core/status.h"
#include "ops/op.h"
#include "ops/reduce.h"

/* Below this many output elements a loop stays on one thread: waking the team costs more than it
 * saves. */
#define KN_BINARY_PARALLEL_MIN 32768
/* Rows are processed in chunks of at most this many elements, so one long row (equal shapes, a
 * scalar operand) still spreads over the threads. */
#define KN_BINARY_CHUNK 8192

typedef enum binary_kind {
    BINARY_ADD, BINARY_SUB, BINARY_MUL, BINARY_DIV,
    BINARY_ADD_MUL, /* y += a * b: backward's one-pass form for a gradient that needs no reduction */
    BINARY_ADD_DIV  /* y += a / b */
} binary_kind;

static kiln_status broadcast_shape(const kn_shape *a, const kn_shape *b, kn_shape *out) {
    int ndim = a->ndim > b->ndim ? a->ndim : b->ndim;
    out->ndim = ndim;
    for (int k = 1; k <= ndim; k++) { /* k-th dim from the end */
        int64_t da = k <= a->ndim ? a->d[a->ndim - k] : 1;
        int64_t db = k <= b->ndim ? b->d[b->ndim - k] : 1;
        if (da != db && da != 1 && db != 1) {
            char sa[96], sb[96];
            return kn_fail(KILN_ERR_SHAPE,
                           "shapes %s and %s do not broadcast: dim %d from the end is %lld vs %lld",
                           kn_shape_str(a, sa, sizeof sa), kn_shape_str(b, sb, sizeof sb), k,
                           (long long)da, (long long)db);
        }
        out->d[ndim - k] = da == 1 ? db : da;
    }
    return KILN_OK;
}

/* Element strides of `x` along each dim of the broadcast shape `out`: 0 where x is broadcast. */
static void broadcast_strides(const kn_shape *x, const kn_shape *out, int64_t *strides) {
    int64_t stride = 1;
    for (int k = out->ndim - 1; k >= 0; k--) {
        int j = k - (out->ndim - x->ndim);
        if (j < 0 || x->d[j] == 1) {
            strides[k] = 0;
        } else {
            strides[k] = stride;
            stride *= x->d[j];
        }
    }
}

/* The bit mask of `out`'s dims that `x` was broadcast along: the dims its gradient is summed over. */
static unsigned broadcast_axes(const kn_shape *x, const kn_shape *out) {
    unsigned axes = 0;
    for (int k = 0; k < out->ndim; k++) {
        int j = k - (out->ndim - x->ndim);
        if ((j < 0 || x->d[j] == 1) && out->d[k] != 1)
            axes |= 1u << k;
    }
    return axes;
}

/* How to walk the output: dims of size 1 dropped, and neighbours merged wherever both operands step
 * through them as through one dim. The common cases come out short: equal shapes and a scalar operand
 * as one dim, a bias vector along the last axis as (rows, F). The innermost dim becomes the row the
 * kernels run along; each operand steps through it by 1, or by 0 when it is broadcast there. */
typedef struct broadcast_plan {
    int ndim; /* >= 1 */
    int64_t d[KN_MAX_DIMS];
    int64_t a_step[KN_MAX_DIMS], b_step[KN_MAX_DIMS];
} broadcast_plan;

static void broadcast_plan_make(broadcast_plan *p, const kn_shape *a, const kn_shape *b,
                                const kn_shape *out) {
    int64_t a_strides[KN_MAX_DIMS], b_strides[KN_MAX_DIMS];
    broadcast_strides(a, out, a_strides);
    broadcast_strides(b, out, b_strides);
    p->ndim = 0;
    for (int k = 0; k < out->ndim; k++) {
        if (out->d[k] == 1)
            continue;
        int last = p->ndim - 1;
        if (last >= 0 && p->a_step[last] == a_strides[k] * out->d[k] &&
            p->b_step[last] == b_strides[k] * out->d[k]) {
            p->d[last] *= out->d[k];
            p->a_step[last] = a_strides[k];
            p->b_step[last] = b_strides[k];
        } else {
            p->d[p->ndim] = out->d[k];
            p->a_step[p->ndim] = a_strides[k];
            p->b_step[p->ndim] = b_strides[k];
            p->ndim++;
        }
    }
    if (p->ndim == 0) { /* a single element */
        p->ndim = 1;
        p->d[0] = 1;
        p->a_step[0] = p->b_step[0] = 1;
    }
}

/* y[i] = EXPR(u = a[i * a_step], v = b[i * b_step]) for i < n, each step 0 or 1 (not both 0).
 * Written out per case so that every loop is a plain vectorisable one. */
#define KN_BINARY_ROW(EXPR)                                  \
    do {                                                     \
        if (a_step && b_step) {                              \
            for (int64_t i = 0; i < n; i++) {                \
                float u = a[i], v = b[i];                    \
                y[i] = (EXPR);                               \
            }                                                \
        } else if (a_step) {                                 \
            float v = b[0];                                  \
            for (int64_t i = 0; i < n; i++) {                \
                float u = a[i];                              \
                y[i] = (EXPR);                               \
            }                                                \
        } else {                                             \
            float u = a[0];                                  \
            for (int64_t i = 0; i < n; i++) {                \
                float v = b[i];                              \
                y[i] = (EXPR);                               \
            }                                                \
        }                                                    \
    } while (0)

static void binary_row(binary_kind kind, float *y, const float *a, int64_t a_step, const float *b,
                       int64_t b_step, int64_t n) {
    switch (kind) {
    case BINARY_ADD: KN_BINARY_ROW(u + v); break;
    case BINARY_SUB: KN_BINARY_ROW(u - v); break;
    case BINARY_MUL: KN_BINARY_ROW(u * v); break;
    case BINARY_DIV: KN_BINARY_ROW(u / v); break;
    case BINARY_ADD_MUL: KN_BINARY_ROW(y[i] + u * v); break;
    case BINARY_ADD_DIV: KN_BINARY_ROW(y[i] + u / v); break;
    }
}

/* y = a OP b (or y += for the ADD_ kinds), broadcast; y has the broadcast shape and may be the same
 * buffer as a full-size a or b. */
static void binary_run(binary_kind kind, const float *a, const kn_shape *a_shape, const float *b,
                       const kn_shape *b_shape, float *y, const kn_shape *y_shape) {
    int64_t n_elements = kn_shape_numel(y_shape);
    if (n_elements == 0)
        return;
    broadcast_plan p;
    broadcast_plan_make(&p, a_shape, b_shape, y_shape);
    int last = p.ndim - 1;
    int64_t row_len = p.d[last], n_rows = n_elements / row_len;
    int64_t chunks_per_row = (row_len + KN_BINARY_CHUNK - 1) / KN_BINARY_CHUNK;
    int64_t n_tasks = n_rows * chunks_per_row;
#pragma omp parallel for schedule(static) if (n_elements >= KN_BINARY_PARALLEL_MIN)
    for (int64_t task = 0; task < n_tasks; task++) {
        int64_t row = task / chunks_per_row;
        int64_t begin = (task % chunks_per_row) * KN_BINARY_CHUNK;
        int64_t len = row_len - begin < KN_BINARY_CHUNK ? row_len - begin : KN_BINARY_CHUNK;
        int64_t a_at = begin * p.a_step[last], b_at = begin * p.b_step[last];
        int64_t rest = row;
        for (int k = last - 1; k >= 0; k--) {
            int64_t index = rest % p.d[k];
            rest /= p.d[k];
            a_at += index * p.a_step[k];
            b_at += index * p.b_step[k];
        }
        binary_row(kind, y + row * row_len + begin, a + a_at, p.a_step[last], b + b_at,
                   p.b_step[last], len);
    }
}

static kiln_status binary_infer(kn_graph *g, const kn_node *node) {
    const kn_value *a = kn_node_input(g, node, 0), *b = kn_node_input(g, node, 1);
    if (!a || !b)
        return kn_fail(KILN_ERR_INVALID_ARG, "inputs A and B are both required");
    if (a->dtype != KN_F32 || b->dtype != KN_F32)
        return kn_fail(KILN_ERR_UNSUPPORTED, "inputs '%s' (%s) and '%s' (%s): only f32 is supported",
                       a->name, kn_dtype_name(a->dtype), b->name, kn_dtype_name(b->dtype));
    kn_value *y = kn_node_output(g, node, 0);
    KN_TRY(broadcast_shape(&a->shape, &b->shape, &y->shape));
    y->dtype = KN_F32;
    return KILN_OK;
}

static kiln_status binary_forward(const kn_op_call *call, binary_kind kind) {
    const kn_tensor *a = call->in[0], *b = call->in[1], *y = call->out[0];
    binary_run(kind, kn_f32(a), &a->shape, kn_f32(b), &b->shape, kn_f32(y), &y->shape);
    return KILN_OK;
}

/* din += (dy OP other) summed over `axes`, OP a multiply or divide. An input that was not broadcast
 * (no axes) takes the product straight into din in one pass; otherwise it is formed in `term` (the
 * output's shape) and reduced. */
static void add_scaled_gradient(binary_kind kind, const kn_tensor *dy, const kn_tensor *other,
                                kn_tensor *din, unsigned axes, float *term, float *reduce_work) {
    const kn_shape *y_shape = &dy->shape;
    if (axes == 0) {
        binary_kind add_kind = kind == BINARY_MUL ? BINARY_ADD_MUL : BINARY_ADD_DIV;
        binary_run(add_kind, kn_f32(dy), y_shape, kn_f32(other), &other->shape, kn_f32(din), y_shape);
    } else {
        binary_run(kind, kn_f32(dy), y_shape, kn_f32(other), &other->shape, term, y_shape);
        kn_reduce_sum_add(term, y_shape, axes, 1.0f, kn_f32(din), reduce_work);
    }
}

static kiln_status binary_backward(const kn_op_call *call, binary_kind kind) {
    const kn_tensor *a = call->in[0], *b = call->in[1], *y = call->out[0], *dy = call->dout[0];
    kn_tensor *da = call->din[0], *db = call->din[1];
    if (!dy || (!da && !db))
        return KILN_OK;
    const kn_shape *y_shape = &y->shape;
    unsigned a_axes = broadcast_axes(&a->shape, y_shape), b_axes = broadcast_axes(&b->shape, y_shape);

    /* Workspace: the per-element gradient term where it must be reduced (Mul, Div), then the
     * reduction's partial sums. */
    bool a_term = da && a_axes, b_term = db && (b_axes || kind == BINARY_DIV);
    size_t term_floats = 0;
    if ((kind == BINARY_MUL || kind == BINARY_DIV) && (a_term || b_term))
        term_floats = ((size_t)kn_numel(y) + 15) & ~(size_t)15; /* keeps what follows 64-byte aligned */
    size_t a_work = da ? kn_reduce_sum_workspace(y_shape, a_axes) : 0;
    size_t b_work = db ? kn_reduce_sum_workspace(y_shape, b_axes) : 0;
    size_t work_bytes = term_floats * sizeof(float) + (a_work > b_work ? a_work : b_work);
    float *work = kn_op_scratch(call->ctx, work_bytes);
    if (work_bytes && !work)
        return kn_fail(KILN_ERR_NOMEM, "out of memory for a %zu-byte gradient workspace", work_bytes);
    float *term = work; /* y's shape */
    float *reduce_work = work + term_floats;

    if (kind == BINARY_ADD || kind == BINARY_SUB) {
        if (da)
            kn_reduce_sum_add(kn_f32(dy), y_shape, a_axes, 1.0f, kn_f32(da), reduce_work);
        if (db)
            kn_reduce_sum_add(kn_f32(dy), y_shape, b_axes, kind == BINARY_SUB ? -1.0f : 1.0f,
                              kn_f32(db), reduce_work);
    } else if (kind == BINARY_MUL) {
        if (da)
            add_scaled_gradient(BINARY_MUL, dy, b, da, a_axes, term, reduce_work);
        if (db)
            add_scaled_gradient(BINARY_MUL, dy, a, db, b_axes, term, reduce_work);
    } else { /* BINARY_DIV */
        if (da)
            add_scaled_gradient(BINARY_DIV, dy, b, da, a_axes, term, reduce_work);
        if (db) { /* -(dy / b) y */
            binary_run(BINARY_DIV, kn_f32(dy), y_shape, kn_f32(b), &b->shape, term, y_shape);
            binary_run(BINARY_MUL, term, y_shape, kn_f32(y), y_shape, term, y_shape);
            kn_reduce_sum_add(term, y_shape, b_axes, -1.0f, kn_f32(db), reduce_work);
        }
    }
    return KILN_OK;
}

static kiln_status add_forward(const kn_op_call *call) { return binary_forward(call, BINARY_ADD); }
static kiln_status sub_forward(const kn_op_call *call) { return binary_forward(call, BINARY_SUB); }
static kiln_status mul_forward(const kn_op_call *call) { return binary_forward(call, BINARY_MUL); }
static kiln_status div_forward(const kn_op_call *call) { return binary_forward(call, BINARY_DIV); }
static kiln_status add_backward(const kn_op_call *call) { return binary_backward(call, BINARY_ADD); }
static kiln_status sub_backward(const kn_op_call *call) { return binary_backward(call, BINARY_SUB); }
static kiln_status mul_backward(const kn_op_call *call) { return binary_backward(call, BINARY_MUL); }
static kiln_status div_backward(const kn_op_call *call) { return binary_backward(call, BINARY_DIV); }

/* One add, subtract, multiply or divide per output element. */
static int64_t binary_flops(const kn_graph *g, const kn_node *node) {
    return kn_shape_numel(&kn_node_output(g, node, 0)->shape);
}

const kn_op kn_op_add = {.name = "Add", .min_inputs = 2, .max_inputs = 2, .infer = binary_infer,
                         .forward = add_forward, .backward = add_backward, .flops = binary_flops};
const kn_op kn_op_sub = {.name = "Sub", .min_inputs = 2, .max_inputs = 2, .infer = binary_infer,
                         .forward = sub_forward, .backward = sub_backward, .flops = binary_flops};
const kn_op kn_op_mul = {.name = "Mul", .min_inputs = 2, .max_inputs = 2, .infer = binary_infer,
                         .forward = mul_forward, .backward = mul_backward, .flops = binary_flops};
const kn_op kn_op_div = {.name = "Div", .min_inputs = 2, .max_inputs = 2, .infer = binary_infer,
                         .forward = div_forward, .backward = div_backward, .flops = binary_flops};
