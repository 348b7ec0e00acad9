/* ConvWinograd (ops/conv_winograd.h): a 3x3, stride-1 Conv by Winograd's F(4x4, 3x3), which makes each
 * 4x4 block of outputs ("tile") from a 6x6 input patch with 36 multiplications per input channel and
 * output channel instead of 144:
 *     Y_tile = A^T [ sum_c U_c (.) V_c ] A,   U_c = G g_c G^T (done once, kn_conv_winograd_weights),
 *                                              V_c = B^T d_c B (the patch of channel c)
 * Summed over channels, each of the 36 points xi is one matrix product over all tiles:
 *     Z_xi (tiles, M) = V_xi (tiles, C) @ U_xi (C, M)
 * which kn_sgemm runs, reading U_xi in place (it is never packed at run time).
 *
 * The tiles go a block at a time, so that the block's buffers stay in cache: a few tile rows of an
 * image, or several whole images when they are small (products of a few rows waste most of each
 * micro-kernel tile and read all of U for little work):
 *   1. its input rows (with the padding) copied channel-last, channels padded to Cp, a multiple of
 *      KN_WINOGRAD_LANES (kernels/winograd.h transforms that many channels at once) with zeros;
 *   2. V (36, T, Cp) = the input transform of its T tiles;
 *   3. Z (36, T, Mp) = the 36 products;
 *   4. the output transform of Z into a channel-last block of outputs (4 rows per tile row, Mp);
 *   5. that block written into Y (N, M, OH, OW) with the bias, then the fused activation.
 * Tiles past the output's edge are computed from the zeros beyond the padding and not written.
 *
 * The blocks do not depend on the thread count, and each product's result does not either
 * (kernels/gemm.h), so neither does Y. Threads take whole blocks when there are enough of them;
 * otherwise they share each block, step by step (wino_mode below).
 *
 * Rounding: the transforms scale rounding errors (B's entries reach 5, A's 8) and spread them over a
 * tile, so an output's error follows the magnitude of its whole 6x6 patch, not only of its own window.
 * tests/test_fast_paths.c holds each output to the im2col path within twice the rounding bound
 * (9 C + 2) FLT_EPSILON sum |terms|, sum |terms| the largest among the outputs of its tile; measured,
 * the two stay within a twentieth of that. */
#include "ops/conv_winograd.h"

#include <string.h>

#include "core/threads.h"
#include "kernels/gemm.h"
#include "kernels/winograd.h"
#include "ops/conv_gemm.h"
#include "ops/fused_act.h"
#include "ops/op.h"
#include "ops/window.h"

#define TILE 4  /* outputs per tile side */
#define PATCH 6 /* inputs per patch side: TILE + 3 - 1 */
#define LANES KN_WINOGRAD_LANES

/* Below this many input channels or output channels the transforms cost more than the products save
 * (measured on AVX-512; resnet18's and mobilenet's 3x3 layers all have 16 or more). */
#define WINOGRAD_MIN_CHANNELS 16
/* At most this many bytes of transformed weights (36 C M floats, 4 times the filters'): each block of
 * tiles reads all of them, and beyond the last-level cache that reading costs more than Winograd
 * saves. Measured on AVX-512 (32 MiB L3): 256 -> 256 channels on a 14x14 image took 0.47 of the
 * im2col path's time, 512 -> 512 on 7x7 (36 MiB) 1.2 of it, at batch 1 and 32 alike. */
#define WINOGRAD_MAX_WEIGHT_BYTES (16 << 20)
/* A block aims at this many bytes of V and Z together, so that they stay in L2 between the products;
 * but at least BLOCK_MIN_TILES tiles, so that each product has rows enough to be efficient. */
#define BLOCK_TARGET_BYTES (1536 * 1024)
#define BLOCK_MIN_TILES 56

static int64_t round_up(int64_t a, int64_t b) { return (a + b - 1) / b * b; }

static int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

typedef struct wino_geom {
    int64_t N, C, M, Cp, Mp;
    kn_window_axis h, w;
    int64_t tiles_h, tiles_w;  /* tile grid of one image */
    /* A block is `block_images` whole images, or when an image has more tiles than a block takes,
     * block_rows tile rows of one image (block_images 1, blocks_per_image of them). */
    int64_t block_images, block_rows, blocks_per_image;
    int64_t blocks;            /* in the batch */
    int64_t in_rows, in_cols;  /* an image's part of a block's channel-last input: (in_rows, in_cols, Cp) */
    int64_t out_cols;          /* and of its output: (TILE * block_rows, out_cols, Mp) */
} wino_geom;

/* Enough channels both ways for the transforms to pay, and transformed filters within the budget. */
static bool channels_suit(int64_t C, int64_t M) {
    return M >= WINOGRAD_MIN_CHANNELS && C >= WINOGRAD_MIN_CHANNELS &&
           (double)KN_WINOGRAD_POINTS * (double)C * (double)M * sizeof(float) <= WINOGRAD_MAX_WEIGHT_BYTES;
}

/* True when attribute `attr` is absent or a list of at most two ones (a longer list is the shape check's
 * to refuse; kn_node_ints reports its full length but copies only two). */
static bool all_ones(const kn_node *n, const char *attr) {
    int64_t v[2];
    int count = kn_node_ints(n, attr, v, 2);
    if (count > 2)
        return false;
    for (int i = 0; i < count; i++)
        if (v[i] != 1)
            return false;
    return true;
}

bool kn_conv_winograd_suits(const kn_graph *g, const kn_node *n) {
    if (!n->op || n->op != &kn_op_conv || n->n_in < 2 || n->n_out != 1)
        return false;
    const kn_value *x = kn_node_input(g, n, 0), *w = kn_node_input(g, n, 1), *b = kn_node_input(g, n, 2);
    if (!x || !w || !w->data || w->kind == KN_VALUE_INPUT || w->dtype != KN_F32 || w->shape.ndim != 4 ||
        (b && (b->dtype != KN_F32 || b->shape.ndim != 1 || b->shape.d[0] != w->shape.d[0])))
        return false;
    return w->shape.d[2] == 3 && w->shape.d[3] == 3 && kn_node_int(n, "group", 1) == 1 && all_ones(n, "strides") &&
           all_ones(n, "dilations") && channels_suit(w->shape.d[1], w->shape.d[0]);
}

int64_t kn_conv_winograd_tiles(const kn_window_axis *h, const kn_window_axis *w) {
    return (h->out + TILE - 1) / TILE * ((w->out + TILE - 1) / TILE);
}

bool kn_conv_winograd_by_batch(const kn_graph *g, const kn_node *n) {
    if (!kn_conv_winograd_suits(g, n))
        return false;
    const kn_value *x = kn_node_input(g, n, 0), *w = kn_node_input(g, n, 1);
    if (x->shape.ndim != 4 || x->shape.d[2] < 1 || x->shape.d[3] < 1) // the image size is not known
        return false;
    kn_window_axis axes[2];
    if (kn_window_resolve(n, (int64_t[]){x->shape.d[2], x->shape.d[3]}, (int64_t[]){3, 3}, false, axes) != KILN_OK) {
        kn_error_clear(); // shape inference reports it
        return false;
    }
    int64_t M = w->shape.d[0], C = w->shape.d[1];
    return kn_conv_winograd_trains(&axes[0], &axes[1], C, M) &&
           kn_conv_winograd_tiles(&axes[0], &axes[1]) < KN_WINOGRAD_BATCH_MIN_TILES &&
           (double)KN_WINOGRAD_POINTS * (double)C * (double)M * sizeof(float) > KN_WINOGRAD_CACHED_BYTES;
}

/* The filter transform's G (6x3): U = G g G^T. */
static const double winograd_G[PATCH][3] = {{1.0 / 4, 0, 0},
                                            {-1.0 / 6, -1.0 / 6, -1.0 / 6},
                                            {-1.0 / 6, 1.0 / 6, -1.0 / 6},
                                            {1.0 / 24, 1.0 / 12, 1.0 / 6},
                                            {1.0 / 24, -1.0 / 12, 1.0 / 6},
                                            {0, 0, 1}};

/* Filters transformed (or their gradients summed) this many at a time, one vector lane each: a
 * point's values of neighbouring filters are neighbours in U, and the 36 points lie C * M floats
 * apart, a multiple of 4 KiB for the CNN's layers, so that one filter at a time reread the same L1
 * set 36 times (2-4% of a training step). */
enum { FILTER_BLOCK = 16 };

/* u[xi * u_step + l] = (G g_l G^T)[xi] for `count` (<= FILTER_BLOCK) 3x3 filters g_l, tap (i, j) of
 * filter l at g + l * filter_step + i * row + j * col (a flipped filter reads backwards); computed in
 * double and rounded once. */
static void winograd_filters(const float *g, int64_t filter_step, int64_t row, int64_t col, int64_t count, float *u,
                             int64_t u_step) {
    const double(*G)[3] = winograd_G;
    double taps[3][3][FILTER_BLOCK];
    for (int64_t l = 0; l < count; l++)
        for (int i = 0; i < 3; i++)
            for (int j = 0; j < 3; j++)
                taps[i][j][l] = g[l * filter_step + i * row + j * col];
    double gt[PATCH][3][FILTER_BLOCK]; // G g
    for (int a = 0; a < PATCH; a++)
        for (int s = 0; s < 3; s++)
            for (int64_t l = 0; l < count; l++)
                gt[a][s][l] = G[a][0] * taps[0][s][l] + G[a][1] * taps[1][s][l] + G[a][2] * taps[2][s][l];
    for (int a = 0; a < PATCH; a++)
        for (int b = 0; b < PATCH; b++) {
            float *dst = u + (a * PATCH + b) * u_step;
            for (int64_t l = 0; l < count; l++)
                dst[l] = (float)(gt[a][0][l] * G[b][0] + gt[a][1][l] * G[b][1] + gt[a][2][l] * G[b][2]);
        }
}

static int64_t block_count(int64_t from, int64_t total) {
    return total - from < FILTER_BLOCK ? total - from : FILTER_BLOCK;
}

void kn_conv_winograd_weights(const float *w, int64_t M, int64_t C, float *u) {
    for (int64_t c = 0; c < C; c++)
        for (int64_t m = 0; m < M; m += FILTER_BLOCK)
            winograd_filters(w + (m * C + c) * 9, C * 9, 3, 1, block_count(m, M), u + c * M + m, C * M);
}

void kn_conv_winograd_weights_flipped(const float *w, int64_t M, int64_t C, float *u) {
    for (int64_t m = 0; m < M; m++) // dX's input channel m, output channel c: w[m][c] read from its last tap
        for (int64_t c = 0; c < C; c += FILTER_BLOCK)
            winograd_filters(w + (m * C + c) * 9 + 8, 9, -3, -1, block_count(c, C), u + m * C + c, M * C);
}

/* ---- the op ---------------------------------------------------------------------------------------- */

/* The rest of g from its N, C and M and the window axes h and w (3x3, stride 1, outputs >= 1): the
 * channel padding, the tile grid and the blocks. */
static void wino_geom_fill(wino_geom *g, const kn_window_axis *h, const kn_window_axis *w) {
    g->h = *h;
    g->w = *w;
    g->Cp = round_up(g->C, LANES);
    g->Mp = round_up(g->M, LANES);
    g->tiles_h = ceil_div(g->h.out, TILE);
    g->tiles_w = ceil_div(g->w.out, TILE);
    int64_t tile_bytes = KN_WINOGRAD_POINTS * (g->Cp + g->Mp) * (int64_t)sizeof(float);
    int64_t target = BLOCK_TARGET_BYTES / tile_bytes;
    target = target < BLOCK_MIN_TILES ? BLOCK_MIN_TILES : target;
    int64_t rows = target / g->tiles_w < 1 ? 1 : target / g->tiles_w;
    if (rows >= g->tiles_h) { // small images: several to a block, so that the products have rows enough
        g->block_images = rows / g->tiles_h < g->N ? rows / g->tiles_h : g->N;
        g->block_rows = g->tiles_h;
        g->blocks_per_image = 1;
        g->blocks = ceil_div(g->N, g->block_images);
    } else {
        g->block_images = 1;
        g->blocks_per_image = ceil_div(g->tiles_h, rows);
        g->block_rows = ceil_div(g->tiles_h, g->blocks_per_image); // the same rows in every block but the last
        g->blocks = g->N * g->blocks_per_image;
    }
    g->in_rows = TILE * g->block_rows + 2;
    g->in_cols = TILE * g->tiles_w + 2;
    g->out_cols = TILE * g->tiles_w;
}

static kiln_status wino_geom_of(const kn_node *node, const kn_shape *x, const kn_shape *u, const kn_shape *b,
                                wino_geom *g) {
    char sx[96], su[96];
    if (x->ndim != 4 || u->ndim != 3 || u->d[0] != KN_WINOGRAD_POINTS || x->d[1] != u->d[1])
        return kn_fail(KILN_ERR_SHAPE, "X %s must be (N, C, H, W) and U %s (36, C, M)", kn_shape_str(x, sx, sizeof sx),
                       kn_shape_str(u, su, sizeof su));
    for (int i = 0; i < 4; i++)
        if (x->d[i] < 1 || (i < 3 && u->d[i] < 1))
            return kn_fail(KILN_ERR_SHAPE, "X %s and U %s must have positive dimensions",
                           kn_shape_str(x, sx, sizeof sx), kn_shape_str(u, su, sizeof su));
    g->N = x->d[0];
    g->C = x->d[1];
    g->M = u->d[2];
    if (b && (b->ndim != 1 || b->d[0] != g->M))
        return kn_fail(KILN_ERR_SHAPE, "B must be (%lld), one bias per output channel", (long long)g->M);
    if (!all_ones(node, "strides") || !all_ones(node, "dilations") || kn_node_int(node, "group", 1) != 1)
        return kn_fail(KILN_ERR_INVALID_ARG, "ConvWinograd takes strides 1, dilations 1 and one group");
    kn_window_axis axes[2];
    KN_TRY(kn_window_resolve(node, &x->d[2], (const int64_t[]){3, 3}, false, axes));
    if (axes[0].out < 1 || axes[1].out < 1)
        return kn_fail(KILN_ERR_SHAPE, "X %s is smaller than the 3x3 kernel", kn_shape_str(x, sx, sizeof sx));
    wino_geom_fill(g, &axes[0], &axes[1]);
    return KILN_OK;
}

static const kn_shape *shape_or_null(const kn_tensor *t) { return t ? &t->shape : NULL; }

static kiln_status wino_geom_of_call(const kn_op_call *call, wino_geom *g) {
    const kn_tensor *b = call->node->n_in > 2 ? call->in[2] : NULL;
    return wino_geom_of(call->node, &call->in[0]->shape, &call->in[1]->shape, shape_or_null(b), g);
}

/* One thread's buffers for a block, each 64-byte aligned. */
typedef struct wino_scratch {
    size_t io_bytes;   /* the channel-last input block, later the output block */
    size_t v_bytes, z_bytes, gemm_bytes;
    size_t slot_bytes; /* all four */
} wino_scratch;

static int64_t block_tiles(const wino_geom *g) { return g->block_images * g->block_rows * g->tiles_w; }

/* a * b * c * d in size_t; false on overflow. */
static bool count_of(int64_t a, int64_t b, int64_t c, int64_t d, size_t *out) {
    return kn_size_mul((size_t)a, (size_t)b, out) && kn_size_mul(*out, (size_t)c, out) &&
           kn_size_mul(*out, (size_t)d, out) && *out <= SIZE_MAX / 8;
}

/* Sizes of the slot, V's buffer at least add_floats long (add_row_floats, or 0); false on overflow.
 * The factors themselves are bounded by X's and Y's dims (a block holds at most the batch's tiles),
 * which shape inference keeps within tensor limits. */
static bool wino_scratch_of(const wino_geom *g, size_t add_floats, wino_scratch *s) {
    size_t in_floats, out_floats, v_floats, z_floats;
    if (!count_of(g->block_images, g->in_rows, g->in_cols, g->Cp, &in_floats) ||
        !count_of(g->block_images, TILE * g->block_rows, g->out_cols, g->Mp, &out_floats) ||
        !count_of(KN_WINOGRAD_POINTS, g->block_images * g->block_rows, g->tiles_w, g->Cp, &v_floats) ||
        !count_of(KN_WINOGRAD_POINTS, g->block_images * g->block_rows, g->tiles_w, g->Mp, &z_floats))
        return false;
    s->io_bytes = kn_round_up_64(sizeof(float) * (in_floats > out_floats ? in_floats : out_floats));
    s->v_bytes = kn_round_up_64(sizeof(float) * (v_floats > add_floats ? v_floats : add_floats));
    s->z_bytes = kn_round_up_64(sizeof(float) * z_floats);
    size_t gemm = kn_sgemm_workspace(false, false, block_tiles(g), g->M, g->C);
    if (gemm == SIZE_MAX || gemm > SIZE_MAX / 8)
        return false;
    s->gemm_bytes = kn_round_up_64(gemm);
    s->slot_bytes = s->io_bytes + s->v_bytes + s->z_bytes + s->gemm_bytes;
    return s->slot_bytes <= SIZE_MAX / 4;
}

/* A block is shared by `parts` threads, part `part` taking its share of each step, or run by one
 * (part 0 of 1). Each step's items (rows, tiles, points, channels) are computed the same way whoever
 * computes them. */
typedef struct wino_share {
    int part, parts;
} wino_share;

/* This part's items [*first, *last) of `count`. */
static void share_range(const wino_share *sh, int64_t count, int64_t *first, int64_t *last) {
    *first = count * sh->part / sh->parts;
    *last = count * (sh->part + 1) / sh->parts;
}

/* Which tiles a block holds: tile rows [i0, i0 + rows) of images [n0, n0 + images). */
typedef struct wino_span {
    int64_t n0, images, i0, rows;
} wino_span;

static wino_span wino_span_of(const wino_geom *g, int64_t block) {
    if (g->block_images > 1) {
        int64_t n0 = block * g->block_images;
        return (wino_span){n0, g->N - n0 < g->block_images ? g->N - n0 : g->block_images, 0, g->tiles_h};
    }
    int64_t i0 = block % g->blocks_per_image * g->block_rows;
    return (wino_span){block / g->blocks_per_image, 1, i0, g->tiles_h - i0 < g->block_rows ? g->tiles_h - i0 : g->block_rows};
}

/* Step 1: for each image q of the span, input rows 4 i0 - pad_top ... of x (N, C, H, W) into
 * in + q * in_rows rows (in_rows, in_cols, Cp), channel-last, zero where the rows and columns fall in
 * the padding and past C; this part's rows. */
static void block_gather(const wino_geom *g, const kn_winograd_kernels *k, const float *x, const wino_span *sp,
                         float *in, const wino_share *sh) {
    int64_t plane = g->h.in * g->w.in, row_floats = g->in_cols * g->Cp;
    int64_t left = g->w.pad_begin < g->in_cols ? g->w.pad_begin : g->in_cols; // padding columns on the left
    int64_t cols = g->w.in < g->in_cols - left ? g->w.in : g->in_cols - left;   // then the image's
    int64_t first, last;
    share_range(sh, sp->images * g->in_rows, &first, &last);
    for (int64_t qr = first; qr < last; qr++) {
        int64_t q = qr / g->in_rows, r = qr % g->in_rows;
        float *row = in + qr * row_floats; // (in_cols, Cp)
        int64_t h = TILE * sp->i0 - g->h.pad_begin + r;
        if (h < 0 || h >= g->h.in) {
            memset(row, 0, sizeof(float) * (size_t)row_floats);
            continue;
        }
        memset(row, 0, sizeof(float) * (size_t)(left * g->Cp));
        k->to_last(x + (sp->n0 + q) * g->C * plane + h * g->w.in, plane, g->C, cols, row + left * g->Cp, g->Cp);
        memset(row + (left + cols) * g->Cp, 0, sizeof(float) * (size_t)((g->in_cols - left - cols) * g->Cp));
    }
}

/* One output row (OW pixels) of the output block, src (OW, Mp) channel-last, added to the M planes of
 * y_row (the row's first pixel in channel 0, planes `plane` apart): made channel-first in row
 * (M, OW) by the exact transpose first, so that the sums read and write runs of memory. */
static void row_add_from_last(const kn_winograd_kernels *k, const float *src, int64_t Mp, int64_t M, int64_t OW,
                              float *row, float *y_row, int64_t plane) {
    k->from_last(src, Mp, M, OW, row, OW);
    for (int64_t m = 0; m < M; m++)
        for (int64_t j = 0; j < OW; j++)
            y_row[m * plane + j] += row[m * OW + j];
}

/* Output rows [4 i0, 4 i0 + *rows) of the span's images: the block's, within the output. */
static int64_t span_out_rows(const wino_geom *g, const wino_span *sp) {
    int64_t oh0 = TILE * sp->i0;
    return g->h.out - oh0 < TILE * sp->rows ? g->h.out - oh0 : TILE * sp->rows;
}

/* Step 5: for each image q of the span, rows [4 i0, 4 i0 + 4 rows) of y (N, M, OH, OW) = its part of the
 * output block out (TILE * block_rows rows of (out_cols, Mp) each); this part's rows (block_finish
 * then adds the bias and applies the activation). With `add` (no bias, no activation), y += that part
 * instead, each row through `row` (M * OW floats of this part's). */
static void block_scatter(const wino_geom *g, const kn_winograd_kernels *k, const float *out, bool add, float *row,
                          const wino_span *sp, float *y, const wino_share *sh) {
    int64_t oh0 = TILE * sp->i0, rows = span_out_rows(g, sp);
    int64_t plane = g->h.out * g->w.out, out_rows = TILE * g->block_rows, first, last;
    share_range(sh, sp->images * rows, &first, &last);
    if (add) {
        for (int64_t qr = first; qr < last; qr++) {
            int64_t q = qr / rows, r = qr % rows;
            row_add_from_last(k, out + (q * out_rows + r) * g->out_cols * g->Mp, g->Mp, g->M, g->w.out, row,
                              y + (sp->n0 + q) * g->M * plane + (oh0 + r) * g->w.out, plane);
        }
        return;
    }
    for (int64_t qr = first; qr < last; qr++) {
        int64_t q = qr / rows, r = qr % rows;
        k->from_last(out + (q * out_rows + r) * g->out_cols * g->Mp, g->Mp, g->M, g->w.out,
                     y + (sp->n0 + q) * g->M * plane + (oh0 + r) * g->w.out, plane);
    }
}

/* Step 6, once every part of step 5 is done (none when y is added to): the bias, then the activation,
 * on the rows block_scatter wrote; this part's channels. */
static void block_finish(const wino_geom *g, const kn_fused_act *act, const float *bias, const wino_span *sp,
                         float *y, const wino_share *sh) {
    int64_t oh0 = TILE * sp->i0, plane = g->h.out * g->w.out, span = span_out_rows(g, sp) * g->w.out, first, last;
    share_range(sh, sp->images * g->M, &first, &last);
    for (int64_t qm = first; qm < last; qm++) {
        int64_t m = qm % g->M;
        float *y_m = y + (sp->n0 * g->M + qm) * plane + oh0 * g->w.out; // (rows, OW)
        if (bias)
            for (int64_t i = 0; i < span; i++)
                y_m[i] += bias[m];
        kn_fused_act_apply_serial(act, y_m, span); /* while the rows are in cache */
    }
}

/* Step 2: V = the input transform of the span's T tiles from the channel-last input block in
 * (block_gather), point xi of tile t at v + xi * v_step + t * Cp; this part's tiles. */
static void block_input_transform(const wino_geom *g, const kn_winograd_kernels *k, const float *in,
                                  const wino_span *sp, float *v, int64_t v_step, const wino_share *sh) {
    int64_t image_tiles = sp->rows * g->tiles_w, T = sp->images * image_tiles, first, last;
    share_range(sh, T, &first, &last);
    for (int64_t t = first; t < last; t++) {
        int64_t q = t / image_tiles, i = t % image_tiles / g->tiles_w, col = t % g->tiles_w;
        const float *patch = in + ((q * g->in_rows + TILE * i) * g->in_cols + TILE * col) * g->Cp;
        for (int64_t c = 0; c < g->Cp; c += LANES)
            k->input(patch + c, g->in_cols * g->Cp, g->Cp, v + t * g->Cp + c, v_step);
    }
}

typedef struct wino_job {
    const wino_geom *g;
    const kn_fused_act *act;
    const kn_winograd_kernels *kernels;
    const float *x, *u, *bias;
    bool add; /* y += the convolution (no bias, no activation) */
    float *y;
    float *v_keep; /* every block's V kept here (kept_v_of), or NULL: V in the slot */
} wino_job;

/* The batch's tiles, and the first of span sp's: a kept V is (36, all tiles, Cp), so that a block's
 * part of each point is T rows Cp apart at the same place whatever the blocks are. */
static int64_t batch_tiles(const wino_geom *g) { return g->N * g->tiles_h * g->tiles_w; }

static int64_t span_first_tile(const wino_geom *g, const wino_span *sp) {
    return (sp->n0 * g->tiles_h + sp->i0) * g->tiles_w;
}

/* The steps of a block (at the top), the bias and activation of step 5 one of their own (block_finish):
 * a block shared among parts runs each step on all parts before the next, which reads what they wrote. */
enum { WINO_STEPS = 6 };

/* Step `step` of block `block`, this part's share: its buffers in `slot`, the products' workspace in
 * `own` (this part's). Tile t of the block is tile (i, col) of image q of its span, t = (q rows + i)
 * tiles_w + col. */
static void wino_block_step(const wino_job *j, int64_t block, int step, unsigned char *slot, unsigned char *own,
                            const wino_scratch *s, const wino_share *sh) {
    const wino_geom *g = j->g;
    float *io = (float *)slot;
    wino_span sp = wino_span_of(g, block);
    // V (36, T, Cp), point xi at v + xi * v_step: in the slot, or in its place in the kept V
    float *v = j->v_keep ? j->v_keep + span_first_tile(g, &sp) * g->Cp : (float *)(slot + s->io_bytes);
    float *z = (float *)(slot + s->io_bytes + s->v_bytes);              // (36, T, Mp)
    void *gemm_ws = own + s->io_bytes + s->v_bytes + s->z_bytes;
    int64_t image_tiles = sp.rows * g->tiles_w, T = sp.images * image_tiles, first, last;
    int64_t v_step = (j->v_keep ? batch_tiles(g) : T) * g->Cp;

    switch (step) {
    case 0:
        block_gather(g, j->kernels, j->x, &sp, io, sh);
        return;
    case 1:
        block_input_transform(g, j->kernels, io, &sp, v, v_step, sh);
        return;
    case 2:
        share_range(sh, KN_WINOGRAD_POINTS, &first, &last);
        for (int64_t xi = first; xi < last; xi++) {
            float *z_xi = z + xi * T * g->Mp;
            if (g->Mp > g->M) // the lanes past M that the output transform reads and drops
                for (int64_t r = 0; r < T; r++)
                    memset(z_xi + r * g->Mp + g->M, 0, sizeof(float) * (size_t)(g->Mp - g->M));
            kn_sgemm_ws(gemm_ws, s->gemm_bytes, false, false, T, g->M, g->C, 1.0f, v + xi * v_step, g->Cp,
                        j->u + xi * g->C * g->M, g->M, 0.0f, z_xi, g->Mp);
        }
        return;
    case 3:
        share_range(sh, T, &first, &last);
        for (int64_t t = first; t < last; t++) {
            int64_t q = t / image_tiles, i = t % image_tiles / g->tiles_w, col = t % g->tiles_w;
            float *dst = io + ((q * TILE * g->block_rows + TILE * i) * g->out_cols + TILE * col) * g->Mp;
            for (int64_t m = 0; m < g->Mp; m += LANES)
                j->kernels->output(z + t * g->Mp + m, T * g->Mp, dst + m, g->out_cols * g->Mp, g->Mp);
        }
        return;
    case 4: {
        // V's slot is free by now: each part's row for the added outputs (room for parts rows:
        // wino_scratch_of; an added convolution keeps no V)
        float *row = (float *)(slot + s->io_bytes) + (size_t)sh->part * (size_t)(g->M * g->w.out);
        block_scatter(g, j->kernels, io, j->add, row, &sp, j->y, sh);
        return;
    }
    default:
        block_finish(g, j->act, j->bias, &sp, j->y, sh);
    }
}

/* One step of a block for kn_parallel_for over its parts: part p's products' workspace in the slot at
 * own + p slot_bytes (a part runs once). */
typedef struct wino_step_run {
    const wino_job *j;
    const wino_scratch *s;
    unsigned char *slot, *own;
    int64_t block;
    int step, parts;
} wino_step_run;

static void wino_step_part(void *ctx, int64_t part, int slot) {
    (void)slot;
    const wino_step_run *r = ctx;
    wino_share sh = {(int)part, r->parts};
    wino_block_step(r->j, r->block, r->step, r->slot, r->own + r->s->slot_bytes * (size_t)part, r->s, &sh);
}

/* Block `block` in `parts` parts, its buffers in `slot`: each step one kn_parallel_for over the parts,
 * so that the next starts once every part of it has returned, and the next block overwrites the buffers
 * only after the last. One part runs the steps on the calling thread. */
static void wino_block(const wino_job *j, int64_t block, unsigned char *slot, unsigned char *own,
                       const wino_scratch *s, int parts) {
    int steps = j->add ? WINO_STEPS - 1 : WINO_STEPS; // an added convolution has no bias or activation
    for (int step = 0; step < steps; step++) {
        wino_step_run r = {j, s, slot, own, block, step, parts};
        kn_parallel_for(parts, parts, wino_step_part, &r);
    }
}

/* How the threads split the work. With at least 4 blocks per thread, one loop over the blocks, each
 * whole on one thread (and at most a quarter of a thread's share idle at the end). With fewer, each
 * block is shared: each step one loop over the parts of its rows, tiles or points, the next step
 * starting when it returns. One thread runs everything itself. */
typedef enum wino_mode { WINO_ONE, WINO_BLOCKS, WINO_SHARED } wino_mode;

static wino_mode wino_mode_of(const wino_geom *g, int threads) {
    return threads == 1 ? WINO_ONE : g->blocks >= 4 * (int64_t)threads ? WINO_BLOCKS : WINO_SHARED;
}

/* Bytes of scratch: a slot per thread (a shared block uses slot 0's buffers and each part's own
 * products' workspace); false on overflow. */
static bool wino_total_bytes(const wino_scratch *s, int threads, size_t *total) {
    return kn_size_mul(s->slot_bytes, (size_t)threads, total);
}

/* Whole blocks for kn_parallel_for, each in its slot of scratch. */
typedef struct wino_blocks {
    const wino_job *job;
    const wino_scratch *s;
    unsigned char *scratch;
} wino_blocks;

static void wino_block_of(void *ctx, int64_t block, int slot) {
    const wino_blocks *r = ctx;
    unsigned char *own = r->scratch + r->s->slot_bytes * (size_t)slot;
    wino_block(r->job, block, own, own, r->s, 1);
}

/* Runs every block of job->g with `threads` threads, their slots in scratch (wino_total_bytes). */
static void wino_run(const wino_job *job, const wino_scratch *s, unsigned char *scratch, int threads) {
    wino_mode mode = wino_mode_of(job->g, threads);
    if (mode == WINO_SHARED) {
        for (int64_t b = 0; b < job->g->blocks; b++)
            wino_block(job, b, scratch, scratch, s, threads);
        return;
    }
    wino_blocks blocks = {job, s, scratch};
    kn_parallel_for(job->g->blocks, mode == WINO_BLOCKS ? threads : 1, wino_block_of, &blocks);
}

static kiln_status winograd_forward(const kn_op_call *call) {
    wino_geom g = {0};
    KN_TRY(wino_geom_of_call(call, &g));
    kn_fused_act act;
    KN_TRY(kn_fused_act_of(call->node, &act));
    wino_scratch s;
    int threads = kn_threads_get();
    size_t total;
    if (!wino_scratch_of(&g, 0, &s) || !wino_total_bytes(&s, threads, &total))
        return kn_fail(KILN_ERR_NOMEM, "the Winograd buffers of X (%lld, %lld, %lld, %lld) overflow", (long long)g.N,
                       (long long)g.C, (long long)g.h.in, (long long)g.w.in);
    unsigned char *scratch = kn_op_scratch(call->ctx, total);
    if (!scratch)
        return kn_fail(KILN_ERR_NOMEM, "no memory for %zu bytes of Winograd buffers", total);
    wino_job job = {.g = &g, .act = &act, .kernels = kn_winograd_kernels_best(), .x = kn_f32(call->in[0]),
                    .u = kn_f32(call->in[1]),
                    .bias = call->node->n_in > 2 && call->in[2] ? kn_f32(call->in[2]) : NULL,
                    .y = kn_f32(call->out[0])};
    wino_run(&job, &s, scratch, threads);
    return KILN_OK;
}

static kiln_status winograd_infer(kn_graph *graph, const kn_node *node) {
    const kn_value *x, *u, *b;
    KN_TRY(kn_conv_infer_inputs(graph, node, &x, &u, &b));
    wino_geom g = {0};
    KN_TRY(wino_geom_of(node, &x->shape, &u->shape, b ? &b->shape : NULL, &g));
    kn_fused_act act;
    KN_TRY(kn_fused_act_of(node, &act));
    kn_value *y = &graph->values[node->out[0]];
    y->shape = kn_shape_of(4, (int64_t[]){g.N, g.M, g.h.out, g.w.out});
    y->dtype = KN_F32;
    return KILN_OK;
}

/* The direct convolution's count, so that the profile's rate compares with Conv's. */
static int64_t winograd_flops(const kn_graph *graph, const kn_node *node) {
    const kn_value *x = kn_node_input(graph, node, 0), *u = kn_node_input(graph, node, 1);
    const kn_value *b = kn_node_input(graph, node, 2);
    wino_geom g = {0};
    if (wino_geom_of(node, &x->shape, &u->shape, b ? &b->shape : NULL, &g) != KILN_OK)
        return 0;
    int64_t outputs = kn_count_mul(g.N * g.M, kn_count_mul(g.h.out, g.w.out));
    return kn_count_add(kn_count_mul(2, kn_count_mul(outputs, g.C * 9)), b ? outputs : 0);
}

static size_t winograd_workspace(const kn_graph *graph, const kn_node *node) {
    const kn_value *x = kn_node_input(graph, node, 0), *u = kn_node_input(graph, node, 1);
    const kn_value *b = kn_node_input(graph, node, 2);
    wino_geom g = {0};
    wino_scratch s;
    size_t total;
    if (wino_geom_of(node, &x->shape, &u->shape, b ? &b->shape : NULL, &g) != KILN_OK || !wino_scratch_of(&g, 0, &s) ||
        !wino_total_bytes(&s, kn_threads_get(), &total))
        return 0;
    return total;
}

const kn_op kn_op_convwinograd = {
    .name = "ConvWinograd",
    .min_inputs = 2,
    .max_inputs = 3,
    .infer = winograd_infer,
    .forward = winograd_forward,
    .flops = winograd_flops,
    .workspace = winograd_workspace,
};

/* ---- Training --------------------------------------------------------------------------------------- */

static bool axis_trains(const kn_window_axis *a) {
    return a->kernel == 3 && a->stride == 1 && a->dilation == 1 && a->pad_begin >= 0 && a->pad_begin <= 2 &&
           a->pad_end >= 0 && a->pad_end <= 2 && a->out >= 1;
}

bool kn_conv_winograd_trains(const kn_window_axis *h, const kn_window_axis *w, int64_t C, int64_t M) {
    return axis_trains(h) && axis_trains(w) && channels_suit(C, M);
}

kn_window_axis kn_conv_winograd_grad_axis(const kn_window_axis *a) {
    return (kn_window_axis){.in = a->out, .kernel = 3, .stride = 1, .dilation = 1, .pad_begin = 2 - a->pad_begin,
                            .pad_end = 2 - a->pad_end, .out = a->in};
}

/* The blocks of a training convolution on `threads` threads. Threads take runs of whole blocks, so
 * blocks of several images are made equal and their count a multiple of the threads when a block of
 * at least half the images wino_geom_fill chose allows it: the CNN's 64 images in blocks of 6 made 11,
 * 36 images for one thread and 28 for the other; in blocks of 4, 16. */
static wino_geom wino_geom_of_conv(const kn_winograd_conv *c, int threads) {
    wino_geom g = {.N = c->N, .C = c->C, .M = c->M};
    wino_geom_fill(&g, &c->h, &c->w);
    for (int64_t images = g.block_images; threads > 1 && g.block_images > 1 && images * 2 >= g.block_images; images--)
        if (g.N % images == 0 && g.N / images % threads == 0) {
            g.block_images = images;
            g.blocks = g.N / images;
            break;
        }
    return g;
}

/* The rows block_scatter adds through, one per thread (in V's place): M * OW floats each. */
static size_t add_row_floats(const wino_geom *g, int threads) {
    return (size_t)threads * (size_t)g->M * (size_t)g->w.out; /* within Y's size */
}

size_t kn_conv_winograd_bytes(const kn_winograd_conv *c, int threads) {
    wino_geom g = wino_geom_of_conv(c, threads);
    wino_scratch s;
    size_t total;
    return wino_scratch_of(&g, add_row_floats(&g, threads), &s) && wino_total_bytes(&s, threads, &total) ? total : 0;
}

size_t kn_conv_winograd_kept_floats(const kn_winograd_conv *c) {
    wino_geom g = wino_geom_of_conv(c, 1); /* the tiles do not depend on the blocks */
    size_t floats;
    return kn_size_mul((size_t)batch_tiles(&g), (size_t)g.Cp * KN_WINOGRAD_POINTS, &floats) ? floats : 0;
}

void kn_conv_winograd_apply(const kn_winograd_conv *c, const float *x, const float *u, const float *bias,
                            const kn_fused_act *act, bool add, float *y, float *v_keep, void *scratch, int threads) {
    wino_geom g = wino_geom_of_conv(c, threads);
    wino_scratch s;
    wino_scratch_of(&g, add ? add_row_floats(&g, threads) : 0, &s); /* kn_conv_winograd_bytes checked it */
    wino_job job = {.g = &g, .act = act, .kernels = kn_winograd_kernels_best(), .x = x, .u = u, .bias = bias,
                    .add = add, .y = y, .v_keep = add ? NULL : v_keep};
    wino_run(&job, &s, scratch, threads);
}

/* ---- Training: the weight gradient ------------------------------------------------------------------
 * With V_xi (T, C) the input transform of a block's tiles (as forward's) and D_xi (T, M) = A dY A^T of
 * their output gradients (zero past the output's edge), the transformed filters' gradient is
 *     dU_xi (C, M) = sum over the batch's tiles of V_xi^T @ D_xi
 * and each filter's dW[m][c] = G^T dU[., c, m] G (6x6 -> 3x3, in double). Each part (one per thread)
 * takes a run of whole blocks and sums their products into its own dU; the parts' dU are added in part
 * order, channel by channel, so dW depends on the thread count only, as on Conv's im2col path. */

/* Slot of one thread: the block's channel-last input, later its output gradient (io), V, D, the
 * products' workspace and the thread's dU (36, C, M), each 64-byte aligned. */
typedef struct wgrad_scratch {
    wino_scratch block; /* io, V and D (as Z) of forward's slot; its products' workspace unused */
    size_t gemm_bytes, du_bytes, slot_bytes;
} wgrad_scratch;

static bool wgrad_scratch_of(const wino_geom *g, wgrad_scratch *s) {
    if (!wino_scratch_of(g, 0, &s->block))
        return false;
    size_t gemm = kn_sgemm_workspace(true, false, g->C, g->M, block_tiles(g));
    if (gemm == SIZE_MAX || gemm > SIZE_MAX / 8)
        return false;
    s->gemm_bytes = kn_round_up_64(gemm);
    s->du_bytes = kn_round_up_64(sizeof(float) * KN_WINOGRAD_POINTS * (size_t)(g->C * g->M)); /* W's size x 36 */
    s->slot_bytes = s->block.io_bytes + s->block.v_bytes + s->block.z_bytes + s->gemm_bytes + s->du_bytes;
    return s->slot_bytes <= SIZE_MAX / 4;
}

static float *wgrad_du(const wgrad_scratch *s, unsigned char *slot) {
    return (float *)(slot + s->slot_bytes - s->du_bytes);
}

/* Rows [4 i0, 4 i0 + 4 rows) of each image's output gradient dy (N, M, OH, OW) into out, channel-last
 * ((TILE * block_rows, out_cols, Mp) per image), zero past the output's edge and past M. */
static void block_gather_grad(const wino_geom *g, const kn_winograd_kernels *k, const float *dy, const wino_span *sp,
                              float *out) {
    int64_t plane = g->h.out * g->w.out, row_floats = g->out_cols * g->Mp;
    for (int64_t q = 0; q < sp->images; q++)
        for (int64_t r = 0; r < TILE * sp->rows; r++) {
            float *row = out + (q * TILE * g->block_rows + r) * row_floats; // (out_cols, Mp)
            int64_t oh = TILE * sp->i0 + r;
            if (oh >= g->h.out) {
                memset(row, 0, sizeof(float) * (size_t)row_floats);
                continue;
            }
            k->to_last(dy + (sp->n0 + q) * g->M * plane + oh * g->w.out, plane, g->M, g->w.out, row, g->Mp);
            memset(row + g->w.out * g->Mp, 0, sizeof(float) * (size_t)((g->out_cols - g->w.out) * g->Mp));
        }
}

typedef struct wgrad_job {
    const wino_geom *g;
    const wgrad_scratch *s;
    const kn_winograd_kernels *kernels;
    const float *x, *dy;
    const float *v_kept; /* forward's V of every block (kn_conv_winograd_apply's v_keep), or NULL */
    unsigned char *slots;
    int team; /* parts of the blocks */
    float *dw;
} wgrad_job;

/* Block `block`'s products added into the thread's dU (stored, for its first block). */
static void wgrad_block(const wgrad_job *j, int64_t block, unsigned char *slot, bool first) {
    const wino_geom *g = j->g;
    const wino_scratch *bs = &j->s->block;
    float *io = (float *)slot;
    float *d = (float *)(slot + bs->io_bytes + bs->v_bytes);   // (36, T, Mp)
    void *gemm_ws = slot + bs->io_bytes + bs->v_bytes + bs->z_bytes;
    float *du = wgrad_du(j->s, slot);                          // (36, C, M)
    wino_span sp = wino_span_of(g, block);
    wino_share one = {0, 1};
    int64_t image_tiles = sp.rows * g->tiles_w, T = sp.images * image_tiles;

    // V (36, T, Cp), point xi at v + xi * v_step: forward's, or transformed again into the slot
    const float *v = j->v_kept ? j->v_kept + span_first_tile(g, &sp) * g->Cp : (float *)(slot + bs->io_bytes);
    int64_t v_step = (j->v_kept ? batch_tiles(g) : T) * g->Cp;
    if (!j->v_kept) {
        block_gather(g, j->kernels, j->x, &sp, io, &one);
        block_input_transform(g, j->kernels, io, &sp, (float *)(slot + bs->io_bytes), v_step, &one);
    }
    block_gather_grad(g, j->kernels, j->dy, &sp, io);
    for (int64_t t = 0; t < T; t++) {
        int64_t q = t / image_tiles, i = t % image_tiles / g->tiles_w, col = t % g->tiles_w;
        const float *patch = io + ((q * TILE * g->block_rows + TILE * i) * g->out_cols + TILE * col) * g->Mp;
        for (int64_t m = 0; m < g->Mp; m += LANES)
            j->kernels->output_grad(patch + m, g->out_cols * g->Mp, g->Mp, d + t * g->Mp + m, T * g->Mp);
    }
    for (int64_t xi = 0; xi < KN_WINOGRAD_POINTS; xi++)
        kn_sgemm_ws(gemm_ws, j->s->gemm_bytes, true, false, g->C, g->M, T, 1.0f, v + xi * v_step, g->Cp,
                    d + xi * T * g->Mp, g->Mp, first ? 0.0f : 1.0f, du + xi * g->C * g->M, g->M);
}

/* Part t of team's run of blocks, for kn_parallel_for, into part t's slot's dU (a part runs once). */
static void wgrad_blocks(void *ctx, int64_t t, int slot) {
    (void)slot;
    const wgrad_job *j = ctx;
    int64_t first = j->g->blocks * t / j->team, last = j->g->blocks * (t + 1) / j->team;
    for (int64_t b = first; b < last; b++)
        wgrad_block(j, b, j->slots + j->s->slot_bytes * (size_t)t, b == first);
}

/* dw (M, C, 3, 3) += G^T du G per filter for channels [c0, c1), du (36, C, M), in double; FILTER_BLOCK
 * filters at a time. */
static void wgrad_filters(const float *du, int64_t M, int64_t C, int64_t c0, int64_t c1, float *dw) {
    const double(*G)[3] = winograd_G;
    for (int64_t c = c0; c < c1; c++)
        for (int64_t m0 = 0; m0 < M; m0 += FILTER_BLOCK) {
            int64_t count = block_count(m0, M);
            double gt[3][PATCH][FILTER_BLOCK] = {{{0}}}; // G^T dU
            for (int i = 0; i < 3; i++)
                for (int a = 0; a < PATCH; a++)
                    for (int b = 0; b < PATCH; b++) {
                        const float *src = du + ((a * PATCH + b) * C + c) * M + m0;
                        for (int64_t l = 0; l < count; l++)
                            gt[i][b][l] += G[a][i] * src[l];
                    }
            for (int64_t l = 0; l < count; l++) {
                float *w = dw + ((m0 + l) * C + c) * 9;
                for (int i = 0; i < 3; i++)
                    for (int jj = 0; jj < 3; jj++) {
                        double sum = 0.0;
                        for (int b = 0; b < PATCH; b++)
                            sum += gt[i][b][l] * G[b][jj];
                        w[i * 3 + jj] += (float)sum;
                    }
            }
        }
}

/* Channels [c0, c1) of dW: the other parts' dU added to part 0's in part order, then the filters. */
static void wgrad_channels(void *ctx, int64_t c0, int64_t c1, int slot) {
    (void)slot;
    const wgrad_job *j = ctx;
    int64_t C = j->g->C, M = j->g->M;
    float *du = wgrad_du(j->s, j->slots); // (36, C, M), part 0's
    for (int t = 1; t < j->team; t++) {
        const float *own = wgrad_du(j->s, j->slots + j->s->slot_bytes * (size_t)t);
        for (int64_t xi = 0; xi < KN_WINOGRAD_POINTS; xi++)
            for (int64_t i = (xi * C + c0) * M; i < (xi * C + c1) * M; i++)
                du[i] += own[i];
    }
    wgrad_filters(du, M, C, c0, c1, j->dw);
}

size_t kn_conv_winograd_grad_w_bytes(const kn_winograd_conv *c, int threads) {
    wino_geom g = wino_geom_of_conv(c, threads);
    wgrad_scratch s;
    size_t total;
    return wgrad_scratch_of(&g, &s) && kn_size_mul(s.slot_bytes, (size_t)threads, &total) ? total : 0;
}

void kn_conv_winograd_grad_w(const kn_winograd_conv *c, const float *x, const float *v_kept, const float *dy,
                             float *dw, void *scratch, int threads) {
    wino_geom g = wino_geom_of_conv(c, threads);
    wgrad_scratch s;
    wgrad_scratch_of(&g, &s); /* kn_conv_winograd_grad_w_bytes checked it */
    unsigned char *slots = scratch;
    int team = g.blocks < threads ? (int)g.blocks : threads;
    wgrad_job job = {&g, &s, kn_winograd_kernels_best(), x, dy, v_kept, slots, team, dw};
    kn_parallel_for(team, team, wgrad_blocks, &job);
    bool worth_threads = KN_WINOGRAD_POINTS * g.C * g.M * team >= KN_PARALLEL_MIN_MEMORY; /* floats summed */
    kn_parallel_range(g.C, worth_threads ? threads : 1, wgrad_channels, &job);
}
