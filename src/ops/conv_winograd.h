/* Winograd F(4x4, 3x3) convolution for inference: the ConvWinograd op (src/ops/conv_winograd.c) that
 * the inference optimizer (src/runtime/optimize.c, KN_OPT_WINOGRAD) puts in place of a Conv it suits.
 *
 * ConvWinograd reads X (N, C, H, W), U (36, C, M) — the filters W (M, C, 3, 3) transformed once by
 * kn_conv_winograd_weights — and an optional bias B (M), and keeps the Conv's attributes (pads,
 * auto_pad, the fused activation of ops/fused_act.h); its output is the Conv's. */
#ifndef KN_OPS_CONV_WINOGRAD_H
#define KN_OPS_CONV_WINOGRAD_H

#include <stdbool.h>
#include <stdint.h>

#include "core/graph.h"

/* Products per tile: the transformed tile is 6x6. */
#define KN_WINOGRAD_POINTS 36

/* Whether Conv node n suits ConvWinograd: a 2-D Conv of one group, strides and dilations 1, a constant
 * f32 weight (M, C, 3, 3) with enough channels that the matrix products dominate the transforms. */
bool kn_conv_winograd_suits(const kn_graph *g, const kn_node *n);

/* u (36, C, M) = G w G^T per filter: w (M, C, 3, 3), computed in double and rounded once. */
void kn_conv_winograd_weights(const float *w, int64_t M, int64_t C, float *u);

#endif
