/* Conv and ConvTranspose over any number of spatial axes, as plain loop nests over kn_window_walk
 * (ops/window.h); conv.c and conv_transpose.c hand over X of rank 5 or 6 (3-D and 4-D), running
 * 1-D and 2-D in their tuned im2col + matrix product code.
 *
 * Both ops are written in the frame of ops/conv_gemm.h: a windowed tensor A (N, Ca, out...) and an
 * image B (N, Cb, in...) related through W (Ca, Cb/group, kernel...), with A = Y, B = X for Conv and
 * A = X, B = Y for ConvTranspose. Three loop nests then cover both forwards and both backwards:
 *     gather       A = W * B         each output of A sums its window's taps
 *     scatter      B += W^T * A      each window adds its taps onto the pixels it reads
 *     weight_grad  dW += A (x) B     each weight sums over the batch and the windows
 * Each runs in parallel over what it writes (A's planes, B's planes, W's rows), and every sum adds
 * its terms in a fixed order, so results do not depend on the thread count.
 */
#include "core/threads.h"
#include "ops/conv_nd.h"

#include "ops/conv_gemm.h"
#include "ops/fused_act.h"
#include "ops/window.h"

/* Below this many multiply-adds a loop runs on one thread: waking the team costs more than it saves. */
#define KN_CONV_ND_PARALLEL_MIN KN_PARALLEL_MIN_COMPUTE

typedef struct conv_nd {
    int64_t N, group;
    int64_t a_channels, b_channels; /* Ca, Cb */
    int64_t a_group, b_group;       /* channels per group */
    int64_t out_channels;           /* M: Conv's Ca, ConvTranspose's Cb */
    kn_window_nd win;               /* axes[i].in: B's spatial dims, axes[i].out: A's */
} conv_nd;

/* Checks the shapes and attributes of a Conv (transposed: ConvTranspose) with input x, weights w
 * and bias b (NULL when absent); fills c. */
static kiln_status conv_nd_of(const kn_node *node, bool transposed, const kn_shape *x,
                              const kn_shape *w, const kn_shape *b, conv_nd *c) {
    KN_TRY(kn_conv_check_operands(node, x, w, transposed ? "C, M/group" : "M, C/group", &c->group));
    char sx[96], sw[96], sb[96];
    kn_shape_str(x, sx, sizeof sx);
    kn_shape_str(w, sw, sizeof sw);
    int rank = x->ndim - 2;
    int64_t C = x->d[1];
    c->N = x->d[0];
    if (transposed) {
        if (w->d[0] != C)
            return kn_fail(KILN_ERR_SHAPE, "W %s must have one row per input channel of X %s", sw, sx);
        c->out_channels = w->d[1] * c->group;
        c->a_channels = C;
        c->b_channels = c->out_channels;
    } else {
        c->out_channels = w->d[0];
        if (c->out_channels % c->group)
            return kn_fail(KILN_ERR_SHAPE, "W %s has %lld output channels, not a multiple of group %lld",
                           sw, (long long)c->out_channels, (long long)c->group);
        if (w->d[1] != C / c->group)
            return kn_fail(KILN_ERR_SHAPE,
                           "W %s has %lld input channels per group but X %s has %lld channels in %lld "
                           "group(s)", sw, (long long)w->d[1], sx, (long long)C, (long long)c->group);
        c->a_channels = c->out_channels;
        c->b_channels = C;
    }
    c->a_group = c->a_channels / c->group;
    c->b_group = c->b_channels / c->group;
    int64_t kernel_shape[KN_WINDOW_MAX_RANK];
    int n_kernel = kn_node_ints(node, "kernel_shape", kernel_shape, KN_WINDOW_MAX_RANK);
    bool kernel_matches = n_kernel == rank;
    for (int i = 0; kernel_matches && i < rank; i++)
        kernel_matches = kernel_shape[i] == w->d[2 + i];
    if (n_kernel >= 0 && !kernel_matches)
        return kn_fail(KILN_ERR_SHAPE, "kernel_shape does not match the spatial dims of W %s", sw);
    if (b && (b->ndim != 1 || b->d[0] != c->out_channels))
        return kn_fail(KILN_ERR_SHAPE, "B %s must be (%lld), one bias per output channel",
                       kn_shape_str(b, sb, sizeof sb), (long long)c->out_channels);
    c->win.rank = rank;
    if (transposed)
        KN_TRY(kn_window_resolve_transposed_nd(node, rank, &x->d[2], &w->d[2], c->win.axes));
    else
        KN_TRY(kn_window_resolve_nd(node, rank, &x->d[2], &w->d[2], false, c->win.axes));
    kn_window_nd_sizes(&c->win);
    return KILN_OK;
}

static const kn_tensor *bias_of(const kn_op_call *call) {
    return call->node->n_in > 2 ? call->in[2] : NULL;
}

static kiln_status conv_nd_of_call(const kn_op_call *call, bool transposed, conv_nd *c) {
    const kn_tensor *b = bias_of(call);
    return conv_nd_of(call->node, transposed, &call->in[0]->shape, &call->in[1]->shape,
                      b ? &b->shape : NULL, c);
}

static kiln_status conv_nd_of_graph(const kn_graph *g, const kn_node *node, bool transposed,
                                    conv_nd *c) {
    const kn_value *b = kn_node_input(g, node, 2);
    return conv_nd_of(node, transposed, &kn_node_input(g, node, 0)->shape,
                      &kn_node_input(g, node, 1)->shape, b ? &b->shape : NULL, c);
}

/* Y's shape: (N, M, spatial...), its spatial dims A's (Conv) or B's (ConvTranspose). */
static kiln_status conv_nd_infer_output(kn_graph *g, const kn_node *node, bool transposed) {
    if (node->n_out != 1)
        return kn_fail(KILN_ERR_INVALID_ARG, "%s has one output, got %d", node->op->name, node->n_out);
    conv_nd c;
    KN_TRY(conv_nd_of_graph(g, node, transposed, &c));
    kn_shape y = {.ndim = c.win.rank + 2, .d = {c.N, c.out_channels}};
    for (int i = 0; i < c.win.rank; i++)
        y.d[2 + i] = transposed ? c.win.axes[i].in : c.win.axes[i].out;
    kn_value *out = kn_node_output(g, node, 0);
    out->shape = y;
    out->dtype = KN_F32;
    return KILN_OK;
}

/* One of the loop nests below for kn_parallel_for: a, b and w as they name them. */
typedef struct conv_nd_run {
    const conv_nd *c;
    const float *w, *bias;
    const float *a_in, *b_in; /* what the nest reads */
    float *out;               /* what it writes */
    bool accumulate;
} conv_nd_run;

/* Plane `plane` of a (N, Ca, out...) = w * b, plus a's old value when `accumulate`, else plus bias
 * (when not NULL). */
static void conv_nd_gather_plane(void *ctx, int64_t plane, int slot) {
    (void)slot;
    const conv_nd_run *r = ctx;
    const conv_nd *c = r->c;
    const kn_window_nd *win = &c->win;
    int64_t n = plane / c->a_channels, ai = plane % c->a_channels;
    int64_t first_b = ai / c->a_group * c->b_group;
    const float *bg = r->b_in + (n * c->b_channels + first_b) * win->in_size; // (Cb/group, in...)
    const float *wa = r->w + ai * c->b_group * win->taps; // (Cb/group, taps)
    float *ap = r->out + plane * win->out_size;           // (out...)
    for (int64_t o = 0; o < win->out_size; o++) {
        float sum = 0.0f;
        kn_window_walk walk;
        for (kn_window_walk_begin(&walk, win, o); !walk.done; kn_window_walk_next(&walk))
            for (int64_t j = 0; j < c->b_group; j++)
                sum += wa[j * win->taps + walk.tap] * bg[j * win->in_size + walk.at];
        ap[o] = (r->accumulate ? ap[o] : r->bias ? r->bias[ai] : 0.0f) + sum;
    }
}

/* a (N, Ca, out...) = w * b, plus a's old value when `accumulate`, else plus bias (when not NULL). */
static void conv_nd_gather(const conv_nd *c, const float *w, const float *b, const float *bias,
                           bool accumulate, float *a) {
    const kn_window_nd *win = &c->win;
    int64_t planes = c->N * c->a_channels;
    conv_nd_run r = {.c = c, .w = w, .bias = bias, .b_in = b, .out = a, .accumulate = accumulate};
    kn_parallel_for(planes, kn_threads_for(planes * win->out_size * c->b_group * win->taps, KN_CONV_ND_PARALLEL_MIN),
                    conv_nd_gather_plane, &r);
}

/* Plane `plane` of b (N, Cb, in...) += w^T * a. */
static void conv_nd_scatter_plane(void *ctx, int64_t plane, int slot) {
    (void)slot;
    const conv_nd_run *r = ctx;
    const conv_nd *c = r->c;
    const kn_window_nd *win = &c->win;
    int64_t n = plane / c->b_channels, bi = plane % c->b_channels;
    int64_t first_a = bi / c->b_group * c->a_group, j = bi % c->b_group;
    float *bp = r->out + plane * win->in_size; // (in...)
    for (int64_t ai = first_a; ai < first_a + c->a_group; ai++) {
        const float *ap = r->a_in + (n * c->a_channels + ai) * win->out_size; // (out...)
        const float *wk = r->w + (ai * c->b_group + j) * win->taps;            // (taps)
        for (int64_t o = 0; o < win->out_size; o++) {
            kn_window_walk walk;
            for (kn_window_walk_begin(&walk, win, o); !walk.done; kn_window_walk_next(&walk))
                bp[walk.at] += wk[walk.tap] * ap[o];
        }
    }
}

/* b (N, Cb, in...) += w^T * a. One call owns each plane of b, so the order of the adds is fixed. */
static void conv_nd_scatter(const conv_nd *c, const float *w, const float *a, float *b) {
    const kn_window_nd *win = &c->win;
    int64_t planes = c->N * c->b_channels;
    conv_nd_run r = {.c = c, .w = w, .a_in = a, .out = b};
    kn_parallel_for(planes, kn_threads_for(planes * win->out_size * c->a_group * win->taps, KN_CONV_ND_PARALLEL_MIN),
                    conv_nd_scatter_plane, &r);
}

/* Row `row` (taps) of dw (Ca, Cb/group, taps) += the products of a's outputs with the pixels of b
 * their windows read, summed over the batch and the windows. */
static void conv_nd_weight_grad_row(void *ctx, int64_t row, int slot) {
    (void)slot;
    const conv_nd_run *r = ctx;
    const conv_nd *c = r->c;
    const kn_window_nd *win = &c->win;
    int64_t ai = row / c->b_group, bi = ai / c->a_group * c->b_group + row % c->b_group;
    float *dwr = r->out + row * win->taps; // (taps)
    for (int64_t n = 0; n < c->N; n++) {
        const float *ap = r->a_in + (n * c->a_channels + ai) * win->out_size; // (out...)
        const float *bp = r->b_in + (n * c->b_channels + bi) * win->in_size;  // (in...)
        for (int64_t o = 0; o < win->out_size; o++) {
            kn_window_walk walk;
            for (kn_window_walk_begin(&walk, win, o); !walk.done; kn_window_walk_next(&walk))
                dwr[walk.tap] += ap[o] * bp[walk.at];
        }
    }
}

/* dw (Ca, Cb/group, taps) += the products of a's outputs with the pixels of b their windows read,
 * summed over the batch and the windows. */
static void conv_nd_weight_grad(const conv_nd *c, const float *a, const float *b, float *dw) {
    const kn_window_nd *win = &c->win;
    int64_t rows = c->a_channels * c->b_group;
    conv_nd_run r = {.c = c, .a_in = a, .b_in = b, .out = dw};
    kn_parallel_for(rows, kn_threads_for(c->N * rows * win->out_size * win->taps, KN_CONV_ND_PARALLEL_MIN),
                    conv_nd_weight_grad_row, &r);
}

/* ---- Conv: A = Y, B = X ---- */

kiln_status kn_conv_nd_infer(kn_graph *g, const kn_node *node) {
    kn_fused_act act;
    KN_TRY(kn_fused_act_of(node, &act));
    return conv_nd_infer_output(g, node, false);
}

kiln_status kn_conv_nd_forward(const kn_op_call *call) {
    conv_nd c;
    KN_TRY(conv_nd_of_call(call, false, &c));
    kn_fused_act act;
    KN_TRY(kn_fused_act_of(call->node, &act));
    const kn_tensor *bias = bias_of(call);
    float *y = kn_f32(call->out[0]); // (N, M, out...)
    conv_nd_gather(&c, kn_f32(call->in[1]), kn_f32(call->in[0]), bias ? kn_f32(bias) : NULL, false, y);
    kn_fused_act_apply(&act, y, kn_numel(call->out[0]));
    return KILN_OK;
}

kiln_status kn_conv_nd_backward(const kn_op_call *call) {
    const kn_tensor *dout = call->dout[0];
    if (!dout)
        return KILN_OK;
    KN_TRY(kn_fused_refuse_backward(call->node, false));
    conv_nd c;
    KN_TRY(conv_nd_of_call(call, false, &c));
    const float *dy = kn_f32(dout); // (N, M, out...)
    if (bias_of(call) && call->din[2])
        kn_conv_bias_grad(c.N, c.out_channels, c.win.out_size, dy, kn_f32(call->din[2]));
    if (call->din[1])
        conv_nd_weight_grad(&c, dy, kn_f32(call->in[0]), kn_f32(call->din[1]));
    if (call->din[0])
        conv_nd_scatter(&c, kn_f32(call->in[1]), dy, kn_f32(call->din[0]));
    return KILN_OK;
}

int64_t kn_conv_nd_flops(const kn_graph *g, const kn_node *node) {
    conv_nd c;
    if (conv_nd_of_graph(g, node, false, &c) != KILN_OK)
        return 0;
    int64_t outputs = c.N * c.out_channels * c.win.out_size;
    return kn_count_add(kn_count_mul(2, kn_count_mul(outputs, c.b_group * c.win.taps)), kn_node_input(g, node, 2) ? outputs : 0);
}

/* ---- ConvTranspose: A = X, B = Y ---- */

kiln_status kn_convt_nd_infer(kn_graph *g, const kn_node *node) {
    return conv_nd_infer_output(g, node, true);
}

kiln_status kn_convt_nd_forward(const kn_op_call *call) {
    conv_nd c;
    KN_TRY(conv_nd_of_call(call, true, &c));
    const kn_tensor *bias = bias_of(call);
    float *y = kn_f32(call->out[0]); // (N, M, in...)
    int64_t planes = c.N * c.out_channels;
    for (int64_t p = 0; p < planes; p++)
        for (int64_t i = 0; i < c.win.in_size; i++)
            y[p * c.win.in_size + i] = bias ? kn_f32(bias)[p % c.out_channels] : 0.0f;
    conv_nd_scatter(&c, kn_f32(call->in[1]), kn_f32(call->in[0]), y);
    return KILN_OK;
}

kiln_status kn_convt_nd_backward(const kn_op_call *call) {
    const kn_tensor *dout = call->dout[0];
    if (!dout)
        return KILN_OK;
    conv_nd c;
    KN_TRY(conv_nd_of_call(call, true, &c));
    const float *dy = kn_f32(dout); // (N, M, in...)
    if (bias_of(call) && call->din[2])
        kn_conv_bias_grad(c.N, c.out_channels, c.win.in_size, dy, kn_f32(call->din[2]));
    if (call->din[0])
        conv_nd_gather(&c, kn_f32(call->in[1]), dy, NULL, true, kn_f32(call->din[0]));
    if (call->din[1])
        conv_nd_weight_grad(&c, kn_f32(call->in[0]), dy, kn_f32(call->din[1]));
    return KILN_OK;
}

int64_t kn_convt_nd_flops(const kn_graph *g, const kn_node *node) {
    conv_nd c;
    if (conv_nd_of_graph(g, node, true, &c) != KILN_OK)
        return 0;
    int64_t products = kn_count_mul(c.N * c.a_channels * c.win.out_size, c.b_group * c.win.taps);
    return kn_count_add(kn_count_mul(2, products), kn_node_input(g, node, 2) ? c.N * c.out_channels * c.win.in_size : 0);
}
