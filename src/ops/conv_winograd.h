/* Winograd F(4x4, 3x3) convolution: for inference the ConvWinograd op (src/ops/conv_winograd.c) that
 * the inference optimizer (src/runtime/optimize.c, KN_OPT_WINOGRAD) puts in place of a Conv it suits;
 * for training, Conv's own forward, dX and dW (ops/conv.c, below).
 *
 * ConvWinograd reads X (N, C, H, W), U (36, C, M) — the filters W (M, C, 3, 3) transformed once by
 * kn_conv_winograd_weights — and an optional bias B (M), and keeps the Conv's attributes (pads,
 * auto_pad, the fused activation of ops/fused_act.h); its output is the Conv's. */
#ifndef KN_OPS_CONV_WINOGRAD_H
#define KN_OPS_CONV_WINOGRAD_H

#include <stdbool.h>
#include <stdint.h>

#include "core/graph.h"
#include "ops/fused_act.h"
#include "ops/window.h"

/* Products per tile: the transformed tile is 6x6. */
#define KN_WINOGRAD_POINTS 36

/* Whether Conv node n suits ConvWinograd: a 2-D Conv of one group, strides and dilations 1, a constant
 * f32 weight (M, C, 3, 3) with enough channels that the matrix products dominate the transforms. */
bool kn_conv_winograd_suits(const kn_graph *g, const kn_node *n);

/* Whether a Conv that suits Winograd (and trains by it, kn_conv_winograd_trains) runs faster directly
 * at small batches: its image, as the graph gives it, has fewer than KN_WINOGRAD_BATCH_MIN_TILES
 * output tiles and its transformed weights more than KN_WINOGRAD_CACHED_BYTES. Such weights come
 * from memory at every run, four times the bytes the direct products read, while a few tiles save
 * little arithmetic: resnet18's 256 -> 256 layers on 14x14 (9.4 MB transformed, 16 tiles) took 2.6 ms
 * by Winograd at batch 1 and 1.66 directly, but 27 and 56 ms at batch 32 (1 thread, 2 MiB-L2 Xeon).
 * The optimizer makes such a Conv a ConvPacked that also carries U (ops/conv_prepack.h), whose runs
 * take Winograd when the batch has at least KN_WINOGRAD_BATCH_MIN_TILES tiles (kn_conv_winograd_tiles). */
bool kn_conv_winograd_by_batch(const kn_graph *g, const kn_node *n);
#define KN_WINOGRAD_BATCH_MIN_TILES 32
#define KN_WINOGRAD_CACHED_BYTES (4 << 20)

/* Output tiles of one image: the 4x4 tiles that cover OH x OW. */
int64_t kn_conv_winograd_tiles(const kn_window_axis *h, const kn_window_axis *w);

/* u (36, C, M) = G w G^T per filter: w (M, C, 3, 3), computed in double and rounded once. */
void kn_conv_winograd_weights(const float *w, int64_t M, int64_t C, float *u);

/* ---- Training (ops/conv.c): Conv's forward and its gradient dX by the same transforms ------------- */

/* Whether a Conv of one group with window axes h and w, C input and M output channels trains by
 * Winograd: a 3x3 kernel at stride 1 and dilation 1, pads of at most 2 (so that dX is the 3x3,
 * stride-1 convolution of dY with pads 2 - pad, kn_conv_winograd_grad_axes), and channels and
 * transformed weights within kn_conv_winograd_suits's limits, both ways. */
bool kn_conv_winograd_trains(const kn_window_axis *h, const kn_window_axis *w, int64_t C, int64_t M);

/* The window axis of dX's convolution for the forward axis a (kn_conv_winograd_trains): dY's a.out
 * pixels in, a.in out, pads 2 - a's. */
kn_window_axis kn_conv_winograd_grad_axis(const kn_window_axis *a);

/* u (36, M, C): the transform of the filters of dX's convolution, w^T flipped, w'[c][m][i][j] =
 * w[m][c][2 - i][2 - j] for w (M, C, 3, 3); as kn_conv_winograd_weights of w'. */
void kn_conv_winograd_weights_flipped(const float *w, int64_t M, int64_t C, float *u);

/* One convolution by the transforms: y (N, M, OH, OW) = x (N, C, H, W) * the filters transformed into
 * u (36, C, M), + bias (M, or NULL), then act; or with `add`, y += x * those filters (bias NULL,
 * act none). h and w as kn_conv_winograd_trains takes them. */
typedef struct kn_winograd_conv {
    int64_t N, C, M;
    kn_window_axis h, w;
} kn_winograd_conv;

/* Bytes of scratch kn_conv_winograd_apply takes with `threads` threads; 0 on overflow. */
size_t kn_conv_winograd_bytes(const kn_winograd_conv *c, int threads);

/* Floats of the input transform V of all the batch's tiles, which forward can keep for dW (0 on
 * overflow). */
size_t kn_conv_winograd_kept_floats(const kn_winograd_conv *c);

/* v_keep: NULL, or kn_conv_winograd_kept_floats floats where forward (not `add`) leaves V for
 * kn_conv_winograd_grad_w. */
void kn_conv_winograd_apply(const kn_winograd_conv *c, const float *x, const float *u, const float *bias,
                            const kn_fused_act *act, bool add, float *y, float *v_keep, void *scratch, int threads);

/* dw (M, C, 3, 3) += the gradient of that convolution's filters, given x (or the V forward kept of it,
 * v_kept; NULL to transform x again) and the output gradient dy (N, M, OH, OW),
 * by the same transforms; the sum's order depends on the thread count only.
 * kn_conv_winograd_grad_w_bytes: its scratch with `threads` threads, 0 on overflow. */
size_t kn_conv_winograd_grad_w_bytes(const kn_winograd_conv *c, int threads);
void kn_conv_winograd_grad_w(const kn_winograd_conv *c, const float *x, const float *v_kept, const float *dy,
                             float *dw, void *scratch, int threads);

#endif
