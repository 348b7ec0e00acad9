/* Sliding-window geometry shared by Conv, ConvTranspose and the pools: how the ONNX attributes
 * strides, pads, dilations, auto_pad (and ceil_mode for pools, output_padding and output_shape for
 * ConvTranspose) place windows over the spatial axes of an (N, C, spatial...) tensor.
 *
 * The tuned 2-D code (conv.c, conv_transpose.c, pool.c, im2col.c) runs two axes, height and width; it
 * also runs 1-D ops as 2-D ones of height 1 (the *_as_2d resolvers), which read the same positions.
 * The N-D reference code (conv_nd.c, pool_nd.c) runs up to KN_WINDOW_MAX_RANK axes.
 */
#ifndef KN_OPS_WINDOW_H
#define KN_OPS_WINDOW_H

#include <stdbool.h>
#include <stdint.h>

#include "core/graph.h"
#include "core/status.h"

/* Spatial axes of a tensor of at most KN_MAX_DIMS dims, after N and C. */
#define KN_WINDOW_MAX_RANK (KN_MAX_DIMS - 2)

/* One spatial axis. Output position o reads input positions o * stride - pad_begin + k * dilation
 * for taps k in [0, kernel); positions outside [0, in) are padding. */
typedef struct kn_window_axis {
    int64_t in;
    int64_t kernel;
    int64_t stride;
    int64_t dilation;
    int64_t pad_begin, pad_end;
    int64_t out;
} kn_window_axis;

/* Reads the window attributes of `node` for `rank` spatial axes of sizes in[rank] and kernel sizes
 * kernel[rank]; fills axes[0, rank). ceil_mode rounds the output size up as pools do, and like
 * PyTorch drops a last window that would start in the end padding. */
kiln_status kn_window_resolve_nd(const kn_node *node, int rank, const int64_t *in,
                                 const int64_t *kernel, bool ceil_mode, kn_window_axis *axes);

/* kn_window_resolve_nd for a 2-D window: axes[0] height, axes[1] width. */
kiln_status kn_window_resolve(const kn_node *node, const int64_t in[2], const int64_t kernel[2],
                              bool ceil_mode, kn_window_axis axes[2]);

/* kn_window_resolve_nd for rank 1 or 2, as the 2-D code runs it: a 1-D window becomes a 2-D one
 * whose height axis (axes[0]) has size, kernel, stride and dilation 1 and no padding. */
kiln_status kn_window_resolve_as_2d(const kn_node *node, int rank, const int64_t *in,
                                    const int64_t *kernel, bool ceil_mode, kn_window_axis axes[2]);

/* ConvTranspose's geometry for `rank` spatial axes: x[rank] are the spatial dims of its input X and
 * kernel[rank] those of W. Each axis describes the convolution ConvTranspose is the adjoint of, which
 * reads ConvTranspose's output Y through windows and produces X: so axes[i].in is Y's size and
 * axes[i].out is X's. Reads strides, dilations, pads, auto_pad, output_padding and output_shape. */
kiln_status kn_window_resolve_transposed_nd(const kn_node *node, int rank, const int64_t *x,
                                            const int64_t *kernel, kn_window_axis *axes);

/* kn_window_resolve_transposed_nd for rank 1 or 2, as the 2-D code runs it (see
 * kn_window_resolve_as_2d). */
kiln_status kn_window_resolve_transposed_as_2d(const kn_node *node, int rank, const int64_t *x,
                                               const int64_t *kernel, kn_window_axis axes[2]);

/* Span of the dilated kernel: (kernel - 1) * dilation + 1. */
static inline int64_t kn_window_extent(const kn_window_axis *a) {
    return (a->kernel - 1) * a->dilation + 1;
}

/* Input position read by tap 0 of output o (negative inside the begin padding). */
static inline int64_t kn_window_start(const kn_window_axis *a, int64_t o) {
    return o * a->stride - a->pad_begin;
}

/* The outputs [*lo, *hi) at which tap `tap` reads a real input position, not padding. */
void kn_window_tap_range(const kn_window_axis *a, int64_t tap, int64_t *lo, int64_t *hi);

/* The taps [*lo, *hi) of output o's window that read real input positions, not padding. */
void kn_window_taps_inside(const kn_window_axis *a, int64_t o, int64_t *lo, int64_t *hi);

/* KILN_ERR_SHAPE when a window covers only padding along one of the `rank` axes: a pool has nothing
 * to take from it. Costs O(log dilation) per axis, not one step per window: shape inference runs it
 * on shapes whose size nothing has limited yet. */
kiln_status kn_window_check_reads_input(const kn_window_axis *axes, int rank);

/* ---- N-D windows, for the reference code ---- */

/* The spatial axes of an N-D window and the sizes of the flattened planes. */
typedef struct kn_window_nd {
    int rank;
    kn_window_axis axes[KN_WINDOW_MAX_RANK];
    int64_t in_size, out_size, taps; /* products of in, out and kernel over the axes */
} kn_window_nd;

/* Fills the products of `win`, whose rank and axes are set. */
void kn_window_nd_sizes(kn_window_nd *win);

/* The taps of one output's window that read real input positions, in kernel order (last axis
 * fastest), as the loop
 *     for (kn_window_walk_begin(&w, win, o); !w.done; kn_window_walk_next(&w))
 *         ... w.tap (index into the flattened kernel), w.at (offset into the flattened input plane)
 */
typedef struct kn_window_walk {
    const kn_window_nd *win;
    int64_t start[KN_WINDOW_MAX_RANK];  /* input position of tap 0 along each axis */
    int64_t lo[KN_WINDOW_MAX_RANK], hi[KN_WINDOW_MAX_RANK]; /* taps that read real positions */
    int64_t k[KN_WINDOW_MAX_RANK];      /* the current tap along each axis */
    int64_t tap, at;
    bool done;
} kn_window_walk;

/* Starts the walk over the window of output `out_index` (an index into the flattened output plane). */
void kn_window_walk_begin(kn_window_walk *w, const kn_window_nd *win, int64_t out_index);
void kn_window_walk_next(kn_window_walk *w);

#endif
