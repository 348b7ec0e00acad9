/* Elementwise ops over broadcast inputs (numpy / ONNX multidirectional broadcasting,
 * ops/broadcast.h):
 *
 *     Add, Sub, Mul, Div     f32, f64 and the integers (i64, i32, i16, i8, u64, u32, u16, u8)
 *     Pow                    f32, f64, i64 or i32 base; any numeric exponent; output in the base's
 *                            dtype

 *     Equal, Less, Greater,  f32, f64 and the integers (Equal also bool) -> bool
 *     LessOrEqual, GreaterOrEqual
 *     Mod                    f32, f64, f16 (fmod=1 only; f16 in f32) and the integers
 *     BitShift               u8, u16, u32, u64 (direction LEFT or RIGHT)
 *     And, Or, Xor, Not      bool
 *     Where                  bool condition; X and Y of one dtype, any
 *     Max, Min               1 to N inputs of one dtype: f32, f64, f16 and the integers
 *     Sum, Mean              1 to N f32 or f64 inputs
 *
 * f64 is computed in double, u64 compares, divides and takes remainders unsigned. Integers never go
 * through float math (ops/elements.h): overflow wraps (two's complement) as in
 * numpy; integer Div truncates toward zero as C and ONNX do, and a zero divisor fails with
 * KILN_ERR_NUMERIC. An integer Pow multiplies exactly for integral exponents >= 0; only a
 * fractional or negative exponent goes through double (truncated toward zero, saturated). Floats
 * follow IEEE; Max and Min return NaN where an input is NaN. f16 (a storage dtype) is compared in
 * place, never rounded: Max and Min pick one of their inputs' values.
 *
 * Gradients flow for f32 only. An input's gradient is the output gradient's term for it summed over
 * the dims it was broadcast along (ops/reduce.h):
 *     Add: dA = dY,       dB = dY
 *     Sub: dA = dY,       dB = -dY
 *     Mul: dA = dY B,     dB = dY A
 *     Div: dA = dY / B,   dB = -dY A / B^2 = -(dY / B) Y
 *     Pow: dA = dY B A^(B-1), 0 where B = 0;  dB = dY Y ln A, 0 where A = 0 and B >= 0 (PyTorch's)
 *     Where: dX = dY where C, dY = dY where not C
 *     Sum: dX_k = dY;  Mean: dX_k = dY / N
 *     Max, Min: at each element, dY goes whole to the FIRST input (in input order) equal to the
 *           result; ties are not split (PyTorch's torch.max(a, b) splits them evenly instead)
 * An input may be a constant; din[i] is then NULL and its gradient is skipped.
 *
 * The f32 Add/Sub/Mul/Div path is the one training runs: its rows are plain loops the compiler
 * vectorises. The other ops load elements through their dtype, which costs a little speed and keeps
 * one loop per op.
 */
#include <math.h>
#include <string.h>

#include "core/half.h"
#include "core/status.h"
#include "core/threads.h"
#include "ops/broadcast.h"
#include "ops/elements.h"
#include "ops/op.h"
#include "ops/reduce.h"

/* Most inputs Max, Min, Sum and Mean take (the training tape binds up to 32). */
#define KN_VARIADIC_MAX_INPUTS 32

typedef enum binary_kind {
    BINARY_ADD, BINARY_SUB, BINARY_MUL, BINARY_DIV,
    BINARY_ADD_MUL, /* y += a * b: backward's one-pass form for a gradient that needs no reduction */
    BINARY_ADD_DIV  /* y += a / b */
} binary_kind;

static bool is_numeric(kn_dtype dtype) {
    return dtype == KN_F32 || dtype == KN_F64 || kn_dtype_is_integer(dtype);
}

/* Element i of f64 data. */
static inline double f64_at(const void *data, int64_t i) { return ((const double *)data)[i]; }

static kiln_status require_inputs(const kn_graph *g, const kn_node *node, int n) {
    for (int i = 0; i < n; i++)
        if (!kn_node_input(g, node, i))
            return kn_fail(KILN_ERR_INVALID_ARG, "input %d is required", i);
    return KILN_OK;
}

static kiln_status require_same_dtype(const kn_value *a, const kn_value *b) {
    if (a->dtype != b->dtype)
        return kn_fail(KILN_ERR_UNSUPPORTED, "inputs '%s' (%s) and '%s' (%s) differ in dtype",
                       a->name, kn_dtype_name(a->dtype), b->name, kn_dtype_name(b->dtype));
    return KILN_OK;
}

/* Sets output 0 to the broadcast shape of the first n inputs, with dtype `dtype`. */
static kiln_status infer_broadcast_output(kn_graph *g, const kn_node *node, int n, kn_dtype dtype) {
    kn_value *y = kn_node_output(g, node, 0);
    kn_shape shape = kn_node_input(g, node, 0)->shape;
    for (int i = 1; i < n; i++)
        KN_TRY(kn_broadcast_shape(&shape, &kn_node_input(g, node, i)->shape, &shape));
    y->shape = shape;
    y->dtype = dtype;
    return KILN_OK;
}

static int64_t output_numel(const kn_graph *g, const kn_node *node) {
    return kn_shape_numel(&kn_node_output(g, node, 0)->shape);
}

/* One operation per output element. */
static int64_t elementwise_flops(const kn_graph *g, const kn_node *node) {
    return output_numel(g, node);
}

/* ---- f32 Add, Sub, Mul, Div ---- */

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

typedef struct binary_args {
    binary_kind kind;
    kn_dtype dtype;
    const void *a, *b;
    void *y;
} binary_args;

static void binary_f32_row(const kn_broadcast_row *row, void *ctx) {
    const binary_args *args = ctx;
    binary_row(args->kind, (float *)args->y + row->at, (const float *)args->a + row->offset[0],
               row->step[0], (const float *)args->b + row->offset[1], row->step[1], row->n);
}

/* y = a OP b (or y += for the ADD_ kinds), broadcast; y has the broadcast shape and may be the same
 * buffer as a full-size a or b. */
static void binary_run(binary_kind kind, const float *a, const kn_shape *a_shape, const float *b,
                       const kn_shape *b_shape, float *y, const kn_shape *y_shape) {
    const kn_shape *shapes[2] = {a_shape, b_shape};
    kn_broadcast_plan p;
    kn_broadcast_plan_make(&p, 2, shapes, y_shape);
    binary_args args = {kind, KN_F32, a, b, y};
    kn_broadcast_run(&p, binary_f32_row, &args);
}

/* ---- integer Add, Sub, Mul, Div ---- */

/* In uint64 so that overflow wraps instead of being undefined behaviour; INT64_MIN / -1 wraps to
 * INT64_MIN. u64 divides unsigned. */
static inline int64_t int_binary(binary_kind kind, kn_dtype dtype, int64_t u, int64_t v) {
    switch (kind) {
    case BINARY_ADD: return (int64_t)((uint64_t)u + (uint64_t)v);
    case BINARY_SUB: return (int64_t)((uint64_t)u - (uint64_t)v);
    case BINARY_MUL: return (int64_t)((uint64_t)u * (uint64_t)v);
    case BINARY_DIV:
        if (dtype == KN_U64)
            return (int64_t)((uint64_t)u / (uint64_t)v);
        return v == -1 ? (int64_t)(0 - (uint64_t)u) : u / v;
    default: return 0; /* the ADD_ kinds are f32 only */
    }
}

static void int_binary_row(const kn_broadcast_row *row, void *ctx) {
    const binary_args *args = ctx;
    for (int64_t i = 0; i < row->n; i++) {
        int64_t u = kn_int_load(args->a, args->dtype, row->offset[0] + i * row->step[0]);
        int64_t v = kn_int_load(args->b, args->dtype, row->offset[1] + i * row->step[1]);
        kn_int_store(args->y, args->dtype, row->at + i, int_binary(args->kind, args->dtype, u, v));
    }
}

/* f64 Add, Sub, Mul, Div in double. */
static void f64_binary_row(const kn_broadcast_row *row, void *ctx) {
    const binary_args *args = ctx;
    double *y = (double *)args->y + row->at;
    for (int64_t i = 0; i < row->n; i++) {
        double u = f64_at(args->a, row->offset[0] + i * row->step[0]);
        double v = f64_at(args->b, row->offset[1] + i * row->step[1]);
        switch (args->kind) {
        case BINARY_ADD: y[i] = u + v; break;
        case BINARY_SUB: y[i] = u - v; break;
        case BINARY_MUL: y[i] = u * v; break;
        default: y[i] = u / v; break; /* BINARY_DIV; the ADD_ kinds are f32 only */
        }
    }
}

/* With a non-empty output every divisor element is used, so one zero anywhere is a failure. */
static kiln_status check_no_zero_divisor(const kn_tensor *b) {
    int64_t n = kn_numel(b);
    for (int64_t i = 0; i < n; i++)
        if (kn_int_load(b->data, b->dtype, i) == 0)
            return kn_fail(KILN_ERR_NUMERIC, "integer division by zero (divisor element %lld)",
                           (long long)i);
    return KILN_OK;
}

static kiln_status arith_infer(kn_graph *g, const kn_node *node) {
    KN_TRY(require_inputs(g, node, 2));
    const kn_value *a = kn_node_input(g, node, 0), *b = kn_node_input(g, node, 1);
    KN_TRY(require_same_dtype(a, b));
    if (!is_numeric(a->dtype))
        return kn_fail(KILN_ERR_UNSUPPORTED, "inputs are %s; supported: f32, f64 and the integers",
                       kn_dtype_name(a->dtype));
    return infer_broadcast_output(g, node, 2, a->dtype);
}

static kiln_status binary_forward(const kn_op_call *call, binary_kind kind) {
    const kn_tensor *a = call->in[0], *b = call->in[1], *y = call->out[0];
    if (a->dtype == KN_F32) {
        binary_run(kind, kn_f32(a), &a->shape, kn_f32(b), &b->shape, kn_f32(y), &y->shape);
        return KILN_OK;
    }
    if (kind == BINARY_DIV && a->dtype != KN_F64 && kn_numel(y) > 0)
        KN_TRY(check_no_zero_divisor(b));
    const kn_shape *shapes[2] = {&a->shape, &b->shape};
    kn_broadcast_plan p;
    kn_broadcast_plan_make(&p, 2, shapes, &y->shape);
    binary_args args = {kind, a->dtype, a->data, b->data, y->data};
    kn_broadcast_run(&p, a->dtype == KN_F64 ? f64_binary_row : int_binary_row, &args);
    return KILN_OK;
}

/* din i = scale * (x summed over axes) when fresh (din_fresh), else din i += it. */
static void reduce_into_gradient(const kn_op_call *call, int i, const float *x, const kn_shape *x_shape, unsigned axes,
                                 float scale, float *reduce_work) {
    if (kn_din_fresh(call, i))
        kn_reduce_sum_store(x, x_shape, axes, scale, kn_f32(call->din[i]), reduce_work);
    else
        kn_reduce_sum_add(x, x_shape, axes, scale, kn_f32(call->din[i]), reduce_work);
}

/* din = scale * dy over a range of elements. */
typedef struct gradient_scale {
    float *din;
    const float *dy;
    float scale;
} gradient_scale;

static void gradient_scale_range(void *ctx, int64_t begin, int64_t end, int slot) {
    (void)slot;
    const gradient_scale *gs = ctx;
    float *din = gs->din;
    const float *g = gs->dy;
    const float scale = gs->scale;
    for (int64_t j = begin; j < end; j++)
        din[j] = scale * g[j];
}

/* din += scale * dy summed over `axes`, or, fresh and not broadcast (no axes), din = scale * dy. */
static void sum_gradient(const kn_op_call *call, int i, unsigned axes, float scale, float *reduce_work) {
    const kn_tensor *dy = call->dout[0];
    float *din = kn_f32(call->din[i]);
    if (din == kn_f32(dy)) // the tape aliased din to dy (scale 1, not broadcast): the gradient is in place
        return;
    if (kn_din_fresh(call, i) && axes == 0) {
        gradient_scale gs = {din, kn_f32(dy), scale};
        int64_t n = kn_numel(dy);
        kn_parallel_range(n, kn_threads_for(n, KN_PARALLEL_MIN_MEMORY), gradient_scale_range, &gs);
        return;
    }
    reduce_into_gradient(call, i, kn_f32(dy), &dy->shape, axes, scale, reduce_work);
}

/* din += (dy OP other) summed over `axes`, OP a multiply or divide. An input that was not broadcast
 * (no axes) takes the product straight into din in one pass (stored when fresh); otherwise it is
 * formed in `term` (the output's shape) and reduced. */
static void add_scaled_gradient(const kn_op_call *call, int i, binary_kind kind, const kn_tensor *other,
                                unsigned axes, float *term, float *reduce_work) {
    const kn_tensor *dy = call->dout[0];
    kn_tensor *din = call->din[i];
    const kn_shape *y_shape = &dy->shape;
    if (axes == 0) {
        binary_kind add_kind = kind == BINARY_MUL ? BINARY_ADD_MUL : BINARY_ADD_DIV;
        binary_run(kn_din_fresh(call, i) ? kind : add_kind, kn_f32(dy), y_shape, kn_f32(other), &other->shape,
                   kn_f32(din), y_shape);
    } else {
        binary_run(kind, kn_f32(dy), y_shape, kn_f32(other), &other->shape, term, y_shape);
        reduce_into_gradient(call, i, term, y_shape, axes, 1.0f, reduce_work);
    }
}

static kiln_status binary_backward(const kn_op_call *call, binary_kind kind) {
    const kn_tensor *a = call->in[0], *b = call->in[1], *y = call->out[0], *dy = call->dout[0];
    kn_tensor *da = call->din[0], *db = call->din[1];
    if (!dy || (!da && !db) || a->dtype != KN_F32)
        return KILN_OK;
    const kn_shape *y_shape = &y->shape;
    unsigned a_axes = kn_broadcast_axes(&a->shape, y_shape);
    unsigned b_axes = kn_broadcast_axes(&b->shape, y_shape);

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
            sum_gradient(call, 0, a_axes, 1.0f, reduce_work);
        if (db)
            sum_gradient(call, 1, b_axes, kind == BINARY_SUB ? -1.0f : 1.0f, reduce_work);
    } else if (kind == BINARY_MUL) {
        if (da)
            add_scaled_gradient(call, 0, BINARY_MUL, b, a_axes, term, reduce_work);
        if (db)
            add_scaled_gradient(call, 1, BINARY_MUL, a, b_axes, term, reduce_work);
    } else { /* BINARY_DIV */
        if (da)
            add_scaled_gradient(call, 0, BINARY_DIV, b, a_axes, term, reduce_work);
        if (db) { /* -(dy / b) y */
            binary_run(BINARY_DIV, kn_f32(dy), y_shape, kn_f32(b), &b->shape, term, y_shape);
            binary_run(BINARY_MUL, term, y_shape, kn_f32(y), y_shape, term, y_shape);
            reduce_into_gradient(call, 1, term, y_shape, b_axes, -1.0f, reduce_work);
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

/* ---- gradient workspace for the ops below ---- */

/* A per-element gradient term in the output's shape, an optional byte mask of the same size, and
 * the partial sums for reducing the term into each input's gradient. */
typedef struct grad_work {
    float *term;
    uint8_t *mask;
    float *reduce;
} grad_work;

static kiln_status grad_work_get(kn_op_ctx *ctx, const kn_shape *y_shape, kn_tensor *const *in,
                                 int n_in, bool with_mask, grad_work *w) {
    size_t n_y = (size_t)kn_shape_numel(y_shape);
    size_t term_bytes = kn_round_up_64(n_y * sizeof(float));
    size_t mask_bytes = with_mask ? kn_round_up_64(n_y) : 0;
    size_t reduce_bytes = 0;
    for (int i = 0; i < n_in; i++) {
        size_t bytes = kn_reduce_sum_workspace(y_shape, kn_broadcast_axes(&in[i]->shape, y_shape));
        reduce_bytes = bytes > reduce_bytes ? bytes : reduce_bytes;
    }
    /* each part is within a few times a tensor's size: no overflow */
    size_t total = term_bytes + mask_bytes + reduce_bytes;
    char *base = kn_op_scratch(ctx, total ? total : 1);
    if (!base)
        return kn_fail(KILN_ERR_NOMEM, "out of memory for a %zu-byte gradient workspace", total);
    w->term = (float *)base;
    w->mask = (uint8_t *)(base + term_bytes);
    w->reduce = (float *)(base + term_bytes + mask_bytes);
    return KILN_OK;
}

/* din += term summed over the dims `x` was broadcast along to the output's shape. */
static void reduce_term_into(const grad_work *w, const kn_shape *y_shape, const kn_tensor *x,
                             kn_tensor *din) {
    kn_reduce_sum_add(w->term, y_shape, kn_broadcast_axes(&x->shape, y_shape), 1.0f, kn_f32(din),
                      w->reduce);
}

/* ---- Pow ---- */

static inline double exponent_at(const void *e, kn_dtype dtype, int64_t i) {
    switch (dtype) {
    case KN_F32: return ((const float *)e)[i];
    case KN_F64: return f64_at(e, i);
    case KN_U64: return (double)((const uint64_t *)e)[i];
    default: return (double)kn_int_load(e, dtype, i);
    }
}

static kiln_status pow_infer(kn_graph *g, const kn_node *node) {
    KN_TRY(require_inputs(g, node, 2));
    const kn_value *x = kn_node_input(g, node, 0), *e = kn_node_input(g, node, 1);
    if (x->dtype != KN_F32 && x->dtype != KN_F64 && x->dtype != KN_I64 && x->dtype != KN_I32)
        return kn_fail(KILN_ERR_UNSUPPORTED, "base '%s' is %s; supported: f32, f64, i64, i32", x->name,
                       kn_dtype_name(x->dtype));
    if (!is_numeric(e->dtype))
        return kn_fail(KILN_ERR_UNSUPPORTED, "exponent '%s' is %s; supported: f32, f64, the integers",
                       e->name, kn_dtype_name(e->dtype));
    return infer_broadcast_output(g, node, 2, x->dtype);
}

typedef struct pow_args {
    kn_dtype x_dtype, e_dtype;
    const void *x; /* operand 0 */
    const void *e; /* operand 1 */
    void *y;
} pow_args;

/* x^e for an integer base, in the base's dtype. A non-negative integral exponent multiplies
 * exactly (by squaring, wrapping like numpy's integer power); any other exponent goes through
 * double and truncates toward zero, saturated to the dtype's range (NaN gives 0). */
static int64_t int_pow(int64_t x, double e, kn_dtype dtype) {
    if (e >= 0 && e < 0x1p63 && e == floor(e)) {
        uint64_t base = (uint64_t)x, result = 1;
        for (uint64_t n = (uint64_t)e; n; n >>= 1) {
            if (n & 1)
                result *= base;
            base *= base;
        }
        return (int64_t)result;
    }
    double r = trunc(pow((double)x, e));
    if (isnan(r))
        return 0;
    int64_t lowest = kn_int_lowest(dtype), highest = kn_int_highest(dtype);
    return r <= (double)lowest ? lowest : r >= (double)highest ? highest : (int64_t)r;
}

/* An integer exponent goes through double, which holds every int32 exactly and keeps the parity
 * (the sign of a negative base) of any int64 up to 2^53. */
static void pow_row(const kn_broadcast_row *row, void *ctx) {
    const pow_args *args = ctx;
    if (args->x_dtype == KN_F64) {
        for (int64_t i = 0; i < row->n; i++)
            ((double *)args->y)[row->at + i] =
                pow(f64_at(args->x, row->offset[0] + i * row->step[0]),
                    exponent_at(args->e, args->e_dtype, row->offset[1] + i * row->step[1]));
        return;
    }
    if (args->x_dtype != KN_F32) {
        for (int64_t i = 0; i < row->n; i++) {
            int64_t x = kn_int_load(args->x, args->x_dtype, row->offset[0] + i * row->step[0]);
            double e = exponent_at(args->e, args->e_dtype, row->offset[1] + i * row->step[1]);
            kn_int_store(args->y, args->x_dtype, row->at + i, int_pow(x, e, args->x_dtype));
        }
        return;
    }
    const float *x = (const float *)args->x + row->offset[0];
    float *y = (float *)args->y + row->at;
    if (args->e_dtype == KN_F32) {
        const float *e = (const float *)args->e + row->offset[1];
        if (row->step[1] == 0 && e[0] == 2.0f) { /* squares (variances): x * x is the exact x^2 rounded once */
            for (int64_t i = 0; i < row->n; i++)
                y[i] = x[i * row->step[0]] * x[i * row->step[0]];
            return;
        }
        for (int64_t i = 0; i < row->n; i++)
            y[i] = powf(x[i * row->step[0]], e[i * row->step[1]]);
    } else {
        for (int64_t i = 0; i < row->n; i++) {
            double e = exponent_at(args->e, args->e_dtype, row->offset[1] + i * row->step[1]);
            y[i] = (float)pow(x[i * row->step[0]], e);
        }
    }
}

static kiln_status pow_forward(const kn_op_call *call) {
    const kn_tensor *x = call->in[0], *e = call->in[1], *y = call->out[0];
    const kn_shape *shapes[2] = {&x->shape, &e->shape};
    kn_broadcast_plan p;
    kn_broadcast_plan_make(&p, 2, shapes, &y->shape);
    pow_args args = {x->dtype, e->dtype, x->data, e->data, y->data};
    kn_broadcast_run(&p, pow_row, &args);
    return KILN_OK;
}

typedef struct pow_grad_args {
    bool of_exponent; /* the term for the exponent's gradient, else the base's */
    kn_dtype e_dtype;
    const float *x;
    const void *e;
    const float *y, *dy;
    float *term;
} pow_grad_args;

static void pow_grad_row(const kn_broadcast_row *row, void *ctx) {
    const pow_grad_args *args = ctx;
    for (int64_t i = 0; i < row->n; i++) {
        int64_t at = row->at + i;
        double x = args->x[row->offset[0] + i * row->step[0]];
        double e = exponent_at(args->e, args->e_dtype, row->offset[1] + i * row->step[1]);
        double term;
        if (args->of_exponent)
            term = x == 0 && e >= 0 ? 0.0 : (double)args->dy[at] * args->y[at] * log(x);
        else
            term = e == 0 ? 0.0 : (double)args->dy[at] * e * pow(x, e - 1);
        args->term[at] = (float)term;
    }
}

static kiln_status pow_backward(const kn_op_call *call) {
    const kn_tensor *x = call->in[0], *e = call->in[1], *y = call->out[0], *dy = call->dout[0];
    kn_tensor *dx = call->din[0], *de = e->dtype == KN_F32 ? call->din[1] : NULL;
    if (!dy || (!dx && !de) || x->dtype != KN_F32) /* an integer base has no gradient */
        return KILN_OK;
    grad_work w = {0};
    KN_TRY(grad_work_get(call->ctx, &y->shape, call->in, 2, false, &w));
    const kn_shape *shapes[2] = {&x->shape, &e->shape};
    kn_broadcast_plan p;
    kn_broadcast_plan_make(&p, 2, shapes, &y->shape);
    pow_grad_args args = {false, e->dtype, kn_f32(x), e->data, kn_f32(y), kn_f32(dy), w.term};
    if (dx) {
        kn_broadcast_run(&p, pow_grad_row, &args);
        reduce_term_into(&w, &y->shape, x, dx);
    }
    if (de) {
        args.of_exponent = true;
        kn_broadcast_run(&p, pow_grad_row, &args);
        reduce_term_into(&w, &y->shape, e, de);
    }
    return KILN_OK;
}

/* ---- Equal, Less, Greater ---- */

typedef enum compare_kind {
    COMPARE_EQUAL, COMPARE_LESS, COMPARE_GREATER, COMPARE_LESS_OR_EQUAL, COMPARE_GREATER_OR_EQUAL
} compare_kind;

static kiln_status compare_infer(kn_graph *g, const kn_node *node, compare_kind kind) {
    KN_TRY(require_inputs(g, node, 2));
    const kn_value *a = kn_node_input(g, node, 0), *b = kn_node_input(g, node, 1);
    KN_TRY(require_same_dtype(a, b));
    if (!is_numeric(a->dtype) && !(kind == COMPARE_EQUAL && a->dtype == KN_BOOL))
        return kn_fail(KILN_ERR_UNSUPPORTED, "inputs are %s; supported: f32, f64, the integers%s",
                       kn_dtype_name(a->dtype), kind == COMPARE_EQUAL ? ", bool" : "");
    return infer_broadcast_output(g, node, 2, KN_BOOL);
}

static kiln_status equal_infer(kn_graph *g, const kn_node *node) {
    return compare_infer(g, node, COMPARE_EQUAL);
}
static kiln_status less_infer(kn_graph *g, const kn_node *node) {
    return compare_infer(g, node, COMPARE_LESS);
}
static kiln_status greater_infer(kn_graph *g, const kn_node *node) {
    return compare_infer(g, node, COMPARE_GREATER);
}
static kiln_status less_or_equal_infer(kn_graph *g, const kn_node *node) {
    return compare_infer(g, node, COMPARE_LESS_OR_EQUAL);
}
static kiln_status greater_or_equal_infer(kn_graph *g, const kn_node *node) {
    return compare_infer(g, node, COMPARE_GREATER_OR_EQUAL);
}

/* u == v, u < v, u > v, u <= v or u >= v, for floats and integers alike */
#define KN_COMPARE(kind, u, v)                                                                     \
    ((kind) == COMPARE_EQUAL ? (u) == (v) : (kind) == COMPARE_LESS ? (u) < (v)                     \
     : (kind) == COMPARE_GREATER ? (u) > (v) : (kind) == COMPARE_LESS_OR_EQUAL ? (u) <= (v)       \
     : (u) >= (v))

typedef struct compare_args {
    compare_kind kind;
    kn_dtype dtype;
    const void *a, *b;
    uint8_t *y;
} compare_args;

static void compare_row(const kn_broadcast_row *row, void *ctx) {
    const compare_args *args = ctx;
    compare_kind kind = args->kind;
    uint8_t *y = args->y + row->at;
    for (int64_t i = 0; i < row->n; i++) {
        int64_t ia = row->offset[0] + i * row->step[0], ib = row->offset[1] + i * row->step[1];
        if (args->dtype == KN_F32) {
            float u = ((const float *)args->a)[ia], v = ((const float *)args->b)[ib];
            y[i] = KN_COMPARE(kind, u, v);
        } else if (args->dtype == KN_F64) {
            double u = f64_at(args->a, ia), v = f64_at(args->b, ib);
            y[i] = KN_COMPARE(kind, u, v);
        } else if (args->dtype == KN_U64) {
            uint64_t u = ((const uint64_t *)args->a)[ia], v = ((const uint64_t *)args->b)[ib];
            y[i] = KN_COMPARE(kind, u, v);
        } else {
            int64_t u = kn_int_load(args->a, args->dtype, ia);
            int64_t v = kn_int_load(args->b, args->dtype, ib);
            y[i] = KN_COMPARE(kind, u, v);
        }
    }
}

static kiln_status compare_forward(const kn_op_call *call, compare_kind kind) {
    const kn_tensor *a = call->in[0], *b = call->in[1], *y = call->out[0];
    const kn_shape *shapes[2] = {&a->shape, &b->shape};
    kn_broadcast_plan p;
    kn_broadcast_plan_make(&p, 2, shapes, &y->shape);
    compare_args args = {kind, a->dtype, a->data, b->data, y->data};
    kn_broadcast_run(&p, compare_row, &args);
    return KILN_OK;
}

static kiln_status equal_forward(const kn_op_call *call) {
    return compare_forward(call, COMPARE_EQUAL);
}
static kiln_status less_forward(const kn_op_call *call) {
    return compare_forward(call, COMPARE_LESS);
}
static kiln_status greater_forward(const kn_op_call *call) {
    return compare_forward(call, COMPARE_GREATER);
}
static kiln_status less_or_equal_forward(const kn_op_call *call) {
    return compare_forward(call, COMPARE_LESS_OR_EQUAL);
}
static kiln_status greater_or_equal_forward(const kn_op_call *call) {
    return compare_forward(call, COMPARE_GREATER_OR_EQUAL);
}

/* ---- Mod ---- */

/* fmod = 0 (the default, integers only): the remainder takes the divisor's sign, as Python's %;
 * fmod = 1: C's fmod, the dividend's sign, for floats and integers. */
static kiln_status mod_infer(kn_graph *g, const kn_node *node) {
    const kn_value *a = kn_node_input(g, node, 0), *b = kn_node_input(g, node, 1);
    if (a && b && a->dtype == KN_F16 && b->dtype == KN_F16) {
        if (kn_node_int(node, "fmod", 0) == 0)
            return kn_fail(KILN_ERR_INVALID_ARG, "Mod of floats needs fmod=1");
        return infer_broadcast_output(g, node, 2, KN_F16);
    }
    KN_TRY(arith_infer(g, node));
    kn_dtype dtype = a->dtype;
    if ((dtype == KN_F32 || dtype == KN_F64) && kn_node_int(node, "fmod", 0) == 0)
        return kn_fail(KILN_ERR_INVALID_ARG, "Mod of floats needs fmod=1");
    return KILN_OK;
}

typedef struct mod_args {
    bool c_fmod;
    kn_dtype dtype;
    const void *a, *b;
    void *y;
} mod_args;

/* u mod v for v != 0; INT64_MIN mod -1 is 0 (computed without the overflowing division). */
static inline int64_t int_mod(int64_t u, int64_t v, bool c_fmod) {
    int64_t r = v == -1 ? 0 : u % v;
    if (!c_fmod && r != 0 && ((r < 0) != (v < 0)))
        r += v;
    return r;
}

static void mod_row(const kn_broadcast_row *row, void *ctx) {
    const mod_args *args = ctx;
    for (int64_t i = 0; i < row->n; i++) {
        int64_t ia = row->offset[0] + i * row->step[0], ib = row->offset[1] + i * row->step[1];
        if (args->dtype == KN_F32) {
            ((float *)args->y)[row->at + i] =
                fmodf(((const float *)args->a)[ia], ((const float *)args->b)[ib]);
        } else if (args->dtype == KN_F64) {
            ((double *)args->y)[row->at + i] = fmod(f64_at(args->a, ia), f64_at(args->b, ib));
        } else if (args->dtype == KN_F16) { /* in f32, rounded once to f16 */
            float u = kn_f16_to_f32(((const uint16_t *)args->a)[ia]);
            float v = kn_f16_to_f32(((const uint16_t *)args->b)[ib]);
            ((uint16_t *)args->y)[row->at + i] = kn_f32_to_f16(fmodf(u, v));
        } else if (args->dtype == KN_U64) { /* unsigned: both signs agree */
            uint64_t u = ((const uint64_t *)args->a)[ia], v = ((const uint64_t *)args->b)[ib];
            ((uint64_t *)args->y)[row->at + i] = u % v;
        } else {
            int64_t u = kn_int_load(args->a, args->dtype, ia), v = kn_int_load(args->b, args->dtype, ib);
            kn_int_store(args->y, args->dtype, row->at + i, int_mod(u, v, args->c_fmod));
        }
    }
}

static kiln_status mod_forward(const kn_op_call *call) {
    const kn_tensor *a = call->in[0], *b = call->in[1], *y = call->out[0];
    if (kn_dtype_is_integer(a->dtype) && kn_numel(y) > 0)
        KN_TRY(check_no_zero_divisor(b));
    const kn_shape *shapes[2] = {&a->shape, &b->shape};
    kn_broadcast_plan p;
    kn_broadcast_plan_make(&p, 2, shapes, &y->shape);
    mod_args args = {kn_node_int(call->node, "fmod", 0) != 0, a->dtype, a->data, b->data, y->data};
    kn_broadcast_run(&p, mod_row, &args);
    return KILN_OK;
}

/* ---- BitShift ---- */

/* Unsigned integers only; direction "LEFT" or "RIGHT". A shift by the type's width or more gives 0,
 * as numpy's left_shift / right_shift do. */
static kiln_status bitshift_infer(kn_graph *g, const kn_node *node) {
    KN_TRY(require_inputs(g, node, 2));
    const kn_value *a = kn_node_input(g, node, 0), *b = kn_node_input(g, node, 1);
    KN_TRY(require_same_dtype(a, b));
    if (a->dtype != KN_U8 && a->dtype != KN_U16 && a->dtype != KN_U32 && a->dtype != KN_U64)
        return kn_fail(KILN_ERR_UNSUPPORTED, "inputs are %s; BitShift takes u8, u16, u32, u64",
                       kn_dtype_name(a->dtype));
    const char *dir = kn_node_string(node, "direction", "");
    if (strcmp(dir, "LEFT") != 0 && strcmp(dir, "RIGHT") != 0)
        return kn_fail(KILN_ERR_INVALID_ARG, "direction '%s' is not LEFT or RIGHT", dir);
    return infer_broadcast_output(g, node, 2, a->dtype);
}

typedef struct shift_args {
    bool left;
    kn_dtype dtype;
    const void *a, *b;
    void *y;
} shift_args;

static void shift_row(const kn_broadcast_row *row, void *ctx) {
    const shift_args *args = ctx;
    uint64_t width = 8 * kn_dtype_size(args->dtype);
    for (int64_t i = 0; i < row->n; i++) {
        uint64_t u = (uint64_t)kn_int_load(args->a, args->dtype, row->offset[0] + i * row->step[0]);
        uint64_t v = (uint64_t)kn_int_load(args->b, args->dtype, row->offset[1] + i * row->step[1]);
        uint64_t r = v >= width ? 0 : args->left ? u << v : u >> v;
        kn_int_store(args->y, args->dtype, row->at + i, (int64_t)r);
    }
}

static kiln_status bitshift_forward(const kn_op_call *call) {
    const kn_tensor *a = call->in[0], *b = call->in[1], *y = call->out[0];
    const kn_shape *shapes[2] = {&a->shape, &b->shape};
    kn_broadcast_plan p;
    kn_broadcast_plan_make(&p, 2, shapes, &y->shape);
    shift_args args = {strcmp(kn_node_string(call->node, "direction", ""), "LEFT") == 0, a->dtype,
                       a->data, b->data, y->data};
    kn_broadcast_run(&p, shift_row, &args);
    return KILN_OK;
}

/* ---- And, Or, Not ---- */

static kiln_status require_bool(const kn_value *v) {
    if (v->dtype != KN_BOOL)
        return kn_fail(KILN_ERR_UNSUPPORTED, "input '%s' is %s; expected bool", v->name,
                       kn_dtype_name(v->dtype));
    return KILN_OK;
}

static kiln_status logic_infer(kn_graph *g, const kn_node *node) {
    KN_TRY(require_inputs(g, node, 2));
    KN_TRY(require_bool(kn_node_input(g, node, 0)));
    KN_TRY(require_bool(kn_node_input(g, node, 1)));
    return infer_broadcast_output(g, node, 2, KN_BOOL);
}

typedef enum logic_kind { LOGIC_AND, LOGIC_OR, LOGIC_XOR } logic_kind;

typedef struct logic_args {
    logic_kind kind;
    const uint8_t *a, *b;
    uint8_t *y;
} logic_args;

/* Any nonzero byte counts as true, and the result is always 0 or 1. */
static void logic_row(const kn_broadcast_row *row, void *ctx) {
    const logic_args *args = ctx;
    const uint8_t *a = args->a + row->offset[0], *b = args->b + row->offset[1];
    uint8_t *y = args->y + row->at;
    for (int64_t i = 0; i < row->n; i++) {
        bool u = a[i * row->step[0]] != 0, v = b[i * row->step[1]] != 0;
        y[i] = args->kind == LOGIC_AND ? (u && v) : args->kind == LOGIC_OR ? (u || v) : (u != v);
    }
}

static kiln_status logic_forward(const kn_op_call *call, logic_kind kind) {
    const kn_tensor *a = call->in[0], *b = call->in[1], *y = call->out[0];
    const kn_shape *shapes[2] = {&a->shape, &b->shape};
    kn_broadcast_plan p;
    kn_broadcast_plan_make(&p, 2, shapes, &y->shape);
    logic_args args = {kind, a->data, b->data, y->data};
    kn_broadcast_run(&p, logic_row, &args);
    return KILN_OK;
}

static kiln_status and_forward(const kn_op_call *call) { return logic_forward(call, LOGIC_AND); }
static kiln_status or_forward(const kn_op_call *call) { return logic_forward(call, LOGIC_OR); }
static kiln_status xor_forward(const kn_op_call *call) { return logic_forward(call, LOGIC_XOR); }

static kiln_status not_infer(kn_graph *g, const kn_node *node) {
    KN_TRY(require_inputs(g, node, 1));
    KN_TRY(require_bool(kn_node_input(g, node, 0)));
    return infer_broadcast_output(g, node, 1, KN_BOOL);
}

static kiln_status not_forward(const kn_op_call *call) {
    const uint8_t *x = call->in[0]->data;
    uint8_t *y = call->out[0]->data;
    int64_t n = kn_numel(call->in[0]);
    for (int64_t i = 0; i < n; i++)
        y[i] = x[i] == 0;
    return KILN_OK;
}

/* ---- copying a broadcast tensor, by element size ---- */

typedef struct copy_args {
    size_t size; /* bytes per element: 1, 2, 4 or 8 */
    const void *cond; /* Where's condition (operand 0), or NULL for a plain copy of operand 0 */
    const void *x, *z; /* Where: X is operand 1, Y operand 2 */
    void *y;
} copy_args;

#define KN_SELECT_ROW(T)                                                                     \
    do {                                                                                     \
        const T *x = args->x, *z = args->z;                                                  \
        T *y = (T *)args->y + row->at;                                                       \
        if (!c) {                                                                            \
            for (int64_t i = 0; i < row->n; i++)                                             \
                y[i] = x[row->offset[0] + i * row->step[0]];                                 \
        } else {                                                                             \
            for (int64_t i = 0; i < row->n; i++)                                             \
                y[i] = c[row->offset[0] + i * row->step[0]] ? x[row->offset[1] + i * row->step[1]] \
                                                           : z[row->offset[2] + i * row->step[2]]; \
        }                                                                                    \
    } while (0)

/* Without a condition: y = operand 0. With one: y = cond ? X : Y. Elements move as whole words. */
static void select_row(const kn_broadcast_row *row, void *ctx) {
    const copy_args *args = ctx;
    const uint8_t *c = args->cond;
    switch (args->size) {
    case 1: KN_SELECT_ROW(uint8_t); break;
    case 2: KN_SELECT_ROW(uint16_t); break;
    case 4: KN_SELECT_ROW(uint32_t); break;
    default: KN_SELECT_ROW(uint64_t); break;
    }
}

/* y = x broadcast to y's shape. */
static void broadcast_copy(const kn_tensor *x, const kn_tensor *y) {
    const kn_shape *shapes[1] = {&x->shape};
    kn_broadcast_plan p;
    kn_broadcast_plan_make(&p, 1, shapes, &y->shape);
    copy_args args = {kn_dtype_size(x->dtype), NULL, x->data, NULL, y->data};
    kn_broadcast_run(&p, select_row, &args);
}

/* ---- Where ---- */

static kiln_status where_infer(kn_graph *g, const kn_node *node) {
    KN_TRY(require_inputs(g, node, 3));
    const kn_value *c = kn_node_input(g, node, 0);
    if (c->dtype != KN_BOOL)
        return kn_fail(KILN_ERR_UNSUPPORTED, "condition '%s' is %s; expected bool", c->name,
                       kn_dtype_name(c->dtype));
    const kn_value *x = kn_node_input(g, node, 1), *y = kn_node_input(g, node, 2);
    KN_TRY(require_same_dtype(x, y));
    return infer_broadcast_output(g, node, 3, x->dtype);
}

static kiln_status where_forward(const kn_op_call *call) {
    const kn_tensor *c = call->in[0], *x = call->in[1], *z = call->in[2], *y = call->out[0];
    const kn_shape *shapes[3] = {&c->shape, &x->shape, &z->shape};
    kn_broadcast_plan p;
    kn_broadcast_plan_make(&p, 3, shapes, &y->shape);
    copy_args args = {kn_dtype_size(x->dtype), c->data, x->data, z->data, y->data};
    kn_broadcast_run(&p, select_row, &args);
    return KILN_OK;
}

typedef struct masked_grad_args {
    const uint8_t *cond; /* operand 0 */
    bool when;           /* the term is dy where cond == when, 0 elsewhere */
    const float *dy;
    float *term;
} masked_grad_args;

static void masked_grad_row(const kn_broadcast_row *row, void *ctx) {
    const masked_grad_args *args = ctx;
    for (int64_t i = 0; i < row->n; i++) {
        bool c = args->cond[row->offset[0] + i * row->step[0]] != 0;
        args->term[row->at + i] = c == args->when ? args->dy[row->at + i] : 0.0f;
    }
}

static kiln_status where_backward(const kn_op_call *call) {
    const kn_tensor *c = call->in[0], *y = call->out[0], *dy = call->dout[0];
    if (!dy || y->dtype != KN_F32 || (!call->din[1] && !call->din[2]))
        return KILN_OK;
    grad_work w = {0};
    KN_TRY(grad_work_get(call->ctx, &y->shape, call->in + 1, 2, false, &w));
    const kn_shape *shapes[1] = {&c->shape};
    kn_broadcast_plan p;
    kn_broadcast_plan_make(&p, 1, shapes, &y->shape);
    for (int i = 1; i <= 2; i++) {
        if (!call->din[i])
            continue;
        masked_grad_args args = {c->data, i == 1, kn_f32(dy), w.term};
        kn_broadcast_run(&p, masked_grad_row, &args);
        reduce_term_into(&w, &y->shape, call->in[i], call->din[i]);
    }
    return KILN_OK;
}

/* ---- Max, Min, Sum, Mean ---- */

typedef enum variadic_kind {
    VARIADIC_MAX, VARIADIC_MIN, VARIADIC_SUM, VARIADIC_MEAN
} variadic_kind;

static kiln_status variadic_infer(kn_graph *g, const kn_node *node, variadic_kind kind) {
    KN_TRY(require_inputs(g, node, node->n_in));
    const kn_value *first = kn_node_input(g, node, 0);
    for (int i = 1; i < node->n_in; i++)
        KN_TRY(require_same_dtype(first, kn_node_input(g, node, i)));
    bool is_extremum = kind == VARIADIC_MAX || kind == VARIADIC_MIN;
    bool supported = is_extremum ? is_numeric(first->dtype) || first->dtype == KN_F16
                                 : first->dtype == KN_F32 || first->dtype == KN_F64;
    if (!supported)
        return kn_fail(KILN_ERR_UNSUPPORTED, "inputs are %s; supported: %s",
                       kn_dtype_name(first->dtype),
                       is_extremum ? "f32, f64, f16 and the integers" : "f32, f64");
    return infer_broadcast_output(g, node, node->n_in, first->dtype);
}

static kiln_status max_infer(kn_graph *g, const kn_node *node) {
    return variadic_infer(g, node, VARIADIC_MAX);
}
static kiln_status min_infer(kn_graph *g, const kn_node *node) {
    return variadic_infer(g, node, VARIADIC_MIN);
}
static kiln_status sum_infer(kn_graph *g, const kn_node *node) {
    return variadic_infer(g, node, VARIADIC_SUM);
}
static kiln_status mean_infer(kn_graph *g, const kn_node *node) {
    return variadic_infer(g, node, VARIADIC_MEAN);
}

typedef struct fold_args {
    variadic_kind kind;
    kn_dtype dtype;
    const void *x; /* operand 0 */
    void *y;
} fold_args;

/* The order of an f16 value among the non-NaN ones, from its bits: IEEE half is sign-magnitude, so
 * the magnitude bits order the positives and their negation the negatives (-0 and +0 tie). */
static inline int f16_rank(uint16_t h) {
    return (h & 0x8000) ? -(int)(h & 0x7fff) : (int)(h & 0x7fff);
}
static inline bool f16_is_nan(uint16_t h) { return (h & 0x7fff) > 0x7c00; }

/* Whether Max (or Min) replaces the running f16 result u with v, by the rule of fold_row below. */
static inline bool f16_takes(variadic_kind kind, uint16_t v, uint16_t u) {
    if (f16_is_nan(v))
        return true;
    if (f16_is_nan(u))
        return false;
    return kind == VARIADIC_MAX ? f16_rank(v) > f16_rank(u) : f16_rank(v) < f16_rank(u);
}

/* y = y OP x in place. A later input replaces the running max only when strictly greater (or NaN),
 * which keeps the first maximal input, the one the gradient goes to. */
static void fold_row(const kn_broadcast_row *row, void *ctx) {
    const fold_args *args = ctx;
    for (int64_t i = 0; i < row->n; i++) {
        int64_t ix = row->offset[0] + i * row->step[0], iy = row->at + i;
        if (args->dtype == KN_F32) {
            float v = ((const float *)args->x)[ix], *u = (float *)args->y + iy;
            switch (args->kind) {
            case VARIADIC_MAX: *u = (v > *u || isnan(v)) ? v : *u; break;
            case VARIADIC_MIN: *u = (v < *u || isnan(v)) ? v : *u; break;
            default: *u += v; break;
            }
        } else if (args->dtype == KN_F64) {
            double v = f64_at(args->x, ix), *u = (double *)args->y + iy;
            switch (args->kind) {
            case VARIADIC_MAX: *u = (v > *u || isnan(v)) ? v : *u; break;
            case VARIADIC_MIN: *u = (v < *u || isnan(v)) ? v : *u; break;
            default: *u += v; break;
            }
        } else if (args->dtype == KN_F16) {
            uint16_t v = ((const uint16_t *)args->x)[ix], *u = (uint16_t *)args->y + iy;
            if (f16_takes(args->kind, v, *u))
                *u = v;
        } else {
            int64_t v = kn_int_load(args->x, args->dtype, ix);
            int64_t u = kn_int_load(args->y, args->dtype, iy);
            bool take = args->kind == VARIADIC_MAX ? kn_int_less(args->dtype, u, v)
                                                   : kn_int_less(args->dtype, v, u);
            if (take)
                kn_int_store(args->y, args->dtype, iy, v);
        }
    }
}

static kiln_status variadic_forward(const kn_op_call *call, variadic_kind kind) {
    const kn_tensor *y = call->out[0];
    int n = call->node->n_in;
    broadcast_copy(call->in[0], y);
    for (int k = 1; k < n; k++) {
        const kn_shape *shapes[1] = {&call->in[k]->shape};
        kn_broadcast_plan p;
        kn_broadcast_plan_make(&p, 1, shapes, &y->shape);
        fold_args args = {kind, y->dtype, call->in[k]->data, y->data};
        kn_broadcast_run(&p, fold_row, &args);
    }
    if (kind == VARIADIC_MEAN && y->dtype == KN_F64) {
        double *out = y->data;
        for (int64_t i = 0; i < kn_numel(y); i++)
            out[i] /= n;
    } else if (kind == VARIADIC_MEAN) {
        float *out = kn_f32(y);
        int64_t n_y = kn_numel(y);
        for (int64_t i = 0; i < n_y; i++)
            out[i] /= (float)n;
    }
    return KILN_OK;
}

typedef struct claim_args {
    const float *x; /* operand 0 */
    const float *y, *dy;
    uint8_t *claimed; /* elements whose gradient an earlier input took */
    float *term;
} claim_args;

/* The term for one input of Max / Min: dy where it equals the result and no earlier input did. */
static void claim_row(const kn_broadcast_row *row, void *ctx) {
    const claim_args *args = ctx;
    for (int64_t i = 0; i < row->n; i++) {
        int64_t at = row->at + i;
        float x = args->x[row->offset[0] + i * row->step[0]];
        bool takes = !args->claimed[at] && x == args->y[at];
        args->term[at] = takes ? args->dy[at] : 0.0f;
        args->claimed[at] |= takes;
    }
}

static kiln_status variadic_backward(const kn_op_call *call, variadic_kind kind) {
    const kn_tensor *y = call->out[0], *dy = call->dout[0];
    int n = call->node->n_in;
    bool wanted = false;
    for (int k = 0; k < n; k++)
        wanted |= call->din[k] != NULL;
    if (!dy || !wanted || y->dtype != KN_F32)
        return KILN_OK;
    bool is_extremum = kind == VARIADIC_MAX || kind == VARIADIC_MIN;
    grad_work w = {0};
    KN_TRY(grad_work_get(call->ctx, &y->shape, call->in, n, is_extremum, &w));
    if (!is_extremum) {
        float scale = kind == VARIADIC_MEAN ? 1.0f / (float)n : 1.0f;
        for (int k = 0; k < n; k++)
            if (call->din[k])
                kn_reduce_sum_add(kn_f32(dy), &y->shape,
                                  kn_broadcast_axes(&call->in[k]->shape, &y->shape), scale,
                                  kn_f32(call->din[k]), w.reduce);
        return KILN_OK;
    }
    memset(w.mask, 0, (size_t)kn_numel(y));
    for (int k = 0; k < n; k++) { /* every input claims in order, wanted or not */
        const kn_shape *shapes[1] = {&call->in[k]->shape};
        kn_broadcast_plan p;
        kn_broadcast_plan_make(&p, 1, shapes, &y->shape);
        claim_args args = {kn_f32(call->in[k]), kn_f32(y), kn_f32(dy), w.mask, w.term};
        kn_broadcast_run(&p, claim_row, &args);
        if (call->din[k])
            reduce_term_into(&w, &y->shape, call->in[k], call->din[k]);
    }
    return KILN_OK;
}

static kiln_status max_forward(const kn_op_call *call) {
    return variadic_forward(call, VARIADIC_MAX);
}
static kiln_status max_backward(const kn_op_call *call) {
    return variadic_backward(call, VARIADIC_MAX);
}
static kiln_status min_forward(const kn_op_call *call) {
    return variadic_forward(call, VARIADIC_MIN);
}
static kiln_status min_backward(const kn_op_call *call) {
    return variadic_backward(call, VARIADIC_MIN);
}
static kiln_status sum_forward(const kn_op_call *call) {
    return variadic_forward(call, VARIADIC_SUM);
}
static kiln_status sum_backward(const kn_op_call *call) {
    return variadic_backward(call, VARIADIC_SUM);
}
static kiln_status mean_forward(const kn_op_call *call) {
    return variadic_forward(call, VARIADIC_MEAN);
}
static kiln_status mean_backward(const kn_op_call *call) {
    return variadic_backward(call, VARIADIC_MEAN);
}

/* One compare or add per output element for each input after the first; Mean also divides. */
static int64_t variadic_flops(const kn_graph *g, const kn_node *node) {
    return kn_count_mul(node->n_in - 1, output_numel(g, node));
}
static int64_t mean_flops(const kn_graph *g, const kn_node *node) {
    return kn_count_mul(node->n_in, output_numel(g, node));
}

/* ---- the op table entries ---- */

const kn_op kn_op_add = {.name = "Add", .per_image = true, .min_inputs = 2, .max_inputs = 2, .infer = arith_infer,
                         .forward = add_forward, .backward = add_backward, .backward_stores = true,
                         .flops = elementwise_flops};
const kn_op kn_op_sub = {.name = "Sub", .per_image = true, .min_inputs = 2, .max_inputs = 2, .infer = arith_infer,
                         .forward = sub_forward, .backward = sub_backward, .backward_stores = true,
                         .flops = elementwise_flops};
const kn_op kn_op_mul = {.name = "Mul", .per_image = true, .min_inputs = 2, .max_inputs = 2, .infer = arith_infer,
                         .forward = mul_forward, .backward = mul_backward, .backward_stores = true,
                         .flops = elementwise_flops};
const kn_op kn_op_div = {.name = "Div", .per_image = true, .min_inputs = 2, .max_inputs = 2, .infer = arith_infer,
                         .forward = div_forward, .backward = div_backward, .backward_stores = true,
                         .flops = elementwise_flops};
const kn_op kn_op_pow = {.name = "Pow", .min_inputs = 2, .max_inputs = 2, .infer = pow_infer,
                         .forward = pow_forward, .backward = pow_backward,
                         .flops = elementwise_flops};
const kn_op kn_op_equal = {.name = "Equal", .min_inputs = 2, .max_inputs = 2, .infer = equal_infer,
                           .forward = equal_forward, .flops = elementwise_flops};
const kn_op kn_op_less = {.name = "Less", .min_inputs = 2, .max_inputs = 2, .infer = less_infer,
                          .forward = less_forward, .flops = elementwise_flops};
const kn_op kn_op_greater = {.name = "Greater", .min_inputs = 2, .max_inputs = 2,
                             .infer = greater_infer, .forward = greater_forward,
                             .flops = elementwise_flops};
const kn_op kn_op_lessorequal = {.name = "LessOrEqual", .min_inputs = 2, .max_inputs = 2,
                                 .infer = less_or_equal_infer, .forward = less_or_equal_forward,
                                 .flops = elementwise_flops};
const kn_op kn_op_greaterorequal = {.name = "GreaterOrEqual", .min_inputs = 2, .max_inputs = 2,
                                    .infer = greater_or_equal_infer,
                                    .forward = greater_or_equal_forward, .flops = elementwise_flops};
const kn_op kn_op_mod = {.name = "Mod", .min_inputs = 2, .max_inputs = 2, .infer = mod_infer,
                         .forward = mod_forward, .flops = elementwise_flops};
const kn_op kn_op_bitshift = {.name = "BitShift", .min_inputs = 2, .max_inputs = 2,
                              .infer = bitshift_infer, .forward = bitshift_forward,
                              .flops = elementwise_flops};
const kn_op kn_op_xor = {.name = "Xor", .min_inputs = 2, .max_inputs = 2, .infer = logic_infer,
                         .forward = xor_forward, .flops = elementwise_flops};
const kn_op kn_op_and = {.name = "And", .min_inputs = 2, .max_inputs = 2, .infer = logic_infer,
                         .forward = and_forward, .flops = elementwise_flops};
const kn_op kn_op_or = {.name = "Or", .min_inputs = 2, .max_inputs = 2, .infer = logic_infer,
                        .forward = or_forward, .flops = elementwise_flops};
const kn_op kn_op_not = {.name = "Not", .min_inputs = 1, .max_inputs = 1, .infer = not_infer,
                         .forward = not_forward, .flops = elementwise_flops};
const kn_op kn_op_where = {.name = "Where", .min_inputs = 3, .max_inputs = 3, .infer = where_infer,
                           .forward = where_forward, .backward = where_backward,
                           .flops = elementwise_flops};
const kn_op kn_op_max = {.name = "Max", .min_inputs = 1, .max_inputs = KN_VARIADIC_MAX_INPUTS,
                         .infer = max_infer, .forward = max_forward, .backward = max_backward,
                         .flops = variadic_flops};
const kn_op kn_op_min = {.name = "Min", .min_inputs = 1, .max_inputs = KN_VARIADIC_MAX_INPUTS,
                         .infer = min_infer, .forward = min_forward, .backward = min_backward,
                         .flops = variadic_flops};
const kn_op kn_op_sum = {.name = "Sum", .min_inputs = 1, .max_inputs = KN_VARIADIC_MAX_INPUTS,
                         .infer = sum_infer, .forward = sum_forward, .backward = sum_backward,
                         .flops = variadic_flops};
const kn_op kn_op_mean = {.name = "Mean", .min_inputs = 1, .max_inputs = KN_VARIADIC_MAX_INPUTS,
                          .infer = mean_infer, .forward = mean_forward, .backward = mean_backward,
                          .flops = mean_flops};
