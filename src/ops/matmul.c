/* MatMul (numpy matmul): A (..., M, K) @ B (..., K, N) -> Y (..., M, N).
 * A 1-D A is the row (1, K) and a 1-D B the column (K, 1); the added dimension is dropped from Y.
 * The leading (batch) dimensions broadcast against each other, numpy style.
 *
 * Inference-only extensions set by the optimizer (src/runtime/optimize.c), not part of ONNX: an optional
 * third input, a bias (N) (or (1, ..., 1, N)) added to every row of Y, which is what a following
 * `Add` of a constant row did; and a fused activation (ops/fused_act.h) applied to Y last.
 *
 * MatMulPacked (inference, written by the optimizer's KN_OPT_PREPACK for a constant 2-D B): MatMul's
 * inputs, the bias absent or not, and P, B packed once by kn_sgemm_pack_b for this CPU. When A's batch
 * folds into the rows of one product (B is one matrix), a product that would pack B reads P instead: the
 * same bits as MatMul. A transformer's MatMul of a (128, 256) activation by a (256, 256) weight packed
 * the weight at every run. P's layout depends on the CPU, so graphs holding it are never saved.
 */
#include <stdint.h>
#include <string.h>

#include "core/threads.h"
#include "kernels/gemm.h"
#include "ops/fused_act.h"
#include "ops/matmul_dims.h"
#include "ops/op.h"

/* The fused bias must be one row of Y: (N) or (1, ..., 1, N), of rank at most Y's. */
static kiln_status matmul_check_bias(const kn_shape *bias, const kn_shape *b, const kn_matmul_dims *d) {
    char sbias[96], sb[96];
    if (b->ndim < 2)
        return kn_fail(KILN_ERR_SHAPE, "a fused bias needs a B of rank >= 2; B is %s",
                       kn_shape_str(b, sb, sizeof sb));
    bool row = bias->ndim >= 1 && bias->ndim <= d->out.ndim && bias->d[bias->ndim - 1] == d->N;
    for (int i = 0; row && i < bias->ndim - 1; i++)
        row = bias->d[i] == 1;
    if (!row)
        return kn_fail(KILN_ERR_SHAPE, "the fused bias %s is not one row of %lld values",
                       kn_shape_str(bias, sbias, sizeof sbias), (long long)d->N);
    return KILN_OK;
}

static const kn_tensor *matmul_bias(const kn_op_call *call) {
    return call->node->n_in > 2 ? call->in[2] : NULL;
}

static kiln_status matmul_infer(kn_graph *g, const kn_node *node) {
    if (node->n_out != 1)
        return kn_fail(KILN_ERR_INVALID_ARG, "MatMul has one output, got %d", node->n_out);
    const kn_value *a = kn_node_input(g, node, 0), *b = kn_node_input(g, node, 1);
    const kn_value *bias = kn_node_input(g, node, 2);
    if (!a || !b)
        return kn_fail(KILN_ERR_INVALID_ARG, "inputs A and B are required");
    if (a->dtype != KN_F32 || b->dtype != KN_F32 || (bias && bias->dtype != KN_F32))
        return kn_fail(KILN_ERR_UNSUPPORTED, "only f32 inputs are supported");
    kn_matmul_dims d;
    KN_TRY(kn_matmul_dims_of(&a->shape, &b->shape, &d));
    if (bias)
        KN_TRY(matmul_check_bias(&bias->shape, &b->shape, &d));
    kn_fused_act act;
    KN_TRY(kn_fused_act_of(node, &act));
    kn_value *y = &g->values[node->out[0]];
    y->shape = d.out;
    y->dtype = KN_F32;
    return KILN_OK;
}

/* When B is one matrix shared by every batch and A holds all of them, the batch folds into the rows
 * of one big product: (N, T, D) @ (D, F) is (N*T, D) @ (D, F). */
static bool matmul_folds(const kn_matmul_dims *d) {
    return d->b_matrices == 1 && d->a_matrices == d->n_batch;
}

/* Element offsets into A and B of the matrices that make output matrix `index`. */
static void matmul_offsets(const kn_matmul_dims *d, int64_t index, int64_t *a_off, int64_t *b_off) {
    int64_t a_matrix, b_matrix;
    kn_matmul_matrices(d, index, &a_matrix, &b_matrix);
    *a_off = a_matrix * d->M * d->K;
    *b_off = b_matrix * d->K * d->N;
}

/* Whether a batch of products op(A) (M, K) @ op(B) (K, N) that touch no packing buffer (the direct
 * and dot kernels') is shared among the threads: each product then runs whole on one thread, as it
 * would alone (kn_sgemm keeps products this small on one thread), so the bits do not change. */
static bool matmul_shares_batch(int64_t n_batch, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K) {
    double flops_each = 2.0 * (double)M * (double)N * (double)K;
    return n_batch > 1 && kn_threads_get() > 1 && flops_each < KN_PARALLEL_MIN_GEMM &&
           flops_each * (double)n_batch >= KN_PARALLEL_MIN_GEMM &&
           kn_sgemm_uses_no_workspace(trans_a, trans_b, M, N, K);
}

/* Packing workspace of forward's products (one batched product, or one per batch matrix). */
static size_t matmul_gemm_workspace(const kn_matmul_dims *d) {
    size_t bytes = matmul_folds(d) ? kn_sgemm_workspace(false, false, d->n_batch * d->M, d->N, d->K)
                                   : kn_sgemm_workspace(false, false, d->M, d->N, d->K);
    return bytes == SIZE_MAX ? 0 : bytes;
}

/* One batch matrix's products, forward (y) or backward (da, db), for kn_parallel_for: the batch goes to
 * the threads when matmul_shares_batch allows, else one matrix after another, each product then using
 * the threads itself. */
typedef struct matmul_batch {
    const kn_matmul_dims *d;
    void *ws;
    size_t ws_bytes;
    const float *a, *b, *dy;
    float *y, *da, *db;
    float beta, a_beta, b_beta;
} matmul_batch;

static void matmul_forward_matrix(void *ctx, int64_t i, int thread) {
    (void)thread;
    const matmul_batch *m = ctx;
    const kn_matmul_dims *d = m->d;
    int64_t a_off, b_off;
    matmul_offsets(d, i, &a_off, &b_off);
    kn_sgemm_ws(m->ws, m->ws_bytes, false, false, d->M, d->N, d->K, 1.0f, m->a + a_off, d->K, m->b + b_off, d->N,
                m->beta, m->y + i * d->M * d->N, d->N);
}

static void matmul_backward_matrix(void *ctx, int64_t i, int thread) {
    (void)thread;
    const matmul_batch *m = ctx;
    const kn_matmul_dims *d = m->d;
    int64_t a_off, b_off;
    matmul_offsets(d, i, &a_off, &b_off);
    const float *dy_i = m->dy + i * d->M * d->N;
    if (m->da)
        kn_sgemm_ws(m->ws, m->ws_bytes, false, true, d->M, d->K, d->N, 1.0f, dy_i, d->N, m->b + b_off, d->N, m->a_beta,
                    m->da + a_off, d->K);
    if (m->db)
        kn_sgemm_ws(m->ws, m->ws_bytes, true, false, d->K, d->N, d->M, 1.0f, m->a + a_off, d->K, dy_i, d->N, m->b_beta,
                    m->db + b_off, d->N);
}

/* MatMul's forward, or MatMulPacked's with its packed B (NULL for MatMul). */
static kiln_status matmul_run(const kn_op_call *call, const float *b_packed) {
    kn_matmul_dims d;
    KN_TRY(kn_matmul_dims_of(&call->in[0]->shape, &call->in[1]->shape, &d));
    const kn_tensor *bias_tensor = matmul_bias(call);
    if (bias_tensor)
        KN_TRY(matmul_check_bias(&bias_tensor->shape, &call->in[1]->shape, &d));
    kn_fused_act act;
    KN_TRY(kn_fused_act_of(call->node, &act));
    const float *a = kn_f32(call->in[0]), *b = kn_f32(call->in[1]);
    float *y = kn_f32(call->out[0]); // (n_batch, M, N)
    int64_t rows = d.n_batch * d.M;
    // With a bias, Y starts as the bias in every row and the products add on top of it.
    float beta = 0.0f;
    if (bias_tensor) {
        const float *bias = kn_f32(bias_tensor); // (N)
        for (int64_t r = 0; r < rows; r++)
            for (int64_t j = 0; j < d.N; j++)
                y[r * d.N + j] = bias[j];
        beta = 1.0f;
    }
    size_t ws_bytes = matmul_gemm_workspace(&d);
    void *ws = ws_bytes ? kn_op_scratch(call->ctx, ws_bytes) : NULL;
    ws_bytes = ws ? ws_bytes : 0;
    if (matmul_folds(&d) && b_packed && kn_sgemm_packs_b(false, rows, d.N)) {
        kn_sgemm_ws_packed_b(ws, ws_bytes, false, rows, d.N, d.K, 1.0f, a, d.K, b_packed, beta, y, d.N);
    } else if (matmul_folds(&d)) {
        kn_sgemm_ws(ws, ws_bytes, false, false, rows, d.N, d.K, 1.0f, a, d.K, b, d.N, beta, y, d.N);
    } else {
        bool share = matmul_shares_batch(d.n_batch, false, false, d.M, d.N, d.K);
        matmul_batch m = {.d = &d, .ws = ws, .ws_bytes = ws_bytes, .a = a, .b = b, .y = y, .beta = beta};
        kn_parallel_for(d.n_batch, share ? kn_threads_get() : 1, matmul_forward_matrix, &m);
    }
    kn_fused_act_apply(&act, y, rows * d.N);
    return KILN_OK;
}

static kiln_status matmul_forward(const kn_op_call *call) { return matmul_run(call, NULL); }

/* dA_i += dY_i @ B_i^T and dB_i += A_i^T @ dY_i for every output matrix i. A broadcast input gets
 * the sum over the batches that shared it: those products add into the same slice, in batch order.
 * A fresh gradient (din_fresh) is stored: by its products (beta 0) where each of its matrices has
 * one, else zeroed first. */
static kiln_status matmul_backward(const kn_op_call *call) {
    const kn_tensor *dout = call->dout[0];
    if (!dout)
        return KILN_OK;
    KN_TRY(kn_fused_refuse_backward(call->node, matmul_bias(call) != NULL));
    kn_matmul_dims d;
    KN_TRY(kn_matmul_dims_of(&call->in[0]->shape, &call->in[1]->shape, &d));
    const float *a = kn_f32(call->in[0]), *b = kn_f32(call->in[1]);
    const float *dy = kn_f32(dout); // (n_batch, M, N)
    float *da = call->din[0] ? kn_f32(call->din[0]) : NULL;
    float *db = call->din[1] ? kn_f32(call->din[1]) : NULL;
    bool folds = matmul_folds(&d);
    // Whether each matrix of dA / dB comes from exactly one product (no broadcast sums it).
    bool a_once = d.a_matrices == d.n_batch, b_once = folds || d.b_matrices == d.n_batch;
    float a_beta = kn_din_fresh(call, 0) && a_once ? 0.0f : 1.0f;
    float b_beta = kn_din_fresh(call, 1) && b_once ? 0.0f : 1.0f;
    if (da && kn_din_fresh(call, 0) && !a_once)
        memset(da, 0, sizeof(float) * (size_t)kn_numel(call->din[0]));
    if (db && kn_din_fresh(call, 1) && !b_once)
        memset(db, 0, sizeof(float) * (size_t)kn_numel(call->din[1]));
    // Packing buffers from the op scratch, not allocated per product: a large one each step was fresh
    // pages for the kernel to clear.
    int64_t rows = folds ? d.n_batch * d.M : d.M;
    size_t a_ws = da ? kn_sgemm_workspace(false, true, rows, d.K, d.N) : 0;
    size_t b_ws = db ? kn_sgemm_workspace(true, false, d.K, d.N, rows) : 0;
    size_t ws_bytes = a_ws > b_ws ? a_ws : b_ws;
    void *ws = ws_bytes && ws_bytes != SIZE_MAX ? kn_op_scratch(call->ctx, ws_bytes) : NULL;
    ws_bytes = ws ? ws_bytes : 0; // kn_sgemm_ws allocates for itself without one
    if (folds) {
        if (da)
            kn_sgemm_ws(ws, ws_bytes, false, true, rows, d.K, d.N, 1.0f, dy, d.N, b, d.N, a_beta, da, d.K);
        if (db)
            kn_sgemm_ws(ws, ws_bytes, true, false, d.K, d.N, rows, 1.0f, a, d.K, dy, d.N, b_beta, db, d.N);
        return KILN_OK;
    }
    // Threads may share the batch when no two products add into the same matrix.
    bool share = (!da || a_once) && (!db || b_once) &&
                 (!da || matmul_shares_batch(d.n_batch, false, true, d.M, d.K, d.N)) &&
                 (!db || matmul_shares_batch(d.n_batch, true, false, d.K, d.N, d.M));
    matmul_batch m = {.d = &d, .ws = ws, .ws_bytes = ws_bytes, .a = a, .b = b, .dy = dy, .da = da, .db = db,
                      .a_beta = a_beta, .b_beta = b_beta};
    kn_parallel_for(d.n_batch, share ? kn_threads_get() : 1, matmul_backward_matrix, &m);
    return KILN_OK;
}

static int64_t matmul_flops(const kn_graph *g, const kn_node *node) {
    kn_matmul_dims d;
    const kn_value *a = kn_node_input(g, node, 0), *b = kn_node_input(g, node, 1);
    if (kn_matmul_dims_of(&a->shape, &b->shape, &d) != KILN_OK)
        return 0;
    int64_t outputs = kn_count_mul(kn_count_mul(d.n_batch, d.M), d.N);
    return kn_count_add(kn_matmul_flops(&d), kn_node_input(g, node, 2) ? outputs : 0);
}

static size_t matmul_workspace(const kn_graph *g, const kn_node *node) {
    const kn_value *a = kn_node_input(g, node, 0), *b = kn_node_input(g, node, 1);
    kn_matmul_dims d;
    if (!a || !b || kn_matmul_dims_of(&a->shape, &b->shape, &d) != KILN_OK)
        return 0;
    return matmul_gemm_workspace(&d);
}

const kn_op kn_op_matmul = {
    .name = "MatMul",
    .min_inputs = 2,
    .max_inputs = 3,
    .infer = matmul_infer,
    .forward = matmul_forward,
    .workspace = matmul_workspace,
    .backward = matmul_backward,
    .backward_stores = true,
    .flops = matmul_flops,
};

/* ---- MatMulPacked -------------------------------------------------------------------------------- */

/* MatMul's inference; B must be 2-D and P hold it packed for this CPU. */
static kiln_status matmul_packed_infer(kn_graph *g, const kn_node *node) {
    KN_TRY(matmul_infer(g, node));
    const kn_value *b = kn_node_input(g, node, 1), *p = kn_node_input(g, node, 3);
    if (b->shape.ndim != 2)
        return kn_fail(KILN_ERR_SHAPE, "B must be 2-D, got rank %d", b->shape.ndim);
    return kn_matmul_check_packed_b(p, b->shape.d[0], b->shape.d[1]);
}

static kiln_status matmul_packed_forward(const kn_op_call *call) { return matmul_run(call, kn_f32(call->in[3])); }

const kn_op kn_op_matmulpacked = {
    .name = "MatMulPacked",
    .min_inputs = 4,
    .max_inputs = 4,
    .infer = matmul_packed_infer,
    .forward = matmul_packed_forward,
    .workspace = matmul_workspace,
    .flops = matmul_flops,
};
