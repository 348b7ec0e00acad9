#include "ops/conv_gemm.h"


#include "core/tensor.h"
#include "core/threads.h"
#include "kernels/gemm.h"
#include "ops/im2col.h"
#include "ops/lane_sum.h"
#include "ops/op.h"

/* Below this many elements a loop runs on one thread: waking the team costs more than it saves. */
#define KN_CONV_GEMM_PARALLEL_MIN KN_PARALLEL_MIN_COMPUTE

/* Sizes of one group's products: A_g (a_rows, plane) and col_g (depth, plane). */
typedef struct group_dims {
    int64_t a_rows, depth, plane;
} group_dims;

static group_dims group_dims_of(const kn_conv_gemm *c) {
    return (group_dims){.a_rows = c->a_channels / c->group,
                        .depth = c->b_channels / c->group * c->h.kernel * c->w.kernel,
                        .plane = c->h.out * c->w.out};
}

bool kn_conv_gemm_is_pointwise(const kn_conv_gemm *c) {
    const kn_window_axis *axes[2] = {&c->h, &c->w};
    for (int i = 0; i < 2; i++) {
        const kn_window_axis *a = axes[i];
        if (a->kernel != 1 || a->stride != 1 || a->pad_begin != 0 || a->in != a->out)
            return false;
    }
    return true;
}

bool kn_conv_gemm_col_bytes(const kn_conv_gemm *c, size_t *bytes) {
    group_dims d = group_dims_of(c);
    *bytes = 0;
    return kn_conv_gemm_is_pointwise(c) ||
           (kn_size_mul((size_t)(d.depth * c->group), (size_t)d.plane, bytes) &&
            kn_size_mul(*bytes, sizeof(float), bytes));
}

size_t kn_conv_gemm_fold_workspace(const kn_conv_gemm *c) {
    group_dims d = group_dims_of(c);
    return kn_sgemm_workspace(true, false, d.depth, d.plane, d.a_rows);
}

const float *kn_conv_gemm_unfold(const kn_conv_gemm *c, const float *b, float *col) {
    if (kn_conv_gemm_is_pointwise(c))
        return b;
    kn_im2col(c->b_channels, &c->h, &c->w, b, col);
    return col;
}

void kn_conv_gemm_apply(const kn_conv_gemm *c, const float *w, const float *cols, float beta, float *a) {
    group_dims d = group_dims_of(c);
    for (int64_t grp = 0; grp < c->group; grp++)
        kn_sgemm_ws(c->gemm_ws, c->gemm_ws_bytes, false, false, d.a_rows, d.plane, d.depth, 1.0f,
                    w + grp * d.a_rows * d.depth, d.depth, cols + grp * d.depth * d.plane, d.plane, beta,
                    a + grp * d.a_rows * d.plane, d.plane);
}

void kn_conv_gemm_weight_grad(const kn_conv_gemm *c, const float *a, const float *cols, float beta, float *dw) {
    group_dims d = group_dims_of(c);
    for (int64_t grp = 0; grp < c->group; grp++)
        kn_sgemm_ws(c->gemm_ws, c->gemm_ws_bytes, false, true, d.a_rows, d.depth, d.plane, 1.0f,
                    a + grp * d.a_rows * d.plane, d.plane, cols + grp * d.depth * d.plane, d.plane, beta,
                    dw + grp * d.a_rows * d.depth, d.depth);
}

size_t kn_conv_gemm_weight_grad_workspace(const kn_conv_gemm *c) {
    group_dims d = group_dims_of(c);
    return kn_sgemm_workspace(false, true, d.a_rows, d.depth, d.plane);
}

size_t kn_conv_gemm_fold_packed_floats(const kn_conv_gemm *c) {
    group_dims d = group_dims_of(c);
    size_t per_group = kn_sgemm_packed_a_floats(d.depth, d.a_rows), total;
    return per_group && kn_size_mul(per_group, (size_t)c->group, &total) ? total : 0;
}

void kn_conv_gemm_pack_fold(const kn_conv_gemm *c, const float *w, float *packed) {
    group_dims d = group_dims_of(c);
    size_t per_group = kn_sgemm_packed_a_floats(d.depth, d.a_rows);
    for (int64_t grp = 0; grp < c->group; grp++) // W_g^T (depth, a_rows) is W_g (a_rows, depth) read transposed
        kn_sgemm_pack_a(true, d.depth, d.a_rows, w + grp * d.a_rows * d.depth, d.depth, packed + (size_t)grp * per_group);
}

void kn_conv_gemm_fold(const kn_conv_gemm *c, const float *w, const float *a, float *col, float *b) {
    group_dims d = group_dims_of(c);
    bool pointwise = kn_conv_gemm_is_pointwise(c);
    // Pointwise: the column matrix is b itself, so the products add into it directly.
    float *target = pointwise ? b : col;
    size_t per_group = c->fold_packed ? kn_sgemm_packed_a_floats(d.depth, d.a_rows) : 0;
    for (int64_t grp = 0; grp < c->group; grp++)
        if (c->fold_packed)
            kn_sgemm_ws_packed(c->gemm_ws, c->gemm_ws_bytes, c->fold_packed + (size_t)grp * per_group, d.depth,
                               d.plane, d.a_rows, 1.0f, a + grp * d.a_rows * d.plane, d.plane,
                               pointwise ? 1.0f : 0.0f, target + grp * d.depth * d.plane, d.plane, NULL);
        else
            kn_sgemm_ws(c->gemm_ws, c->gemm_ws_bytes, true, false, d.depth, d.plane, d.a_rows, 1.0f,
                        w + grp * d.a_rows * d.depth, d.depth, a + grp * d.a_rows * d.plane, d.plane,
                        pointwise ? 1.0f : 0.0f, target + grp * d.depth * d.plane, d.plane);
    if (!pointwise)
        kn_col2im(c->b_channels, &c->h, &c->w, col, b);
}

/* Channels whose sums one pass over the images takes together (a stack array of double each). */
enum { BIAS_GRAD_BLOCK = 64 };

/* db[m] += sum over n of the lane sum of plane (n, m), n in order, for m in [m0, m1): images outer, so
 * the loop reads each image's planes of the block as one run of memory instead of one plane per image
 * and channel (a plane of 196 floats is too short for the prefetchers: the per-channel order ran at a
 * third of this speed); each channel's sum is the same, in the same order. */
static void bias_grad_block(int64_t N, int64_t M, int64_t plane, const float *dy, float *db, int64_t m0,
                            int64_t m1) {
    double sum[BIAS_GRAD_BLOCK] = {0};
    for (int64_t n = 0; n < N; n++)
        for (int64_t m = m0; m < m1; m++)
            sum[m - m0] += kn_lane_sum(dy + (n * M + m) * plane, plane);
    for (int64_t m = m0; m < m1; m++)
        db[m] += (float)sum[m - m0];
}

/* The bias gradient's channels for kn_parallel_range. */
typedef struct bias_grad_run {
    int64_t N, M, plane;
    const float *dy;
    float *db;
} bias_grad_run;

/* Channels [first, last), a block at a time. */
static void bias_grad_channels(void *ctx, int64_t first, int64_t last, int slot) {
    (void)slot;
    const bias_grad_run *r = ctx;
    for (int64_t m0 = first; m0 < last; m0 += BIAS_GRAD_BLOCK)
        bias_grad_block(r->N, r->M, r->plane, r->dy, r->db, m0,
                        last - m0 < BIAS_GRAD_BLOCK ? last : m0 + BIAS_GRAD_BLOCK);
}

void kn_conv_bias_grad(int64_t N, int64_t M, int64_t plane, const float *dy, float *db) {
    bias_grad_run r = {N, M, plane, dy, db};
    kn_parallel_range(M, kn_threads_for(N * M * plane, KN_CONV_GEMM_PARALLEL_MIN), bias_grad_channels, &r);
}

kiln_status kn_conv_check_operands(const kn_node *node, const kn_shape *x, const kn_shape *w, const char *w_lead,
                                   int64_t *group) {
    char sx[96], sw[96];
    if (x->ndim < 3)
        return kn_fail(KILN_ERR_SHAPE, "X %s must be (N, C, spatial...)", kn_shape_str(x, sx, sizeof sx));
    if (w->ndim != x->ndim)
        return kn_fail(KILN_ERR_SHAPE, "W %s must be (%s, kernel...) of the rank of X %s",
                       kn_shape_str(w, sw, sizeof sw), w_lead, kn_shape_str(x, sx, sizeof sx));
    for (int i = 0; i < x->ndim; i++)
        if (x->d[i] < 1 || w->d[i] < 1)
            return kn_fail(KILN_ERR_SHAPE, "X %s and W %s must have positive dimensions",
                           kn_shape_str(x, sx, sizeof sx), kn_shape_str(w, sw, sizeof sw));
    *group = kn_node_int(node, "group", 1);
    if (*group < 1)
        return kn_fail(KILN_ERR_INVALID_ARG, "group is %lld", (long long)*group);
    if (x->d[1] % *group)
        return kn_fail(KILN_ERR_SHAPE, "X %s has %lld channels, not a multiple of group %lld",
                       kn_shape_str(x, sx, sizeof sx), (long long)x->d[1], (long long)*group);
    return KILN_OK;
}

kiln_status kn_conv_infer_inputs(const kn_graph *g, const kn_node *node, const kn_value **x, const kn_value **w,
                                 const kn_value **b) {
    if (node->n_out != 1)
        return kn_fail(KILN_ERR_INVALID_ARG, "%s has one output, got %d", node->op->name, node->n_out);
    *x = kn_node_input(g, node, 0);
    *w = kn_node_input(g, node, 1);
    *b = kn_node_input(g, node, 2);
    if (!*x || !*w)
        return kn_fail(KILN_ERR_INVALID_ARG, "inputs X and W are required");
    if ((*x)->dtype != KN_F32 || (*w)->dtype != KN_F32 || (*b && (*b)->dtype != KN_F32))
        return kn_fail(KILN_ERR_UNSUPPORTED, "only f32 inputs are supported");
    return KILN_OK;
}
