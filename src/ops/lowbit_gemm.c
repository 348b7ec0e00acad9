/* LowbitGemm (kiln's, inference only): Y (..., N) = act(A (..., K) W + bias), with the weight W (K, N)
 * kept as the packed 4-bit or 2-bit affine levels it is stored as (format/storage.h), turned into
 * floats inside the product (kernels/lowbit.h). The inference optimizer (src/runtime/optimize.c)
 * writes it in place of a Gemm or MatMul whose weight is such a storage, so no f32 copy of the weight is
 * ever made; a fused bias and activation (ops/fused_act.h) carry over.
 *
 * Inputs: A f32 (..., K); codes u8 (bytes): rows * cols codes of the stored matrix S, packed; scale f32
 * (groups); zero_point i8 (groups), optional; bias f32 (N), optional. Attributes: kn_bits (4 or 2),
 * kn_rows and kn_cols (S's shape), kn_transposed (1: W = S^T, S = (N, K); 0: W = S), kn_axis (-1, 0 or 1:
 * a scale per row or per column of S), kn_block (> 0 with axis -1: a scale per block of that many
 * along each row of S) and kn_slivers (1: the codes are in kernels/lowbit.h's sliver layout, which the
 * optimizer writes where it is faster; then S = W, 4 bits, axis -1 or 1, and kn_block > 0 means a scale
 * per block of that many rows of W in each column; kn_from_rows 1: W was a Gemm's S^T, whose f32
 * product takes dot products for few rows, and so does this one). A model file can name this op too,
 * so shape inference checks every count against the attributes before forward trusts them.
 */
#include "kernels/lowbit.h"
#include "ops/fused_act.h"
#include "ops/op.h"

enum { LOWBIT_A, LOWBIT_CODES, LOWBIT_SCALE, LOWBIT_ZERO_POINT, LOWBIT_BIAS };

/* The weight as the node describes it, its pointers left NULL. */
static kiln_status lowbit_matrix_of(const kn_node *node, kn_lowbit_matrix *w, int64_t *groups) {
    *w = (kn_lowbit_matrix){.bits = (int)kn_node_int(node, "kn_bits", 0),
                            .rows = kn_node_int(node, "kn_rows", 0),
                            .cols = kn_node_int(node, "kn_cols", 0),
                            .transposed = kn_node_int(node, "kn_transposed", 0) != 0,
                            .axis = (int)kn_node_int(node, "kn_axis", -1),
                            .block = kn_node_int(node, "kn_block", 0),
                            .slivers = kn_node_int(node, "kn_slivers", 0) != 0,
                            .from_rows = kn_node_int(node, "kn_from_rows", 0) != 0};
    if (w->bits != 4 && w->bits != 2)
        return kn_fail(KILN_ERR_INVALID_ARG, "kn_bits is %d; 4 or 2 are supported", w->bits);
    if (w->rows < 1 || w->cols < 1 || w->rows > INT64_MAX / 8 / w->cols)
        return kn_fail(KILN_ERR_INVALID_ARG, "the stored matrix is %lld x %lld", (long long)w->rows,
                       (long long)w->cols);
    if (w->axis < -1 || w->axis > 1 || w->block < 0 || (w->block > 0 && w->axis != -1))
        return kn_fail(KILN_ERR_INVALID_ARG, "kn_axis %d with kn_block %lld: per-block scales need axis -1",
                       w->axis, (long long)w->block);
    if (w->slivers && (w->bits != 4 || w->transposed || w->axis == 0))
        return kn_fail(KILN_ERR_INVALID_ARG, "the sliver layout holds 4-bit codes of W = S with a scale per column, "
                       "per block down the columns or per tensor");
    int64_t along = w->slivers ? w->rows : w->cols, across = w->slivers ? w->cols : w->rows; /* blocks' */
    *groups = w->axis == 0   ? w->rows
              : w->axis == 1 ? w->cols
              : w->block > 0 ? across * ((along + w->block - 1) / w->block)
                             : 1;
    return KILN_OK;
}

static bool is_constant_1d(const kn_value *v, kn_dtype dtype, int64_t count) {
    return v->data && v->dtype == dtype && v->shape.ndim == 1 && v->shape.d[0] == count;
}

static kiln_status lowbit_infer(kn_graph *g, const kn_node *node) {
    if (node->n_out != 1)
        return kn_fail(KILN_ERR_INVALID_ARG, "LowbitGemm has one output, got %d", node->n_out);
    kn_lowbit_matrix w;
    int64_t groups;
    KN_TRY(lowbit_matrix_of(node, &w, &groups));
    int64_t K = w.transposed ? w.cols : w.rows, N = w.transposed ? w.rows : w.cols;
    int64_t code_bytes = w.slivers ? (int64_t)kn_lowbit_sliver_bytes(w.rows, w.cols) : (w.rows * w.cols * w.bits + 7) / 8;
    const kn_value *a = kn_node_input(g, node, LOWBIT_A), *codes = kn_node_input(g, node, LOWBIT_CODES);
    const kn_value *scale = kn_node_input(g, node, LOWBIT_SCALE), *zp = kn_node_input(g, node, LOWBIT_ZERO_POINT);
    const kn_value *bias = kn_node_input(g, node, LOWBIT_BIAS);
    if (!a || !codes || !scale)
        return kn_fail(KILN_ERR_INVALID_ARG, "inputs A, codes and scale are required");
    if (!is_constant_1d(codes, KN_U8, code_bytes) || !is_constant_1d(scale, KN_F32, groups) ||
        (zp && !is_constant_1d(zp, KN_I8, groups)))
        return kn_fail(KILN_ERR_INVALID_ARG, "codes (u8, %lld bytes), scale (f32, %lld) and zero_point (i8, %lld) "
                       "must be 1-D constants", (long long)code_bytes, (long long)groups, (long long)groups);
    if (a->dtype != KN_F32 || a->shape.ndim < 1 || a->shape.d[a->shape.ndim - 1] != K)
        return kn_fail(KILN_ERR_SHAPE, "A must be f32 with a last dimension of %lld", (long long)K);
    if (bias && (bias->dtype != KN_F32 || kn_shape_numel(&bias->shape) != N))
        return kn_fail(KILN_ERR_SHAPE, "the bias must be %lld f32 values", (long long)N);
    kn_fused_act act;
    KN_TRY(kn_fused_act_of(node, &act));
    kn_value *y = &g->values[node->out[0]];
    y->shape = a->shape;
    y->shape.d[y->shape.ndim - 1] = N;
    y->dtype = KN_F32;
    return KILN_OK;
}

/* The weight with its pointers, from the call's inputs. */
static kn_lowbit_matrix lowbit_matrix_bound(const kn_op_call *call) {
    kn_lowbit_matrix w;
    int64_t groups;
    lowbit_matrix_of(call->node, &w, &groups); /* checked by infer */
    const kn_tensor *zp = call->node->n_in > LOWBIT_ZERO_POINT ? call->in[LOWBIT_ZERO_POINT] : NULL;
    w.codes = call->in[LOWBIT_CODES]->data;
    w.scale = kn_f32(call->in[LOWBIT_SCALE]);
    w.zero_point = zp ? zp->data : NULL;
    return w;
}

static kiln_status lowbit_forward(const kn_op_call *call) {
    kn_lowbit_matrix w = lowbit_matrix_bound(call);
    const kn_tensor *a_t = call->in[LOWBIT_A];
    const kn_tensor *bias_t = call->node->n_in > LOWBIT_BIAS ? call->in[LOWBIT_BIAS] : NULL;
    int64_t K = w.transposed ? w.cols : w.rows, N = w.transposed ? w.rows : w.cols;
    int64_t M = kn_numel(a_t) / K;
    kn_fused_act act;
    KN_TRY(kn_fused_act_of(call->node, &act));
    size_t bytes = kn_lowbit_workspace(&w, M);
    void *ws = bytes == SIZE_MAX ? NULL : kn_op_scratch(call->ctx, bytes ? bytes : 1);
    if (!ws)
        return kn_fail(KILN_ERR_NOMEM, "LowbitGemm: out of memory for the workspace of %lld rows", (long long)M);
    float *y = kn_f32(call->out[0]); // (M, N)
    kn_lowbit_matmul(kn_lowbit_best(), &w, M, kn_f32(a_t), bias_t ? kn_f32(bias_t) : NULL, y, ws);
    kn_fused_act_apply(&act, y, M * N);
    return KILN_OK;
}

static size_t lowbit_workspace(const kn_graph *g, const kn_node *node) {
    kn_lowbit_matrix w;
    int64_t groups;
    const kn_value *a = kn_node_input(g, node, LOWBIT_A);
    if (lowbit_matrix_of(node, &w, &groups) != KILN_OK || !a)
        return 0;
    int64_t K = w.transposed ? w.cols : w.rows;
    size_t bytes = kn_lowbit_workspace(&w, kn_shape_numel(&a->shape) / K);
    return bytes == SIZE_MAX ? 0 : bytes;
}

static int64_t lowbit_flops(const kn_graph *g, const kn_node *node) {
    const kn_value *y = &g->values[node->out[0]];
    int64_t K = kn_node_int(node, kn_node_int(node, "kn_transposed", 0) ? "kn_cols" : "kn_rows", 0);
    return kn_count_mul(kn_count_mul(2, kn_shape_numel(&y->shape)), K);
}

const kn_op kn_op_lowbitgemm = {.name = "LowbitGemm", .min_inputs = 3, .max_inputs = 5, .infer = lowbit_infer,
                                .forward = lowbit_forward, .workspace = lowbit_workspace, .flops = lowbit_flops};
