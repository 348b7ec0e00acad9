/* Conv and ConvTranspose over 3 or 4 spatial axes (X of rank 5 or 6), which the 2-D code
 * (conv.c, conv_transpose.c: X of rank 3 or 4) hands over. Same attributes, same contract. */
#ifndef KN_OPS_CONV_ND_H
#define KN_OPS_CONV_ND_H

#include "ops/op.h"

/* Whether a Conv or ConvTranspose whose X has rank `x_ndim` runs here rather than in the 2-D code. */
static inline bool kn_conv_is_nd(int x_ndim) { return x_ndim > 4; }

kiln_status kn_conv_nd_infer(kn_graph *g, const kn_node *node);
kiln_status kn_conv_nd_forward(const kn_op_call *call);
kiln_status kn_conv_nd_backward(const kn_op_call *call);
int64_t kn_conv_nd_flops(const kn_graph *g, const kn_node *node);

kiln_status kn_convt_nd_infer(kn_graph *g, const kn_node *node);
kiln_status kn_convt_nd_forward(const kn_op_call *call);
kiln_status kn_convt_nd_backward(const kn_op_call *call);
int64_t kn_convt_nd_flops(const kn_graph *g, const kn_node *node);

#endif
