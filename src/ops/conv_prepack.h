/* Conv with its weights packed once: the ConvPacked op (src/ops/conv.c) that the inference optimizer
 * (src/runtime/optimize.c, KN_OPT_PREPACK) puts in place of a Conv whose products run through
 * kn_sgemm, so that no run packs the weights again (kernels/gemm.h, kn_sgemm_pack_a).
 *
 * ConvPacked reads X, W, an optional B (input 2 absent when there is none) and P, W packed per group
 * for this CPU, and keeps the Conv's attributes; it computes what Conv computes, bit for bit. P's layout
 * depends on the CPU, so optimized graphs holding it are never saved. An optional input 4, U, is W's
 * Winograd transform, for a layer that runs faster directly at small batches and by Winograd at large
 * ones (kn_conv_winograd_by_batch): a run with enough tiles takes Winograd, computing what ConvWinograd
 * computes. */
#ifndef KN_OPS_CONV_PREPACK_H
#define KN_OPS_CONV_PREPACK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/graph.h"

/* Whether Conv node n's products would read packed weights: a 2-D Conv with a constant f32 weight of
 * at least 4096 values that is not depthwise (conv.c computes those directly). */
bool kn_conv_prepack_suits(const kn_graph *g, const kn_node *n);

/* Whether a suiting node's weights are packed for the transposed products (positions down the
 * micro-kernel's rows: small images, see conv.c). The choice is recorded in ConvPacked's attribute
 * KN_CONV_PACK_TRANSPOSED (1: transposed; absent: not), which its runs follow. */
bool kn_conv_prepack_transposes(const kn_graph *g, const kn_node *n);
#define KN_CONV_PACK_TRANSPOSED "kn_pack_transposed"

/* Floats of P for a weight of dims (M, C/group, kH, kW) in that orientation; 0 on overflow. */
size_t kn_conv_prepack_floats(const int64_t w_dims[4], int64_t group, bool transposed);

/* packed = W (M, C/group, kH, kW) packed in that orientation, one group after another. */
void kn_conv_prepack_weights(const float *w, const int64_t w_dims[4], int64_t group, bool transposed, float *packed);

#endif
