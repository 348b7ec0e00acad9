/* Gemm (ONNX): Y (M, N) = alpha * op(A) (M, K) @ op(B) (K, N) + beta * C,
 * op(X) = X^T when transX. C is optional and broadcast to (M, N): a scalar, (N), (1, N), (M, 1) or
 * (M, N). An activation fused in by the inference optimizer (ops/fused_act.h) is applied to Y last.
 *
 * GemmPacked (inference, written by the optimizer's KN_OPT_PREPACK for a constant B): Gemm's inputs and
 * attributes, C absent or not, and P, op(B) packed once by kn_sgemm_pack_b for this CPU. Products that
 * would pack op(B) read P instead (kn_sgemm_ws_packed_b); those that take dot products (a few rows of A
 * against B^T) read B as Gemm does: the same bits as Gemm either way. A Fashion-MNIST MLP at batch 32
 * spent a fifth of its time packing its 784 x 256 weight at every run. P's layout depends on the CPU, so
 * graphs holding it are never saved.
 */
#include <stdint.h>
#include <string.h>

#include "kernels/gemm.h"
#include "ops/fused_act.h"
#include "ops/matmul_dims.h"
#include "ops/op.h"

typedef struct gemm_dims {
    int64_t M, N, K;
    bool trans_a, trans_b;
    float alpha, beta;
    /* C viewed as (c_rows, c_cols), each 1 (broadcast) or M / N; 0 rows when there is no C. */
    int64_t c_rows, c_cols;
} gemm_dims;

static kiln_status gemm_dims_of(const kn_node *node, const kn_shape *a, const kn_shape *b,
                                const kn_shape *c, gemm_dims *d) {
    char sa[96], sb[96], sc[96];
    d->trans_a = kn_node_int(node, "transA", 0) != 0;
    d->trans_b = kn_node_int(node, "transB", 0) != 0;
    d->alpha = kn_node_float(node, "alpha", 1.0f);
    d->beta = kn_node_float(node, "beta", 1.0f);
    if (a->ndim != 2 || b->ndim != 2)
        return kn_fail(KILN_ERR_SHAPE, "A %s and B %s must both be 2-D",
                       kn_shape_str(a, sa, sizeof sa), kn_shape_str(b, sb, sizeof sb));
    d->M = d->trans_a ? a->d[1] : a->d[0];
    d->K = d->trans_a ? a->d[0] : a->d[1];
    int64_t k_of_b = d->trans_b ? b->d[1] : b->d[0];
    d->N = d->trans_b ? b->d[0] : b->d[1];
    if (d->M < 1 || d->N < 1 || d->K < 1)
        return kn_fail(KILN_ERR_SHAPE, "A %s and B %s have a zero or negative dimension",
                       kn_shape_str(a, sa, sizeof sa), kn_shape_str(b, sb, sizeof sb));
    if (k_of_b != d->K)
        return kn_fail(KILN_ERR_SHAPE,
                       "op(A) is (%lld, %lld) but op(B) is (%lld, %lld) "
                       "(A %s, B %s, transA %d, transB %d)",
                       (long long)d->M, (long long)d->K, (long long)k_of_b, (long long)d->N,
                       kn_shape_str(a, sa, sizeof sa), kn_shape_str(b, sb, sizeof sb), d->trans_a,
                       d->trans_b);
    d->c_rows = d->c_cols = 0;
    if (!c)
        return KILN_OK;
    if (c->ndim > 2)
        return kn_fail(KILN_ERR_SHAPE, "C %s has more than 2 dimensions",
                       kn_shape_str(c, sc, sizeof sc));
    d->c_rows = c->ndim == 2 ? c->d[0] : 1;
    d->c_cols = c->ndim >= 1 ? c->d[c->ndim - 1] : 1;
    if ((d->c_rows != 1 && d->c_rows != d->M) || (d->c_cols != 1 && d->c_cols != d->N))
        return kn_fail(KILN_ERR_SHAPE, "C %s does not broadcast to (%lld, %lld)",
                       kn_shape_str(c, sc, sizeof sc), (long long)d->M, (long long)d->N);
    return KILN_OK;
}

static kiln_status gemm_infer(kn_graph *g, const kn_node *node) {
    if (node->n_out != 1)
        return kn_fail(KILN_ERR_INVALID_ARG, "Gemm has one output, got %d", node->n_out);
    const kn_value *a = kn_node_input(g, node, 0), *b = kn_node_input(g, node, 1);
    const kn_value *c = kn_node_input(g, node, 2);
    if (!a || !b)
        return kn_fail(KILN_ERR_INVALID_ARG, "inputs A and B are required");
    if (a->dtype != KN_F32 || b->dtype != KN_F32 || (c && c->dtype != KN_F32))
        return kn_fail(KILN_ERR_UNSUPPORTED, "only f32 inputs are supported");
    gemm_dims d;
    KN_TRY(gemm_dims_of(node, &a->shape, &b->shape, c ? &c->shape : NULL, &d));
    kn_fused_act act;
    KN_TRY(kn_fused_act_of(node, &act));
    kn_value *y = &g->values[node->out[0]];
    y->shape = kn_shape_of(2, (int64_t[]){d.M, d.N});
    y->dtype = KN_F32;
    return KILN_OK;
}

/* Gemm's forward, or GemmPacked's with its packed op(B) (NULL for Gemm). */
static kiln_status gemm_run(const kn_op_call *call, const float *b_packed) {
    const kn_tensor *a = call->in[0], *b = call->in[1];
    const kn_tensor *c = call->node->n_in > 2 ? call->in[2] : NULL;
    gemm_dims d;
    KN_TRY(gemm_dims_of(call->node, &a->shape, &b->shape, c ? &c->shape : NULL, &d));
    kn_fused_act act;
    KN_TRY(kn_fused_act_of(call->node, &act));
    float *y = kn_f32(call->out[0]); // (M, N)
    float beta = 0.0f;
    if (c && d.beta != 0.0f) {
        // Y starts as C broadcast to (M, N); the product is added on top with weight 1 / beta.
        const float *cv = kn_f32(c);
        for (int64_t i = 0; i < d.M; i++) {
            const float *c_row = cv + (d.c_rows == 1 ? 0 : i) * d.c_cols;
            for (int64_t j = 0; j < d.N; j++)
                y[i * d.N + j] = c_row[d.c_cols == 1 ? 0 : j];
        }
        beta = d.beta;
    }
    size_t ws_bytes = kn_sgemm_workspace(d.trans_a, d.trans_b, d.M, d.N, d.K);
    void *ws = ws_bytes && ws_bytes != SIZE_MAX ? kn_op_scratch(call->ctx, ws_bytes) : NULL;
    if (b_packed && kn_sgemm_packs_b(d.trans_b, d.M, d.N))
        kn_sgemm_ws_packed_b(ws, ws ? ws_bytes : 0, d.trans_a, d.M, d.N, d.K, d.alpha, kn_f32(a), a->shape.d[1],
                             b_packed, beta, y, d.N);
    else
        kn_sgemm_ws(ws, ws ? ws_bytes : 0, d.trans_a, d.trans_b, d.M, d.N, d.K, d.alpha, kn_f32(a), a->shape.d[1],
                    kn_f32(b), b->shape.d[1], beta, y, d.N);
    kn_fused_act_apply(&act, y, d.M * d.N);
    return KILN_OK;
}

static kiln_status gemm_forward(const kn_op_call *call) { return gemm_run(call, NULL); }

/* The matrix product's packing workspace, so an inference run allocates nothing. */
static size_t gemm_workspace(const kn_graph *g, const kn_node *node) {
    const kn_value *a = kn_node_input(g, node, 0), *b = kn_node_input(g, node, 1), *c = kn_node_input(g, node, 2);
    gemm_dims d;
    if (!a || !b || gemm_dims_of(node, &a->shape, &b->shape, c ? &c->shape : NULL, &d) != KILN_OK)
        return 0;
    size_t bytes = kn_sgemm_workspace(d.trans_a, d.trans_b, d.M, d.N, d.K);
    return bytes == SIZE_MAX ? 0 : bytes;
}

static kiln_status gemm_backward(const kn_op_call *call) {
    const kn_tensor *a = call->in[0], *b = call->in[1];
    const kn_tensor *c = call->node->n_in > 2 ? call->in[2] : NULL;
    const kn_tensor *dout = call->dout[0];
    if (!dout)
        return KILN_OK;
    KN_TRY(kn_fused_refuse_backward(call->node, false));
    gemm_dims d;
    KN_TRY(gemm_dims_of(call->node, &a->shape, &b->shape, c ? &c->shape : NULL, &d));
    const float *dy = kn_f32(dout); // (M, N)
    int64_t lda = a->shape.d[1], ldb = b->shape.d[1];
    kn_tensor *da = call->din[0], *db = call->din[1], *dc = c ? call->din[2] : NULL;
    const float da_keep = kn_din_fresh(call, 0) ? 0.0f : 1.0f, db_keep = kn_din_fresh(call, 1) ? 0.0f : 1.0f;

    // d op(A) (M, K) = alpha * dY @ op(B)^T; dA is its transpose when transA.
    if (da && d.trans_a)
        kn_sgemm(d.trans_b, true, d.K, d.M, d.N, d.alpha, kn_f32(b), ldb, dy, d.N, da_keep, kn_f32(da),
                 d.M);
    else if (da)
        kn_sgemm(false, !d.trans_b, d.M, d.K, d.N, d.alpha, dy, d.N, kn_f32(b), ldb, da_keep, kn_f32(da),
                 d.K);

    // d op(B) (K, N) = alpha * op(A)^T @ dY; dB is its transpose when transB.
    if (db && d.trans_b)
        kn_sgemm(true, d.trans_a, d.N, d.K, d.M, d.alpha, dy, d.N, kn_f32(a), lda, db_keep, kn_f32(db),
                 d.K);
    else if (db)
        kn_sgemm(!d.trans_a, false, d.K, d.N, d.M, d.alpha, kn_f32(a), lda, dy, d.N, db_keep, kn_f32(db),
                 d.N);

    // dC = beta * dY summed over the dimensions C was broadcast along.
    if (dc) {
        float *dcv = kn_f32(dc); // (c_rows, c_cols)
        if (kn_din_fresh(call, 2))
            memset(dcv, 0, sizeof(float) * (size_t)kn_numel(dc));
        for (int64_t i = 0; i < d.M; i++) {
            float *dc_row = dcv + (d.c_rows == 1 ? 0 : i) * d.c_cols;
            for (int64_t j = 0; j < d.N; j++)
                dc_row[d.c_cols == 1 ? 0 : j] += d.beta * dy[i * d.N + j];
        }
    }
    return KILN_OK;
}

static int64_t gemm_flops(const kn_graph *g, const kn_node *node) {
    const kn_value *y = &g->values[node->out[0]];
    const kn_value *a = kn_node_input(g, node, 0);
    int64_t K = kn_node_int(node, "transA", 0) ? a->shape.d[0] : a->shape.d[1];
    int64_t MN = kn_shape_numel(&y->shape);
    return kn_count_add(kn_count_mul(2, kn_count_mul(MN, K)), kn_node_input(g, node, 2) ? MN : 0);
}

const kn_op kn_op_gemm = {
    .name = "Gemm",
    .min_inputs = 2,
    .max_inputs = 3,
    .infer = gemm_infer,
    .forward = gemm_forward,
    .workspace = gemm_workspace,
    .backward = gemm_backward,
    .flops = gemm_flops,
    .backward_stores = true,
};

/* ---- GemmPacked ---------------------------------------------------------------------------------- */

/* Gemm's inference, and P must be op(B) packed for this CPU. */
static kiln_status gemm_packed_infer(kn_graph *g, const kn_node *node) {
    KN_TRY(gemm_infer(g, node));
    const kn_value *a = kn_node_input(g, node, 0), *b = kn_node_input(g, node, 1), *c = kn_node_input(g, node, 2);
    const kn_value *p = kn_node_input(g, node, 3);
    gemm_dims d;
    KN_TRY(gemm_dims_of(node, &a->shape, &b->shape, c ? &c->shape : NULL, &d));
    return kn_matmul_check_packed_b(p, d.K, d.N);
}

static kiln_status gemm_packed_forward(const kn_op_call *call) { return gemm_run(call, kn_f32(call->in[3])); }

const kn_op kn_op_gemmpacked = {
    .name = "GemmPacked",
    .min_inputs = 4,
    .max_inputs = 4,
    .infer = gemm_packed_infer,
    .forward = gemm_packed_forward,
    .workspace = gemm_workspace,
    .flops = gemm_flops,
};
