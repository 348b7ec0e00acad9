/* The core layer stands alone (docs/architecture.md): this program is linked from the files of
 * src/core and nothing else, so a core file that calls into the ops, kernels or runtime fails the
 * build. It builds a small graph with the graph IR and checks what core alone can do with it. */
#include <stdio.h>

#include "check.h"
#include "core/graph.h"
#include "core/status.h"

int main(void) {
    kn_graph g;
    kn_graph_init(&g);
    kn_shape s = kn_shape_of(1, (int64_t[]){4});
    /* Core stores a node's op and never reads through it: any address stands in for a table entry. */
    static const char marker;
    const kn_op *op = (const kn_op *)(const void *)&marker;
    int x, y, node;
    CHECK_OK(kn_graph_add_value(&g, "x", KN_VALUE_INPUT, KN_F32, &s, &x));
    CHECK_OK(kn_graph_add_value(&g, "y", KN_VALUE_ACT, KN_F32, &s, &y));
    CHECK_OK(kn_graph_append_node(&g, op, "n", 1, &x, 1, &y, &node));
    CHECK_OK(kn_graph_add_input(&g, x));
    CHECK_OK(kn_graph_add_output(&g, y));
    CHECK(node == 0 && g.nodes[0].op == op && g.values[y].producer == 0);
    int reads[2];
    kn_graph_value_reads(&g, reads, NULL);
    CHECK(reads[x] == 1 && reads[y] == 0);
    kn_graph_free(&g);
    return check_finish();
}
