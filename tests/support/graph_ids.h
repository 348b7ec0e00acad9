/* Tests build graphs in expressions: these give kn_graph_add_value's and kn_graph_add_node's id, or -1
 * when the call failed (kiln_last_error says why), for the test to check. */
#ifndef KILN_TEST_GRAPH_IDS_H
#define KILN_TEST_GRAPH_IDS_H

#include "ops/op.h" /* kn_graph_add_node */

static inline int test_add_value(kn_graph *g, const char *name, kn_value_kind kind, kn_dtype dtype,
                                 const kn_shape *shape) {
    int id;
    return kn_graph_add_value(g, name, kind, dtype, shape, &id) == KILN_OK ? id : -1;
}

static inline int test_add_node(kn_graph *g, const char *op_name, const char *node_name, int n_in, const int *in,
                                int n_out, const int *out) {
    int index;
    return kn_graph_add_node(g, op_name, node_name, n_in, in, n_out, out, &index) == KILN_OK ? index : -1;
}

#endif
