/* MaxPool and AveragePool beyond pool.c's tuned 2-D code: any number of spatial axes, MaxPool on u8
 * and i8, and MaxPool's optional second output Indices. Same attributes, same contract. */
#ifndef KN_OPS_POOL_ND_H
#define KN_OPS_POOL_ND_H

#include "ops/op.h"

/* Whether a pool whose X has rank `x_ndim` and `dtype`, with `n_out` outputs, runs here: pool.c runs
 * f32 pools with 1 or 2 spatial axes and one output. */
static inline bool kn_pool_is_nd(int x_ndim, kn_dtype dtype, int n_out) {
    return !((x_ndim == 3 || x_ndim == 4) && dtype == KN_F32 && n_out == 1);
}

kiln_status kn_maxpool_nd_infer(kn_graph *g, const kn_node *node);
kiln_status kn_maxpool_nd_forward(const kn_op_call *call);
kiln_status kn_maxpool_nd_backward(const kn_op_call *call);

kiln_status kn_avgpool_nd_infer(kn_graph *g, const kn_node *node);
kiln_status kn_avgpool_nd_forward(const kn_op_call *call);
kiln_status kn_avgpool_nd_backward(const kn_op_call *call);

#endif
