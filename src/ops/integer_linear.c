/* ONNX's integer linear ops, computed exactly in 32-bit integers as onnxruntime does:
 *
 *   MatMulInteger(A, B, a_zero_point?, b_zero_point?)  -> (A - a_zp) @ (B - b_zp), i32
 *   ConvInteger(X, W, x_zero_point?, w_zero_point?)    -> conv(X - x_zp, W - w_zp), i32
 *   QLinearMatMul(a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp)
 *   QLinearConv(x, x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp, B?)
 *       -> the same i32 sums (plus B, i32, for QLinearConv) requantized: y = saturate(round(sum *
 *          a_scale * b_scale / y_scale) + y_zp), round half to even, as onnx's reference does (the
 *          multiplier in f32, the product in f64)
 *
 * The data inputs are u8 or i8 (each zero point of its data's dtype, 0 when absent). Zero points and
 * scales are per tensor (one element) or: A's per row (M), B's per column (N), W's per output channel
 * (M). MatMul operands have rank 2 or more; their leading (batch) dims broadcast as numpy's. Conv's
 * attributes are Conv's (auto_pad, dilations, group, kernel_shape, pads, strides), any spatial rank.
 * Plain loops: these ops run imported integer models, the optimizer's packed forms (qlinear.c) run
 * kiln's own. No gradient.
 */
#include <math.h>
#include <string.h>

#include "core/status.h"
#include "ops/broadcast.h"
#include "ops/conv_gemm.h"
#include "ops/elements.h"
#include "ops/movement.h"
#include "ops/window.h"

/* ---- operands ---- */

static bool is_int8(kn_dtype dtype) { return dtype == KN_U8 || dtype == KN_I8; }

/* A per-tensor (1 element) or per-index (n elements) parameter: its element for index i. */
static kiln_status check_param(const kn_shape *p, int64_t n, const char *what, const char *per) {
    int64_t count = kn_shape_numel(p);
    if (p->ndim > 1 || (count != 1 && count != n))
        return kn_fail(KILN_ERR_SHAPE, "%s must hold 1 element or one per %s (%lld), got rank %d with %lld",
                       what, per, (long long)n, p->ndim, (long long)count);
    return KILN_OK;
}

static int64_t zero_point_at(const kn_tensor *zp, int64_t i) {
    if (!zp)
        return 0;
    return kn_int_load(zp->data, zp->dtype, kn_shape_numel(&zp->shape) == 1 ? 0 : i);
}

static double scale_at(const kn_tensor *s, int64_t i) {
    return ((const float *)s->data)[kn_shape_numel(&s->shape) == 1 ? 0 : i];
}

/* A zero point must have its data's dtype. */
static kiln_status check_zero_point(const kn_shape *zp_shape, kn_dtype zp_dtype, kn_dtype data, int64_t n,
                                    const char *what, const char *per) {
    if (zp_dtype != data)
        return kn_fail(KILN_ERR_INVALID_ARG, "%s is %s; its data is %s", what, kn_dtype_name(zp_dtype),
                       kn_dtype_name(data));
    return check_param(zp_shape, n, what, per);
}

/* y = saturate(round_half_even(sum * multiplier) + zp) into element i of a u8 or i8 tensor. */
static void requantize_store(kn_tensor *y, int64_t i, int64_t sum, float multiplier, int64_t zp) {
    double v = nearbyint((double)sum * (double)multiplier) + (double)zp;
    double lo = y->dtype == KN_U8 ? 0 : -128, hi = y->dtype == KN_U8 ? 255 : 127;
    v = v < lo ? lo : v > hi ? hi : v;
    kn_int_store(y->data, y->dtype, i, (int64_t)v);
}

/* ---- matrix products ---- */

typedef struct int_matmul {
    int64_t M, K, N, n_batch;
    kn_shape out, batch;        /* Y's shape; its batch dims */
    kn_shape a_batch, b_batch;  /* A's and B's batch dims */
} int_matmul;

static kiln_status int_matmul_of(const kn_shape *a, const kn_shape *b, int_matmul *m) {
    char sa[96], sb[96];
    if (a->ndim < 2 || b->ndim < 2 || a->d[a->ndim - 1] != b->d[b->ndim - 2])
        return kn_fail(KILN_ERR_SHAPE, "A %s and B %s must be (..., M, K) and (..., K, N)",
                       kn_shape_str(a, sa, sizeof sa), kn_shape_str(b, sb, sizeof sb));
    m->M = a->d[a->ndim - 2];
    m->K = a->d[a->ndim - 1];
    m->N = b->d[b->ndim - 1];
    m->a_batch = kn_shape_of(a->ndim - 2, a->d);
    m->b_batch = kn_shape_of(b->ndim - 2, b->d);
    KN_TRY(kn_broadcast_shape(&m->a_batch, &m->b_batch, &m->batch));
    m->n_batch = kn_shape_numel(&m->batch);
    m->out = m->batch;
    m->out.d[m->out.ndim++] = m->M;
    m->out.d[m->out.ndim++] = m->N;
    return KILN_OK;
}

/* The matrix of an input with batch dims `own` that output matrix `index` (of batch dims `batch`) reads. */
static int64_t matrix_of(const kn_shape *own, const kn_shape *batch, int64_t index) {
    int64_t at = 0, stride = 1;
    for (int i = batch->ndim - 1, k = own->ndim - 1; i >= 0; i--, k--) {
        int64_t coord = index % batch->d[i];
        index /= batch->d[i];
        if (k < 0)
            continue;
        at += (own->d[k] == 1 ? 0 : coord) * stride;
        stride *= own->d[k];
    }
    return at;
}

/* Output element (matrix, r, c) as an exact sum, for every element in turn: emit(i, sum, r, c, ctx). */
typedef void (*int_sum_fn)(void *ctx, int64_t i, int64_t sum, int64_t row, int64_t col);

static void int_matmul_run(const int_matmul *m, const kn_tensor *a, const kn_tensor *a_zp, const kn_tensor *b,
                           const kn_tensor *b_zp, int_sum_fn emit, void *ctx) {
    for (int64_t t = 0; t < m->n_batch; t++) {
        int64_t a0 = matrix_of(&m->a_batch, &m->batch, t) * m->M * m->K;
        int64_t b0 = matrix_of(&m->b_batch, &m->batch, t) * m->K * m->N;
        for (int64_t r = 0; r < m->M; r++) {
            int64_t azp = zero_point_at(a_zp, r);
            for (int64_t c = 0; c < m->N; c++) {
                int64_t bzp = zero_point_at(b_zp, c), sum = 0;
                for (int64_t k = 0; k < m->K; k++)
                    sum += (kn_int_load(a->data, a->dtype, a0 + r * m->K + k) - azp) *
                           (kn_int_load(b->data, b->dtype, b0 + k * m->N + c) - bzp);
                emit(ctx, (t * m->M + r) * m->N + c, sum, r, c);
            }
        }
    }
}

static void store_i32(void *ctx, int64_t i, int64_t sum, int64_t row, int64_t col) {
    (void)row;
    (void)col;
    ((int32_t *)((kn_tensor *)ctx)->data)[i] = (int32_t)sum;
}

static kiln_status matmulinteger_check(kn_tensor *const *in, int n, int_matmul *m) {
    const kn_tensor *a = kn_input_at(in, n, 0), *b = kn_input_at(in, n, 1);
    const kn_tensor *azp = kn_input_at(in, n, 2), *bzp = kn_input_at(in, n, 3);
    if (!a || !b)
        return kn_fail(KILN_ERR_INVALID_ARG, "inputs A and B are required");
    if (!is_int8(a->dtype) || !is_int8(b->dtype))
        return kn_fail(KILN_ERR_UNSUPPORTED, "A and B must be u8 or i8, got %s and %s", kn_dtype_name(a->dtype),
                       kn_dtype_name(b->dtype));
    KN_TRY(int_matmul_of(&a->shape, &b->shape, m));
    if (azp)
        KN_TRY(check_zero_point(&azp->shape, azp->dtype, a->dtype, m->M, "a_zero_point", "row of A"));
    if (bzp)
        KN_TRY(check_zero_point(&bzp->shape, bzp->dtype, b->dtype, m->N, "b_zero_point", "column of B"));
    return KILN_OK;
}

static kiln_status matmulinteger_infer(kn_graph *g, const kn_node *node) {
    KN_TRY(kn_check_outputs(node, 1));
    kn_infer_inputs inputs;
    KN_TRY(kn_infer_inputs_get(g, node, &inputs));
    int_matmul m;
    KN_TRY(matmulinteger_check(inputs.in, inputs.n, &m));
    kn_set_output(g, node, 0, &m.out, KN_I32);
    return KILN_OK;
}

static kiln_status matmulinteger_forward(const kn_op_call *call) {
    int n = call->node->n_in;
    int_matmul m;
    KN_TRY(matmulinteger_check(call->in, n, &m));
    int_matmul_run(&m, call->in[0], n > 2 ? call->in[2] : NULL, call->in[1], n > 3 ? call->in[3] : NULL, store_i32,
                   call->out[0]);
    return KILN_OK;
}

const kn_op kn_op_matmulinteger = {.name = "MatMulInteger", .min_inputs = 2, .max_inputs = 4,
                                   .infer = matmulinteger_infer, .forward = matmulinteger_forward};

/* QLinearMatMul: inputs a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp. */
static kiln_status qlinearmatmul_check(kn_tensor *const *in, int_matmul *m) {
    const kn_tensor *a = in[0], *as = in[1], *azp = in[2], *b = in[3], *bs = in[4], *bzp = in[5], *ys = in[6],
                    *yzp = in[7];
    for (int i = 0; i < 8; i++)
        if (!in[i])
            return kn_fail(KILN_ERR_INVALID_ARG, "all 8 inputs are required (input %d is missing)", i);
    if (!is_int8(a->dtype) || !is_int8(b->dtype) || !is_int8(yzp->dtype))
        return kn_fail(KILN_ERR_UNSUPPORTED, "a, b and y_zero_point must be u8 or i8");
    if (as->dtype != KN_F32 || bs->dtype != KN_F32 || ys->dtype != KN_F32)
        return kn_fail(KILN_ERR_INVALID_ARG, "the scales must be f32");
    KN_TRY(int_matmul_of(&a->shape, &b->shape, m));
    KN_TRY(check_param(&as->shape, m->M, "a_scale", "row of a"));
    KN_TRY(check_zero_point(&azp->shape, azp->dtype, a->dtype, m->M, "a_zero_point", "row of a"));
    KN_TRY(check_param(&bs->shape, m->N, "b_scale", "column of b"));
    KN_TRY(check_zero_point(&bzp->shape, bzp->dtype, b->dtype, m->N, "b_zero_point", "column of b"));
    KN_TRY(check_param(&ys->shape, 1, "y_scale", "tensor"));
    return check_param(&yzp->shape, 1, "y_zero_point", "tensor");
}

static kiln_status qlinearmatmul_infer(kn_graph *g, const kn_node *node) {
    KN_TRY(kn_check_outputs(node, 1));
    kn_infer_inputs inputs;
    KN_TRY(kn_infer_inputs_get(g, node, &inputs));
    if (inputs.n != 8)
        return kn_fail(KILN_ERR_INVALID_ARG, "8 inputs expected, got %d", inputs.n);
    int_matmul m;
    KN_TRY(qlinearmatmul_check(inputs.in, &m));
    kn_set_output(g, node, 0, &m.out, inputs.in[7]->dtype);
    return KILN_OK;
}

typedef struct requantize_ctx {
    kn_tensor *y;
    const kn_tensor *a_scale, *b_scale, *y_scale, *y_zp;
} requantize_ctx;

static void store_requantized(void *ctx, int64_t i, int64_t sum, int64_t row, int64_t col) {
    const requantize_ctx *q = ctx;
    float multiplier = (float)scale_at(q->a_scale, row) * (float)scale_at(q->b_scale, col) /
                       (float)scale_at(q->y_scale, 0);
    requantize_store(q->y, i, sum, multiplier, zero_point_at(q->y_zp, 0));
}

static kiln_status qlinearmatmul_forward(const kn_op_call *call) {
    int_matmul m;
    KN_TRY(qlinearmatmul_check(call->in, &m));
    requantize_ctx q = {call->out[0], call->in[1], call->in[4], call->in[6], call->in[7]};
    int_matmul_run(&m, call->in[0], call->in[2], call->in[3], call->in[5], store_requantized, &q);
    return KILN_OK;
}

const kn_op kn_op_qlinearmatmul = {.name = "QLinearMatMul", .min_inputs = 8, .max_inputs = 8,
                                   .infer = qlinearmatmul_infer, .forward = qlinearmatmul_forward};

/* ---- convolutions ---- */

typedef struct int_conv {
    int64_t N, C, M, group;
    kn_window_nd win;
    kn_shape out;
} int_conv;

static kiln_status int_conv_of(const kn_node *node, const kn_shape *x, const kn_shape *w, int_conv *c) {
    KN_TRY(kn_conv_check_operands(node, x, w, "M, C/group", &c->group));
    c->N = x->d[0];
    c->C = x->d[1];
    c->M = w->d[0];
    if (c->M % c->group || w->d[1] != c->C / c->group)
        return kn_fail(KILN_ERR_SHAPE, "W must be (M, C/group, kernel...) with M a multiple of group %lld",
                       (long long)c->group);
    c->win.rank = x->ndim - 2;
    KN_TRY(kn_window_resolve_nd(node, c->win.rank, &x->d[2], &w->d[2], false, c->win.axes));
    kn_window_nd_sizes(&c->win);
    c->out = kn_shape_of(2, (int64_t[]){c->N, c->M});
    for (int i = 0; i < c->win.rank; i++)
        c->out.d[c->out.ndim++] = c->win.axes[i].out;
    return KILN_OK;
}

/* Every output (n, m, o) as an exact sum over its window, plus bias[m] when given. */
static void int_conv_run(const int_conv *c, const kn_tensor *x, const kn_tensor *x_zp, const kn_tensor *w,
                         const kn_tensor *w_zp, const int32_t *bias, int_sum_fn emit, void *ctx) {
    int64_t c_group = c->C / c->group, m_group = c->M / c->group, xzp = zero_point_at(x_zp, 0);
    for (int64_t n = 0; n < c->N; n++)
        for (int64_t m = 0; m < c->M; m++) {
            int64_t first_c = m / m_group * c_group, wzp = zero_point_at(w_zp, m);
            for (int64_t o = 0; o < c->win.out_size; o++) {
                int64_t sum = bias ? bias[m] : 0;
                for (int64_t k = 0; k < c_group; k++) {
                    int64_t x0 = (n * c->C + first_c + k) * c->win.in_size, w0 = (m * c_group + k) * c->win.taps;
                    kn_window_walk walk;
                    for (kn_window_walk_begin(&walk, &c->win, o); !walk.done; kn_window_walk_next(&walk))
                        sum += (kn_int_load(x->data, x->dtype, x0 + walk.at) - xzp) *
                               (kn_int_load(w->data, w->dtype, w0 + walk.tap) - wzp);
                }
                emit(ctx, (n * c->M + m) * c->win.out_size + o, sum, m, m);
            }
        }
}

static kiln_status convinteger_check(const kn_node *node, kn_tensor *const *in, int n, int_conv *c) {
    const kn_tensor *x = kn_input_at(in, n, 0), *w = kn_input_at(in, n, 1), *xzp = kn_input_at(in, n, 2),
                    *wzp = kn_input_at(in, n, 3);
    if (!x || !w)
        return kn_fail(KILN_ERR_INVALID_ARG, "inputs X and W are required");
    if (!is_int8(x->dtype) || !is_int8(w->dtype))
        return kn_fail(KILN_ERR_UNSUPPORTED, "X and W must be u8 or i8, got %s and %s", kn_dtype_name(x->dtype),
                       kn_dtype_name(w->dtype));
    KN_TRY(int_conv_of(node, &x->shape, &w->shape, c));
    if (xzp)
        KN_TRY(check_zero_point(&xzp->shape, xzp->dtype, x->dtype, 1, "x_zero_point", "tensor"));
    if (wzp)
        KN_TRY(check_zero_point(&wzp->shape, wzp->dtype, w->dtype, c->M, "w_zero_point", "output channel"));
    return KILN_OK;
}

static kiln_status convinteger_infer(kn_graph *g, const kn_node *node) {
    KN_TRY(kn_check_outputs(node, 1));
    kn_infer_inputs inputs;
    KN_TRY(kn_infer_inputs_get(g, node, &inputs));
    int_conv c;
    KN_TRY(convinteger_check(node, inputs.in, inputs.n, &c));
    kn_set_output(g, node, 0, &c.out, KN_I32);
    return KILN_OK;
}

static kiln_status convinteger_forward(const kn_op_call *call) {
    int n = call->node->n_in;
    int_conv c;
    KN_TRY(convinteger_check(call->node, call->in, n, &c));
    int_conv_run(&c, call->in[0], n > 2 ? call->in[2] : NULL, call->in[1], n > 3 ? call->in[3] : NULL, NULL,
                 store_i32, call->out[0]);
    return KILN_OK;
}

const kn_op kn_op_convinteger = {.name = "ConvInteger", .min_inputs = 2, .max_inputs = 4,
                                 .infer = convinteger_infer, .forward = convinteger_forward};

/* QLinearConv: inputs x, x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp, B?. */
static kiln_status qlinearconv_check(const kn_node *node, kn_tensor *const *in, int n, int_conv *c) {
    for (int i = 0; i < 8; i++)
        if (i >= n || !in[i])
            return kn_fail(KILN_ERR_INVALID_ARG, "inputs 0 to 7 are required (input %d is missing)", i);
    const kn_tensor *x = in[0], *xs = in[1], *xzp = in[2], *w = in[3], *ws = in[4], *wzp = in[5], *ys = in[6],
                    *yzp = in[7], *b = kn_input_at(in, n, 8);
    if (!is_int8(x->dtype) || !is_int8(w->dtype) || !is_int8(yzp->dtype))
        return kn_fail(KILN_ERR_UNSUPPORTED, "x, w and y_zero_point must be u8 or i8");
    if (xs->dtype != KN_F32 || ws->dtype != KN_F32 || ys->dtype != KN_F32)
        return kn_fail(KILN_ERR_INVALID_ARG, "the scales must be f32");
    KN_TRY(int_conv_of(node, &x->shape, &w->shape, c));
    KN_TRY(check_param(&xs->shape, 1, "x_scale", "tensor"));
    KN_TRY(check_zero_point(&xzp->shape, xzp->dtype, x->dtype, 1, "x_zero_point", "tensor"));
    KN_TRY(check_param(&ws->shape, c->M, "w_scale", "output channel"));
    KN_TRY(check_zero_point(&wzp->shape, wzp->dtype, w->dtype, c->M, "w_zero_point", "output channel"));
    KN_TRY(check_param(&ys->shape, 1, "y_scale", "tensor"));
    KN_TRY(check_param(&yzp->shape, 1, "y_zero_point", "tensor"));
    if (b && (b->dtype != KN_I32 || b->shape.ndim != 1 || b->shape.d[0] != c->M))
        return kn_fail(KILN_ERR_SHAPE, "B must be i32 (M), one bias per output channel");
    return KILN_OK;
}

static kiln_status qlinearconv_infer(kn_graph *g, const kn_node *node) {
    KN_TRY(kn_check_outputs(node, 1));
    kn_infer_inputs inputs;
    KN_TRY(kn_infer_inputs_get(g, node, &inputs));
    int_conv c;
    KN_TRY(qlinearconv_check(node, inputs.in, inputs.n, &c));
    kn_set_output(g, node, 0, &c.out, inputs.in[7]->dtype);
    return KILN_OK;
}

static kiln_status qlinearconv_forward(const kn_op_call *call) {
    int n = call->node->n_in;
    int_conv c;
    KN_TRY(qlinearconv_check(call->node, call->in, n, &c));
    const kn_tensor *b = kn_input_at(call->in, n, 8);
    /* x_scale per tensor stands in a_scale's place, w_scale per output channel in b_scale's. */
    requantize_ctx q = {call->out[0], call->in[1], call->in[4], call->in[6], call->in[7]};
    int_conv_run(&c, call->in[0], call->in[2], call->in[3], call->in[5], b ? b->data : NULL, store_requantized, &q);
    return KILN_OK;
}

const kn_op kn_op_qlinearconv = {.name = "QLinearConv", .min_inputs = 8, .max_inputs = 9,
                                 .infer = qlinearconv_infer, .forward = qlinearconv_forward};
