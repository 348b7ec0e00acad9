/* What the training tape asks of a MaxPool before running its backward inside the BatchNormalization
 * that feeds it (kn_op_call.fused_pool_dout). */
#ifndef KN_OPS_POOL_2X2_H
#define KN_OPS_POOL_2X2_H

#include <stdbool.h>

#include "core/graph.h"

/* Whether node n is a MaxPool (one output, no Indices) of 2x2 windows at stride 2, without padding,
 * dilation or ceil_mode, over a 4-D f32 input of even height and width, so that its windows tile the
 * input: its backward then gives each input pixel its window's output gradient or 0, what
 * kernels/pool2x2.h's backward stores. */
bool kn_maxpool_tiles_2x2(const kn_graph *g, const kn_node *n);

#endif
