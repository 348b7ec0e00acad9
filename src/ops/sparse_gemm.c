/* SparseGemm (kiln's, inference only): Y (..., N) = act(A (..., K) W^T + bias), with the weight W (N, K)
 * held as compressed sparse rows: row j's nonzeros are values[row_start[j] .. row_start[j + 1]) at
 * columns[...] (ascending). The inference optimizer (src/runtime/optimize.c) writes it in place of a Gemm
 * or MatMul whose constant weight is mostly zeros (an unstructured-pruned layer), so the zeros cost
 * nothing; a fused bias and activation (ops/fused_act.h) carry over.
 *
 * Inputs: A f32 (..., K); the weight as compressed sparse rows: values f32 (nnz), columns i32 (nnz),
 * row_start i64 (N + 1); the same weight in kernels/sparse.h's lanes layout, for one row of A:
 * lane_offsets i64 (groups * slabs + 1), lane_columns u8 (steps, 16), lane_values f32 (steps, 16); bias
 * f32 (N), optional. The weight inputs must be constants: shape inference checks their structure once
 * (offsets start at 0, never decrease, end at the count; every column inside [0, K)), since a model
 * file can name this op too, and the forward then trusts them.
 *
 * The kernels are src/kernels/sparse.h's: one row of A (batch 1) gathers its columns; more rows are
 * transposed a block of KN_SPARSE_ROW_BLOCK at a time so that one weight multiplies a contiguous run of
 * rows. Not bit-identical to the dense GEMM, whose sums run in another order: within float rounding.
 */
#include <string.h>

#include "core/threads.h"
#include "kernels/sparse.h"
#include "ops/fused_act.h"
#include "ops/op.h"

enum {
    SPARSE_A,
    SPARSE_VALUES,
    SPARSE_COLUMNS,
    SPARSE_ROW_START,
    SPARSE_LANE_OFFSETS,
    SPARSE_LANE_COLUMNS,
    SPARSE_LANE_VALUES,
    SPARSE_BIAS
};
enum { SPARSE_PARALLEL_MIN = KN_PARALLEL_MIN_SPARSE };   /* multiply-adds below which threads cost more than they save */

/* Offsets of `count` spans of `total` items: from 0, never decreasing, up to total. */
static kiln_status sparse_check_offsets(const int64_t *offsets, int64_t count, int64_t total, const char *what) {
    if (offsets[0] != 0 || offsets[count] != total)
        return kn_fail(KILN_ERR_INVALID_ARG, "%s must run from 0 to %lld", what, (long long)total);
    for (int64_t j = 0; j < count; j++)
        if (offsets[j + 1] < offsets[j])
            return kn_fail(KILN_ERR_INVALID_ARG, "%s decreases at %lld", what, (long long)j);
    return KILN_OK;
}

static bool is_constant_1d(const kn_value *v, kn_dtype dtype) {
    return v->data && v->dtype == dtype && v->shape.ndim == 1;
}

/* The CSR weight's structure, checked against K; *N is its row count. */
static kiln_status sparse_check_csr(const kn_value *values, const kn_value *columns, const kn_value *row_start,
                                    int64_t K, int64_t *N) {
    if (!is_constant_1d(values, KN_F32) || !is_constant_1d(columns, KN_I32) || !is_constant_1d(row_start, KN_I64))
        return kn_fail(KILN_ERR_INVALID_ARG, "values (f32), columns (i32) and row_start (i64) must be 1-D constants");
    int64_t nnz = values->shape.d[0];
    *N = row_start->shape.d[0] - 1; // checked below
    if (columns->shape.d[0] != nnz || *N < 1)
        return kn_fail(KILN_ERR_INVALID_ARG, "columns has %lld entries for %lld values, row_start %lld",
                       (long long)columns->shape.d[0], (long long)nnz, (long long)row_start->shape.d[0]);
    const int64_t *start = row_start->data;
    const int32_t *col = columns->data;
    KN_TRY(sparse_check_offsets(start, *N, nnz, "row_start"));
    for (int64_t j = 0; j < *N; j++)
        for (int64_t p = start[j]; p < start[j + 1]; p++)
            if (col[p] < 0 || col[p] >= K || (p > start[j] && col[p] <= col[p - 1]))
                return kn_fail(KILN_ERR_INVALID_ARG, "row %lld: column %d is out of order or outside [0, %lld)",
                               (long long)j, col[p], (long long)K);
    return KILN_OK;
}

/* The lanes layout's structure for N rows of K columns: every slot's column inside [0, K). */
static kiln_status sparse_check_lanes(const kn_value *offsets, const kn_value *lane_col, const kn_value *lane_val,
                                      int64_t N, int64_t K) {
    int64_t groups = (N + KN_SPARSE_LANES - 1) / KN_SPARSE_LANES, slabs = (K + KN_SPARSE_SLAB - 1) / KN_SPARSE_SLAB;
    if (!is_constant_1d(offsets, KN_I64) || offsets->shape.d[0] != groups * slabs + 1 || !lane_col->data ||
        !lane_val->data || lane_col->dtype != KN_U8 || lane_val->dtype != KN_F32 || lane_col->shape.ndim != 2 ||
        !kn_shape_equal(&lane_col->shape, &lane_val->shape) || lane_col->shape.d[1] != KN_SPARSE_LANES)
        return kn_fail(KILN_ERR_INVALID_ARG, "the lanes layout must be lane_offsets i64 (%lld), lane_columns u8 "
                       "and lane_values f32 (steps, %d), constants", (long long)(groups * slabs + 1), KN_SPARSE_LANES);
    const int64_t *off = offsets->data;
    const uint8_t *col = lane_col->data;
    KN_TRY(sparse_check_offsets(off, groups * slabs, lane_col->shape.d[0], "lane_offsets"));
    for (int64_t gs = 0; gs < groups * slabs; gs++) {
        int64_t width = K - (gs % slabs) * KN_SPARSE_SLAB; // columns in this slab
        for (int64_t t = off[gs] * KN_SPARSE_LANES; t < off[gs + 1] * KN_SPARSE_LANES; t++)
            if (col[t] >= width)
                return kn_fail(KILN_ERR_INVALID_ARG, "lane column %d is outside slab %lld of %lld columns", col[t],
                               (long long)(gs % slabs), (long long)K);
    }
    return KILN_OK;
}

static kiln_status sparse_infer(kn_graph *g, const kn_node *node) {
    if (node->n_out != 1)
        return kn_fail(KILN_ERR_INVALID_ARG, "SparseGemm has one output, got %d", node->n_out);
    const kn_value *a = kn_node_input(g, node, SPARSE_A);
    const kn_value *values = kn_node_input(g, node, SPARSE_VALUES);
    const kn_value *columns = kn_node_input(g, node, SPARSE_COLUMNS);
    const kn_value *row_start = kn_node_input(g, node, SPARSE_ROW_START);
    const kn_value *offsets = kn_node_input(g, node, SPARSE_LANE_OFFSETS);
    const kn_value *lane_col = kn_node_input(g, node, SPARSE_LANE_COLUMNS);
    const kn_value *lane_val = kn_node_input(g, node, SPARSE_LANE_VALUES);
    const kn_value *bias = kn_node_input(g, node, SPARSE_BIAS);
    if (!a || !values || !columns || !row_start || !offsets || !lane_col || !lane_val)
        return kn_fail(KILN_ERR_INVALID_ARG, "inputs A, the sparse rows and the lanes are required");
    if (a->dtype != KN_F32 || a->shape.ndim < 1)
        return kn_fail(KILN_ERR_UNSUPPORTED, "A must be f32 of rank 1 or more");
    int64_t K = a->shape.d[a->shape.ndim - 1], N = 0;
    KN_TRY(sparse_check_csr(values, columns, row_start, K, &N));
    KN_TRY(sparse_check_lanes(offsets, lane_col, lane_val, N, K));
    if (bias && (!is_constant_1d(bias, KN_F32) || bias->shape.d[0] != N))
        return kn_fail(KILN_ERR_INVALID_ARG, "the bias must be a constant f32 row of %lld", (long long)N);
    kn_fused_act act;
    KN_TRY(kn_fused_act_of(node, &act));
    kn_value *y = kn_node_output(g, node, 0);
    y->shape = a->shape;
    y->shape.d[y->shape.ndim - 1] = N;
    y->dtype = KN_F32;
    return KILN_OK;
}

/* One row of A against the lanes layout, its groups of KN_SPARSE_LANES weight rows shared among the
 * threads in pieces of whole chunks: a piece is the same kernel on a range of groups (its offsets, y and
 * bias from the range's first group; the steps' indices are absolute), so each output is summed as one
 * call would, and one thread makes one call. */
enum { SPARSE_LANE_CHUNK = 4 * KN_SPARSE_LANES }; /* weight rows per chunk: the AVX-512 kernel's 4 groups */

typedef struct sparse_lanes_run {
    const float *a, *lane_val, *bias;
    const int64_t *offsets;
    const uint8_t *lane_col;
    int64_t K, N, slabs;
    float *y;
} sparse_lanes_run;

static void sparse_lanes_chunks(void *ctx, int64_t first, int64_t end, int slot) {
    (void)slot;
    const sparse_lanes_run *r = ctx;
    int64_t row0 = first * SPARSE_LANE_CHUNK, row_end = end * SPARSE_LANE_CHUNK < r->N ? end * SPARSE_LANE_CHUNK : r->N;
    kn_sparse_best()->lanes(r->a, r->K, r->offsets + row0 / KN_SPARSE_LANES * r->slabs, r->lane_col, r->lane_val,
                            r->bias ? r->bias + row0 : NULL, r->y + row0, row_end - row0);
}

/* More rows of A, for kn_parallel_for: blocks of KN_SPARSE_ROW_BLOCK rows, each transposed into its
 * slot's (K, block) buffer of at_all. */
typedef struct sparse_rows_run {
    const float *a, *values, *bias;
    const int32_t *col;
    const int64_t *start;
    const kn_fused_act *act;
    int64_t M, K, N;
    float *at_all, *y;
} sparse_rows_run;

static void sparse_row_block(void *ctx, int64_t b, int slot) {
    const sparse_rows_run *r = ctx;
    int64_t K = r->K, N = r->N;
    float *at = r->at_all + (int64_t)slot * K * KN_SPARSE_ROW_BLOCK; // (K, block)
    int64_t r0 = b * KN_SPARSE_ROW_BLOCK, rows = r->M - r0 < KN_SPARSE_ROW_BLOCK ? r->M - r0 : KN_SPARSE_ROW_BLOCK;
    for (int64_t k = 0; k < K; k++)
        for (int64_t i = 0; i < KN_SPARSE_ROW_BLOCK; i++)
            at[k * KN_SPARSE_ROW_BLOCK + i] = i < rows ? r->a[(r0 + i) * K + k] : 0.0f;
    kn_sparse_best()->rows(at, rows, r->values, r->col, r->start, r->bias, r->y + r0 * N, N);
    kn_fused_act_apply_serial(r->act, r->y + r0 * N, rows * N);
}

static kiln_status sparse_forward(const kn_op_call *call) {
    const kn_tensor *a_t = call->in[SPARSE_A];
    const kn_tensor *bias_t = call->node->n_in > SPARSE_BIAS ? call->in[SPARSE_BIAS] : NULL;
    int64_t K = a_t->shape.d[a_t->shape.ndim - 1];
    int64_t N = call->in[SPARSE_ROW_START]->shape.d[0] - 1;
    int64_t M = K ? kn_numel(a_t) / K : 0;
    const float *a = kn_f32(a_t);                                    // (M, K)
    const float *values = kn_f32(call->in[SPARSE_VALUES]);           // (nnz)
    const int32_t *col = call->in[SPARSE_COLUMNS]->data;             // (nnz)
    const int64_t *start = call->in[SPARSE_ROW_START]->data;         // (N + 1)
    const float *bias = bias_t ? kn_f32(bias_t) : NULL;              // (N) or none
    float *y = kn_f32(call->out[0]);                                 // (M, N)
    kn_fused_act act;
    KN_TRY(kn_fused_act_of(call->node, &act));
    int64_t nnz = start[N], blocks = (M + KN_SPARSE_ROW_BLOCK - 1) / KN_SPARSE_ROW_BLOCK;
    if (M == 1) {
        sparse_lanes_run r = {.a = a, .lane_val = kn_f32(call->in[SPARSE_LANE_VALUES]), .bias = bias,
                              .offsets = call->in[SPARSE_LANE_OFFSETS]->data,
                              .lane_col = call->in[SPARSE_LANE_COLUMNS]->data, .K = K, .N = N,
                              .slabs = (K + KN_SPARSE_SLAB - 1) / KN_SPARSE_SLAB, .y = y};
        int64_t slots = kn_numel(call->in[SPARSE_LANE_VALUES]); /* multiply-adds, padding included */
        kn_parallel_range((N + SPARSE_LANE_CHUNK - 1) / SPARSE_LANE_CHUNK, kn_threads_for(slots, SPARSE_PARALLEL_MIN),
                          sparse_lanes_chunks, &r);
        kn_fused_act_apply(&act, y, N);
        return KILN_OK;
    }
    size_t bytes;
    if (!kn_size_mul((size_t)K, KN_SPARSE_ROW_BLOCK * sizeof(float) * (size_t)kn_threads_get(), &bytes))
        return kn_fail(KILN_ERR_NOMEM, "SparseGemm: K %lld overflows the workspace size", (long long)K);
    float *at_all = kn_op_scratch(call->ctx, bytes ? bytes : 1); // (threads, K, KN_SPARSE_ROW_BLOCK)
    if (!at_all)
        return kn_fail(KILN_ERR_NOMEM, "SparseGemm: out of memory for %zu bytes of workspace", bytes);
    sparse_rows_run r = {a, values, bias, col, start, &act, M, K, N, at_all, y};
    kn_parallel_for(blocks, kn_threads_for(M * nnz, SPARSE_PARALLEL_MIN), sparse_row_block, &r);
    return KILN_OK;
}

/* The transposed blocks of A, one per thread; none for one row of A, which the lanes layout takes. */
static size_t sparse_workspace(const kn_graph *g, const kn_node *node) {
    const kn_value *a = kn_node_input(g, node, SPARSE_A);
    if (!a || a->shape.ndim < 1 || kn_shape_numel(&a->shape) == a->shape.d[a->shape.ndim - 1])
        return 0;
    size_t bytes;
    size_t per_column = KN_SPARSE_ROW_BLOCK * sizeof(float) * (size_t)kn_threads_get();
    return kn_size_mul((size_t)a->shape.d[a->shape.ndim - 1], per_column, &bytes) ? bytes : 0;
}

/* Two per stored weight and row of A: a multiply and an add. */
static int64_t sparse_flops(const kn_graph *g, const kn_node *node) {
    const kn_value *a = kn_node_input(g, node, SPARSE_A), *values = kn_node_input(g, node, SPARSE_VALUES);
    if (!a || !values || a->shape.ndim < 1 || a->shape.d[a->shape.ndim - 1] < 1)
        return 0;
    int64_t M = kn_shape_numel(&a->shape) / a->shape.d[a->shape.ndim - 1];
    return kn_count_mul(kn_count_mul(2, M), kn_shape_numel(&values->shape));
}

const kn_op kn_op_sparsegemm = {.name = "SparseGemm", .min_inputs = 7, .max_inputs = 8, .infer = sparse_infer,
                                .forward = sparse_forward, .workspace = sparse_workspace, .flops = sparse_flops};
