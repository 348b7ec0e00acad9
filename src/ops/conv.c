/* Conv (ONNX), 2-D NCHW: Y (N, M, OH, OW) = X (N, C, H, W) * W (M, C/group, kH, kW) + B (M).
 * 1-D runs here as 2-D of height 1; 3-D and 4-D run in conv_nd.c.
 *
 * Each image is unfolded by im2col (ops/im2col.h) into a (C*kH*kW, OH*OW) column matrix, so that
 * each group's output is one matrix product W_g (M/group, C/group*kH*kW) @ col_g (C/group*kH*kW,
 * OH*OW). A 1x1 convolution with stride 1 and no padding needs no unfolding: the image itself is the
 * column matrix.
 *
 * A depthwise convolution (groups of one input channel and a few output channels, as in MobileNet) is
 * computed directly instead: its products would have a row or two each, and im2col would copy the
 * image kH*kW times for a handful of multiply-adds per copied pixel. With one output channel per group,
 * blocks of 16 channels go channel-last, a tap being one vector multiply-add per output pixel
 * (depthwise_last_forward); with more, each output plane is a small stencil over one input plane
 * (depthwise_plane_in_place for 3x3 kernels, depthwise_plane over a padded copy for others). Every
 * output sums its bias and then its taps in kernel order, whichever loop computes it, so the result
 * does not depend on the loop taken or on the thread count.
 *
 * The bias, and an activation fused in by the inference optimizer (ops/fused_act.h), are applied to
 * each image's output in one pass as soon as its products are done.
 *
 * In training, a 3x3 stride-1 layer of one group with 16 or more channels each way runs forward, dX
 * and dW by Winograd's F(4x4, 3x3) instead (ops/conv_winograd.h, conv_trains_winograd below).
 */
#include <string.h>

#include "core/threads.h"
#include "kernels/depthwise.h"
#include "kernels/gemm.h"
#include "kernels/winograd.h"
#include "ops/conv_gemm.h"
#include "ops/conv_nd.h"
#include "ops/conv_prepack.h"
#include "ops/conv_winograd.h"
#include "ops/fused_act.h"
#include "ops/im2col.h"
#include "ops/op.h"
#include "ops/window.h"

/* Below this many elements a loop runs on one thread: waking the team costs more than it saves. */
#define KN_CONV_PARALLEL_MIN KN_PARALLEL_MIN_COMPUTE

typedef struct conv_geom {
    int64_t N, C, M;             /* batch, input channels, output channels */
    int64_t group, Cg, Mg;       /* groups; input and output channels per group */
    kn_window_axis h, w;
    int64_t taps;                /* kH * kW */
    int64_t in_plane, out_plane; /* H * W, OH * OW */
    bool transposed;             /* ConvPacked: its weights packed for the transposed products */
} conv_geom;

static kiln_status conv_geom_of(const kn_node *node, const kn_shape *x, const kn_shape *w,
                                const kn_shape *b, conv_geom *g) {
    char sx[96], sw[96], sb[96];
    KN_TRY(kn_conv_check_operands(node, x, w, "M, C/group", &g->group));
    int rank = x->ndim - 2;
    g->N = x->d[0];
    g->C = x->d[1];
    g->M = w->d[0];
    if (g->M % g->group)
        return kn_fail(KILN_ERR_SHAPE, "W %s has %lld output channels, not a multiple of group %lld",
                       kn_shape_str(w, sw, sizeof sw), (long long)g->M, (long long)g->group);
    g->Cg = g->C / g->group;
    g->Mg = g->M / g->group;
    if (w->d[1] != g->Cg)
        return kn_fail(KILN_ERR_SHAPE,
                       "W %s has %lld input channels per group but X %s has %lld channels in %lld "
                       "group(s)",
                       kn_shape_str(w, sw, sizeof sw), (long long)w->d[1],
                       kn_shape_str(x, sx, sizeof sx), (long long)g->C, (long long)g->group);
    int64_t kernel_shape[2];
    int n_kernel = kn_node_ints(node, "kernel_shape", kernel_shape, 2);
    if (n_kernel >= 0 && (n_kernel != rank || kernel_shape[0] != w->d[2] ||
                          (rank == 2 && kernel_shape[1] != w->d[3])))
        return kn_fail(KILN_ERR_SHAPE, "kernel_shape does not match the spatial dims of W %s",
                       kn_shape_str(w, sw, sizeof sw));
    if (b && (b->ndim != 1 || b->d[0] != g->M))
        return kn_fail(KILN_ERR_SHAPE, "B %s must be (%lld), one bias per output channel",
                       kn_shape_str(b, sb, sizeof sb), (long long)g->M);
    kn_window_axis axes[2];
    KN_TRY(kn_window_resolve_as_2d(node, rank, &x->d[2], &w->d[2], false, axes));
    g->h = axes[0];
    g->w = axes[1];
    g->taps = g->h.kernel * g->w.kernel;
    g->in_plane = g->h.in * g->w.in;
    g->out_plane = kn_count_mul(g->h.out, g->w.out); /* pads can take it past 2^62 */
    g->transposed = kn_node_int(node, KN_CONV_PACK_TRANSPOSED, 0) != 0;
    return KILN_OK;
}

static const kn_shape *shape_or_null(const kn_tensor *t) { return t ? &t->shape : NULL; }

static kiln_status conv_geom_of_call(const kn_op_call *call, conv_geom *g) {
    const kn_tensor *b = call->node->n_in > 2 ? call->in[2] : NULL;
    return conv_geom_of(call->node, &call->in[0]->shape, &call->in[1]->shape, shape_or_null(b), g);
}

static kiln_status conv_infer(kn_graph *g, const kn_node *node) {
    const kn_value *x, *w, *b;
    KN_TRY(kn_conv_infer_inputs(g, node, &x, &w, &b));
    if (kn_conv_is_nd(x->shape.ndim))
        return kn_conv_nd_infer(g, node);
    conv_geom geom;
    KN_TRY(conv_geom_of(node, &x->shape, &w->shape, b ? &b->shape : NULL, &geom));
    kn_fused_act act;
    KN_TRY(kn_fused_act_of(node, &act));
    kn_value *y = &g->values[node->out[0]];
    y->shape = x->shape.ndim == 3 ? kn_shape_of(3, (int64_t[]){geom.N, geom.M, geom.w.out})
                                   : kn_shape_of(4, (int64_t[]){geom.N, geom.M, geom.h.out, geom.w.out});
    y->dtype = KN_F32;
    return KILN_OK;
}

/* A 1x1 kernel at stride 1 without padding reads each pixel once, in place: X is its own im2col. */
static bool conv_is_pointwise(const conv_geom *g) {
    return g->taps == 1 && g->h.stride == 1 && g->w.stride == 1 && g->h.pad_begin == 0 &&
           g->h.pad_end == 0 && g->w.pad_begin == 0 && g->w.pad_end == 0;
}

/* Bytes of `count` column matrices for one image; false on overflow. */
static bool conv_col_bytes(const conv_geom *g, size_t count, size_t *bytes) {
    return kn_size_mul((size_t)(g->C * g->taps), (size_t)g->out_plane, bytes) &&
           kn_size_mul(*bytes, sizeof(float) * count, bytes);
}

/* Threads that each take whole images: all of them when there are as many images, so that a batch
 * runs without a barrier per image; else one, and each image's im2col and products use the threads
 * inside. Either way each image gets the same arithmetic: kn_sgemm's results do not depend on its thread
 * count. */
static int conv_image_threads(const conv_geom *g, int threads) { return g->N >= threads ? threads : 1; }

/* Forward's scratch, one slot per image thread: the im2col buffer (none for a pointwise convolution),
 * then the matrix product's packing workspace, each 64-byte aligned; after the slots, Conv's weights
 * packed once for the batch (conv_packs_once). */
typedef struct conv_scratch {
    size_t col_bytes, gemm_bytes, slot_bytes, total;
    size_t yt_bytes;     /* channel-last products (chunk, Mp) of the transposed orientation, else 0 */
    size_t packed_bytes; /* the weights packed once, else 0 */
} conv_scratch;

static int64_t conv_chunk_positions(const conv_geom *g);

/* The channel-last products' row length: Mg rounded up to a whole number of the copies' 16 lanes. */
static int64_t conv_yt_row(const conv_geom *g) { return (g->Mg + KN_WINOGRAD_LANES - 1) / KN_WINOGRAD_LANES * KN_WINOGRAD_LANES; }

static size_t conv_packed_group_floats(const conv_geom *g);

/* Whether Conv's forward packs its weights once for the batch, as ConvPacked's come, instead of once
 * per image (or per column chunk) in every product: each product then reads the same packing, so the
 * bits are the same, and takes the bias and activation as its epilogue (conv_chunk). Products of one
 * position do not pack (conv_group_product). */
static bool conv_packs_once(const conv_geom *g) { return g->out_plane > 1 && !g->transposed; }

/* `transposed`: ConvPacked's products in the transposed orientation (conv_packs_transposed);
 * `pack_once`: room for the weights packed once (conv_packs_once). */
static bool conv_forward_scratch(const conv_geom *g, int image_threads, bool transposed, bool pack_once,
                                 conv_scratch *s) {
    s->packed_bytes = 0;
    if (pack_once) {
        size_t floats = conv_packed_group_floats(g);
        if (floats == 0 || !kn_size_mul(floats, (size_t)g->group * sizeof(float), &s->packed_bytes) ||
            s->packed_bytes > SIZE_MAX / 4)
            return false;
    }
    s->col_bytes = 0;
    if (!conv_is_pointwise(g) && !conv_col_bytes(g, 1, &s->col_bytes))
        return false;
    s->col_bytes = kn_round_up_64(s->col_bytes);
    // The products run on the whole image, or on chunks of `chunk` positions and a last one of `rest`;
    // the workspace a product takes is not monotonic in its width (kn_sgemm's column blocks), so each
    // width counts.
    int64_t depth = g->Cg * g->taps, chunk = conv_chunk_positions(g);
    chunk = chunk < g->out_plane ? chunk : g->out_plane;
    int64_t widths[3] = {g->out_plane, chunk, g->out_plane % chunk};
    s->gemm_bytes = 0;
    for (int i = 0; i < 3; i++) {
        size_t bytes = transposed ? kn_sgemm_workspace(true, false, widths[i], g->Mg, depth)
                                  : kn_sgemm_workspace(false, false, g->Mg, widths[i], depth);
        s->gemm_bytes = bytes > s->gemm_bytes ? bytes : s->gemm_bytes;
    }
    s->yt_bytes = 0;
    if (transposed) {
        if (!kn_size_mul((size_t)g->out_plane, (size_t)conv_yt_row(g) * sizeof(float), &s->yt_bytes))
            return false;
        s->yt_bytes = kn_round_up_64(s->yt_bytes);
    }
    if (s->gemm_bytes == SIZE_MAX || s->yt_bytes > SIZE_MAX / 4 || !kn_size_add(s->col_bytes, s->gemm_bytes, &s->slot_bytes) ||
        !kn_size_add(s->slot_bytes, 63, &s->slot_bytes))
        return false;
    s->slot_bytes &= ~(size_t)63;
    if (!kn_size_add(s->slot_bytes, s->yt_bytes, &s->slot_bytes))
        return false;
    return kn_size_mul(s->slot_bytes, (size_t)image_threads, &s->total) &&
           kn_size_add(s->total, s->packed_bytes, &s->total);
}

/* Each group reads one input channel, output channel m being input channel m / Mg convolved with W[m],
 * and has too few output channels for a matrix product to pay: measured on AVX-512 (3x3 kernels, 56x56
 * and 112x112 planes), the direct loops are 4x faster with 1 output channel per group, 2.5x with 2,
 * 1.5x with 4, even with 8, and 0.7x with 16. */
static bool conv_is_depthwise(const conv_geom *g) { return g->Cg == 1 && g->Mg < 8; }

/* A depthwise input plane is copied into the middle of a zeroed plane with the padding around it, so
 * that every window lies inside and the loops need no edge cases. The padding taps then add k * 0 to
 * the sums, which leaves them as they are: each output is its bias plus its real taps in kernel order. */
typedef struct padded_plane {
    int64_t top, left; /* where the image starts */
    int64_t height, width;
} padded_plane;

static padded_plane padded_plane_of(const conv_geom *g) {
    // The last window ends at most pad_end past the image (the output size rounds down).
    return (padded_plane){g->h.pad_begin, g->w.pad_begin, g->h.pad_begin + g->h.in + g->h.pad_end,
                          g->w.pad_begin + g->w.in + g->w.pad_end};
}

/* Bytes of one padded plane per thread of `threads`; false on overflow. */
/* A 3x3, dilation-1 kernel reads its input plane in place (depthwise_plane_in_place) instead of a
 * padded copy: copying every plane once cost a tenth of mobilenet_v2's time at batch 32. */
static bool depthwise_in_place(const conv_geom *g) {
    return g->h.kernel == 3 && g->w.kernel == 3 && g->h.dilation == 1 && g->w.dilation == 1;
}

/* In place: one zero row (W) that all threads read; else a padded plane per thread. */
static bool depthwise_scratch_bytes(const conv_geom *g, int threads, size_t *bytes) {
    if (depthwise_in_place(g))
        return kn_size_mul((size_t)g->w.in, sizeof(float), bytes);
    padded_plane pp = padded_plane_of(g);
    return kn_size_mul((size_t)pp.height, (size_t)pp.width, bytes) &&
           kn_size_mul(*bytes, sizeof(float), bytes) && kn_size_mul(*bytes, (size_t)threads, bytes);
}

/* One output row y (OW) of any kernel, its first window's tap (0, 0) at `window` in a padded plane
 * `width` wide: one pass over the row per tap, each adding into the outputs, so that each output
 * still sums its taps in kernel order. */
static void depthwise_row(const conv_geom *g, const float *window, int64_t width, const float *k, float bias,
                          float *y) {
    int64_t count = g->w.out, stride = g->w.stride;
    for (int64_t t = 0; t < count; t++)
        y[t] = bias;
    for (int64_t i = 0; i < g->h.kernel; i++) {
        for (int64_t j = 0; j < g->w.kernel; j++) {
            const float *src = window + i * g->h.dilation * width + j * g->w.dilation;
            float tap = k[i * g->w.kernel + j];
            for (int64_t t = 0; t < count; t++)
                y[t] += tap * src[t * stride];
        }
    }
}

/* Output plane y (OH, OW) of the padded plane xp convolved with k (kH, kW). */
static void depthwise_plane(const conv_geom *g, const padded_plane *pp, const float *xp, const float *k,
                            float bias, float *y) {
    bool square = g->h.kernel == g->w.kernel && g->h.dilation == 1 && g->w.dilation == 1;
    int64_t unrolled = square && (g->h.kernel == 3 || g->h.kernel == 5) ? g->h.kernel : 0;
    kn_depthwise3x3_row_fn row_3x3 = kn_depthwise3x3_row(); // kernels/depthwise.h
    kn_depthwise5x5_row_fn row_5x5 = kn_depthwise5x5_row();
    for (int64_t oh = 0; oh < g->h.out; oh++) {
        const float *window = xp + oh * g->h.stride * pp->width; // tap (0, 0) of window (oh, 0)
        float *y_row = y + oh * g->w.out;
        const float *rows[5] = {window, window + pp->width, window + 2 * pp->width, window + 3 * pp->width,
                                window + 4 * pp->width};
        if (unrolled == 3)
            row_3x3(rows[0], rows[1], rows[2], k, bias, g->w.stride, g->w.out, y_row);
        else if (unrolled == 5)
            row_5x5(rows, k, bias, g->w.stride, g->w.out, y_row);
        else
            depthwise_row(g, window, pp->width, k, bias, y_row);
    }
}

/* Output ow of a 3x3 window row set r (three input rows, W each) whose window reaches into the side
 * padding: the bias, then the nine taps in kernel order, zero outside the columns. */
static float depthwise_edge_output(const conv_geom *g, const float *const r[3], const float *k, float bias, int64_t ow) {
    float sum = bias;
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) {
            int64_t iw = ow * g->w.stride - g->w.pad_begin + j;
            sum += k[i * 3 + j] * (iw >= 0 && iw < g->w.in ? r[i][iw] : 0.0f);
        }
    return sum;
}

/* Output plane y (OH, OW) of the 3x3 kernel k over the input plane x (H, W), read in place: a window
 * row above or below the image reads `zeros` (W), the outputs whose windows lie across the columns
 * go through the row kernel, and the few at the left and right edges go through
 * depthwise_edge_output. */
static void depthwise_plane_in_place(const conv_geom *g, const float *x, const float *zeros, const float *k,
                                     float bias, float *y) {
    kn_depthwise3x3_row_fn row_3x3 = kn_depthwise3x3_row(); // kernels/depthwise.h
    int64_t sw = g->w.stride, pl = g->w.pad_begin, W = g->w.in;
    // Outputs [first, last) have windows inside the columns: ow sw - pl >= 0 and ow sw - pl + 2 < W.
    int64_t first = (pl + sw - 1) / sw, last = W - 3 + pl < 0 ? 0 : (W - 3 + pl) / sw + 1;
    first = first < g->w.out ? first : g->w.out;
    last = last < first ? first : last < g->w.out ? last : g->w.out;
    for (int64_t oh = 0; oh < g->h.out; oh++) {
        const float *r[3];
        for (int i = 0; i < 3; i++) {
            int64_t ih = oh * g->h.stride - g->h.pad_begin + i;
            r[i] = ih >= 0 && ih < g->h.in ? x + ih * W : zeros;
        }
        float *y_row = y + oh * g->w.out;
        if (last > first)
            row_3x3(r[0] + first * sw - pl, r[1] + first * sw - pl, r[2] + first * sw - pl, k, bias, sw, last - first,
                    y_row + first);
        for (int64_t ow = 0; ow < first; ow++)
            y_row[ow] = depthwise_edge_output(g, r, k, bias, ow);
        for (int64_t ow = last; ow < g->w.out; ow++)
            y_row[ow] = depthwise_edge_output(g, r, k, bias, ow);
    }
}

/* ---- Channel-last depthwise: blocks of KN_DEPTHWISE_LANES channels ---- */

/* One input channel per output channel (MobileNet's depthwise layers) runs channel-last, a block of
 * KN_DEPTHWISE_LANES channels at a time: the planes' rows are copied into a padded channel-last strip,
 * every tap is one vector multiply-add over the block (kn_depthwise_last_row), and the outputs are
 * copied back into their planes. The row kernels vectorize along a row instead, which small images
 * waste: 960 channels of 7x7 took 0.115 ms that way, 0.030 ms channel-last (min of 200 runs, 1 thread,
 * AVX-512); 144 of 56x56, 0.314 and 0.193 ms. A layer with fewer channels than one block would compute
 * mostly padding lanes (one channel: 16 times its work), so it keeps the row kernels. */
static bool depthwise_channel_last(const conv_geom *g) { return g->Mg == 1 && g->M >= KN_DEPTHWISE_LANES; }

/* A strip of output rows: enough that its input rows hold about 1024 padded pixels (64 KiB of
 * channel-last floats, in L2 with the outputs), and at least one. */
static int64_t depthwise_strip_rows(const conv_geom *g) {
    padded_plane pp = padded_plane_of(g);
    int64_t rows = 1024 / pp.width / g->h.stride;
    rows = rows < 1 ? 1 : rows;
    return rows < g->h.out ? rows : g->h.out;
}

/* One thread's scratch for the channel-last path, each part 64-byte aligned: the padded input strip
 * (in_rows, Wp, L), the output strip (rows, OW, L), the taps (kH*kW, L) and the bias (L). */
typedef struct depthwise_last_scratch {
    int64_t rows, in_rows;             /* output rows per strip, input rows they read */
    size_t x_bytes, y_bytes, k_bytes; /* offsets follow from these */
    size_t slot_bytes;
} depthwise_last_scratch;

static bool depthwise_last_scratch_of(const conv_geom *g, depthwise_last_scratch *s) {
    padded_plane pp = padded_plane_of(g);
    size_t lane_bytes = sizeof(float) * KN_DEPTHWISE_LANES;
    s->rows = depthwise_strip_rows(g);
    s->in_rows = (s->rows - 1) * g->h.stride + (g->h.kernel - 1) * g->h.dilation + 1;
    if (!kn_size_mul((size_t)s->in_rows, (size_t)pp.width, &s->x_bytes) ||
        !kn_size_mul(s->x_bytes, lane_bytes, &s->x_bytes) ||
        !kn_size_mul((size_t)s->rows, (size_t)g->w.out, &s->y_bytes) ||
        !kn_size_mul(s->y_bytes, lane_bytes, &s->y_bytes) || s->x_bytes > SIZE_MAX / 4 || s->y_bytes > SIZE_MAX / 4)
        return false;
    s->x_bytes = kn_round_up_64(s->x_bytes);
    s->y_bytes = kn_round_up_64(s->y_bytes);
    s->k_bytes = kn_round_up_64((size_t)g->taps * lane_bytes); /* W's size: no overflow */
    return kn_size_add(s->x_bytes + s->y_bytes, s->k_bytes + kn_round_up_64(lane_bytes), &s->slot_bytes);
}

/* Input rows [first, first + count) of the block's `channels` planes x (channels, H, W) into the padded
 * channel-last strip xt (count, Wp, L): rows outside the image and the side padding are zeros. */
static void depthwise_last_fill(const conv_geom *g, const padded_plane *pp, const float *x, int64_t channels,
                                int64_t first, int64_t count, float *xt) {
    const int64_t L = KN_DEPTHWISE_LANES, W = g->w.in, row = pp->width * L;
    int64_t lo = first < 0 ? -first : 0, hi = g->h.in - first < count ? g->h.in - first : count; // rows in the image
    hi = hi < lo ? lo : hi;
    if (hi > lo)
        kn_depthwise_to_last()(x + (first + lo) * W, g->in_plane, channels, W, hi - lo, xt + lo * row + pp->left * L,
                               row);
    for (int64_t r = 0; r < count; r++) {
        float *xr = xt + r * row; // (Wp, L)
        if (r < lo || r >= hi) {
            memset(xr, 0, sizeof(float) * (size_t)row);
            continue;
        }
        memset(xr, 0, sizeof(float) * (size_t)(pp->left * L));
        memset(xr + (pp->left + W) * L, 0, sizeof(float) * (size_t)((pp->width - pp->left - W) * L));
    }
}

/* Output planes y (channels, OH, OW) of one image's block of `channels` (at most L) input planes x, their
 * taps w (channels, kH*kW) and bias (channels, or NULL), a strip of output rows at a time. */
static void depthwise_last_block(const conv_geom *g, const depthwise_last_scratch *s, const kn_fused_act *act,
                                 const float *x, int64_t channels, const float *w, const float *bias, float *y,
                                 unsigned char *slot) {
    const int64_t L = KN_DEPTHWISE_LANES;
    padded_plane pp = padded_plane_of(g);
    float *xt = (float *)slot;                                          // (in_rows, Wp, L)
    float *yt = (float *)(slot + s->x_bytes);                           // (rows, OW, L)
    float *kt = (float *)(slot + s->x_bytes + s->y_bytes);              // (kH*kW, L)
    float *bt = (float *)(slot + s->x_bytes + s->y_bytes + s->k_bytes); // (L)
    for (int64_t c = 0; c < L; c++) {
        for (int64_t t = 0; t < g->taps; t++)
            kt[t * L + c] = c < channels ? w[c * g->taps + t] : 0.0f;
        bt[c] = c < channels && bias ? bias[c] : 0.0f;
    }
    kn_depthwise_taps taps = {g->h.kernel, g->w.kernel, g->w.stride, g->h.dilation, g->w.dilation};
    kn_depthwise_last_row_fn row_fn = kn_depthwise_last_row(); // kernels/depthwise.h
    const kn_winograd_kernels *copies = kn_winograd_kernels_best();
    for (int64_t oh0 = 0; oh0 < g->h.out; oh0 += s->rows) {
        int64_t rows = g->h.out - oh0 < s->rows ? g->h.out - oh0 : s->rows;
        int64_t in_rows = (rows - 1) * g->h.stride + (g->h.kernel - 1) * g->h.dilation + 1;
        depthwise_last_fill(g, &pp, x, channels, oh0 * g->h.stride - g->h.pad_begin, in_rows, xt);
        for (int64_t r = 0; r < rows; r++)
            row_fn(xt + r * g->h.stride * pp.width * L, pp.width * L, kt, bt, &taps, g->w.out, yt + r * g->w.out * L);
        kn_fused_act_apply_serial(act, yt, rows * g->w.out * L);
        copies->from_last(yt, L, channels, rows * g->w.out, y + oh0 * g->w.out, g->out_plane);
    }
}

/* The channel-last path's jobs (an image's block of channels each) for kn_parallel_for, each slot's
 * strips in scratch. */
typedef struct depthwise_last_run {
    const conv_geom *g;
    const depthwise_last_scratch *s;
    const kn_fused_act *act;
    const float *x, *w, *bias;
    float *y;
    unsigned char *scratch;
    int64_t blocks; /* of channels per image */
} depthwise_last_run;

static void depthwise_last_job(void *ctx, int64_t job, int slot) {
    const depthwise_last_run *r = ctx;
    const conv_geom *g = r->g;
    const int64_t L = KN_DEPTHWISE_LANES;
    int64_t n = job / r->blocks, c0 = job % r->blocks * L, channels = g->M - c0 < L ? g->M - c0 : L;
    depthwise_last_block(g, r->s, r->act, r->x + (n * g->C + c0) * g->in_plane, channels, r->w + c0 * g->taps,
                         r->bias ? r->bias + c0 : NULL, r->y + (n * g->M + c0) * g->out_plane,
                         r->scratch + r->s->slot_bytes * (size_t)slot);
}

static kiln_status depthwise_last_forward(const kn_op_call *call, const conv_geom *g, const kn_fused_act *act,
                                          const float *x, const float *w, const float *bias, float *y) {
    int threads = kn_threads_get();
    depthwise_last_scratch s;
    size_t bytes;
    unsigned char *scratch = depthwise_last_scratch_of(g, &s) && kn_size_mul(s.slot_bytes, (size_t)threads, &bytes)
                                 ? kn_op_scratch(call->ctx, bytes)
                                 : NULL;
    if (!scratch)
        return kn_fail(KILN_ERR_NOMEM, "no memory for %d channel-last strips of %lld x %lld pixels", threads,
                       (long long)s.in_rows, (long long)padded_plane_of(g).width);
    depthwise_last_run r = {g, &s, act, x, w, bias, y, scratch, (g->M + KN_DEPTHWISE_LANES - 1) / KN_DEPTHWISE_LANES};
    kn_parallel_for(g->N * r.blocks, kn_threads_for(g->N * g->M * g->out_plane * g->taps, KN_CONV_PARALLEL_MIN),
                    depthwise_last_job, &r);
    return KILN_OK;
}

/* The depthwise planes (N * M output planes) for kn_parallel_range: scratch is the zero row (in place)
 * or each slot's padded plane. */
typedef struct depthwise_run {
    const conv_geom *g;
    const kn_fused_act *act;
    const float *x, *w, *bias;
    float *y, *scratch;
} depthwise_run;

/* Output planes [begin, end), reading their input planes in place. */
static void depthwise_planes_in_place(void *ctx, int64_t begin, int64_t end, int slot) {
    (void)slot;
    const depthwise_run *r = ctx;
    const conv_geom *g = r->g;
    for (int64_t plane = begin; plane < end; plane++) {
        int64_t n = plane / g->M, m = plane % g->M;
        float *y_plane = r->y + plane * g->out_plane;
        depthwise_plane_in_place(g, r->x + (n * g->C + m / g->Mg) * g->in_plane, r->scratch, r->w + m * g->taps,
                                 r->bias ? r->bias[m] : 0.0f, y_plane);
        kn_fused_act_apply_serial(r->act, y_plane, g->out_plane); /* while the plane is in cache */
    }
}

/* Output planes [begin, end), through the slot's padded plane. */
static void depthwise_planes_padded(void *ctx, int64_t begin, int64_t end, int slot) {
    const depthwise_run *r = ctx;
    const conv_geom *g = r->g;
    padded_plane pp = padded_plane_of(g);
    float *xp = r->scratch + (size_t)slot * (size_t)(pp.height * pp.width); // (Hp, Wp)
    const float *copied = NULL; // the input plane xp holds: Mg output planes in a row read the same
    for (int64_t plane = begin; plane < end; plane++) {
        int64_t n = plane / g->M, m = plane % g->M;
        const float *xc = r->x + (n * g->C + m / g->Mg) * g->in_plane; // (H, W)
        for (int64_t row = 0; xc != copied && row < g->h.in; row++)
            memcpy(xp + (pp.top + row) * pp.width + pp.left, xc + row * g->w.in, sizeof(float) * (size_t)g->w.in);
        copied = xc;
        float *y_plane = r->y + plane * g->out_plane;
        depthwise_plane(g, &pp, xp, r->w + m * g->taps, r->bias ? r->bias[m] : 0.0f, y_plane);
        kn_fused_act_apply_serial(r->act, y_plane, g->out_plane); /* while the plane is in cache */
    }
}

static kiln_status depthwise_forward(const kn_op_call *call, const conv_geom *g, const kn_fused_act *act,
                                     const float *x, const float *w, const float *bias, float *y) {
    if (depthwise_channel_last(g))
        return depthwise_last_forward(call, g, act, x, w, bias, y);
    padded_plane pp = padded_plane_of(g);
    int threads = kn_threads_get();
    size_t bytes;
    float *scratch = depthwise_scratch_bytes(g, threads, &bytes) ? kn_op_scratch(call->ctx, bytes) : NULL;
    if (!scratch)
        return kn_fail(KILN_ERR_NOMEM, "no memory for %d padded planes of %lld x %lld floats", threads,
                       (long long)pp.height, (long long)pp.width);
    int64_t planes = g->N * g->M;
    depthwise_run r = {g, act, x, w, bias, y, scratch};
    int team = kn_threads_for(planes * g->out_plane * g->taps, KN_CONV_PARALLEL_MIN);
    if (depthwise_in_place(g)) {
        memset(scratch, 0, sizeof(float) * (size_t)g->w.in); // the zero row
        kn_parallel_range(planes, team, depthwise_planes_in_place, &r);
        return KILN_OK;
    }
    // the padded planes of the slots this loop uses (the workspace holds kn_threads_get()): the padding stays zero
    memset(scratch, 0, sizeof(float) * (size_t)(team * pp.height * pp.width));
    kn_parallel_range(planes, team, depthwise_planes_padded, &r);
    return KILN_OK;
}

/* Output columns (positions) per product when an image runs on one thread: the product and then the
 * passes after it (the transposed products' copy into place, the bias and activation of products
 * that do not finish their tiles) take this many at a time, so that a pass reads what the product
 * wrote while it is still in L2 instead of coming back for the whole image (a 1x1 convolution's output
 * is megabytes). A multiple of every micro-kernel tile's width. */
static int64_t conv_column_chunk(const conv_geom *g) {
    int64_t chunk = (512 * 1024 / (int64_t)sizeof(float)) / (g->M > 0 ? g->M : 1);
    chunk = chunk / 64 * 64;
    return chunk < 256 ? 256 : chunk;
}

/* ConvPacked's products run transposed, y_g^T (positions, Mg) = cols_g^T @ W_g^T with W_g^T packed as
 * the right operand, when the output channels fill whole micro-kernel tiles and the images are small:
 * the positions then go down the tiles' rows (14 on AVX-512), not across their 32 columns, where a
 * small image wastes most of a tile (7x7 = 49 positions: 64 columns computed). The channel-last
 * products are then copied into place. The packing decides (kn_conv_prepack_transposes: from the image
 * size when the graph gives it, or from a deep reduction, which is what layers with small images have)
 * and records it in the node: the run follows the layout the weights were packed in. Measured on AVX-512
 * (CPU time, 1 thread): resnet18's 512 -> 512 3x3 layer on 7x7, 4.29 ms with the weights packed at
 * every run, 2.57 ms packed once and transposed; mobilenet_v2's 1x1 layers on 7x7 (160 -> 960,
 * 960 -> 160, 320 -> 1280) a fifth faster transposed, on 14x14 within 5% either way. */
static bool conv_packs_transposed(const conv_geom *g) { return g->transposed; }

/* Positions at most this many go down the tiles' rows (see conv_packs_transposed). */
#define CONV_TRANSPOSED_MAX_PLANE 64

/* Whole tiles of output channels, and a reduction of at least 1024 or an image of at most
 * CONV_TRANSPOSED_MAX_PLANE positions (when X's spatial dims are known). */
bool kn_conv_prepack_transposes(const kn_graph *graph, const kn_node *n) {
    const kn_value *x = kn_node_input(graph, n, 0), *w = kn_node_input(graph, n, 1);
    int64_t group = kn_node_int(n, "group", 1);
    conv_geom w_only = {.Cg = w->shape.d[1], .Mg = w->shape.d[0] / group, .taps = w->shape.d[2] * w->shape.d[3]};
    if (w_only.Mg % 32)
        return false;
    conv_geom g;
    kn_shape one = x ? x->shape : (kn_shape){0};
    if (one.ndim == 4)
        one.d[0] = 1; // the batch may be open; the image size is what counts
    bool known = one.ndim == 4 && conv_geom_of(n, &one, &w->shape, NULL, &g) == KILN_OK;
    if (!known)
        kn_error_clear();
    return w_only.Cg * w_only.taps >= 1024 || (known && g.out_plane <= CONV_TRANSPOSED_MAX_PLANE);
}

/* Floats of the weights packed for the products (kn_sgemm_pack_a, or kn_sgemm_pack_b transposed), per
 * group; 0 on overflow. */
static size_t conv_packed_group_floats(const conv_geom *g) {
    int64_t depth = g->Cg * g->taps;
    return conv_packs_transposed(g) ? kn_sgemm_packed_b_floats(depth, g->Mg) : kn_sgemm_packed_a_floats(g->Mg, depth);
}

/* The bias and activation of a group's output tiles, as its product's epilogue: a tile's rows are
 * output channels counted from the group's first. */
typedef struct conv_tile_finish {
    const kn_fused_act_tiles *act;
    const float *bias; /* the group's, or NULL */
} conv_tile_finish;

static void conv_tile_finish_apply(const void *ctx, int64_t i, int64_t j, int m, int n, float *c, int64_t ldc) {
    (void)j;
    const conv_tile_finish *f = ctx;
    kn_fused_act_tiles_apply(f->act, f->bias ? f->bias + i : NULL, c, m, n, ldc);
}

/* Whether the products' epilogue applies the bias and activation (conv_group_product): the plain
 * orientation's, whose weights always come packed (ConvPacked's, or Conv's packed once per run). */
static bool conv_products_finish(const conv_geom *g) { return g->out_plane > 1 && !conv_packs_transposed(g); }

/* One group's product: y_g (Mg, width) = W_g (Mg, depth) @ cols_g (depth, width) (cols_g's rows ld
 * apart), reading W_g packed (ConvPacked's, or Conv's packed once per run), with `finish` (the group's
 * bias and activation) as its epilogue; in the transposed orientation through yt (width, Mp),
 * channel-last. An output of one position (a squeeze-excitation block's 1x1 convolutions on the pooled
 * channels) is Mg dot products of W_g's rows with the column, y_g^T (1, Mg) = cols_g^T @ W_g^T, which
 * kn_sgemm takes without packing: as a product of Mg rows and one column each micro-kernel tile
 * computed 32 columns for one. */
static void conv_group_product(const conv_geom *g, const float *w, const float *packed, int64_t grp, const float *cols,
                               int64_t ld, int64_t width, float *y, float *yt, void *ws, size_t ws_bytes,
                               const conv_tile_finish *finish) {
    int64_t depth = g->Cg * g->taps;
    if (g->out_plane == 1) {
        kn_sgemm_ws(ws, ws_bytes, false, true, 1, g->Mg, depth, 1.0f, cols, depth, w + grp * g->Mg * depth, depth, 0.0f,
                    y, g->Mg);
    } else if (conv_packs_transposed(g)) {
        int64_t row = conv_yt_row(g);
        kn_sgemm_ws_packed_b(ws, ws_bytes, true, width, g->Mg, depth, 1.0f, cols, ld,
                             packed + (size_t)grp * conv_packed_group_floats(g), 0.0f, yt, row);
        kn_winograd_kernels_best()->from_last(yt, row, g->Mg, width, y, g->out_plane);
    } else {
        kn_sgemm_epilogue epilogue = {conv_tile_finish_apply, finish};
        kn_sgemm_ws_packed(ws, ws_bytes, packed + (size_t)grp * conv_packed_group_floats(g), g->Mg, width, depth,
                           1.0f, cols, ld, 0.0f, y, g->out_plane,
                           finish->act->act.kind != KN_ACT_NONE || finish->bias ? &epilogue : NULL);
    }
}

/* Output positions per chunk, the job of one thread (conv_runs_chunks; see conv_column_chunk): when the
 * column matrix is unfolded, it is unfolded a chunk at a time (kn_im2col over whole output rows); with
 * weights of at most 512 KiB, at most 512 KiB of columns, so that the product reads them from L2 in
 * place instead of from memory after a copy into packed panels (resnet18's first layer unfolds 7.4 MB
 * per image). Every chunk reads all the weights, so larger weights keep the larger chunks: resnet18's
 * 512 -> 512 layers on 7x7 (9.4 MB of weights) ran 30% slower in two chunks than in one. Measured on a
 * 2 MiB-L2 Xeon, 1 thread: the first layer at batch 1 went from 3.45 ms (whole image) to 2.64 with
 * chunks of conv_column_chunk's positions (1.2 MB of columns) and to 2.0 with 512 KiB; the 64 -> 128
 * stride-2 3x3 layer at batch 32 from 36 to 31.5 ms (256 KiB to 1 MiB were within 10% of each other). */
#define CONV_UNFOLD_CHUNK_BYTES (512 << 10)

static int64_t conv_chunk_positions(const conv_geom *g) {
    int64_t chunk = conv_column_chunk(g);
    if (conv_is_pointwise(g))
        return chunk;
    int64_t depth = g->C * g->taps, floats = CONV_UNFOLD_CHUNK_BYTES / (int64_t)sizeof(float);
    if (g->M * g->Cg * g->taps <= floats)
        chunk = chunk < floats / depth ? chunk : floats / depth;
    int64_t rows = chunk / g->w.out;
    return (rows > 1 ? rows : 1) * g->w.out;
}

/* cols (C*kH*kW, width) = the column matrix of image x at output positions [first, first + width),
 * whole output rows. */
static void conv_unfold_positions(const conv_geom *g, const float *x, int64_t first, int64_t width, float *cols) {
    kn_window_axis rows = g->h; // the output rows of the chunk, as a window axis of their own
    rows.pad_begin -= first / g->w.out * rows.stride;
    rows.out = width / g->w.out;
    kn_im2col(g->C, &rows, &g->w, x, cols);
}

/* Output positions [j0, j0 + width) of one image: y (M, OH, OW) = W * x (C, H, W) + B, activated: by
 * the products' epilogue, each tile while it is in L1 (conv_products_finish), else by a pass over the
 * chunk; slot holds its column matrix and the products' workspace. */
static void conv_chunk(const conv_geom *g, const kn_fused_act *act, const kn_fused_act_tiles *act_tiles,
                       const float *x, const float *w, const float *packed, const float *bias, float *y, int64_t j0,
                       int64_t width, unsigned char *slot, const conv_scratch *s) {
    int64_t depth = g->Cg * g->taps; // reduction length of each group's product
    const float *cols = x + j0;      // (C*kH*kW, width), rows ld apart
    int64_t ld = g->out_plane;
    if (!conv_is_pointwise(g)) {
        conv_unfold_positions(g, x, j0, width, (float *)slot);
        cols = (const float *)slot;
        ld = width;
    }
    for (int64_t grp = 0; grp < g->group; grp++) {
        conv_tile_finish finish = {act_tiles, bias ? bias + grp * g->Mg : NULL};
        conv_group_product(g, w, packed, grp, cols + grp * depth * ld, ld, width, y + grp * g->Mg * g->out_plane + j0,
                           (float *)(slot + s->slot_bytes - s->yt_bytes), slot + s->col_bytes, s->gemm_bytes,
                           &finish);
    }
    if (conv_products_finish(g))
        return;
    if (bias)
        kn_fused_act_apply_rows(act, bias, y + j0, g->M, width, g->out_plane);
    else if (width == g->out_plane)
        kn_fused_act_apply(act, y, g->M * g->out_plane);
    else
        for (int64_t m = 0; m < g->M; m++)
            kn_fused_act_apply_serial(act, y + m * g->out_plane + j0, width);
}

/* Forward's jobs, each a chunk of one image's output positions (conv_chunk_positions) on one thread:
 * for one thread, and for a team when there is an image per thread or at least two chunks per thread
 * (resnet18's first layer at batch 1: 16 chunks, each unfolded and multiplied from L2; the whole image
 * with the team inside its product ran no faster on 2 threads than in chunks on 1). Otherwise (a
 * small image at batch 1) the images go one after another, whole, and each product uses the team.
 * Either way each output gets the same arithmetic: kn_sgemm's results depend on neither its thread
 * count nor the width of the chunk. */
static int64_t conv_chunks_per_image(const conv_geom *g) {
    int64_t chunk = conv_chunk_positions(g);
    return (g->out_plane + chunk - 1) / chunk;
}

static bool conv_runs_chunks(const conv_geom *g, int threads) {
    return threads == 1 || g->N >= threads || g->N * conv_chunks_per_image(g) >= 2 * (int64_t)threads;
}

/* Slots of forward's scratch: one per thread that runs chunks, else one. */
static int conv_forward_slots(const conv_geom *g, int threads) { return conv_runs_chunks(g, threads) ? threads : 1; }

/* The chunks of a batch for kn_parallel_for, each slot's column matrix and workspace in scratch. */
typedef struct conv_chunks {
    const conv_geom *g;
    const kn_fused_act *act;
    const kn_fused_act_tiles *act_tiles;
    const float *x, *w, *packed, *bias;
    float *y;
    unsigned char *scratch;
    const conv_scratch *s;
    int64_t chunk, per_image; /* positions per chunk, chunks per image */
} conv_chunks;

static void conv_chunk_of(void *ctx, int64_t job, int slot) {
    const conv_chunks *c = ctx;
    const conv_geom *g = c->g;
    int64_t n = job / c->per_image, j0 = job % c->per_image * c->chunk;
    unsigned char *own = c->scratch ? c->scratch + c->s->slot_bytes * (size_t)slot : NULL;
    conv_chunk(g, c->act, c->act_tiles, c->x + n * g->C * g->in_plane, c->w, c->packed, c->bias,
               c->y + n * g->M * g->out_plane, j0, g->out_plane - j0 < c->chunk ? g->out_plane - j0 : c->chunk, own,
               c->s);
}

/* Whether Conv trains by Winograd's transforms (ops/conv_winograd.h): forward, dX and dW of a 3x3,
 * stride-1 layer of one group with channels enough, in training only, so that inference's Conv stays
 * the im2col reference. */
static bool conv_fits_winograd(const conv_geom *g) {
    return g->group == 1 && kn_conv_winograd_trains(&g->h, &g->w, g->C, g->M);
}

static bool conv_trains_winograd(const kn_op_call *call, const conv_geom *g) {
    return call->ctx->training && conv_fits_winograd(g);
}

/* Scratch of a Winograd convolution: with `transforms` (training's, which transforms its filters
 * each step) room for them first (36 x the filters, 64-byte aligned), then the transforms' own; false
 * on overflow. */
static bool conv_winograd_scratch(const kn_winograd_conv *wc, bool transforms, size_t *u_bytes, size_t *total) {
    size_t run = kn_conv_winograd_bytes(wc, kn_threads_get());
    /* W's size x 36 */
    *u_bytes = transforms ? kn_round_up_64(sizeof(float) * KN_WINOGRAD_POINTS * (size_t)(wc->C * wc->M)) : 0;
    return run && kn_size_add(*u_bytes, run, total);
}

/* Training's forward by Winograd (conv_trains_winograd): the filters transformed anew each step, or,
 * given `u` (a ConvPacked's transformed weights, conv_given_winograd_weights), an inference run by those.
 * The input transform V stays in the tape's buffer for the node (kn_op_call.saved, conv_saved_bytes)
 * when there is one, so that dW need not transform X again. */
static kiln_status conv_winograd_forward(const kn_op_call *call, const conv_geom *g, const kn_fused_act *act,
                                         const float *u) {
    kn_winograd_conv wc = {.N = g->N, .C = g->C, .M = g->M, .h = g->h, .w = g->w};
    size_t u_bytes, total;
    if (!conv_winograd_scratch(&wc, !u, &u_bytes, &total))
        return kn_fail(KILN_ERR_NOMEM, "the Winograd buffers of a (%lld, %lld) Conv overflow", (long long)g->M,
                       (long long)g->C);
    unsigned char *scratch = kn_op_scratch(call->ctx, total);
    if (!scratch)
        return kn_fail(KILN_ERR_NOMEM, "no memory for the Winograd buffers of a (%lld, %lld) Conv", (long long)g->M,
                       (long long)g->C);
    if (!u) {
        kn_conv_winograd_weights(kn_f32(call->in[1]), g->M, g->C, (float *)scratch); // (36, C, M)
        u = (const float *)scratch;
    }
    const float *bias = call->node->n_in > 2 && call->in[2] ? kn_f32(call->in[2]) : NULL;
    kn_conv_winograd_apply(&wc, kn_f32(call->in[0]), u, bias, act, false, kn_f32(call->out[0]), call->saved,
                           scratch + u_bytes, kn_threads_get());
    return KILN_OK;
}

/* ConvPacked's transformed weights U (36, C, M), its optional input 4 (conv_prepack.h), or NULL. */
static const float *conv_given_winograd_weights(const kn_op_call *call) {
    return call->node->op == &kn_op_convpacked && call->node->n_in > 4 && call->in[4] ? kn_f32(call->in[4]) : NULL;
}

/* Whether a ConvPacked with U runs this batch by Winograd: tiles enough (kn_conv_winograd_by_batch). */
static bool conv_batch_takes_winograd(const conv_geom *g) {
    return g->N * kn_conv_winograd_tiles(&g->h, &g->w) >= KN_WINOGRAD_BATCH_MIN_TILES;
}

/* Training's dX by Winograd: dX += dY convolved with W^T flipped, pads 2 - forward's. */
static kiln_status conv_winograd_grad_x(const kn_op_call *call, const conv_geom *g, const float *dy, float *dx) {
    kn_winograd_conv wc = {.N = g->N, .C = g->M, .M = g->C, .h = kn_conv_winograd_grad_axis(&g->h),
                           .w = kn_conv_winograd_grad_axis(&g->w)};
    size_t u_bytes, total;
    unsigned char *scratch = conv_winograd_scratch(&wc, true, &u_bytes, &total) ? kn_op_scratch(call->ctx, total) : NULL;
    if (!scratch)
        return kn_fail(KILN_ERR_NOMEM, "no memory for the Winograd buffers of a (%lld, %lld) Conv's dX",
                       (long long)g->M, (long long)g->C);
    float *u = (float *)scratch; // (36, M, C)
    kn_conv_winograd_weights_flipped(kn_f32(call->in[1]), g->M, g->C, u);
    kn_fused_act none = {.kind = KN_ACT_NONE};
    kn_conv_winograd_apply(&wc, dy, u, NULL, &none, true, dx, NULL, scratch + u_bytes, kn_threads_get());
    return KILN_OK;
}

/* Training's dW by Winograd (kn_conv_winograd_grad_w), from the V forward kept when the tape gave it a
 * buffer. */
static kiln_status conv_winograd_grad_w(const kn_op_call *call, const conv_geom *g, const float *x, const float *dy,
                                        float *dw) {
    kn_winograd_conv wc = {.N = g->N, .C = g->C, .M = g->M, .h = g->h, .w = g->w};
    size_t bytes = kn_conv_winograd_grad_w_bytes(&wc, kn_threads_get());
    void *scratch = bytes ? kn_op_scratch(call->ctx, bytes) : NULL;
    if (!scratch)
        return kn_fail(KILN_ERR_NOMEM, "no memory for the Winograd buffers of a (%lld, %lld) Conv's dW",
                       (long long)g->M, (long long)g->C);
    kn_conv_winograd_grad_w(&wc, x, call->saved, dy, dw, scratch, kn_threads_get());
    return KILN_OK;
}

/* Conv's forward, or ConvPacked's with its packed weights (NULL for Conv). */
static kiln_status conv_run(const kn_op_call *call, const float *packed) {
    conv_geom g;
    KN_TRY(conv_geom_of_call(call, &g));
    const float *x = kn_f32(call->in[0]); // (N, C, H, W)
    const float *w = kn_f32(call->in[1]); // (M, C/group, kH, kW)
    const float *bias = call->node->n_in > 2 && call->in[2] ? kn_f32(call->in[2]) : NULL; // (M)
    float *y = kn_f32(call->out[0]);      // (N, M, OH, OW)
    kn_fused_act act;
    KN_TRY(kn_fused_act_of(call->node, &act));
    if (conv_is_depthwise(&g))
        return depthwise_forward(call, &g, &act, x, w, bias, y);
    if (!packed && conv_trains_winograd(call, &g))
        return conv_winograd_forward(call, &g, &act, NULL);
    const float *u = conv_given_winograd_weights(call);
    if (u && conv_batch_takes_winograd(&g))
        return conv_winograd_forward(call, &g, &act, u);
    int threads = kn_threads_get(), team = conv_forward_slots(&g, threads);
    bool pack_once = !packed && conv_packs_once(&g);
    conv_scratch s;
    if (!conv_forward_scratch(&g, team, packed && conv_packs_transposed(&g), pack_once, &s))
        return kn_fail(KILN_ERR_NOMEM, "the im2col buffers of %d x %lld x %lld floats overflow", team,
                       (long long)(g.C * g.taps), (long long)g.out_plane);
    unsigned char *scratch = s.total ? kn_op_scratch(call->ctx, s.total) : NULL;
    if (s.total && !scratch)
        return kn_fail(KILN_ERR_NOMEM, "no memory for %d im2col buffers of %lld x %lld floats", team,
                       (long long)(g.C * g.taps), (long long)g.out_plane);
    if (pack_once) {
        float *own = (float *)(scratch + s.total - s.packed_bytes);
        kn_conv_prepack_weights(w, (const int64_t[]){g.M, g.Cg, g.h.kernel, g.w.kernel}, g.group, false, own);
        packed = own;
    }
    kn_fused_act_tiles act_tiles;
    kn_fused_act_tiles_init(&act, &act_tiles);
    conv_chunks jobs = {&g, &act, &act_tiles, x, w, packed, bias, y, scratch, &s, conv_chunk_positions(&g),
                        conv_chunks_per_image(&g)};
    if (conv_runs_chunks(&g, threads)) {
        kn_parallel_for(g.N * jobs.per_image, threads, conv_chunk_of, &jobs);
        return KILN_OK;
    }
    jobs.chunk = g.out_plane; // whole images, one after another, the team inside each product
    jobs.per_image = 1;
    for (int64_t n = 0; n < g.N; n++)
        conv_chunk_of(&jobs, n, 0);
    return KILN_OK;
}

static kiln_status conv_forward(const kn_op_call *call) {
    if (kn_conv_is_nd(call->in[0]->shape.ndim))
        return kn_conv_nd_forward(call);
    return conv_run(call, NULL);
}

/* Backward's scratch, one slot per image thread: the column matrix, the thread's own weight gradient
 * and the products' packing workspace, each 64-byte aligned; after the slots, W^T packed once for the
 * batch's dX products when there is more than one image (each image's products read the same packing,
 * so the bits are the same as packing it in each). */
typedef struct conv_backward_scratch {
    size_t col_bytes, dw_bytes, gemm_bytes, slot_bytes, packed_bytes, total;
} conv_backward_scratch;

static bool conv_backward_scratch_of(const conv_geom *g, const kn_conv_gemm *products, bool with_dw, bool pack_fold,
                                     int team, conv_backward_scratch *s) {
    s->packed_bytes = 0;
    if (pack_fold) {
        size_t floats = kn_conv_gemm_fold_packed_floats(products);
        if (floats == 0 || !kn_size_mul(floats, sizeof(float), &s->packed_bytes) || s->packed_bytes > SIZE_MAX / 4)
            return false;
    }
    if (!kn_conv_gemm_col_bytes(products, &s->col_bytes))
        return false;
    s->dw_bytes = with_dw ? sizeof(float) * (size_t)(g->M * g->Cg * g->taps) : 0; /* W's size: no overflow */
    size_t fold = kn_conv_gemm_fold_workspace(products), weight = kn_conv_gemm_weight_grad_workspace(products);
    s->gemm_bytes = fold > weight ? fold : weight;
    if (s->col_bytes > SIZE_MAX / 2 || s->gemm_bytes > SIZE_MAX / 4)
        return false;
    s->slot_bytes = kn_round_up_64(s->col_bytes) + kn_round_up_64(s->dw_bytes) + kn_round_up_64(s->gemm_bytes);
    return kn_size_mul(s->slot_bytes, (size_t)team, &s->total) && kn_size_add(s->total, s->packed_bytes, &s->total);
}

typedef struct conv_backward_job {
    const conv_geom *g;
    const kn_conv_gemm *products;
    const conv_backward_scratch *s;
    unsigned char *scratch;
    const float *x, *w, *dy;
    float *dx, *dw;
    int team; /* parts of the batch */
} conv_backward_job;

/* Part t of team's share of the images, for kn_parallel_for: its products on one thread, its weight
 * gradient summed in its own buffer (part t's slot: a part runs once). */
static void conv_backward_images(void *ctx, int64_t t, int slot) {
    (void)slot;
    const conv_backward_job *j = ctx;
    const conv_geom *g = j->g;
    int team = j->team;
    unsigned char *buffers = j->scratch + j->s->slot_bytes * (size_t)t;
    float *col = (float *)buffers;                            // (C*kH*kW, OH*OW)
    float *dw_own = (float *)(buffers + kn_round_up_64(j->s->col_bytes)); // (M, C/group*kH*kW)
    kn_conv_gemm own = *j->products;
    own.gemm_ws = buffers + kn_round_up_64(j->s->col_bytes) + kn_round_up_64(j->s->dw_bytes);
    own.gemm_ws_bytes = j->s->gemm_bytes;
    int64_t first = g->N * t / team, last = g->N * (t + 1) / team;
    for (int64_t n = first; n < last; n++) {
        const float *dyn = j->dy + n * g->M * g->out_plane;
        if (j->dw) {
            const float *cols = kn_conv_gemm_unfold(&own, j->x + n * g->C * g->in_plane, col);
            kn_conv_gemm_weight_grad(&own, dyn, cols, n == first ? 0.0f : 1.0f, dw_own);
        }
        if (j->dx)
            kn_conv_gemm_fold(&own, j->w, dyn, col, j->dx + n * g->C * g->in_plane);
    }
}

/* Per image n, with the products of ops/conv_gemm.h (A = dY, B = X): dW += dY_n @ im2col(X_n)^T,
 * and dX_n += col2im(W^T @ dY_n); one column buffer serves both, one after the other. Like forward,
 * each thread takes whole images, its products on one thread: per-image products split over the
 * team ran at three quarters of the speed. Each part of the batch sums its images' weight gradients in
 * its own buffer; the buffers are added to dW in part order, so the result depends on the thread count
 * only. */
static kiln_status conv_backward(const kn_op_call *call) {
    const kn_tensor *dout = call->dout[0];
    if (!dout)
        return KILN_OK;
    if (kn_conv_is_nd(call->in[0]->shape.ndim))
        return kn_conv_nd_backward(call);
    KN_TRY(kn_fused_refuse_backward(call->node, false));
    conv_geom g;
    KN_TRY(conv_geom_of_call(call, &g));
    const float *x = kn_f32(call->in[0]); // (N, C, H, W)
    const float *w = kn_f32(call->in[1]); // (M, C/group, kH, kW)
    const float *dy = kn_f32(dout);       // (N, M, OH, OW)
    float *dx = call->din[0] ? kn_f32(call->din[0]) : NULL;
    float *dw = call->din[1] ? kn_f32(call->din[1]) : NULL;
    float *db = call->node->n_in > 2 && call->in[2] && call->din[2] ? kn_f32(call->din[2]) : NULL;
    if (db)
        kn_conv_bias_grad(g.N, g.M, g.out_plane, dy, db);
    if (conv_trains_winograd(call, &g)) {
        if (dx)
            KN_TRY(conv_winograd_grad_x(call, &g, dy, dx));
        if (dw)
            KN_TRY(conv_winograd_grad_w(call, &g, x, dy, dw));
        return KILN_OK;
    }
    if (!dx && !dw)
        return KILN_OK;
    kn_conv_gemm products = {.group = g.group, .a_channels = g.M, .b_channels = g.C, .h = g.h, .w = g.w};
    int team = conv_image_threads(&g, kn_threads_get());
    bool pack_fold = dx && g.N > 1;
    conv_backward_scratch s;
    if (!conv_backward_scratch_of(&g, &products, dw != NULL, pack_fold, team, &s))
        return kn_fail(KILN_ERR_NOMEM, "the im2col buffers of %d x %lld x %lld floats overflow", team,
                       (long long)(g.C * g.taps), (long long)g.out_plane);
    unsigned char *scratch = kn_op_scratch(call->ctx, s.total ? s.total : 1);
    if (!scratch)
        return kn_fail(KILN_ERR_NOMEM, "no memory for %d im2col buffers of %lld x %lld floats", team,
                       (long long)(g.C * g.taps), (long long)g.out_plane);
    if (pack_fold) {
        float *packed = (float *)(scratch + s.total - s.packed_bytes);
        kn_conv_gemm_pack_fold(&products, w, packed);
        products.fold_packed = packed;
    }
    conv_backward_job job = {&g, &products, &s, scratch, x, w, dy, dx, dw, team};
    kn_parallel_for(team, team, conv_backward_images, &job);
    if (dw) {
        int64_t count = g.M * g.Cg * g.taps;
        for (int t = 0; t < team; t++) {
            const float *dw_own = (const float *)(scratch + s.slot_bytes * (size_t)t + kn_round_up_64(s.col_bytes));
            if (g.N * t / team == g.N * (t + 1) / team)
                continue; /* a part without images left its buffer as it was */
            for (int64_t i = 0; i < count; i++)
                dw[i] += dw_own[i];
        }
    }
    return KILN_OK;
}

/* What a training forward keeps for backward: the input transform of a layer that trains by Winograd
 * (kn_conv_winograd_kept_floats), else nothing. */
static size_t conv_saved_bytes(const kn_graph *graph, const kn_node *node) {
    const kn_value *x = kn_node_input(graph, node, 0), *w = kn_node_input(graph, node, 1);
    const kn_value *b = kn_node_input(graph, node, 2);
    conv_geom g;
    if (!x || !w || x->shape.ndim != 4)
        return 0;
    if (conv_geom_of(node, &x->shape, &w->shape, b ? &b->shape : NULL, &g) != KILN_OK) {
        kn_error_clear(); /* a size query: forward reports the shape error */
        return 0;
    }
    if (!conv_fits_winograd(&g))
        return 0;
    kn_winograd_conv wc = {.N = g.N, .C = g.C, .M = g.M, .h = g.h, .w = g.w};
    size_t floats = kn_conv_winograd_kept_floats(&wc);
    return floats <= SIZE_MAX / sizeof(float) ? floats * sizeof(float) : 0;
}

static int64_t conv_flops(const kn_graph *graph, const kn_node *node) {
    const kn_value *x = kn_node_input(graph, node, 0), *w = kn_node_input(graph, node, 1);
    const kn_value *b = kn_node_input(graph, node, 2);
    if (kn_conv_is_nd(x->shape.ndim))
        return kn_conv_nd_flops(graph, node);
    conv_geom g;
    if (conv_geom_of(node, &x->shape, &w->shape, b ? &b->shape : NULL, &g) != KILN_OK)
        return 0;
    int64_t outputs = g.N * g.M * g.out_plane;
    return kn_count_add(kn_count_mul(2, kn_count_mul(outputs, g.Cg * g.taps)), b ? outputs : 0);
}

/* What forward takes from the scratch: the depthwise path's padded planes, or conv_forward_scratch
 * (conv_nd.c takes none). */
static size_t conv_workspace(const kn_graph *graph, const kn_node *node) {
    const kn_value *x = kn_node_input(graph, node, 0), *w = kn_node_input(graph, node, 1);
    const kn_value *b = kn_node_input(graph, node, 2);
    conv_geom g;
    if (kn_conv_is_nd(x->shape.ndim) ||
        conv_geom_of(node, &x->shape, &w->shape, b ? &b->shape : NULL, &g) != KILN_OK)
        return 0;
    size_t bytes;
    depthwise_last_scratch last;
    if (conv_is_depthwise(&g) && depthwise_channel_last(&g))
        return depthwise_last_scratch_of(&g, &last) && kn_size_mul(last.slot_bytes, (size_t)kn_threads_get(), &bytes)
                   ? bytes
                   : 0;
    if (conv_is_depthwise(&g))
        return depthwise_scratch_bytes(&g, kn_threads_get(), &bytes) ? bytes : 0;
    conv_scratch s;
    bool transposed = node->op == &kn_op_convpacked && conv_packs_transposed(&g);
    bool pack_once = node->op == &kn_op_conv && conv_packs_once(&g);
    if (!conv_forward_scratch(&g, conv_forward_slots(&g, kn_threads_get()), transposed, pack_once, &s))
        return 0;
    if (node->op != &kn_op_convpacked || !kn_node_input(graph, node, 4))
        return s.total;
    // with U, a run may take Winograd instead (conv_batch_takes_winograd), U given
    kn_winograd_conv wc = {.N = g.N, .C = g.C, .M = g.M, .h = g.h, .w = g.w};
    size_t u_bytes, winograd;
    if (!conv_winograd_scratch(&wc, false, &u_bytes, &winograd))
        return 0;
    return winograd > s.total ? winograd : s.total;
}

const kn_op kn_op_conv = {
    .name = "Conv", .per_image = true,
    .min_inputs = 2,
    .max_inputs = 3,
    .infer = conv_infer,
    .forward = conv_forward,
    .backward = conv_backward,
    .flops = conv_flops,
    .workspace = conv_workspace,
    .saved_bytes = conv_saved_bytes,
};

/* ---- ConvPacked ---------------------------------------------------------------------------------- */

/* Below this many weights, packing them at every run costs next to nothing, and the layer stays Conv. */
#define CONV_PREPACK_MIN_WEIGHTS 4096

bool kn_conv_prepack_suits(const kn_graph *graph, const kn_node *n) {
    if (!n->op || n->op != &kn_op_conv || n->n_in < 2 || n->n_out != 1)
        return false;
    const kn_value *w = kn_node_input(graph, n, 1), *b = kn_node_input(graph, n, 2);
    if (!w || !w->data || w->kind == KN_VALUE_INPUT || w->dtype != KN_F32 || w->shape.ndim != 4 ||
        (b && b->dtype != KN_F32))
        return false;
    int64_t group = kn_node_int(n, "group", 1), M = w->shape.d[0];
    for (int i = 0; i < 4; i++)
        if (w->shape.d[i] < 1)
            return false;
    if (group < 1 || M % group)
        return false;
    conv_geom g = {.Cg = w->shape.d[1], .Mg = M / group, .group = group};
    return !conv_is_depthwise(&g) && kn_shape_numel(&w->shape) >= CONV_PREPACK_MIN_WEIGHTS &&
           kn_conv_prepack_floats(w->shape.d, group, false) > 0 && kn_conv_prepack_floats(w->shape.d, group, true) > 0;
}

size_t kn_conv_prepack_floats(const int64_t w_dims[4], int64_t group, bool transposed) {
    conv_geom g = {.Cg = w_dims[1], .Mg = w_dims[0] / group, .group = group, .taps = w_dims[2] * w_dims[3],
                   .transposed = transposed};
    size_t per_group = conv_packed_group_floats(&g), total;
    return per_group && kn_size_mul(per_group, (size_t)group, &total) ? total : 0;
}

void kn_conv_prepack_weights(const float *w, const int64_t w_dims[4], int64_t group, bool transposed, float *packed) {
    conv_geom g = {.Cg = w_dims[1], .Mg = w_dims[0] / group, .group = group, .taps = w_dims[2] * w_dims[3],
                   .transposed = transposed};
    int64_t depth = g.Cg * g.taps;
    for (int64_t grp = 0; grp < group; grp++) {
        float *dst = packed + (size_t)grp * conv_packed_group_floats(&g);
        if (conv_packs_transposed(&g)) // W_g^T (depth, Mg) is W_g (Mg, depth) read transposed
            kn_sgemm_pack_b(true, depth, g.Mg, w + grp * g.Mg * depth, depth, dst);
        else
            kn_sgemm_pack_a(false, g.Mg, depth, w + grp * g.Mg * depth, depth, dst);
    }
}

/* Conv's inference, and P must be the packed weights of this CPU for W; U, when given, W's Winograd
 * transform, for a layer Winograd trains (one group, 3x3, stride 1, pads at most 2). */
static kiln_status conv_packed_infer(kn_graph *graph, const kn_node *node) {
    KN_TRY(conv_infer(graph, node));
    const kn_value *w = kn_node_input(graph, node, 1), *p = kn_node_input(graph, node, 3);
    bool transposed = kn_node_int(node, KN_CONV_PACK_TRANSPOSED, 0) != 0;
    size_t floats = w->shape.ndim == 4 ? kn_conv_prepack_floats(w->shape.d, kn_node_int(node, "group", 1), transposed) : 0;
    if (!p || p->dtype != KN_F32 || p->shape.ndim != 1 || floats == 0 || (size_t)p->shape.d[0] != floats)
        return kn_fail(KILN_ERR_SHAPE, "P must hold the %zu packed weights of a 2-D W", floats);
    const kn_value *u = kn_node_input(graph, node, 4);
    if (!u)
        return KILN_OK;
    conv_geom g;
    const kn_value *x = kn_node_input(graph, node, 0), *b = kn_node_input(graph, node, 2);
    KN_TRY(conv_geom_of(node, &x->shape, &w->shape, b ? &b->shape : NULL, &g));
    if (g.group != 1 || !kn_conv_winograd_trains(&g.h, &g.w, g.C, g.M) || u->dtype != KN_F32 ||
        u->shape.ndim != 3 || u->shape.d[0] != KN_WINOGRAD_POINTS || u->shape.d[1] != g.C || u->shape.d[2] != g.M)
        return kn_fail(KILN_ERR_SHAPE, "U must be the (36, %lld, %lld) Winograd transform of a 3x3, stride-1 W",
                       (long long)g.C, (long long)g.M);
    return KILN_OK;
}

static kiln_status conv_packed_forward(const kn_op_call *call) { return conv_run(call, kn_f32(call->in[3])); }

const kn_op kn_op_convpacked = {
    .name = "ConvPacked", .per_image = true,
    .min_inputs = 4,
    .max_inputs = 5,
    .infer = conv_packed_infer,
    .forward = conv_packed_forward,
    .flops = conv_flops,
    .workspace = conv_workspace,
};
