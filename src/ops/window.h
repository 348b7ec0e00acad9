/* Sliding-window geometry shared by Conv and the pools: how the ONNX attributes strides, pads,
 * dilations, auto_pad (and ceil_mode for pools) place windows over the two spatial axes of an
 * NCHW tensor.
 */
#ifndef KN_OPS_WINDOW_H
#define KN_OPS_WINDOW_H

#include <stdbool.h>
#include <stdint.h>

#include "core/graph.h"
#include "core/status.h"

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

/* Reads the window attributes of `node` for spatial input size in[2] and kernel size kernel[2];
 * fills axes[0] (height) and axes[1] (width). ceil_mode rounds the output size up as pools do, and
 * like PyTorch drops a last window that would start in the end padding. */
kiln_status kn_window_resolve(const kn_node *node, const int64_t in[2], const int64_t kernel[2],
                              bool ceil_mode, kn_window_axis axes[2]);

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

#endif
